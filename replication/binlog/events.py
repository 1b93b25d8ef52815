"""Binary log events: pure decoding of one event's bytes into a frozen, typed record.

Theory of operation. A binlog event is a 19-byte common header (timestamp, type, server_id,
total size, next position, flags), a type-specific post-header and body, and — when the
server's `binlog_checksum` is CRC32 — a 4-byte CRC32 of everything before it. `decode_event`
checks the size and the checksum, then dispatches on the type code to one decoder per event
this package understands; every other type becomes an `OtherEvent` that keeps its raw body
(MariaDB writes Binlog_checkpoint, Gtid_list, … that a reader may skip). Rows events keep
their row bytes raw: turning them into values needs the table map of their table_id, which
`rows.decode_rows` takes (decoding stays pure and per event).

Event formats (MariaDB 10.11, sql/log_event.h and log_event.cc): numbers are little-endian;
"packed" integers are the binlog's length-encoded integers (0-250 itself, 252/253/254 + 2/3/8
bytes). Compressed rows and query events (log_bin_compress) are refused with
`BinlogUnsupported`: grproxy's backends do not enable compression, so one showing up means the
backend is misconfigured, and guessing would be worse than stopping.

No I/O, no clock, no logging here: the stream (stream.py) feeds bytes in.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

# --- bounds and constants --------------------------------------------------------------------------

HEADER_BYTES = 19
CHECKSUM_BYTES = 4
EVENT_BYTES_MAX = 1 << 30  # the server's max_allowed_packet ceiling: no event is larger
TABLE_COLUMNS_MAX = 4_096  # MySQL and MariaDB allow 4096 columns per table
TABLE_MAP_CACHE_MAX = 4_096  # decoded table maps a TableMapCache keeps (cleared when full)


class EventType(enum.IntEnum):
    """Type codes this package knows (MySQL's numbering below 160, MariaDB's from 160)."""

    QUERY = 2
    STOP = 3
    ROTATE = 4
    INTVAR = 5
    RAND = 13
    USER_VAR = 14
    FORMAT_DESCRIPTION = 15
    XID = 16
    TABLE_MAP = 19
    WRITE_ROWS_V1 = 23
    UPDATE_ROWS_V1 = 24
    DELETE_ROWS_V1 = 25
    HEARTBEAT = 27
    WRITE_ROWS_V2 = 30
    UPDATE_ROWS_V2 = 31
    DELETE_ROWS_V2 = 32
    XA_PREPARE = 38
    ANNOTATE_ROWS = 160
    BINLOG_CHECKPOINT = 161
    GTID = 162
    GTID_LIST = 163
    START_ENCRYPTION = 164
    QUERY_COMPRESSED = 165
    WRITE_ROWS_COMPRESSED_V1 = 166
    UPDATE_ROWS_COMPRESSED_V1 = 167
    DELETE_ROWS_COMPRESSED_V1 = 168
    WRITE_ROWS_COMPRESSED = 169
    UPDATE_ROWS_COMPRESSED = 170
    DELETE_ROWS_COMPRESSED = 171


_COMPRESSED = frozenset(range(EventType.QUERY_COMPRESSED, EventType.DELETE_ROWS_COMPRESSED + 1))
_ROWS_V1 = {EventType.WRITE_ROWS_V1: "insert", EventType.UPDATE_ROWS_V1: "update", EventType.DELETE_ROWS_V1: "delete"}

# MariaDB Gtid_log_event flags2
GTID_STANDALONE = 0x01
GTID_GROUP_COMMIT_ID = 0x02
GTID_TRANSACTIONAL = 0x04
GTID_ALLOW_PARALLEL = 0x08
GTID_WAITED = 0x10
GTID_DDL = 0x20
GTID_PREPARED_XA = 0x40
GTID_COMPLETED_XA = 0x80
# flags_extra
GTID_EXTRA_MULTI_ENGINE = 0x01
GTID_EXTRA_START_ALTER = 0x02
GTID_EXTRA_COMMIT_ALTER = 0x04
GTID_EXTRA_ROLLBACK_ALTER = 0x08
GTID_EXTRA_THREAD_ID = 0x10

ROWS_FLAG_STMT_END = 0x0001  # the last rows event of a statement


# --- errors -----------------------------------------------------------------------------------------


class BinlogError(Exception):
    """Base of every error of the binlog layer."""


class BinlogDecodeError(BinlogError):
    """Bytes that are not a valid event of the declared type (a broken or foreign stream)."""


class BinlogChecksumError(BinlogDecodeError):
    """An event's CRC32 does not match its bytes."""


class BinlogUnsupported(BinlogDecodeError):
    """A valid event this layer refuses to interpret (compressed events, unknown column types)."""


# --- records ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventHeader:
    timestamp: int
    type_code: int
    server_id: int
    event_size: int
    log_pos: int  # position of the next event in the binlog file (0 for artificial events)
    flags: int


@dataclass(frozen=True, slots=True)
class FormatDescription:
    header: EventHeader
    binlog_version: int
    server_version: str
    create_timestamp: int
    header_length: int
    post_header_lengths: bytes  # index type_code - 1
    checksum_alg: int  # 0 off, 1 CRC32

    def post_header_length(self, type_code: int) -> int:
        i = type_code - 1
        return self.post_header_lengths[i] if 0 <= i < len(self.post_header_lengths) else 0


@dataclass(frozen=True, slots=True)
class Rotate:
    header: EventHeader
    position: int
    next_file: str

    @property
    def artificial(self) -> bool:
        """Sent by the server at the start of a dump (or on a switch), not read from a file."""
        return self.header.log_pos == 0


@dataclass(frozen=True, slots=True)
class XaId:
    """An XA transaction id: formatID, gtrid and bqual (XID 'gtrid','bqual',formatID)."""

    format_id: int
    gtrid: bytes
    bqual: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= len(self.gtrid) <= 64 or not 0 <= len(self.bqual) <= 64:
            raise ValueError(f"XA id parts must be at most 64 bytes: {self!r}")


@dataclass(frozen=True, slots=True)
class Gtid:
    """MariaDB's Gtid_log_event: starts an event group (or is a standalone DDL's header)."""

    header: EventHeader
    domain_id: int
    seq_no: int
    flags: int
    commit_id: int | None = None
    xid: XaId | None = None
    flags_extra: int = 0
    extra_engines: int = 0

    @property
    def server_id(self) -> int:
        return self.header.server_id

    @property
    def text(self) -> str:
        return f"{self.domain_id}-{self.header.server_id}-{self.seq_no}"

    @property
    def standalone(self) -> bool:
        return bool(self.flags & GTID_STANDALONE)

    @property
    def prepared_xa(self) -> bool:
        return bool(self.flags & GTID_PREPARED_XA)

    @property
    def completed_xa(self) -> bool:
        return bool(self.flags & GTID_COMPLETED_XA)


@dataclass(frozen=True, slots=True)
class AnnotateRows:
    header: EventHeader
    sql: bytes  # the statement text as the client sent it (its character set)


@dataclass(frozen=True, slots=True)
class TableMap:
    """TABLE_MAP_EVENT with its optional metadata (binlog_row_metadata=FULL).

    Per column: `column_types` (binlog type codes), `column_meta` (decoded metadata: an int,
    or (a, b) for NEWDECIMAL (precision, scale), BIT (bits, bytes) and STRING (real type,
    length)), `nullable`. Optional metadata, None when the server did not send it:
    `signedness` (per column: True unsigned / False signed / None not numeric), `collations`
    (per column: collation id of character, ENUM and SET columns, else None), `column_names`,
    `primary_key` ((column index, prefix length) pairs), `enum_values` / `set_values` (per
    column, None for other columns), `geometry_types`.
    """

    header: EventHeader
    table_id: int
    flags: int
    schema: str
    table: str
    column_types: tuple[int, ...]
    column_meta: tuple[int | tuple[int, int], ...]
    nullable: tuple[bool, ...]
    signedness: tuple[bool | None, ...] | None = None
    collations: tuple[int | None, ...] | None = None
    column_names: tuple[str, ...] | None = None
    primary_key: tuple[tuple[int, int], ...] | None = None
    enum_values: tuple[tuple[bytes, ...] | None, ...] | None = None
    set_values: tuple[tuple[bytes, ...] | None, ...] | None = None
    geometry_types: tuple[int | None, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.column_types)
        if not 0 < n <= TABLE_COLUMNS_MAX or len(self.column_meta) != n or len(self.nullable) != n:
            raise BinlogDecodeError(f"table map of {self.schema}.{self.table}: columns, metadata, nullability differ")
        for name in ("signedness", "collations", "column_names", "enum_values", "set_values", "geometry_types"):
            per_column = getattr(self, name)
            if per_column is not None and len(per_column) != n:
                raise BinlogDecodeError(f"table map of {self.schema}.{self.table}: {name} for {len(per_column)} of {n} columns")
        if self.primary_key is not None and any(not 0 <= i < n for i, _ in self.primary_key):
            raise BinlogDecodeError(f"table map of {self.schema}.{self.table}: primary key outside the columns")

    @property
    def column_count(self) -> int:
        return len(self.column_types)

    def same_table(self, other: "TableMap") -> bool:
        """Same definition (the table_id and header aside): decoders can be shared."""
        return (
            self.schema == other.schema and self.table == other.table and self.column_types == other.column_types
            and self.column_meta == other.column_meta and self.signedness == other.signedness
            and self.collations == other.collations and self.column_names == other.column_names
        )


@dataclass(frozen=True, slots=True)
class RowsEvent:
    """WRITE/UPDATE/DELETE_ROWS (v1 or v2): rows still encoded; decode with rows.decode_rows."""

    header: EventHeader
    kind: str  # "insert" | "update" | "delete"
    table_id: int
    flags: int
    column_count: int
    columns_present: bytes  # bitmap, bit i = column i
    columns_present_after: bytes | None  # updates only
    rows: bytes

    def __post_init__(self) -> None:
        nbytes = (self.column_count + 7) // 8
        if self.kind not in ("insert", "update", "delete") or len(self.columns_present) != nbytes:
            raise BinlogDecodeError(f"rows event: kind {self.kind!r}, {self.column_count} columns, bad bitmap")
        if (self.columns_present_after is not None) != (self.kind == "update") or (
            self.columns_present_after is not None and len(self.columns_present_after) != nbytes
        ):
            raise BinlogDecodeError("rows event: the after-image bitmap belongs to updates only")

    @property
    def statement_end(self) -> bool:
        return bool(self.flags & ROWS_FLAG_STMT_END)


@dataclass(frozen=True, slots=True)
class Query:
    header: EventHeader
    thread_id: int
    exec_time: int
    error_code: int
    schema: str
    sql: bytes
    status_vars: bytes


@dataclass(frozen=True, slots=True)
class XidEvent:
    header: EventHeader
    xid: int  # the server's internal transaction id (not an XA id)


@dataclass(frozen=True, slots=True)
class XaPrepare:
    """XA_PREPARE_LOG_EVENT: ends the event group of an XA PREPARE (or XA COMMIT ONE PHASE)."""

    header: EventHeader
    one_phase: bool
    xid: XaId


@dataclass(frozen=True, slots=True)
class Heartbeat:
    header: EventHeader
    log_file: str  # the file the server is sending from


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """An event this layer does not interpret (Gtid_list, Binlog_checkpoint, Intvar, …)."""

    header: EventHeader
    body: bytes


Event = (
    FormatDescription | Rotate | Gtid | AnnotateRows | TableMap | RowsEvent | Query | XidEvent | XaPrepare
    | Heartbeat | OtherEvent
)


# --- helpers ----------------------------------------------------------------------------------------

_HEADER = struct.Struct("<IBIIIH")


def read_packed(buf: bytes, pos: int) -> tuple[int, int]:
    """A binlog packed integer at `pos`: (value, position after it)."""
    try:
        first = buf[pos]
        if first < 251:
            return first, pos + 1
        if first == 252:
            return buf[pos + 1] | buf[pos + 2] << 8, pos + 3
        if first == 253:
            return buf[pos + 1] | buf[pos + 2] << 8 | buf[pos + 3] << 16, pos + 4
        if first == 254:
            if pos + 9 > len(buf):
                raise IndexError
            return int.from_bytes(buf[pos + 1 : pos + 9], "little"), pos + 9
    except IndexError:
        raise BinlogDecodeError("truncated packed integer") from None
    raise BinlogDecodeError(f"invalid packed integer prefix {first}")


def _need(buf: bytes, end: int, what: str) -> None:
    if end > len(buf):
        raise BinlogDecodeError(f"truncated {what}: {end} bytes needed, {len(buf)} present")


def decode_header(buf: bytes) -> EventHeader:
    if len(buf) < HEADER_BYTES:
        raise BinlogDecodeError(f"event of {len(buf)} bytes is shorter than its header")
    return EventHeader(*_HEADER.unpack_from(buf, 0))


def checksum_ok(event: bytes) -> bool:
    """True when the last 4 bytes are the CRC32 of the rest."""
    return len(event) >= HEADER_BYTES + CHECKSUM_BYTES and zlib.crc32(memoryview(event)[:-4]) == int.from_bytes(event[-4:], "little")


# --- decoding ---------------------------------------------------------------------------------------


class TableMapCache:
    """Decoded TABLE_MAP events by their bytes: the server logs the same map before every
    statement, and decoding its optional metadata is the costliest part of a small transaction.

    A hit returns the very TableMap decoded first (its header is that first event's), so a
    consumer can key compiled row decoders on identity. Bounded by `entries_max`: when full it is
    cleared (table definitions change rarely; a miss only costs one decode).
    """

    __slots__ = ("_maps", "entries_max", "hits")

    def __init__(self, entries_max: int = TABLE_MAP_CACHE_MAX) -> None:
        if entries_max <= 0:
            raise ValueError("entries_max must be positive")
        self._maps: dict[bytes, TableMap] = {}
        self.entries_max = entries_max
        self.hits = 0

    def __len__(self) -> int:
        return len(self._maps)


def decode_event(
    buf: bytes, fde: FormatDescription | None, *, checksum: bool, table_maps: TableMapCache | None = None
) -> Event:
    """Decode one whole event (header included, checksum included when `checksum`).

    `fde` is the format description in force (None before the first one, which a stream only
    sees for the artificial ROTATE: binlog v4's post-header lengths are assumed then).
    `table_maps` caches decoded TABLE_MAP events (see TableMapCache). A FORMAT_DESCRIPTION's
    own checksum is checked whatever `checksum` says, when its descriptor says CRC32.

    Raises BinlogChecksumError for a CRC mismatch, BinlogUnsupported for compressed events,
    BinlogDecodeError for anything malformed.
    """
    header = decode_header(buf)
    if header.event_size != len(buf):
        raise BinlogDecodeError(f"event header says {header.event_size} bytes, {len(buf)} were read")
    t = header.type_code
    if t == EventType.FORMAT_DESCRIPTION:
        return _format_description(header, buf)
    if checksum:
        if not checksum_ok(buf):
            raise BinlogChecksumError(f"CRC32 mismatch in a {_type_name(t)} event (log_pos {header.log_pos})")
        end = len(buf) - CHECKSUM_BYTES
    else:
        end = len(buf)
    if t in _COMPRESSED:
        raise BinlogUnsupported(
            f"compressed binlog event {_type_name(t)}: set log_bin_compress=OFF on the backend (grproxy reads "
            "uncompressed row events only)"
        )
    try:
        if t == EventType.TABLE_MAP and table_maps is not None:
            key = bytes(buf[HEADER_BYTES:end])
            cached = table_maps._maps.get(key)
            if cached is not None:
                table_maps.hits += 1
                return cached
            table_map = _table_map(header, buf, end, fde)
            if len(table_maps._maps) >= table_maps.entries_max:
                table_maps._maps.clear()
            table_maps._maps[key] = table_map
            return table_map
        decoder = _DECODERS.get(t)
        if decoder is None:
            return OtherEvent(header, bytes(buf[HEADER_BYTES:end]))
        return decoder(header, buf, end, fde)
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as exc:  # ValueError: XaId's checks
        raise BinlogDecodeError(f"malformed {_type_name(t)} event: {exc}") from exc


def _type_name(t: int) -> str:
    try:
        return EventType(t).name
    except ValueError:
        return f"type {t}"


def _format_description(header: EventHeader, buf: bytes) -> FormatDescription:
    p = HEADER_BYTES
    _need(buf, p + 57, "FORMAT_DESCRIPTION")
    version, = struct.unpack_from("<H", buf, p)
    server_version = bytes(buf[p + 2 : p + 52]).split(b"\0", 1)[0].decode("ascii", "replace")
    created, header_length = struct.unpack_from("<IB", buf, p + 52)
    # Servers since MySQL 5.6.1 / MariaDB 5.3 end the event with the checksum algorithm byte and
    # 4 checksum bytes (meaningful only when the algorithm is CRC32).
    alg = buf[-5]
    lengths = bytes(buf[p + 57 : len(buf) - 5])
    if alg == 1 and not checksum_ok(buf):
        raise BinlogChecksumError("CRC32 mismatch in a FORMAT_DESCRIPTION event")
    if alg not in (0, 1):
        raise BinlogUnsupported(f"binlog checksum algorithm {alg} (only NONE and CRC32 exist)")
    if header_length != HEADER_BYTES:
        raise BinlogUnsupported(f"common header of {header_length} bytes (binlog v4 has {HEADER_BYTES})")
    return FormatDescription(header, version, server_version, created, header_length, lengths, alg)


def _rotate(header: EventHeader, buf: bytes, end: int, fde: FormatDescription | None) -> Rotate:
    p = HEADER_BYTES
    _need(buf, p + 8, "ROTATE")
    position, = struct.unpack_from("<Q", buf, p)
    return Rotate(header, position, bytes(buf[p + 8 : end]).decode("utf-8"))


def _gtid(header: EventHeader, buf: bytes, end: int, fde: FormatDescription | None) -> Gtid:
    p = HEADER_BYTES
    _need(buf, p + 13, "GTID")
    seq_no, domain_id, flags = struct.unpack_from("<QIB", buf, p)
    p += 13
    commit_id = None
    if flags & GTID_GROUP_COMMIT_ID:
        _need(buf, p + 8, "GTID commit id")
        commit_id, = struct.unpack_from("<Q", buf, p)
        p += 8
    elif not flags & (GTID_PREPARED_XA | GTID_COMPLETED_XA):
        p += 6  # zero padding to the 19-byte post-header (an XA GTID has its xid there instead)
    xid = None
    if flags & (GTID_PREPARED_XA | GTID_COMPLETED_XA):
        _need(buf, p + 6, "GTID xid")
        format_id, gtrid_len, bqual_len = struct.unpack_from("<iBB", buf, p)
        p += 6
        _need(buf, p + gtrid_len + bqual_len, "GTID xid data")
        xid = XaId(format_id, bytes(buf[p : p + gtrid_len]), bytes(buf[p + gtrid_len : p + gtrid_len + bqual_len]))
        p += gtrid_len + bqual_len
    flags_extra = buf[p] if p < end else 0
    extra_engines = buf[p + 1] if flags_extra & GTID_EXTRA_MULTI_ENGINE and p + 1 < end else 0
    return Gtid(header, domain_id, seq_no, flags, commit_id, xid, flags_extra, extra_engines)


def _annotate(header: EventHeader, buf: bytes, end: int, fde: FormatDescription | None) -> AnnotateRows:
    return AnnotateRows(header, bytes(buf[HEADER_BYTES:end]))


def _table_id(buf: bytes, p: int, fde: FormatDescription | None, type_code: int) -> tuple[int, int]:
    width = 4 if fde is not None and fde.post_header_length(type_code) == 6 else 6
    return int.from_bytes(buf[p : p + width], "little"), p + width


def _query(header: EventHeader, buf: bytes, end: int, fde: FormatDescription | None) -> Query:
    p = HEADER_BYTES
    _need(buf, p + 13, "QUERY")
    thread_id, exec_time, db_len, error_code, status_len = struct.unpack_from("<IIBHH", buf, p)
    post = fde.post_header_length(EventType.QUERY) if fde is not None else 13
    p += max(post, 13)
    status = bytes(buf[p : p + status_len])
    p += status_len
    _need(buf, p + db_len + 1, "QUERY schema")
    schema = bytes(buf[p : p + db_len]).decode("utf-8")
    p += db_len + 1
    if p > end:
        raise BinlogDecodeError("truncated QUERY")
    return Query(header, thread_id, exec_time, error_code, schema, bytes(buf[p:end]), status)


def _xid(header: EventHeader, buf: bytes, end: int, fde: FormatDescription | None) -> XidEvent:
    _need(buf, HEADER_BYTES + 8, "XID")
    xid, = struct.unpack_from("<Q", buf, HEADER_BYTES)
    return XidEvent(header, xid)


def _xa_prepare(header: EventHeader, buf: bytes, end: int, fde: FormatDescription | None) -> XaPrepare:
    p = HEADER_BYTES
    _need(buf, p + 13, "XA_PREPARE")
    one_phase, format_id, gtrid_len, bqual_len = struct.unpack_from("<BiII", buf, p)
    p += 13
    if gtrid_len > 64 or bqual_len > 64 or p + gtrid_len + bqual_len > end:
        raise BinlogDecodeError(f"XA_PREPARE with an invalid xid ({gtrid_len}, {bqual_len} bytes)")
    xid = XaId(format_id, bytes(buf[p : p + gtrid_len]), bytes(buf[p + gtrid_len : p + gtrid_len + bqual_len]))
    return XaPrepare(header, bool(one_phase), xid)


def _heartbeat(header: EventHeader, buf: bytes, end: int, fde: FormatDescription | None) -> Heartbeat:
    return Heartbeat(header, bytes(buf[HEADER_BYTES:end]).decode("utf-8", "replace"))


# Column types (include/mysql_com.h enum_field_types)
T_DECIMAL, T_TINY, T_SHORT, T_LONG, T_FLOAT, T_DOUBLE, T_NULL, T_TIMESTAMP, T_LONGLONG, T_INT24 = range(10)
T_DATE, T_TIME, T_DATETIME, T_YEAR, T_NEWDATE, T_VARCHAR, T_BIT, T_TIMESTAMP2, T_DATETIME2, T_TIME2 = range(10, 20)
T_JSON, T_NEWDECIMAL, T_ENUM, T_SET, T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_BLOB = range(245, 253)
T_VAR_STRING, T_STRING, T_GEOMETRY = 253, 254, 255

_META_1 = frozenset({T_FLOAT, T_DOUBLE, T_BLOB, T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_GEOMETRY, T_JSON,
                     T_TIMESTAMP2, T_DATETIME2, T_TIME2})
_NUMERIC = frozenset({T_TINY, T_SHORT, T_INT24, T_LONG, T_LONGLONG, T_NEWDECIMAL, T_FLOAT, T_DOUBLE, T_DECIMAL})
_BLOBS = frozenset({T_BLOB, T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB})
_CHARACTER_MYSQL = frozenset({T_STRING, T_VAR_STRING, T_VARCHAR}) | _BLOBS
_CHARACTER_MARIADB = _CHARACTER_MYSQL | {T_GEOMETRY}


def real_type(column_type: int, meta: int | tuple[int, int]) -> int:
    """The column's real type: STRING columns carry ENUM / SET / STRING in their metadata."""
    if column_type == T_STRING and isinstance(meta, tuple):
        return meta[0]
    return column_type


def _column_meta(types: bytes, meta: bytes) -> tuple[int | tuple[int, int], ...]:
    out: list[int | tuple[int, int]] = []
    p = 0
    for t in types:
        if t in _META_1:
            out.append(meta[p])
            p += 1
        elif t in (T_VARCHAR, T_VAR_STRING):
            out.append(meta[p] | meta[p + 1] << 8)
            p += 2
        elif t in (T_NEWDECIMAL, T_BIT):
            out.append((meta[p], meta[p + 1]))
            p += 2
        elif t in (T_STRING, T_ENUM, T_SET):
            b0, b1 = meta[p], meta[p + 1]
            p += 2
            if b0 & 0x30 != 0x30:  # long CHAR: two more length bits hide in the type byte
                out.append((b0 | 0x30, b1 | (((b0 & 0x30) ^ 0x30) << 4)))
            else:
                out.append((b0, b1))
        else:
            out.append(0)
    if p != len(meta):
        raise BinlogDecodeError(f"table map metadata of {len(meta)} bytes, {p} used by the column types")
    return tuple(out)


# Optional metadata field types (sql/log_event.h Table_map_log_event::Optional_metadata_field_type)
_OPT_SIGNEDNESS, _OPT_DEFAULT_CHARSET, _OPT_COLUMN_CHARSET, _OPT_COLUMN_NAME = 1, 2, 3, 4
_OPT_SET_STR_VALUE, _OPT_ENUM_STR_VALUE, _OPT_GEOMETRY_TYPE = 5, 6, 7
_OPT_SIMPLE_PRIMARY_KEY, _OPT_PRIMARY_KEY_WITH_PREFIX = 8, 9
_OPT_ENUM_AND_SET_DEFAULT_CHARSET, _OPT_ENUM_AND_SET_COLUMN_CHARSET = 10, 11


def _table_map(header: EventHeader, buf: bytes, end: int, fde: FormatDescription | None) -> TableMap:
    p = HEADER_BYTES
    table_id, p = _table_id(buf, p, fde, EventType.TABLE_MAP)
    flags, = struct.unpack_from("<H", buf, p)
    p += 2
    n = buf[p]
    schema = bytes(buf[p + 1 : p + 1 + n]).decode("utf-8")
    p += n + 2
    n = buf[p]
    table = bytes(buf[p + 1 : p + 1 + n]).decode("utf-8")
    p += n + 2
    ncols, p = read_packed(buf, p)
    if not 0 < ncols <= TABLE_COLUMNS_MAX:
        raise BinlogDecodeError(f"table map of {schema}.{table} with {ncols} columns")
    _need(buf, p + ncols, "TABLE_MAP column types")
    types = bytes(buf[p : p + ncols])
    p += ncols
    meta_len, p = read_packed(buf, p)
    _need(buf, p + meta_len, "TABLE_MAP metadata")
    column_meta = _column_meta(types, bytes(buf[p : p + meta_len]))
    p += meta_len
    nbytes = (ncols + 7) // 8
    _need(buf, p + nbytes, "TABLE_MAP null bitmap")
    nullable = tuple(bool(buf[p + i // 8] >> (i % 8) & 1) for i in range(ncols))
    p += nbytes
    real = [real_type(t, m) for t, m in zip(types, column_meta)]
    numeric = [i for i, t in enumerate(real) if t in _NUMERIC]
    # Character columns, which the charset fields list: MariaDB counts every column with a
    # character set but ENUM / SET, GEOMETRY (binary) included; MySQL leaves GEOMETRY out.
    text_types = _CHARACTER_MARIADB if fde is None or "mariadb" in fde.server_version.lower() else _CHARACTER_MYSQL
    character = [i for i, t in enumerate(real) if t in text_types]
    enum_set = [i for i, t in enumerate(real) if t in (T_ENUM, T_SET)]
    geometry = [i for i, t in enumerate(real) if t == T_GEOMETRY]
    opt: dict[str, object] = {}
    collations: list[int | None] = [None] * ncols
    have_collations = False
    while p < end:
        field_type = buf[p]
        length, p = read_packed(buf, p + 1)
        _need(buf, p + length, "TABLE_MAP optional metadata")
        value = bytes(buf[p : p + length])
        p += length
        if field_type == _OPT_SIGNEDNESS:
            _count(len(value), (len(numeric) + 7) // 8, "signedness", schema, table)
            signed: list[bool | None] = [None] * ncols
            for k, i in enumerate(numeric):
                signed[i] = bool(value[k // 8] & (0x80 >> (k % 8)))
            opt["signedness"] = tuple(signed)
        elif field_type in (_OPT_DEFAULT_CHARSET, _OPT_ENUM_AND_SET_DEFAULT_CHARSET):
            columns = character if field_type == _OPT_DEFAULT_CHARSET else enum_set
            default, q = read_packed(value, 0)
            for i in columns:
                collations[i] = default
            while q < len(value):
                k, q = read_packed(value, q)
                coll, q = read_packed(value, q)
                _count(k, len(columns) - 1, "charset of column", schema, table, at_most=True)
                collations[columns[k]] = coll
            have_collations = True
        elif field_type in (_OPT_COLUMN_CHARSET, _OPT_ENUM_AND_SET_COLUMN_CHARSET):
            columns = character if field_type == _OPT_COLUMN_CHARSET else enum_set
            q = 0
            for i in columns:
                collations[i], q = read_packed(value, q)
            _count(q, len(value), "column charsets", schema, table)
            have_collations = True
        elif field_type == _OPT_COLUMN_NAME:
            names, q = [], 0
            while q < len(value):
                k, q = read_packed(value, q)
                names.append(value[q : q + k].decode("utf-8"))
                q += k
            opt["column_names"] = tuple(names)
        elif field_type in (_OPT_SET_STR_VALUE, _OPT_ENUM_STR_VALUE):
            kind = T_SET if field_type == _OPT_SET_STR_VALUE else T_ENUM
            per: list[tuple[bytes, ...] | None] = [None] * ncols
            q = 0
            for i in (i for i, t in enumerate(real) if t == kind):
                count, q = read_packed(value, q)
                items = []
                for _ in range(count):
                    k, q = read_packed(value, q)
                    items.append(value[q : q + k])
                    q += k
                per[i] = tuple(items)
            _count(q, len(value), "ENUM/SET values", schema, table)
            opt["set_values" if kind == T_SET else "enum_values"] = tuple(per)
        elif field_type == _OPT_GEOMETRY_TYPE:
            geo: list[int | None] = [None] * ncols
            q = 0
            for i in geometry:
                geo[i], q = read_packed(value, q)
            _count(q, len(value), "geometry types", schema, table)
            opt["geometry_types"] = tuple(geo)
        elif field_type == _OPT_SIMPLE_PRIMARY_KEY:
            pk, q = [], 0
            while q < len(value):
                k, q = read_packed(value, q)
                pk.append((k, 0))
            opt["primary_key"] = tuple(pk)
        elif field_type == _OPT_PRIMARY_KEY_WITH_PREFIX:
            pk, q = [], 0
            while q < len(value):
                k, q = read_packed(value, q)
                prefix, q = read_packed(value, q)
                pk.append((k, prefix))
            opt["primary_key"] = tuple(pk)
        # other (future) optional fields are skipped: they are self-delimiting
    if have_collations:
        opt["collations"] = tuple(collations)
    names = opt.get("column_names")
    if names is not None and len(names) != ncols:  # type: ignore[arg-type]
        raise BinlogDecodeError(f"table map of {schema}.{table}: {ncols} columns, {len(names)} names")  # type: ignore[arg-type]
    return TableMap(header, table_id, flags, schema, table, types, column_meta, nullable, **opt)  # type: ignore[arg-type]


def _count(got: int, expected: int, what: str, schema: str, table: str, *, at_most: bool = False) -> None:
    """Optional metadata must cover exactly the columns it describes: a mismatch means this
    decoder counts the columns differently from the server, and every later value would shift."""
    if got > expected if at_most else got != expected:
        raise BinlogDecodeError(f"table map of {schema}.{table}: {what} does not fit the columns ({got} vs {expected})")


def _rows(header: EventHeader, buf: bytes, end: int, fde: FormatDescription | None) -> RowsEvent:
    t = header.type_code
    p = HEADER_BYTES
    table_id, p = _table_id(buf, p, fde, t)
    flags, = struct.unpack_from("<H", buf, p)
    p += 2
    if t >= EventType.WRITE_ROWS_V2:  # v2 (MySQL): a variable-length extra-data block
        extra_len, = struct.unpack_from("<H", buf, p)
        p += max(extra_len, 2)
        kind = ("insert", "update", "delete")[t - EventType.WRITE_ROWS_V2]
    else:
        kind = _ROWS_V1[EventType(t)]
    ncols, p = read_packed(buf, p)
    if not 0 < ncols <= TABLE_COLUMNS_MAX:
        raise BinlogDecodeError(f"rows event with {ncols} columns")
    nbytes = (ncols + 7) // 8
    _need(buf, p + nbytes, "rows event bitmap")
    present = bytes(buf[p : p + nbytes])
    p += nbytes
    after = None
    if kind == "update":
        _need(buf, p + nbytes, "rows event bitmap")
        after = bytes(buf[p : p + nbytes])
        p += nbytes
    if p > end:
        raise BinlogDecodeError("truncated rows event")
    return RowsEvent(header, kind, table_id, flags, ncols, present, after, bytes(buf[p:end]))


_DECODERS = {
    EventType.ROTATE: _rotate,
    EventType.GTID: _gtid,
    EventType.ANNOTATE_ROWS: _annotate,
    EventType.TABLE_MAP: _table_map,
    EventType.WRITE_ROWS_V1: _rows,
    EventType.UPDATE_ROWS_V1: _rows,
    EventType.DELETE_ROWS_V1: _rows,
    EventType.WRITE_ROWS_V2: _rows,
    EventType.UPDATE_ROWS_V2: _rows,
    EventType.DELETE_ROWS_V2: _rows,
    EventType.QUERY: _query,
    EventType.XID: _xid,
    EventType.XA_PREPARE: _xa_prepare,
    EventType.HEARTBEAT: _heartbeat,
}
