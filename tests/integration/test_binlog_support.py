"""Helpers of the binlog integration tests (no tests here).

`events_of(handle, run)` opens a replication stream at the end of the binlog, calls `run()`
(which writes through ordinary connections), writes a marker DDL, and returns every event the
stream delivered up to that marker. `transactions_of` does the same through the assembler.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence

import pymysql

from grproxy.mysqld import ServerHandle
from replication.binlog.events import Event, Heartbeat, Query
from replication.binlog.stream import BinlogStream
from replication.binlog.transactions import Assembler, BinlogTransaction
from replication.protocol.backend import BackendAddress

_ids = itertools.count(1)
HEARTBEAT_S = 0.5


def address(handle: ServerHandle) -> BackendAddress:
    return BackendAddress(handle.host, handle.port, "root", "")


def replica_id() -> int:
    return 1_000_000 + next(_ids)


def connect(handle: ServerHandle, database: str | None = None, **kwargs: object) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=handle.host, port=handle.port, user="root", password="", database=database, charset="utf8mb4",
        autocommit=True, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS, **kwargs,  # type: ignore[arg-type]
    )


def run_sql(handle: ServerHandle, database: str | None, statements: Sequence[str]) -> None:
    conn = connect(handle, database)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


async def read_until_marker(stream: BinlogStream, marker: str, events_max: int = 100_000) -> list[Event]:
    """Events up to (not including) the standalone Query whose text contains `marker`."""
    out: list[Event] = []
    needle = marker.encode()
    for _ in range(events_max):
        event = await stream.next_event()
        if isinstance(event, Query) and needle in event.sql:
            return out
        if not isinstance(event, Heartbeat):
            out.append(event)
    raise AssertionError(f"marker {marker} not seen in {events_max} events")


def events_of(handle: ServerHandle, run: Callable[[], None]) -> list[Event]:
    async def go() -> list[Event]:
        stream = await BinlogStream.open(address(handle), replica_server_id=replica_id(), heartbeat_s=HEARTBEAT_S)
        try:
            marker = f"binlog_marker_{next(_ids)}"
            await asyncio.to_thread(run)
            await asyncio.to_thread(run_sql, handle, None, [f"DROP TABLE IF EXISTS mysql.{marker}"])
            return await read_until_marker(stream, marker)
        finally:
            await stream.close()

    return asyncio.run(go())


def transactions_of(handle: ServerHandle, run: Callable[[], None], **assembler_kwargs: int) -> list[BinlogTransaction]:
    assembler = Assembler(**assembler_kwargs)
    out = []
    for event in events_of(handle, run):
        txn = assembler.feed(event)
        if txn is not None:
            out.append(txn)
    assert not assembler.in_group
    return out
