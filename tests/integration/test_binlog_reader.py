"""The binlog reader against a real MariaDB: what a member's XA transactions look like in it.

Each test runs XA transactions on a backend (XA START … XA END; XA PREPARE), awaits
`reader.prepared(xid)` and checks the rows it returns against the table: triggers' rows,
a procedure's rows, LOAD DATA LOCAL, a 20 MB row, a multi-statement, a savepoint rolled back,
two interleaved XA transactions, a binlog rotation between transactions, writes outside XA
reported to the hook, and every bound of the reader (waiters, unclaimed transactions,
transaction bytes) and a killed dump connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator

import pytest

from grproxy.mysqld import ServerHandle
from replication.binlog.events import XaId
from replication.binlog.reader import (
    BinlogReader, BinlogTransactionTooLarge, ReaderBusy, ReaderLimits, TransactionEvicted,
)
from replication.binlog.stream import BinlogPosition, BinlogStreamBroken
from replication.binlog.transactions import BinlogTransaction
from replication.protocol.backend import BackendConnection
from test_binlog_support import HEARTBEAT_S, address, connect, replica_id, run_sql
from tables_support import open_conn

DB = "blrd"
TIMEOUT_S = 30.0  # generous: a bound on a hang, never a measured time


@pytest.fixture(scope="module")
def server(backend_factory: Callable[..., ServerHandle]) -> Iterator[ServerHandle]:
    handle = backend_factory("binlog_reader")
    run_sql(handle, None, [f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB} CHARACTER SET utf8mb4"])
    run_sql(handle, DB, [
        "SET GLOBAL local_infile = 1",
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(100), n INT)",
        "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, t_id INT, what VARCHAR(10))",
        "CREATE TRIGGER t_ai AFTER INSERT ON t FOR EACH ROW INSERT INTO audit (t_id, what) VALUES (NEW.id, 'ins')",
        "CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB)",
        "CREATE PROCEDURE p(IN k INT) BEGIN INSERT INTO t2 VALUES (k, k * 2); UPDATE t2 SET v = v + 1 WHERE id = k; END",
        "CREATE TABLE t2 (id INT PRIMARY KEY, v INT)",
    ])
    yield handle


def _xid(name: str) -> XaId:
    return XaId(1, name.encode())


async def _xa(conn: BackendConnection, name: str, *statements: str) -> None:
    await conn.execute(f"XA START '{name}'")
    for sql in statements:
        await conn.execute_all(sql)
    await conn.execute(f"XA END '{name}'")
    await conn.execute(f"XA PREPARE '{name}'")


def _rows(txn: BinlogTransaction) -> list[tuple[str, str, object, object]]:
    return [(tr.table, ch.kind, ch.before, ch.after) for tr in txn.tables for ch in tr.changes]


def _run(server: ServerHandle, body: Callable[[BinlogReader, BackendConnection], object], **kwargs: object) -> object:
    async def go() -> object:
        reader = await BinlogReader.open(address(server), replica_server_id=replica_id(), heartbeat_s=HEARTBEAT_S,
                                         **kwargs)  # type: ignore[arg-type]
        conn = await open_conn(server, DB)
        try:
            return await body(reader, conn)  # type: ignore[misc]
        finally:
            conn.close()
            await reader.close()

    return asyncio.run(go())


def test_xa_transaction_with_trigger_rows(server: ServerHandle) -> None:
    async def body(reader: BinlogReader, conn: BackendConnection) -> None:
        run_sql(server, DB, ["DELETE FROM t", "DELETE FROM audit"])
        await _xa(conn, "trg", "INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20)")
        txn = await reader.prepared(_xid("trg"), TIMEOUT_S)
        await conn.execute("XA COMMIT 'trg'")
        assert txn.end == "xa_prepare" and txn.gtid is not None and txn.gtid.prepared_xa
        assert txn.gtid.xid == _xid("trg")
        rows = _rows(txn)
        assert [(r[0], r[1], r[3][:2]) for r in rows if r[0] == "t"] == [("t", "insert", (1, b"a")), ("t", "insert", (2, b"b"))]
        audit = [r[3][1:] for r in rows if r[0] == "audit"]
        assert audit == [(1, b"ins"), (2, b"ins")]
        assert txn.statements == (b"INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20)",)
        assert any(q.startswith(b"XA END") for q in txn.queries)

    _run(server, body)


def test_procedure_and_multi_statement(server: ServerHandle) -> None:
    async def body(reader: BinlogReader, conn: BackendConnection) -> None:
        run_sql(server, DB, ["DELETE FROM t2", "DELETE FROM t", "DELETE FROM audit"])
        await _xa(conn, "proc", "CALL p(7)")
        txn = await reader.prepared(_xid("proc"), TIMEOUT_S)
        await conn.execute("XA COMMIT 'proc'")
        assert _rows(txn) == [("t2", "insert", None, (7, 14)), ("t2", "update", (7, 14), (7, 15))]

        await _xa(conn, "multi", "INSERT INTO t2 VALUES (1, 1), (2, 2); UPDATE t2 SET v = v * 10 WHERE id <= 2; DELETE FROM t2 WHERE id = 1")
        txn = await reader.prepared(_xid("multi"), TIMEOUT_S)
        await conn.execute("XA ROLLBACK 'multi'")
        assert _rows(txn) == [
            ("t2", "insert", None, (1, 1)), ("t2", "insert", None, (2, 2)),
            ("t2", "update", (1, 1), (1, 10)), ("t2", "update", (2, 2), (2, 20)),
            ("t2", "delete", (1, 10), None),
        ]

    _run(server, body)


def test_savepoint_rollback_leaves_only_surviving_rows(server: ServerHandle) -> None:
    async def body(reader: BinlogReader, conn: BackendConnection) -> None:
        run_sql(server, DB, ["DELETE FROM t2"])
        await _xa(
            conn, "sp",
            "INSERT INTO t2 VALUES (1, 1)", "SAVEPOINT s1", "INSERT INTO t2 VALUES (2, 2)",
            "UPDATE t2 SET v = 100 WHERE id = 1", "ROLLBACK TO SAVEPOINT s1", "INSERT INTO t2 VALUES (3, 3)",
        )
        txn = await reader.prepared(_xid("sp"), TIMEOUT_S)
        await conn.execute("XA COMMIT 'sp'")
        assert _rows(txn) == [("t2", "insert", None, (1, 1)), ("t2", "insert", None, (3, 3))]
        assert not txn.rolled_back_to_savepoint

    _run(server, body)


def test_interleaved_xa_transactions_get_their_own_rows(server: ServerHandle) -> None:
    async def body(reader: BinlogReader, conn: BackendConnection) -> None:
        run_sql(server, DB, ["DELETE FROM t2"])
        other = await open_conn(server, DB)
        try:
            await conn.execute("XA START 'one'")
            await other.execute("XA START 'two'")
            await conn.execute("INSERT INTO t2 VALUES (10, 1)")
            await other.execute("INSERT INTO t2 VALUES (20, 2)")
            await conn.execute("UPDATE t2 SET v = 11 WHERE id = 10")
            await other.execute("UPDATE t2 SET v = 22 WHERE id = 20")
            for c, name in ((other, "two"), (conn, "one")):
                await c.execute(f"XA END '{name}'")
            # Prepared in the order two, one; asked for in the order one, two, concurrently.
            await other.execute("XA PREPARE 'two'")
            waiting = asyncio.ensure_future(reader.prepared(_xid("one"), TIMEOUT_S))
            await conn.execute("XA PREPARE 'one'")
            one = await waiting
            two = await reader.prepared(_xid("two"), TIMEOUT_S)
            await conn.execute("XA COMMIT 'one'")
            await other.execute("XA COMMIT 'two'")
        finally:
            other.close()
        assert _rows(one) == [("t2", "insert", None, (10, 1)), ("t2", "update", (10, 1), (10, 11))]
        assert _rows(two) == [("t2", "insert", None, (20, 2)), ("t2", "update", (20, 2), (20, 22))]
        assert reader.unclaimed == 0

    _run(server, body)


def test_load_data_local_and_a_20_mb_row(server: ServerHandle) -> None:
    blob = os.urandom(20 << 20)
    lines = "".join(f"{i}\tline {i}\t{i * 3}\n" for i in range(100, 400))
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        f.write(lines)
        path = f.name

    def load() -> None:
        conn = connect(server, DB, local_infile=True)
        try:
            with conn.cursor() as cur:
                cur.execute("XA START 'load'")
                cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE t FIELDS TERMINATED BY '\\t'")
                cur.execute("INSERT INTO big VALUES (1, %s)", (blob,))
                cur.execute("XA END 'load'")
                cur.execute("XA PREPARE 'load'")
                cur.execute("XA COMMIT 'load'")
        finally:
            conn.close()

    async def body(reader: BinlogReader, conn: BackendConnection) -> None:
        run_sql(server, DB, ["DELETE FROM t", "DELETE FROM audit", "DELETE FROM big"])
        await asyncio.to_thread(load)
        return await reader.prepared(_xid("load"), TIMEOUT_S)

    try:
        txn = _run(server, body, buffer_bytes_max=256 << 10)
    finally:
        os.unlink(path)
    assert isinstance(txn, BinlogTransaction)
    rows = _rows(txn)
    loaded = [r[3] for r in rows if r[0] == "t"]
    assert loaded == [(i, f"line {i}".encode(), i * 3) for i in range(100, 400)]
    assert len([r for r in rows if r[0] == "audit"]) == 300  # the trigger fired for each loaded row
    (big,) = [r[3] for r in rows if r[0] == "big"]
    assert big[0] == 1 and hashlib.sha256(big[1]).digest() == hashlib.sha256(blob).digest()


def test_stream_survives_rotation_and_reports_writes_outside_xa(server: ServerHandle) -> None:
    outside: list[BinlogTransaction] = []

    async def body(reader: BinlogReader, conn: BackendConnection) -> None:
        run_sql(server, DB, ["DELETE FROM t2"])
        first_file = reader.position.file
        await _xa(conn, "before_rotate", "INSERT INTO t2 VALUES (1, 1)")
        await reader.prepared(_xid("before_rotate"), TIMEOUT_S)
        await conn.execute("XA COMMIT 'before_rotate'")
        await conn.execute("FLUSH BINARY LOGS")
        await conn.execute("INSERT INTO t2 VALUES (2, 2)")  # autocommit: outside any XA
        await _xa(conn, "after_rotate", "INSERT INTO t2 VALUES (3, 3)")
        txn = await reader.prepared(_xid("after_rotate"), TIMEOUT_S)
        await conn.execute("XA COMMIT 'after_rotate'")
        assert _rows(txn) == [("t2", "insert", None, (3, 3))]
        assert reader.position.file != first_file
        assert reader.group_position.file == reader.position.file  # a whole group was read after the rotation
        return None

    _run(server, body, on_outside_xa=outside.append)
    stray = [t for t in outside if any(ch.kind == "insert" for tr in t.tables for ch in tr.changes)]
    assert len(stray) == 1 and stray[0].end == "xid" and _rows(stray[0]) == [("t2", "insert", None, (2, 2))]
    assert all(t.gtid is not None and not t.gtid.prepared_xa for t in outside)


def test_reader_bounds(server: ServerHandle) -> None:
    async def body(reader: BinlogReader, conn: BackendConnection) -> None:
        run_sql(server, DB, ["DELETE FROM t2", "DELETE FROM big"])
        # waiters_max = 1: a second concurrent waiter is refused at once.
        first = asyncio.ensure_future(reader.prepared(_xid("w1"), TIMEOUT_S))
        await asyncio.sleep(0)
        with pytest.raises(ReaderBusy):
            await reader.prepared(_xid("w2"), TIMEOUT_S)
        await _xa(conn, "w1", "INSERT INTO t2 VALUES (1, 1)")
        assert _rows(await first) == [("t2", "insert", None, (1, 1))]
        await conn.execute("XA COMMIT 'w1'")
        # unclaimed_max = 1: a second unclaimed transaction evicts the first.
        other = await open_conn(server, DB)
        try:
            await _xa(conn, "u1", "INSERT INTO t2 VALUES (2, 2)")
            await _xa(other, "u2", "INSERT INTO t2 VALUES (3, 3)")
            for _ in range(400):  # until the reader has read both (no time is asserted)
                if reader.unclaimed_evicted:
                    break
                await asyncio.sleep(0.05)
            assert _rows(await reader.prepared(_xid("u2"), TIMEOUT_S)) == [("t2", "insert", None, (3, 3))]
            with pytest.raises(TransactionEvicted):
                await reader.prepared(_xid("u1"), TIMEOUT_S)
            assert reader.unclaimed_evicted == 1
            await conn.execute("XA ROLLBACK 'u1'")
            await other.execute("XA ROLLBACK 'u2'")
        finally:
            other.close()
        # transaction_bytes_max: the transaction arrives without rows and is refused.
        await _xa(conn, "huge", "INSERT INTO big VALUES (1, REPEAT('x', 100000))")
        with pytest.raises(BinlogTransactionTooLarge):
            await reader.prepared(_xid("huge"), TIMEOUT_S)
        await conn.execute("XA ROLLBACK 'huge'")
        # A transaction that never comes: the waiter times out and is withdrawn.
        with pytest.raises(TimeoutError):
            await reader.prepared(_xid("never"), 0.2)
        assert reader.waiting == 0

    _run(server, body, limits=ReaderLimits(waiters_max=1, unclaimed_max=1, transaction_bytes_max=50_000))


def test_killed_dump_connection_fails_waiters(server: ServerHandle) -> None:
    async def body(reader: BinlogReader, conn: BackendConnection) -> None:
        waiting = asyncio.ensure_future(reader.prepared(_xid("orphan"), TIMEOUT_S))
        await asyncio.sleep(0)
        result = await conn.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
        for (thread_id,) in result.rows:
            await conn.execute(f"KILL {int(thread_id or 0)}")
        with pytest.raises(BinlogStreamBroken):
            await waiting
        with pytest.raises(BinlogStreamBroken):
            await reader.prepared(_xid("later"), TIMEOUT_S)
        assert reader.error is not None

    _run(server, body)


def test_prepared_before_and_after_the_event(server: ServerHandle) -> None:
    """The event may be read before prepared() is called: it waits unclaimed."""

    async def body(reader: BinlogReader, conn: BackendConnection) -> None:
        run_sql(server, DB, ["DELETE FROM t2"])
        await _xa(conn, "early", "INSERT INTO t2 VALUES (5, 5)")
        for _ in range(200):
            if reader.unclaimed:
                break
            await asyncio.sleep(0.05)
        assert reader.unclaimed == 1
        assert _rows(await reader.prepared(_xid("early"), TIMEOUT_S)) == [("t2", "insert", None, (5, 5))]
        await conn.execute("XA COMMIT 'early'")
        # XA ROLLBACK of an unclaimed transaction drops it from the reader.
        await _xa(conn, "dropped", "INSERT INTO t2 VALUES (6, 6)")
        await conn.execute("XA ROLLBACK 'dropped'")
        await _xa(conn, "sync", "INSERT INTO t2 VALUES (7, 7)")
        await reader.prepared(_xid("sync"), TIMEOUT_S)
        await conn.execute("XA COMMIT 'sync'")
        assert reader.unclaimed == 0

    _run(server, body)


def test_dump_needs_replication_privilege(server: ServerHandle) -> None:
    run_sql(server, None, [
        "CREATE USER IF NOT EXISTS 'noslave'@'%' IDENTIFIED BY 'pw'", "GRANT SELECT ON *.* TO 'noslave'@'%'",
    ])

    async def go() -> None:
        from replication.protocol.backend import BackendAddress
        from replication.protocol.errors import BackendError

        with pytest.raises((BackendError, BinlogStreamBroken)):
            reader = await BinlogReader.open(
                BackendAddress(server.host, server.port, "noslave", "pw"), replica_server_id=replica_id(),
                heartbeat_s=HEARTBEAT_S,
            )
            try:
                await reader.prepared(_xid("x"), TIMEOUT_S)
            finally:
                await reader.close()

    asyncio.run(go())


async def _binlog_end(conn: BackendConnection) -> BinlogPosition:
    row = (await conn.execute("SHOW MASTER STATUS")).rows[0]
    assert row[0] is not None and row[1] is not None
    return BinlogPosition(row[0].decode(), int(row[1]))


def test_xa_transactions_that_log_nothing(server: ServerHandle) -> None:
    """Read-only, no-op and temporary-table-only XA transactions write no binlog event at XA
    PREPARE: with the binlog end read after it, the reader answers an empty transaction."""

    async def body(reader: BinlogReader, conn: BackendConnection) -> None:
        run_sql(server, DB, ["DELETE FROM t2", "INSERT INTO t2 VALUES (1, 1)"])
        await conn.execute("CREATE TEMPORARY TABLE tmp (a INT)")
        cases = {
            "ro": ["SELECT * FROM t2"],
            "noop": ["UPDATE t2 SET v = v WHERE id = 1", "DELETE FROM t2 WHERE id = 999"],
            "tmp": ["INSERT INTO tmp VALUES (1), (2)"],
        }
        for name, statements in cases.items():
            await _xa(conn, name, *statements)
            end = await _binlog_end(conn)
            txn = await reader.prepared(_xid(name), TIMEOUT_S, logged_before=end)
            await conn.execute(f"XA COMMIT '{name}'")
            assert (txn.gtid, txn.row_count, txn.tables, txn.xid) == (None, 0, (), _xid(name)), name
        # A transaction that does write is still found, before its logged_before is reached or after.
        await _xa(conn, "writes", "INSERT INTO t2 VALUES (2, 2)")
        end = await _binlog_end(conn)
        txn = await reader.prepared(_xid("writes"), TIMEOUT_S, logged_before=end)
        await conn.execute("XA COMMIT 'writes'")
        assert _rows(txn) == [("t2", "insert", None, (2, 2))] and txn.gtid is not None
        with pytest.raises(ValueError, match="before the reader's start"):
            await reader.prepared(_xid("old"), TIMEOUT_S, logged_before=BinlogPosition(end.file, 4))

    _run(server, body)
