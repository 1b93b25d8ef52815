"""The group's form of a transaction's row events (replication/rowevents.py), on hand-built events.

Events are built byte by byte in binlog v4 layout (MariaDB: 6-byte table ids, v1 rows events,
CRC32 or none), so the checks are independent of the decoder under test: a shipment round-trips
and is cut at statement ends; every malformed shipment — truncated anywhere, bytes flipped,
events of other types, rows for a table not mapped in their statement, a last statement without
its end — is refused with RowEventsError and nothing else; `ship` leaves out the member's own
schema and moves the statement end with a valid CRC32; BINLOG statements are cut at statement
ends under the packet bound. Applying on a real server is tested in
tests/integration/test_binlog_images.py and the e2e write-path tests.
"""

from __future__ import annotations

import base64
import random
import struct
import zlib

import pytest

from replication.binlog.events import GTID_PREPARED_XA, EventHeader, Gtid, XaId, checksum_ok, decode_event
from replication.binlog.transactions import BinlogTransaction
from replication.rowevents import (
    RowEventsError, _binlog_statements, decode_row_events, encode_row_events, ship,
)

TABLE_MAP, WRITE, UPDATE, DELETE, FDE = 19, 23, 24, 25, 15


def header(type_code: int, size: int) -> bytes:
    return struct.pack("<IBIIIH", 1_700_000_000, type_code, 7, size, 0, 0)


def finish(type_code: int, body: bytes, crc: bool) -> bytes:
    size = 19 + len(body) + (4 if crc else 0)
    event = header(type_code, size) + body
    return event + struct.pack("<I", zlib.crc32(event)) if crc else event


def format_description(crc: bool) -> bytes:
    lengths = bytearray(171)
    for t in (TABLE_MAP, WRITE, UPDATE, DELETE):
        lengths[t - 1] = 8
    for t in (30, 31, 32):
        lengths[t - 1] = 10
    body = struct.pack("<H", 4) + b"10.11.19-MariaDB-log".ljust(50, b"\0") + struct.pack("<IB", 0, 19)
    body += bytes(lengths) + bytes((1 if crc else 0,))
    event = header(FDE, 19 + len(body) + 4) + body
    return event + (struct.pack("<I", zlib.crc32(event)) if crc else b"\0\0\0\0")


def table_map(table_id: int, schema: str = "db", table: str = "t", crc: bool = True) -> bytes:
    body = table_id.to_bytes(6, "little") + b"\x01\x00"
    for name in (schema, table):
        body += bytes((len(name),)) + name.encode() + b"\0"
    body += b"\x02" + bytes((3, 3)) + b"\x00" + b"\x02"  # two INT columns, no metadata, second nullable
    return finish(TABLE_MAP, body, crc)


def rows(kind: int, table_id: int, *values: int, end: bool = False, crc: bool = True) -> bytes:
    body = table_id.to_bytes(6, "little") + struct.pack("<H", 1 if end else 0) + b"\x02\x03"
    if kind == UPDATE:
        body += b"\x03"
    for v in values:
        body += b"\x00" + struct.pack("<ii", v, v)
    return finish(kind, body, crc)


def transaction(crc: bool = True) -> tuple[bytes, list[bytes]]:
    """Two statements: an insert into db.t (with a trigger-like write to db.audit), an update."""
    events = [table_map(22, crc=crc), table_map(23, table="audit", crc=crc), rows(WRITE, 22, 1, crc=crc),
              rows(WRITE, 23, 1, end=True, crc=crc), table_map(22, crc=crc), rows(UPDATE, 22, 1, 2, end=True, crc=crc)]
    return format_description(crc), events


@pytest.mark.parametrize("crc", [True, False])
def test_a_shipment_round_trips_and_is_cut_at_statement_ends(crc: bool) -> None:
    fde, events = transaction(crc)
    data = encode_row_events(fde, events)
    shipped = decode_row_events(data)
    assert shipped.format_description == fde and shipped.events == b"".join(events)
    assert shipped.checksum is crc
    first = sum(map(len, events[:4]))
    assert shipped.statement_ends == (first, len(shipped.events))
    assert decode_row_events(bytearray(data)) == shipped


def test_every_malformed_shipment_is_refused_cleanly() -> None:
    fde, events = transaction()
    good = encode_row_events(fde, events)
    for cut in range(len(good)):
        with pytest.raises(RowEventsError):
            decode_row_events(good[:cut])
    with pytest.raises(RowEventsError, match="magic"):
        decode_row_events(b"XX" + good[2:])
    with pytest.raises(RowEventsError, match="version"):
        decode_row_events(good[:2] + b"\x09" + good[3:])
    with pytest.raises(RowEventsError, match="magic"):
        decode_row_events("text")  # type: ignore[arg-type]
    rng = random.Random(5)
    for _ in range(3_000):  # flipped bytes: a valid shipment or RowEventsError, never anything else
        damaged = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            decode_row_events(bytes(damaged))
        except RowEventsError:
            pass


@pytest.mark.parametrize("events, why", [
    ([rows(WRITE, 22, 1, end=True)], "not mapped"),
    ([table_map(22), rows(WRITE, 22, 1)], "statement end"),
    ([table_map(22), rows(WRITE, 22, 1, end=True), rows(WRITE, 22, 2, end=True)], "not mapped"),
    ([table_map(22)], "statement end"),
    ([], "statement end"),
    ([finish(2, b"\0" * 20, True)], "not a table map or rows"),  # a Query event
])
def test_shipments_that_are_no_transaction_are_refused(events: list[bytes], why: str) -> None:
    with pytest.raises(RowEventsError, match=why):
        encode_row_events(format_description(True), events)


def test_the_format_description_is_checked() -> None:
    _, events = transaction()
    with pytest.raises(RowEventsError, match="format description"):
        encode_row_events(table_map(1), events)
    bad = bytearray(format_description(True))
    bad[19 + 57 + TABLE_MAP - 1] = 3  # a table map post-header of 3 bytes: no known layout
    bad[-4:] = struct.pack("<I", zlib.crc32(bytes(bad[:-4])))
    with pytest.raises(RowEventsError, match="post-header"):
        encode_row_events(bytes(bad), events)


def _txn(fde: bytes, events: list[bytes], schemas: tuple[str, ...]) -> BinlogTransaction:
    from replication.binlog.events import TableMap  # the shipped bytes are what matter; names for the fast path

    h = EventHeader(0, TABLE_MAP, 7, 0, 0, 0)
    tables = tuple(_TableRows(TableMap(h, i, 0, s, "t", (3,), (0,), (False,))) for i, s in enumerate(schemas))
    return BinlogTransaction(Gtid(h, 0, 1, GTID_PREPARED_XA, None, XaId(1, b"x")), "xa_prepare", XaId(1, b"x"),
                             tables, (), (), 1, 1, format_description=fde, events=tuple(events))  # type: ignore[arg-type]


class _TableRows:
    def __init__(self, table_map: object) -> None:
        self.table_map = table_map
        self.schema = table_map.schema  # type: ignore[attr-defined]


def test_ship_leaves_out_the_members_own_schema() -> None:
    fde = format_description(True)
    own = [table_map(30, schema="grproxy", table="applied"), rows(WRITE, 30, 9, end=True)]
    mixed = [table_map(22), table_map(30, schema="grproxy", table="applied"), rows(WRITE, 22, 1),
             rows(WRITE, 30, 9, end=True)]
    plain = [table_map(22), rows(UPDATE, 22, 1, 2, end=True)]
    assert ship(_txn(fde, own, ("grproxy",)), "grproxy") == b""
    data = ship(_txn(fde, plain + own + mixed, ("db", "grproxy")), "grproxy")
    shipped = decode_row_events(data)
    kept = shipped.events
    assert b"applied" not in kept
    assert len(shipped.statement_ends) == 2
    last = kept[shipped.statement_ends[0]:]  # the mixed statement: map of t, its rows, now its end
    ended = last[len(table_map(22)):]
    assert ended[19 + 6] & 1 and checksum_ok(ended)
    assert decode_event(ended, decode_event(fde, None, checksum=False), checksum=True)  # type: ignore[arg-type]
    assert ship(_txn(fde, plain, ("db",)), "grproxy") == encode_row_events(fde, plain)


def test_ship_refuses_a_transaction_read_without_its_events() -> None:
    with pytest.raises(RowEventsError, match="keep_events"):
        ship(_txn(format_description(True), [], ("db",)), "grproxy")


def test_binlog_statements_are_cut_at_statement_ends_under_the_bound() -> None:
    fde = format_description(True)
    statements = [[table_map(22), rows(WRITE, 22, i, end=True)] for i in range(10)]
    events = [e for s in statements for e in s]
    shipped = decode_row_events(encode_row_events(fde, events))
    (whole,) = _binlog_statements(shipped, 1 << 20)
    assert base64.b64decode(whole[len(b"BINLOG '"):-1]) == shipped.events
    one = len(b"".join(statements[0]))
    parts = _binlog_statements(shipped, (3 * one) * 4 // 3 + 40)
    assert len(parts) > 1
    decoded = [base64.b64decode(p[len(b"BINLOG '"):-1]) for p in parts]
    assert b"".join(decoded) == shipped.events
    for d in decoded:
        assert len(d) % one == 0  # whole statements only
    (alone,) = _binlog_statements(decode_row_events(encode_row_events(fde, statements[0])), 8)
    assert alone.startswith(b"BINLOG '")  # one statement larger than the bound still goes whole
