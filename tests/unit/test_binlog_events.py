"""The pure binlog decoder: real events from a server's binlog file, and small cases by hand.

Samples: a MariaDB server started by the test writes a binlog (DDL, ordinary and XA
transactions over a table of many types, an XA rollback); the closed file is read from disk and
split into events, which are decoded with no I/O at all. Properties checked on every sample:
the event decodes with its CRC32 verified, every strict prefix is refused with
BinlogDecodeError, and any flipped byte is refused (a checksum or a decode error, never another
exception). Values are checked against what the server stored. Hand-written cases cover the
formats' corners: packed integers, DECIMAL against an oracle encoder, TIME2 negative fractions,
compressed events refused.
"""

from __future__ import annotations

import ast
import struct
import zlib
from collections.abc import Callable
from decimal import Context, Decimal
from pathlib import Path

import pymysql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grproxy.mysqld import ServerHandle
from replication.binlog import rows as rows_mod
from replication.binlog.events import (
    HEADER_BYTES, AnnotateRows, BinlogChecksumError, BinlogDecodeError, BinlogUnsupported, EventType,
    FormatDescription, Gtid, RowsEvent, TableMap, XaId, XaPrepare, XidEvent, decode_event, read_packed,
)
from replication.binlog.rows import BinlogRowChange, decoder_for
from replication.binlog.transactions import Assembler

ROOT = Path(__file__).resolve().parents[2]
DB = "blunit"


def _split(data: bytes) -> list[bytes]:
    assert data[:4] == b"\xfebin"
    out, p = [], 4
    while p < len(data):
        size = struct.unpack_from("<I", data, p + 9)[0]
        out.append(data[p : p + size])
        p += size
    assert p == len(data)
    return out


@pytest.fixture(scope="module")
def samples(backend_factory: Callable[..., ServerHandle]) -> list[bytes]:
    """The events of one closed binlog file written by a real server."""
    handle = backend_factory("binlog_unit")
    conn = pymysql.connect(host=handle.host, port=handle.port, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("SHOW MASTER STATUS")
            file = cur.fetchone()[0]
            for sql in (
                f"CREATE DATABASE {DB}",
                f"CREATE TABLE {DB}.t (id INT PRIMARY KEY, u BIGINT UNSIGNED, d DECIMAL(20,6), f FLOAT, "
                "tm TIME(3), dt DATETIME(6), ts TIMESTAMP(2) NULL, y YEAR, c CHAR(4) CHARACTER SET latin1, "
                "bn BINARY(3), t TEXT, e ENUM('x','y'), s SET('a','b','c'), bt BIT(10), g POINT NULL)",
                f"INSERT INTO {DB}.t VALUES (1, 18446744073709551615, -1234567.000001, 0.5, '-10:00:00.250', "
                "'2024-05-06 07:08:09.123456', '2001-01-01 00:00:00.5', 1999, 'ab', X'01', 'text', 'y', 'a,c', b'1000000001', "
                "ST_GeomFromText('POINT(3 4)'))",
                f"INSERT INTO {DB}.t (id) VALUES (2)",
                "XA START 'unit'",
                f"UPDATE {DB}.t SET u = 0, d = 0.5 WHERE id = 1",
                f"DELETE FROM {DB}.t WHERE id = 2",
                "XA END 'unit'",
                "XA PREPARE 'unit'",
                "XA COMMIT 'unit'",
                "XA START 'gone', 'bq', 7",
                f"INSERT INTO {DB}.t (id) VALUES (3)",
                "XA END 'gone', 'bq', 7",
                "XA PREPARE 'gone', 'bq', 7",
                "XA ROLLBACK 'gone', 'bq', 7",
                "FLUSH BINARY LOGS",
            ):
                cur.execute(sql)
    finally:
        conn.close()
    return _split((handle.datadir / file).read_bytes())


def _decode_all(samples: list[bytes]) -> list[object]:
    fde = None
    out = []
    for raw in samples:
        event = decode_event(raw, fde, checksum=True)
        if isinstance(event, FormatDescription):
            fde = event
        out.append(event)
    return out


def test_every_sample_decodes_with_its_checksum(samples: list[bytes]) -> None:
    events = _decode_all(samples)
    assert isinstance(events[0], FormatDescription) and events[0].checksum_alg == 1
    assert events[0].server_version.startswith("10.11")
    kinds = {type(e).__name__ for e in events}
    assert {"Gtid", "Query", "TableMap", "RowsEvent", "XidEvent", "XaPrepare", "AnnotateRows", "Rotate"} <= kinds


def test_rows_decode_to_the_stored_values(samples: list[bytes]) -> None:
    events = _decode_all(samples)
    maps = {e.table_id: e for e in events if isinstance(e, TableMap)}
    changes: list[BinlogRowChange] = []
    for e in events:
        if isinstance(e, RowsEvent):
            changes += decoder_for(maps[e.table_id]).decode(e)
    first = changes[0].after
    assert first is not None
    point = first[14]
    assert isinstance(point, bytes) and point[:4] == b"\0\0\0\0" and struct.unpack("<dd", point[-16:]) == (3.0, 4.0)
    assert first[:14] == (
        1, 18446744073709551615, "-1234567.000001", 0.5, "-10:00:00.250", "2024-05-06 07:08:09.123456",
        first[6], 1999, b"ab", b"\x01\x00\x00", b"text", 2, 5, 0b1000000001,
    )
    assert isinstance(first[6], str) and first[6].endswith(".50")
    assert changes[1] == BinlogRowChange("insert", None, (2,) + (None,) * 14)
    update, delete = changes[2], changes[3]
    assert update.kind == "update" and update.after is not None and update.after[1:3] == (0, "0.500000")
    assert delete == BinlogRowChange("delete", (2,) + (None,) * 14, None)
    tm = maps[max(maps)]
    assert tm.column_names == ("id", "u", "d", "f", "tm", "dt", "ts", "y", "c", "bn", "t", "e", "s", "bt", "g")
    assert tm.primary_key == ((0, 0),)
    assert tm.enum_values is not None and tm.enum_values[11] == (b"x", b"y")
    assert tm.set_values is not None and tm.set_values[12] == (b"a", b"b", b"c")
    assert tm.signedness is not None and tm.signedness[:2] == (False, True)
    assert tm.collations is not None and tm.collations[8] == 8 and tm.collations[9] == 63  # latin1_swedish_ci, binary
    assert tm.geometry_types is not None and tm.geometry_types[14] == 1  # POINT
    assert tm.collations[10] == 45 and tm.collations[14] == 63  # MariaDB lists GEOMETRY among character columns


def test_xa_events(samples: list[bytes]) -> None:
    events = _decode_all(samples)
    xa_gtids = [e for e in events if isinstance(e, Gtid) and e.xid is not None]
    assert [(g.prepared_xa, g.completed_xa, g.xid) for g in xa_gtids] == [
        (True, False, XaId(1, b"unit")), (False, True, XaId(1, b"unit")),
        (True, False, XaId(7, b"gone", b"bq")), (False, True, XaId(7, b"gone", b"bq")),
    ]
    prepares = [e for e in events if isinstance(e, XaPrepare)]
    assert [(p.one_phase, p.xid) for p in prepares] == [(False, XaId(1, b"unit")), (False, XaId(7, b"gone", b"bq"))]


def test_assembler_groups_the_samples(samples: list[bytes]) -> None:
    assembler = Assembler()
    txns = [t for t in (assembler.feed(e) for e in _decode_all(samples)) if t is not None]  # type: ignore[arg-type]
    ends = [t.end for t in txns]
    assert ends == ["standalone", "standalone", "xid", "xid", "xa_prepare", "xa_commit", "xa_prepare", "xa_rollback"]
    prepared = txns[4]
    assert prepared.xid == XaId(1, b"unit") and [c.kind for tr in prepared.tables for c in tr.changes] == ["update", "delete"]
    assert prepared.statements[0].startswith(b"UPDATE")
    assert txns[6].row_count == 1 and txns[7].row_count == 0
    # A small bound: the transaction is tracked to its end, without its rows.
    small = Assembler(transaction_bytes_max=10)
    txns = [t for t in (small.feed(e) for e in _decode_all(samples)) if t is not None]  # type: ignore[arg-type]
    assert [t.oversize for t in txns if t.end == "xa_prepare"] == [True, False]
    assert txns[4].tables == () and txns[4].oversize


def test_a_gtid_inside_an_open_group_is_refused(samples: list[bytes]) -> None:
    events = _decode_all(samples)
    gtid = next(e for e in events if isinstance(e, Gtid))
    assembler = Assembler()
    assembler.feed(gtid)  # type: ignore[arg-type]
    with pytest.raises(BinlogDecodeError):
        assembler.feed(gtid)  # type: ignore[arg-type]
    assert not assembler.in_group


def test_every_strict_prefix_is_refused(samples: list[bytes]) -> None:
    events = _decode_all(samples)
    fde = events[0]
    assert isinstance(fde, FormatDescription)
    for raw in samples:
        for n in range(0, len(raw)):
            with pytest.raises(BinlogDecodeError):
                decode_event(raw[:n], fde, checksum=True)


def test_flipped_bytes_are_refused(samples: list[bytes]) -> None:
    events = _decode_all(samples)
    fde = events[0]
    assert isinstance(fde, FormatDescription)
    for raw in samples:
        for i in range(len(raw)):
            broken = bytearray(raw)
            broken[i] ^= 0x5A
            try:
                decode_event(bytes(broken), fde, checksum=True)
            except BinlogDecodeError:
                continue
            raise AssertionError(f"a flipped byte {i} of a {raw[4]} event was accepted")


def _with_crc(event: bytes) -> bytes:
    return event + struct.pack("<I", zlib.crc32(event))


def _event(type_code: int, body: bytes, *, crc: bool = True) -> bytes:
    size = HEADER_BYTES + len(body) + (4 if crc else 0)
    raw = struct.pack("<IBIIIH", 0, type_code, 1, size, 0, 0) + body
    return _with_crc(raw) if crc else raw


def test_small_cases() -> None:
    assert read_packed(b"\xfa", 0) == (250, 1)
    assert read_packed(b"\xfc\x01\x02", 0) == (0x0201, 3)
    assert read_packed(b"\xfd\x01\x02\x03", 0) == (0x030201, 4)
    assert read_packed(b"\xfe" + (2**64 - 1).to_bytes(8, "little"), 0) == (2**64 - 1, 9)
    with pytest.raises(BinlogDecodeError):
        read_packed(b"\xfb", 0)
    with pytest.raises(BinlogDecodeError):
        read_packed(b"\xfe\x00", 0)
    xid = _event(EventType.XID, struct.pack("<Q", 42))
    event = decode_event(xid, None, checksum=True)
    assert isinstance(event, XidEvent) and event.xid == 42
    with pytest.raises(BinlogChecksumError):
        decode_event(xid[:-1] + bytes([xid[-1] ^ 1]), None, checksum=True)
    assert isinstance(decode_event(_event(EventType.XID, struct.pack("<Q", 1), crc=False), None, checksum=False), XidEvent)
    for t in (EventType.WRITE_ROWS_COMPRESSED_V1, EventType.QUERY_COMPRESSED, EventType.DELETE_ROWS_COMPRESSED):
        with pytest.raises(BinlogUnsupported, match="compress"):
            decode_event(_event(t, b"\0" * 20), None, checksum=True)
    prep = decode_event(_event(EventType.XA_PREPARE, struct.pack("<BiII", 1, 5, 2, 1) + b"abc"), None, checksum=True)
    assert isinstance(prep, XaPrepare) and prep.one_phase and prep.xid == XaId(5, b"ab", b"c")
    with pytest.raises(BinlogDecodeError):
        decode_event(_event(EventType.XA_PREPARE, struct.pack("<BiII", 0, 5, 65, 0) + b"a" * 65), None, checksum=True)
    annotate = decode_event(_event(EventType.ANNOTATE_ROWS, b"INSERT 1"), None, checksum=True)
    assert isinstance(annotate, AnnotateRows) and annotate.sql == b"INSERT 1"


# --- value formats against naive oracles --------------------------------------------------------------


def _decimal_oracle(value: Decimal, precision: int, scale: int) -> bytes:
    """MySQL's binary DECIMAL, written from the format's description (strings/decimal.c)."""
    sign, digits, exp = value.quantize(Decimal(1).scaleb(-scale), context=Context(prec=100)).as_tuple()
    text = "".join(map(str, digits)).rjust(scale + 1, "0")
    whole, frac = text[: len(text) - scale] if scale else text, text[len(text) - scale :] if scale else ""
    intg = precision - scale
    whole = whole.rjust(intg, "0")[-intg:] if intg else ""
    sizes = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
    out = bytearray()
    lead = intg % 9
    if lead:
        out += int(whole[:lead]).to_bytes(sizes[lead], "big")
    for k in range(lead, intg, 9):
        out += int(whole[k : k + 9]).to_bytes(4, "big")
    for k in range(0, scale - scale % 9, 9):
        out += int(frac[k : k + 9]).to_bytes(4, "big")
    if scale % 9:
        out += int(frac[scale - scale % 9 :]).to_bytes(sizes[scale % 9], "big")
    if sign:
        out = bytearray(b ^ 0xFF for b in out)
    out[0] ^= 0x80
    return bytes(out)


@st.composite
def _decimals(draw: st.DrawFn) -> tuple[Decimal, int, int]:
    precision = draw(st.integers(1, 65))
    scale = draw(st.integers(0, min(precision, 30)))
    digits = draw(st.integers(0, 10**precision - 1))
    negative = draw(st.booleans()) and digits != 0
    return Decimal((1 if negative else 0, tuple(int(c) for c in str(digits)), -scale)), precision, scale


@settings(max_examples=300, deadline=None)
@given(_decimals())
def test_decimal_against_oracle(case: tuple[Decimal, int, int]) -> None:
    value, precision, scale = case
    raw = _decimal_oracle(value, precision, scale)
    text, end = rows_mod._decimal(precision, scale)(raw, 0)
    assert end == len(raw)
    # the server's text: no leading zeros, exactly `scale` fractional digits, no negative zero
    assert text == f"{value:f}"


def test_decimal_known_bytes() -> None:
    # The example of MySQL's documentation: 1234567890.1234 as DECIMAL(14,4).
    assert rows_mod._decimal(14, 4)(bytes.fromhex("810DFB38D204D2"), 0) == ("1234567890.1234", 7)
    assert rows_mod._decimal(14, 4)(bytes.fromhex("7EF204C72DFB2D"), 0) == ("-1234567890.1234", 7)


def _time2_oracle(negative: bool, h: int, m: int, s: int, us: int, fsp: int) -> bytes:
    """TIME2 from its description (sql-common/my_time.c: my_time_packed_to_binary)."""
    packed = ((h << 12 | m << 6 | s) << 24) + us
    if negative:
        packed = -packed
    n = (fsp + 1) // 2
    if n == 0:
        return ((packed >> 24) + 0x800000).to_bytes(3, "big")
    if n == 3:
        return (packed + 0x800000000000).to_bytes(6, "big")
    # C semantics: the integer part is an arithmetic shift (floor), the fraction a remainder
    # with the sign of the value, stored truncated to its width.
    intpart = packed >> 24
    frac = -((-packed) % (1 << 24)) if packed < 0 else packed % (1 << 24)
    unit = 10_000 if n == 1 else 100
    stored = int(frac / unit) & ((1 << (8 * n)) - 1)
    return (intpart + 0x800000).to_bytes(3, "big") + stored.to_bytes(n, "big")


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.integers(0, 838), st.integers(0, 59), st.integers(0, 59), st.integers(0, 6), st.data())
def test_time2_against_oracle(negative: bool, h: int, m: int, s: int, fsp: int, data: st.DataObject) -> None:
    unit = 10 ** (6 - fsp)
    us = data.draw(st.integers(0, 10**fsp - 1)) * unit if fsp else 0
    raw = _time2_oracle(negative, h, m, s, us, fsp)
    text, end = rows_mod._time2(fsp)(raw, 0)
    assert end == len(raw)
    zero = not (h or m or s or us)
    expected = ("-" if negative and not zero else "") + "%02d:%02d:%02d" % (h, m, s)
    if fsp:
        expected += "." + ("%06d" % us)[:fsp]
    assert text == expected


def test_binlog_package_stays_below_the_member() -> None:
    """DESIGN §2: the binlog layer knows nothing of members, sessions or the commit path."""
    forbidden = ("member", "member_session", "engine", "local_commit", "writeset", "applier", "router", "grproxy")
    bad = []
    for path in sorted((ROOT / "replication" / "binlog").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 2 and module.split(".")[0] in forbidden or module.split(".")[0] in ("router", "grproxy"):
                    bad.append(f"{path.name}: from {'.' * node.level}{module}")
                if node.level == 0 and module.startswith("replication.") and module.split(".")[1] in forbidden:
                    bad.append(f"{path.name}: from {module}")
    assert not bad, bad
