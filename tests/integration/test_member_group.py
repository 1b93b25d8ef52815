"""Three members in one process: real MariaDB backends, real TCP group communication.

The row changes here are plain SQL (a test-only encoding of `apply_changes`): what is under
test is ordering, certification, the applier, positions and their persistence, not row images.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import pytest

from grproxy.config import Config, FrontendConfig, UserConfig
from grproxy.frontend import FrontendServer
from grproxy.mysqld import ServerHandle, free_port
from replication.certifier import KeyHash
from replication.gcs.interface import MemberId, MemberState
from replication.gcs.xcom.binding import XcomGroup, new_incarnation
from replication.gcs.xcom.core import CoreConfig
from replication.gcs.xcom.transport import TransportConfig
from replication.member import Member, MemberConfig
from replication.member_session import MemberSessionFactory
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.errors import CertificationConflict


async def sql_apply(conn: BackendConnection, changes: bytes, *, head: tuple[str, ...] = (),
                    tail: tuple[str, ...] = ()) -> None:
    for stmt in (*head, *changes.decode().split(";\n"), *tail):
        if stmt:
            await conn.execute(stmt)


def key(table: str, pk: int) -> KeyHash:
    return KeyHash(int.from_bytes(hashlib.blake2b(f"test.{table}.PRIMARY.{pk}".encode(), digest_size=8).digest(), "little"))


class Group:
    def __init__(self, backends: list[ServerHandle], single_primary: bool) -> None:
        self.backends = backends
        self.single_primary = single_primary
        self.members: list[Member] = []
        self.gcs: list[XcomGroup] = []
        self.servers: list[FrontendServer] = []

    async def start(self) -> None:
        ids = [MemberId(f"m{i}", f"127.0.0.1:{free_port()}", new_incarnation()) for i in range(len(self.backends))]
        fast = CoreConfig(heartbeat_interval_ms=200, suspicion_timeout_ms=1000, member_expel_timeout_ms=1000)
        for i, (mid, b) in enumerate(zip(ids, self.backends)):
            gcs = XcomGroup(mid, fast, TransportConfig(group_name="grproxy-test"))
            await gcs.start()
            port = free_port()  # joiners recover from a donor's member port
            cfg = MemberConfig(uuid=mid.uuid, backend=BackendAddress(b.host, b.port, b.user, b.password),
                               single_primary=self.single_primary, stable_report_interval_s=0.2,
                               member_address=f"127.0.0.1:{port}")
            member = Member(cfg, gcs, sql_apply)
            config = Config(frontend=FrontendConfig(host="127.0.0.1", port=port),
                            users=(UserConfig("root", "", admin=True),), backends=())
            server = FrontendServer(config, "10.11.0-MariaDB-grproxy", 0xFFFFFFFF,
                                    MemberSessionFactory(member))
            await server.start()
            self.servers.append(server)
            self.gcs.append(gcs)
            self.members.append(member)
            await member.start(bootstrap=i == 0, seeds=(ids[0],))
            await self.wait(lambda: all(len(m.engine.members) == i + 1 and m.state is MemberState.ONLINE
                                        for m in self.members), f"member {i} to join")
        await self.wait(lambda: all(
            all(r.state is MemberState.ONLINE for r in m.engine.members.values()) for m in self.members),
            "all ONLINE")

    async def wait(self, cond: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
        async with asyncio.timeout(timeout_s):
            while not cond():
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()
        for m in self.members:
            await m.stop()
        for g in self.gcs:
            await g.close()


async def write(member: Member, table: str, pk: int, value: str) -> int:
    conn = await member.connect()
    txn = member.open_txn()
    try:
        await conn.execute("BEGIN")
        stmt = f"INSERT INTO test.{table} (id, v) VALUES ({pk}, '{value}') ON DUPLICATE KEY UPDATE v = VALUES(v)"
        await conn.execute(stmt)
        try:
            seq = await member.certify_local(txn, (key(table, pk),), stmt.encode())
        except CertificationConflict:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute(member.store.record_sql(seq))
        await conn.execute("COMMIT")
        member.committed(seq)
        return seq
    finally:
        member.close_txn(txn)
        conn.close()


async def rows(member: Member, table: str) -> list[tuple[bytes | None, ...]]:
    conn = await member.connect()
    try:
        return (await conn.execute(f"SELECT id, v FROM test.{table} ORDER BY id")).rows
    finally:
        conn.close()


@pytest.fixture(scope="module")
def three_backends(backend_factory) -> list[ServerHandle]:  # type: ignore[no-untyped-def]
    handles = [backend_factory(f"member{i}") for i in range(3)]
    return handles


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def prepare(backends: list[ServerHandle], table: str) -> None:
    import pymysql

    for b in backends:
        c = pymysql.connect(host=b.host, port=b.port, user=b.user, password=b.password, autocommit=True)
        with c.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS test")
            cur.execute(f"DROP TABLE IF EXISTS test.{table}")
            cur.execute(f"CREATE TABLE test.{table} (id INT PRIMARY KEY, v VARCHAR(50))")
            cur.execute("DROP DATABASE IF EXISTS grproxy")
        c.close()


def test_writes_reach_every_backend_in_order(three_backends: list[ServerHandle]) -> None:
    prepare(three_backends, "t1")

    async def scenario() -> None:
        group = Group(three_backends, single_primary=True)
        await group.start()
        try:
            primary = next(m for m in group.members if m.may_write())
            assert sum(m.may_write() for m in group.members) == 1
            seqs = [await write(primary, "t1", i % 5, f"v{i}") for i in range(20)]
            assert seqs == sorted(seqs) and len(set(seqs)) == 20
            for m in group.members:
                await m.positions.wait_applied(seqs[-1], timeout_s=20)
            expected = await rows(primary, "t1")
            assert len(expected) == 5
            for m in group.members:
                assert await rows(m, "t1") == expected
            # Positions persisted with the data: the backend's own table says the same.
            for m in group.members:
                conn = await m.connect()
                loaded = await m.store.load(conn)
                conn.close()
                assert loaded.lwm >= seqs[-1]
        finally:
            await group.stop()

    run(scenario())


def test_concurrent_conflict_one_wins_with_3101(three_backends: list[ServerHandle]) -> None:
    prepare(three_backends, "t2")

    async def scenario() -> None:
        group = Group(three_backends, single_primary=False)
        await group.start()
        try:
            a, b = group.members[0], group.members[1]
            results = await asyncio.gather(write(a, "t2", 1, "from-a"), write(b, "t2", 1, "from-b"),
                                           return_exceptions=True)
            winners = [r for r in results if isinstance(r, int)]
            losers = [r for r in results if isinstance(r, CertificationConflict)]
            assert len(winners) == 1 and len(losers) == 1, results
            assert losers[0].errno == 3101
            for m in group.members:
                await m.positions.wait_applied(winners[0], timeout_s=20)
            values = {(await rows(m, "t2"))[0][1] for m in group.members}
            assert len(values) == 1  # every backend holds the winner's row
            # Non-conflicting concurrent writes from all three members all commit.
            seqs = await asyncio.gather(*(write(m, "t2", 10 + i, f"m{i}") for i, m in enumerate(group.members)))
            for m in group.members:
                await m.positions.wait_applied(max(seqs), timeout_s=20)
                assert len(await rows(m, "t2")) == 4
        finally:
            await group.stop()

    run(scenario())


def test_a_member_leaving_error_takes_its_backends_positions_as_the_truth(three_backends: list[ServerHandle]) -> None:
    """The backend died while the applier committed seq s: the COMMIT happened, its answer
    was lost. Before the new incarnation (autorejoin, START GROUP_REPLICATION) the member reads
    its positions back, so recovery does not fetch s again (a duplicate position: ERROR for
    ever) — and a seq the backend lost (no durable commits) is fetched again."""
    prepare(three_backends, "t3")

    async def scenario() -> None:
        group = Group(three_backends, single_primary=True)
        await group.start()
        try:
            primary = next(m for m in group.members if m.may_write())
            other = next(m for m in group.members if m is not primary)
            seqs = [await write(primary, "t3", i, f"v{i}") for i in range(3)]
            await other.positions.wait_applied(seqs[-1], timeout_s=20)
            other._fail("test: the backend went away while applying")
            conn = await other.connect()
            try:
                await conn.execute(other.store.record_sql(seqs[-1] + 1000))  # committed, answer lost
                await conn.execute(f"DELETE FROM grproxy.applied WHERE seq = {seqs[0]}")  # lost by the backend
            finally:
                conn.close()
            assert seqs[-1] + 1000 not in other.positions.applied and seqs[0] in other.positions.applied
            await other._resolve_local()
            assert seqs[-1] + 1000 in other.positions.applied
            assert seqs[0] not in other.positions.applied and seqs[1] in other.positions.applied
        finally:
            await group.stop()

    run(scenario())


def test_a_write_landing_just_after_the_start_check_is_caught(backend_factory) -> None:  # type: ignore[no-untyped-def]
    """At start the member checks the backend's writes outside grproxy's domain, then watches
    its binary log. A write made straight on the backend between the two must not slip through:
    the member refuses to start, or goes to ERROR once started, and marks the backend diverged."""
    import pymysql

    from replication.member import StartRefused

    b = backend_factory("stray-at-start")
    direct = pymysql.connect(host=b.host, port=b.port, user=b.user, password=b.password, autocommit=True)
    with direct.cursor() as cur:
        cur.execute("CREATE DATABASE app")
        cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY)")

    async def go() -> None:
        mid = MemberId("m0", f"127.0.0.1:{free_port()}", new_incarnation())
        gcs = XcomGroup(mid, CoreConfig(), TransportConfig(group_name="grproxy-test"))
        await gcs.start()
        member = Member(MemberConfig(uuid=mid.uuid, backend=BackendAddress(b.host, b.port, b.user, b.password)),
                        gcs, sql_apply)
        check = member.check_outside_writes

        async def check_then_a_stray_write(conn: BackendConnection) -> None:
            await check(conn)
            with direct.cursor() as cur:
                cur.execute("INSERT INTO app.t VALUES (1)")  # not through grproxy: the group never sees it

        member.check_outside_writes = check_then_a_stray_write  # type: ignore[method-assign]
        try:
            try:
                await member.start(bootstrap=True)
            except StartRefused as exc:
                assert "never saw" in str(exc)
            async with asyncio.timeout(10):
                while member.state is not MemberState.ERROR:
                    await asyncio.sleep(0.05)
            assert member.diverged is not None and "app.t" in member.diverged, member.diverged
        finally:
            await member.stop()
            await gcs.close()

    try:
        run(go())
    finally:
        direct.close()
