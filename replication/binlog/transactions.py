"""Assembling binlog events into transactions (pure: events in, transactions out).

Theory of operation. MariaDB writes every event group between a GTID event and its terminator:

    XA PREPARE      Gtid(PREPARED_XA, xid) Annotate_rows? Table_map Rows… … Query "XA END …" XA_prepare
    XA COMMIT/ROLLBACK of a prepared one     Gtid(COMPLETED_XA, xid) Query "XA COMMIT …"/"XA ROLLBACK …"
    an InnoDB transaction                    Gtid … Xid
    a non-transactional change               Gtid … Query "COMMIT"
    DDL and other standalone statements      Gtid(STANDALONE) Query

`Assembler.feed(event)` returns the transactions the event completes (zero or one). Rows events
are decoded as they arrive against the group's table maps, with one compiled `RowDecoder` per
table definition kept across groups (bounded by `DECODER_CACHE_MAX`). A transaction whose rows
events pass `transaction_bytes_max` keeps being tracked to its end but stops keeping rows: it is
delivered with `oversize=True` and no tables, so its owner can refuse it (GR's 3100) without the
assembler ever holding more than the bound. Rows events outside any group (no GTID first, which
MariaDB never writes) are delivered as a transaction with `gtid=None`.

Savepoints: for a transaction touching transactional tables only, ROLLBACK TO SAVEPOINT truncates
the server's binlog cache, so rolled-back rows never reach the binlog. When non-transactional
tables are involved the server logs the "ROLLBACK TO" statement instead; such a transaction is
delivered with `rolled_back_to_savepoint=True` (its row list is not the transaction's effect).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..rowimage import TRANSACTION_SIZE_LIMIT_DEFAULT
from .events import (
    BinlogDecodeError, Event, Gtid, Query, RowsEvent, TableMap, XaId, XaPrepare, XidEvent, AnnotateRows,
)
from .rows import BinlogRowChange, RowDecoder, decoder_for

# One limit, one name (STYLE §29): the binlog bytes of one transaction's rows events are bounded
# by the same default as its row images (group_replication_transaction_size_limit).
TRANSACTION_BYTES_MAX = TRANSACTION_SIZE_LIMIT_DEFAULT
DECODER_CACHE_MAX = 4_096  # table definitions whose compiled row decoders are kept
TABLE_MAPS_PER_TRANSACTION_MAX = 65_536  # table ids one event group may map


@dataclass(frozen=True, slots=True)
class TableRows:
    """Consecutive row changes of one table within a transaction (one or more rows events)."""

    table_map: TableMap
    changes: tuple[BinlogRowChange, ...]

    @property
    def schema(self) -> str:
        return self.table_map.schema

    @property
    def table(self) -> str:
        return self.table_map.table


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
    row_count: int
    oversize: bool = False
    rolled_back_to_savepoint: bool = False

    @property
    def has_rows(self) -> bool:
        return self.row_count > 0 or self.oversize

    @property
    def is_xa_prepare(self) -> bool:
        return self.end == "xa_prepare"


@dataclass(slots=True)
class _Open:
    gtid: Gtid | None
    table_maps: dict[int, TableMap] = field(default_factory=dict)
    tables: list[tuple[TableMap, list[BinlogRowChange]]] = field(default_factory=list)
    statements: list[bytes] = field(default_factory=list)
    queries: list[bytes] = field(default_factory=list)
    rows_bytes: int = 0
    row_count: int = 0
    oversize: bool = False
    savepoint_rollback: bool = False

    def close(self, end: str, xid: XaId | None) -> BinlogTransaction:
        tables = () if self.oversize else tuple(TableRows(tm, tuple(ch)) for tm, ch in self.tables)
        return BinlogTransaction(
            self.gtid, end, xid, tables, tuple(self.statements), tuple(self.queries), self.rows_bytes,
            self.row_count, self.oversize, self.savepoint_rollback,
        )


def _words(sql: bytes, n: int) -> list[bytes]:
    return sql.lstrip().split(None, n)[:n]


class Assembler:
    """See the module docstring. Not thread-safe; one per stream."""

    def __init__(self, *, transaction_bytes_max: int = TRANSACTION_BYTES_MAX) -> None:
        if transaction_bytes_max <= 0:
            raise ValueError("transaction_bytes_max must be positive")
        self.transaction_bytes_max = transaction_bytes_max
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

    def feed(self, event: Event) -> BinlogTransaction | None:
        """Take the next event of the stream; return the transaction it completes, if any.

        Raises BinlogDecodeError when the events do not form valid groups (a GTID inside an
        open group, rows for an unmapped table id) and BinlogUnsupported for rows it cannot
        decode; the stream must then be reopened (the assembler is reset).
        """
        try:
            return self._feed(event)
        except BinlogDecodeError:
            self._open = None
            raise

    def _feed(self, event: Event) -> BinlogTransaction | None:
        group = self._open
        if isinstance(event, Gtid):
            if group is not None:
                raise BinlogDecodeError(f"GTID {event.text} inside the unterminated group of {_gtid_text(group.gtid)}")
            self._open = _Open(event)
            return None
        if isinstance(event, TableMap):
            if group is None:
                group = self._open = _Open(None)
            if len(group.table_maps) >= TABLE_MAPS_PER_TRANSACTION_MAX:
                raise BinlogDecodeError("too many table maps in one event group")
            group.table_maps[event.table_id] = event
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
            if not group.oversize:
                changes = self._decoder(table_map).decode(event)
                group.row_count += len(changes)
                if group.tables and group.tables[-1][0] is table_map:
                    group.tables[-1][1].extend(changes)
                else:
                    group.tables.append((table_map, changes))
            if group.gtid is None and event.statement_end:
                return self._finish("none", None)
            return None
        if group is None:
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
        return group.close(end, xid)

    def reset(self) -> None:
        """Forget the open group (the stream was reopened at a group boundary)."""
        self._open = None


def _gtid_text(gtid: Gtid | None) -> str:
    return gtid.text if gtid is not None else "(no GTID)"
