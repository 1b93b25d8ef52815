"""MariaDB UUID values through the binlog and the applier's BINLOG statements: what is exact, and the one gap.

MariaDB stores a UUID in one of two record layouts (segments reversed for "swappable" values:
version 1-5 with the variant bit set, so that time-based UUIDs sort by time) and logs it in
its in-memory (text) order. Every value the server takes as text has exactly one record, and
the binlog image applies back to it: `test_every_version_and_variant_applies_exactly`.

The gap: a 16-byte *binary* input is not validated the way text is. One whose version is ≥ 8
and whose variant byte is 0x01-0x80 (the combination text input refuses as impossible) is stored
as given and reads back — and is logged — as another value, whose own record is different. The
binlog therefore carries identical bytes for two different records, and no applier (MariaDB's
own replicas included: they unpack the in-memory form the same way) can restore the first: the
applied row holds the same value but CHECKSUM TABLE differs. The origin's table is itself
inconsistent then (an index lookup of the value it shows misses the row). This test pins that
fact so that a change of MariaDB's behaviour is noticed; see replication/rowimage.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator, Sequence

import pymysql
import pytest

from grproxy.mysqld import ServerHandle
from replication.binlog.events import Heartbeat
from replication.binlog.rows import fetch_weights, to_row_changes, weight_requests
from replication.binlog.stream import BinlogStream
from replication.binlog.transactions import Assembler
from replication.rowevents import RowEventApplier, ship
from replication.rowimage import RowChange
from replication.schema import SchemaCatalog
from test_binlog_support import HEARTBEAT_S, address, connect, replica_id, run_sql
from tables_support import open_conn

DB = "uuidimg"
TABLE = "CREATE TABLE {name} (id INT PRIMARY KEY, u UUID, KEY ku (u))"


@pytest.fixture(scope="module")
def servers(backend_factory: Callable[..., ServerHandle]) -> Iterator[tuple[ServerHandle, ServerHandle]]:
    a, b = backend_factory("uuid_a"), backend_factory("uuid_b")
    for handle in (a, b):
        run_sql(handle, None, [f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}"])
    yield a, b


def _checksum(handle: ServerHandle, table: str) -> int:
    c = connect(handle, DB)
    try:
        with c.cursor() as cur:
            cur.execute(f"CHECKSUM TABLE {table}")
            return int(cur.fetchone()[1])
    finally:
        c.close()


def _rows(handle: ServerHandle, table: str) -> list[tuple[object, ...]]:
    c = connect(handle, DB)
    try:
        with c.cursor() as cur:
            cur.execute(f"SELECT id, u FROM {table} ORDER BY id")
            return list(cur.fetchall())
    finally:
        c.close()


async def _replicate(a: ServerHandle, b: ServerHandle, table: str, statements: Sequence[str]) -> list[RowChange]:
    """Run `statements` on `a` (one transaction each), derive their row images from a's
    binlog, apply its row events on `b` as the applier does; returns the images."""
    stream = await BinlogStream.open(address(a), replica_server_id=replica_id(), heartbeat_s=HEARTBEAT_S)
    conn = await open_conn(a, DB)
    applier = await open_conn(b, DB)
    catalog = SchemaCatalog()
    assembler = Assembler(keep_events=True)
    events = RowEventApplier()
    out: list[RowChange] = []
    try:
        for sql in statements:
            await conn.execute(sql)
            txn = None
            while txn is None:
                event = await stream.next_event()
                if not isinstance(event, Heartbeat):
                    txn = assembler.feed(event, stream.last_raw)
                    if txn is not None and not txn.has_rows:
                        txn = None
            meta = (await catalog.snapshot(conn, [(DB, table)])).table(DB, table)
            assert meta is not None
            changes: list[RowChange] = []
            for t in txn.tables:
                weights = await fetch_weights(conn, weight_requests(meta, t.table_map, t.changes))
                changes += to_row_changes(meta, t.table_map, t.changes, weights)
            await events.apply(applier, ship(txn, "grproxy"), head=("BEGIN",), tail=("COMMIT",))
            out += changes
    finally:
        conn.close()
        applier.close()
        await stream.close()
    return out


def _uuid(rnd: random.Random, version: int, variant: int) -> bytes:
    u = bytearray(rnd.randbytes(16))
    u[6] = version << 4 | (u[6] & 0x0F)
    u[8] = variant << 4 | (u[8] & 0x0F)
    return bytes(u)


def _text(u: bytes) -> str:
    h = u.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _impossible(u: bytes) -> bool:
    """What MariaDB's text input refuses: version ≥ 8 with a variant byte of 0x01-0x80."""
    return bool(u[6] & 0x80) and 0x01 <= u[8] <= 0x80


def test_every_version_and_variant_applies_exactly(servers: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = servers
    for handle in (a, b):
        run_sql(handle, DB, ["DROP TABLE IF EXISTS exact", TABLE.format(name="exact")])
    rnd = random.Random(11)
    values = [_uuid(rnd, version, variant) for version in range(16) for variant in range(16) for _ in range(2)]
    values += [bytes(16), b"\xff" * 16, bytes.fromhex("00000000000010008000000000000000")]
    values = [u for u in values if not _impossible(u)]
    # Half as text, half as binary: both reach the one record of their value.
    rows = ", ".join(f"({i}, '{_text(u)}')" if i % 2 else f"({i}, X'{u.hex()}')" for i, u in enumerate(values))
    statements = [
        f"INSERT INTO exact VALUES {rows}",
        "UPDATE exact SET u = NULL WHERE id % 7 = 0",
        "UPDATE exact SET id = id + 10000 WHERE id % 5 = 0",
        "DELETE FROM exact WHERE id % 11 = 0",
    ]
    images = asyncio.run(_replicate(a, b, "exact", statements))
    assert len(images) > len(values)
    assert _rows(a, "exact") == _rows(b, "exact")
    assert _checksum(a, "exact") == _checksum(b, "exact")
    # Text input of an impossible value is refused: the gap below only opens through binary input.
    c = connect(a, DB)
    try:
        with c.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("INSERT INTO exact VALUES (-1, '11111111-2222-8333-0444-555555555555')")
        assert info.value.args[0] == 1292
    finally:
        c.close()


def test_binary_only_uuid_records_are_lost_by_the_binlog(servers: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = servers
    for handle in (a, b):
        run_sql(handle, DB, ["DROP TABLE IF EXISTS gap_binary", "DROP TABLE IF EXISTS gap_text",
                             TABLE.format(name="gap_binary"), TABLE.format(name="gap_text")])
    given = bytes.fromhex("153d28821562911b630348c7a421e829")  # version 9, variant byte 0x63
    assert _impossible(given)
    shown = "a421e829-48c7-6303-911b-153d28821562"  # what the server reads it back as
    images = asyncio.run(_replicate(a, b, "gap_binary", [f"INSERT INTO gap_binary VALUES (1, X'{given.hex()}')"]))
    images += asyncio.run(_replicate(a, b, "gap_text", [f"INSERT INTO gap_text VALUES (1, '{shown}')"]))
    # One value on the origin, two different records; the binlog carries the same image for both.
    assert _rows(a, "gap_binary") == _rows(a, "gap_text") == [(1, shown)]
    assert _checksum(a, "gap_binary") != _checksum(a, "gap_text")
    binary_image, text_image = images
    assert binary_image.after == text_image.after and binary_image.after_key == text_image.after_key
    # So the applied row holds the value's own record (as a MariaDB replica's would).
    assert _rows(b, "gap_binary") == [(1, shown)]
    assert _checksum(b, "gap_binary") == _checksum(b, "gap_text") == _checksum(a, "gap_text")
