"""The applier's lock watch (replication/applier.py) against a fake backend: which blockers are
doomed, when a doomed one's statement is killed, and the bound on kills. The real-server
behaviour is tests/integration/test_applier_priority.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from replication.applier import DOOMED_KILL_AFTER_S, KILLS_PER_S_MAX, Applier
from replication.positions import Positions, PositionStore

Row = tuple[bytes | None, ...]


@dataclass
class FakeResult:
    rows: list[Row]


@dataclass
class FakeConn:
    """Answers the watch's query with `rows`; records the KILLs it is sent."""

    rows: list[Row] = field(default_factory=list)
    kills: list[int] = field(default_factory=list)
    closed: bool = False

    async def execute(self, sql: str) -> FakeResult:
        if sql.startswith("KILL QUERY "):
            self.kills.append(int(sql.split()[-1]))
            return FakeResult([])
        assert "INNODB_LOCK_WAITS" in sql and "Waiting for table metadata lock" in sql
        return FakeResult(self.rows)

    def close(self) -> None:
        self.closed = True


def row(waiter: int, blocker: int, trx: str, query: str | None = None, state: str = "RUNNING") -> Row:
    return (str(waiter).encode(), str(blocker).encode(), trx.encode(), state.encode(),
            None if query is None else query.encode())


def make(locals_: set[int]) -> tuple[Applier, FakeConn, list[tuple[int, int]]]:
    conn = FakeConn()
    calls: list[tuple[int, int]] = []

    def doom(thread_id: int, seq: int) -> bool:
        calls.append((thread_id, seq))
        return thread_id in locals_

    async def connect() -> FakeConn:
        return conn

    async def apply(_conn: object, _changes: bytes, *, head: object = (), tail: object = ()) -> None:
        raise AssertionError("not applying here")

    a = Applier(connect, Positions(), PositionStore(), apply, doom_thread=doom)  # type: ignore[arg-type]
    return a, conn, calls


def age_dooms(a: Applier, by_s: float) -> None:
    for key in a._doomed_at:
        a._doomed_at[key] -= by_s


def test_only_local_active_blockers_are_doomed_and_idle_ones_never_killed() -> None:
    async def go() -> None:
        a, conn, calls = make(locals_={50})
        conn.rows = [row(10, 50, "t1"), row(10, 60, "t2"), row(10, 0, "t3"), row(10, 11, "t4"), row(10, 50, "t1")]
        assert await a.check_lock_waits({10: 7, 11: 8}) == 1
        # 0: a prepared XA no connection holds; 11: another applier connection; 50 once.
        assert calls == [(50, 7), (60, 7)]
        assert a.stats_blockers_doomed == 1
        age_dooms(a, DOOMED_KILL_AFTER_S)
        assert await a.check_lock_waits({10: 7, 11: 8}) == 1
        assert conn.kills == []  # idle (trx_query NULL): its doom rolls it back, no kill
        assert a.stats_blockers_doomed == 1  # counted once per blocking transaction

    asyncio.run(go())


def test_busy_doomed_blocker_is_killed_after_the_grace_only() -> None:
    async def go() -> None:
        a, conn, _ = make(locals_={50, 51, 52})
        conn.rows = [row(10, 50, "t1", "SELECT SLEEP(60)"), row(10, 51, "t2", "XA END X'6778',"),
                     row(10, 52, "t3", "UPDATE t SET v=1", state="ROLLING BACK")]
        await a.check_lock_waits({10: 7})
        assert conn.kills == []  # first sighting: doomed, not killed
        await a.check_lock_waits({10: 7})
        assert conn.kills == []  # still within the grace period
        age_dooms(a, DOOMED_KILL_AFTER_S)
        await a.check_lock_waits({10: 7})
        assert conn.kills == [50]  # our own XA statements and rollbacks are never killed
        await a.check_lock_waits({10: 7})
        assert conn.kills == [50]  # the next kill waits another grace period
        conn.rows = []
        await a.check_lock_waits({10: 7})
        assert a._doomed_at == {}  # no longer blocking: forgotten

    asyncio.run(go())


def test_kills_are_bounded_per_second() -> None:
    async def go() -> None:
        n = KILLS_PER_S_MAX + 5
        a, conn, _ = make(locals_=set(range(100, 100 + n)))
        conn.rows = [row(10, 100 + i, f"t{i}", "SELECT SLEEP(60)") for i in range(n)]
        await a.check_lock_waits({10: 7})
        age_dooms(a, DOOMED_KILL_AFTER_S)
        await a.check_lock_waits({10: 7})
        assert len(conn.kills) == KILLS_PER_S_MAX
        assert a.stats_blockers_killed == KILLS_PER_S_MAX

    asyncio.run(go())

