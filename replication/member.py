"""A member: owns one backend, and takes part in the group (DESIGN §1, §5, §8).

The member is the thin I/O shell around the deterministic `Engine`:

* group communication delivers views and messages → `Engine` → actions: answer the local
  session waiting on a commit (`LocalOutcome`), queue another member's transaction or any DDL
  for the `Applier`, doom local transactions that just lost to a remote one, resolve sync
  points, refresh the member table;
* sessions on this member ask to commit (`certify_local`): the transaction's write set and
  row changes are broadcast with the member's low-water mark as snapshot, and the session
  waits (bounded) for its own delivery's verdict;
* periodically it reports its lowest possible snapshot (certification GC) and compacts the
  positions table.

States follow replication_group_members: OFFLINE → RECOVERING → ONLINE, ERROR on any
invariant failure (an engine error, a certified transaction that failed to commit or apply).
A member in ERROR refuses writes and consistent reads; the group expels nobody for it — as in
GR with exit_state_action=READ_ONLY.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import replace
from dataclasses import dataclass, field

import structlog

from replication.gcs.interface import (
    Delivery,
    GcsError,
    GcsErrorCode,
    GcsEvent,
    GroupCommunication,
    MemberId,
    MemberState,
    ReachabilityChange,
    View,
)
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.protocol.errors import (
    BackendError,
    CertificationConflict,
    HoldWaitTimeout,
    HookError,
    MySQLError,
    ReadOnly,
)

from .applier import Applier, ApplierFailed, ApplierFull, ApplyChanges, DdlOutcome
from .certifier import Certifier, KeyHash, Seq
from .engine import (
    Action,
    ApplyRemote,
    CertifierRefused,
    Engine,
    EngineInvariantError,
    ExecuteDdl,
    LocalOutcome,
    MemberRecord,
    MembershipChanged,
    Role,
    SyncReached,
)
from .messages import Announce, DdlMessage, StableReport, SyncPoint, TxnMessage, encode
from .positions import Positions, PositionStore

log = structlog.get_logger("grproxy.member")

MEMBER_CAPABILITIES = int(OWN_CAPABILITIES)


@dataclass(frozen=True, slots=True)
class MemberConfig:
    """GR's settings, with GR's defaults (DESIGN §10b)."""

    uuid: str
    backend: BackendAddress
    single_primary: bool = True
    member_weight: int = 50
    member_address: str = ""  # host:port of this member's member port, for the member table
    transaction_size_limit: int = 150_000_000
    commit_timeout_s: float = 60.0  # waiting for the group's verdict on a commit
    stable_report_interval_s: float = 1.0
    compaction_interval_s: float = 10.0
    local_txns_max: int = 10_000  # local transactions waiting on a verdict at once
    version: str = "grproxy-0.1"


@dataclass(slots=True)
class LocalTxn:
    """An open write transaction of a session on this member (for local doom)."""

    txn_id: int
    keys: set[KeyHash] = field(default_factory=set)
    doomed_by: Seq | None = None
    on_doom: Callable[[], None] | None = None


class Member:
    """See the module docstring."""

    def __init__(self, config: MemberConfig, gcs: GroupCommunication, apply_changes: ApplyChanges) -> None:
        self.config = config
        self.gcs = gcs
        self.state = MemberState.OFFLINE
        self.error: str | None = None
        self.positions = Positions()
        self.store = PositionStore()
        self.engine = Engine(config.uuid, single_primary=config.single_primary)
        self.applier = Applier(self.connect, self.positions, self.store, apply_changes)
        self.unreachable: set[str] = set()
        self._log = log.bind(member_id=config.uuid)
        self._txn_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[LocalOutcome | CertifierRefused]] = {}
        self._pending_snapshots: dict[int, Seq] = {}
        self._ddl_pending: dict[int, asyncio.Future[ExecuteDdl]] = {}
        self._syncs: dict[int, asyncio.Future[Seq]] = {}
        self._open: dict[int, LocalTxn] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_report: Seq | None = None
        self._announced: MemberState | None = None
        self.on_membership: list[Callable[[MembershipChanged], None]] = []

    # --- lifecycle ------------------------------------------------------------------------------

    async def connect(self, database: str | None = None) -> BackendConnection:
        """A new connection to this member's backend with the proxy's account."""
        return await BackendConnection.open(
            self.config.backend, capabilities=MEMBER_CAPABILITIES, collation=UTF8MB4_GENERAL_CI, database=database
        )

    async def start(self, *, bootstrap: bool, seeds: tuple[MemberId, ...] = ()) -> None:
        """Load positions from the backend, then bootstrap the group or join through `seeds`."""
        conn = await self.connect()
        try:
            await self.store.setup(conn)
            self.positions.applied = await self.store.load(conn)
        finally:
            await conn.quit()
        # Seqs continue from what this backend holds (a group restarted on existing datadirs).
        self.engine.certifier = Certifier(last_seq=Seq(max((hi for _, hi in self.positions.applied.intervals()), default=0)))
        self.gcs.add_view_listener(self._on_view)
        self.gcs.add_delivery_listener(self._on_delivery)
        self.gcs.add_event_listener(self._on_event)
        self.state = MemberState.RECOVERING
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run_applier()), loop.create_task(self._housekeeping())]
        if bootstrap:
            self.gcs.bootstrap((self.gcs.me,))
        else:
            self.gcs.join(seeds)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        await self.applier.close()
        self.state = MemberState.OFFLINE

    def _fail(self, why: str) -> None:
        """Enter ERROR: stop certifying locally, refuse writes (exit_state_action=READ_ONLY)."""
        if self.state is MemberState.ERROR:
            return
        self._log.error("member_error", reason=why)
        self.state = MemberState.ERROR
        self.error = why
        for fut in list(self._pending.values()) + list(self._ddl_pending.values()):
            if not fut.done():
                fut.set_exception(HookError(f"Error on observer while running replication hook 'before_commit'. ({why})"))
        self._announce(MemberState.ERROR)

    # --- group callbacks (called in delivery order, from the loop) ------------------------------------

    def _on_view(self, view: View) -> None:
        if self.state is MemberState.ERROR:
            return
        self._run_actions(self.engine.on_view(view))
        if self._announced is not None and view.joined:
            # Joiners learn every member's facts (weight, address, state) from these.
            self._announce(self._announced)
        if self.config.uuid in self.engine.members and self._announced is None:
            # Distributed recovery (fetching what this backend lacks from a donor) is not
            # implemented yet: a member declares itself ONLINE as soon as it is in the group.
            self.state = MemberState.ONLINE
            self._announce(MemberState.ONLINE)

    def _announce(self, state: MemberState) -> None:
        self._announced = state
        try:
            self.gcs.broadcast(encode(Announce(self.config.uuid, state.value, self.config.member_weight,
                                               self.config.member_address, self.config.version)))
        except GcsError as exc:
            self._log.warning("announce_refused", error=str(exc))

    def _on_delivery(self, delivery: Delivery) -> None:
        if self.state is MemberState.ERROR:
            return
        try:
            actions = self.engine.on_delivery(delivery.payload)
        except (EngineInvariantError, ValueError) as exc:
            self._fail(f"certification invariant: {exc}")
            return
        self._run_actions(actions)

    def _on_event(self, event: ReachabilityChange | GcsEvent) -> None:
        if isinstance(event, ReachabilityChange):
            if event.state is MemberState.UNREACHABLE:
                self.unreachable.add(event.member.uuid)
            else:
                self.unreachable.discard(event.member.uuid)
        elif event.code in (GcsErrorCode.EXPELLED, GcsErrorCode.INTERNAL, GcsErrorCode.BEHIND):
            self._fail(f"group communication: {event.code.value}: {event.detail}")
        elif event.code is GcsErrorCode.BROADCAST_STALLED:
            self._log.warning("broadcast_stalled", detail=event.detail)

    def _run_actions(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case LocalOutcome():
                    fut = self._pending.pop(action.txn_id, None)
                    self._pending_snapshots.pop(action.txn_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(action)
                case ApplyRemote():
                    self._doom_conflicting(action)
                    self._submit(action)
                case ExecuteDdl():
                    if action.local:
                        fut_ddl = self._ddl_pending.pop(action.txn_id, None)
                        if fut_ddl is not None and not fut_ddl.done():
                            fut_ddl.set_result(action)
                    self._submit(action)
                case SyncReached():
                    if action.origin == self.config.uuid:
                        fut_sync = self._syncs.pop(action.sync_id, None)
                        if fut_sync is not None and not fut_sync.done():
                            fut_sync.set_result(action.seq)
                case MembershipChanged():
                    for listener in self.on_membership:
                        listener(action)
                case CertifierRefused():
                    if action.origin == self.config.uuid:
                        fut = self._pending.pop(action.txn_id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(action)

    def _submit(self, item: ApplyRemote | ExecuteDdl) -> None:
        try:
            self.applier.submit(item)
        except ApplierFull as exc:
            self._fail(str(exc))

    def _doom_conflicting(self, remote: ApplyRemote) -> None:
        """A remote transaction won keys that local open transactions also wrote: those will
        fail certification anyway, so they are doomed now and release their row locks."""
        if not self._open:
            return
        keys = set(remote.write_set)
        for txn in self._open.values():
            if txn.doomed_by is None and not txn.keys.isdisjoint(keys):
                txn.doomed_by = remote.seq
                if txn.on_doom is not None:
                    txn.on_doom()

    # --- what sessions call ---------------------------------------------------------------------------

    @property
    def role(self) -> Role | None:
        record = self.engine.members.get(self.config.uuid)
        return record.role if record else None

    def may_write(self) -> bool:
        return self.state is MemberState.ONLINE and self.role is Role.PRIMARY

    def check_writable(self) -> None:
        """Raise 1290 unless this member may take writes now."""
        if self.may_write():
            return
        why = "it is a SECONDARY" if self.state is MemberState.ONLINE else f"it is {self.state.value}"
        raise ReadOnly(f"The MySQL server is running with the --super-read-only option so it cannot execute this statement ({why})")

    def auto_increment_offset(self) -> int:
        """1..7 from this member's place in the group (stable while it stays a member)."""
        record = self.engine.members.get(self.config.uuid)
        return 1 + ((record.join_index - 1) % 7 if record else 0)

    def open_txn(self, on_doom: Callable[[], None] | None = None) -> LocalTxn:
        txn = LocalTxn(next(self._txn_ids), on_doom=on_doom)
        self._open[txn.txn_id] = txn
        return txn

    def close_txn(self, txn: LocalTxn) -> None:
        self._open.pop(txn.txn_id, None)

    async def certify_local(self, txn: LocalTxn, write_set: tuple[KeyHash, ...], changes: bytes) -> Seq:
        """Broadcast a local transaction and wait for the group's verdict.

        Returns its seq when it may commit: the caller then commits its backend transaction
        with `store.record_sql(seq)` and calls `committed(seq)`. Raises CertificationConflict
        (3101) when another member's transaction won, HookError (3100) when it cannot be
        ordered (no majority within commit_timeout_s, over transaction_size_limit, member not
        ONLINE).
        """
        self.check_writable()
        if txn.doomed_by is not None:
            raise CertificationConflict("Plugin instructed the server to rollback the current transaction.")
        if len(changes) > self.config.transaction_size_limit:
            raise HookError(
                "Error on observer while running replication hook 'before_commit'. "
                f"(transaction of {len(changes)} bytes is over group_replication_transaction_size_limit)"
            )
        if len(self._pending) >= self.config.local_txns_max:
            raise HookError("Error on observer while running replication hook 'before_commit'. (too many commits waiting)")
        snapshot = self.positions.lwm
        fut: asyncio.Future[LocalOutcome | CertifierRefused] = asyncio.get_running_loop().create_future()
        self._pending[txn.txn_id] = fut
        self._pending_snapshots[txn.txn_id] = snapshot
        try:
            self.gcs.broadcast(encode(TxnMessage(self.config.uuid, txn.txn_id, snapshot, write_set, changes)))
            async with asyncio.timeout(self.config.commit_timeout_s):
                outcome = await fut
        except GcsError as exc:
            raise HookError(f"Error on observer while running replication hook 'before_commit'. ({exc.code.value})") from exc
        except TimeoutError:
            # The message may still be delivered: the verdict is then applied by the group
            # (and by us, as a remote-looking transaction would not be: see README limitations).
            raise HookError("Error on observer while running replication hook 'before_commit'. (timed out waiting for the group)") from None
        finally:
            self._pending.pop(txn.txn_id, None)
            self._pending_snapshots.pop(txn.txn_id, None)
        if isinstance(outcome, CertifierRefused):
            raise HookError("Error on observer while running replication hook 'before_commit'. (certification database full)")
        if outcome.seq is None:
            raise CertificationConflict("Plugin instructed the server to rollback the current transaction.")
        return outcome.seq

    def committed(self, seq: Seq) -> None:
        """The local backend committed `seq` (with its position row)."""
        self.positions.mark_applied(seq)

    def commit_failed(self, seq: Seq, error: BaseException) -> None:
        """A certified local transaction could not commit on our backend: we now lack a
        transaction the group has — ERROR (distributed recovery would bring it back)."""
        self._fail(f"certified transaction {seq} failed to commit locally: {error}")

    async def run_ddl(self, schema: str, sql: str) -> DdlOutcome:
        """Order DDL through the group, then wait until it ran here (in delivery order)."""
        self.check_writable()
        txn_id = next(self._txn_ids)
        fut: asyncio.Future[ExecuteDdl] = asyncio.get_running_loop().create_future()
        self._ddl_pending[txn_id] = fut
        try:
            self.gcs.broadcast(encode(DdlMessage(self.config.uuid, txn_id, schema, sql)))
            async with asyncio.timeout(self.config.commit_timeout_s):
                action = await fut
                return await self.applier.ddl_outcome(action.seq)
        except GcsError as exc:
            raise HookError(f"Error on observer while running replication hook 'before_commit'. ({exc.code.value})") from exc
        except TimeoutError:
            raise HookError("Error on observer while running replication hook 'before_commit'. (timed out waiting for the group)") from None
        finally:
            self._ddl_pending.pop(txn_id, None)

    async def sync_point(self, timeout_s: float) -> Seq:
        """Consistency BEFORE: a marker through the total order; returns the seq everything
        before it reached. Raises HoldWaitTimeout (3781)."""
        sync_id = next(self._txn_ids)
        fut: asyncio.Future[Seq] = asyncio.get_running_loop().create_future()
        self._syncs[sync_id] = fut
        try:
            self.gcs.broadcast(encode(SyncPoint(self.config.uuid, sync_id)))
            async with asyncio.timeout(timeout_s):
                return await fut
        except (GcsError, TimeoutError):
            raise HoldWaitTimeout("Timeout exceeded for held statement while new Group Replication primary member is applying backlog or while waiting for the group.") from None
        finally:
            self._syncs.pop(sync_id, None)

    def members(self) -> list[MemberRecord]:
        """The member table as this member sees it (UNREACHABLE overlaid from the detector)."""
        out = []
        for m in self.engine.ordered_members():
            if m.uuid in self.unreachable:
                m = replace(m, state=MemberState.UNREACHABLE)
            if m.uuid == self.config.uuid:
                m = replace(m, state=self.state)
            out.append(m)
        return out

    # --- background work ------------------------------------------------------------------------------

    async def _run_applier(self) -> None:
        try:
            await self.applier.run()
        except ApplierFailed as exc:
            self._fail(str(exc))
        except MySQLError as exc:
            self._fail(f"applier: {exc}")

    async def _housekeeping(self) -> None:
        """Stable-position reports (certification GC) and positions compaction."""
        loop = asyncio.get_running_loop()
        next_compaction = loop.time() + self.config.compaction_interval_s
        while True:
            await asyncio.sleep(self.config.stable_report_interval_s)
            if self.state is not MemberState.ONLINE:
                continue
            lowest = min([self.positions.lwm, *self._pending_snapshots.values()])
            if lowest != self._last_report:
                try:
                    self.gcs.broadcast(encode(StableReport(self.config.uuid, lowest)))
                    self._last_report = lowest
                except GcsError:
                    pass
            if loop.time() >= next_compaction:
                next_compaction = loop.time() + self.config.compaction_interval_s
                try:
                    conn = await self.connect()
                    try:
                        await self.store.compact(conn)
                    finally:
                        await conn.quit()
                except (MySQLError, BackendError) as exc:
                    self._log.warning("compaction_failed", error=str(exc))

