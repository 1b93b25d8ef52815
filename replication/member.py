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

States follow replication_group_members and move only by replication/lifecycle.py's table:
OFFLINE → RECOVERING → ONLINE, ERROR on any invariant failure (an engine error, a certified
transaction that failed to commit or apply, a dead backend, a failed recovery, expulsion).
A member in ERROR leaves the group (so a primary's failure elects another), refuses writes
and held reads, and then does what `exit_state_action` says; after an expulsion or a failed
join it tries `autorejoin_tries` times as a new incarnation.

Group identity (DESIGN §8): the group's uuid is kept in every backend (grproxy.meta) beside
the applied positions; transactions are `group_uuid:seq`. `bootstrap_group` applies only to a
backend that never belonged to a group; a joiner whose backend holds another group's
transactions, or seqs of this group that the group does not have, is refused and goes to
ERROR; a backend recorded as another member's is refused at start. A whole-group restart goes
through `reboot()` (driven by `grproxy reboot`), which starts from the most advanced member.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid as uuidlib
from collections.abc import Awaitable, Callable
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
    ViewId,
)
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.protocol.errors import (
    BackendError,
    CertificationConflict,
    HoldMemberStatus,
    HoldWaitTimeout,
    HookError,
    MySQLError,
    NotSupported,
    ReadOnly,
)

from .applier import Applier, ApplierFailed, ApplierFull, ApplyChanges
from .certifier import Certifier, KeyHash, Seq
from .consistency import Level
from .lifecycle import ExitStateAction, LifecycleEvent, transition
from .local_commit import BackendUnfit, LocalCommits
from .engine import (
    AckReceived,
    Action,
    ApplyRemote,
    CertifierRefused,
    DdlDecided,
    Engine,
    EngineInvariantError,
    ExecuteDdl,
    HandoverStarted,
    LocalOutcome,
    MemberRecord,
    MembershipChanged,
    Role,
    SyncReached,
)
from .messages import SEEN_SEQS_MAX, AppliedAck, Announce, DdlMessage, ReplicationDecodeError, StableReport, SyncPoint, TxnMessage, decode, encode
from .positions import Positions, PositionStore, gtid_set
from . import outside_writes
from .engine import AdminOutcome
from .messages import AdminAction, AdminOp, DdlOutcome, MemberStats
from .flow_control import FLOW_OBSERVE_INTERVAL_S, FlowControl, FlowSettings
from .recovery import CACHE_DDL_PENDING, CACHE_TXN, Donor, Joiner, TransactionCache, ddl_blob, ddl_kind

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
    message_cache_size: int = 1 << 30  # bytes of certified transactions kept for joiners
    recovery_user: str = "root"  # login on donors' member ports (an admin user there)
    recovery_password: str = ""
    recovery_timeout_s: float = 120.0  # to find a donor; for fetched transactions to be applied
    recovery_donor_timeout_s: float = 30.0  # any one command on a donor's member port (then the next donor)
    recovery_retry_count: int = 10  # donor failures (all donors together) before recovery fails (GR's name)
    recovery_buffer_max: int = 200_000  # deliveries buffered while recovering; more → ERROR
    consistency: int = 0  # default group_replication_consistency of new sessions (Level value)
    ack_waits_max: int = 10_000  # AFTER acknowledgements pending at once
    # BEFORE callers answered by one sync point; a batch that fills up is broadcast at once.
    sync_batch_waiters_max: int = 1_000
    # Lifecycle (GR's names and defaults).
    autorejoin_tries: int = 3  # after an expulsion or a failed join, as new incarnations
    autorejoin_interval_s: float = 5.0  # between two tries (GR: 5 minutes; ours is for proxies)
    exit_state_action: str = "READ_ONLY"  # READ_ONLY, OFFLINE_MODE, ABORT_SERVER
    unreachable_majority_timeout_s: float = 0.0  # 0 = wait for a majority forever
    # SET GLOBAL group_replication_member_expel_timeout: given to every incarnation's group
    # binding (None: what the binding was built with).
    member_expel_timeout_s: int | None = None
    # SET GLOBAL group_replication_compression_threshold: likewise, for the transport.
    compression_threshold: int | None = None
    backend_check_interval_s: float = 1.0  # liveness probe of the backend
    backend_check_failures_max: int = 3  # consecutive failed probes → ERROR (the member leaves)
    # Flow control (replication/flow_control.py; GR's names and defaults).
    flow_control_mode: str = "QUOTA"  # QUOTA or DISABLED
    flow_control_certifier_threshold: int = 25_000
    flow_control_applier_threshold: int = 25_000
    flow_control_period_s: int = 1


@dataclass(slots=True)
class LocalTxn:
    """An open write transaction of a session on this member (for local doom)."""

    txn_id: int
    keys: set[KeyHash] = field(default_factory=set)
    doomed_by: Seq | None = None
    on_doom: Callable[[], None] | None = None
    thread_id: int | None = None  # its backend connection's id (the applier's lock watch finds it by it)
    preparing: bool = False  # XA END / PREPARE sent: its verdict ends it, it is never doomed for a lock
    flow_wake: asyncio.Future[None] | None = None  # set while its COMMIT waits for flow control's quota


@dataclass(slots=True, eq=False)
class SyncBatch:
    """`sync_point` callers answered by one SyncPoint message (see `Member.sync_point`).

    `outcome` holds the seq reached at its delivery, or the GcsError that refused its broadcast
    (a result, not an exception: nobody may be left to retrieve it). It is shared, so callers
    wait on it through `asyncio.shield`: one caller's timeout or cancellation must not cancel it.
    """

    outcome: asyncio.Future[Seq | GcsError]
    waiters: int = 0
    sync_id: int | None = None  # set once broadcast


class DdlNotRun(Exception):
    """The session that asked for a DDL cannot run it any more (its connection is closed)."""


@dataclass(slots=True, eq=False)
class LocalDdl:
    """A DDL asked for by a session of this member, from its broadcast until it settled (see
    `Member.run_ddl`). `execute` runs it on the session's connection `conn` and returns the
    server's errno (0: OK) and whether the server logged it although it failed (it changed
    something first), raising DdlNotRun when it could not even be sent."""

    txn_id: int
    conn: BackendConnection
    execute: Callable[[], Awaitable[tuple[int, bool]]]
    ordered: asyncio.Future[Seq]  # its seq, at delivery
    settled: asyncio.Future[bool] | None = None  # the applier's (see Applier.ddl_settled)
    started: bool = False  # its session runs it now: nothing may abandon it
    errno: int = 0  # how it ended on this member's backend


RESOLVE_COMMITTING_WAIT_S = 10.0  # _resolve_local: how long certified local commits may take to end
HANDOVER_WAIT_MAX_S = 3600.0  # set_as_primary without a timeout: the longest the old primary waits (GR's max)
HANDOVER_POLL_S = 0.05
LEAVE_WAIT_S = 5.0  # _new_incarnation: how long the old incarnation's leave may take to be agreed
LEAVE_POLL_S = 0.02
DIVERGED_MARK_CHARS = 250  # how much of a stray write's description the backend's mark keeps
_REBUILD_HINT = ("Rebuild it from the group: start the member with `grproxy serve --config … --clone` (or, on its "
                 "member port as an admin, `/* grproxy */ GROUP REJOIN CLONE`), which replaces its user schemas with "
                 "a clone of a donor's; or start it on an empty backend")


class StartRefused(Exception):
    """The member may not start as asked; the message says why and what to do instead."""


GcsFactory = Callable[[], Awaitable[GroupCommunication]]


class Member:
    """See the module docstring.

    `gcs` is this member's first incarnation in the group. `gcs_factory`, when given, makes a
    new started incarnation (the previous one closed first): it is what rejoining after an
    expulsion or a failed join, START GROUP_REPLICATION and the reboot need; without it such
    a member stays in ERROR.
    """

    def __init__(self, config: MemberConfig, gcs: GroupCommunication, apply_changes: ApplyChanges,
                 after_ddl: Callable[[str, str], None] | None = None, gcs_factory: GcsFactory | None = None) -> None:
        self.config = config
        self.gcs = gcs
        self._gcs_factory = gcs_factory
        self.state = MemberState.OFFLINE
        self.error: str | None = None
        self.group_uuid: str | None = None
        self.exit_state_action = ExitStateAction.parse(config.exit_state_action)
        self.on_error: list[Callable[[str], None]] = []  # the process acts on exit_state_action
        self._seeds: tuple[MemberId, ...] = ()
        self._rejoins_left = config.autorejoin_tries
        self._rejoin_task: asyncio.Task[None] | None = None
        self._bootstrapping: LifecycleEvent | None = None  # BOOTSTRAP / REBOOT until the first view
        self._no_majority_since: float | None = None
        self._backend_failures = 0
        self._applier_task: asyncio.Task[None] | None = None
        self.positions = Positions()
        self.store = PositionStore()
        self.local = LocalCommits(self)  # the binlog write path (replication/local_commit.py)
        self.engine = Engine(config.uuid, single_primary=config.single_primary)
        def forget_metadata(schema: str, sql: str) -> None:
            self.local.catalog.forget_for_ddl(schema, sql)
            if after_ddl is not None:
                after_ddl(schema, sql)

        self.applier = Applier(self.connect, self.positions, self.store, apply_changes, after_ddl=forget_metadata,
                               doom_thread=self.doom_thread, run_local_ddl=self.run_local_ddl)
        self.unreachable: set[str] = set()
        self._log = log.bind(member_id=config.uuid)
        self._txn_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[LocalOutcome | CertifierRefused]] = {}
        self._pending_snapshots: dict[int, Seq] = {}
        self._local_ddl: dict[int, LocalDdl] = {}  # DDL of this member's sessions, by txn_id
        # Consistency BEFORE (see sync_point): broadcast sync points not yet delivered, by
        # sync_id; the latest one broadcast (it gates the pending batch); callers that came
        # while it was in flight.
        self._syncs: dict[int, SyncBatch] = {}
        self._sync_inflight: SyncBatch | None = None
        self._sync_pending: SyncBatch | None = None
        self.stats_sync_broadcasts = 0  # SyncPoint messages this member broadcast
        self.stats_sync_requests = 0  # sync_point calls (BEFORE statements waiting for a marker)
        self._open: dict[int, LocalTxn] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()  # fire-and-forget work kept referenced
        # Rebuild this backend by a clone at the next join, whatever it holds (serve --clone,
        # GROUP REJOIN CLONE); cleared when a clone completed.
        self.clone_requested = False
        # A stray write this process saw (also marked on the backend): no rejoin until a clone.
        self.diverged: str | None = None
        self._last_report: Seq | None = None
        self._announced: MemberState | None = None
        self.on_membership: list[Callable[[MembershipChanged], None]] = []
        # Distributed recovery: what donors keep, and what a joiner buffers meanwhile.
        # (replication/recovery: the donor side serves joiners; `recovery` is the latest joiner.)
        self.cache = TransactionCache(config.message_cache_size)
        self.donor = Donor(self.cache, self.connect, lambda: self.group_uuid, lambda: self.positions.applied,
                           lambda: self.local.committing)
        self.recovery: Joiner | None = None
        self._recovering: View | None = None
        self._buffer: list[View | Delivery] = []
        self._donors: dict[str, str] = {}  # uuid → member address, from announcements
        # Consistency: the default level, AFTER acknowledgements, the new primary's backlog.
        self.consistency = Level(config.consistency)
        self._acks: dict[int, set[str]] = {}  # seq → members that acknowledged it
        self._ack_txns: set[int] = set()  # local txn ids whose commit waits for acks
        self._ack_waiters: dict[int, asyncio.Future[None]] = {}
        self._ack_tasks = 0
        self.failover_backlog: Seq | None = None
        self._admin_pending: dict[int, asyncio.Future[AdminOutcome]] = {}  # group actions asked here
        self._last_stats: MemberStats | None = None
        self.stats_doomed = 0  # local transactions that lost to a remote one before certification
        # Flow control: the quota of this member's commits, and the commits waiting for a
        # period with quota left (each on its LocalTxn.flow_wake, set at every period's end).
        self.flow = FlowControl(self._flow_settings())
        self._flow_waiting: dict[int, LocalTxn] = {}  # by txn_id: commits waiting for the quota

    # --- lifecycle ------------------------------------------------------------------------------

    async def connect(self, database: str | None = None) -> BackendConnection:
        """A new connection to this member's backend with the proxy's account, writing in
        grproxy's GTID domain on MariaDB (replication.outside_writes)."""
        conn = await BackendConnection.open(
            self.config.backend, capabilities=MEMBER_CAPABILITIES, collation=UTF8MB4_GENERAL_CI, database=database
        )
        if conn.handshake is not None and conn.handshake.is_mariadb:
            try:
                await conn.execute(outside_writes.session_sql())
            except BaseException:
                conn.close()
                raise
        return conn

    async def check_outside_writes(self, conn: BackendConnection) -> None:
        """Refuse (StartRefused) a backend that holds writes the group never saw: a stray write
        the running member found (the `diverged` mark), or transactions logged outside grproxy's
        GTID domain since the member last recorded them (replication.outside_writes). The
        first time, and after a binlog reset, the current state is recorded instead."""
        mark = self.diverged or await self.store.get_meta(conn, outside_writes.DIVERGED_META)
        if mark is not None:
            raise self._diverged_refusal(mark)
        if conn.handshake is None or not conn.handshake.is_mariadb:
            return
        current = await self._outside_state(conn)
        r = await conn.execute(f"SELECT name, value FROM grproxy.meta WHERE name LIKE '{outside_writes.META_LIKE}'")
        rows = {_text(n): _text(v) for n, v in r.rows}
        if outside_writes.META_RECORDED in rows:  # recorded (the state itself may be empty)
            recorded = outside_writes.from_meta_rows(rows)
            written = outside_writes.written_since(recorded, current)
            if written:
                raise StartRefused(
                    f"backend {self.config.backend} holds transactions the group does not have: {', '.join(written)} "
                    "(MariaDB GTIDs outside grproxy's domain: written on the backend around grproxy — directly, by "
                    f"an event or a replication channel), so its data may differ from the group's. {_REBUILD_HINT}. "
                    "If you know they changed nothing the group holds (local accounts made without "
                    "SET sql_log_bin = 0, as GR asks), accept them: DELETE FROM grproxy.meta WHERE name LIKE "
                    f"'{outside_writes.META_LIKE}' on the backend, then start the member again")
            if current == recorded:
                return
            self._log.warning("backend_binlog_reset", recorded=rows, now=outside_writes.meta_rows(current))
        await self.record_outside_writes(conn, current)

    def _diverged_refusal(self, mark: str) -> StartRefused:
        return StartRefused(f"backend {self.config.backend} holds a write the group never saw ({mark}), so its data "
                            f"may differ from the group's. {_REBUILD_HINT}")

    @staticmethod
    async def _outside_state(conn: BackendConnection) -> dict[tuple[int, int], int]:
        """The backend's GTID state outside grproxy's domain (empty on MySQL: no domains)."""
        if conn.handshake is None or not conn.handshake.is_mariadb:
            return {}
        r = await conn.execute("SELECT @@GLOBAL.gtid_binlog_state")
        return outside_writes.outside(outside_writes.parse_state(_text(r.rows[0][0]) if r.rows else ""))

    async def record_outside_writes(self, conn: BackendConnection, state: dict[tuple[int, int], int] | None = None) -> None:
        """Take the backend's GTID state outside grproxy's domain as the record (first start, a
        binlog reset, after a clone), and drop a `diverged` mark."""
        if state is None:
            state = await self._outside_state(conn)
        await conn.execute(f"DELETE FROM grproxy.meta WHERE name LIKE '{outside_writes.META_LIKE}' "
                           f"OR name = '{outside_writes.DIVERGED_META}'")
        for name, value in outside_writes.meta_rows(state).items():
            await self.store.set_meta(conn, name, value)
        await self.store.set_meta(conn, outside_writes.META_RECORDED, "1")
        self.diverged = None

    async def start(self, *, bootstrap: bool, seeds: tuple[MemberId, ...] = ()) -> None:
        """Check the backend's identity and load its positions, then bootstrap a new group or
        join through `seeds`. Raises StartRefused (nothing started) when the backend belongs to
        another member, or when `bootstrap` is asked of a backend that already belonged to a
        group (it must rejoin, or the whole group goes through `grproxy reboot`)."""
        if bootstrap and self.clone_requested:
            raise StartRefused("a clone needs a running group to clone from: start this member without "
                               "bootstrap_group / --bootstrap")
        conn = await self.connect()
        try:
            await self.store.setup(conn)
            applied = await self.store.load(conn)
            identity = await self.store.load_identity(conn)
            if identity.member_uuid is not None and identity.member_uuid != self.config.uuid:
                raise StartRefused(
                    f"backend {self.config.backend} belongs to member {identity.member_uuid}, not to {self.config.uuid} "
                    "(a datadir copied from another member?): give this member its own backend, or its own uuid")
            if identity.member_uuid is None:
                await self.store.set_meta(conn, "member_uuid", self.config.uuid)
            try:
                await self.local.check_backend(conn)
            except BackendUnfit as exc:
                raise StartRefused(str(exc)) from None
            # The binlog reader opens before the outside-writes check, so no write falls between
            # them: one committed before the check is in the GTID state it reads, one after it
            # reaches the reader (stray_write).
            await self.local.open()
            if not self.clone_requested:
                await self.check_outside_writes(conn)
            await self.local.resolve_prepared(conn)
            applied = await self.store.load(conn)
            if bootstrap:
                if identity.group_uuid is not None or len(applied):
                    held = gtid_set(identity.group_uuid, applied) or "no transactions"
                    raise StartRefused(
                        f"bootstrap_group refused: backend {self.config.backend} already belongs to group "
                        f"{identity.group_uuid or '(unnamed)'} ({held}). To rejoin the running group, start with "
                        "bootstrap_group = false and group_seeds listing its members; if every member of the group "
                        "is down, restart them all that way and run `grproxy reboot` once")
                self.group_uuid = str(uuidlib.uuid4())
                await self.store.set_meta(conn, "group_uuid", self.group_uuid)
            else:
                self.group_uuid = identity.group_uuid
        except BaseException:
            await self.local.close_reader()
            raise
        finally:
            await conn.quit()
        if self.diverged is not None:  # the reader found a stray write while the member started
            await self.local.close_reader()
            raise self._diverged_refusal(self.diverged)
        self.positions.applied = applied
        self._seeds = seeds
        loop = asyncio.get_running_loop()
        self._applier_task = loop.create_task(self._run_applier())
        self._tasks = [self._applier_task, loop.create_task(self._housekeeping()),
                       loop.create_task(self._flow_control())]
        self._enter_group(self.gcs, LifecycleEvent.BOOTSTRAP if bootstrap else LifecycleEvent.JOIN)

    def _apply_gcs_settings(self, gcs: GroupCommunication) -> None:
        """Runtime group settings (SET GLOBAL) on an incarnation's binding, where it takes them."""
        set_expel = getattr(gcs, "set_member_expel_timeout_ms", None)
        if self.config.member_expel_timeout_s is not None and set_expel is not None:
            set_expel(self.config.member_expel_timeout_s * 1000)
        set_threshold = getattr(gcs, "set_compression_threshold", None)
        if self.config.compression_threshold is not None and set_threshold is not None:
            set_threshold(self.config.compression_threshold)

    def _enter_group(self, gcs: GroupCommunication, event: LifecycleEvent) -> None:
        """Take part in the group through incarnation `gcs`: bootstrap, reboot or join. The
        engine starts afresh; seqs continue from what this backend holds."""
        self._apply_gcs_settings(gcs)
        self.gcs = gcs
        self.engine = Engine(self.config.uuid, single_primary=self.config.single_primary)
        self.engine.certifier = Certifier(last_seq=Seq(max((hi for _, hi in self.positions.applied.intervals()), default=0)))
        self._recovering = None
        self._buffer = []
        self._donors = {}
        self.donor.reset()
        self._announced = None
        self._last_report = None
        self._no_majority_since = None
        self.unreachable.clear()
        gcs.add_view_listener(lambda view: self._on_view(view) if gcs is self.gcs else None)
        gcs.add_delivery_listener(lambda d: self._on_delivery(d) if gcs is self.gcs else None)
        gcs.add_event_listener(lambda e: self._on_event(e) if gcs is self.gcs else None)
        if event in (LifecycleEvent.BOOTSTRAP, LifecycleEvent.REBOOT):
            self._bootstrapping = event
            # ONLINE once the bootstrap view is installed; refused (GROUP_EXISTS) when one of
            # the seeds answers from a running group: two groups under one name never run.
            gcs.bootstrap((gcs.me,), self._seeds)
        else:
            self._bootstrapping = None
            self._move(event)
            if not self._seeds:
                # Nobody to join (a one-member group's config): wait for `grproxy reboot`.
                self._fail("no group_seeds to join through: bootstrap a new group with `grproxy serve --bootstrap`, "
                           "or restart a stopped group with `grproxy reboot`")
                return
            gcs.join(self._seeds)

    def _move(self, event: LifecycleEvent) -> None:
        """Change state by the lifecycle table (raises IllegalTransition, changing nothing)."""
        new = transition(self.state, event)
        if new is not self.state:
            self._log.info("member_state", on=event.value, state_from=self.state.value, state_to=new.value)
        self.state = new
        if new is not MemberState.ERROR:
            self.error = None

    async def _new_incarnation(self) -> GroupCommunication | None:
        """Close the current incarnation and start a new one (None without a factory). An old
        incarnation still in a view leaves first and is given up to LEAVE_WAIT_S to have its
        departure agreed: closed at once, it would leave as a failure, and a two-member view
        loses its majority to it (the other member alone cannot expel it)."""
        if self._gcs_factory is None:
            return None
        old = self.gcs
        try:
            old.leave()
        except GcsError:
            pass
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEAVE_WAIT_S
        while old.current_view() is not None and loop.time() < deadline:
            await asyncio.sleep(LEAVE_POLL_S)
        close = getattr(old, "close", None)
        if close is not None:
            await close()
        return await self._gcs_factory()

    @property
    def in_group(self) -> bool:
        """ONLINE, or RECOVERING inside a view (a member still asking seeds is not)."""
        return self.state is MemberState.ONLINE or (self.state is MemberState.RECOVERING and self.engine.view is not None)

    async def rejoin(self, *, clone: bool = False) -> None:
        """Join the group again as a new incarnation (START GROUP_REPLICATION, autorejoin); a
        join still asking its seeds is started over. `clone`: recover by a clone of a donor's
        data whatever this backend holds (GROUP REJOIN CLONE, for a backend refused for writes
        the group never saw). Raises StartRefused without a gcs factory, while in the group,
        or for such a backend without `clone`."""
        if self.in_group:
            raise StartRefused(f"the member is already {self.state.value} in the group")
        self.clone_requested = self.clone_requested or clone
        self._cancel_rejoin()
        await self._resolve_local()
        gcs = await self._new_incarnation()
        if gcs is None:
            raise StartRefused("this member cannot start a new group incarnation (no group factory)")
        self._stop_joining()
        self._enter_group(gcs, LifecycleEvent.REJOIN)

    async def _resolve_local(self) -> None:
        """Before a new incarnation: end the prepared XA transactions the old one left (their
        sessions were closed when it failed), then take the backend's recorded positions as
        the truth. They can differ from what this process believed in both directions when the
        backend died: a commit whose answer was lost did happen (its seq is recorded: applying
        it again would fail on a duplicate), and a backend without durable commits
        (innodb_flush_log_at_trx_commit != 1) can lose seqs it had acknowledged (recovery
        fetches them again)."""
        await self.local.reopen_if_broken()
        # A certified local commit still between its position record and its XA COMMIT
        # (LocalCommits.committing) finishes first: resolve_prepared reads the recorded xids,
        # then rolls back the prepared transactions without one; a record landing in between
        # would count the seq as applied here over a rolled-back transaction (a lost write).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESOLVE_COMMITTING_WAIT_S
        while self.local.committing:
            if loop.time() >= deadline:
                raise StartRefused(f"local commits {sorted(self.local.committing)} are still ending on the backend: "
                                   "try again once they have")
            await asyncio.sleep(0.01)
        if self._applier_task is not None and self._applier_task.done():
            # What the failed applier still held is fetched again by recovery (not applied here).
            self.applier.discard_queue()
            self._applier_task = asyncio.get_running_loop().create_task(self._run_applier())
            self._tasks.append(self._applier_task)
        # A still running applier (expelled, not failed: it applies what it was given) may
        # commit while the positions are read: those seqs are kept (positions.reload_begin).
        since = self.positions.reload_begin()
        try:
            conn = await self.connect()
            try:
                if not self.clone_requested:
                    await self.check_outside_writes(conn)
                await self.local.resolve_prepared(conn)
                stored = await self.store.load(conn)
            finally:
                await conn.quit()
        except BaseException:
            self.positions.replace(self.positions.applied, since=since)  # ends the reload, changes nothing
            raise
        believed = self.positions.applied
        self.positions.replace(stored, since=since)
        if list(self.positions.applied.intervals()) != list(believed.intervals()):
            self._log.warning("positions_reloaded", believed=str(believed), stored=str(stored))

    def _stop_joining(self) -> None:
        """A join still asking seeds is abandoned for what replaces it."""
        if self.state is MemberState.RECOVERING and not self.in_group:
            self._move(LifecycleEvent.STOP)

    async def reboot(self) -> None:
        """Whole-group reboot: bootstrap the group again from this member's backend, keeping
        the group's uuid (`grproxy reboot` picks the most advanced member). Refused while this
        member is ONLINE or RECOVERING; the group binding refuses to bootstrap when it can
        reach a live member of the group."""
        if self.in_group:
            raise StartRefused(f"reboot refused: the member is {self.state.value} in a running group")
        self._cancel_rejoin()
        if self.group_uuid is None:
            self.group_uuid = str(uuidlib.uuid4())
            conn = await self.connect()
            try:
                await self.store.set_meta(conn, "group_uuid", self.group_uuid)
            finally:
                await conn.quit()
        await self._resolve_local()
        gcs = await self._new_incarnation()
        if gcs is None:
            raise StartRefused("this member cannot start a new group incarnation (no group factory)")
        self._rejoins_left = self.config.autorejoin_tries
        self._stop_joining()
        if self.state is MemberState.ERROR:
            # Through OFFLINE: in ERROR the member ignores views (it would never see the bootstrap
            # view that makes it ONLINE), and a failure while rebooting must move it to ERROR anew.
            self._move(LifecycleEvent.STOP)
        self._enter_group(gcs, LifecycleEvent.REBOOT)

    async def stop_group(self) -> None:
        """STOP GROUP_REPLICATION: leave the group; OFFLINE and read-only until started again."""
        self._cancel_rejoin()
        try:
            self.gcs.leave()
        except GcsError:
            pass
        self._abort_waiters("the member left the group (STOP GROUP_REPLICATION)")
        self._move(LifecycleEvent.STOP)
        self._bootstrapping = None
        self._recovering = None
        self._buffer = []

    @property
    def offline_mode(self) -> bool:
        """In ERROR with exit_state_action = OFFLINE_MODE: client sessions are refused (3032)."""
        return self.state is MemberState.ERROR and self.exit_state_action is ExitStateAction.OFFLINE_MODE

    def gtid_executed(self) -> str:
        """This backend's applied transactions as a GTID set: 'group_uuid:1-100:102'."""
        return gtid_set(self.group_uuid, self.positions.applied)

    async def stop(self) -> None:
        self._cancel_rejoin()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        await self.applier.close()
        await self.local.close()
        self.donor.close()
        self.state = MemberState.OFFLINE

    def _fail(self, why: str, *, rejoin: bool = False) -> None:
        """Enter ERROR: fail what waits on the group, leave the group (its members elect
        another primary at once), then act on exit_state_action. With `rejoin` (expelled, a
        join that failed), try again as a new incarnation while autorejoin_tries last."""
        if self.state is MemberState.ERROR:
            return
        self._log.error("member_error", reason=why, exit_state_action=self.exit_state_action.value)
        self._move(LifecycleEvent.FAIL)
        self.error = why
        self._abort_waiters(why)
        self._announce(MemberState.ERROR)
        try:
            self.gcs.leave()
        except GcsError:
            pass
        if rejoin and self._rejoins_left > 0 and self._gcs_factory is not None:
            self._rejoins_left -= 1
            self._schedule_rejoin()
            return
        for listener in self.on_error:
            listener(why)

    def _abort_waiters(self, why: str) -> None:
        self.flow.quota = None  # off the group: nothing to throttle; waiting commits go on and fail
        self._flow_wake_all()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(HookError(f"Error on observer while running replication hook 'before_commit'. ({why})"))
        self._abandon_ddl(why)

    def _abandon_ddl(self, why: str) -> None:
        """The member leaves the group: DDL not decided yet is not applied here (the applier
        drops it and what follows; recovery brings them back). Local DDL not started yet never
        runs: its session gets 3100. One that runs now finishes, and settles as the applier
        records it."""
        self.applier.abandon_undecided()
        for txn_id, ddl in list(self._local_ddl.items()):
            if ddl.started:
                continue
            del self._local_ddl[txn_id]
            if not ddl.ordered.done():
                ddl.ordered.set_exception(HookError(f"Error on observer while running replication hook "
                                                    f"'before_commit'. ({why})"))

    def _schedule_rejoin(self) -> None:
        """GR's autorejoin: try again as a new incarnation every autorejoin_interval_s. A try
        made while the backend does not answer is not counted (the member waits for it); a try
        that fails uses one of autorejoin_tries; when none is left, exit_state_action applies.
        A join that fails later (refused, no seed answers) comes back here through _fail."""
        async def run() -> None:
            while True:
                await asyncio.sleep(self.config.autorejoin_interval_s)
                if self.state is not MemberState.ERROR:
                    return
                if not await self._backend_answers():
                    self._log.info("autorejoin_waits_for_backend")
                    continue
                self._log.info("autorejoin", tries_left=self._rejoins_left)
                try:
                    await self.rejoin()
                    return
                except (StartRefused, OSError, GcsError, MySQLError, BackendError) as exc:
                    self._log.warning("autorejoin_failed", error=str(exc))
                    self.error = f"autorejoin failed: {exc}"
                if self._rejoins_left <= 0:
                    for listener in self.on_error:
                        listener(self.error or "autorejoin failed")
                    return
                self._rejoins_left -= 1

        self._cancel_rejoin()
        self._rejoin_task = asyncio.get_running_loop().create_task(run())

    def _cancel_rejoin(self) -> None:
        """Drop a scheduled autorejoin (never the running one: rejoin() itself calls this)."""
        task = self._rejoin_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._rejoin_task = None

    # --- group callbacks (called in delivery order, from the loop) ------------------------------------

    def _on_view(self, view: View) -> None:
        # Reachability is reported per incarnation: a new one (same uuid) starts reachable.
        self.unreachable -= {m.uuid for m in view.joined}
        self.unreachable &= {m.uuid for m in view.members}
        if self.state is MemberState.ERROR:
            return
        if self._recovering is not None:
            self._buffer_item(view)
            return
        me_joining = (self._bootstrapping is None and self.engine.view is None
                      and any(m.uuid == self.config.uuid for m in view.joined))
        if me_joining:
            # We join a running group: its state up to this view comes from a donor.
            self._recovering = view
            self._buffer = []
            self.recovery = Joiner(self, view)
            self._tasks.append(asyncio.get_running_loop().create_task(self.recovery.run()))
            # The others list us RECOVERING from the view; this gives them our member port
            # (host and port in their replication_group_members), weight and version, as a
            # GR joiner shows them. We read it back from the buffer once recovered.
            self._announce(MemberState.RECOVERING)
            return
        self._run_actions(self.engine.on_view(view))
        if view.joined:
            self.donor.keep_point(view.view_id, self.engine.export_state())
            if self._announced is not None:
                # Joiners learn every member's facts (weight, address, state) from these.
                self._announce(self._announced)
        if self._bootstrapping is not None and self.config.uuid in self.engine.members and self._announced is None:
            self._move(self._bootstrapping)  # a member of the bootstrap view: ONLINE
            self._bootstrapping = None
            self._rejoins_left = self.config.autorejoin_tries
            self._announce(MemberState.ONLINE)

    def _buffer_item(self, item: View | Delivery) -> None:
        if len(self._buffer) >= self.config.recovery_buffer_max:
            self._fail(f"recovery fell {self.config.recovery_buffer_max} messages behind the group")
            return
        self._buffer.append(item)
        if isinstance(item, Delivery):
            try:
                msg = decode(item.payload)
            except ReplicationDecodeError:
                return
            if isinstance(msg, Announce) and msg.member != self.config.uuid:
                if msg.state == MemberState.ONLINE.value and msg.member_address:
                    self._donors[msg.member] = msg.member_address
                else:
                    self._donors.pop(msg.member, None)

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
        if self._recovering is not None:
            self._buffer_item(delivery)
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
        elif event.code in (GcsErrorCode.EXPELLED, GcsErrorCode.BEHIND, GcsErrorCode.JOIN_FAILED,
                            GcsErrorCode.JOIN_REFUSED):
            # GR's autorejoin: a member that was removed, or could not get in, tries again.
            self._fail(f"group communication: {event.code.value}: {event.detail}", rejoin=True)
        elif event.code is GcsErrorCode.GROUP_EXISTS:
            self._fail(f"bootstrap refused: a group with this name is running ({event.detail}); "
                       "start this member with bootstrap off so that it joins it")
        elif event.code is GcsErrorCode.INTERNAL:
            self._fail(f"group communication: {event.code.value}: {event.detail}")
        elif event.code is GcsErrorCode.BROADCAST_STALLED:
            self._log.warning("broadcast_stalled", detail=event.detail)

    def _run_actions(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case LocalOutcome():
                    if action.seq is not None:
                        self.cache.put(action.seq, CACHE_TXN, action.changes)
                        if action.txn_id in self._ack_txns:
                            self._acks[action.seq] = set()  # acks follow this point of the order
                    fut = self._pending.pop(action.txn_id, None)
                    self._pending_snapshots.pop(action.txn_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(action)
                case ApplyRemote():
                    self.cache.put(action.seq, CACHE_TXN, action.changes)
                    self._doom_conflicting(action)
                    self._submit(action)
                    if action.ack:
                        self._ack_when_applied(action.seq)
                case AckReceived():
                    acked = self._acks.get(action.seq)
                    if acked is not None:
                        acked.add(action.member)
                        self._check_acks(action.seq)
                case ExecuteDdl():
                    self.cache.put(action.seq, CACHE_DDL_PENDING, ddl_blob(action))
                    self._submit(action)
                    ddl = self._local_ddl.get(action.txn_id) if action.local else None
                    if ddl is not None and not ddl.ordered.done():
                        ddl.settled = self.applier.ddl_settled(action.seq)
                        ddl.ordered.set_result(action.seq)
                case DdlDecided():
                    self.cache.mark(action.seq, ddl_kind(action))
                    self.applier.decide(action)
                    if action.origin_left:
                        self._log.warning("ddl_origin_left", seq=action.seq)
                case SyncReached():
                    if action.origin == self.config.uuid:
                        self._sync_reached(action.sync_id, action.seq)
                case MembershipChanged():
                    if (action.primary == self.config.uuid and action.previous_primary not in (None, self.config.uuid)
                            and self.engine.single_primary):
                        # A newly elected primary: BEFORE_ON_PRIMARY_FAILOVER holds new
                        # transactions until everything ordered so far is applied here.
                        self.failover_backlog = self.engine.certifier.last_seq
                    for seq in list(self._acks):
                        self._check_acks(seq)  # a member that left no longer owes an ack
                    for listener in self.on_membership:
                        listener(action)
                case CertifierRefused():
                    if action.origin == self.config.uuid:
                        fut = self._pending.pop(action.txn_id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(action)
                case HandoverStarted():
                    if action.old == self.config.uuid:
                        self._in_background(self._hand_over(action))
                case AdminOutcome():
                    if action.origin == self.config.uuid:
                        fut_admin = self._admin_pending.pop(action.op_id, None)
                        if fut_admin is not None and not fut_admin.done():
                            fut_admin.set_result(action)

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
                self.stats_doomed += 1
                if txn.on_doom is not None:
                    txn.on_doom()

    # --- distributed recovery (replication/recovery: the joiner calls these) ------------------------

    def donor_candidates(self) -> dict[str, str]:
        """uuid → member address of the members that announced themselves ONLINE since we joined."""
        return dict(self._donors)

    def recovery_failed(self, why: str) -> None:
        """The joiner gave up (or was refused): ERROR; a failed member never announces ONLINE."""
        self._fail(why)

    def forget_metadata(self, schemas: set[str]) -> None:
        """A clone dropped or created these schemas: cached table metadata of them is stale."""
        self.local.catalog.invalidate_all()
        if self.applier.after_ddl is not None:
            for schema in schemas:
                self.applier.after_ddl(schema, "DROP DATABASE `" + schema.replace("`", "``") + "`")

    def replay_backlog(self, state: bytes, view: View) -> tuple[int, Seq]:
        """Continue exactly where the donor's state was taken, then replay what the group
        delivered meanwhile (through the engine and the applier, as live deliveries). Returns
        how many items were replayed and the last seq ordered so far (applied before ONLINE)."""
        self.engine.import_state(state, view)
        self._recovering = None
        buffered, self._buffer = self._buffer, []
        for item in buffered:
            if isinstance(item, View):
                self._on_view(item)
            else:
                self._on_delivery(item)
        return len(buffered), self.engine.certifier.last_seq

    def recovery_done(self, joiner: Joiner) -> None:
        """The backlog is applied: ONLINE (unless something failed this member meanwhile)."""
        if self.state is not MemberState.RECOVERING:
            return
        self._move(LifecycleEvent.RECOVERED)
        self._rejoins_left = self.config.autorejoin_tries
        self._announce(MemberState.ONLINE)
        self._log.info("recovered", donor=joiner.donor[0] if joiner.donor else None, seq=joiner.upto,
                       clones=joiner.clones, fetched=joiner.fetched, gtid_executed=self.gtid_executed())

    def recovery_state(self, view_id: ViewId) -> bytes | None:
        """Donor: the group's uuid and the engine state taken when `view_id` was installed."""
        return self.donor.recovery_state(view_id)

    # --- what sessions call ---------------------------------------------------------------------------

    @property
    def role(self) -> Role | None:
        record = self.engine.members.get(self.config.uuid)
        return record.role if record else None

    def may_write(self) -> bool:
        return self.state is MemberState.ONLINE and self.role is Role.PRIMARY

    def may_begin(self) -> bool:
        """May a new write transaction start here? Not on a primary handing over to another
        with a timeout (set_as_primary(uuid, timeout): GR lets none start meanwhile)."""
        h = self.engine.handover
        return self.may_write() and not (h is not None and h.old == self.config.uuid and h.timeout_s is not None)

    def check_may_begin(self) -> None:
        """Raise 1290 unless a new write transaction may start here now."""
        self.check_writable()
        if not self.may_begin():
            raise ReadOnly("The MySQL server is running with the --super-read-only option so it cannot execute this "
                           "statement (the primary is handing over to another member: "
                           "group_replication_set_as_primary)")

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

    def open_txn(self, on_doom: Callable[[], None] | None = None, thread_id: int | None = None) -> LocalTxn:
        txn = LocalTxn(next(self._txn_ids), on_doom=on_doom, thread_id=thread_id)
        self._open[txn.txn_id] = txn
        return txn

    def close_txn(self, txn: LocalTxn) -> None:
        self._open.pop(txn.txn_id, None)

    def doom_thread(self, thread_id: int, by: Seq) -> bool:
        """The applier's certified item `by` waits for a lock held by backend connection
        `thread_id` (replication/applier.py, lock watch). If that connection runs a local open
        transaction not yet preparing, it is doomed — its next statement or COMMIT answers 3101
        — and its `on_doom` runs (the session rolls it back now if idle); returns True. The
        watch calls again while it still blocks: counted once, `on_doom` runs each time.
        False: no local ACTIVE transaction there (a prepared one waits for its verdict)."""
        for txn in self._open.values():
            if txn.thread_id == thread_id and not txn.preparing:
                if txn.doomed_by is None:
                    txn.doomed_by = by
                    self.stats_doomed += 1
                if txn.on_doom is not None:
                    txn.on_doom()
                return True
        return False

    async def certify_local(self, txn: LocalTxn, write_set: tuple[KeyHash, ...], changes: bytes,
                            ack: bool = False) -> Seq:
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
        fut = self.broadcast_local(txn, write_set, changes, ack)
        snapshot = self._pending_snapshots.get(txn.txn_id, Seq(0))
        try:
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
            self._ack_txns.discard(txn.txn_id)
        return self.verdict(txn, outcome, snapshot)

    def broadcast_local(self, txn: LocalTxn, write_set: tuple[KeyHash, ...], changes: bytes,
                        ack: bool = False, tables: tuple[KeyHash, ...] = ()) -> "asyncio.Future[LocalOutcome | CertifierRefused]":
        """Broadcast a local transaction (snapshot: this member's low-water mark now); returns
        the future its delivery resolves. The caller must call `broadcast_done(txn)` once it no
        longer waits. Raises HookError (3100) when it cannot be broadcast, ReadOnly (1290)."""
        self.check_writable()
        if len(self._pending) >= self.config.local_txns_max:
            raise HookError("Error on observer while running replication hook 'before_commit'. (too many commits waiting)")
        snapshot = self.positions.lwm
        seen = tuple(Seq(x) for x in self.positions.applied.above_lwm(SEEN_SEQS_MAX))
        fut: asyncio.Future[LocalOutcome | CertifierRefused] = asyncio.get_running_loop().create_future()
        self._pending[txn.txn_id] = fut
        self._pending_snapshots[txn.txn_id] = snapshot
        if ack:
            self._ack_txns.add(txn.txn_id)
        try:
            self.gcs.broadcast(encode(TxnMessage(self.config.uuid, txn.txn_id, snapshot, write_set, changes, ack, seen,
                                                 tables)))
        except GcsError as exc:
            self.broadcast_done(txn)
            raise HookError(f"Error on observer while running replication hook 'before_commit'. ({exc.code.value})") from exc
        return fut

    def broadcast_done(self, txn: LocalTxn) -> None:
        self._pending.pop(txn.txn_id, None)
        self._pending_snapshots.pop(txn.txn_id, None)
        self._ack_txns.discard(txn.txn_id)

    def verdict(self, txn: LocalTxn, outcome: "LocalOutcome | CertifierRefused", snapshot: Seq = Seq(0)) -> Seq:
        """The seq a delivered local transaction commits as; raises CertificationConflict
        (3101) or HookError (3100, certifier full)."""
        if isinstance(outcome, CertifierRefused):
            raise HookError("Error on observer while running replication hook 'before_commit'. (certification database full)")
        if outcome.seq is None:
            self._log.info("certification_conflict", txn_id=txn.txn_id, snapshot=snapshot,
                           conflict_seq=outcome.conflict_seq,
                           conflict_committed_here=outcome.conflict_seq in self.positions.applied,
                           lwm_now=self.positions.lwm)
            raise CertificationConflict("Plugin instructed the server to rollback the current transaction.")
        return outcome.seq

    def stray_write(self, why: str) -> None:
        """The binlog shows a write the group never saw: this backend diverged. ERROR, and the
        backend is marked so that neither a restart nor START GROUP_REPLICATION takes it back
        into the group until a clone rebuilt it (check_outside_writes)."""
        self.diverged = why[:DIVERGED_MARK_CHARS]  # refused from now on, whether or not the mark lands
        self._fail(why)
        self._in_background(self._mark_diverged(why))

    def _in_background(self, coro: Awaitable[None]) -> None:
        """Run `coro` on its own, kept referenced until it ends (it handles its own errors)."""
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _mark_diverged(self, why: str) -> None:
        try:
            conn = await self.connect()
            try:
                await self.store.set_meta(conn, outside_writes.DIVERGED_META, why[:DIVERGED_MARK_CHARS])
            finally:
                conn.close()
        except (MySQLError, BackendError, OSError) as exc:
            self._log.error("diverged_mark_failed", error=str(exc))

    def committed(self, seq: Seq) -> None:
        """The local backend committed `seq` (with its position row)."""
        self.positions.mark_applied(seq)

    def commit_failed(self, seq: Seq, error: BaseException) -> None:
        """A certified local transaction could not commit on our backend: we now lack a
        transaction the group has — ERROR (distributed recovery would bring it back)."""
        self._acks.pop(seq, None)  # nobody will wait for its acknowledgements
        self._fail(f"certified transaction {seq} failed to commit locally: {error}", rejoin=True)

    async def run_ddl(self, conn: BackendConnection, schema: str, sql: bytes, context: tuple[tuple[str, str], ...],
                      tables: tuple[KeyHash, ...], execute: Callable[[], Awaitable[tuple[int, bool]]]) -> int:
        """A session's DDL (DESIGN §5): ordered through the group first; at its seq, when every
        earlier seq is applied here and no later one started, `execute` runs it on the
        session's own connection `conn` (its sql_mode, character set, time zone, default
        schema; the server's answer is the session's to relay), while the applier's lock watch
        dooms the local transactions that block it. Its outcome goes to the group: on success
        every other member runs it under `context` (the session's variables) with default
        schema `schema`, on failure nobody does — unless the server logged it all the same (it
        changed something before it failed): then every member runs it and must fail the same
        way. `tables`: what it changes (certification).

        Returns the server's errno (0: OK) once settled here — its seq recorded, after it ran,
        or after the group heard it failed. Runs in a task of its own: the caller may leave,
        the DDL still ends as decided. Raises ReadOnly (1290), HookError (3100: not ordered
        within commit_timeout_s, or the member left the group before it was decided)."""
        self.check_writable()
        loop = asyncio.get_running_loop()
        ddl = LocalDdl(next(self._txn_ids), conn, execute, loop.create_future())
        try:
            payload = encode(DdlMessage(self.config.uuid, ddl.txn_id, schema, sql, context, tables))
        except ValueError as exc:  # over TEXT_BYTES_MAX, or naming over DDL_TABLES_MAX tables
            raise NotSupported(f"This DDL cannot be replicated by grproxy: {exc}") from None
        self._local_ddl[ddl.txn_id] = ddl
        task = loop.create_task(self._order_ddl(ddl, payload))
        return await asyncio.shield(task)

    async def _order_ddl(self, ddl: LocalDdl, payload: bytes) -> int:
        try:
            try:
                self.gcs.broadcast(payload)
                async with asyncio.timeout(self.config.commit_timeout_s):
                    await asyncio.shield(ddl.ordered)
            except GcsError as exc:
                raise HookError(f"Error on observer while running replication hook 'before_commit'. ({exc.code.value})") from exc
            except TimeoutError:
                # Ordered later, it finds no runner: its outcome tells the group nobody runs it.
                raise HookError("Error on observer while running replication hook 'before_commit'. "
                                "(timed out waiting for the group to order the DDL)") from None
            assert ddl.settled is not None
            if not await ddl.settled:
                raise HookError("Error on observer while running replication hook 'before_commit'. (the member left "
                                "the group before the DDL's outcome was decided)")
            return ddl.errno
        finally:
            self._local_ddl.pop(ddl.txn_id, None)

    async def run_local_ddl(self, item: ExecuteDdl) -> int:
        """The applier reached local DDL `item`: its session runs it now (see run_ddl), and the
        group hears how it ended. Returns the server's errno (0: OK). A session that is gone, or
        gave up before the DDL was ordered, answers ER_QUERY_INTERRUPTED: nobody runs it. A
        connection lost while the DDL ran leaves its outcome unknown here: ERROR (the group
        then runs it, as for any origin that left before its outcome)."""
        ddl = self._local_ddl.get(item.txn_id)
        errno, logged = ER_QUERY_INTERRUPTED, False
        if ddl is not None:
            ddl.started = True
            try:
                with self.applier.watching(ddl.conn, item.seq):
                    errno, logged = await ddl.execute()
            except DdlNotRun:
                errno = ER_QUERY_INTERRUPTED
            except (MySQLError, OSError) as exc:
                self._fail(f"DDL seq {item.seq} lost its connection while it ran: its outcome on this member's "
                           f"backend is unknown ({exc})")
                return ER_QUERY_INTERRUPTED
            ddl.errno = errno
        logged = logged and errno != 0
        if logged:
            self._log.warning("ddl_failed_after_changes", seq=item.seq, errno=errno,
                              sql=item.sql[:200].decode("utf-8", "replace"))
            if errno not in DDL_REPRODUCIBLE_ERRNOS:
                # Cut short by something of this server's own (a KILL, max_statement_time, a
                # stray file in a dropped schema): the others cannot end the same way. They run
                # it whole once this member has left (as for any origin that left undecided).
                self._fail(f"DDL seq {item.seq} failed on this member's backend with error {errno} after changing "
                           "something (the server logged it), which the other members cannot reproduce")
                return errno
        if (errno == 0 or logged) and self.applier.after_ddl is not None:
            self.applier.after_ddl(item.schema, item.sql.decode("utf-8", "replace"))
        try:
            self.gcs.broadcast(encode(DdlOutcome(self.config.uuid, item.seq, errno, logged)))
        except GcsError as exc:
            # The others would wait for it forever: leave, and they decide without us.
            self._fail(f"cannot tell the group how DDL seq {item.seq} ended here: {exc}")
        return errno

    async def sync_point(self, timeout_s: float) -> Seq:
        """Consistency BEFORE: returns a seq that every transaction committed anywhere in the
        group before this call has reached (the caller then waits until it is applied here).

        The seq comes from a SyncPoint marker through the total order, broadcast after this
        call began. Concurrent callers share markers, so a batch of them costs one group round
        trip: with no sync point of this member in flight, one is broadcast at once for this
        caller; while one is in flight, the caller joins the pending batch (not the in-flight
        marker: it may be ordered before transactions that committed after it was sent but
        before this call), which is broadcast as one marker when the in-flight one is
        delivered, or when its last caller left (timed out or cancelled: a marker lost with a
        view change gates the batch at most until the longest timeout of its callers). A
        pending batch that reaches `config.sync_batch_waiters_max` callers is broadcast at once
        and becomes the in-flight one; later callers start a new batch.

        Raises HoldWaitTimeout (3781) after `timeout_s` or when the marker could not be
        broadcast (GcsError). A caller that leaves (timeout, cancellation) leaves its batch;
        the others still get their answer.
        """
        self.stats_sync_requests += 1
        batch = self._sync_join()
        try:
            async with asyncio.timeout(timeout_s):
                outcome = await asyncio.shield(batch.outcome)
        except TimeoutError:
            raise HoldWaitTimeout(SYNC_TIMEOUT_MESSAGE) from None
        finally:
            self._sync_leave(batch)
        if isinstance(outcome, GcsError):
            raise HoldWaitTimeout(SYNC_TIMEOUT_MESSAGE) from None
        return outcome

    def _sync_join(self) -> SyncBatch:
        """The batch that answers a caller arriving now (see sync_point)."""
        if self._sync_inflight is None:
            batch = SyncBatch(asyncio.get_running_loop().create_future(), waiters=1)
            self._sync_broadcast(batch)
            return batch
        if self._sync_pending is None:
            self._sync_pending = SyncBatch(asyncio.get_running_loop().create_future())
        batch = self._sync_pending
        batch.waiters += 1
        if batch.waiters >= self.config.sync_batch_waiters_max:
            self._sync_pending = None
            self._sync_broadcast(batch)
        return batch

    def _sync_broadcast(self, batch: SyncBatch) -> None:
        """Order `batch`'s marker now; it becomes the in-flight one (a previous one still
        answers its own callers when delivered, it just no longer gates the pending batch)."""
        sync_id = next(self._txn_ids)
        previous = self._sync_inflight
        # Registered before broadcasting: a binding may deliver from inside broadcast().
        batch.sync_id = sync_id
        self._syncs[sync_id] = batch
        self._sync_inflight = batch
        try:
            self.gcs.broadcast(encode(SyncPoint(self.config.uuid, sync_id)))
        except GcsError as exc:
            del self._syncs[sync_id]
            batch.sync_id = None
            self._sync_inflight = previous
            batch.outcome.set_result(exc)
            return
        self.stats_sync_broadcasts += 1

    def _sync_reached(self, sync_id: int, seq: Seq) -> None:
        """Our marker `sync_id` was delivered: answer its batch, then order the pending one."""
        batch = self._syncs.pop(sync_id, None)
        if batch is None:
            return  # every caller of it left
        batch.outcome.set_result(seq)
        if batch is self._sync_inflight:
            self._sync_release()

    def _sync_leave(self, batch: SyncBatch) -> None:
        """A caller is done with `batch` (answered, failed, timed out or cancelled)."""
        batch.waiters -= 1
        if batch.waiters > 0:
            return
        if batch is self._sync_pending:
            self._sync_pending = None  # nobody left to answer: never broadcast
            return
        if batch.sync_id is not None:
            self._syncs.pop(batch.sync_id, None)
        if batch is self._sync_inflight:
            self._sync_release()  # not delivered while anyone waited: it may be lost

    def _sync_release(self) -> None:
        """The in-flight marker no longer gates: broadcast the pending batch, if any."""
        self._sync_inflight = None
        pending, self._sync_pending = self._sync_pending, None
        if pending is not None:
            self._sync_broadcast(pending)

    # --- consistency --------------------------------------------------------------------------------

    def _ack_when_applied(self, seq: Seq) -> None:
        if self._ack_tasks >= self.config.ack_waits_max:
            self._log.warning("ack_dropped", seq=seq)  # the origin's AFTER wait then times out
            return
        self._ack_tasks += 1

        async def ack() -> None:
            try:
                await self.positions.wait_applied(seq, timeout_s=ACK_WAIT_S)
                self.gcs.broadcast(encode(AppliedAck(self.config.uuid, seq)))
            except (TimeoutError, GcsError, OverflowError) as exc:
                self._log.warning("ack_failed", seq=seq, error=repr(exc))
            finally:
                self._ack_tasks -= 1

        asyncio.get_running_loop().create_task(ack())

    def _check_acks(self, seq: int) -> None:
        acked = self._acks.get(seq)
        waiter = self._ack_waiters.get(seq)
        if acked is None or waiter is None or waiter.done():
            return
        online = {m.uuid for m in self.engine.members.values() if m.state is MemberState.ONLINE}
        if online - {self.config.uuid} <= acked:
            waiter.set_result(None)

    async def wait_all_applied(self, seq: Seq, timeout_s: float) -> None:
        """Consistency AFTER: until every ONLINE member has applied `seq` (this one included:
        the caller committed it). Raises HoldWaitTimeout (3781)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ack_waiters[seq] = fut
        self._acks.setdefault(seq, set())
        self._check_acks(seq)
        try:
            async with asyncio.timeout(timeout_s):
                await fut
        except TimeoutError:
            raise HoldWaitTimeout("Timeout exceeded for held statement while waiting for the group to apply "
                                  "the transaction (group_replication_consistency AFTER).") from None
        finally:
            self._ack_waiters.pop(seq, None)
            self._acks.pop(seq, None)

    async def hold_before(self, level: Level, timeout_s: float) -> None:
        """What a transaction at `level` waits for before it starts (see replication.consistency).
        Raises HoldMemberStatus (3783) when this member is not ONLINE, HoldWaitTimeout (3781)."""
        if level is Level.EVENTUAL:
            return
        if self.state is not MemberState.ONLINE:
            raise HoldMemberStatus("Held statement was aborted due to member being in error state, "
                                   "while backlog is being applied during Group Replication primary election.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            backlog = self.failover_backlog
            if backlog is not None:
                await self.positions.wait_applied(backlog, max(0.0, deadline - loop.time()))
                if self.failover_backlog == backlog:
                    self.failover_backlog = None
            if level.waits_before:
                target = await self.sync_point(max(0.001, deadline - loop.time()))
                await self.positions.wait_applied(target, max(0.0, deadline - loop.time()))
        except (TimeoutError, OverflowError):
            raise HoldWaitTimeout("Timeout exceeded for held statement while new Group Replication primary "
                                  "member is applying backlog.") from None

    def members(self) -> list[MemberRecord]:
        """The member table as this member sees it (UNREACHABLE overlaid from the detector, and
        this member's own state, address and weight as they are now)."""
        out = []
        for m in self.engine.ordered_members():
            if m.uuid in self.unreachable:
                m = replace(m, state=MemberState.UNREACHABLE)
            if m.uuid == self.config.uuid:
                # Our own facts as they are now: the group's record lags until our Announce is
                # delivered (a member that just turned ONLINE showed itself without its address).
                m = replace(m, state=self.state, member_address=self.config.member_address,
                            weight=self.config.member_weight)
            out.append(m)
        return out

    # --- admin (replication/admin.py) -------------------------------------------------------------------

    async def group_action(self, action: AdminAction, target: str = "", timeout_s: int | None = None) -> AdminOutcome:
        """Order a group action (set_as_primary, mode switches) through the group and wait for
        its outcome, decided by every member's engine at its delivery. set_as_primary takes two
        steps (the old primary's transactions end first: `timeout_s`, see Member._hand_over),
        waited for as long as they may take. Raises HookError (3100) when it cannot be ordered
        within commit_timeout_s (plus that)."""
        op_id = next(self._txn_ids)
        fut: asyncio.Future[AdminOutcome] = asyncio.get_running_loop().create_future()
        self._admin_pending[op_id] = fut
        bound = self.config.commit_timeout_s
        if action is AdminAction.SET_PRIMARY:
            bound += timeout_s if timeout_s is not None else HANDOVER_WAIT_MAX_S
        try:
            self.gcs.broadcast(encode(AdminOp(self.config.uuid, op_id, action, target, timeout_s)))
            async with asyncio.timeout(bound):
                return await fut
        except GcsError as exc:
            raise HookError(f"Error on observer while running replication hook 'before_commit'. ({exc.code.value})") from exc
        except TimeoutError:
            raise HookError("Error on observer while running replication hook 'before_commit'. "
                            "(timed out waiting for the group to order the operation)") from None
        finally:
            self._admin_pending.pop(op_id, None)

    async def _hand_over(self, started: HandoverStarted) -> None:
        """The old primary's step of set_as_primary (GR's primary election with running
        transactions): the write transactions open here now may end — for `timeout_s` (none
        may start meanwhile), or without a timeout up to HANDOVER_WAIT_MAX_S (new ones may
        start) — then those still open and not yet committing are rolled back (their next
        statement or COMMIT answers 3101), and HANDOVER_DONE is broadcast: at its delivery the
        appointed member becomes the primary. One committing already was broadcast before it,
        so every member certifies it against the old order. Stops early when this member is
        no longer the primary in ONLINE state (the engine then finishes the action itself)."""
        running = set(self._open)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (started.timeout_s if started.timeout_s is not None else HANDOVER_WAIT_MAX_S)
        self._log.info("primary_handover", target=started.target, running=len(running), timeout_s=started.timeout_s)
        try:
            while (running & self._open.keys() and loop.time() < deadline and self.engine.handover is not None
                   and self.may_write()):
                await asyncio.sleep(HANDOVER_POLL_S)
            if self.engine.handover is None or not self.may_write():
                return
            rolled_back = 0
            for txn_id in sorted(running & self._open.keys()):
                txn = self._open[txn_id]
                if txn.preparing:
                    continue
                if txn.doomed_by is None:
                    txn.doomed_by = self.engine.certifier.last_seq
                    rolled_back += 1
                if txn.on_doom is not None:
                    txn.on_doom()
            if rolled_back:
                self._log.warning("primary_handover_rolled_back", transactions=rolled_back, target=started.target)
            self.gcs.broadcast(encode(AdminOp(self.config.uuid, next(self._txn_ids), AdminAction.HANDOVER_DONE,
                                              started.target)))
        except GcsError as exc:
            # Not in the view any more: the engine finishes the action when the view changes.
            self._log.warning("primary_handover_not_broadcast", error=str(exc))

    def local_stats(self) -> MemberStats:
        """This member's replication_group_member_stats counters now."""
        e = self.engine
        buffered = sum(1 for item in self._buffer if isinstance(item, Delivery))
        if self.state is MemberState.RECOVERING and self.recovery is not None:
            buffered += self.recovery.transactions_left  # what recovery still fetches, then the buffer
        # A doomed transaction is a conflict found before certification (it would have failed it).
        return MemberStats(self.config.uuid, in_queue=buffered, checked=e.stats_checked,
                           conflicts=e.stats_conflicts + self.stats_doomed, rows_validating=len(e.certifier),
                           last_conflict_free=e.last_conflict_free, remote_in_applier_queue=len(self.applier),
                           remote_applied=self.applier.applied_count, local_proposed=e.stats_local_proposed,
                           local_rollback=e.stats_local_rollback + self.stats_doomed)

    def _report_stats(self) -> None:
        """Broadcast our counters when they changed (other members show them in their
        replication_group_member_stats, as GR's members do)."""
        stats = self.local_stats()
        if stats == self._last_stats:
            return
        try:
            self.gcs.broadcast(encode(stats))
            self._last_stats = stats
        except GcsError:
            pass

    def _reannounce_if_stale(self) -> None:
        """The group's record of this member — the same on every member, deliveries being in
        total order — must show what it announced (state, weight, member address). A record
        that a view change re-created after the announcement (a new incarnation admitted, a
        forced view) lacks them: the router then cannot route to this member (no port) or
        distrusts it (RECOVERING). Announce again; repeated at most once per housekeeping round
        until the group's record shows it."""
        if self._announced is None:
            return
        record = self.engine.members.get(self.config.uuid)
        if record is None:
            return
        if (record.state is not self._announced or record.member_address != self.config.member_address
                or record.weight != self.config.member_weight):
            self._log.info("reannounce", recorded_state=record.state.value, recorded_address=record.member_address)
            self._announce(self._announced)

    def reconfigure(self, **changes: object) -> None:
        """SET GLOBAL of a setting kept in MemberConfig: the member reads it where it uses it.
        A new member_weight is announced to the group (it counts at the next election); a new
        member_expel_timeout_s or compression_threshold goes to the group binding at once (and to
        every later incarnation's)."""
        old = self.config
        self.config = replace(old, **changes)  # type: ignore[arg-type]
        if (self.config.member_expel_timeout_s != old.member_expel_timeout_s
                or self.config.compression_threshold != old.compression_threshold):
            self._apply_gcs_settings(self.gcs)
        if self.config.member_weight != old.member_weight and self._announced is not None:
            self._announce(self._announced)

    # --- background work ------------------------------------------------------------------------------

    async def _probe_backend(self) -> None:
        """The backend must answer: after backend_check_failures_max probes in a row fail, the
        member goes to ERROR and leaves, so a primary whose server died is replaced."""
        try:
            await self._ping_backend()
        except (MySQLError, BackendError, OSError, TimeoutError) as exc:
            self._backend_failures += 1
            self._log.warning("backend_probe_failed", failures=self._backend_failures, error=str(exc))
            if self._backend_failures >= self.config.backend_check_failures_max:
                # Rejoins (autorejoin_tries) once the backend answers again.
                self._fail(f"the backend {self.config.backend} stopped answering ({exc})", rejoin=True)
            return
        self._backend_failures = 0

    async def _ping_backend(self) -> None:
        """`SELECT 1` on a new connection, bounded by backend_check_interval_s (1 s at least).
        Raises MySQLError, BackendError, OSError or TimeoutError."""
        async with asyncio.timeout(max(1.0, self.config.backend_check_interval_s)):
            conn = await self.connect()
            try:
                await conn.execute("SELECT 1")
            finally:
                conn.close()

    async def _backend_answers(self) -> bool:
        try:
            await self._ping_backend()
            return True
        except (MySQLError, BackendError, OSError, TimeoutError):
            return False

    def _check_majority(self, now: float) -> None:
        """group_replication_unreachable_majority_timeout: a member that cannot reach a
        majority of its view for that long fails what waits on the group (3100) and goes to
        ERROR. 0 waits forever."""
        view = self.gcs.current_view()
        if view is None:
            return
        members = {m.uuid for m in view.members}
        reachable = len(members - self.unreachable)
        if reachable * 2 > len(members):
            self._no_majority_since = None
            return
        if self._no_majority_since is None:
            self._no_majority_since = now
            self._log.warning("majority_unreachable", reachable=reachable, members=len(members))
        timeout_s = self.config.unreachable_majority_timeout_s
        if timeout_s > 0 and now - self._no_majority_since >= timeout_s:
            self._fail(f"this member could not reach a majority of the group for {timeout_s:g}s "
                       "(group_replication_unreachable_majority_timeout)")

    def has_quorum(self) -> bool:
        """Whether this member is ONLINE in a view it can reach a majority of (routers trust
        only such members' tables)."""
        view = self.gcs.current_view()
        if self.state is not MemberState.ONLINE or view is None:
            return False
        members = {m.uuid for m in view.members}
        return len(members - self.unreachable) * 2 > len(members)

    async def _run_applier(self) -> None:
        """The applier until it fails: ERROR; a rejoin (autorejoin when the backend had died)
        starts it again (see _resolve_local)."""
        try:
            await self.applier.run()
        except (ApplierFailed, MySQLError) as exc:
            why = str(exc) if isinstance(exc, ApplierFailed) else f"applier: {exc}"
            self._fail(why, rejoin=not await self._backend_answers())

    # --- flow control ----------------------------------------------------------------------------

    def _flow_settings(self) -> FlowSettings:
        c = self.config
        return FlowSettings(c.flow_control_mode, c.flow_control_certifier_threshold,
                            c.flow_control_applier_threshold, c.flow_control_period_s)

    async def flow_admit(self, txn: LocalTxn) -> None:
        """Wait until flow control lets the open transaction `txn` commit: at once unless the
        group throttles, else until a later period has quota left. The session calls it while
        `txn` is still open, so the applier's lock watch and a remote conflict can doom it
        meanwhile: that wakes it at once (the caller then rolls it back, 3101). Bounded by
        commit_timeout_s: past it, 3100 (the caller rolls back); leaving the group wakes it too
        (the commit then fails as any commit off the group does)."""
        if txn.doomed_by is not None or self.flow.admit():
            return
        loop = asyncio.get_running_loop()
        self._flow_waiting[txn.txn_id] = txn
        try:
            async with asyncio.timeout(self.config.commit_timeout_s):
                while txn.doomed_by is None and not self.flow.admit():
                    txn.flow_wake = loop.create_future()
                    await txn.flow_wake
        except TimeoutError:
            raise HookError("Error on observer while running replication hook 'before_commit'. (flow control "
                            f"held the commit longer than {self.config.commit_timeout_s:g} s)") from None
        finally:
            txn.flow_wake = None
            self._flow_waiting.pop(txn.txn_id, None)

    def _flow_wake_all(self) -> None:
        for txn in list(self._flow_waiting.values()):
            wake = txn.flow_wake
            if wake is not None and not wake.done():
                wake.set_result(None)

    def _flow_reports(self) -> dict[str, MemberStats]:
        """The last reports of the ONLINE members, delivered through the group (our own too:
        every member's reports have the same cadence, about one a second)."""
        online = {uuid for uuid, m in self.engine.members.items() if m.state is MemberState.ONLINE}
        return {uuid: st for uuid, st in self.engine.member_stats.items() if uuid in online}

    async def _flow_control(self) -> None:
        """Looks for new reports every FLOW_OBSERVE_INTERVAL_S and ends a flow-control period
        every flow_control_period seconds (FlowControl), then lets the commits that waited for
        it try again. Off the group (not ONLINE) nothing is throttled: those commits fail on
        their own. A failure here is logged and lifts the quota (it never holds commits)."""
        loop = asyncio.get_running_loop()
        period_end = loop.time() + self.config.flow_control_period_s
        while True:
            await asyncio.sleep(FLOW_OBSERVE_INTERVAL_S)
            now = loop.time()
            was = self.flow.quota
            try:
                reports = self._flow_reports() if self.state is MemberState.ONLINE else {}
                self.flow.observe(reports, now)
                if now < period_end:
                    continue
                period_end = now + self.config.flow_control_period_s
                if self.flow.held:
                    self._log.info("flow_control_held", quota=was, committed=self.flow.used, waited=self.flow.held)
                self.flow.settings = self._flow_settings()
                self.flow.end_period(None, now)
                if self.state is not MemberState.ONLINE:
                    self.flow.quota = None
            except Exception:  # noqa: BLE001 - a bug here must not hold commits: stop throttling
                self._log.exception("flow_control_failed")
                self.flow.quota = None
            if (was is None) != (self.flow.quota is None):
                if self.flow.quota is None:
                    self._log.info("flow_control_released", holds=self.flow.holds_total)
                else:
                    self._log.warning("flow_control_throttling", quota=self.flow.quota,
                                      period_s=self.flow.settings.period_s)
            self._flow_wake_all()

    async def _housekeeping(self) -> None:
        """Stable-position reports (certification GC) and positions compaction."""
        loop = asyncio.get_running_loop()
        next_compaction = loop.time() + self.config.compaction_interval_s
        next_probe = loop.time()
        while True:
            await asyncio.sleep(min(self.config.stable_report_interval_s, self.config.backend_check_interval_s))
            if self.state in (MemberState.ONLINE, MemberState.RECOVERING) and loop.time() >= next_probe:
                next_probe = loop.time() + self.config.backend_check_interval_s
                await self._probe_backend()
            if self.state is not MemberState.ONLINE:
                continue
            self._check_majority(loop.time())
            if self.state is not MemberState.ONLINE:
                continue
            lowest = min([self.positions.lwm, *self._pending_snapshots.values()])
            if lowest != self._last_report:
                try:
                    self.gcs.broadcast(encode(StableReport(self.config.uuid, lowest)))
                    self._last_report = lowest
                except GcsError:
                    pass
            self._report_stats()
            self._reannounce_if_stale()
            if loop.time() >= next_compaction:
                next_compaction = loop.time() + self.config.compaction_interval_s
                try:
                    conn = await self.connect()
                    try:
                        # The live set, not a copy: a local commit that records its position while the
                        # compaction starts must keep its xid row (read after the rows are).
                        await self.store.compact(conn, keep=self.local.committing)
                    finally:
                        await conn.quit()
                except (MySQLError, BackendError) as exc:
                    self._log.warning("compaction_failed", error=str(exc))



SYNC_TIMEOUT_MESSAGE = ("Timeout exceeded for held statement while new Group Replication primary member is "
                        "applying backlog or while waiting for the group.")
ACK_WAIT_S = 3600.0  # how long a member waits to apply a transaction whose origin wants an ack
ER_QUERY_INTERRUPTED = 1317  # the outcome of a DDL its session could not run (see run_local_ddl)
# Errors a DDL can end with after changing something (MariaDB logs it with the error) that every
# member with the same data ends with too: a multi-object DROP that meets a missing object
# (1051 table, 4091 sequence, 4092 view) or a table a foreign key still references (1217, 1451).
DDL_REPRODUCIBLE_ERRNOS = frozenset({1051, 1217, 1451, 4091, 4092})


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
