"""The joiner side of distributed recovery (DESIGN §8): from the view that admitted this
member to ONLINE, one phase at a time (replication/recovery/phases.py holds the table).

Theory of operation. While it recovers, the member buffers what the group delivers from its
join view on (Member._buffer_item, bounded by recovery_buffer_max). The joiner then:

* SELECT_DONOR: takes the next ONLINE member that announced a member port (sorted, each tried
  once before any is tried again) and logs in there as `recovery_user`;
* STATE: asks it for the engine state as of the join view and the group's uuid (its
  certification state and the last seq ordered before us: `upto`), and checks this backend's
  identity against the group (`check_joiner`: another group's transactions, or seqs the group
  does not have, refuse it for good);
* CLONE, when the donor's transaction cache does not hold the first seq this backend lacks:
  the donor's data and positions in one consistent snapshot (replication/recovery/clone.py);
* FETCH: the seqs up to `upto` this backend lacks, from the donor's cache, through the applier,
  until they are applied; a seq the cache dropped meanwhile sends it back to CLONE (once per
  donor);
* APPLY_BACKLOG: the engine continues from the donor's state, the buffer is replayed into it,
  and the joiner waits until everything delivered up to the replay is applied;
* ONLINE: only then the member announces ONLINE. FAILED: refused, every donor failed
  `recovery_retry_count` times in all, no donor within `recovery_timeout_s`, or the member
  left meanwhile — the member goes to ERROR and never announces ONLINE.

Every donor command is bounded by MemberConfig.recovery_donor_timeout_s: a donor that fails or stalls is
dropped for the next one (its connection is closed: a command cut in the middle poisons it),
and a clone cut short restarts from the beginning at the next donor.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from replication.gcs.interface import MemberState, View
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.protocol.errors import MySQLError

from ..applier import ApplierFailed
from ..certifier import Seq
from ..engine import ApplyRemote, Engine, EngineInvariantError
from ..positions import AppliedSet, gtid_set
from .cache import CACHE_TXN, ddl_decision, ddl_unblob, is_ddl_kind
from .clone import CloneError, CloneProgress, clone_into
from .donor import unpack_recovery_state
from .phases import Phase, PhaseEvent, next_phase

if TYPE_CHECKING:
    from ..member import Member

log = structlog.get_logger("grproxy.recovery.joiner")

DONOR_CONNECT_TIMEOUT_S = 10.0
DONOR_WAIT_S = 0.2  # between two looks for an ONLINE donor
DONOR_ROUND_WAIT_S = 1.0  # once every donor failed, before trying them again
FETCH_SEQS_MAX = 1_000  # seqs asked for in one round trip
APPLIED_POLL_S = 0.01


class JoinerRefused(Exception):
    """This member's backend may not join this group (its transactions say so)."""


class DonorFailed(Exception):
    """The donor failed or stalled: the next one takes over."""


class Joiner:
    """One recovery of `member`, admitted by `view`. `run()` drives it to ONLINE or FAILED."""

    def __init__(self, member: "Member", view: View) -> None:
        self.member = member
        self.view = view
        self.phase = Phase.SELECT_DONOR
        self.error: str | None = None
        self.donor: tuple[str, str] | None = None  # (uuid, member address)
        self.upto = Seq(0)
        self.transactions_left = 0
        self.clone = CloneProgress()
        self.clones = 0
        self.fetched = 0
        self.fetch_s = 0.0
        self._conn: BackendConnection | None = None
        self._state = b""
        self._missing: list[int] = []
        self._cloned_here = False
        self._clone_pending = False  # user schemas dropped, the clone not done: no fetch before it is
        self._log = log.bind(member_id=member.config.uuid, view_id=str(view.view_id))

    # --- the machine ------------------------------------------------------------------------------

    def _step(self, event: PhaseEvent) -> None:
        new = next_phase(self.phase, event)
        self._log.info("recovery_phase", on=event.value, phase_from=self.phase.value, phase_to=new.value,
                       donor=self.donor[0] if self.donor else None)
        self.phase = new

    async def run(self) -> None:
        """Recover; on FAILED the member is sent to ERROR with the reason."""
        m = self.member
        loop = asyncio.get_running_loop()
        deadline = loop.time() + m.config.recovery_timeout_s  # to find a donor at all
        tried: set[str] = set()
        failures = 0
        last_error = "no ONLINE donor announced itself"
        try:
            while self.phase not in (Phase.ONLINE, Phase.FAILED):
                if m.state is not MemberState.RECOVERING or m.recovery is not self:
                    # Left the group, failed, or a new incarnation started a recovery of its own.
                    self._fail(f"the member left this recovery ({m.state.value})", notify=False)
                    break
                try:
                    match self.phase:
                        case Phase.SELECT_DONOR:
                            donor, new_round = self._pick(tried)
                            if new_round:
                                await asyncio.sleep(DONOR_ROUND_WAIT_S)  # every donor failed once
                            if donor is None:
                                if loop.time() > deadline:
                                    self._fail(f"distributed recovery failed: {last_error}")
                                    break
                                await asyncio.sleep(DONOR_WAIT_S)
                                continue
                            tried.add(donor[0])
                            await self._open(donor)
                            self._step(PhaseEvent.DONOR_CHOSEN)
                        case Phase.STATE:
                            self._step(await self._fetch_state())
                        case Phase.CLONE:
                            await self._clone()
                            self._step(PhaseEvent.CLONED)
                        case Phase.FETCH:
                            self._step(await self._fetch())
                        case Phase.APPLY_BACKLOG:
                            await self._apply_backlog()
                            if m.state is not MemberState.RECOVERING:
                                self._fail(f"the member left recovery while applying its backlog ({m.error})",
                                           notify=False)
                                break
                            self._step(PhaseEvent.CAUGHT_UP)
                except JoinerRefused as exc:
                    self._fail(f"distributed recovery refused this member: {exc}")  # no retry: it would refuse again
                except (DonorFailed, MySQLError, CloneError, TimeoutError, OSError, ValueError, EngineInvariantError,
                        ApplierFailed) as exc:
                    if self.phase is Phase.APPLY_BACKLOG:
                        self._fail(f"distributed recovery failed while applying the backlog: {exc!r}")
                        break
                    uuid, address = self.donor if self.donor else ("?", "?")
                    last_error = f"donor {uuid} ({address}): {exc!r}"
                    self._log.warning("recovery_donor_failed", donor=uuid, phase=self.phase.value, error=repr(exc))
                    self._close()
                    failures += 1
                    if self.phase is not Phase.SELECT_DONOR:  # SELECT_DONOR: could not even log in
                        self._step(PhaseEvent.DONOR_FAILED)
                    if failures > m.config.recovery_retry_count:
                        self._fail(f"distributed recovery failed after {failures} donor failures: {last_error}")
                        break
                    deadline = loop.time() + m.config.recovery_timeout_s
        finally:
            self._close()
        if self.phase is Phase.ONLINE:
            m.recovery_done(self)

    def _fail(self, why: str, *, notify: bool = True) -> None:
        """FAILED; with `notify` the member goes to ERROR (not when it already left recovery)."""
        self.error = why
        if self.phase is not Phase.FAILED:
            self._step(PhaseEvent.FAIL)
        if notify:
            self.member.recovery_failed(why)

    def _pick(self, tried: set[str]) -> tuple[tuple[str, str] | None, bool]:
        """The next donor (sorted, each tried once per round), and whether a new round began."""
        donors = self.member.donor_candidates()
        candidates = sorted((u, a) for u, a in donors.items() if u not in tried)
        if not candidates and donors:
            tried.clear()  # every donor failed once: try them again
            return sorted(donors.items())[0], True
        return (candidates[0] if candidates else None), False

    # --- talking to the donor ---------------------------------------------------------------------

    async def _open(self, donor: tuple[str, str]) -> None:
        self.donor = donor
        host, _, port = donor[1].rpartition(":")
        cfg = self.member.config
        self._conn = await BackendConnection.open(
            BackendAddress(host, int(port), cfg.recovery_user, cfg.recovery_password),
            capabilities=int(OWN_CAPABILITIES), collation=UTF8MB4_GENERAL_CI, timeout_s=DONOR_CONNECT_TIMEOUT_S,
        )

    async def _call(self, command: str) -> Any:
        """One `/* grproxy */` command on the donor, bounded; a stalled donor is dropped."""
        conn = self._conn
        if conn is None or conn.closed:
            raise DonorFailed("no connection to the donor")
        try:
            bound = self.member.config.recovery_donor_timeout_s
            async with asyncio.timeout(bound):
                return await conn.execute("/* grproxy */ " + command)
        except TimeoutError:
            conn.close()
            raise DonorFailed(f"the donor did not answer {command.split()[0:2]} within {bound:g}s") from None

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- the phases -------------------------------------------------------------------------------

    async def _fetch_state(self) -> PhaseEvent:
        r = await self._call(f"RECOVERY STATE {self.view.view_id.epoch} {self.view.view_id.number}")
        blob = r.rows[0][0] if r.rows else None
        if not isinstance(blob, bytes):
            raise DonorFailed("donor sent no state")
        group_uuid, self._state = unpack_recovery_state(blob)
        probe = Engine(self.member.config.uuid)
        probe.import_state(self._state, self.view)
        self.upto = probe.certifier.last_seq
        await check_joiner(self.member, group_uuid, self.upto)
        self._cloned_here = False
        self._missing = list(self.member.positions.applied.missing(self.upto))
        self.transactions_left = len(self._missing)
        if self._clone_pending:
            return PhaseEvent.CACHE_SHORT  # a clone began at a donor that failed: it starts over
        if self.member.clone_requested:
            self._log.info("recovery_clone_requested", donor=self.donor[0] if self.donor else None)
            return PhaseEvent.CACHE_SHORT
        if not self._missing:
            return PhaseEvent.CACHE_REACHES
        r = await self._call("RECOVERY CACHE")
        lowest = r.rows[0][0] if r.rows else None
        if lowest is None or int(lowest) > self._missing[0]:
            self._log.info("recovery_cache_short", donor=self.donor[0] if self.donor else None,
                           cache_lowest=None if lowest is None else int(lowest), first_missing=self._missing[0],
                           missing=len(self._missing))
            return PhaseEvent.CACHE_SHORT
        return PhaseEvent.CACHE_REACHES

    async def _clone(self) -> None:
        m = self.member
        self.clones += 1
        self.clone = CloneProgress()
        schemas: set[str] = set()  # dropped or created: their cached metadata is stale
        local = await m.connect()

        async def forget_positions() -> None:
            """Before the first user schema is dropped: this backend holds no transaction until
            a clone completes (a crash or a failed donor mid-clone then clones again, never
            fetches onto half-copied data)."""
            await _replace_positions(local, AppliedSet())
            m.positions.replace(AppliedSet())
            self._clone_pending = True

        try:
            group_uuid, positions = await clone_into(self._call, local, self.clone,
                                                     on_schema=schemas.add, before_changes=forget_positions)
            if group_uuid != m.group_uuid:
                raise JoinerRefused(f"the donor's group is {group_uuid}, this member's {m.group_uuid}")
            await _replace_positions(local, positions)
            # The data is the group's now: what the binlog holds outside grproxy's domain is
            # history, and a diverged mark is void (replication.outside_writes).
            await m.record_outside_writes(local)
        finally:
            local.close()
            m.forget_metadata(schemas)
        m.positions.replace(positions)
        m.clone_requested = False
        self._clone_pending = False
        self._cloned_here = True
        self._missing = list(positions.missing(self.upto))
        self.transactions_left = len(self._missing)
        c = self.clone
        self._log.info("clone_done", donor=self.donor[0] if self.donor else None, tables=c.tables, rows=c.rows,
                       bytes=c.bytes, seconds=round(c.ended_at - c.started_at, 3),
                       mib_per_s=round(c.mib_per_s(c.ended_at), 2), positions=str(positions),
                       transactions_left=self.transactions_left)

    async def _fetch(self) -> PhaseEvent:
        m = self.member
        loop = asyncio.get_running_loop()
        started = loop.time()
        missing = self._missing
        self._log.info("recovery_fetch", donor=self.donor[0] if self.donor else None, upto=self.upto,
                       missing=len(missing))
        undecided: list[int] = []  # DDL the donor had no decision for yet
        for i in range(0, len(missing), FETCH_SEQS_MAX):
            chunk = missing[i : i + FETCH_SEQS_MAX]
            r = await self._call("RECOVERY TRANSACTIONS " + ",".join(map(str, chunk)))
            got = {int(seq): (bytes(kind).decode(), payload) for seq, kind, payload in r.rows}  # type: ignore[arg-type]
            absent = [seq for seq in chunk if seq not in got]
            if absent:
                if self._cloned_here:
                    raise DonorFailed(f"donor no longer holds seq {absent[0]} even after a clone")
                self._log.info("recovery_cache_short", first_absent=absent[0])
                await self._applied(missing[:i])  # the clone must not race the applier
                return PhaseEvent.CACHE_SHORT
            for seq in chunk:
                kind, payload = got[seq]
                assert isinstance(payload, bytes)
                if is_ddl_kind(kind):
                    decision = ddl_decision(Seq(seq), kind)
                    m.applier.submit(ddl_unblob(Seq(seq), payload))
                    if decision is None:
                        undecided.append(seq)  # its decision comes with the buffered deliveries
                    else:
                        m.applier.decide(decision)
                elif kind == CACHE_TXN:
                    m.applier.submit(ApplyRemote(Seq(seq), "donor", payload, ()))
                else:
                    raise DonorFailed(f"donor sent seq {seq} of unknown kind {kind!r}")
                m.cache.put(seq, kind, payload)
                self.fetched += 1
            self.transactions_left = max(0, len(missing) - i - len(chunk))
        # Up to the first undecided DDL: its decision is among the deliveries buffered since the
        # view (replayed with the backlog); the applier goes on from there by itself.
        await m.positions.wait_applied(min([self.upto, *(seq - 1 for seq in undecided)]),
                                       timeout_s=m.config.recovery_timeout_s)
        self.fetch_s += loop.time() - started
        return PhaseEvent.FETCHED

    async def _applied(self, seqs: list[int]) -> None:
        """Until every one of `seqs` (submitted to the applier) is applied; bounded by
        recovery_timeout_s (TimeoutError)."""
        m = self.member
        async with asyncio.timeout(m.config.recovery_timeout_s):
            while any(seq not in m.positions.applied for seq in seqs):
                await asyncio.sleep(APPLIED_POLL_S)

    async def _apply_backlog(self) -> None:
        m = self.member
        replayed, target = m.replay_backlog(self._state, self.view)
        self._log.info("recovery_backlog", replayed=replayed, target=target)
        if m.state is MemberState.RECOVERING:
            await m.positions.wait_applied(target, timeout_s=m.config.recovery_timeout_s)

    # --- stats ------------------------------------------------------------------------------------

    def fetch_txns_per_s(self) -> float:
        return self.fetched / self.fetch_s if self.fetch_s > 0 else 0.0


async def check_joiner(member: "Member", group_uuid: str, upto: Seq) -> None:
    """Refuse (JoinerRefused) a backend holding another group's transactions, or seqs of this
    group beyond what the group had ordered when it admitted us; a backend that never belonged
    to a group takes the group's uuid now, before it applies anything."""
    applied = member.positions.applied
    if member.group_uuid is not None and member.group_uuid != group_uuid:
        raise JoinerRefused(
            f"this backend holds transactions of another group: {gtid_set(member.group_uuid, applied) or member.group_uuid}"
            f" (the group is {group_uuid}); give this member an empty backend, or remove grproxy.meta's group_uuid "
            "after making sure its data belongs here")
    if member.group_uuid is None and len(applied):
        raise JoinerRefused(f"this backend holds transactions of an unnamed group: {applied}")
    extra = AppliedSet(iv for iv in applied.intervals() if iv[1] > upto)
    if len(extra):
        extra = AppliedSet((max(lo, upto + 1), hi) for lo, hi in extra.intervals())
        raise JoinerRefused(
            f"this backend holds transactions the group does not have: {gtid_set(group_uuid, extra)} "
            f"(the group has ordered up to {upto}); restart the whole group with `grproxy reboot` from the most "
            "advanced member, or give this member an empty backend")
    if member.group_uuid is None:
        conn = await member.connect()
        try:
            await member.store.set_meta(conn, "group_uuid", group_uuid)
        finally:
            await conn.quit()
        member.group_uuid = group_uuid


async def _replace_positions(conn: BackendConnection, positions: AppliedSet) -> None:
    """This backend's positions become the clone's (one transaction, outside the binlog)."""
    await conn.execute("BEGIN")
    try:
        await conn.execute("DELETE FROM grproxy.applied")
        await conn.execute("DELETE FROM grproxy.applied_ranges")
        values = ",".join(f"({lo},{hi})" for lo, hi in positions.intervals())
        if values:
            await conn.execute(f"INSERT INTO grproxy.applied_ranges (lo, hi) VALUES {values}")
        await conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise


__all__ = ["DonorFailed", "Joiner", "JoinerRefused", "check_joiner"]
