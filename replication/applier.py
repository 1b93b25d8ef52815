"""The applier: certified transactions of other members, and every DDL, onto this backend.

Items arrive in delivery order (`submit`) and are applied in that order, each in one backend
transaction that also records its seq (PositionStore.record_sql), so a crash never loses or
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
        self._conn: BackendConnection | None = None
        self.applied_count = 0
        self.retried_count = 0

    def __len__(self) -> int:
        return len(self._queue)

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
        """Apply forever. Raises ApplierFailed when an item cannot be applied."""
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            item = self._queue[0]
            if item.seq in self.positions.applied:
                self._queue.popleft()  # already committed here (a restart, or our own commit)
                continue
            if isinstance(item, ExecuteDdl):
                await self._run_ddl(item)
            else:
                await self._apply(item)
            self._queue.popleft()
            self.applied_count += 1

    async def _connection(self) -> BackendConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
            await self._conn.execute("SET SESSION time_zone = '+00:00'")
        return self._conn

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
                if exc.backend_errno in _RETRYABLE and attempt < self.retries_max:
                    self.retried_count += 1
                    await asyncio.sleep(min(0.005 * 2**attempt, 0.5))
                    continue
                raise ApplierFailed(f"cannot apply seq {item.seq} from {item.origin}: {exc}") from exc
            except BackendLost as exc:
                raise ApplierFailed(f"backend lost while applying seq {item.seq}: {exc}") from exc
            self.positions.mark_applied(item.seq)
            return

    async def _run_ddl(self, item: ExecuteDdl) -> None:
        conn = await self._connection()
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
        if self._conn is not None:
            self._conn.close()


async def _rollback(conn: BackendConnection) -> None:
    if not conn.closed:
        try:
            await conn.execute("ROLLBACK")
        except (BackendError, BackendLost):
            pass
