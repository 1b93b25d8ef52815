"""Deferred commands on a real server (BackendConnection.defer): the member's XA START rides
with the transaction's first statement, in packet mode and in relay mode; a deferred command
that is dropped never runs; one that fails poisons the connection; BINLOG statements that apply
rows are answered without SERVER_MORE_RESULTS_EXISTS, so multi-statements around them are read
by count (`command_all(results=)`)."""

from __future__ import annotations

import asyncio
import base64

import pytest

from grproxy.mysqld import ServerHandle
from replication.protocol.backend import BackendConnection
from replication.protocol.constants import Command
from replication.protocol.errors import BackendLost
from replication.protocol.packets import frame
from replication.protocol.scanner import Expect, ResponseScanner
from tables_support import open_conn, run_sql

DB = "deferred"


@pytest.fixture(scope="module")
def server(backend: ServerHandle) -> ServerHandle:
    run_sql(backend, None, [f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}",
                            f"CREATE TABLE {DB}.t (id INT PRIMARY KEY) ENGINE=InnoDB"])
    return backend


class Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


async def _relay(conn: BackendConnection, sql: str) -> tuple[ResponseScanner | None, Sink]:
    sink = Sink()
    done: asyncio.Future[ResponseScanner | None] = asyncio.get_running_loop().create_future()
    conn.relay(frame(b"\x03" + sql.encode(), 0), Expect.QUERY, sink, done.set_result,
               lambda relayed: done.done() or done.set_result(None))
    return await done, sink


async def _xa_state(conn: BackendConnection) -> list[tuple[bytes | None, ...]]:
    return (await conn.execute("XA RECOVER")).rows


def test_a_deferred_xa_start_goes_with_the_next_statement(server: ServerHandle) -> None:
    async def go() -> None:
        conn = await open_conn(server, DB)
        other = await open_conn(server, DB)
        try:
            conn.defer(b"\x03XA START 'd1'")
            assert conn.deferred == 1
            scanner, sink = await _relay(conn, "INSERT INTO t VALUES (1)")  # relay mode
            assert scanner is not None and scanner.error is None and conn.deferred == 0
            assert sink.data[3] == 1 and sink.data[4] == 0  # only the INSERT's OK, numbered for the client
            (xa_end,) = [await conn.execute_all("XA END 'd1'; XA PREPARE 'd1'")]
            assert len(xa_end) == 2
            assert [bytes(r[3]) for r in await _xa_state(other)] == [b"d1"]  # it ran inside the XA
            await conn.execute("XA COMMIT 'd1'")
            conn.defer(b"\x03XA START 'd2'")
            r = await conn.execute("INSERT INTO t VALUES (2)")  # packet mode
            assert r.affected_rows == 1
            await conn.execute_all("XA END 'd2'; XA ROLLBACK 'd2'")
            assert (await conn.execute("SELECT COUNT(*) FROM t")).rows == [(b"1",)]
            conn.defer(b"\x03XA START 'd3'")
            conn.drop_deferred()  # never sent: the next statement runs outside any XA
            await conn.execute("INSERT INTO t VALUES (3)")
            assert (await other.execute("SELECT COUNT(*) FROM t")).rows == [(b"2",)]
        finally:
            conn.close()
            other.close()
            run_sql(server, DB, ["DELETE FROM t"])

    asyncio.run(go())


def test_a_deferred_command_that_fails_poisons_the_connection(server: ServerHandle) -> None:
    async def go() -> None:
        conn = await open_conn(server, DB)
        await conn.execute("XA START 'busy'")
        conn.defer(b"\x03XA START 'again'")  # XAER_RMFAIL: an XA transaction is active
        with pytest.raises(BackendLost, match="deferred"):
            await conn.execute("SELECT 1")
        assert conn.closed and conn.poisoned
        relay = await open_conn(server, DB)
        await relay.execute("XA START 'busy2'")
        relay.defer(b"\x03XA START 'again2'")
        scanner, sink = await _relay(relay, "SELECT 1")
        assert scanner is None and sink.data == b""  # lost, nothing relayed
        assert relay.closed

    asyncio.run(go())


def test_statements_after_a_binlog_statement_are_read_by_count(server: ServerHandle) -> None:
    """The server behaviour `command_all(results=)` works around: after a BINLOG statement that
    applied rows, its OK says no more results follow, yet the statements after it run and answer."""
    async def go() -> None:
        conn = await open_conn(server, DB)
        try:
            await conn.execute("FLUSH BINARY LOGS")
            name = (await conn.execute("SHOW MASTER STATUS")).rows[0][0]
            assert name is not None
            await conn.execute("INSERT INTO t VALUES (7)")
            await conn.execute("DELETE FROM t")
            await conn.execute("FLUSH BINARY LOGS")
            data = (server.datadir / name.decode()).read_bytes()
            events, p = [], 4
            while p < len(data):
                size = int.from_bytes(data[p + 9 : p + 13], "little")
                events.append(data[p : p + size])
                p += size
            fde = events[0]
            maps = [e for e in events if e[4] == 19]
            writes = [e for e in events if e[4] == 23]
            insert = maps[0] + writes[0]
            body = (b"BINLOG '" + base64.b64encode(fde) + b"';BEGIN;BINLOG '" + base64.b64encode(insert)
                    + b"';SELECT 5;COMMIT")
            results = await conn.command_all(Command.QUERY, body, results=5)
            assert [r.rows for r in results] == [[], [], [], [(b"5",)], []]
            assert not results[2].status & 0x0008  # the BINLOG's OK: "no more results", four were
            assert (await conn.execute("SELECT id FROM t")).rows == [(b"7",)]
        finally:
            conn.close()
        run_sql(server, DB, ["DELETE FROM t"])

    asyncio.run(go())
