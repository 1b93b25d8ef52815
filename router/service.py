"""The router's shared state: the group's topology as last polled, per-member pools and load.

Theory of operation
-------------------

One `Router` serves every client session of a client port. It

* **polls the group** every `refresh_s` (and at once after a group action went through it,
  `request_refresh`): `ROUTER_MEMBERS_QUERY` on a member port (a member answers it from its own
  view of the group, as a GR member does), parsed by `parse_router_members` into an immutable
  `Topology` that is swapped in whole. It asks an ONLINE member first (the members of the last
  table, then the configured seeds) and **trusts only a majority**: a table is installed only
  from a member that is ONLINE in a view with quorum (`router.topology.distrust`), never an
  empty one. When no such member answers, every known member is shown UNREACHABLE: nothing is
  routed on a guess (a member cut off in a minority would route writes nowhere useful and reads
  to stale data).
* **marks members down locally**: a member whose port refuses a new connection is shown
  UNREACHABLE for `down_hold_s` even if the group still lists it (the group needs an expel
  timeout to notice a dead member; the router notices at once). A connection that breaks under
  one session does not (that session's statement may have ended it). The
  routed topology is the polled one with those members' state overridden; it changes version
  whenever what the routing policy sees changes.
* **follows AFTER commits**: a member answers a commit at AFTER (or BEFORE_AND_AFTER) once
  every member ONLINE in *its* table applied it, so a member that left the group a moment ago
  was not waited for, while this router's last poll may still list it. Before such an answer
  reaches the client, the session asks `confirm_after_commit`: the committing member's table is
  read (a query that started after the answer, shared by the commits that asked meanwhile) and
  every member not ONLINE there is marked down. A read that starts after the client saw its
  commit therefore never goes to a member that did not apply it.
* keeps one `MemberPool` per member address and the **load**: statements in flight per member,
  which the routing policy's "least loaded" pick reads.
* learns each ONLINE member's **read endpoint** (with `read_user` configured): its backend's
  address and the consistency level new sessions there start with, from the member's
  `/* grproxy */ ROUTER ENDPOINT` (refreshed on every poll). Sessions read plain EVENTUAL reads
  straight from that backend (one hop instead of two); everything the member must see or
  enforce still goes through the member port.

Sessions read `router.topology` on every statement (an attribute read; never awaits).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

import structlog

from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.consistency import Level, parse_level
from replication.protocol.errors import MySQLError

from router.pool import POOL_CONNECTIONS_MAX, POOL_IDLE_MAX, MemberPool
from router.topology import (
    ROUTER_MEMBERS_QUERY,
    MemberId,
    MemberInfo,
    MemberState,
    PolledTable,
    Topology,
    TopologyError,
    distrust,
    parse_router_members,
)

__all__ = ["RouterSettings", "Router", "Endpoint", "SEEDS_MAX", "ENDPOINT_QUERY"]

SEEDS_MAX = 9  # a group has at most 9 members; more seeds than that is a configuration mistake
POLL_TIMEOUT_S = 2.0  # one poll of one member (connect + query)
AFTER_CHECKS_IN_BACKGROUND_MAX = 64  # confirm_after_commit_later tasks at once; beyond, a poll is requested
ENDPOINT_QUERY = "/* grproxy */ ROUTER ENDPOINT"

log = structlog.get_logger("grproxy.router")


@dataclass(eq=False)
class _AfterCheck:
    """confirm_after_commit's per-member state: checks run one at a time; a check serves every
    request numbered up to the count when it started."""

    lock: asyncio.Lock
    requested: int = 0
    served: int = 0
    conn: BackendConnection | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a member's backend can be read directly, and the member's default level."""

    host: str
    port: int
    level: Level


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
    read_user: str = ""  # account for reading members' backends directly; "" = never
    read_password: str = ""

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
        self.endpoints: dict[MemberId, Endpoint] = {}
        self._control: dict[MemberId, BackendConnection] = {}
        self._direct_pools: dict[MemberId, MemberPool] = {}
        self.direct_reads = bool(settings.read_user)
        self._wakeup = asyncio.Event()  # request_refresh: poll now rather than at the next tick
        self._after_checks: dict[MemberId, _AfterCheck] = {}
        self._background: set[asyncio.Task[None]] = set()  # confirm_after_commit_later

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Poll once (so the first client sees the group), then keep polling in the background."""
        await self.refresh()
        if self.direct_reads:
            await self.refresh_endpoints()
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
        for conn in self._control.values():
            conn.close()
        for task in list(self._background):
            task.cancel()
        for check in self._after_checks.values():
            if check.conn is not None:
                check.conn.close()
        for pool in (*self._pools.values(), *self._direct_pools.values()):
            pool.close()

    def request_refresh(self) -> None:
        """Poll now (a group action — new primary, mode switch — just went through this router)."""
        self._wakeup.set()

    async def _watch(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.settings.refresh_s):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()
            try:
                await self.refresh()
                if self.direct_reads:
                    await self.refresh_endpoints()
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
        return list(dict.fromkeys(out))  # first occurrence of each, in order

    async def refresh(self) -> None:
        """One poll of the member table (see the module docstring)."""
        self.polls += 1
        errors: list[str] = []
        for address in self._candidates():
            try:
                polled = await self._ask(address)
            except (MySQLError, TopologyError, OSError, TimeoutError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                self._drop_probe()
                continue
            why = distrust(polled)
            if why is None:
                self._install(polled.table)
                self.last_poll_error = None
                return
            errors.append(f"{address[0]}:{address[1]}: not trusted: {why}")
            self._drop_probe()
        self.last_poll_error = "; ".join(errors) or "no member to ask"
        if any(m.state is not MemberState.UNREACHABLE for m in self._table.members):
            log.warning("group_unreachable_or_without_quorum", errors=self.last_poll_error)
        self._install(Topology(tuple(replace(m, state=MemberState.UNREACHABLE) for m in self._table.members),
                               self._table.mode))

    async def _ask(self, address: tuple[str, int]) -> PolledTable:
        if self._probe is None or self._probe.closed or self._probe_address != address:
            self._drop_probe()
            self._probe = await self._control_connection(address[0], address[1], "group poll")
            self._probe_address = address
        async with asyncio.timeout(POLL_TIMEOUT_S):
            result = await self._probe.execute(ROUTER_MEMBERS_QUERY)
        return parse_router_members(result.rows, previous=self._table)

    async def _control_connection(self, host: str, port: int, name: str) -> BackendConnection:
        """A connection of the router's own to a member port (polls); raises MySQLError."""
        s = self.settings
        return await BackendConnection.open(BackendAddress(host, port, s.user, s.password, name=name),
                                            capabilities=int(OWN_CAPABILITIES), collation=UTF8MB4_GENERAL_CI,
                                            timeout_s=min(POLL_TIMEOUT_S, s.connect_timeout_s))

    def _drop_probe(self) -> None:
        if self._probe is not None:
            self._probe.close()
        self._probe = None
        self._probe_address = None

    def _install(self, table: Topology) -> None:
        if not table.same_members(self._table):
            log.info("topology_changed", members=[(m.member_id, m.state.value, m.role.value) for m in table.members])
        self._table = table
        self._recompute()

    async def refresh_endpoints(self) -> None:
        """Ask every ONLINE member for its read endpoint (see the module docstring). A member
        that never answered has none: its reads go through its member port. One that stops
        answering keeps its last endpoint while the group lists it ONLINE."""
        for m in self._table.online():
            conn = self._control.get(m.member_id)
            try:
                if conn is None or conn.closed:
                    conn = await self._control_connection(m.host or "127.0.0.1", m.port, "endpoint poll")
                    self._control[m.member_id] = conn
                async with asyncio.timeout(POLL_TIMEOUT_S):
                    result = await conn.execute(ENDPOINT_QUERY)
                member_id, host, port, level = (v.decode() if v is not None else "" for v in result.rows[0][:4])
                if member_id != m.member_id or not port.isdigit():
                    raise ValueError(f"endpoint answer {result.rows[0]!r} from member {m.member_id}")
                self._set_endpoint(m.member_id, Endpoint(host or "127.0.0.1", int(port), parse_level(level)))
            except (MySQLError, OSError, TimeoutError, ValueError, IndexError) as exc:
                # The last answer stays good while the group lists the member ONLINE (a backend
                # does not move; a member that is gone leaves the table and its endpoint with it).
                log.warning("read_endpoint_poll_failed", member=m.member_id, error=str(exc),
                            known=m.member_id in self.endpoints)
                bad = self._control.pop(m.member_id, None)
                if bad is not None:
                    bad.close()
        for member_id in list(self._control):
            if not self._table.is_online(member_id):
                self._control.pop(member_id).close()
        for member_id in list(self.endpoints):
            if not self._table.is_online(member_id):
                del self.endpoints[member_id]

    def default_level_set(self, member: MemberId, literal: object) -> None:
        """A `SET GLOBAL group_replication_consistency` succeeded on `member`: use the new
        default at once rather than from the next poll (direct reads depend on it)."""
        endpoint = self.endpoints.get(member)
        if endpoint is None:
            return
        try:
            level = Level.EVENTUAL if literal == "DEFAULT" else parse_level(literal)
        except ValueError:
            self.endpoints.pop(member, None)  # not known: no direct reads until the next poll
            return
        self._set_endpoint(member, replace(endpoint, level=level))

    def _set_endpoint(self, member: MemberId, endpoint: Endpoint) -> None:
        old = self.endpoints.get(member)
        self.endpoints[member] = endpoint
        if old is not None and old.level is not endpoint.level and member in self._pools:
            # Idle pooled connections were reset under the old default: new sessions must
            # start at the new one, as new sessions on a GR member do.
            dropped = self._pools[member].drop_idle()
            log.info("default_level_changed", member=member, level=endpoint.level.name, idle_dropped=dropped)

    def direct_pool(self, member: MemberId) -> MemberPool | None:
        """The pool of direct read connections to `member`'s backend, or None (no endpoint)."""
        endpoint = self.endpoints.get(member)
        if endpoint is None:
            return None
        pool = self._direct_pools.get(member)
        if pool is None or (pool.address.host, pool.address.port) != (endpoint.host, endpoint.port):
            if pool is not None:
                pool.close()
            s = self.settings
            pool = MemberPool(BackendAddress(endpoint.host, endpoint.port, s.read_user, s.read_password,
                                             name=f"{member} backend"),
                              max_connections=s.max_connections_per_member,
                              idle_max=s.idle_connections_per_member, connect_timeout_s=s.connect_timeout_s,
                              acquire_timeout_s=s.connect_timeout_s)
            self._direct_pools[member] = pool
        return pool

    # --- AFTER commits ---------------------------------------------------------------------------

    async def confirm_after_commit(self, member: MemberId) -> None:
        """A commit at AFTER on `member` has just been answered (see the module docstring):
        mark down every member not ONLINE in `member`'s table as read after that answer. When
        the table cannot be read (the member went away), a poll of the group is requested. A check
        takes at most POLL_TIMEOUT_S; a commit may first wait for the check already running."""
        check = self._after_checks.get(member)
        if check is None:
            check = self._after_checks[member] = _AfterCheck(asyncio.Lock())
        check.requested += 1
        mine = check.requested
        async with check.lock:
            if check.served >= mine:
                return  # a check that started after this request's answer has run
            upto = check.requested
            try:
                online = await self._online_on(member, check)
            except (MySQLError, TopologyError, OSError, TimeoutError) as exc:
                if check.conn is not None:
                    check.conn.close()
                    check.conn = None
                log.warning("after_commit_check_failed", member=member, error=str(exc))
                self.request_refresh()
                return  # not served: the commits waiting behind this one try for themselves
            except BaseException:
                if check.conn is not None:  # cancelled mid-query: its answer is unknown
                    check.conn.close()
                    check.conn = None
                raise
            check.served = max(check.served, upto)
            for m in self.topology.online():
                if m.member_id not in online:
                    self.mark_down(m.member_id, why=f"not ONLINE in {member}'s table after a commit at AFTER there")

    def confirm_after_commit_later(self, member: MemberId) -> None:
        """`confirm_after_commit` in the background (an answer too long to hold went out),
        bounded by AFTER_CHECKS_IN_BACKGROUND_MAX (beyond it, a poll is requested instead)."""
        if len(self._background) >= AFTER_CHECKS_IN_BACKGROUND_MAX:
            self.request_refresh()
            return
        task = asyncio.get_running_loop().create_task(self.confirm_after_commit(member))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _online_on(self, member: MemberId, check: _AfterCheck) -> set[MemberId]:
        async with asyncio.timeout(POLL_TIMEOUT_S):
            if check.conn is None or check.conn.closed:
                info = self.topology.member(member) or self._table.member(member)
                if info is None:
                    raise TopologyError(f"member {member} is not in the router's table")
                check.conn = await self._control_connection(info.host or "127.0.0.1", info.port, "after-commit check")
            result = await check.conn.execute(ROUTER_MEMBERS_QUERY)
        return {m.member_id for m in parse_router_members(result.rows).table.members if m.state is MemberState.ONLINE}

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
        for pools in (self._pools, self._direct_pools):
            for member_id, pool in list(pools.items()):
                if self._table.member(member_id) is None:
                    pool.close()
                    del pools[member_id]

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
