"""The applier: certified transactions of other members, and every DDL, onto this backend.

Items arrive in delivery order (`submit`) and are applied in that order where it matters —
transactions with disjoint write sets run in parallel on up to `workers` connections — each in
one backend transaction that also records its seq (PositionStore.record_sql), so a crash never loses or
repeats one: at start-up the applied set is read back and seqs already there are skipped.
DDL runs in the same queue, so it takes effect at its place in the total order on every member
(origin included); the session that asked for it awaits `ddl_outcome(seq)`.

Bounds: `queue_max` items waiting (beyond it `submit` raises ApplierFull — the member treats
that as the signal for flow control, see replication/member.py); a transaction that hits a
deadlock or lock-wait timeout against local sessions is retried `retries_max` times.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from replication.protocol.backend import BackendConnection
from replication.protocol.errors import BackendError, BackendLost

from .engine import ApplyRemote, ExecuteDdl
from .positions import Positions, PositionStore

log = structlog.get_logger("grproxy.applier")

APPLIER_QUEUE_MAX = 100_000
APPLY_RETRIES_MAX = 10
APPLIER_WORKERS = 4  # transactions applied at once (disjoint write sets); connections kept
_RETRYABLE = {1213, 1205}  # deadlock, lock wait timeout: local sessions held the rows

ApplyChanges = Callable[[BackendConnection, bytes], Awaitable[None]]
Connect = Callable[[], Awaitable[BackendConnection]]


class ApplierFull(Exception):
    """More than `queue_max` certified items wait to be applied."""


class ApplierFailed(Exception):
    """An item could not be applied: the member must go to ERROR."""


@dataclass(frozen=True, slots=True)
class DdlOutcome:
    seq: int
    error: BackendError | None


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
        self._ddl: dict[int, asyncio.Future[DdlOutcome]] = {}
        self.workers = workers
        self._idle: list[BackendConnection] = []
        self.applied_count = 0
        self.retried_count = 0

    def __len__(self) -> int:
        return len(self._queue)

    def discard_queue(self) -> int:
        n = len(self._queue)
        self._queue.clear()
        return n

    def submit(self, item: ApplyRemote | ExecuteDdl) -> None:
        """Queue an item (delivery order). Raises ApplierFull at the bound."""
        if len(self._queue) >= self.queue_max:
            raise ApplierFull(f"{self.queue_max} certified transactions wait to be applied")
        self._queue.append(item)
        if isinstance(item, ExecuteDdl) and item.local:
            self._ddl.setdefault(item.seq, asyncio.get_running_loop().create_future())
        self._wakeup.set()

    def ddl_outcome(self, seq: int) -> asyncio.Future[DdlOutcome]:
        """The outcome of local DDL `seq` (created on demand; resolved once it ran here)."""
        fut = self._ddl.get(seq)
        if fut is None:
            fut = self._ddl[seq] = asyncio.get_running_loop().create_future()
        return fut

    async def run(self) -> None:
        """Apply forever. Raises ApplierFailed when an item cannot be applied.

        Scheduling: items leave the queue in delivery order. A transaction starts as soon as
        its write set is disjoint from every transaction still running (they touch different
        rows, so their order does not matter); otherwise it — and everything behind it —
        waits for the running ones to finish. DDL, and transactions whose write set is not
        known (fetched by recovery), run alone.
        """
        running: dict[asyncio.Task[None], frozenset[int] | None] = {}
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
                    coro = self._run_ddl(item) if isinstance(item, ExecuteDdl) else self._apply(item)
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

    async def _connection(self) -> BackendConnection:
        if self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        conn = await self._connect()
        await conn.execute("SET SESSION time_zone = '+00:00'")
        return conn

    def _release(self, conn: BackendConnection) -> None:
        if not conn.closed and len(self._idle) < self.workers:
            self._idle.append(conn)
        else:
            conn.close()

    async def _apply(self, item: ApplyRemote) -> None:
        for attempt in range(self.retries_max + 1):
            conn = await self._connection()
            try:
                await conn.execute("BEGIN")
                await self.apply_changes(conn, item.changes)
                await conn.execute(self.store.record_sql(item.seq))
                await conn.execute("COMMIT")
            except BackendError as exc:
                await _rollback(conn)
                self._release(conn)
                if exc.backend_errno in _RETRYABLE and attempt < self.retries_max:
                    self.retried_count += 1
                    await asyncio.sleep(min(0.005 * 2**attempt, 0.5))
                    continue
                raise ApplierFailed(f"cannot apply seq {item.seq} from {item.origin}: {exc}") from exc
            except BackendLost as exc:
                conn.close()
                raise ApplierFailed(f"backend lost while applying seq {item.seq}: {exc}") from exc
            self._release(conn)
            self.positions.mark_applied(item.seq)
            return

    async def _run_ddl(self, item: ExecuteDdl) -> None:
        conn = await self._connection()
        try:
            await self._run_ddl_on(conn, item)
        finally:
            self._release(conn)

    async def _run_ddl_on(self, conn: BackendConnection, item: ExecuteDdl) -> None:
        error: BackendError | None = None
        try:
            if item.schema:
                await conn.execute(f"USE `{item.schema.replace('`', '``')}`")
            await conn.execute(item.sql)
        except BackendError as exc:
            error = exc
        except BackendLost as exc:
            raise ApplierFailed(f"backend lost while running DDL seq {item.seq}: {exc}") from exc
        if self.after_ddl is not None:
            self.after_ddl(item.schema, item.sql)
        # DDL commits implicitly; its position is recorded right after (see the README's
        # limitations: a crash between the two re-runs the DDL on recovery).
        await conn.execute(self.store.record_sql(item.seq))
        self.positions.mark_applied(item.seq)
        fut = self._ddl.pop(item.seq, None)
        if fut is not None and not fut.done():
            fut.set_result(DdlOutcome(item.seq, error))
        elif error is not None:
            log.warning("ddl_failed_here", seq=item.seq, origin=item.origin, error=str(error))

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


async def _rollback(conn: BackendConnection) -> None:
    if not conn.closed:
        try:
            await conn.execute("ROLLBACK")
        except (BackendError, BackendLost):
            pass
