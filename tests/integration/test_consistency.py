"""GR consistency levels on member ports, with one member's applier held back by
`LOCK TABLES t READ` on its backend (as MySQL's gr_consistent_reads_before test does); and
BEFORE's sync points shared by concurrent waits on a real group."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pymysql
import pytest

from grproxy.mysqld import ServerHandle
from test_member_ports import LoopThread, PortGroup, reset_backends


@pytest.fixture(scope="module")
def backends(backend_factory) -> list[ServerHandle]:  # type: ignore[no-untyped-def]
    return [backend_factory(f"cons-member{i}") for i in range(3)]


@pytest.fixture
def loop() -> Any:
    lt = LoopThread()
    yield lt
    lt.stop()


def _value(conn: pymysql.connections.Connection) -> Any:
    with conn.cursor() as cur:
        cur.execute("SELECT v FROM app.t WHERE id = 1")
        row = cur.fetchone()
        return row[0] if row else None


def test_levels_with_a_held_applier(backends: list[ServerHandle], loop: LoopThread) -> None:
    reset_backends(backends)
    group = PortGroup(backends, single_primary=True)
    loop.run(group.start())
    locker = None
    try:
        p = next(i for i, m in enumerate(group.members) if m.may_write())
        s = (p + 1) % 3
        primary, secondary = group.connect(p), group.connect(s)
        with primary.cursor() as cur:
            cur.execute("CREATE DATABASE app")
            cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
            cur.execute("INSERT INTO app.t VALUES (1, 0)")
        loop.run(group.wait_converged())

        # The variable itself: names, numbers, SELECT, errors.
        with secondary.cursor() as cur:
            cur.execute("SELECT @@group_replication_consistency")
            assert cur.fetchone() == ("EVENTUAL",)
            cur.execute("SET @@SESSION.group_replication_consistency = 4")
            cur.execute("SELECT @@SESSION.group_replication_consistency, @@GLOBAL.group_replication_consistency")
            assert cur.fetchone() == ("BEFORE_AND_AFTER", "EVENTUAL")
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("SET group_replication_consistency = 'SOMETIMES'")
            assert info.value.args[0] == 1231
            cur.execute("SET SESSION wait_timeout = 30, group_replication_consistency = 'EVENTUAL'")
            cur.execute("SELECT @@wait_timeout, @@group_replication_consistency")
            assert cur.fetchone() == (30, "EVENTUAL")

        # Hold the secondary's applier: its backend table is read-locked by another session.
        b = backends[s]
        locker = pymysql.connect(host=b.host, port=b.port, user=b.user, password=b.password, autocommit=True)
        with locker.cursor() as cur:
            cur.execute("LOCK TABLES app.t READ")
        with primary.cursor() as cur:
            cur.execute("UPDATE app.t SET v = 1 WHERE id = 1")  # EVENTUAL: returns after local commit

        # EVENTUAL on the held secondary reads the old value: the test is sensitive.
        assert _value(secondary) == 0
        # BEFORE with a short wait_timeout: 3781.
        with secondary.cursor() as cur:
            cur.execute("SET SESSION group_replication_consistency = 'BEFORE', wait_timeout = 1")
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("SELECT v FROM app.t WHERE id = 1")
            assert info.value.args[0] == 3781
            cur.execute("SET SESSION wait_timeout = 30")
        # The same through a server-side prepared statement (COM_STMT_EXECUTE, what sysbench
        # and mysql-connector's prepared cursors send): EVENTUAL reads the old value, BEFORE
        # is held and times out.
        import mysql.connector

        mc = mysql.connector.connect(host="127.0.0.1", port=group.servers[s].port, user="root", password="",
                                     collation="utf8mb4_general_ci", autocommit=True, use_pure=True)
        try:
            prepared = mc.cursor(prepared=True)
            prepared.execute("SELECT v FROM app.t WHERE id = ?", (1,))
            assert prepared.fetchall() == [(0,)]
            plain = mc.cursor()
            plain.execute("SET SESSION group_replication_consistency = 'BEFORE', wait_timeout = 1")
            with pytest.raises(mysql.connector.Error) as prepared_info:
                prepared.execute("SELECT v FROM app.t WHERE id = ?", (1,))
                prepared.fetchall()
            assert prepared_info.value.errno == 3781
        finally:
            mc.close()

        # BEFORE waits until the lock goes, then reads the new value.
        result: list[Any] = []
        reader = threading.Thread(target=lambda: result.append(_value(secondary)))
        reader.start()
        time.sleep(1.0)
        assert reader.is_alive() and not result, "a BEFORE read returned while the applier was held"
        with locker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        reader.join(30)
        assert result == [1]

        # AFTER: COMMIT returns only once every ONLINE member applied it.
        with locker.cursor() as cur:
            cur.execute("LOCK TABLES app.t READ")
        committed: list[float] = []

        def write_after() -> None:
            with primary.cursor() as cur:
                cur.execute("SET SESSION group_replication_consistency = 'AFTER'")
                cur.execute("UPDATE app.t SET v = 2 WHERE id = 1")
            committed.append(time.monotonic())

        writer = threading.Thread(target=write_after)
        writer.start()
        time.sleep(1.0)
        assert writer.is_alive() and not committed, "an AFTER commit returned before every member applied it"
        with locker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        writer.join(30)
        assert committed
        # Having returned, the write is visible on every member at once, even EVENTUAL ones.
        for i in range(3):
            c = group.connect(i)
            assert _value(c) == 2
            c.close()
        primary.close()
        secondary.close()
    finally:
        if locker is not None:
            locker.close()
        loop.run(group.stop())


def test_concurrent_before_waits_share_sync_points(backends: list[ServerHandle], loop: LoopThread) -> None:
    """20 BEFORE waits at once on a member cost 2 group round trips (the first caller's sync
    point, then one for everybody who came while it was in flight), and each still sees a
    transaction committed before it asked."""
    reset_backends(backends)
    group = PortGroup(backends, single_primary=True)
    loop.run(group.start())
    try:
        p = next(i for i, m in enumerate(group.members) if m.may_write())
        secondary = group.members[(p + 1) % 3]
        primary = group.connect(p)
        with primary.cursor() as cur:
            cur.execute("CREATE DATABASE app")
            cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
            cur.execute("INSERT INTO app.t VALUES (1, 0)")
        primary.close()

        async def burst() -> tuple[int, list[int], int]:
            committed = group.members[p].engine.certifier.last_seq  # the INSERT's seq or later
            before = secondary.stats_sync_broadcasts
            # All 20 join in one turn of the loop, before the first sync point can come back.
            seqs = await asyncio.gather(*(secondary.sync_point(30) for _ in range(20)))
            return committed, list(seqs), secondary.stats_sync_broadcasts - before

        committed, seqs, broadcasts = loop.run(burst())
        assert committed >= 3 and all(seq >= committed for seq in seqs)
        assert broadcasts == 2
    finally:
        loop.run(group.stop())
