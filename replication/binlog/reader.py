"""The member's binlog reader: prepared XA transactions on request, stray writes reported.

Theory of operation (DESIGN §5). The member keeps one `BinlogReader` per backend, opened at the
end of the binlog before any write runs. One task reads the stream (stream.BinlogStream) and
assembles transactions (transactions.Assembler). At COMMIT the member runs `XA END; XA PREPARE`
and then `await reader.prepared(xid, timeout_s)`, which returns the `BinlogTransaction` of that
XA transaction once its XA_PREPARE event has been read — whether the event arrived before or
after the call. Every other transaction that wrote rows (an ordinary commit, XA COMMIT ONE PHASE,
rows outside any group) goes to `on_outside_xa(txn)`, called from the reader task: the member
tells its own applier's commits apart from a stray write (a backend session that committed a
write the group never saw) and goes to ERROR for the latter. The rows of those transactions are
decoded only if the hook reads them (`Assembler(decode_outside_xa=False)`): telling them apart
takes table names only. The hook must not block; an exception from it stops the reader like a
broken stream (waiters hear it).

Bounds, and what happens at each (STYLE §11):

* `waiters_max` concurrent `prepared()` calls: one more raises `ReaderBusy` at once.
* `unclaimed_max` prepared XA transactions read but not yet asked for: one more evicts the oldest
  (counted in `unclaimed_evicted`); a later `prepared()` for an evicted xid raises
  `TransactionEvicted` at once instead of waiting for its timeout. The second phase (XA COMMIT /
  XA ROLLBACK) of an unclaimed transaction drops it, and `forget(xid)` drops one explicitly.
* `transaction_bytes_max` bytes of rows events per transaction: the transaction arrives with
  `oversize=True` and no rows; `prepared()` raises `BinlogTransactionTooLarge` for it.
* the stream's own buffering (stream.STREAM_BUFFER_BYTES_MAX) and its heartbeat watchdog.

A broken stream fails every waiter, and every later call, with `BinlogStreamBroken`; the reader
is then closed and the member must open a new one (and, as GR does, treat transactions it could
not read as failed).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..protocol.backend import BackendAddress
from .events import BinlogError, Heartbeat, XaId
from .stream import STREAM_BUFFER_BYTES_MAX, STREAM_HEARTBEAT_S_DEFAULT, BinlogPosition, BinlogStream, BinlogStreamBroken
from .transactions import TRANSACTION_BYTES_MAX, Assembler, BinlogTransaction

READER_WAITERS_MAX = 4_096  # concurrent prepared() calls (≥ the member's concurrent commits)
READER_UNCLAIMED_MAX = 1_024  # prepared XA transactions read and not yet claimed
READER_EVICTED_REMEMBERED_MAX = 4_096  # xids of evicted transactions remembered for a clear error


class ReaderBusy(BinlogError):
    """`waiters_max` prepared() calls are already waiting."""


class TransactionEvicted(BinlogError):
    """The XA transaction was read, but evicted unclaimed (unclaimed_max) before it was asked for."""


class BinlogTransactionTooLarge(BinlogError):
    """The XA transaction's rows events passed transaction_bytes_max (GR reports 3100)."""


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    waiters_max: int = READER_WAITERS_MAX
    unclaimed_max: int = READER_UNCLAIMED_MAX
    transaction_bytes_max: int = TRANSACTION_BYTES_MAX

    def __post_init__(self) -> None:
        if self.waiters_max <= 0 or self.unclaimed_max <= 0 or self.transaction_bytes_max <= 0:
            raise ValueError(f"reader limits must be positive: {self!r}")


OutsideXaHook = Callable[[BinlogTransaction], None]


class BinlogReader:
    """See the module docstring. Create with `await BinlogReader.open(...)`."""

    def __init__(self, stream: BinlogStream, *, on_outside_xa: OutsideXaHook | None = None,
                 limits: ReaderLimits = ReaderLimits()) -> None:
        self._stream = stream
        # Only prepared XA transactions are decoded as read; the others (the applier's commits,
        # the member's bookkeeping, a stray write) decode their rows if someone reads them.
        # Prepared ones keep their events as logged too: the group ships those (rowevents.py).
        self._assembler = Assembler(transaction_bytes_max=limits.transaction_bytes_max, decode_outside_xa=False,
                                    keep_events=True)
        self._on_outside_xa = on_outside_xa
        self.limits = limits
        self._waiters: dict[XaId, asyncio.Future[BinlogTransaction]] = {}
        self._unlogged_at: dict[XaId, BinlogPosition] = {}  # waiters that gave logged_before
        self._unclaimed: OrderedDict[XaId, BinlogTransaction] = OrderedDict()
        self._evicted: OrderedDict[XaId, None] = OrderedDict()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._group_position = stream.position
        self.unclaimed_evicted = 0
        self.transactions_read = 0
        self.heartbeats = 0

    @classmethod
    async def open(
        cls,
        address: BackendAddress,
        *,
        replica_server_id: int,
        position: BinlogPosition | None = None,
        on_outside_xa: OutsideXaHook | None = None,
        limits: ReaderLimits = ReaderLimits(),
        heartbeat_s: float = STREAM_HEARTBEAT_S_DEFAULT,
        buffer_bytes_max: int = STREAM_BUFFER_BYTES_MAX,
    ) -> "BinlogReader":
        """Open the stream (at the end of the binlog unless `position`) and start reading.

        Raises what BinlogStream.open raises.
        """
        stream = await BinlogStream.open(
            address, replica_server_id=replica_server_id, position=position, heartbeat_s=heartbeat_s,
            buffer_bytes_max=buffer_bytes_max,
        )
        reader = cls(stream, on_outside_xa=on_outside_xa, limits=limits)
        reader.start()
        return reader

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("[BUG] BinlogReader started twice")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="binlog-reader")

    @property
    def position(self) -> BinlogPosition:
        """Where the stream is (the next event to read)."""
        return self._stream.position

    @property
    def group_position(self) -> BinlogPosition:
        """The position after the last whole event group read: where a new reader resumes
        without splitting a transaction (the stream's start until a group completes)."""
        return self._group_position

    @property
    def error(self) -> BaseException | None:
        """Why the reader stopped, once it has."""
        return self._error

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def unclaimed(self) -> int:
        return len(self._unclaimed)

    async def prepared(
        self, xid: XaId, timeout_s: float, *, logged_before: BinlogPosition | None = None
    ) -> BinlogTransaction:
        """The transaction of XA `xid`, once its XA_PREPARE event has been read.

        An XA transaction that changed no row (read-only, rows updated to their own values,
        temporary tables only) writes nothing to the binlog at XA PREPARE. Pass
        `logged_before`, the server's binlog end read after XA PREPARE returned (SHOW MASTER
        STATUS, which can share the XA PREPARE's round trip): once the reader has read up to
        there without meeting `xid`, the answer is an empty transaction (`gtid` None,
        `row_count` 0) instead of a timeout.

        Raises TimeoutError after `timeout_s` (the waiter is withdrawn; the transaction, if it
        arrives later, is kept unclaimed), ReaderBusy, TransactionEvicted,
        BinlogTransactionTooLarge, BinlogStreamBroken (or the reader's own failure), ValueError
        when another call already waits for `xid` or `logged_before` precedes the reader's
        start (its events were never read).
        """
        txn = self._unclaimed.pop(xid, None)
        if txn is not None:
            return _checked(txn)
        if self._error is not None:
            raise _broken(self._error)
        if xid in self._evicted:
            del self._evicted[xid]
            raise TransactionEvicted(f"XA transaction {xid!r} was read but evicted unclaimed "
                                     f"({self.limits.unclaimed_max} unclaimed transactions)")
        if xid in self._waiters:
            raise ValueError(f"[BUG] two waiters for XA transaction {xid!r}")
        if len(self._waiters) >= self.limits.waiters_max:
            raise ReaderBusy(f"{len(self._waiters)} transactions already wait for the binlog")
        if logged_before is not None:
            if not logged_before.reached(self._stream.start_position):
                raise ValueError(f"[BUG] {xid!r} was prepared at {logged_before}, before the reader's start "
                                 f"{self._stream.start_position}")
            if self._stream.position.reached(logged_before):
                return _unlogged(xid)
        future: asyncio.Future[BinlogTransaction] = asyncio.get_running_loop().create_future()
        self._waiters[xid] = future
        if logged_before is not None:
            self._unlogged_at[xid] = logged_before
        try:
            async with asyncio.timeout(timeout_s):
                return _checked(await future)
        finally:
            if self._waiters.get(xid) is future:
                del self._waiters[xid]
            self._unlogged_at.pop(xid, None)

    def forget(self, xid: XaId) -> bool:
        """Drop the unclaimed transaction of `xid` (the member rolled it back unread)."""
        return self._unclaimed.pop(xid, None) is not None

    async def _run(self) -> None:
        stream, assembler = self._stream, self._assembler
        try:
            while True:
                event = await stream.next_event()
                if isinstance(event, Heartbeat):
                    self.heartbeats += 1
                    continue
                txn = assembler.feed(event, stream.last_raw)
                if txn is not None:
                    self.transactions_read += 1
                    self._group_position = stream.position
                    self._deliver(txn)
                if self._unlogged_at:
                    self._resolve_unlogged()
        except asyncio.CancelledError:
            self._fail(BinlogStreamBroken("binlog reader closed"))
            raise
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear why
            self._fail(exc)
        finally:
            await stream.close()

    def _deliver(self, txn: BinlogTransaction) -> None:
        xid = txn.xid
        if txn.end == "xa_prepare":
            assert xid is not None
            future = self._waiters.pop(xid, None)
            if future is not None and not future.done():
                future.set_result(txn)
                return
            self._unclaimed[xid] = txn
            self._unclaimed.move_to_end(xid)
            while len(self._unclaimed) > self.limits.unclaimed_max:
                old, _ = self._unclaimed.popitem(last=False)
                self.unclaimed_evicted += 1
                self._evicted[old] = None
                while len(self._evicted) > READER_EVICTED_REMEMBERED_MAX:
                    self._evicted.popitem(last=False)
            return
        if txn.end in ("xa_commit", "xa_rollback"):
            if xid is not None:
                self._unclaimed.pop(xid, None)
                self._evicted.pop(xid, None)
            return
        if (txn.has_rows or txn.queries) and self._on_outside_xa is not None:
            self._on_outside_xa(txn)  # rows, or statements (DDL, accounts — or DML logged as text)

    def _resolve_unlogged(self) -> None:
        stream = self._stream
        for xid, logged_before in list(self._unlogged_at.items()):
            if stream.reached(logged_before):
                del self._unlogged_at[xid]
                future = self._waiters.pop(xid, None)
                if future is not None and not future.done():
                    future.set_result(_unlogged(xid))

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(_broken(exc))
        self._waiters.clear()

    async def close(self) -> None:
        """Stop reading; waiters get BinlogStreamBroken."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._fail(BinlogStreamBroken("binlog reader closed"))
        await self._stream.close()


def _unlogged(xid: XaId) -> BinlogTransaction:
    """An XA transaction that wrote nothing to the binlog."""
    return BinlogTransaction(None, "xa_prepare", xid, (), (), (), 0, 0)


def _checked(txn: BinlogTransaction) -> BinlogTransaction:
    if txn.oversize:
        raise BinlogTransactionTooLarge(
            f"XA transaction {txn.xid!r} logged {txn.rows_bytes} bytes of row events, over the reader's bound"
        )
    return txn


def _broken(exc: BaseException) -> BaseException:
    if isinstance(exc, BinlogError):
        return exc
    return BinlogStreamBroken(f"binlog reader failed: {type(exc).__name__}: {exc}")
