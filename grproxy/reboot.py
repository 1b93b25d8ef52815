"""`grproxy reboot`: bring a group back after every member went down (a complete outage).

The model is MySQL Shell's `dba.rebootClusterFromCompleteOutage()`. The member processes are
restarted first, each with its own config (`grproxy serve --config …`, bootstrap off): with no
group to join they end in ERROR and wait. Then this command, given their member ports:

1. asks every member for its state, group uuid and GTID set (`/* grproxy */ GROUP STATUS`);
2. refuses when a member is still ONLINE or RECOVERING (the group is running: restarted members
   rejoin it by themselves), when members hold different groups' transactions, or when no
   member holds every transaction the others hold (their histories diverged: a person must
   decide);
3. bootstraps the group again on the most advanced member (`GROUP REBOOT`), keeping the group's
   uuid and seqs, and waits until it is ONLINE;
4. waits until every other member is ONLINE: a member still asking its seeds (RECOVERING) finds
   the rebooted group by itself and recovers what it misses from it; a member that gave up
   (ERROR, OFFLINE) is asked to join again (`GROUP REJOIN`, at most every REJOIN_INTERVAL_S).
   A joining member is never told to start over (see `rejoin_needed`). Then it reports.

Members that do not answer are left out (named in the report); they rejoin when restarted.
`choose_bootstrap` is the pure decision; the rest is I/O.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from replication.positions import AppliedSet
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.protocol.errors import MySQLError

from .config import load_config

CONNECT_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.3
REJOIN_INTERVAL_S = 10.0  # a member in ERROR / OFFLINE is asked to rejoin at most this often


class RebootError(Exception):
    """The reboot cannot go on; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class MemberStatus:
    address: str  # member port, host:port
    member_id: str
    state: str
    group_uuid: str | None
    gtid_executed: str  # 'uuid:1-10:12' or ''
    error: str | None = None
    in_group: bool = False  # ONLINE, or RECOVERING inside a running group

    @property
    def applied(self) -> AppliedSet:
        _, _, intervals = self.gtid_executed.partition(":")
        return AppliedSet.parse(intervals)


def choose_bootstrap(statuses: list[MemberStatus]) -> MemberStatus:
    """The member to bootstrap from: the one whose transactions include every other member's.
    Raises RebootError when the group is still running, members belong to different groups,
    or no member holds all the others' transactions."""
    if not statuses:
        raise RebootError("no member answered")
    running = [s for s in statuses if s.in_group]
    if running:
        names = ", ".join(f"{s.member_id} ({s.address}) is {s.state}" for s in running)
        raise RebootError(f"the group is still running: {names}; restarted members rejoin it by themselves")
    groups = {s.group_uuid for s in statuses if s.group_uuid is not None}
    if len(groups) > 1:
        raise RebootError("members belong to different groups: "
                          + "; ".join(f"{s.member_id}: {s.group_uuid}" for s in statuses))
    union = AppliedSet()
    for s in statuses:
        for lo, hi in s.applied.intervals():
            for seq in range(lo, hi + 1):
                union.add(seq)
    candidates = [s for s in statuses if len(s.applied) == len(union)]
    if not candidates:
        raise RebootError("no member holds every transaction the others hold (their histories diverged): "
                          + "; ".join(f"{s.member_id}: {s.gtid_executed or 'none'}" for s in statuses))
    # Equal sets: prefer a stable, explainable pick (lowest member id).
    return min(candidates, key=lambda s: s.member_id)


def rejoin_needed(status: MemberStatus) -> bool:
    """Whether a member other than the rebooted one must be asked to join (`GROUP REJOIN`).

    Only a member that gave up (ERROR, OFFLINE) is asked. A RECOVERING member is inside the
    group or still asking its seeds, and such a join finds the rebooted group by itself. Asking
    it would start it over as a new incarnation; when the group had admitted the old one a
    moment before, that incarnation would vanish from a two-member view without leaving it, and
    the rebooted member would be left without a majority for good (chaos seed 7003 run 19).
    """
    return status.state in ("ERROR", "OFFLINE")


def addresses_from(members: list[str], configs: list[str]) -> list[str]:
    """Member ports from the command line and from members' config files."""
    out = list(members)
    for path in configs:
        config = load_config(Path(path))
        if config.member is None:
            raise RebootError(f"{path} has no [member] section")
        host = config.member.host if config.member.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        out.append(f"{host}:{config.member.port}")
    if not out:
        raise RebootError("name the members' ports (host:port) or their config files (--config)")
    for a in out:
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit():
            raise RebootError(f"not a host:port: {a!r}")
    return list(dict.fromkeys(out))


async def _command(address: str, user: str, password: str, sql: str) -> list[tuple[object, ...]]:
    host, _, port = address.rpartition(":")
    conn = await BackendConnection.open(BackendAddress(host, int(port), user, password, f"member {address}"),
                                        capabilities=int(OWN_CAPABILITIES), collation=UTF8MB4_GENERAL_CI,
                                        timeout_s=CONNECT_TIMEOUT_S)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S * 6):
            r = await conn.execute(sql)
        return list(r.rows)
    finally:
        conn.close()


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def member_status(address: str, user: str, password: str) -> MemberStatus:
    rows = await _command(address, user, password, "/* grproxy */ GROUP STATUS")
    member_id, state, group_uuid, gtids, error, in_group = rows[0]
    return MemberStatus(address, _text(member_id) or "", _text(state) or "", _text(group_uuid),
                        _text(gtids) or "", _text(error), _text(in_group) == "1")


async def _statuses(addresses: list[str], user: str, password: str) -> tuple[list[MemberStatus], dict[str, str]]:
    statuses: list[MemberStatus] = []
    missing: dict[str, str] = {}
    for address in addresses:
        try:
            statuses.append(await member_status(address, user, password))
        except (MySQLError, OSError, TimeoutError, IndexError, ValueError) as exc:
            missing[address] = str(exc) or type(exc).__name__
    return statuses, missing


async def _wait_online(addresses: list[str], user: str, password: str, deadline: float) -> dict[str, MemberStatus]:
    last: dict[str, MemberStatus] = {}
    while True:
        for address in addresses:
            try:
                last[address] = await member_status(address, user, password)
            except (MySQLError, OSError, TimeoutError, IndexError, ValueError):
                pass
        if all(a in last and last[a].state == "ONLINE" for a in addresses):
            return last
        if time.monotonic() >= deadline:
            states = ", ".join(f"{a}: {last[a].state if a in last else 'no answer'}"
                               + (f" ({last[a].error})" if a in last and last[a].error else "") for a in addresses)
            raise RebootError(f"members did not all become ONLINE in time: {states}")
        await asyncio.sleep(POLL_INTERVAL_S)


async def _join_others(others: list[MemberStatus], user: str, password: str, deadline: float) -> None:
    """Until every member of `others` is ONLINE (or the deadline passes: the caller's wait
    reports who is not): ask those that gave up to rejoin (`rejoin_needed`), leave the others
    to their own join. Raises RebootError when a member refuses to rejoin."""
    asked: dict[str, float] = {}  # address -> when it was last asked
    while time.monotonic() < deadline:
        waiting = False
        for s in others:
            try:
                now = await member_status(s.address, user, password)
            except (MySQLError, OSError, TimeoutError, IndexError, ValueError):
                waiting = True  # it answered before the reboot; it may be busy: ask again
                continue
            if now.state == "ONLINE":
                continue
            waiting = True
            if rejoin_needed(now) and time.monotonic() - asked.get(s.address, -REJOIN_INTERVAL_S) >= REJOIN_INTERVAL_S:
                asked[s.address] = time.monotonic()
                try:
                    await _command(s.address, user, password, "/* grproxy */ GROUP REJOIN")
                except MySQLError as exc:
                    raise RebootError(f"{s.member_id} ({s.address}) refused to rejoin: {exc}") from None
        if not waiting:
            return
        await asyncio.sleep(POLL_INTERVAL_S)


async def reboot_group(addresses: list[str], user: str, password: str, timeout_s: float) -> str:
    """Run the reboot (see the module docstring); returns the report printed to the user."""
    started = time.monotonic()
    deadline = started + timeout_s
    statuses, missing = await _statuses(addresses, user, password)
    chosen = choose_bootstrap(statuses)
    try:
        await _command(chosen.address, user, password, "/* grproxy */ GROUP REBOOT")
    except MySQLError as exc:
        raise RebootError(f"{chosen.member_id} ({chosen.address}) refused to bootstrap: {exc}") from None
    await _wait_online([chosen.address], user, password, deadline)
    others = [s for s in statuses if s is not chosen]
    await _join_others(others, user, password, deadline)
    final = await _wait_online([s.address for s in statuses], user, password, deadline)
    lines = [f"group {chosen.group_uuid or '(new)'} rebooted from {chosen.member_id} ({chosen.address}) "
             f"in {time.monotonic() - started:.1f}s",
             f"  transactions: {chosen.gtid_executed or 'none'}"]
    lines += [f"  {s.member_id} ({a}): {s.state}" for a, s in final.items()]
    lines += [f"  {a}: no answer ({why}); restart it with its config and it rejoins" for a, why in missing.items()]
    return "\n".join(lines)
