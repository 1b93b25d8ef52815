"""Reading a backend's binary log: where a member's write transactions are read back (DESIGN §5).

Layers, bottom up (each usable alone; none knows about members or sessions):

* `events`       pure: one event's bytes → a frozen record (header, checksum, type dispatch).
* `rows`         pure: a rows event + its table map → row values in `rowimage` form;
                 `to_row_changes` turns them into the `RowChange`s the applier applies.
* `transactions` pure: events → `BinlogTransaction`s (GTID … XA_PREPARE / XID / COMMIT).
* `stream`       I/O: a replication connection (COM_BINLOG_DUMP) yielding decoded events.
* `reader`       I/O: stream + assembler; `await reader.prepared(xid, timeout_s)` and a hook
                 for rows written outside member-controlled XA.
"""

from .events import (
    BinlogChecksumError, BinlogDecodeError, BinlogError, BinlogUnsupported, Event, EventType, Gtid, Query, RowsEvent,
    TableMap, TableMapCache, XaId, XaPrepare, decode_event,
)
from .reader import BinlogReader, BinlogTransactionTooLarge, ReaderBusy, ReaderLimits, TransactionEvicted
from .rows import (
    NOT_LOGGED, BinlogRowChange, RowDecoder, WeightRequest, decode_rows, decoder_for, fetch_weights, to_row_changes,
    weight_requests,
)
from .stream import BinlogPosition, BinlogStream, BinlogStreamBroken
from .transactions import Assembler, BinlogTransaction, TableRows

__all__ = [
    "Assembler", "BinlogChecksumError", "BinlogDecodeError", "BinlogError", "BinlogPosition", "BinlogReader",
    "BinlogRowChange", "BinlogStream", "BinlogStreamBroken", "BinlogTransaction", "BinlogTransactionTooLarge",
    "BinlogUnsupported", "Event", "EventType", "Gtid", "NOT_LOGGED", "Query", "ReaderBusy", "ReaderLimits",
    "RowDecoder", "RowsEvent", "TableMap", "TableMapCache", "TableRows", "TransactionEvicted", "WeightRequest", "XaId", "XaPrepare",
    "decode_event", "decode_rows", "decoder_for", "fetch_weights", "to_row_changes", "weight_requests",
]
