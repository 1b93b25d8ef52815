"""Applied positions: which seqs a backend has committed, as compact intervals.

Seqs are applied out of order (the applier runs non-conflicting transactions in parallel), so
the set is kept as sorted, disjoint, non-adjacent closed intervals — the shape of MySQL's
`gtid_executed` ("1-1000:1002-1010"). The *low-water mark* (LWM) is the end of the interval
that starts at 1: every seq at or below it is applied. Snapshots and consistency waits are
stated in LWM terms.

`AppliedSet` is pure; `Positions` adds asyncio waiters; `PositionStore` persists. The member persists each added seq in the backend, in the same
transaction as the data it belongs to, and rebuilds the set from the backend at start-up, so a
crash neither loses nor repeats a transaction (`PositionStore`, replication/member.py).
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from typing import Any, Protocol

from .certifier import Seq

class BackendLike(Protocol):
    """What PositionStore needs of a backend connection (BackendConnection satisfies it)."""

    async def execute(self, sql: str) -> Any: ...


INTERVALS_MAX = 100_000  # gaps tolerated at once; more means the applier is wedged


class TooManyGaps(Exception):
    """The applied set fragmented past INTERVALS_MAX intervals."""


class AppliedSet:
    """A set of seqs as intervals, with its low-water mark."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, intervals: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for lo, hi in sorted(intervals):
            for seq in (lo, hi):
                if seq < 1:
                    raise ValueError(f"seq {seq} < 1")
            if lo > hi:
                raise ValueError(f"empty interval {lo}-{hi}")
            self._add_range(lo, hi)

    @property
    def lwm(self) -> Seq:
        """The highest seq such that every seq from 1 to it is in the set (0 if 1 is not)."""
        if self._starts and self._starts[0] == 1:
            return Seq(self._ends[0])
        return Seq(0)

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._starts, seq) - 1
        return i >= 0 and self._ends[i] >= seq

    def add(self, seq: int) -> bool:
        """Add one seq; False if it was already there (a duplicate apply)."""
        if seq < 1:
            raise ValueError(f"seq {seq} < 1")
        if seq in self:
            return False
        self._add_range(seq, seq)
        return True

    def _add_range(self, lo: int, hi: int) -> None:
        starts, ends = self._starts, self._ends
        i = bisect.bisect_left(ends, lo - 1)  # first interval that could touch [lo, hi]
        j = i
        new_lo, new_hi = lo, hi
        while j < len(starts) and starts[j] <= hi + 1:
            new_lo = min(new_lo, starts[j])
            new_hi = max(new_hi, ends[j])
            j += 1
        starts[i:j] = [new_lo]
        ends[i:j] = [new_hi]
        if len(starts) > INTERVALS_MAX:
            raise TooManyGaps(f"applied set has more than {INTERVALS_MAX} gaps")

    def above_lwm(self, limit: int) -> tuple[int, ...]:
        """Seqs in the set above the low-water mark (at most `limit`, the lowest first)."""
        out: list[int] = []
        start = 1 if self._starts and self._starts[0] == 1 else 0
        for lo, hi in zip(self._starts[start:], self._ends[start:]):
            for seq in range(lo, hi + 1):
                if len(out) >= limit:
                    return tuple(out)
                out.append(seq)
        return tuple(out)

    def intervals(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends)

    def missing(self, upto: int) -> Iterator[int]:
        """Seqs in 1..upto that are not in the set (what recovery must fetch)."""
        nxt = 1
        for lo, hi in self.intervals():
            if lo > upto:
                break
            yield from range(nxt, min(lo, upto + 1))
            nxt = hi + 1
        yield from range(nxt, upto + 1)

    def __str__(self) -> str:
        return ":".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.intervals())

    @classmethod
    def parse(cls, text: str) -> "AppliedSet":
        """Inverse of str(): '1-10:12:15-20'."""
        out = []
        for part in filter(None, text.split(":")):
            lo, _, hi = part.partition("-")
            out.append((int(lo), int(hi or lo)))
        return cls(out)

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.intervals())


# --- waiting on positions (asyncio) and persisting them (backend) ------------------------------


WAITERS_MAX = 100_000  # sessions waiting on positions at once; more → HoldWaitTimeout at once


class Positions:
    """The member's applied set with waiters: `await wait_applied(seq)` returns once every seq
    up to `seq` is committed on this member's backend (LWM >= seq)."""

    def __init__(self, applied: AppliedSet | None = None) -> None:
        self.applied = applied or AppliedSet()
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._count = 0
        self._since: list[list[int]] = []  # open reloads: the seqs marked applied since each began

    def reload_begin(self) -> list[int]:
        """Before reading the backend's positions for `replace(..., since=...)`: from now on the
        seqs committed here (an applier or a local commit still running) are kept aside, as
        the read may not see them."""
        marks: list[int] = []
        self._since.append(marks)
        return marks

    @property
    def lwm(self) -> Seq:
        return self.applied.lwm

    def mark_applied(self, seq: int) -> None:
        """Record a committed seq and wake whoever waited for the LWM to pass it."""
        before = self.applied.lwm
        self.applied.add(seq)
        for marks in self._since:
            marks.append(seq)
        after = self.applied.lwm
        if after > before and self._waiters:
            for target in [t for t in self._waiters if t <= after]:
                for fut in self._waiters.pop(target):
                    self._count -= 1
                    if not fut.done():
                        fut.set_result(None)

    def replace(self, applied: AppliedSet, *, since: list[int] | None = None) -> None:
        """The backend's positions were replaced as a whole (a clone, replication/recovery):
        take them, and wake whoever waited for a seq they now cover. `since` (from
        `reload_begin`): seqs committed while `applied` was being read are added to it."""
        if since is not None:
            self._since = [m for m in self._since if m is not since]
            for seq in since:
                applied.add(seq)
        self.applied = applied
        lwm = applied.lwm
        for target in [t for t in self._waiters if t <= lwm]:
            for fut in self._waiters.pop(target):
                self._count -= 1
                if not fut.done():
                    fut.set_result(None)

    async def wait_applied(self, seq: int, timeout_s: float) -> None:
        """Wait until LWM >= seq. Raises TimeoutError after `timeout_s`, OverflowError when
        WAITERS_MAX sessions already wait."""
        if self.applied.lwm >= seq:
            return
        if self._count >= WAITERS_MAX:
            raise OverflowError(f"{WAITERS_MAX} sessions already wait on positions")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(seq, []).append(fut)
        self._count += 1
        try:
            async with asyncio.timeout(timeout_s):
                await fut
        finally:
            if not fut.done():
                fut.cancel()
                waiters = self._waiters.get(seq)
                if waiters and fut in waiters:
                    waiters.remove(fut)
                    self._count -= 1
                    if not waiters:
                        del self._waiters[seq]


class PositionStore:
    """Applied seqs persisted in the backend, in the same transaction as the data.

    Layout (schema `grproxy`, never replicated): `applied(seq)` holds one row per seq committed
    since the last compaction; `applied_ranges(lo, hi)` holds compacted intervals, as
    `mysql.gtid_executed` does. The member adds `record_sql(seq)` to each transaction it
    commits; `compact` folds rows into ranges in one transaction of its own.
    """

    SCHEMA = "grproxy"

    SETUP_SQL = (
        "CREATE DATABASE IF NOT EXISTS grproxy",
        # xid: a local transaction's XA id, recorded before its XA COMMIT (see record_local_sql).
        "CREATE TABLE IF NOT EXISTS grproxy.applied (seq BIGINT UNSIGNED NOT NULL PRIMARY KEY, "
        "xid VARBINARY(140) NULL) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS grproxy.applied_ranges (lo BIGINT UNSIGNED NOT NULL PRIMARY KEY, "
        "hi BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS grproxy.meta (name VARCHAR(64) NOT NULL PRIMARY KEY, "
        "value VARCHAR(255) NOT NULL) ENGINE=InnoDB",
    )

    @staticmethod
    def record_sql(seq: int) -> str:
        return f"INSERT INTO grproxy.applied (seq) VALUES ({int(seq)})"

    @staticmethod
    def record_local_sql(entries: Iterable[tuple[int, bytes]]) -> str:
        """Positions of local XA transactions the group certified, written (autocommit) before
        their XA COMMIT: a crash in between leaves the transaction prepared and its position
        recorded, so the restart commits it (see Member.resolve_prepared)."""
        values = ",".join(f"({int(seq)},X'{xid.hex()}')" for seq, xid in entries)
        return f"INSERT INTO grproxy.applied (seq, xid) VALUES {values}"

    async def local_xids(self, conn: BackendLike) -> dict[bytes, int]:
        """xid → seq of local transactions whose position was recorded (not yet compacted)."""
        r = await conn.execute("SELECT seq, xid FROM grproxy.applied WHERE xid IS NOT NULL")
        return {bytes(xid): int(seq) for seq, xid in r.rows}  # type: ignore[arg-type]

    async def setup(self, conn: BackendLike) -> None:
        for sql in self.SETUP_SQL:
            await conn.execute(sql)

    async def load(self, conn: BackendLike) -> AppliedSet:
        ranges = await conn.execute("SELECT lo, hi FROM grproxy.applied_ranges")
        seqs = await conn.execute("SELECT seq FROM grproxy.applied")
        out = AppliedSet((int(lo), int(hi)) for lo, hi in ranges.rows)  # type: ignore[arg-type]
        for (seq,) in seqs.rows:
            out.add(int(seq))  # type: ignore[arg-type]
        return out

    async def compact(self, conn: BackendLike, keep: Collection[int] = ()) -> int:
        """Fold `applied` rows into `applied_ranges` (one transaction). Returns rows folded.

        Exact: only the `applied` rows this transaction read are deleted, by their seqs, so a
        seq committed by another transaction between the read and the DELETE stays in `applied`
        for the next compaction. Seqs in `keep` (local transactions between their position and
        their XA COMMIT: the restart needs their xid) are left as rows; `keep` is consulted once the
        rows are read, so pass the live collection: a position recorded after a copy was taken
        would be folded, its xid lost, and a crash before its XA COMMIT would roll the
        transaction back on restart while its seq counts as applied.

        Never waits for the appliers, nor makes them wait: it runs READ COMMITTED and reads
        `applied` without locking (committed rows only; positions are only ever inserted,
        and deleted by compaction alone), then locks just the rows it deletes. A locking read
        of the whole table (next-key locks) waited for the position row of an applier
        transaction that itself waits, in the applier, for an earlier one to commit — whose
        position INSERT waited for that read's gap locks: a cycle InnoDB cannot see, broken
        only by innodb_lock_wait_timeout (50 s of a stalled member)."""
        await conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")  # the next transaction only
        await conn.execute("BEGIN")
        try:
            ranges = await conn.execute("SELECT lo, hi FROM grproxy.applied_ranges FOR UPDATE")
            rows = await conn.execute("SELECT seq FROM grproxy.applied")
            seqs = [int(seq) for (seq,) in rows.rows if int(seq) not in keep]  # type: ignore[arg-type]
            current = AppliedSet((int(lo), int(hi)) for lo, hi in ranges.rows)  # type: ignore[arg-type]
            for seq in seqs:
                current.add(seq)
            folded = 0
            for i in range(0, len(seqs), COMPACT_DELETE_CHUNK):
                chunk = ",".join(map(str, seqs[i : i + COMPACT_DELETE_CHUNK]))
                folded += (await conn.execute(f"DELETE FROM grproxy.applied WHERE seq IN ({chunk})")).affected_rows
            await conn.execute("DELETE FROM grproxy.applied_ranges")
            values = ",".join(f"({lo},{hi})" for lo, hi in current.intervals())
            if values:
                await conn.execute(f"INSERT INTO grproxy.applied_ranges (lo, hi) VALUES {values}")
            await conn.execute("COMMIT")
            return folded
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    async def load_identity(self, conn: BackendLike) -> "BackendIdentity":
        """Whose backend this is: the member uuid and group uuid kept in grproxy.meta."""
        return BackendIdentity(await self.get_meta(conn, "member_uuid"), await self.get_meta(conn, "group_uuid"))

    async def get_meta(self, conn: BackendLike, name: str) -> str | None:
        r = await conn.execute(f"SELECT value FROM grproxy.meta WHERE name = '{_sql_str(name)}'")
        return r.rows[0][0].decode() if r.rows and r.rows[0][0] is not None else None  # type: ignore[union-attr]

    async def set_meta(self, conn: BackendLike, name: str, value: str) -> None:
        await conn.execute(f"REPLACE INTO grproxy.meta (name, value) VALUES ('{_sql_str(name)}', '{_sql_str(value)}')")


COMPACT_DELETE_CHUNK = 10_000  # seqs named in one DELETE of a compaction


@dataclass(frozen=True, slots=True)
class BackendIdentity:
    """What a backend says about who owns it (grproxy.meta): None when never recorded."""

    member_uuid: str | None
    group_uuid: str | None


def gtid_set(group_uuid: str | None, applied: AppliedSet) -> str:
    """`applied` in MySQL's GTID set notation: 'uuid:1-10:12' ('' when empty)."""
    text = str(applied)
    return f"{group_uuid or ''}:{text}" if text else ""


def _sql_str(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "''")




LOCAL_POSITIONS_BATCH_MAX = 1_000  # local positions written by one INSERT; more wait for the next
LOCAL_POSITIONS_PENDING_MAX = 100_000  # callers waiting at once; one more → OverflowError at once


class LocalPositionWriter:
    """Records the positions of certified local transactions before their XA COMMIT.

    Concurrent callers share one autocommit INSERT on the writer's own backend connection (a
    group commit of positions): while one batch is written, the next one gathers. `record`
    returns once its row is durable, or raises what the backend raised (the caller must then
    not commit: the member goes to ERROR, as for any certified transaction it cannot commit).
    A connection the backend closed while it was idle is replaced before it is used.
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect
        self._conn: Any = None
        self._pending: list[tuple[int, bytes, asyncio.Future[None]]] = []
        self._flushing = False

    async def record(self, seq: int, xid: bytes) -> None:
        if len(self._pending) >= LOCAL_POSITIONS_PENDING_MAX:
            raise OverflowError(f"{LOCAL_POSITIONS_PENDING_MAX} local positions already wait to be written")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((seq, xid, fut))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await asyncio.shield(fut)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:LOCAL_POSITIONS_BATCH_MAX]
                del self._pending[:LOCAL_POSITIONS_BATCH_MAX]
                try:
                    if self._conn is not None and getattr(self._conn, "closed", False):
                        # The backend closed it while it was idle (it restarted, and the member
                        # rejoined since): a write on it fails for sure, so take a new one.
                        self._conn = None
                    if self._conn is None:
                        self._conn = await self._connect()
                    await self._conn.execute(PositionStore.record_local_sql((s, x) for s, x, _ in batch))
                except BaseException as exc:  # noqa: BLE001 - every caller of the batch hears it
                    conn, self._conn = self._conn, None
                    if conn is not None:
                        conn.close()
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                    continue
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._flushing = False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
