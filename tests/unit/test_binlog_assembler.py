"""The assembler and the row-image conversion on small hand-built events (no server).

Events are built from the records themselves (a two-column INT table, rows encoded by hand:
NULL bitmap + 4-byte little-endian values), so each grouping rule is checked in isolation:
XA PREPARE, the second phase, ordinary commits, standalone DDL, rows outside any group, a
logged ROLLBACK TO, the byte bound, decoder reuse across identical table maps, the member's mode
that decodes only prepared XA groups (the others on first read, to the same values), and
to_row_changes' update rules (equal images dropped, a moved primary key split in two).
"""

from __future__ import annotations

import struct

import pytest

from replication.binlog.events import (
    GTID_COMPLETED_XA, GTID_PREPARED_XA, GTID_STANDALONE, T_LONG, BinlogDecodeError, EventHeader, Gtid, Query,
    RowsEvent, TableMap, XaId, XaPrepare, XidEvent,
)
from replication.binlog.rows import NOT_LOGGED, BinlogRowChange, decoder_for, to_row_changes
from replication.binlog.transactions import Assembler
from replication.schema import TableMeta, make_column

H = EventHeader(0, 0, 1, 0, 100, 0)
XID = XaId(1, b"x1")


def table_map(table_id: int = 7) -> TableMap:
    return TableMap(H, table_id, 1, "db", "t", (T_LONG, T_LONG), (0, 0), (False, True), signedness=(False, False),
                    column_names=("id", "v"), primary_key=((0, 0),))


def row(*values: int | None) -> bytes:
    nulls = sum(1 << i for i, v in enumerate(values) if v is None)
    return bytes([nulls]) + b"".join(struct.pack("<i", v) for v in values if v is not None)


def rows_event(kind: str, *rows: bytes, table_id: int = 7, end: bool = True) -> RowsEvent:
    return RowsEvent(H, kind, table_id, 1 if end else 0, 2, b"\x03", b"\x03" if kind == "update" else None, b"".join(rows))


def gtid(seq: int, flags: int = 0, xid: XaId | None = None) -> Gtid:
    return Gtid(H, 0, seq, flags, None, xid)


def query(sql: bytes) -> Query:
    return Query(H, 1, 0, 0, "db", sql, b"")


def feed(assembler: Assembler, *events: object) -> list:
    return [t for t in (assembler.feed(e) for e in events) if t is not None]  # type: ignore[arg-type]


def test_groups() -> None:
    a = Assembler()
    tm = table_map()
    (prepared,) = feed(a, gtid(1, GTID_PREPARED_XA, XID), tm, rows_event("insert", row(1, 10), row(2, None)),
                       tm, rows_event("update", row(1, 10), row(1, 11)), query(b"XA END X'7831',X'',1"),
                       XaPrepare(H, False, XID))
    assert prepared.end == "xa_prepare" and prepared.xid == XID and prepared.row_count == 3
    (tr,) = prepared.tables  # consecutive events of one table merge
    assert tr.changes == (
        BinlogRowChange("insert", None, (1, 10)), BinlogRowChange("insert", None, (2, None)),
        BinlogRowChange("update", (1, 10), (1, 11)),
    )
    (second,) = feed(a, gtid(2, GTID_COMPLETED_XA, XID), query(b"XA COMMIT X'7831',X'',1"))
    assert (second.end, second.xid, second.has_rows) == ("xa_commit", XID, False)
    (rolled,) = feed(a, gtid(3, GTID_COMPLETED_XA, XID), query(b"xa rollback X'7831',X'',1"))
    assert rolled.end == "xa_rollback"
    (ordinary,) = feed(a, gtid(4), tm, rows_event("delete", row(2, None)), XidEvent(H, 99))
    assert ordinary.end == "xid" and ordinary.tables[0].changes == (BinlogRowChange("delete", (2, None), None),)
    (ddl,) = feed(a, gtid(5, GTID_STANDALONE), query(b"CREATE TABLE u (a INT)"))
    assert ddl.end == "standalone" and ddl.queries == (b"CREATE TABLE u (a INT)",)
    (nontx,) = feed(a, gtid(6), tm, rows_event("insert", row(3, 3)), query(b"COMMIT"))
    assert nontx.end == "commit" and nontx.row_count == 1
    (outside,) = feed(a, tm, rows_event("insert", row(4, 4)))
    assert outside.gtid is None and outside.end == "none"
    (savepoint,) = feed(a, gtid(7, GTID_PREPARED_XA, XID), query(b"SAVEPOINT s"), tm, rows_event("insert", row(5, 5)),
                        query(b"ROLLBACK TO s"), XaPrepare(H, False, XID))
    assert savepoint.rolled_back_to_savepoint
    assert not a.in_group and a.transactions == 8


def test_refusals_and_bounds() -> None:
    a = Assembler()
    with pytest.raises(BinlogDecodeError, match="unmapped"):
        feed(a, gtid(1), rows_event("insert", row(1, 1), table_id=8))
    assert not a.in_group  # reset: the stream must be reopened at a group boundary
    with pytest.raises(BinlogDecodeError, match="without its table map"):
        feed(a, rows_event("insert", row(1, 1)))
    with pytest.raises(BinlogDecodeError, match="overran|malformed|truncated"):
        feed(a, gtid(2), table_map(), rows_event("insert", row(1, 1)[:-1]))
    small = Assembler(transaction_bytes_max=12)
    tm = table_map()
    (big,) = feed(small, gtid(3, GTID_PREPARED_XA, XID), tm, rows_event("insert", row(1, 1)),
                  tm, rows_event("insert", row(2, 2)), XaPrepare(H, False, XID))
    assert big.oversize and big.tables == () and big.rows_bytes == 18 and big.has_rows
    with pytest.raises(ValueError):
        Assembler(transaction_bytes_max=0)


def test_rows_outside_xa_decoded_on_first_read() -> None:
    tm = table_map()
    events = [
        gtid(1, GTID_PREPARED_XA, XID), tm, rows_event("insert", row(1, 10), row(2, None)),
        tm, rows_event("update", row(1, 10), row(1, 11)), XaPrepare(H, False, XID),
        gtid(2), tm, rows_event("delete", row(2, None)), tm, rows_event("insert", row(5, 5)), XidEvent(H, 99),
        gtid(3), tm, rows_event("insert", row(3, 3)), query(b"COMMIT"),
        tm, rows_event("insert", row(4, 4)),
        gtid(4, GTID_COMPLETED_XA, XID), query(b"XA COMMIT X'7831',X'',1"),
    ]
    eager = feed(Assembler(), *events)
    lazy = feed(Assembler(decode_outside_xa=False), *events)
    assert [t.end for t in lazy] == ["xa_prepare", "xid", "commit", "none", "xa_commit"]
    assert lazy[0].tables[0].decoded and lazy[0].counted_rows == 3  # decoded as delivered
    assert not any(t.decoded for t in lazy[1].tables) and lazy[1].counted_rows is None
    assert [t.has_rows for t in lazy] == [t.has_rows for t in eager] == [True, True, True, True, False]
    assert [(t.schema, t.table) for t in lazy[1].tables] == [("db", "t")]  # names without decoding
    assert not any(t.decoded for t in lazy[1].tables)
    assert lazy == eager  # equality reads the changes: the same values, decoded on demand
    assert [t.row_count for t in lazy] == [t.row_count for t in eager] == [3, 2, 1, 1, 0]
    assert lazy[1].tables[0].changes == (BinlogRowChange("delete", (2, None), None),
                                         BinlogRowChange("insert", None, (5, 5)))


def test_lazy_rows_errors_where_read() -> None:
    a = Assembler(decode_outside_xa=False)
    (broken,) = feed(a, gtid(1), table_map(), rows_event("insert", row(1, 1)[:-1]), XidEvent(H, 1))
    assert broken.has_rows
    with pytest.raises(BinlogDecodeError, match="overran|malformed|truncated"):
        broken.tables[0].changes
    with pytest.raises(BinlogDecodeError, match="overran|malformed|truncated"):  # a prepared XA: from feed
        feed(a, gtid(2, GTID_PREPARED_XA, XID), table_map(), rows_event("insert", row(1, 1)[:-1]), XaPrepare(H, False, XID))
    small = Assembler(transaction_bytes_max=12, decode_outside_xa=False)
    (big,) = feed(small, gtid(3), table_map(), rows_event("insert", row(1, 1)), table_map(),
                  rows_event("insert", row(2, 2)), XidEvent(H, 3))
    assert big.oversize and big.tables == () and big.has_rows


def test_decoder_reused_for_an_identical_map() -> None:
    a = Assembler()
    first, again = table_map(), table_map()
    feed(a, gtid(1), first, rows_event("insert", row(1, 1)), XidEvent(H, 1))
    decoder = a._decoders[7]
    feed(a, gtid(2), again, rows_event("insert", row(2, 2)), XidEvent(H, 2))
    assert a._decoders[7] is decoder


def test_partial_images() -> None:
    tm = table_map()
    event = RowsEvent(H, "update", 7, 1, 2, b"\x01", b"\x02", row(1) + row(5))
    (change,) = decoder_for(tm).decode(event)
    assert change == BinlogRowChange("update", (1, NOT_LOGGED), (NOT_LOGGED, 5))


def test_to_row_changes_rules() -> None:
    meta = TableMeta.build("db", "t", [make_column("id", 1, "int(11)"), make_column("v", 2, "int(11)")], primary_key=["id"])
    tm = table_map()
    changes = [
        BinlogRowChange("insert", None, (1, 10)),
        BinlogRowChange("update", (1, 10), (1, 10)),  # equal images: nothing to replicate
        BinlogRowChange("update", (1, 10), (1, 11)),
        BinlogRowChange("update", (1, 11), (2, 11)),  # primary key moved: delete + insert
        BinlogRowChange("delete", (2, 11), None),
    ]
    out = to_row_changes(meta, tm, changes)
    assert [(c.op, c.pk, c.after, c.after_key, c.before_key) for c in out] == [
        ("upsert", (1,), (1, 10), (b"1",), None),
        ("upsert", (1,), (1, 11), (b"1",), (b"1",)),
        ("delete", (1,), None, None, (b"1",)),
        ("upsert", (2,), (2, 11), (b"2",), None),
        ("delete", (2,), None, None, (b"2",)),
    ]
    from replication.binlog.events import BinlogUnsupported

    with pytest.raises(BinlogUnsupported, match="absent"):
        to_row_changes(meta, tm, [BinlogRowChange("insert", None, (3, NOT_LOGGED))])
    other = TableMeta.build("db", "t", [make_column("id", 1, "int(11)"), make_column("w", 2, "int(11)")], primary_key=["id"])
    with pytest.raises(BinlogUnsupported, match="does not match"):
        to_row_changes(other, tm, changes)


def test_raw_events_are_kept_for_the_groups_decoded_eagerly() -> None:
    """keep_events: the Table_map and rows events' bytes as fed, and the last Format_description
    (what rowevents.ship sends); in the member's mode only for prepared XA groups."""
    from replication.binlog.events import FormatDescription

    tm = table_map()
    fde = FormatDescription(H, 4, "10.11", 0, 19, b"", 1)
    raw = {id(e): f"raw{i}".encode() for i, e in enumerate([fde, tm])}
    ins, upd = rows_event("insert", row(1, 10)), rows_event("delete", row(1, 10))
    raw[id(ins)], raw[id(upd)] = b"rawins", b"rawupd"
    events = [fde, gtid(1, GTID_PREPARED_XA, XID), tm, ins, XaPrepare(H, False, XID), gtid(2), tm, upd, XidEvent(H, 9)]
    member = Assembler(decode_outside_xa=False, keep_events=True)
    prepared, ordinary = [t for t in (member.feed(e, raw.get(id(e))) for e in events) if t is not None]
    assert prepared.format_description == b"raw0" and prepared.events == (b"raw1", b"rawins")
    assert ordinary.events == ()  # the applier's own commits: nothing kept
    every = Assembler(keep_events=True)
    _, ordinary = [t for t in (every.feed(e, raw.get(id(e))) for e in events) if t is not None]
    assert ordinary.events == (b"raw1", b"rawupd")
    assert [t.events for t in feed(Assembler(), *events)] == [(), ()]  # not asked for
    with pytest.raises(ValueError, match="raw bytes"):
        Assembler(keep_events=True).feed(fde)
    small = Assembler(transaction_bytes_max=6, keep_events=True)
    (big,) = [t for t in (small.feed(e, b"r") for e in (gtid(3, GTID_PREPARED_XA, XID), tm, ins, tm, upd,
                                                       XaPrepare(H, False, XID))) if t is not None]
    assert big.oversize and big.events == ()
