"""SQL through member ports: the binlog write path, certification, applier and DDL ordering end to end.

Three members run in this test's event loop (real TCP group communication, one real MariaDB
backend each); clients are PyMySQL connections in threads, as an application would use.
"""

from __future__ import annotations

import time
import threading
from typing import Any

import pymysql
import pytest

from grproxy.mysqld import ServerHandle
from member_ports_support import LoopThread, PortGroup, backend_rows, reset_backends


@pytest.fixture(scope="module")
def backends(backend_factory) -> list[ServerHandle]:  # type: ignore[no-untyped-def]
    return [backend_factory(f"port-member{i}") for i in range(3)]


@pytest.fixture
def loop() -> Any:
    lt = LoopThread()
    yield lt
    lt.stop()


def test_single_primary_sql_end_to_end(backends: list[ServerHandle], loop: LoopThread) -> None:
    reset_backends(backends)
    group = PortGroup(backends, single_primary=True)
    loop.run(group.start())
    try:
        primary = next(i for i, m in enumerate(group.members) if m.may_write())
        secondary = next(i for i in range(3) if i != primary)
        c = group.connect(primary)
        with c.cursor() as cur:
            cur.execute("CREATE DATABASE app")
            cur.execute("CREATE TABLE app.acct (id INT PRIMARY KEY AUTO_INCREMENT, owner VARCHAR(20) UNIQUE, "
                        "balance DECIMAL(12,2) NOT NULL, touched DATETIME(6))")
            assert cur.execute("INSERT INTO app.acct (owner, balance, touched) VALUES ('ann', 100, NOW(6)), "
                               "('bob', 50, NOW(6))") == 2
            first_id = cur.lastrowid
            cur.execute("BEGIN")
            cur.execute("UPDATE app.acct SET balance = balance - 30 WHERE owner = 'ann'")
            cur.execute("UPDATE app.acct SET balance = balance + 30, touched = NOW(6) WHERE owner = 'bob'")
            cur.execute("COMMIT")
            cur.execute("INSERT INTO app.acct (owner, balance) VALUES ('cid', RAND() * 1000)")
            cur.execute("DELETE FROM app.acct WHERE owner = 'cid'")
            cur.execute("INSERT INTO app.acct (owner, balance) VALUES ('dee', 7)")
            cur.execute("ALTER TABLE app.acct ADD COLUMN note VARCHAR(10) DEFAULT 'x'")
            cur.execute("UPDATE app.acct SET note = 'late' WHERE owner = 'dee'")
            # A table without a primary key cannot be replicated: 3098, nothing written.
            cur.execute("CREATE TABLE app.nopk (v INT)")
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("INSERT INTO app.nopk VALUES (1)")
            assert info.value.args[0] == 3098
            cur.execute("SELECT COUNT(*) FROM app.nopk")
            assert cur.fetchone() == (0,)
            cur.execute("SELECT MEMBER_ID, MEMBER_STATE, MEMBER_ROLE FROM performance_schema.replication_group_members")
            table = cur.fetchall()
        c.close()
        assert first_id == 1
        assert sorted(r[1] for r in table) == ["ONLINE"] * 3
        assert sorted(r[2] for r in table) == ["PRIMARY", "SECONDARY", "SECONDARY"]

        s = group.connect(secondary)
        with s.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("INSERT INTO app.acct (owner, balance) VALUES ('eve', 1)")
            assert info.value.args[0] == 1290
            cur.execute("SELECT COUNT(*) FROM app.acct")  # reads are fine on a secondary
        s.close()

        loop.run(group.wait_converged())
        checksums = {backend_rows(b, "CHECKSUM TABLE app.acct")[0][1] for b in backends}
        assert len(checksums) == 1, checksums
        rows = backend_rows(backends[secondary], "SELECT owner, balance, note FROM app.acct ORDER BY id")
        assert [(r[0], float(r[1]), r[2]) for r in rows] == [("ann", 70.0, "x"), ("bob", 80.0, "x"), ("dee", 7.0, "late")]
    finally:
        loop.run(group.stop())


def test_multi_primary_conflict_gets_3101(backends: list[ServerHandle], loop: LoopThread) -> None:
    reset_backends(backends)
    group = PortGroup(backends, single_primary=False)
    loop.run(group.start())
    try:
        c0, c1 = group.connect(0), group.connect(1)
        with c0.cursor() as cur:
            cur.execute("CREATE DATABASE app")
            cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
            cur.execute("INSERT INTO app.t VALUES (1, 0)")
        loop.run(group.wait_converged())
        with c0.cursor() as a, c1.cursor() as b:
            a.execute("BEGIN")
            b.execute("BEGIN")
            a.execute("UPDATE app.t SET v = v + 1 WHERE id = 1")
            b.execute("UPDATE app.t SET v = v + 10 WHERE id = 1")
            outcomes = []
            for cur in (a, b):
                try:
                    cur.execute("COMMIT")
                    outcomes.append("ok")
                except pymysql.err.MySQLError as exc:
                    outcomes.append(exc.args[0])
        assert sorted(outcomes, key=str) == [3101, "ok"], outcomes
        loop.run(group.wait_converged())
        values = {backend_rows(b, "SELECT v FROM app.t WHERE id = 1")[0][0] for b in backends}
        assert len(values) == 1 and values <= {1, 10}
        # Auto-increment keys from different members never collide (increment 7, own offset).
        with c0.cursor() as a, c1.cursor() as b:
            a.execute("CREATE TABLE app.ai (id INT AUTO_INCREMENT PRIMARY KEY, who CHAR(2))")
            loop.run(group.wait_converged())
            for _ in range(3):
                a.execute("INSERT INTO app.ai (who) VALUES ('a')")
                b.execute("INSERT INTO app.ai (who) VALUES ('b')")
            a.execute("SELECT @@auto_increment_increment")
            assert a.fetchone() == (7,)
        # COM_RESET_CONNECTION (what pools send) keeps the member's own increment and offset.
        import mysql.connector
        mc = mysql.connector.connect(host=c0.host, port=c0.port, user="root", password="",
                                     collation="utf8mb4_general_ci", use_pure=True)
        try:
            cur = mc.cursor()
            cur.execute("SELECT @@auto_increment_increment, @@auto_increment_offset")
            before = cur.fetchall()
            mc.cmd_reset_connection()
            cur = mc.cursor()
            cur.execute("SELECT @@auto_increment_increment, @@auto_increment_offset")
            assert cur.fetchall() == before and before[0][0] == 7
        finally:
            mc.close()
        loop.run(group.wait_converged())
        for backend in backends:
            ids = [r[0] for r in backend_rows(backend, "SELECT id FROM app.ai")]
            assert len(ids) == len(set(ids)) == 6
        # DDL through one member, then a write of the new column through another: the second
        # member's cached table metadata must not be stale (its applier ran the DDL).
        with c1.cursor() as b:
            b.execute("UPDATE app.ai SET who = 'b2' WHERE who = 'b'")  # caches app.ai on member 1
        with c0.cursor() as a:
            a.execute("ALTER TABLE app.ai ADD COLUMN extra INT DEFAULT 0")
        loop.run(group.wait_converged())
        with c1.cursor() as b:
            b.execute("UPDATE app.ai SET extra = 42 WHERE who = 'b2'")
        loop.run(group.wait_converged())
        for backend in backends:
            assert backend_rows(backend, "SELECT COUNT(*) FROM app.ai WHERE extra = 42") == [(3,)]
        assert len({backend_rows(b, "CHECKSUM TABLE app.ai")[0][1] for b in backends}) == 1
        c0.close()
        c1.close()
    finally:
        loop.run(group.stop())


def test_prepared_statement_writes_replicate_exactly(backends: list[ServerHandle], loop: LoopThread) -> None:
    """Writes through server-side prepared statements (mysql-connector's prepared cursor, the
    binary protocol, long data for big values) replicate bit for bit."""
    import datetime
    import decimal

    import mysql.connector

    reset_backends(backends)
    group = PortGroup(backends, single_primary=True)
    loop.run(group.start())
    try:
        primary = next(i for i, m in enumerate(group.members) if m.may_write())
        c = group.connect(primary)
        with c.cursor() as cur:
            cur.execute("CREATE DATABASE app")
            cur.execute("CREATE TABLE app.p (id INT PRIMARY KEY, s VARCHAR(40), b MEDIUMBLOB, f DOUBLE, fl FLOAT, "
                        "d DECIMAL(20,6), dt DATETIME(6), da DATE, t TIME(6), u BIGINT UNSIGNED, n INT)")
        c.close()
        conn = mysql.connector.connect(host="127.0.0.1", port=group.servers[primary].port, user="root", password="",
                                       use_pure=True, autocommit=True, collation="utf8mb4_general_ci")
        cur = conn.cursor(prepared=True)
        rows = [
            (1, "héllo 😀", bytes(range(256)) * 300, 0.1, 1.5, decimal.Decimal("12345.678901"),
             datetime.datetime(2024, 2, 29, 23, 59, 58, 123456), datetime.date(1999, 12, 31),
             datetime.timedelta(hours=-5, microseconds=7), 18446744073709551615, None),
            (2, "it's \\ \"q\"", b"\x00\x00", -1e-300, -0.0, decimal.Decimal("-0.000001"),
             datetime.datetime(1970, 1, 1), datetime.date(2000, 1, 1), datetime.timedelta(0), 0, -7),
        ]
        for r in rows:
            cur.execute("INSERT INTO app.p VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", r)
        cur.execute("UPDATE app.p SET n = ?, s = CONCAT(s, ?) WHERE id = ?", (99, "!", 2))
        cur.execute("DELETE FROM app.p WHERE id = ? AND n = ?", (3, 1))  # matches nothing
        conn.close()
        loop.run(group.wait_converged())
        sums = {backend_rows(b, "CHECKSUM TABLE app.p")[0][1] for b in backends}
        assert len(sums) == 1, sums
        got = backend_rows(backends[(primary + 1) % 3], "SELECT id, s, LENGTH(b), n FROM app.p ORDER BY id")
        assert got == [(1, "héllo 😀", 256 * 300, None), (2, "it's \\ \"q\"!", 2, 99)]
    finally:
        loop.run(group.stop())


def test_deadlock_victim_commit_replicates_nothing(backends: list[ServerHandle], loop: LoopThread) -> None:
    """InnoDB rolls back a deadlock victim's whole transaction; if its client then sends
    COMMIT, nothing it wrote before the deadlock may be replicated (the backends diverged
    before this was handled)."""
    reset_backends(backends)
    group = PortGroup(backends, single_primary=True)
    loop.run(group.start())
    try:
        p = next(i for i, m in enumerate(group.members) if m.may_write())
        a, b = group.connect(p), group.connect(p)
        with a.cursor() as cur:
            cur.execute("CREATE DATABASE app")
            cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
            cur.execute("INSERT INTO app.t VALUES (1, 0), (2, 0), (3, 0)")
        errors: list[int] = []

        def second() -> None:
            with b.cursor() as cur:
                try:
                    cur.execute("UPDATE app.t SET v = 20 WHERE id = 1")  # waits for a, then deadlocks or not
                except pymysql.err.MySQLError as exc:
                    errors.append(exc.args[0])
                try:
                    cur.execute("COMMIT")
                except pymysql.err.MySQLError as exc:
                    errors.append(exc.args[0])

        with a.cursor() as ca, b.cursor() as cb:
            ca.execute("BEGIN")
            cb.execute("BEGIN")
            cb.execute("UPDATE app.t SET v = 30 WHERE id = 3")  # b's first change
            ca.execute("UPDATE app.t SET v = 10 WHERE id = 1")
            cb.execute("UPDATE app.t SET v = 21 WHERE id = 2")
            t = threading.Thread(target=second)
            t.start()
            time.sleep(0.5)
            try:
                ca.execute("UPDATE app.t SET v = 11 WHERE id = 2")  # closes the cycle
                ca.execute("COMMIT")
            except pymysql.err.MySQLError as exc:
                errors.append(exc.args[0])
                ca.execute("COMMIT")  # the victim's client commits anyway
            t.join(30)
        assert 1213 in errors, errors
        loop.run(group.wait_converged())
        rows = {tuple(backend_rows(bk, "SELECT id, v FROM app.t ORDER BY id")) for bk in backends}
        assert len(rows) == 1, rows  # identical everywhere
        (final,) = rows
        # Exactly one of the two transactions survived, entirely.
        assert final in (((1, 10), (2, 11), (3, 0)), ((1, 20), (2, 21), (3, 30))), final
        a.close()
        b.close()
    finally:
        loop.run(group.stop())
