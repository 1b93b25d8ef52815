"""The donor's transaction cache: payloads of certified seqs kept for joiners, bounded by bytes
(oldest dropped first) — GR's group_replication_message_cache_size.

A joiner fetches from it the seqs its backend lacks (RECOVERY TRANSACTIONS); when the cache no
longer reaches back to the first seq it lacks, the joiner clones the donor's data instead
(replication/recovery/clone.py).
"""

from __future__ import annotations

from collections import OrderedDict

from ..certifier import Seq
from ..engine import DdlDecided, ExecuteDdl
from ..messages import DdlMessage, ReplicationDecodeError, decode, encode

CACHE_TXN = "T"  # row events of a transaction (rowevents.ship)
CACHE_DDL = "D"  # a DDL every member runs (payload: its DdlMessage, ddl_blob)
CACHE_DDL_SKIPPED = "S"  # a DDL that failed on its origin: nobody runs it (its seq is recorded)
CACHE_DDL_PENDING = "P"  # a DDL not decided yet: the joiner gets its decision from the group
# A DDL that failed on its origin after changing something (the origin's server logged it):
# everyone runs it and must fail alike. The kind is this prefix and the errno: "E1051".
CACHE_DDL_FAILED_ALIKE = "E"


def ddl_kind(decision: DdlDecided) -> str:
    """How the cache marks a DDL once `decision` decided it."""
    if not decision.run:
        return CACHE_DDL_SKIPPED
    return f"{CACHE_DDL_FAILED_ALIKE}{decision.errno}" if decision.errno else CACHE_DDL


def is_ddl_kind(kind: str) -> bool:
    return kind in (CACHE_DDL, CACHE_DDL_SKIPPED, CACHE_DDL_PENDING) or kind.startswith(CACHE_DDL_FAILED_ALIKE)


def ddl_decision(seq: Seq, kind: str) -> DdlDecided | None:
    """Inverse of ddl_kind: the decision a cached DDL carries (None: not decided yet). Raises
    ValueError for a kind that is no DDL's."""
    if kind == CACHE_DDL_PENDING:
        return None
    if kind in (CACHE_DDL, CACHE_DDL_SKIPPED):
        return DdlDecided(seq, kind == CACHE_DDL)
    errno = kind.removeprefix(CACHE_DDL_FAILED_ALIKE)
    if kind == errno or not errno.isdigit() or int(errno) == 0:
        raise ValueError(f"invalid DDL kind {kind!r} for seq {seq}")
    return DdlDecided(seq, True, int(errno))


def ddl_blob(action: ExecuteDdl) -> bytes:
    """A DDL as the cache keeps it: its DdlMessage (with the origin session's variables)."""
    return encode(DdlMessage(action.origin, action.txn_id, action.schema, action.sql, action.context))


def ddl_unblob(seq: Seq, payload: bytes) -> ExecuteDdl:
    """Inverse of ddl_blob: DDL `seq` for a joiner's applier. Raises ValueError."""
    try:
        msg = decode(payload)
    except ReplicationDecodeError as exc:
        raise ValueError(f"invalid DDL for seq {seq}: {exc}") from None
    if not isinstance(msg, DdlMessage):
        raise ValueError(f"no DDL for seq {seq}")
    return ExecuteDdl(seq, msg.origin, msg.txn_id, msg.schema, msg.sql, False, msg.context)


class TransactionCache:
    """seq → (kind, payload), at most `bytes_max` bytes of payloads."""

    def __init__(self, bytes_max: int) -> None:
        self.bytes_max = bytes_max
        self.bytes = 0
        self._items: OrderedDict[int, tuple[str, bytes]] = OrderedDict()

    def put(self, seq: int, kind: str, payload: bytes) -> None:
        if seq in self._items:
            return
        self._items[seq] = (kind, payload)
        self.bytes += len(payload)
        while self.bytes > self.bytes_max and self._items:
            _, (_, old) = self._items.popitem(last=False)
            self.bytes -= len(old)

    def mark(self, seq: int, kind: str) -> None:
        """Change the kind of a kept seq (a DDL once decided); nothing if it is not kept."""
        item = self._items.get(seq)
        if item is not None:
            self._items[seq] = (kind, item[1])

    def get(self, seq: int) -> tuple[str, bytes] | None:
        return self._items.get(seq)

    def lowest(self) -> int | None:
        """The lowest seq held (None when empty): a joiner lacking anything below it clones."""
        return min(self._items) if self._items else None

    def __len__(self) -> int:
        return len(self._items)
