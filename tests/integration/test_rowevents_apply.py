"""RowEventApplier at the server's packet bound (replication/rowevents.py), on a real server.

A row larger than the receiving session's max_allowed_packet goes as two user-variable fragments
(`BINLOG @a, @b`) and applies exactly; one whose base64 does not fit in two packets is refused
with RowEventsError (the member goes to ERROR, naming max_allowed_packet), nothing applied. The
format description is sent once per connection. The events are read from the same server's
binlog and applied back after the row was deleted.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from grproxy.mysqld import ServerHandle
from replication.binlog.events import Heartbeat
from replication.binlog.stream import BinlogStream
from replication.binlog.transactions import Assembler, BinlogTransaction
from replication.rowevents import RowEventApplier, RowEventsError, ship
from tables_support import open_conn, run_sql
from test_binlog_support import HEARTBEAT_S, address, replica_id

DB = "rowevents_apply"
PACKET = 1 << 20  # the receiving sessions' max_allowed_packet


@pytest.fixture(scope="module")
def server(backend: ServerHandle) -> ServerHandle:
    run_sql(backend, None, [f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}",
                            f"CREATE TABLE {DB}.big (id INT PRIMARY KEY, body LONGBLOB) ENGINE=InnoDB"])
    return backend


async def _insert_and_read(server: ServerHandle, size: int) -> tuple[BinlogTransaction, bytes]:
    """Insert a row of `size` random bytes; its transaction as read from the binlog, and the row."""
    body = os.urandom(size)
    stream = await BinlogStream.open(address(server), replica_server_id=replica_id(), heartbeat_s=HEARTBEAT_S)
    conn = await open_conn(server, DB)
    try:
        await conn.execute(f"INSERT INTO big VALUES (1, X'{body.hex()}')")
        assembler = Assembler(keep_events=True)
        while True:
            event = await stream.next_event()
            if isinstance(event, Heartbeat):
                continue
            txn = assembler.feed(event, stream.last_raw)
            if txn is not None and txn.has_rows:
                break
        await conn.execute("DELETE FROM big")
        return txn, body
    finally:
        conn.close()
        await stream.close()


def test_a_row_over_the_packet_bound_goes_in_two_fragments(server: ServerHandle) -> None:
    async def go() -> None:
        txn, body = await _insert_and_read(server, 1_000_000)  # ~1.33 MB of base64 > 1 MiB
        admin = await open_conn(server, DB)
        await admin.execute(f"SET GLOBAL max_allowed_packet = {PACKET}")
        try:
            conn = await open_conn(server, DB)  # takes the small bound
            applier = RowEventApplier()
            await applier.apply(conn, ship(txn, "grproxy"), head=("BEGIN",), tail=("COMMIT",))
            assert applier.fragmented == 1 and applier.statements_sent == 1  # the format description
            (same,) = (await admin.execute(f"SELECT body = X'{body.hex()}' FROM big")).rows[0]
            assert same == b"1"
            await conn.execute("DELETE FROM big")
            sent = applier.statements_sent
            await applier.apply(conn, ship(txn, "grproxy"), head=("BEGIN",), tail=("ROLLBACK",))
            assert applier.statements_sent == sent  # the format description went once per connection
            conn.close()
        finally:
            await admin.execute("SET GLOBAL max_allowed_packet = 1073741824")  # grproxy.mysqld's
            admin.close()

    asyncio.run(go())


def test_a_row_over_two_packets_is_refused(server: ServerHandle) -> None:
    async def go() -> None:
        txn, _ = await _insert_and_read(server, 1_700_000)  # ~2.27 MB of base64 > two 1 MiB packets
        admin = await open_conn(server, DB)
        await admin.execute(f"SET GLOBAL max_allowed_packet = {PACKET}")
        try:
            conn = await open_conn(server, DB)
            with pytest.raises(RowEventsError, match="max_allowed_packet"):
                await RowEventApplier().apply(conn, ship(txn, "grproxy"), head=("BEGIN",), tail=("COMMIT",))
            await conn.execute("ROLLBACK")
            assert (await conn.execute("SELECT COUNT(*) FROM big")).rows == [(b"0",)]
            conn.close()
        finally:
            await admin.execute("SET GLOBAL max_allowed_packet = 1073741824")
            admin.close()

    asyncio.run(go())
