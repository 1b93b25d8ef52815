"""The applier: certified transactions of other members, and every DDL, onto this backend.

Items arrive in delivery order (`submit`) and are applied in that order where it matters —
transactions with disjoint write sets run in parallel on up to `workers` connections — each in
one backend transaction that also records its seq (PositionStore.record_sql), so a crash never loses or
repeats one: at start-up the applied set is read back and seqs already there are skipped.

Commit order. Parallel items *run* at once but *commit* in seq order, as a GR member's
multi-threaded applier does with `replica_preserve_commit_order=ON`: each item, its changes
done, waits for its predecessor's commit before its own COMMIT. Otherwise a reader on this
member could see T2 without T1 where T2 came after T1 on the origin (read skew: a state no
other member ever showed). Waiting with its row locks held could close a cycle InnoDB cannot
see — the predecessor waiting for a lock of the successor, the successor waiting in Python for
the predecessor — (write sets are disjoint, so only gap or foreign-key locks can do it): the
lock watch below finds the predecessor blocked by a later applier connection and makes that
one give way (ROLLBACK, wait for its predecessor, run again). Applier connections run READ
COMMITTED, which takes no gap locks for the applier's by-key changes. The wait is bounded by
the predecessor's own bounds (its retries and innodb_lock_wait_timeout); a predecessor that
fails makes its successors fail without committing.
DDL runs in the same queue, alone: at its seq every earlier item is applied and no later one
has started, on every member. There (`_run_ddl`) the origin's session runs it in the client's
own session (`run_local_ddl`, the member's; the lock watch below covers that connection too)
and reports how it ended through the group; every other member waits for that decision
(`decide`) and runs it under the origin session's variables, or skips it when it failed on the
origin. A DDL that fails here after succeeding on its origin is ApplierFailed: the member goes
to ERROR. A member that leaves the group before a DDL is decided drops that DDL and what is
queued behind it (`abandon_undecided`): distributed recovery brings them when it rejoins.

Bounds: `queue_max` items waiting (beyond it `submit` raises ApplierFull — the member treats
that as the signal for flow control, see replication/member.py); a transaction that hits a
deadlock or lock-wait timeout against local sessions is retried `retries_max` times.

Applier priority (DESIGN §5: a certified transaction never waits behind a local open one, as
GR's and Galera's appliers make sure). A local write transaction takes its row locks while it
runs and only derives its write set at COMMIT (from the binlog), so no key comparison can
foresee the conflict: the applier watches for it instead. While an item has been applying for
`LOCK_WAIT_CHECK_AFTER_S`, the lock watch (`_watch_locks`, every `LOCK_WATCH_INTERVAL_S`, one
query on a connection of its own) reads who blocks the applier's connections:

* row locks: information_schema.INNODB_LOCK_WAITS joined with INNODB_TRX gives the blocking
  transaction's `trx_mysql_thread_id`;
* metadata locks (DDL, or DML behind a lock a local transaction holds): the processlist shows
  the applier's connection 'Waiting for table metadata lock', but MariaDB does not say who
  holds it without the metadata_lock_info plugin; every transaction InnoDB knows of on another
  connection is taken for a holder. Of those only local ACTIVE transactions are doomed (below),
  so a DDL that waits spuriously dooms at worst the member's other open write transactions —
  the price of never letting the group's order wait on a client.

Each blocker's thread id goes to `doom_thread(thread_id, seq)` (the member): when it runs a
local transaction that is still ACTIVE — not prepared: a prepared one was broadcast and ends by
its verdict shortly, so the applier just waits — the member dooms it (its next statement or
COMMIT answers 3101) and its session rolls it back at once if idle. A doomed blocker still
blocking `DOOMED_KILL_AFTER_S` later is busy with a statement of its own: that statement is
killed (`KILL QUERY`, at most `KILLS_PER_S_MAX` a second; never while it is rolling back or
ending its XA), after which the session is idle and the next round's doom rolls it back.
Blockers that are no local transaction (prepared XA, the member's bookkeeping, outside
connections) are waited for, up to innodb_lock_wait_timeout and the retries above. The member
finds the transaction by its connection: one that ended between the check's query and the doom
leaves its session's next transaction doomed (a spurious 3101, within one round trip's window).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol

import structlog

from replication.protocol.backend import BackendConnection
from replication.protocol.constants import Command
from replication.protocol.errors import BackendError, BackendLost, MySQLError

from .engine import ApplyRemote, DdlDecided, ExecuteDdl
from .positions import Positions, PositionStore

log = structlog.get_logger("grproxy.applier")

APPLIER_QUEUE_MAX = 100_000
APPLY_RETRIES_MAX = 10
APPLIER_WORKERS = 4  # transactions applied at once (disjoint write sets); connections kept
_RETRYABLE = {1213, 1205}  # deadlock, lock wait timeout: local sessions held the rows
# The lock watch (see the module docstring).
LOCK_WAIT_CHECK_AFTER_S = 0.2  # an item applying this long is checked for lock waits
LOCK_WATCH_INTERVAL_S = 0.1  # between two checks (INNODB_TRX is refreshed every 0.1 s anyway)
DOOMED_KILL_AFTER_S = 0.2  # a doomed transaction still blocking this long: its statement is killed
KILLS_PER_S_MAX = 20  # KILL QUERY statements the watch sends in any one second
LOCK_WAITS_PER_CHECK_MAX = 200  # (waiter, blocker) pairs one check reads
LOCK_WATCH_RETRY_S = 1.0  # after the watch's own query failed
MDL_WAIT_STATE = "Waiting for table metadata lock"


class ApplyChanges(Protocol):
    """Applies a certified transaction's changes on `conn` inside its open transaction
    (rowevents.RowEventApplier in a member), with the `head` statements run before them and the
    `tail` statements after them in the same round trips: the applier's BEGIN, and its position
    record and COMMIT (`Applier._apply_in_order`). Raises BackendError when the server refused a
    statement (none after it ran), or an error of its own when the changes cannot be applied."""

    def __call__(self, conn: BackendConnection, changes: bytes, /, *, head: Sequence[str] = (),
                 tail: Sequence[str] = ()) -> Awaitable[object]: ...


Connect = Callable[[], Awaitable[BackendConnection]]
# (backend thread id of a blocking transaction, seq of the applier's item it blocks) → whether it
# was a local ACTIVE transaction of the member (now doomed). See `Member.doom_thread`.
DoomThread = Callable[[int, int], bool]


class ApplierFull(Exception):
    """More than `queue_max` certified items wait to be applied."""


class ApplierFailed(Exception):
    """An item could not be applied: the member must go to ERROR."""


# The origin's session runs its own DDL when the applier reaches it; returns the server's errno
# (0: it succeeded). See `Member.run_local_ddl`.
RunLocalDdl = Callable[[ExecuteDdl], Awaitable[int]]


class Applier:
    def __init__(
        self,
        connect: Connect,
        positions: Positions,
        store: PositionStore,
        apply_changes: ApplyChanges,
        *,
        queue_max: int = APPLIER_QUEUE_MAX,
        retries_max: int = APPLY_RETRIES_MAX,
        workers: int = APPLIER_WORKERS,
        after_ddl: Callable[[str, str], None] | None = None,
        doom_thread: DoomThread | None = None,
        run_local_ddl: RunLocalDdl | None = None,
    ) -> None:
        self._connect = connect
        self.positions = positions
        self.store = store
        self.apply_changes = apply_changes
        self.queue_max = queue_max
        self.retries_max = retries_max
        self.after_ddl = after_ddl  # (schema, sql): e.g. forget cached table metadata
        self._queue: deque[ApplyRemote | ExecuteDdl] = deque()
        self._wakeup = asyncio.Event()
        # DDL (see the module docstring): seq → its decision (None: abandoned), the DDL running.
        self.run_local_ddl = run_local_ddl
        self._decisions: dict[int, asyncio.Future[DdlDecided | None]] = {}
        self._settled: dict[int, asyncio.Future[bool]] = {}  # local DDL seq → recorded here (False: abandoned)
        self._ddl_running: int | None = None
        self.workers = workers
        self._idle: list[BackendConnection] = []
        self.applied_count = 0
        self.retried_count = 0
        # The lock watch: None disables it (unit tests without a server).
        self.doom_thread = doom_thread
        self._applying: dict[BackendConnection, tuple[int, float]] = {}  # conn → (seq, started at)
        self._doomed_at: dict[tuple[int, bytes], float] = {}  # (thread id, trx id) → first doomed at
        self._kills: deque[float] = deque()  # times of the KILL QUERYs of the last second
        self._watch_conn: BackendConnection | None = None
        # Commit order: the commit of the item dispatched last (None: nothing dispatched yet),
        # and the applier connections told to give way to an earlier item (see the docstring).
        self._last_commit: asyncio.Future[None] | None = None
        self._give_way: dict[BackendConnection, asyncio.Event] = {}
        self.stats_gave_way = 0  # times a later item rolled back so that an earlier one could go on
        self.stats_blockers_doomed = 0  # times a blocking local transaction was doomed (first time each)
        self.stats_blockers_killed = 0  # KILL QUERYs of a doomed blocker's running statement

    def __len__(self) -> int:
        return len(self._queue)

    def discard_queue(self) -> int:
        """Drop what waits to be applied (the member rejoins: recovery fetches it again)."""
        n = len(self._queue)
        self._queue.clear()
        return n

    def submit(self, item: ApplyRemote | ExecuteDdl) -> None:
        """Queue an item (delivery order). Raises ApplierFull at the bound."""
        if len(self._queue) >= self.queue_max:
            raise ApplierFull(f"{self.queue_max} certified transactions wait to be applied")
        self._queue.append(item)
        if isinstance(item, ExecuteDdl):
            self._decision(item.seq)
            if item.local:
                self.ddl_settled(item.seq)
        self._wakeup.set()

    def ddl_settled(self, seq: int) -> "asyncio.Future[bool]":
        """Local DDL `seq`: resolved True once its seq is recorded here (it ran, or failed and the
        group decided nobody runs it), False when abandoned (the member left the group first)."""
        fut = self._settled.get(seq)
        if fut is None:
            fut = self._settled[seq] = asyncio.get_running_loop().create_future()
        return fut

    def _settle(self, seq: int, recorded: bool) -> None:
        fut = self._settled.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_result(recorded)

    async def run(self) -> None:
        """Apply forever. Raises ApplierFailed when an item cannot be applied.

        Scheduling: items leave the queue in delivery order. A transaction starts as soon as
        its write set is disjoint from every transaction still running (they touch different
        rows, so their order does not matter); otherwise it — and everything behind it —
        waits for the running ones to finish. DDL, and transactions whose write set is not
        known (fetched by recovery), run alone.
        """
        running: dict[asyncio.Task[None], frozenset[int] | None] = {}
        self._last_commit = None  # a new run (after ERROR) owes nothing to the last one's items
        watch = (asyncio.get_running_loop().create_task(self._watch_locks())
                 if self.doom_thread is not None else None)
        try:
            while True:
                while not self._queue and not running:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                while self._queue:
                    item = self._queue[0]
                    if item.seq in self.positions.applied:
                        self._queue.popleft()  # already committed here (a restart, or our own commit)
                        continue
                    keys = frozenset(item.write_set) if isinstance(item, ApplyRemote) and item.write_set else None
                    alone = keys is None
                    if running and (alone or len(running) >= self.workers or any(
                            k is None or not k.isdisjoint(keys) for k in running.values())):
                        break
                    self._queue.popleft()
                    # Commit order (module docstring): each item commits after the one dispatched before it.
                    prev, mine = self._last_commit, asyncio.get_running_loop().create_future()
                    self._last_commit = mine
                    coro = (self._ordered_ddl(item, prev, mine) if isinstance(item, ExecuteDdl)
                            else self._apply(item, prev, mine))
                    running[asyncio.get_running_loop().create_task(coro)] = keys
                    if alone:
                        break
                if not running:
                    continue
                self._wakeup.clear()
                waker = asyncio.ensure_future(self._wakeup.wait())
                done, _ = await asyncio.wait([*running, waker], return_when=asyncio.FIRST_COMPLETED)
                if waker not in done:
                    waker.cancel()
                for task in done:
                    if task is waker:
                        continue
                    running.pop(task)
                    task.result()  # ApplierFailed propagates: the member goes to ERROR
                    self.applied_count += 1
        finally:
            for task in running:
                task.cancel()
            if watch is not None:
                watch.cancel()

    async def _connection(self) -> BackendConnection:
        if self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        conn = await self._connect()
        await conn.execute("SET SESSION time_zone = '+00:00'")
        await conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")  # no gap locks
        return conn

    def _release(self, conn: BackendConnection) -> None:
        if not conn.closed and len(self._idle) < self.workers:
            self._idle.append(conn)
        else:
            conn.close()

    async def _apply(self, item: ApplyRemote, prev: "asyncio.Future[None] | None",
                     mine: "asyncio.Future[None]") -> None:
        """Apply `item` in one backend transaction with its position, committing only after
        `prev` (the item dispatched before it) committed; `mine` resolves once this one has
        committed (or fails with ApplierFailed: successors then roll back)."""
        try:
            await self._apply_in_order(item, prev)
        except BaseException as exc:
            if not mine.done():
                mine.set_exception(ApplierFailed(f"seq {item.seq} was not applied: {exc!r}"))
                mine.exception()  # retrieved: a successor may never look at it
            raise
        if not mine.done():
            mine.set_result(None)

    async def _apply_in_order(self, item: ApplyRemote, prev: "asyncio.Future[None] | None") -> None:
        attempt = 0
        while True:
            conn = await self._connection()
            self._applying[conn] = (item.seq, asyncio.get_running_loop().time())  # for the lock watch
            gave_way = False
            try:
                try:
                    # One round trip when it may commit at once (its predecessor committed):
                    # BEGIN, the changes, the position record and COMMIT; else the COMMIT
                    # waits for its turn below.
                    commit_now = prev is None or (prev.done() and prev.exception() is None)
                    record = self.store.record_sql(item.seq)
                    await self.apply_changes(conn, item.changes, head=("BEGIN",),
                                             tail=(record, "COMMIT") if commit_now else (record,))
                    if not commit_now:
                        if prev is not None and not prev.done():
                            gave_way = await self._wait_turn(conn, prev)
                        if prev is not None and prev.done() and prev.exception() is not None:
                            await _rollback(conn)
                            raise ApplierFailed(f"seq {item.seq} not committed: an earlier item failed")
                        if not gave_way:
                            await conn.execute("COMMIT")
                finally:
                    self._applying.pop(conn, None)
                    self._give_way.pop(conn, None)
            except BackendError as exc:
                await _rollback(conn)
                self._release(conn)
                if exc.backend_errno in _RETRYABLE and attempt < self.retries_max:
                    attempt += 1
                    self.retried_count += 1
                    await asyncio.sleep(min(0.005 * 2**attempt, 0.5))
                    continue
                raise ApplierFailed(f"cannot apply seq {item.seq} from {item.origin}: {exc}") from exc
            except BackendLost as exc:
                conn.close()
                raise ApplierFailed(f"backend lost while applying seq {item.seq}: {exc}") from exc
            except ApplierFailed:
                conn.close()  # rolled back (an earlier item failed); not kept for a run that ended
                raise
            except Exception as exc:  # ApplyChanges' own: the changes cannot be applied here
                conn.close()  # in a transaction, maybe mid-answer: never reused
                raise ApplierFailed(f"cannot apply seq {item.seq} from {item.origin}: {exc}") from exc
            except BaseException:
                # Cancelled (run() ended: an earlier item failed, or the member stops), maybe
                # between statements — waiting for its turn with its row locks held. An open
                # transaction would keep those locks until the server's wait_timeout, and the
                # next run (after a rejoin) would wait on them: close.
                conn.close()
                raise
            if gave_way:
                # An earlier item waits for a lock this transaction held: let it commit first.
                await _rollback(conn)
                self._release(conn)
                self.stats_gave_way += 1
                assert prev is not None
                await asyncio.wait([prev])
                continue
            self._release(conn)
            self.positions.mark_applied(item.seq)
            return

    async def _wait_turn(self, conn: BackendConnection, prev: "asyncio.Future[None]") -> bool:
        """Wait until `prev` is done, or until the lock watch tells `conn` to give way (True)."""
        give_way = self._give_way[conn] = asyncio.Event()
        waiter = asyncio.ensure_future(give_way.wait())
        try:
            await asyncio.wait([prev, waiter], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return not prev.done()

    async def _ordered_ddl(self, item: ExecuteDdl, prev: "asyncio.Future[None] | None",
                           mine: "asyncio.Future[None]") -> None:
        """A DDL runs alone (see `run`): everything before it has committed already."""
        try:
            await self._run_ddl(item)
        except BaseException as exc:
            if not mine.done():
                mine.set_exception(ApplierFailed(f"DDL seq {item.seq} was not applied: {exc!r}"))
                mine.exception()
            raise
        if not mine.done():
            mine.set_result(None)

    # --- DDL (see the module docstring) -------------------------------------------------------

    def _decision(self, seq: int) -> "asyncio.Future[DdlDecided | None]":
        fut = self._decisions.get(seq)
        if fut is None:
            fut = self._decisions[seq] = asyncio.get_running_loop().create_future()
        return fut

    def decide(self, decision: DdlDecided) -> None:
        """DDL `decision.seq` is decided (the engine, in delivery order; recovery, from a
        donor): its item runs it or skips it when the applier reaches it. A decision for a seq
        applied here already (the origin's own, after it ran) is dropped."""
        if decision.seq in self.positions.applied:
            self._decisions.pop(decision.seq, None)
            return
        fut = self._decision(decision.seq)
        if not fut.done():
            fut.set_result(decision)

    def abandon_undecided(self) -> int:
        """The member left the group: DDL not decided yet never will be here. The running DDL,
        if undecided, ends without being applied; the first undecided one queued and
        everything queued behind either are dropped (their positions stay unrecorded: recovery
        fetches them, in order, when the member rejoins). Returns the items dropped."""
        undecided = {seq for seq, fut in self._decisions.items() if not fut.done()}
        cut: int | None = 0 if self._ddl_running is not None else None
        if cut is None:
            cut = next((i for i, item in enumerate(self._queue) if item.seq in undecided), None)
        dropped = 0
        if cut is not None:
            while len(self._queue) > cut:
                item = self._queue.pop()
                self._decisions.pop(item.seq, None)
                self._settle(item.seq, False)
                dropped += 1
        for seq in undecided:
            fut = self._decisions.get(seq)
            if fut is not None and not fut.done():
                fut.set_result(None)
        if dropped or undecided:
            log.warning("ddl_abandoned", undecided=sorted(undecided), dropped=dropped)
        return dropped

    @contextlib.contextmanager
    def watching(self, conn: BackendConnection, seq: int) -> Iterator[None]:
        """While inside, the lock watch dooms the local transactions that block `conn`, which
        runs item `seq` (the origin's session running its DDL)."""
        self._applying[conn] = (seq, asyncio.get_running_loop().time())
        try:
            yield
        finally:
            self._applying.pop(conn, None)

    async def _run_ddl(self, item: ExecuteDdl) -> None:
        """DDL `item` at its seq (alone: see `run`). On its origin the session runs it; if it
        succeeded there it is applied — everyone runs it, whatever happens next (the outcome
        says so, or the origin left the view first). Otherwise, and on every other member,
        the decision is awaited: run here under the origin's variables (and expected to fail
        as on the origin when it failed there after changing something), or skipped; the seq
        is recorded either way. Raises ApplierFailed when it ends here otherwise than there."""
        self._ddl_running = item.seq
        recorded = False
        try:
            run_local = self.run_local_ddl if item.local else None
            if run_local is not None:
                if await run_local(item) == 0:
                    await self._record_ddl(item)
                    recorded = True
                    return
            decision = await self._decision(item.seq)
            if decision is None:
                return  # abandoned: the member left the group (see abandon_undecided)
            if decision.run and run_local is None:  # the origin's session ran it already
                await self._execute_ddl(item, decision.errno)
            await self._record_ddl(item)
            recorded = True
        finally:
            self._ddl_running = None
            self._decisions.pop(item.seq, None)
            self._settle(item.seq, recorded)

    async def _execute_ddl(self, item: ExecuteDdl, expect_errno: int = 0) -> None:
        """Run another member's DDL on a connection of its own (the origin's session variables
        must not outlive it). It must end as on its origin: OK, or error `expect_errno` (a DDL
        that failed there after changing something, see DdlOutcome.logged). Raises
        ApplierFailed otherwise."""
        try:
            conn = await self._connect()
        except (MySQLError, OSError) as exc:
            raise ApplierFailed(f"cannot connect to run DDL seq {item.seq}: {exc}") from exc
        try:
            with self.watching(conn, item.seq):
                if item.context:
                    await conn.execute("SET SESSION " + ", ".join(f"{name} = '{value}'" for name, value in item.context))
                if item.schema:
                    await conn.execute(f"USE `{item.schema.replace('`', '``')}`")
                try:
                    await conn.command(Command.QUERY, item.sql)
                except BackendError as exc:
                    if not expect_errno or exc.backend_errno != expect_errno:
                        raise
                    log.info("ddl_failed_as_on_origin", seq=item.seq, origin=item.origin, errno=expect_errno)
                else:
                    if expect_errno:
                        raise ApplierFailed(f"DDL seq {item.seq} from {item.origin} failed there with error "
                                            f"{expect_errno} after changing something, but succeeded here "
                                            f"({item.sql[:200].decode('utf-8', 'replace')})")
        except BackendError as exc:
            there = f"failed there with error {expect_errno}" if expect_errno else "succeeded there"
            raise ApplierFailed(f"DDL seq {item.seq} from {item.origin} {there} but failed here: {exc} "
                                f"({item.sql[:200].decode('utf-8', 'replace')})") from exc
        except (BackendLost, OSError) as exc:
            raise ApplierFailed(f"backend lost while running DDL seq {item.seq}: {exc}") from exc
        finally:
            conn.close()
        if self.after_ddl is not None:
            self.after_ddl(item.schema, item.sql.decode("utf-8", "replace"))

    async def _record_ddl(self, item: ExecuteDdl) -> None:
        """DDL commits implicitly: its position is recorded right after (see the README's
        limitations: a crash between the two re-runs it at recovery)."""
        conn = await self._connection()
        try:
            await conn.execute(self.store.record_sql(item.seq))
        except BackendError as exc:
            await _rollback(conn)
            raise ApplierFailed(f"cannot record DDL seq {item.seq}: {exc}") from exc
        except BackendLost as exc:
            conn.close()
            raise ApplierFailed(f"backend lost while recording DDL seq {item.seq}: {exc}") from exc
        self._release(conn)
        self.positions.mark_applied(item.seq)

    # --- applier priority: the lock watch ----------------------------------------------------

    async def _watch_locks(self) -> None:
        """Forever: every LOCK_WATCH_INTERVAL_S, the items applying for LOCK_WAIT_CHECK_AFTER_S
        or longer are checked for lock waits (see the module docstring). Never raises: a failed
        check is logged and tried again LOCK_WATCH_RETRY_S later (the applier then falls back
        on innodb_lock_wait_timeout and its retries)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(LOCK_WATCH_INTERVAL_S)
            now = loop.time()
            waiting = {conn.thread_id: seq for conn, (seq, started) in list(self._applying.items())
                       if now - started >= LOCK_WAIT_CHECK_AFTER_S and conn.thread_id}
            if not waiting:
                self._doomed_at.clear()
                continue
            try:
                await self.check_lock_waits(waiting)
            except (MySQLError, OSError) as exc:
                log.warning("lock_watch_failed", error=str(exc))
                if self._watch_conn is not None:
                    self._watch_conn.close()
                    self._watch_conn = None
                await asyncio.sleep(LOCK_WATCH_RETRY_S)

    async def check_lock_waits(self, waiting: dict[int, int]) -> int:
        """One check of the lock watch. `waiting`: backend thread id → seq of the item that
        connection applies. Dooms the local ACTIVE transactions that block them and kills the
        running statement of those still blocking DOOMED_KILL_AFTER_S after their doom.
        Returns how many blockers were local transactions. Raises MySQLError / OSError when the
        check's own query fails."""
        assert self.doom_thread is not None
        conn = self._watch_conn
        if conn is None or conn.closed:
            conn = self._watch_conn = await self._connect()
        ids = ",".join(str(int(t)) for t in waiting)
        # Row locks first, then metadata locks (holders unknown: every InnoDB transaction of
        # another connection is a candidate). trx_query is what the blocker runs now (NULL:
        # idle); trx_state 'ROLLING BACK' and our own XA statements are never killed.
        r = await conn.execute(
            "SELECT r.trx_mysql_thread_id, b.trx_mysql_thread_id, b.trx_id, b.trx_state, LEFT(b.trx_query, 16) "
            "FROM information_schema.INNODB_LOCK_WAITS w "
            "JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id "
            "JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id "
            f"WHERE r.trx_mysql_thread_id IN ({ids}) "
            "UNION ALL "
            "SELECT p.ID, b.trx_mysql_thread_id, b.trx_id, b.trx_state, LEFT(b.trx_query, 16) "
            "FROM information_schema.PROCESSLIST p JOIN information_schema.INNODB_TRX b "
            f"ON b.trx_mysql_thread_id <> p.ID WHERE p.ID IN ({ids}) AND p.STATE = '{MDL_WAIT_STATE}' "
            f"LIMIT {LOCK_WAITS_PER_CHECK_MAX}")
        now = asyncio.get_running_loop().time()
        seen: set[tuple[int, bytes]] = set()
        local = 0
        appliers = {c.thread_id: (c, seq) for c, (seq, _) in list(self._applying.items()) if c.thread_id}
        for row in r.rows:
            waiter, blocker, trx_id = int(row[0] or 0), int(row[1] or 0), bytes(row[2] or b"")
            if blocker in appliers:
                # Another applier connection: a later item waiting for its turn to commit while
                # an earlier one waits for its lock gives way (commit order, module docstring).
                other, other_seq = appliers[blocker]
                give_way = self._give_way.get(other)
                if give_way is not None and other_seq > waiting.get(waiter, other_seq):
                    give_way.set()
                continue
            if blocker == 0 or blocker in waiting:
                continue  # a prepared XA left by a dead connection, or another applier connection
            key = (blocker, trx_id)
            if key in seen:
                continue
            seen.add(key)
            if not self.doom_thread(blocker, waiting.get(waiter, 0)):
                continue  # not a local ACTIVE transaction: wait for it
            local += 1
            first = self._doomed_at.get(key)
            if first is None:
                self._doomed_at[key] = now
                self.stats_blockers_doomed += 1
                log.info("applier_blocked_local_doomed", thread_id=blocker, seq=waiting.get(waiter))
                continue
            state = bytes(row[3] or b"").upper()
            query = bytes(row[4] or b"").lstrip().upper()
            if now - first < DOOMED_KILL_AFTER_S or not query or query.startswith(b"XA ") or b"ROLLING" in state:
                continue  # idle (the doom rolls it back) or already ending
            if not self._kill_allowed(now):
                continue
            self._doomed_at[key] = now  # the next kill, if any, after another grace period
            try:
                await conn.execute(f"KILL QUERY {blocker}")
                self.stats_blockers_killed += 1
                log.info("applier_blocked_local_killed", thread_id=blocker, seq=waiting.get(waiter))
            except BackendError as exc:
                if exc.backend_errno != 1094:  # ER_NO_SUCH_THREAD: it went away meanwhile
                    raise
        for key in [k for k in self._doomed_at if k not in seen]:
            del self._doomed_at[key]  # no longer blocking
        return local

    def _kill_allowed(self, now: float) -> bool:
        while self._kills and now - self._kills[0] >= 1.0:
            self._kills.popleft()
        if len(self._kills) >= KILLS_PER_S_MAX:
            return False
        self._kills.append(now)
        return True

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
        if self._watch_conn is not None:
            self._watch_conn.close()
            self._watch_conn = None


async def _rollback(conn: BackendConnection) -> None:
    if not conn.closed:
        try:
            await conn.execute("ROLLBACK")
        except (BackendError, BackendLost):
            pass
