"""The replication stream against a real MariaDB: heartbeats, silence, buffering, positions.

* idle, the stream delivers heartbeats; a frozen server (SIGSTOP) makes the stream broken after
  its silence bound rather than hang;
* a consumer that stops reading gets the socket paused at the buffer bound, and every event
  decoded intact once it reads again;
* a stream registers as a replica (SHOW SLAVE HOSTS) and knows the GTID position it starts at;
  reopened at a position it reported it delivers the same events from there; a position the
  server does not have ends the dump with the server's error 1236;
* XA COMMIT … ONE PHASE commits rows no member prepared: the reader reports it with the writes
  outside XA;
* a session with binlog_row_image=MINIMAL logs partial rows: decoded, but refused as images.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator

import pytest

from grproxy.mysqld import ServerHandle
from replication.binlog.events import Event, Heartbeat, RowsEvent, XaId
from replication.binlog.reader import BinlogReader
from replication.binlog.stream import BinlogPosition, BinlogStream, BinlogStreamBroken
from replication.binlog.transactions import BinlogTransaction
from test_binlog_support import HEARTBEAT_S, address, read_until_marker, replica_id, run_sql
from tables_support import open_conn

DB = "blst"


@pytest.fixture(scope="module")
def server(backend_factory: Callable[..., ServerHandle]) -> Iterator[ServerHandle]:
    handle = backend_factory("binlog_stream")
    run_sql(handle, None, [f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}"])
    run_sql(handle, DB, ["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200))"])
    yield handle


def test_heartbeats_then_silence_breaks_the_stream(server: ServerHandle) -> None:
    async def go() -> None:
        stream = await BinlogStream.open(address(server), replica_server_id=replica_id(), heartbeat_s=0.2)
        try:
            seen: list[Event] = []
            while not any(isinstance(e, Heartbeat) for e in seen):
                seen.append(await stream.next_event())
            os.kill(server.pid, signal.SIGSTOP)
            try:
                with pytest.raises(BinlogStreamBroken, match="no binlog event nor heartbeat"):
                    while True:
                        await stream.next_event()
            finally:
                os.kill(server.pid, signal.SIGCONT)
            with pytest.raises(BinlogStreamBroken):
                await stream.next_event()  # broken stays broken
            assert stream.closed
        finally:
            await stream.close()

    asyncio.run(go())


def test_a_pause_of_this_process_is_not_silence_of_the_server(server: ServerHandle) -> None:
    """The member process paused (SIGSTOP, a stalled VM) longer than the silence bound while
    heartbeats pile up unread: on resume the overdue timer runs before the socket is read
    (uvloop runs timers first) — the stream must go on, not break (a member's writes failed
    with 3100 after a SIGSTOP of its process in the clone e2e test)."""
    import time

    import uvloop

    async def go() -> None:
        stream = await BinlogStream.open(address(server), replica_server_id=replica_id(), heartbeat_s=0.2)
        try:
            while not isinstance(await stream.next_event(), Heartbeat):
                pass
            waiting = asyncio.ensure_future(stream.next_event())
            await asyncio.sleep(0.05)  # the read is waiting for the server
            time.sleep(0.2 * 5 + 0.6)  # the whole loop frozen past the silence bound (5 heartbeats)
            event = await waiting
            assert isinstance(event, Event)
            assert not stream.closed
        finally:
            await stream.close()

    uvloop.run(go())


def test_a_slow_consumer_pauses_the_socket_at_the_bound(server: ServerHandle) -> None:
    bound = 64 << 10

    async def go() -> None:
        stream = await BinlogStream.open(address(server), replica_server_id=replica_id(), heartbeat_s=HEARTBEAT_S,
                                         buffer_bytes_max=bound)
        conn = await open_conn(server, DB)
        try:
            await conn.execute("DELETE FROM t")
            for i in range(400):  # ~400 transactions of ~1 KB events: well over the bound
                await conn.execute(f"INSERT INTO t VALUES ({i}, REPEAT('x', 200))")
            await conn.execute("DROP TABLE IF EXISTS mysql.slow_consumer_marker")
            dump = stream._conn  # the test looks inside: is the socket paused at the bound?
            for _ in range(200):
                if dump._paused:
                    break
                await asyncio.sleep(0.05)
            assert dump._paused
            assert len(dump._buf) < bound + (1 << 20)  # the bound plus what one socket read brings
            events = await read_until_marker(stream, "slow_consumer_marker")
            inserted = [e for e in events if isinstance(e, RowsEvent) and e.kind == "insert"]
            assert len(inserted) == 400
            assert not dump._paused
        finally:
            conn.close()
            await stream.close()

    asyncio.run(go())


def test_reopen_at_a_reported_position(server: ServerHandle) -> None:
    async def go() -> None:
        rid = replica_id()
        stream = await BinlogStream.open(address(server), replica_server_id=rid, heartbeat_s=HEARTBEAT_S)
        start = stream.position
        # Registered as a replica; the GTID position of the start is known.
        conn = await open_conn(server, DB)
        try:
            hosts = await conn.execute("SHOW SLAVE HOSTS")
            gtid_pos = (await conn.execute("SELECT @@gtid_binlog_pos")).rows[0][0]
        finally:
            conn.close()
        assert any(r[0] == str(rid).encode() and r[1] == b"grproxy-binlog-reader" for r in hosts.rows)
        assert stream.start_gtid_pos is not None and gtid_pos is not None
        assert stream.start_gtid_pos == gtid_pos.decode()
        run_sql(server, DB, ["INSERT INTO t VALUES (1000, 'a')", "INSERT INTO t VALUES (1001, 'b')",
                             "DROP TABLE IF EXISTS mysql.reopen_marker_1"])
        first = await read_until_marker(stream, "reopen_marker_1")
        await stream.close()
        # From the start again: the same events (after the artificial ROTATE and the FORMAT_DESCRIPTION).
        again = await BinlogStream.open(address(server), replica_server_id=replica_id(), position=start,
                                        heartbeat_s=HEARTBEAT_S)
        try:
            second = await read_until_marker(again, "reopen_marker_1")
        finally:
            await again.close()
        strip = [type(e).__name__ for e in first[2:]]
        assert strip == [type(e).__name__ for e in second[2:]]
        assert [e for e in first[2:]] == [e for e in second[2:]]
        with pytest.raises(BinlogStreamBroken) as info:
            bad = await BinlogStream.open(address(server), replica_server_id=replica_id(),
                                          position=BinlogPosition("binlog.999999", 4), heartbeat_s=HEARTBEAT_S)
            try:
                await bad.next_event()
            finally:
                await bad.close()
        assert info.value.errno == 1236

    asyncio.run(go())


def test_one_phase_commit_is_reported_outside_xa(server: ServerHandle) -> None:
    outside: list[BinlogTransaction] = []

    async def go() -> None:
        reader = await BinlogReader.open(address(server), replica_server_id=replica_id(), heartbeat_s=HEARTBEAT_S,
                                         on_outside_xa=outside.append)
        conn = await open_conn(server, DB)
        try:
            await conn.execute("XA START 'op'")
            await conn.execute("INSERT INTO t VALUES (2000, 'one phase')")
            await conn.execute("XA END 'op'")
            await conn.execute("XA COMMIT 'op' ONE PHASE")
            await conn.execute("XA START 'sync'")
            await conn.execute("INSERT INTO t VALUES (2001, 'sync')")
            await conn.execute("XA END 'sync'")
            await conn.execute("XA PREPARE 'sync'")
            await reader.prepared(XaId(1, b"sync"), 30)
            await conn.execute("XA ROLLBACK 'sync'")
        finally:
            conn.close()
            await reader.close()

    asyncio.run(go())
    ((txn),) = [t for t in outside if any(ch.after and ch.after[0] == 2000 for tr in t.tables for ch in tr.changes)]
    assert txn.end == "xid" and txn.xid is None  # MariaDB logs ONE PHASE as an ordinary transaction


def test_minimal_row_image_decodes_partially(server: ServerHandle) -> None:
    """binlog_row_image=MINIMAL (a misconfigured session) logs partial rows: they decode with
    NOT_LOGGED for the absent columns, and to_row_changes refuses to make images of them."""
    from replication.binlog.rows import NOT_LOGGED, to_row_changes
    from replication.binlog.events import BinlogUnsupported
    from replication.schema import SchemaCatalog

    async def go() -> None:
        outside: list[BinlogTransaction] = []
        reader = await BinlogReader.open(address(server), replica_server_id=replica_id(), heartbeat_s=HEARTBEAT_S,
                                         on_outside_xa=outside.append)
        conn = await open_conn(server, DB)
        try:
            await conn.execute("INSERT INTO t VALUES (3000, 'full')")
            await conn.execute("SET SESSION binlog_row_image = 'MINIMAL'")
            await conn.execute("UPDATE t SET v = 'minimal' WHERE id = 3000")
            await conn.execute("XA START 'sync'")
            await conn.execute("INSERT INTO t VALUES (3001, 'sync')")
            await conn.execute("XA END 'sync'")
            await conn.execute("XA PREPARE 'sync'")
            await reader.prepared(XaId(1, b"sync"), 30)
            await conn.execute("XA ROLLBACK 'sync'")
            meta = (await SchemaCatalog().snapshot(conn, [(DB, "t")])).table(DB, "t")
        finally:
            conn.close()
            await reader.close()
        (update,) = [t for t in outside if t.tables and t.tables[0].changes[0].kind == "update"]
        (tr,) = update.tables
        assert tr.changes[0].before == (3000, NOT_LOGGED) and tr.changes[0].after == (NOT_LOGGED, b"minimal")
        assert meta is not None
        with pytest.raises(BinlogUnsupported, match="absent"):
            to_row_changes(meta, tr.table_map, tr.changes)

    asyncio.run(go())
