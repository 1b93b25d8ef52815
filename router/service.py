"""The router's shared state: the group's topology as last polled, per-member pools and load.

Theory of operation
-------------------

One `Router` serves every client session of a client port. It

* **polls the group** every `refresh_s`: `GROUP_MEMBERS_QUERY` on a member port (a member answers
  it from its own view of the group, as a GR member does), parsed by `parse_group_members` into
  an immutable `Topology` that is swapped in whole. It asks an ONLINE member first (the members
  of the last table, then the configured seeds); an answer from a member that is not ONLINE
  itself (expelled, recovering, in a minority) is used only when no ONLINE member answers. When
  nobody answers, every known member is shown UNREACHABLE: nothing is routed on a guess.
* **marks members down locally**: a member whose port refuses a new connection, or whose
  connection breaks, is shown UNREACHABLE for `down_hold_s` even if the group still lists it
  (the group needs an expel timeout to notice a dead member; the router notices at once). The
  routed topology is the polled one with those members' state overridden; it changes version
  whenever what the routing policy sees changes.
* keeps one `MemberPool` per member address and the **load**: statements in flight per member,
  which the routing policy's "least loaded" pick reads.

Sessions read `router.topology` on every statement (an attribute read; never awaits).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

import structlog

from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.protocol.errors import MySQLError

from router.pool import POOL_CONNECTIONS_MAX, POOL_IDLE_MAX, MemberPool
from router.topology import (
    GROUP_MEMBERS_QUERY,
    MemberId,
    MemberInfo,
    MemberState,
    Topology,
    TopologyError,
    parse_group_members,
)

__all__ = ["RouterSettings", "Router", "SEEDS_MAX"]

SEEDS_MAX = 9  # a group has at most 9 members; more seeds than that is a configuration mistake
POLL_TIMEOUT_S = 2.0  # one poll of one member (connect + query)

log = structlog.get_logger("grproxy.router")


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """How the router reaches the group (grproxy's [router] section).

    seeds: member ports ("host", port) to ask for the member table first.
    user / password: the account the router logs in with on member ports.
    local_member: the member beside this router (multi-primary writes prefer it), if any.
    refresh_s: how often the member table is polled.
    down_hold_s: how long a member that failed a connection is routed around.
    """

    seeds: tuple[tuple[str, int], ...]
    user: str = "root"
    password: str = ""
    local_member: str | None = None
    refresh_s: float = 0.5
    down_hold_s: float = 2.0
    connect_timeout_s: float = 5.0
    max_connections_per_member: int = POOL_CONNECTIONS_MAX
    idle_connections_per_member: int = POOL_IDLE_MAX

    def __post_init__(self) -> None:
        if not self.seeds or len(self.seeds) > SEEDS_MAX:
            raise ValueError(f"the router needs 1..{SEEDS_MAX} seed member ports, got {len(self.seeds)}")


class Router:
    """See the module docstring. `await start()`, then sessions read `topology`, `load`, `pool()`."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.local: MemberId | None = MemberId(settings.local_member) if settings.local_member else None
        self._table = Topology(())  # as polled
        self.topology = Topology(())  # as routed: polled, with locally-down members UNREACHABLE
        self.load: dict[MemberId, int] = {}
        self._down: dict[MemberId, float] = {}
        self._pools: dict[MemberId, MemberPool] = {}
        self._probe: BackendConnection | None = None
        self._probe_address: tuple[str, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._version = 0
        self.polls = 0
        self.last_poll_error: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Poll once (so the first client sees the group), then keep polling in the background."""
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        for pool in self._pools.values():
            pool.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_s)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad poll
                log.exception("topology_poll_failed")

    # --- polling --------------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[str, int]]:
        """Where to ask: the current probe first, then ONLINE members, the others, the seeds."""
        out: list[tuple[str, int]] = []
        if self._probe_address is not None:
            out.append(self._probe_address)
        ordered = sorted(self._table.members, key=lambda m: not m.online)
        for m in ordered:
            out.append((m.host or "127.0.0.1", m.port))
        out.extend(self.settings.seeds)
        seen: set[tuple[str, int]] = set()
        return [a for a in out if not (a in seen or seen.add(a))]  # type: ignore[func-returns-value]

    async def refresh(self) -> None:
        """One poll of the member table (see the module docstring)."""
        self.polls += 1
        fallback: Topology | None = None
        errors: list[str] = []
        for address in self._candidates():
            try:
                table = await self._ask(address)
            except (MySQLError, TopologyError, OSError, TimeoutError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                self._drop_probe()
                continue
            me = next((m for m in table.members if (m.host or "127.0.0.1", m.port) == address), None)
            if me is None or me.online:
                self._install(table)
                self.last_poll_error = None
                return
            fallback = fallback or table  # a member outside the majority: its view may be stale
            self._drop_probe()
        if fallback is not None:
            self._install(fallback)
            return
        self.last_poll_error = "; ".join(errors) or "no member to ask"
        if any(m.state is not MemberState.UNREACHABLE for m in self._table.members):
            log.warning("group_unreachable", errors=self.last_poll_error)
        self._install(Topology(tuple(replace(m, state=MemberState.UNREACHABLE) for m in self._table.members),
                               self._table.mode))

    async def _ask(self, address: tuple[str, int]) -> Topology:
        if self._probe is None or self._probe.closed or self._probe_address != address:
            self._drop_probe()
            s = self.settings
            self._probe = await BackendConnection.open(
                BackendAddress(address[0], address[1], s.user, s.password, name="group poll"),
                capabilities=int(OWN_CAPABILITIES), collation=UTF8MB4_GENERAL_CI,
                timeout_s=min(POLL_TIMEOUT_S, s.connect_timeout_s))
            self._probe_address = address
        async with asyncio.timeout(POLL_TIMEOUT_S):
            result = await self._probe.execute(GROUP_MEMBERS_QUERY)
        return parse_group_members(result.rows, previous=self._table)

    def _drop_probe(self) -> None:
        if self._probe is not None:
            self._probe.close()
        self._probe = None
        self._probe_address = None

    def _install(self, table: Topology) -> None:
        if table.same_members(self._table) and table.version == self._table.version:
            self._table = table
        else:
            if not table.same_members(self._table):
                log.info("topology_changed", members=[(m.member_id, m.state.value, m.role.value)
                                                      for m in table.members])
            self._table = table
        self._recompute()

    # --- local failure marks --------------------------------------------------------------------

    def mark_down(self, member: MemberId, why: str) -> None:
        """Route around `member` for `down_hold_s` (a connection to it failed)."""
        first = member not in self._down
        self._down[member] = time.monotonic() + self.settings.down_hold_s
        if first:
            log.warning("member_marked_down", member=member, why=why, hold_s=self.settings.down_hold_s)
        self._recompute()

    def _recompute(self) -> None:
        now = time.monotonic()
        for member, until in list(self._down.items()):
            if until <= now:
                del self._down[member]
        members = tuple(replace(m, state=MemberState.UNREACHABLE) if m.member_id in self._down and m.online else m
                        for m in self._table.members)
        routed = Topology(members, self._table.mode, self._version)
        if not routed.same_members(self.topology):
            self._version += 1
            routed = Topology(members, self._table.mode, self._version)
        self.topology = routed
        for member_id, pool in list(self._pools.items()):
            if self._table.member(member_id) is None:
                pool.close()
                del self._pools[member_id]

    # --- pools ----------------------------------------------------------------------------------

    def pool(self, member: MemberInfo) -> MemberPool:
        """The pool of connections to `member`'s port (made on first use, replaced if it moved)."""
        pool = self._pools.get(member.member_id)
        host = member.host or "127.0.0.1"
        if pool is None or (pool.address.host, pool.address.port) != (host, member.port):
            if pool is not None:
                pool.close()
            s = self.settings
            pool = MemberPool(BackendAddress(host, member.port, s.user, s.password, name=member.member_id),
                              max_connections=s.max_connections_per_member,
                              idle_max=s.idle_connections_per_member, connect_timeout_s=s.connect_timeout_s,
                              acquire_timeout_s=s.connect_timeout_s)
            self._pools[member.member_id] = pool
        return pool

    def status(self) -> dict[str, object]:
        """For the status file and logs."""
        return {
            "version": self.topology.version,
            "mode": self.topology.mode.value,
            "members": [{"id": m.member_id, "host": m.host, "port": m.port, "state": m.state.value,
                         "role": m.role.value, "load": self.load.get(m.member_id, 0)}
                        for m in self.topology.members],
            "marked_down": sorted(self._down),
            "last_poll_error": self.last_poll_error,
        }
