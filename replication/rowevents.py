"""A transaction's row events as the group carries them, applied with the server's BINLOG statement.

Theory of operation (DESIGN §5). A member reads its prepared XA transaction back from its
backend's binary log (replication/binlog). It derives the write set from the decoded rows
(writeset.derive) and ships the events themselves: every Table_map and Write/Update/Delete_rows
event of the transaction, byte for byte as its server logged them, with the Format_description
event that says how to read them (post-header lengths, whether events end in a CRC32). The
other members apply them with `BINLOG '<base64>'`, the statement mysqlbinlog's output uses, which
hands each event to the server's own row applier (the code a MariaDB replica runs):

* exact by construction: every value is unpacked by the server from the origin's record
  format — no SQL text, character set, sql_mode or time zone stands between the two servers;
* strict: an update or delete whose row is missing fails (1032), an insert meeting an existing
  key fails (1062) — a divergence stops the member instead of being written over;
* triggers do not fire: a server applies row events without running triggers while
  `slave_run_triggers_for_rbr` is NO (checked on every applier connection), and a trigger's own
  writes are row events of the transaction already;
* foreign-key and unique checks follow the flags the origin's session logged on each event.

The receiving server logs the applied rows in its own binary log as its own transaction (its
server_id, its GTID), inside the applier's backend transaction with the position record: the
member's binlog reader tells it from a stray write by that record (local_commit._outside_xa).
The events' table ids are the origin's; they only pair each rows event with the table map before
it in the same statement, so they never meet the receiver's own ids. The events keep their CRC32
when the origin's server wrote one and the shipped Format_description says so; the receiver's own
`binlog_checksum` does not matter (the BINLOG statement reads events as that description says).

Wire form (`encode_row_events`): b"GE", a version byte, the Format_description event (u32
length, then its bytes), the number of events (u32), then the events back to back (each event's
header holds its size).
`decode_row_events` checks every event's header — its size, its type (table map or rows event),
that each rows event's table was mapped earlier in its statement, that the transaction ends at
a statement end — and raises RowEventsError for anything else.

Applying (`RowEventApplier.apply`, inside the caller's open transaction): the events go as few
BINLOG statements as the packet bound allows (`APPLY_PACKET_BYTES_MAX`), cut only at statement
ends (a BINLOG statement must close the tables it opened), in multi-statement packets with the
caller's own statements before and after them (BEGIN …, position, COMMIT: one round trip for a
small transaction). A connection gets its session set up (`binlog_annotate_row_events` off: the
receiver's binlog would otherwise hold every BINLOG text once more) and the origin's
Format_description once, and again only when another origin's differs. A statement too large for
the server's `max_allowed_packet` goes as two user-variable fragments (`BINLOG @a, @b`, as
mysqlbinlog does); beyond two packets' worth the transaction cannot be applied (RowEventsError).

The member's backend account needs the BINLOG REPLAY privilege (MariaDB 10.5.2 and later; SUPER
before), which ALL PRIVILEGES includes; `check_binlog_replay` tells at start.
"""

from __future__ import annotations

import base64
import struct
import weakref
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from .binlog.events import (
    CHECKSUM_BYTES, HEADER_BYTES, ROWS_FLAG_STMT_END, BinlogDecodeError, EventType, FormatDescription, decode_event,
)
from .binlog.transactions import BinlogTransaction
from .protocol.backend import BackendConnection, Result
from .protocol.constants import Command
from .protocol.errors import BackendError

ROW_EVENTS_MAGIC = b"GE"
ROW_EVENTS_VERSION = 1
ROW_EVENTS_MAX = 10_000_000  # events one transaction may carry (rows events hold ~8 KiB of rows each)
FORMAT_DESCRIPTION_BYTES_MAX = 4_096  # a Format_description event is ~250 bytes
APPLY_PACKET_BYTES_MAX = 4 << 20  # a multi-statement packet of BINLOG statements is closed past this
PACKET_SLACK_BYTES = 1_024  # below max_allowed_packet: the statement's own text around the base64
FORMAT_DESCRIPTIONS_CACHED_MAX = 64  # decoded Format_description events kept (one per origin server)
FRAGMENT_VARIABLES = ("@grproxy_binlog_0", "@grproxy_binlog_1")

_ROWS_TYPES = frozenset({EventType.WRITE_ROWS_V1, EventType.UPDATE_ROWS_V1, EventType.DELETE_ROWS_V1,
                         EventType.WRITE_ROWS_V2, EventType.UPDATE_ROWS_V2, EventType.DELETE_ROWS_V2})
_ROWS_V2 = frozenset({EventType.WRITE_ROWS_V2, EventType.UPDATE_ROWS_V2, EventType.DELETE_ROWS_V2})
_SHIPPED_TYPES = _ROWS_TYPES | {EventType.TABLE_MAP}
_U32 = struct.Struct("<I")
_TRIGGERS_OFF = ("NO",)


class RowEventsError(Exception):
    """Bytes that are not a valid shipped transaction, or one that cannot be applied here."""


class RowEventApplyError(RowEventsError):
    """The server applied the events with warnings (a value not stored as logged)."""


@dataclass(frozen=True, slots=True)
class RowEvents:
    """A decoded shipment: the Format_description event, the events back to back, and the
    offsets in `events` after each statement's last rows event (where BINLOG statements may be
    cut), the last one being len(events)."""

    format_description: bytes
    events: bytes
    statement_ends: tuple[int, ...]

    @property
    def checksum(self) -> bool:
        return _layout(self.format_description).checksum


# --- the origin's side ---------------------------------------------------------------------------------


def ship(txn: BinlogTransaction, skip_schema: str) -> bytes:
    """The wire form of `txn`'s events (read with Assembler(keep_events=True)), without the
    tables of `skip_schema` (the member's own bookkeeping is never replicated). A statement that
    wrote only such tables is left out; one whose last rows event was such a table's ends on its
    last other rows event instead. Returns b"" when nothing is left. Raises RowEventsError when the
    transaction kept no events (read without keep_events) or they do not form statements."""
    if not txn.events:
        raise RowEventsError("[BUG] the transaction's events were not kept (Assembler keep_events)")
    layout = _layout(txn.format_description)
    events: Sequence[bytes | memoryview] = txn.events
    if any(t.schema == skip_schema for t in txn.tables):
        events = _without_schema(layout, events, skip_schema)
        if not events:
            return b""
    return encode_row_events(txn.format_description, events)


def encode_row_events(format_description: bytes, events: Sequence[bytes | memoryview]) -> bytes:
    """The wire form (see the module docstring); checked as decode_row_events checks it."""
    if not format_description or len(format_description) > FORMAT_DESCRIPTION_BYTES_MAX:
        raise RowEventsError(f"a format description of {len(format_description)} bytes")
    if len(events) > ROW_EVENTS_MAX:
        raise RowEventsError(f"{len(events)} events are more than {ROW_EVENTS_MAX}")
    data = b"".join((ROW_EVENTS_MAGIC, bytes((ROW_EVENTS_VERSION,)), _U32.pack(len(format_description)),
                     format_description, _U32.pack(len(events)), *events))
    decode_row_events(data)  # STYLE §10: check right before encoding
    return data


def _without_schema(layout: "_Layout", events: Sequence[bytes | memoryview], schema: str) -> list[bytes | memoryview]:
    kept: list[bytes | memoryview] = []
    statement: list[tuple[bytes | memoryview, str, int]] = []  # (event, kind, table id)
    skipped: set[int] = set()
    for event in events:
        kind, tid, end = _event_facts(layout, event, 0, len(event))
        if kind == "map" and _map_schema(layout, event) == schema:
            skipped.add(tid)
        statement.append((event, kind, tid))
        if not end:
            continue
        out = [(ev, k) for ev, k, t in statement if t not in skipped]
        last_rows = max((i for i, (_, k) in enumerate(out) if k == "rows"), default=-1)
        if last_rows >= 0:
            kept.extend(ev for ev, _ in out[:last_rows])
            kept.append(_with_statement_end(layout, bytes(out[last_rows][0])))
        statement, skipped = [], set()
    if statement:
        raise RowEventsError("the transaction's last rows event does not end its statement")
    return kept


def _with_statement_end(layout: "_Layout", event: bytes) -> bytes:
    """`event` (a rows event) with STMT_END_F set, its CRC32 recomputed when it has one."""
    flags_at = HEADER_BYTES + layout.id_width[event[4]]
    flags = struct.unpack_from("<H", event, flags_at)[0] | ROWS_FLAG_STMT_END
    out = bytearray(event)
    struct.pack_into("<H", out, flags_at, flags)
    if layout.checksum:
        struct.pack_into("<I", out, len(out) - CHECKSUM_BYTES, zlib.crc32(memoryview(out)[:-CHECKSUM_BYTES]))
    return bytes(out)


# --- decoding ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """What reading the shipped events needs of their Format_description event."""

    checksum: bool
    id_width: dict[int, int]  # shipped event type → bytes of its table id


_layouts: dict[bytes, _Layout] = {}


def _layout(raw: bytes) -> _Layout:
    """The layout of events described by Format_description event `raw` (cached: every message
    of an origin carries the same one). Raises RowEventsError."""
    layout = _layouts.get(raw)
    if layout is not None:
        return layout
    if not raw or len(raw) > FORMAT_DESCRIPTION_BYTES_MAX or raw[4] != EventType.FORMAT_DESCRIPTION:
        raise RowEventsError("the shipment does not start with a format description event")
    try:
        fde = decode_event(raw, None, checksum=False)
    except BinlogDecodeError as exc:
        raise RowEventsError(f"invalid format description event: {exc}") from None
    assert isinstance(fde, FormatDescription)
    widths = {}
    for type_code in _SHIPPED_TYPES:
        post = fde.post_header_length(type_code)
        expected = 10 if type_code in _ROWS_V2 else 8  # 6-byte table id, 2 flags (+ v2's extra length)
        if post == expected:
            widths[type_code] = 6
        elif post == expected - 2:
            widths[type_code] = 4
        else:
            raise RowEventsError(f"post-header of {post} bytes for event type {type_code}")
    layout = _Layout(fde.checksum_alg == 1, widths)
    if len(_layouts) >= FORMAT_DESCRIPTIONS_CACHED_MAX:
        _layouts.clear()
    _layouts[bytes(raw)] = layout
    return layout


def _event_facts(layout: _Layout, buf: bytes | memoryview, p: int, size: int) -> tuple[str, int, bool]:
    """(kind "map" | "rows", table id, ends its statement) of the event of `size` bytes at `p`
    in `buf`. Raises RowEventsError."""
    if size < HEADER_BYTES + 8 + (CHECKSUM_BYTES if layout.checksum else 0):
        raise RowEventsError(f"an event of {size} bytes")
    type_code = buf[p + 4]
    width = layout.id_width.get(type_code)
    if width is None:
        raise RowEventsError(f"event type {type_code} is not a table map or rows event")
    q = p + HEADER_BYTES
    tid = int.from_bytes(buf[q : q + width], "little")
    if type_code == EventType.TABLE_MAP:
        return "map", tid, False
    return "rows", tid, bool(buf[q + width] & ROWS_FLAG_STMT_END)


def _map_schema(layout: _Layout, event: bytes | memoryview) -> str:
    p = HEADER_BYTES + layout.id_width[EventType.TABLE_MAP] + 2
    n = event[p]
    return bytes(event[p + 1 : p + 1 + n]).decode("utf-8", "replace")


def decode_row_events(data: bytes) -> RowEvents:
    """Inverse of `encode_row_events`; checks what the module docstring lists. Raises
    RowEventsError for anything but a valid shipment."""
    if not isinstance(data, (bytes, bytearray)) or data[:2] != ROW_EVENTS_MAGIC:
        raise RowEventsError("not a shipment of row events (bad magic)")
    if len(data) < 7 or data[2] != ROW_EVENTS_VERSION:
        raise RowEventsError(f"row events version {data[2] if len(data) > 2 else None} is not {ROW_EVENTS_VERSION}")
    fde_len = _U32.unpack_from(data, 3)[0]
    if fde_len > FORMAT_DESCRIPTION_BYTES_MAX or 11 + fde_len > len(data):
        raise RowEventsError(f"a format description of {fde_len} bytes")
    raw_fde = bytes(data[7 : 7 + fde_len])
    layout = _layout(raw_fde)
    announced = _U32.unpack_from(data, 7 + fde_len)[0]
    if announced > ROW_EVENTS_MAX:
        raise RowEventsError(f"{announced} events are more than {ROW_EVENTS_MAX}")
    p = start = 11 + fde_len
    end = len(data)
    mapped: set[int] = set()
    ends: list[int] = []
    count = 0
    unpack = _U32.unpack_from
    while p < end:
        if p + HEADER_BYTES > end:
            raise RowEventsError("a truncated event header")
        size = unpack(data, p + 9)[0]
        if p + size > end:
            raise RowEventsError(f"an event of {size} bytes at offset {p - start} overruns the shipment")
        count += 1
        if count > announced:
            raise RowEventsError(f"more than the {announced} events announced")
        kind, tid, stmt_end = _event_facts(layout, data, p, size)
        p += size
        if kind == "map":
            mapped.add(tid)
        elif tid not in mapped:
            raise RowEventsError(f"a rows event for table id {tid}, not mapped in its statement")
        elif stmt_end:
            mapped.clear()
            ends.append(p - start)
    if count != announced:
        raise RowEventsError(f"{count} events of the {announced} announced")
    if not ends or ends[-1] != end - start:
        raise RowEventsError("the shipment does not end at a statement end")
    return RowEvents(raw_fde, bytes(data[start:]), tuple(ends))


# --- applying ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Session:
    format_description: bytes  # the last one this connection's server was given (b"": none yet)
    packet_bytes_max: int  # the server's max_allowed_packet less PACKET_SLACK_BYTES


class RowEventApplier:
    """Applies shipped row events on the applier's connections (see the module docstring).
    One per member; remembers per connection what its server session was given."""

    def __init__(self, packet_bytes_max: int = APPLY_PACKET_BYTES_MAX) -> None:
        self.packet_bytes_max = packet_bytes_max
        self._sessions: weakref.WeakKeyDictionary[BackendConnection, _Session] = weakref.WeakKeyDictionary()
        self.statements_sent = 0
        self.fragmented = 0

    async def __call__(self, conn: BackendConnection, data: bytes, /, *, head: Sequence[str] = (),
                       tail: Sequence[str] = ()) -> list[Result]:
        """The applier's ApplyChanges: `apply`."""
        return await self.apply(conn, data, head=head, tail=tail)

    async def apply(self, conn: BackendConnection, data: bytes, *, head: Sequence[str] = (),
                    tail: Sequence[str] = ()) -> list[Result]:
        """Apply shipment `data` on `conn`, with `head` statements run before it and `tail`
        statements after it in the same round trips (the caller's BEGIN, position, COMMIT).
        Returns the results of `tail`. Raises RowEventsError (not a valid shipment, too large for
        the server, applied with warnings, or the server would run triggers), BackendError (the
        server refused an event: a missing row 1032, a duplicate key 1062, …), BackendLost."""
        rows = decode_row_events(data)
        session = self._sessions.get(conn)
        try:
            if session is None:
                session = await self._set_up(conn)
            statements = _binlog_statements(rows, min(session.packet_bytes_max, self.packet_bytes_max))
            first: list[bytes] = [s.encode() for s in head]
            if session.format_description != rows.format_description:
                first.append(_binlog(rows.format_description))
            results = await self._send(conn, session, first, statements, [s.encode() for s in tail])
        except BaseException:
            self._sessions.pop(conn, None)  # what its server was given is unknown now
            raise
        session.format_description = rows.format_description
        return results

    async def _set_up(self, conn: BackendConnection) -> _Session:
        mariadb = bool(conn.handshake and conn.handshake.is_mariadb)
        if mariadb:
            results = await conn.execute_all(
                "SET SESSION binlog_annotate_row_events = OFF;"
                "SELECT @@GLOBAL.slave_run_triggers_for_rbr, @@max_allowed_packet")
            triggers, packet = results[-1].rows[0]
            if (triggers or b"").decode().upper() not in _TRIGGERS_OFF:
                raise RowEventsError(
                    f"the backend runs triggers for replicated row events (slave_run_triggers_for_rbr="
                    f"{(triggers or b'').decode()}): a trigger's writes would be applied twice; set it to NO")
        else:
            packet = (await conn.execute("SELECT @@max_allowed_packet")).rows[0][0]
        session = _Session(b"", max(int(packet or 0) - PACKET_SLACK_BYTES, 4_096))
        self._sessions[conn] = session
        return session

    async def _send(self, conn: BackendConnection, session: _Session, first: list[bytes],
                    statements: list[bytes], tail: list[bytes]) -> list[Result]:
        bound = min(session.packet_bytes_max, self.packet_bytes_max)
        packet: list[bytes] = first
        size = sum(len(s) + 1 for s in packet)
        results: list[Result] = []
        for statement in statements:
            if len(statement) > session.packet_bytes_max:
                results = await self._flush(conn, session, packet)
                packet, size = [], 0
                await self._fragmented(conn, session, statement)
                continue
            if packet and size + len(statement) > bound:
                results = await self._flush(conn, session, packet)
                packet, size = [], 0
            packet.append(statement)
            size += len(statement) + 1
        packet += tail
        results = await self._flush(conn, session, packet)
        return results[len(results) - len(tail):] if tail else []

    async def _flush(self, conn: BackendConnection, session: _Session, packet: list[bytes]) -> list[Result]:
        if not packet:
            return []
        # results=: MariaDB drops SERVER_MORE_RESULTS_EXISTS after a BINLOG statement that
        # applied rows (see BackendConnection.command_all); the statements after it still run.
        results = await conn.command_all(Command.QUERY, b";\n".join(packet), results=len(packet))
        if len(results) != len(packet):
            raise RowEventsError(f"[BUG] {len(packet)} statements gave {len(results)} results")
        for statement, result in zip(packet, results):
            if statement.startswith(b"BINLOG "):
                self.statements_sent += 1
                if result.warnings:
                    raise RowEventApplyError(f"applying row events raised {result.warnings} warnings")
        return results

    async def _fragmented(self, conn: BackendConnection, session: _Session, statement: bytes) -> None:
        """A BINLOG statement over max_allowed_packet: its base64 in two user variables."""
        b64 = statement[len(b"BINLOG '") : -1]
        half = (len(b64) + 1) // 2
        parts = (b64[:half], b64[half:])
        if any(len(part) > session.packet_bytes_max - 64 for part in parts):
            raise RowEventsError(
                f"a statement's row events take {len(b64)} bytes of base64, more than two of the backend's packets "
                "(max_allowed_packet) hold: raise max_allowed_packet on the members' backends")
        for name, part in zip(FRAGMENT_VARIABLES, parts):
            await conn.command_all(Command.QUERY, b"SET " + name.encode() + b" = '" + part + b"'")
        result = await conn.command_all(Command.QUERY, b"BINLOG " + ", ".join(FRAGMENT_VARIABLES).encode())
        self.fragmented += 1
        if result[-1].warnings:
            raise RowEventApplyError(f"applying row events raised {result[-1].warnings} warnings")


def _binlog(events: bytes) -> bytes:
    return b"BINLOG '" + base64.b64encode(events) + b"'"


def _binlog_statements(rows: RowEvents, bound: int) -> list[bytes]:
    """BINLOG statements for `rows`' events, each cut at a statement end and holding at most
    `bound` bytes of base64 unless one statement alone is larger."""
    raw_bound = max(bound * 3 // 4 - 16, 1)
    out: list[bytes] = []
    events = rows.events
    start = prev = 0
    for end in rows.statement_ends:
        if end - start > raw_bound and prev > start:
            out.append(_binlog(events[start:prev]))
            start = prev
        prev = end
    out.append(_binlog(events[start:]))
    return out


async def check_binlog_replay(conn: BackendConnection) -> str | None:
    """None when `conn`'s account may run BINLOG statements, else why not. An empty BINLOG
    statement is checked for the privilege before anything else, and is a syntax error after."""
    try:
        await conn.execute("BINLOG ''")
    except BackendError as exc:
        if exc.backend_errno in (1227, 1045, 1142):
            return exc.message
        return None
    return None
