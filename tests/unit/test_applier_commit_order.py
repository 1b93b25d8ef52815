"""The applier's commit order (replication/applier.py, "Commit order") against a fake backend:
transactions with disjoint write sets run at once but commit in seq order; an earlier item
blocked by a later one's lock makes the later one give way; a failed item makes the ones
after it fail without committing. The real-server behaviour is covered by the e2e write-path
tests and the chaos suite's list-append checker (G-single on secondaries)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import pytest

from replication.applier import Applier, ApplierFailed
from replication.certifier import Seq
from replication.engine import ApplyRemote
from replication.positions import Positions, PositionStore
from replication.protocol.errors import BackendError

_ids = itertools.count(100)


@dataclass(eq=False)
class FakeConn:
    """Logs `(thread id, statement)`; the applied changes are logged by `apply` below."""

    log: list[tuple[int, str]]
    closed: bool = False
    thread_id: int = field(default_factory=lambda: next(_ids))

    async def execute(self, sql: str) -> None:
        self.log.append((self.thread_id, sql))

    def close(self) -> None:
        self.closed = True


@dataclass
class Harness:
    applier: Applier
    log: list[tuple[int, str]]
    gates: dict[bytes, asyncio.Event] = field(default_factory=dict)  # changes → released when set
    fail: set[bytes] = field(default_factory=set)  # changes whose apply fails (1146, not retried)

    def commits(self) -> list[int]:
        """The seqs in the order their transactions committed."""
        seq_of: dict[int, int] = {}
        out = []
        for tid, sql in self.log:
            if sql.startswith("INSERT INTO grproxy.applied"):
                seq_of[tid] = int(sql.rsplit("(", 1)[1].rstrip(")"))
            elif sql == "COMMIT":
                out.append(seq_of.pop(tid))
        return out


def make() -> Harness:
    log: list[tuple[int, str]] = []
    h: Harness

    async def connect() -> FakeConn:
        return FakeConn(log)

    async def apply(conn: FakeConn, changes: bytes, *, head: tuple[str, ...] = (), tail: tuple[str, ...] = ()) -> None:
        for sql in head:  # the statements ApplyChanges runs around the changes, logged one by one
            await conn.execute(sql)
        gate = h.gates.get(changes)
        if gate is not None:
            await gate.wait()
        if changes in h.fail:
            raise BackendError(1146, "42S02", "Table 'db.gone' doesn't exist")
        log.append((conn.thread_id, f"apply {changes.decode()}"))
        for sql in tail:
            await conn.execute(sql)

    h = Harness(Applier(connect, Positions(), PositionStore(), apply), log)  # type: ignore[arg-type]
    return h


def txn(seq: int, key: int, changes: bytes | None = None) -> ApplyRemote:
    return ApplyRemote(Seq(seq), "origin", changes or f"t{seq}".encode(), (key,))


async def until(cond: object, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.002)


def test_disjoint_transactions_run_at_once_but_commit_in_seq_order() -> None:
    async def go() -> None:
        h = make()
        h.gates[b"t1"] = gate = asyncio.Event()  # seq 1's changes are slow
        task = asyncio.ensure_future(h.applier.run())
        for seq in (1, 2, 3):
            h.applier.submit(txn(seq, key=seq))  # disjoint: all three start
        await until(lambda: sum(1 for _, s in h.log if s.startswith("apply")) == 2)
        await asyncio.sleep(0.02)
        assert h.commits() == []  # 2 and 3 are done but wait for 1
        assert not h.applier.positions.applied
        gate.set()
        await until(lambda: len(h.applier.positions.applied) == 3)
        assert h.commits() == [1, 2, 3]
        task.cancel()

    asyncio.run(go())


def test_a_later_transaction_holding_a_lock_the_earlier_needs_gives_way() -> None:
    async def go() -> None:
        h = make()
        h.gates[b"t1"] = gate = asyncio.Event()  # seq 1 "waits for a lock" seq 2 holds
        task = asyncio.ensure_future(h.applier.run())
        h.applier.submit(txn(1, key=1))
        h.applier.submit(txn(2, key=2))
        await until(lambda: any(s == "apply t2" for _, s in h.log))
        await asyncio.sleep(0.01)
        # The lock watch's finding: seq 1's connection is blocked by seq 2's.
        conns = {seq: c for c, (seq, _) in h.applier._applying.items()}
        assert set(conns) == {1, 2}
        blocker = conns[2]
        h.applier._give_way[blocker].set()
        await until(lambda: (blocker.thread_id, "ROLLBACK") in h.log)
        gate.set()
        await until(lambda: len(h.applier.positions.applied) == 2)
        assert h.commits() == [1, 2]
        assert h.applier.stats_gave_way == 1
        assert [s for _, s in h.log].count("apply t2") == 2  # rolled back, then applied again
        task.cancel()

    asyncio.run(go())


def test_a_failed_transaction_fails_the_ones_after_it_without_their_commit() -> None:
    async def go() -> None:
        h = make()
        h.gates[b"t1"] = gate = asyncio.Event()
        h.fail.add(b"t1")
        task = asyncio.ensure_future(h.applier.run())
        h.applier.submit(txn(1, key=1))
        h.applier.submit(txn(2, key=2))
        await until(lambda: any(s == "apply t2" for _, s in h.log))
        gate.set()
        with pytest.raises(ApplierFailed):
            await asyncio.wait_for(task, 2.0)
        assert h.commits() == []
        assert not h.applier.positions.applied

    asyncio.run(go())


def test_a_new_run_after_a_failure_applies_again() -> None:
    async def go() -> None:
        h = make()
        h.fail.add(b"t1")
        task = asyncio.ensure_future(h.applier.run())
        h.applier.submit(txn(1, key=1))
        with pytest.raises(ApplierFailed):
            await asyncio.wait_for(task, 2.0)
        h.applier.discard_queue()
        h.fail.clear()
        task = asyncio.ensure_future(h.applier.run())  # the member rejoined
        h.applier.submit(txn(1, key=1))
        h.applier.submit(txn(2, key=2))
        await until(lambda: len(h.applier.positions.applied) == 2)
        assert h.commits() == [1, 2]
        task.cancel()

    asyncio.run(go())


def test_the_lock_watch_tells_only_a_later_waiting_applier_connection_to_give_way() -> None:
    async def go() -> None:
        h = make()
        a = h.applier
        early, late = FakeConn(h.log), FakeConn(h.log)
        a._applying[early] = (5, 0.0)
        a._applying[late] = (6, 0.0)
        a._give_way[early] = e_early = asyncio.Event()
        a._give_way[late] = e_late = asyncio.Event()

        @dataclass
        class Rows:
            rows: list[tuple[bytes, ...]]

        class WatchConn:
            closed = False

            async def execute(self, _sql: str) -> Rows:
                # early waits for late; and (impossible in practice) late for early
                return Rows([(str(early.thread_id).encode(), str(late.thread_id).encode(), b"x", b"RUNNING", None),
                             (str(late.thread_id).encode(), str(early.thread_id).encode(), b"y", b"RUNNING", None)])

        a.doom_thread = lambda _t, _s: False
        a._watch_conn = WatchConn()  # type: ignore[assignment]
        await a.check_lock_waits({early.thread_id: 5, late.thread_id: 6})
        assert e_late.is_set() and not e_early.is_set()

    asyncio.run(go())


def test_a_failure_leaves_no_successor_connection_open_in_its_transaction() -> None:
    """Seq 1 fails while 2 and 3 have applied and wait for their turn: run() raises and
    cancels what still runs. A connection cancelled between statements (waiting for its turn,
    its row locks held) must not stay open in its transaction: it would hold those locks until
    the server's wait_timeout, and the next run (after the rejoin) would wait on them."""
    async def go() -> None:
        h = make()
        h.gates[b"t1"] = gate = asyncio.Event()
        h.fail.add(b"t1")
        conns: list[FakeConn] = []

        async def connect() -> FakeConn:
            conns.append(FakeConn(h.log))
            return conns[-1]

        h.applier._connect = connect  # type: ignore[assignment]
        task = asyncio.ensure_future(h.applier.run())
        for seq in (1, 2, 3):
            h.applier.submit(txn(seq, key=seq))
        await until(lambda: sum(1 for _, s in h.log if s.startswith("apply")) == 2)
        gate.set()
        with pytest.raises(ApplierFailed):
            await asyncio.wait_for(task, 2.0)
        for _ in range(5):
            await asyncio.sleep(0)
        for c in conns:
            ended = [s for t, s in h.log if t == c.thread_id and s in ("ROLLBACK", "COMMIT")]
            began = [s for t, s in h.log if t == c.thread_id and s == "BEGIN"]
            assert c.closed or len(ended) >= len(began), f"connection {c.thread_id} left in its transaction"
        assert h.commits() == []

    asyncio.run(go())
