"""Row values of rows events: decoding against a table map, and conversion to row images.

Theory of operation. A rows event holds, per row, a NULL bitmap over the columns present in the
event and then each present non-NULL value in the column's binlog encoding, which depends on the
column's type and table-map metadata (and, for integers, on signedness from the optional
metadata). `decoder_for(table_map)` compiles one small decoding function per column once per
table definition (cached by the caller: `RowDecoder` objects are immutable), and
`RowDecoder.decode(event)` turns a rows event into `BinlogRowChange`s.

Values come out already in `replication.rowimage`'s representation (`Form`), the one write-set
key material is derived from:

    integers, YEAR, BIT, SET (bitmask), ENUM (index)   int
    DECIMAL                                            the server's text ("-12.30")
    FLOAT, DOUBLE                                      float (FLOAT widened exactly)
    DATE, TIME, DATETIME                               the server's text, fsp digits kept
    TIMESTAMP                                          UNIX_TIMESTAMP text ("1700000000.120")
    CHAR, VARCHAR, TEXT (and MariaDB's JSON = LONGTEXT) raw bytes in the column's charset
    BINARY (re-padded with 0x00: the binlog strips them), VARBINARY, BLOB  raw bytes
    GEOMETRY                                           internal bytes (SRID + WKB)
    INET4, INET6, UUID (MariaDB)                       16/4 raw bytes here; their canonical
                                                       text (as the server prints them) in
                                                       to_row_changes

`to_row_changes` then maps a table's decoded changes onto its `RowShape` (columns by name from
the table map, generated columns dropped) and builds `RowChange`s: inserts and updates are upserts carrying the after-image and the key material of the after and
before rows, an update that moves the primary key is a delete and an upsert, deletes carry the
before row's key material. Key material of collated strings is the server's WEIGHT_STRING, which
no pure function can compute: `weight_requests` lists what is needed and `fetch_weights` asks the
backend in one round trip.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..rowimage import Form, RowChange, RowShape, Value, canonical_bytes
from .events import (
    T_BIT, T_BLOB, T_DATE, T_DATETIME, T_DATETIME2, T_DOUBLE, T_ENUM, T_FLOAT, T_GEOMETRY, T_INT24, T_JSON,
    T_LONG, T_LONG_BLOB, T_LONGLONG, T_MEDIUM_BLOB, T_NEWDATE, T_NEWDECIMAL, T_SET, T_SHORT, T_STRING, T_TIME,
    T_TIME2, T_TIMESTAMP, T_TIMESTAMP2, T_TINY, T_TINY_BLOB, T_VAR_STRING, T_VARCHAR, T_YEAR,
    BinlogDecodeError, BinlogUnsupported, RowsEvent, TableMap,
)

if TYPE_CHECKING:
    from ..protocol.backend import BackendConnection
    from ..schema import TableMeta

BINARY_COLLATION = 63
WEIGHTS_PER_QUERY_MAX = 500  # WEIGHT_STRING expressions in one SELECT of fetch_weights


class _NotLogged:
    """The value of a column absent from a rows event's column bitmap (binlog_row_image≠FULL)."""

    _instance: "_NotLogged | None" = None

    def __new__(cls) -> "_NotLogged":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_LOGGED"


NOT_LOGGED = _NotLogged()
Row = tuple[object, ...]  # Value per column of the table map, or NOT_LOGGED


@dataclass(frozen=True, slots=True)
class BinlogRowChange:
    """One row of a rows event: before (update, delete) and after (insert, update) images."""

    kind: str  # "insert" | "update" | "delete"
    before: Row | None
    after: Row | None


# --- column decoders --------------------------------------------------------------------------------

ColumnDecoder = Callable[[bytes, int], tuple[Value, int]]

_S8, _U8 = struct.Struct("<b"), struct.Struct("<B")
_S16, _U16 = struct.Struct("<h"), struct.Struct("<H")
_S32, _U32 = struct.Struct("<i"), struct.Struct("<I")
_S64, _U64 = struct.Struct("<q"), struct.Struct("<Q")
_F32, _F64 = struct.Struct("<f"), struct.Struct("<d")
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def _fixed(s: struct.Struct) -> ColumnDecoder:
    unpack, size = s.unpack_from, s.size

    def dec(buf: bytes, p: int) -> tuple[Value, int]:
        return unpack(buf, p)[0], p + size

    return dec


def _int24(unsigned: bool) -> ColumnDecoder:
    def dec(buf: bytes, p: int) -> tuple[Value, int]:
        return int.from_bytes(buf[p : p + 3], "little", signed=not unsigned), p + 3

    return dec


def _float(buf: bytes, p: int) -> tuple[Value, int]:
    return float(_F32.unpack_from(buf, p)[0]), p + 4


def _decimal(precision: int, scale: int) -> ColumnDecoder:
    intg = precision - scale
    intg0, intg0x = divmod(intg, 9)
    frac0, frac0x = divmod(scale, 9)
    lead = _DIG2BYTES[intg0x]
    tail = _DIG2BYTES[frac0x]
    size = lead + intg0 * 4 + frac0 * 4 + tail
    if size == 0:
        raise BinlogDecodeError(f"DECIMAL({precision},{scale})")

    def dec(buf: bytes, p: int) -> tuple[Value, int]:
        raw = bytearray(buf[p : p + size])
        if len(raw) != size:
            raise BinlogDecodeError("truncated DECIMAL")
        negative = not raw[0] & 0x80
        raw[0] ^= 0x80
        if negative:
            for i in range(size):
                raw[i] ^= 0xFF
        q = 0
        digits = []
        if lead:
            digits.append(str(int.from_bytes(raw[:lead], "big")))
            q = lead
        for _ in range(intg0):
            digits.append("%09d" % int.from_bytes(raw[q : q + 4], "big"))
            q += 4
        whole = "".join(digits).lstrip("0") or "0"
        if scale:
            fr = []
            for _ in range(frac0):
                fr.append("%09d" % int.from_bytes(raw[q : q + 4], "big"))
                q += 4
            if tail:
                fr.append(str(int.from_bytes(raw[q : q + tail], "big")).zfill(frac0x))
            text = whole + "." + "".join(fr)
        else:
            text = whole
        if negative and text.strip("0.") != "":
            text = "-" + text
        return text, p + size

    return dec


def _bit(bits: int, nbytes: int) -> ColumnDecoder:
    size = nbytes + (1 if bits else 0)

    def dec(buf: bytes, p: int) -> tuple[Value, int]:
        return int.from_bytes(buf[p : p + size], "big"), p + size

    return dec


def _date(buf: bytes, p: int) -> tuple[Value, int]:
    v = buf[p] | buf[p + 1] << 8 | buf[p + 2] << 16
    return "%04d-%02d-%02d" % (v >> 9, (v >> 5) & 15, v & 31), p + 3


def _year(buf: bytes, p: int) -> tuple[Value, int]:
    v = buf[p]
    return (1900 + v if v else 0), p + 1


def _frac_size(fsp: int) -> int:
    return (fsp + 1) // 2


def _frac_text(us: int, fsp: int) -> str:
    return "." + ("%06d" % us)[:fsp] if fsp else ""


def _frac(buf: bytes, p: int, fsp: int) -> int:
    """Microseconds of a TIME2/DATETIME2/TIMESTAMP2 fractional part (big-endian, fsp-sized)."""
    n = (fsp + 1) // 2
    if n == 0:
        return 0
    v = int.from_bytes(buf[p : p + n], "big")
    return v * (10_000, 100, 1)[n - 1]


def _datetime2(fsp: int) -> ColumnDecoder:
    size = 5 + _frac_size(fsp)

    def dec(buf: bytes, p: int) -> tuple[Value, int]:
        packed = int.from_bytes(buf[p : p + 5], "big") - 0x8000000000
        ymd, hms = packed >> 17, packed & 0x1FFFF
        ym = ymd >> 5
        text = "%04d-%02d-%02d %02d:%02d:%02d" % (ym // 13, ym % 13, ymd & 31, hms >> 12, (hms >> 6) & 63, hms & 63)
        return text + _frac_text(_frac(buf, p + 5, fsp), fsp), p + size

    return dec


def _timestamp2(fsp: int) -> ColumnDecoder:
    size = 4 + _frac_size(fsp)

    def dec(buf: bytes, p: int) -> tuple[Value, int]:
        seconds = int.from_bytes(buf[p : p + 4], "big")
        return str(seconds) + _frac_text(_frac(buf, p + 4, fsp), fsp), p + size

    return dec


def _time2(fsp: int) -> ColumnDecoder:
    n = _frac_size(fsp)
    size = 3 + n

    def dec(buf: bytes, p: int) -> tuple[Value, int]:
        # The value is (intpart << 24) + fraction stored with an offset so that it sorts as
        # unsigned bytes; a negative time's fraction borrows from the integer part.
        whole = int.from_bytes(buf[p : p + size], "big")
        if n == 3:
            packed = whole - 0x800000000000
        else:
            intpart = (whole >> (8 * n)) - 0x800000
            frac = whole & ((1 << (8 * n)) - 1)
            if intpart < 0 and frac:
                intpart += 1
                frac -= 1 << (8 * n)
            packed = (intpart << 24) + frac * (10_000 if n == 1 else 100) if n else intpart << 24
        sign = "-" if packed < 0 else ""
        packed = abs(packed)
        hms, us = packed >> 24, packed & 0xFFFFFF
        text = "%s%02d:%02d:%02d" % (sign, (hms >> 12) & 0x3FF, (hms >> 6) & 63, hms & 63)
        return text + _frac_text(us, fsp), p + size

    return dec


def _timestamp_v1(buf: bytes, p: int) -> tuple[Value, int]:
    return str(_U32.unpack_from(buf, p)[0]), p + 4


def _datetime_v1(buf: bytes, p: int) -> tuple[Value, int]:
    v = _U64.unpack_from(buf, p)[0]
    d, t = divmod(v, 1_000_000)
    return "%04d-%02d-%02d %02d:%02d:%02d" % (d // 10000, d // 100 % 100, d % 100, t // 10000, t // 100 % 100, t % 100), p + 8


def _time_v1(buf: bytes, p: int) -> tuple[Value, int]:
    v = int.from_bytes(buf[p : p + 3], "little", signed=True)
    sign = "-" if v < 0 else ""
    v = abs(v)
    return "%s%02d:%02d:%02d" % (sign, v // 10000, v // 100 % 100, v % 100), p + 3


def _string(prefix: int, pad_to: int = 0) -> ColumnDecoder:
    if prefix == 1 and not pad_to:  # CHAR / VARCHAR up to 255 bytes: the common case, kept lean

        def short(buf: bytes, p: int) -> tuple[Value, int]:
            end = p + 1 + buf[p]
            if end > len(buf):
                raise BinlogDecodeError("truncated string value")
            return buf[p + 1 : end], end

        return short

    def dec(buf: bytes, p: int) -> tuple[Value, int]:
        n = int.from_bytes(buf[p : p + prefix], "little")
        start = p + prefix
        end = start + n
        if end > len(buf):
            raise BinlogDecodeError("truncated string value")
        value = buf[start:end]
        if pad_to and n < pad_to:
            value += b"\0" * (pad_to - n)  # BINARY(n): the binlog drops trailing 0x00 bytes
        return value, end

    return dec


def _little(size: int) -> ColumnDecoder:
    def dec(buf: bytes, p: int) -> tuple[Value, int]:
        return int.from_bytes(buf[p : p + size], "little"), p + size

    return dec


def column_decoder(table_map: TableMap, i: int) -> ColumnDecoder:
    """The decoder of column `i` of `table_map`. Raises BinlogUnsupported for what it cannot do."""
    t = table_map.column_types[i]
    meta = table_map.column_meta[i]
    where = f"column {i} of {table_map.schema}.{table_map.table}"
    if t in (T_TINY, T_SHORT, T_INT24, T_LONG, T_LONGLONG):
        sign = table_map.signedness[i] if table_map.signedness is not None else None
        if sign is None:
            raise BinlogUnsupported(f"{where}: integer without signedness metadata (needs binlog_row_metadata=FULL)")
        if t == T_INT24:
            return _int24(sign)
        s = {T_TINY: (_S8, _U8), T_SHORT: (_S16, _U16), T_LONG: (_S32, _U32), T_LONGLONG: (_S64, _U64)}[t][sign]
        return _fixed(s)
    if t == T_FLOAT:
        return _float
    if t == T_DOUBLE:
        return _fixed(_F64)
    if t == T_NEWDECIMAL:
        assert isinstance(meta, tuple)
        return _decimal(*meta)
    if t == T_BIT:
        assert isinstance(meta, tuple)
        return _bit(*meta)
    if t in (T_DATE, T_NEWDATE):
        return _date
    if t == T_YEAR:
        return _year
    if t == T_TIME2:
        return _time2(int(meta))  # type: ignore[arg-type]
    if t == T_DATETIME2:
        return _datetime2(int(meta))  # type: ignore[arg-type]
    if t == T_TIMESTAMP2:
        return _timestamp2(int(meta))  # type: ignore[arg-type]
    if t == T_TIMESTAMP:
        return _timestamp_v1
    if t == T_DATETIME:
        return _datetime_v1
    if t == T_TIME:
        return _time_v1
    if t in (T_VARCHAR, T_VAR_STRING):
        return _string(1 if int(meta) < 256 else 2)  # type: ignore[arg-type]
    if t == T_STRING:
        assert isinstance(meta, tuple)
        real, length = meta
        if real == T_ENUM:
            return _little(length)
        if real == T_SET:
            return _little(length)
        if real != T_STRING:
            raise BinlogUnsupported(f"{where}: STRING column of real type {real}")
        collation = table_map.collations[i] if table_map.collations is not None else None
        if collation is None:
            raise BinlogUnsupported(f"{where}: CHAR/BINARY without charset metadata (needs binlog_row_metadata=FULL)")
        return _string(1 if length < 256 else 2, length if collation == BINARY_COLLATION else 0)
    if t in (T_BLOB, T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_GEOMETRY):
        return _string(int(meta))  # type: ignore[arg-type]
    if t == T_JSON:
        raise BinlogUnsupported(f"{where}: MySQL's binary JSON is not decoded (MariaDB logs JSON as LONGTEXT)")
    raise BinlogUnsupported(f"{where}: binlog column type {t}")


@dataclass(frozen=True, slots=True)
class RowDecoder:
    """Decodes the rows events of one table definition. Build with `decoder_for`."""

    table_map: TableMap
    columns: tuple[ColumnDecoder, ...]
    full_bitmap: bytes  # the columns-present bitmap of a full image
    all_columns: tuple[int, ...]

    def decode(self, event: RowsEvent) -> list[BinlogRowChange]:
        """Every row of `event`, in order. Raises BinlogDecodeError on malformed rows."""
        tm = self.table_map
        if event.column_count != tm.column_count:
            raise BinlogDecodeError(
                f"rows event of {event.column_count} columns for {tm.schema}.{tm.table} of {tm.column_count}"
            )
        buf = event.rows
        full = self.all_columns
        present = full if event.columns_present == self.full_bitmap else _bits(event.columns_present, event.column_count)
        after_bitmap = event.columns_present_after
        if after_bitmap is None or after_bitmap == event.columns_present:
            after_present = present
        else:
            after_present = full if after_bitmap == self.full_bitmap else _bits(after_bitmap, event.column_count)
        n = len(buf)
        p = 0
        out: list[BinlogRowChange] = []
        kind = event.kind
        try:
            while p < n:
                row, p = self._row(buf, p, present)
                if kind == "update":
                    after, p = self._row(buf, p, after_present)
                    out.append(BinlogRowChange("update", row, after))
                elif kind == "insert":
                    out.append(BinlogRowChange("insert", None, row))
                else:
                    out.append(BinlogRowChange("delete", row, None))
        except (IndexError, struct.error) as exc:
            raise BinlogDecodeError(f"malformed row of {tm.schema}.{tm.table}: {exc}") from exc
        if p != n:
            raise BinlogDecodeError(f"rows of {tm.schema}.{tm.table} overran their event")
        return out

    def _row(self, buf: bytes, p: int, present: tuple[int, ...]) -> tuple[Row, int]:
        decoders = self.columns
        ncols = len(decoders)
        nbytes = (len(present) + 7) // 8
        if p + nbytes > len(buf):
            raise BinlogDecodeError("truncated row NULL bitmap")
        nulls = int.from_bytes(buf[p : p + nbytes], "little")
        p += nbytes
        values: list[object]
        if len(present) == ncols:
            values = []
            append = values.append
            if not nulls:
                for dec in decoders:
                    v, p = dec(buf, p)
                    append(v)
            else:
                for dec in decoders:
                    if nulls & 1:
                        append(None)
                    else:
                        v, p = dec(buf, p)
                        append(v)
                    nulls >>= 1
            return tuple(values), p
        values = [NOT_LOGGED] * ncols
        for k, i in enumerate(present):
            if nulls >> k & 1:
                values[i] = None
            else:
                values[i], p = decoders[i](buf, p)
        return tuple(values), p


def _bits(bitmap: bytes, n: int) -> tuple[int, ...]:
    return tuple(i for i in range(n) if bitmap[i >> 3] >> (i & 7) & 1)


def decoder_for(table_map: TableMap) -> RowDecoder:
    """Compile the decoders of a table map's columns. Raises BinlogUnsupported."""
    n = table_map.column_count
    full = bytearray(b"\xff" * ((n + 7) // 8))
    if n % 8:
        full[-1] = (1 << (n % 8)) - 1
    return RowDecoder(table_map, tuple(column_decoder(table_map, i) for i in range(n)), bytes(full), tuple(range(n)))


def decode_rows(event: RowsEvent, table_map: TableMap) -> list[BinlogRowChange]:
    """Decode `event` against the table map of its table_id (compiling decoders each call)."""
    if event.table_id != table_map.table_id:
        raise BinlogDecodeError(f"rows event of table id {event.table_id} decoded with the map of {table_map.table_id}")
    return decoder_for(table_map).decode(event)


# --- conversion to row images -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeightRequest:
    """One WEIGHT_STRING the key material of a collated key part needs."""

    charset: str
    collation: str
    value: bytes
    sub_part: int  # prefix length in characters, 0 for the whole value
    pad_space: bool

    def sql(self) -> str:
        x = f"_{self.charset} X'{self.value.hex()}' COLLATE {self.collation}"
        if self.sub_part:
            x = f"LEFT({x}, {self.sub_part})"
        if self.pad_space:
            x = f"TRIM(TRAILING ' ' FROM {x})"
        return f"WEIGHT_STRING({x})"


Weights = Mapping[WeightRequest, bytes | None]


def _column_index(meta: "TableMeta", table_map: TableMap) -> dict[str, int]:
    """Column name → index in the table map (names from the map's metadata, else positions)."""
    if table_map.column_names is not None:
        index = {name: i for i, name in enumerate(table_map.column_names)}
        missing = [c.name for c in meta.columns if c.name not in index]
        if missing or len(index) != len(meta.columns):
            raise BinlogUnsupported(
                f"table map of {meta.schema}.{meta.table} does not match its metadata (columns {missing} missing, "
                f"{len(index)} vs {len(meta.columns)}): stale metadata"
            )
        return index
    if table_map.column_count != len(meta.columns):
        raise BinlogUnsupported(f"table map of {meta.schema}.{meta.table}: column count differs from its metadata")
    return {c.name: i for i, c in enumerate(meta.columns)}


def _inet6_text(raw: bytes) -> str:
    """MariaDB's text of an INET6 (its type_inet, after BIND's inet_ntop6): the longest run of
    zero groups becomes '::' — even a run of one group, unlike RFC 5952; the first of equal runs
    — hex is lower-case, and IPv4-compatible / IPv4-mapped addresses end in a dotted quad."""
    words = struct.unpack(">8H", raw)
    best_base, best_len, base, length = -1, 0, -1, 0
    for i, w in enumerate(words):
        if w == 0:
            if base < 0:
                base, length = i, 1
            else:
                length += 1
            if length > best_len:
                best_base, best_len = base, length
        else:
            base, length = -1, 0
    text = ""
    for i, w in enumerate(words):
        if best_base >= 0 and best_base <= i < best_base + best_len:
            if i == best_base:
                text += ":"
            continue
        if i:
            text += ":"
        if i == 6 and best_base == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
            text += ".".join(str(b) for b in raw[12:])
            break
        text += "%x" % w
    if best_base >= 0 and best_base + best_len == 8:
        text += ":"
    return text


def _native_text(data_type: str, raw: bytes) -> bytes:
    """The text a MariaDB INET4 / INET6 / UUID value reads back as (its image form: the applier
    writes it back as that text)."""
    if data_type == "inet4" and len(raw) == 4:
        return ".".join(str(b) for b in raw).encode("ascii")
    if data_type == "inet6" and len(raw) == 16:
        return _inet6_text(raw).encode("ascii")
    if data_type == "uuid" and len(raw) == 16:
        h = raw.hex()  # the binlog carries a UUID in its text order (not the storage order)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode("ascii")
    raise BinlogUnsupported(f"a {data_type} value of {len(raw)} bytes")


_NATIVE = frozenset({"inet6", "inet4", "uuid"})


def _shape(meta: "TableMeta") -> RowShape:
    shape = meta.shape
    if shape is None:
        raise BinlogUnsupported(f"{meta.schema}.{meta.table} has no row shape: {meta.shapeless_reason()}")
    return shape


def _converted(meta: "TableMeta", index: Mapping[str, int]) -> tuple[tuple[int, str], ...]:
    """(table-map index, type) of the columns whose binlog value is not their image value:
    MariaDB's INET4 / INET6 / UUID (text), and SET, whose image is `col + 0` — a signed BIGINT,
    so the bitmask of a 64-member SET with its last member chosen reads back negative."""
    return tuple((index[c.name], c.data_type) for c in meta.columns if c.data_type in _NATIVE or c.data_type == "set")


def _convert(row: Row, converted: tuple[tuple[int, str], ...]) -> Row:
    if not converted:
        return row
    values = list(row)
    for i, data_type in converted:
        v = values[i]
        if isinstance(v, bytes):
            values[i] = _native_text(data_type, v)
        elif isinstance(v, int) and v >= 1 << 63:
            values[i] = v - (1 << 64)
    return tuple(values)


def _material(
    meta: "TableMeta", row: Row, index: Mapping[str, int], weights: Weights | None, out: set[WeightRequest] | None
) -> tuple[bytes | None, ...]:
    material: list[bytes | None] = []
    for name, sub in meta.key_parts:
        col = meta.by_name[name]
        v = row[index[name]]
        if v is NOT_LOGGED:
            raise BinlogUnsupported(f"{meta.table}.{name} is a key part absent from the rows event (binlog_row_image≠FULL)")
        if v is None:
            material.append(None)
        elif col.collated:
            assert isinstance(v, bytes)
            req = WeightRequest(col.charset or "", col.collation or "", v, sub, col.pad_space)
            if out is not None:
                out.add(req)
                material.append(None)
            else:
                if weights is None or req not in weights:
                    raise KeyError(f"[BUG] no weight fetched for {meta.table}.{name}")
                material.append(weights[req])
        elif sub and col.form is Form.BYTES:
            assert isinstance(v, bytes)
            material.append(v[:sub])
        else:
            form = col.form
            assert form is not None
            material.append(canonical_bytes(form, v))  # type: ignore[arg-type]
    return tuple(material)


def weight_requests(meta: "TableMeta", table_map: TableMap, changes: Iterable[BinlogRowChange]) -> set[WeightRequest]:
    """The WEIGHT_STRINGs `to_row_changes` needs for these changes (empty for most tables)."""
    if not any(meta.by_name[n].collated for n, _ in meta.key_parts):
        return set()
    index = _column_index(meta, table_map)
    converted = _converted(meta, index)
    out: set[WeightRequest] = set()
    for change in changes:
        for row in (change.before, change.after):
            if row is not None:
                _material(meta, _convert(row, converted), index, None, out)
    return out


async def fetch_weights(conn: "BackendConnection", requests: Iterable[WeightRequest]) -> dict[WeightRequest, bytes | None]:
    """Ask the server for every WEIGHT_STRING in `requests`, WEIGHTS_PER_QUERY_MAX per round trip."""
    todo = list(requests)
    out: dict[WeightRequest, bytes | None] = {}
    for k in range(0, len(todo), WEIGHTS_PER_QUERY_MAX):
        chunk = todo[k : k + WEIGHTS_PER_QUERY_MAX]
        result = await conn.execute("SELECT " + ", ".join(r.sql() for r in chunk))
        (row,) = result.rows
        out.update(zip(chunk, row))
    return out


def to_row_changes(
    meta: "TableMeta", table_map: TableMap, changes: Sequence[BinlogRowChange], weights: Weights | None = None
) -> list[RowChange]:
    """The `RowChange`s of one table's decoded binlog rows (what the applier applies elsewhere).

    `meta` is the table's metadata (replication.schema.TableMeta: shape, key parts, collations);
    `weights` must hold every request of `weight_requests(meta, table_map, changes)`.
    An update whose images are equal is dropped (it changed nothing another member must repeat). Raises
    BinlogUnsupported when the table cannot be converted (no shape, a column type not converted,
    columns absent from the event, a table map that does not match `meta`).
    """
    shape = _shape(meta)
    index = _column_index(meta, table_map)
    converted = _converted(meta, index)
    if converted:  # only then: most tables convert nothing
        changes = [
            BinlogRowChange(c.kind, None if c.before is None else _convert(c.before, converted),
                            None if c.after is None else _convert(c.after, converted))
            for c in changes
        ]
    image_at = tuple(index[name] for name in shape.columns)
    # The image is the row itself when the table has no generated column (the common case).
    pick = None if image_at == tuple(range(table_map.column_count)) else operator.itemgetter(*image_at)
    pk = shape.primary_key
    pk_parts = [meta.key_parts.index(p) for p in meta.unique_keys[0].parts]
    out: list[RowChange] = []

    def image(row: Row) -> tuple[Value, ...]:
        values = row if pick is None else pick(row)
        if not isinstance(values, tuple):
            values = (values,)
        if NOT_LOGGED in values:
            raise BinlogUnsupported(f"{meta.schema}.{meta.table}: a column is absent from the rows event (binlog_row_image≠FULL)")
        return values  # type: ignore[return-value]

    for change in changes:
        if change.kind == "insert":
            assert change.after is not None
            after = image(change.after)
            out.append(RowChange(shape, "upsert", tuple(after[i] for i in pk), after,
                                 _material(meta, change.after, index, weights, None), None))
        elif change.kind == "delete":
            assert change.before is not None
            before = image(change.before)
            out.append(RowChange(shape, "delete", tuple(before[i] for i in pk), None, None,
                                 _material(meta, change.before, index, weights, None)))
        else:
            assert change.before is not None and change.after is not None
            before, after = image(change.before), image(change.after)
            if before == after:
                continue
            old = _material(meta, change.before, index, weights, None)
            new = _material(meta, change.after, index, weights, None)
            if [old[i] for i in pk_parts] != [new[i] for i in pk_parts]:
                out.append(RowChange(shape, "delete", tuple(before[i] for i in pk), None, None, old))
                out.append(RowChange(shape, "upsert", tuple(after[i] for i in pk), after, new, None))
            else:
                out.append(RowChange(shape, "upsert", tuple(after[i] for i in pk), after, new, old))
    return out
