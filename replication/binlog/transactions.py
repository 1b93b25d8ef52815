"""Assembling binlog events into transactions (pure: events in, transactions out).

Theory of operation. MariaDB writes every event group between a GTID event and its terminator:

    XA PREPARE      Gtid(PREPARED_XA, xid) Annotate_rows? Table_map Rows… … Query "XA END …" XA_prepare
    XA COMMIT/ROLLBACK of a prepared one     Gtid(COMPLETED_XA, xid) Query "XA COMMIT …"/"XA ROLLBACK …"
    an InnoDB transaction                    Gtid … Xid
    a non-transactional change               Gtid … Query "COMMIT"
    DDL and other standalone statements      Gtid(STANDALONE) Query

`Assembler.feed(event)` returns the transactions the event completes (zero or one). Rows events
are decoded as they arrive against the group's table maps, with one compiled `RowDecoder` per
table definition kept across groups (bounded by `DECODER_CACHE_MAX`). With
`decode_outside_xa=False` (a member's reader) only the groups that end in XA PREPARE (or XA
COMMIT … ONE PHASE) are decoded, when they end; every other group keeps its rows events as they
came and decodes them on the first read of a table's `changes` (its `row_count` decodes them
too). A member needs only the table names of those — mostly its own applier's commits — and
decoding them cost every secondary a full decode of every transaction it applied. Decoding errors
of such a group then surface where `changes` is read, not from `feed`. A transaction whose rows
events pass `transaction_bytes_max` keeps being tracked to its end but stops keeping rows: it is
delivered with `oversize=True` and no tables, so its owner can refuse it (GR's 3100) without the
assembler ever holding more than the bound. Rows events outside any group (no GTID first, which
MariaDB never writes) are delivered as a transaction with `gtid=None`.

Raw events: with `keep_events=True` the assembler also keeps, for each group it decodes eagerly
(every group in the default mode, prepared XA groups in the member's mode), the bytes of its
Table_map and rows events as the stream read them (`feed(event, raw)`), and the last
Format_description event seen: the transaction then carries `format_description` and `events`,
which is what another server needs to apply it with the BINLOG statement (replication/rowevents.py).
Raw bytes are taken as given (the stream verified their CRC32); they are bounded with the rows by
`transaction_bytes_max` (an oversize transaction keeps none).

Savepoints: for a transaction touching transactional tables only, ROLLBACK TO SAVEPOINT truncates
the server's binlog cache, so rolled-back rows never reach the binlog. When non-transactional
tables are involved the server logs the "ROLLBACK TO" statement instead; such a transaction is
delivered with `rolled_back_to_savepoint=True` (its row list is not the transaction's effect).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..rowimage import TRANSACTION_SIZE_LIMIT_DEFAULT
from .events import (
    AnnotateRows, BinlogDecodeError, Event, FormatDescription, Gtid, Query, RowsEvent, TableMap, XaId, XaPrepare,
    XidEvent,
)
from .rows import BinlogRowChange, RowDecoder, decoder_for

# One limit, one name (STYLE §29): the binlog bytes of one transaction's rows events are bounded
# by the same default as its row images (group_replication_transaction_size_limit).
TRANSACTION_BYTES_MAX = TRANSACTION_SIZE_LIMIT_DEFAULT
DECODER_CACHE_MAX = 4_096  # table definitions whose compiled row decoders are kept
TABLE_MAPS_PER_TRANSACTION_MAX = 65_536  # table ids one event group may map


class TableRows:
    """Consecutive row changes of one table within a transaction (one or more rows events).

    Immutable once built. Built either with its decoded `changes`, or with its rows `events` and
    the `decode` function that turns one into changes: then `changes` decodes them on first use
    (raising BinlogDecodeError / BinlogUnsupported there) and keeps the result.
    """

    __slots__ = ("table_map", "_changes", "_events", "_decode")

    def __init__(self, table_map: TableMap, changes: tuple[BinlogRowChange, ...] | None = None, *,
                 events: tuple[RowsEvent, ...] = (),
                 decode: Callable[[RowsEvent], list[BinlogRowChange]] | None = None) -> None:
        if (changes is None) == (decode is None):
            raise ValueError("[BUG] TableRows takes its changes or its events with a decoder")
        self.table_map = table_map
        self._changes = changes
        self._events = events
        self._decode = decode

    @property
    def changes(self) -> tuple[BinlogRowChange, ...]:
        changes = self._changes
        if changes is None:
            decode = self._decode
            assert decode is not None
            out: list[BinlogRowChange] = []
            for event in self._events:
                out.extend(decode(event))
            changes = self._changes = tuple(out)
            self._events, self._decode = (), None
        return changes

    @property
    def decoded(self) -> bool:
        return self._changes is not None

    @property
    def schema(self) -> str:
        return self.table_map.schema

    @property
    def table(self) -> str:
        return self.table_map.table

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TableRows):
            return NotImplemented
        return self.table_map == other.table_map and self.changes == other.changes

    def __hash__(self) -> int:
        return hash((self.table_map, self.changes))

    def __repr__(self) -> str:
        return f"TableRows(table_map={self.table_map!r}, changes={self.changes!r})"


@dataclass(frozen=True, slots=True)
class BinlogTransaction:
    """One event group. `end` says how it ended:

    "xa_prepare" (xid set), "xa_commit_one_phase" (xid set; MySQL — MariaDB 10.11 logs XA COMMIT
    … ONE PHASE as an ordinary transaction ending in "xid"), "xa_commit" / "xa_rollback" (the
    second phase of a prepared XA, xid set, no rows), "xid" (an ordinary transactional commit),
    "commit" (a non-transactional group ending in Query COMMIT), "rollback", "standalone" (DDL
    and the like), "none" (rows outside any group).
    """

    gtid: Gtid | None
    end: str
    xid: XaId | None
    tables: tuple[TableRows, ...]
    statements: tuple[bytes, ...]  # Annotate_rows texts, in order
    queries: tuple[bytes, ...]  # Query event texts inside the group (XA END, SAVEPOINT, DDL …)
    rows_bytes: int
    counted_rows: int | None = field(compare=False)  # None: rows kept undecoded (row_count decodes them)
    oversize: bool = False
    rolled_back_to_savepoint: bool = False
    # With Assembler(keep_events=True): the Format_description event in force and the group's
    # Table_map and rows events, as logged (see the module docstring); else b"" and ().
    format_description: bytes = field(default=b"", compare=False)
    events: tuple[bytes | memoryview, ...] = field(default=(), compare=False)

    @property
    def row_count(self) -> int:
        if self.counted_rows is not None:
            return self.counted_rows
        return sum(len(t.changes) for t in self.tables)

    @property
    def has_rows(self) -> bool:
        if self.counted_rows is None:
            return self.rows_bytes > 0  # every logged row takes at least its NULL bitmap's byte
        return self.counted_rows > 0 or self.oversize

    @property
    def is_xa_prepare(self) -> bool:
        return self.end == "xa_prepare"


@dataclass(slots=True)
class _Open:
    gtid: Gtid | None
    table_maps: dict[int, TableMap] = field(default_factory=dict)
    # Per run of one table's rows events: its decoded changes, or (lazy) the events themselves.
    tables: list[tuple[TableMap, list]] = field(default_factory=list)  # type: ignore[type-arg]
    statements: list[bytes] = field(default_factory=list)
    queries: list[bytes] = field(default_factory=list)
    rows_bytes: int = 0
    row_count: int = 0
    oversize: bool = False
    savepoint_rollback: bool = False
    raw: list[bytes | memoryview] | None = None  # Table_map and rows events as logged (keep_events)
    format_description: bytes = b""

    def close(self, end: str, xid: XaId | None) -> BinlogTransaction:
        tables = () if self.oversize else tuple(TableRows(tm, tuple(ch)) for tm, ch in self.tables)
        return BinlogTransaction(
            self.gtid, end, xid, tables, tuple(self.statements), tuple(self.queries), self.rows_bytes,
            self.row_count, self.oversize, self.savepoint_rollback, self.format_description,
            tuple(self.raw) if self.raw and not self.oversize else (),
        )

    def close_lazy(self, end: str, xid: XaId | None, decoder: Callable[[TableMap], RowDecoder]) -> BinlogTransaction:
        """As close, the rows events kept undecoded (each table decodes its own on first use)."""
        tables = () if self.oversize else tuple(
            TableRows(tm, events=tuple(evs), decode=lambda ev, tm=tm: decoder(tm).decode(ev)) for tm, evs in self.tables)
        return BinlogTransaction(
            self.gtid, end, xid, tables, tuple(self.statements), tuple(self.queries), self.rows_bytes,
            None, self.oversize, self.savepoint_rollback,
        )


def _words(sql: bytes, n: int) -> list[bytes]:
    return sql.lstrip().split(None, n)[:n]


class Assembler:
    """See the module docstring. Not thread-safe; one per stream."""

    def __init__(self, *, transaction_bytes_max: int = TRANSACTION_BYTES_MAX, decode_outside_xa: bool = True,
                 keep_events: bool = False) -> None:
        if transaction_bytes_max <= 0:
            raise ValueError("transaction_bytes_max must be positive")
        self.transaction_bytes_max = transaction_bytes_max
        self.decode_outside_xa = decode_outside_xa
        self.keep_events = keep_events
        self._format_description = b""  # the last one fed (keep_events)
        self._open: _Open | None = None
        self._decoders: dict[int, RowDecoder] = {}
        self.transactions = 0

    @property
    def in_group(self) -> bool:
        return self._open is not None

    def _decoder(self, table_map: TableMap) -> RowDecoder:
        cached = self._decoders.get(table_map.table_id)
        if cached is not None and (cached.table_map is table_map or cached.table_map.same_table(table_map)):
            return cached
        if len(self._decoders) >= DECODER_CACHE_MAX:
            self._decoders.clear()
        decoder = decoder_for(table_map)
        self._decoders[table_map.table_id] = decoder
        return decoder

    def feed(self, event: Event, raw: bytes | memoryview | None = None) -> BinlogTransaction | None:
        """Take the next event of the stream; return the transaction it completes, if any.

        `raw` is the event's bytes as read (header and checksum included); needed, with
        keep_events, for Format_description, Table_map and rows events.
        Raises BinlogDecodeError when the events do not form valid groups (a GTID inside an
        open group, rows for an unmapped table id) and BinlogUnsupported for rows it cannot
        decode; the stream must then be reopened (the assembler is reset).
        """
        try:
            return self._feed(event, raw)
        except BinlogDecodeError:
            self._open = None
            raise

    def _new_group(self, gtid: Gtid | None) -> _Open:
        group = self._open = _Open(gtid)
        if self.keep_events and (self.decode_outside_xa or gtid is None or gtid.prepared_xa):
            group.raw = []
            group.format_description = self._format_description
        return group

    def _keep(self, group: _Open, raw: bytes | memoryview | None, event: Event) -> None:
        if raw is None:
            raise ValueError(f"[BUG] keep_events needs the raw bytes of every {type(event).__name__}")
        assert group.raw is not None
        group.raw.append(raw)

    def _feed(self, event: Event, raw: bytes | memoryview | None) -> BinlogTransaction | None:
        group = self._open
        if isinstance(event, Gtid):
            if group is not None:
                raise BinlogDecodeError(f"GTID {event.text} inside the unterminated group of {_gtid_text(group.gtid)}")
            self._new_group(event)
            return None
        if isinstance(event, TableMap):
            if group is None:
                group = self._new_group(None)
            if len(group.table_maps) >= TABLE_MAPS_PER_TRANSACTION_MAX:
                raise BinlogDecodeError("too many table maps in one event group")
            group.table_maps[event.table_id] = event
            if group.raw is not None:
                self._keep(group, raw, event)
            return None
        if isinstance(event, RowsEvent):
            if group is None:
                raise BinlogDecodeError(f"rows event for table id {event.table_id} without its table map")
            table_map = group.table_maps.get(event.table_id)
            if table_map is None:
                raise BinlogDecodeError(f"rows event for unmapped table id {event.table_id}")
            group.rows_bytes += len(event.rows)
            if group.rows_bytes > self.transaction_bytes_max:
                group.oversize = True
                group.tables.clear()
                group.raw = None
            if group.raw is not None:
                self._keep(group, raw, event)
            if not group.oversize:
                if self.decode_outside_xa:
                    changes = self._decoder(table_map).decode(event)
                    group.row_count += len(changes)
                    if group.tables and group.tables[-1][0] is table_map:
                        group.tables[-1][1].extend(changes)
                    else:
                        group.tables.append((table_map, changes))
                elif group.tables and group.tables[-1][0] is table_map:
                    group.tables[-1][1].append(event)
                else:
                    group.tables.append((table_map, [event]))
            if group.gtid is None and event.statement_end:
                return self._finish("none", None)
            return None
        if group is None:
            if isinstance(event, FormatDescription) and self.keep_events:
                if raw is None:
                    raise ValueError("[BUG] keep_events needs the raw bytes of every FormatDescription")
                self._format_description = bytes(raw)
            return None  # FORMAT_DESCRIPTION, ROTATE, heartbeats, Gtid_list, … between groups
        if isinstance(event, AnnotateRows):
            group.statements.append(event.sql)
            return None
        if isinstance(event, XaPrepare):
            return self._finish("xa_commit_one_phase" if event.one_phase else "xa_prepare", event.xid)
        if isinstance(event, XidEvent):
            return self._finish("xid", None)
        if isinstance(event, Query):
            return self._query(group, event)
        return None

    def _query(self, group: _Open, event: Query) -> BinlogTransaction | None:
        sql = event.sql
        head = [w.upper() for w in _words(sql, 2)]
        gtid = group.gtid
        if gtid is not None and gtid.completed_xa and head[:1] == [b"XA"]:
            end = "xa_commit" if head[1:2] == [b"COMMIT"] else "xa_rollback"
            return self._finish(end, gtid.xid)
        if gtid is not None and gtid.standalone:
            group.queries.append(sql)
            return self._finish("standalone", None)
        if head == [b"COMMIT"]:
            return self._finish("commit", None)
        if head == [b"ROLLBACK"]:
            return self._finish("rollback", None)
        if head[:2] == [b"ROLLBACK", b"TO"]:
            group.savepoint_rollback = True
        group.queries.append(sql)
        return None

    def _finish(self, end: str, xid: XaId | None) -> BinlogTransaction:
        group = self._open
        assert group is not None
        self._open = None
        self.transactions += 1
        if self.decode_outside_xa:
            return group.close(end, xid)
        if end in ("xa_prepare", "xa_commit_one_phase"):
            # Decoded now, as every group is in the default mode: errors come from feed().
            for k, (table_map, events) in enumerate(group.tables):
                decoder = self._decoder(table_map)
                changes: list[BinlogRowChange] = []
                for event in events:
                    changes.extend(decoder.decode(event))
                group.row_count += len(changes)
                group.tables[k] = (table_map, changes)
            return group.close(end, xid)
        return group.close_lazy(end, xid, self._decoder)

    def reset(self) -> None:
        """Forget the open group (the stream was reopened at a group boundary)."""
        self._open = None


def _gtid_text(gtid: Gtid | None) -> str:
    return gtid.text if gtid is not None else "(no GTID)"
