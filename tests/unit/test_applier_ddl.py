"""The applier's DDL handling (replication/applier.py, DDL) against a fake backend: at its seq the
origin's session runs the DDL; elsewhere the decision is awaited and the DDL run under the
origin's session variables, or skipped; a DDL failing here fails the applier; a member leaving
the group drops what an undecided DDL holds back. The real-server behaviour is
tests/e2e/test_ddl.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from replication.applier import Applier, ApplierFailed
from replication.certifier import Seq
from replication.engine import ApplyRemote, DdlDecided, ExecuteDdl
from replication.positions import Positions, PositionStore
from replication.protocol.errors import BackendError


@dataclass(eq=False)
class FakeConn:
    log: list[str]
    fail_on: bytes = b""
    closed: bool = False
    thread_id: int = 7

    async def execute(self, sql: str) -> None:
        self.log.append(sql)

    async def command(self, _cmd: int, body: bytes) -> None:
        if self.fail_on and body == self.fail_on:
            raise BackendError(1050, "42S01", "Table 'clash' already exists")
        self.log.append(body.decode())

    def close(self) -> None:
        self.closed = True


@dataclass
class Harness:
    applier: Applier
    log: list[str]
    local_runs: list[int] = field(default_factory=list)
    local_errno: int = 0


def make(fail_on: bytes = b"") -> Harness:
    log: list[str] = []

    async def connect() -> FakeConn:
        return FakeConn(log, fail_on)

    async def apply(conn: FakeConn, changes: bytes, *, head: tuple[str, ...] = (), tail: tuple[str, ...] = ()) -> None:
        for sql in head:  # the statements ApplyChanges runs around the changes, logged one by one
            await conn.execute(sql)
        log.append(f"apply {changes.decode()}")
        for sql in tail:
            await conn.execute(sql)

    h = Harness(Applier(connect, Positions(), PositionStore(), apply), log)  # type: ignore[arg-type]

    async def run_local(item: ExecuteDdl) -> int:
        h.local_runs.append(item.seq)
        return h.local_errno

    h.applier.run_local_ddl = run_local
    return h


def ddl(seq: int, local: bool = False, sql: bytes = b"CREATE TABLE t (id INT)") -> ExecuteDdl:
    return ExecuteDdl(Seq(seq), "origin", seq, "db", sql, local, (("sql_mode", "ANSI_QUOTES"), ("time_zone", "+05:00")))


async def until(cond: object, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.005)


def test_remote_ddl_waits_for_its_decision_then_runs_under_the_origins_variables() -> None:
    async def go() -> None:
        h = make()
        task = asyncio.ensure_future(h.applier.run())
        h.applier.submit(ddl(1))
        h.applier.submit(ApplyRemote(Seq(2), "origin", b"after", ()))
        await asyncio.sleep(0.05)
        assert 1 not in h.applier.positions.applied and "apply after" not in h.log  # held at the DDL
        h.applier.decide(DdlDecided(Seq(1), True))
        await until(lambda: 2 in h.applier.positions.applied)
        assert h.log.index("SET SESSION sql_mode = 'ANSI_QUOTES', time_zone = '+05:00'") < h.log.index("USE `db`") \
            < h.log.index("CREATE TABLE t (id INT)") < h.log.index("apply after")
        task.cancel()

    asyncio.run(go())


def test_ddl_that_failed_on_its_origin_is_skipped_but_recorded() -> None:
    async def go() -> None:
        h = make()
        task = asyncio.ensure_future(h.applier.run())
        h.applier.decide(DdlDecided(Seq(1), False, 1050))  # decided before the applier gets there
        h.applier.submit(ddl(1))
        await until(lambda: 1 in h.applier.positions.applied)
        assert "CREATE TABLE t (id INT)" not in h.log and "INSERT INTO grproxy.applied (seq) VALUES (1)" in h.log
        task.cancel()

    asyncio.run(go())


def test_local_ddl_runs_in_the_session_and_settles() -> None:
    async def go() -> None:
        h = make()
        task = asyncio.ensure_future(h.applier.run())
        h.applier.submit(ddl(1, local=True))
        assert await asyncio.wait_for(h.applier.ddl_settled(1), 2) is True  # ran: recorded at once
        assert h.local_runs == [1] and "CREATE TABLE t (id INT)" not in h.log
        h.local_errno = 1050  # failed in the session: settled once the group heard it
        h.applier.submit(ddl(2, local=True))
        settled = h.applier.ddl_settled(2)
        await until(lambda: h.local_runs == [1, 2])
        await asyncio.sleep(0.02)
        assert not settled.done()
        h.applier.decide(DdlDecided(Seq(2), False, 1050))
        assert await asyncio.wait_for(settled, 2) is True
        assert "CREATE TABLE t (id INT)" not in h.log and 2 in h.applier.positions.applied
        task.cancel()

    asyncio.run(go())


def test_ddl_failing_here_fails_the_applier() -> None:
    async def go() -> None:
        h = make(fail_on=b"CREATE TABLE clash (id INT)")
        h.applier.submit(ddl(1, sql=b"CREATE TABLE clash (id INT)"))
        h.applier.decide(DdlDecided(Seq(1), True))
        with pytest.raises(ApplierFailed, match="succeeded there but failed here"):
            await asyncio.wait_for(h.applier.run(), 2)
        assert 1 not in h.applier.positions.applied

    asyncio.run(go())


def test_ddl_that_failed_on_its_origin_after_changing_something_must_fail_alike_here() -> None:
    """The origin's server logged it with error 1050 (it changed something first): every other
    member runs it and must get the same error; success or another error fails the applier.
    The origin itself does not run it again."""
    async def go() -> None:
        h = make(fail_on=b"CREATE TABLE clash (id INT)")
        task = asyncio.ensure_future(h.applier.run())
        h.applier.submit(ddl(1, sql=b"CREATE TABLE clash (id INT)"))
        h.applier.decide(DdlDecided(Seq(1), True, 1050))
        await until(lambda: 1 in h.applier.positions.applied)  # failed here as there: recorded
        h.local_errno = 1050
        h.applier.submit(ddl(2, local=True, sql=b"CREATE TABLE clash (id INT)"))
        await until(lambda: h.local_runs == [2])
        h.applier.decide(DdlDecided(Seq(2), True, 1050))
        await until(lambda: 2 in h.applier.positions.applied)
        assert h.log.count("USE `db`") == 1  # seq 2 ran in its session only
        task.cancel()

        for errno in (1051, 1050):  # another error; success where the origin failed
            sql = b"CREATE TABLE clash (id INT)" if errno == 1051 else b"CREATE TABLE fine (id INT)"
            h = make(fail_on=b"CREATE TABLE clash (id INT)")
            h.applier.submit(ddl(1, sql=sql))
            h.applier.decide(DdlDecided(Seq(1), True, errno))
            with pytest.raises(ApplierFailed, match="failed there with error"):
                await asyncio.wait_for(h.applier.run(), 2)
            assert 1 not in h.applier.positions.applied

    asyncio.run(go())


def test_leaving_the_group_drops_the_undecided_ddl_and_what_follows() -> None:
    async def go() -> None:
        h = make()
        task = asyncio.ensure_future(h.applier.run())
        h.applier.submit(ApplyRemote(Seq(1), "origin", b"before", ()))
        h.applier.submit(ddl(2))
        h.applier.submit(ApplyRemote(Seq(3), "origin", b"after", ()))
        h.applier.submit(ddl(4, local=True))
        settled = h.applier.ddl_settled(4)
        await until(lambda: 1 in h.applier.positions.applied)
        await asyncio.sleep(0.02)
        assert h.applier.abandon_undecided() == 2  # seq 3 and 4 were queued behind seq 2
        assert await asyncio.wait_for(settled, 2) is False
        await asyncio.sleep(0.05)
        assert [s for s in (1, 2, 3, 4) if s in h.applier.positions.applied] == [1]
        assert len(h.applier) == 0 and h.local_runs == []
        # Recovery brings them back later, decided: they apply in order.
        h.applier.submit(ddl(2))
        h.applier.decide(DdlDecided(Seq(2), True, 0, origin_left=True))
        h.applier.submit(ApplyRemote(Seq(3), "origin", b"after", ()))
        await until(lambda: 3 in h.applier.positions.applied)
        assert h.log.index("CREATE TABLE t (id INT)") < h.log.index("apply after")
        task.cancel()

    asyncio.run(go())
