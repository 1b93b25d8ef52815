"""What members say to each other through group communication (replication level).

Every message is one GCS payload: a version byte, a kind byte, then a kind-specific body of
fixed-width integers and length-prefixed byte strings. Decoding validates everything and raises
`ReplicationDecodeError`; a member that receives a payload it cannot decode goes to ERROR
(every member receives the same bytes, so a decode failure is a bug or a version mismatch,
never something to skip silently).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import assert_never

from .certifier import KeyHash, Seq

VERSION = 3  # 2: TxnMessage.changes holds the row events as logged (replication/rowevents.py); 3: DdlOutcome.logged
WRITE_SET_KEYS_MAX = 10_000_000
SEEN_SEQS_MAX = 10_000  # seqs above the snapshot a transaction names; beyond, fewer (safe: more conflicts)  # per transaction; more is refused before broadcast
TEXT_BYTES_MAX = 1 << 24  # DDL text, member addresses


class ReplicationDecodeError(Exception):
    """A payload that is not a valid replication message."""


@dataclass(frozen=True, slots=True)
class TxnMessage:
    """A local write transaction asking to commit: certify `write_set` against `snapshot`."""

    origin: str  # member uuid
    txn_id: int  # origin-local, for matching the outcome to the waiting session
    snapshot: Seq
    write_set: tuple[KeyHash, ...]
    changes: bytes  # the row events as logged (opaque here; see replication/rowevents.py)
    ack: bool = False  # consistency AFTER: every member reports when it has applied it
    seen: tuple[Seq, ...] = ()  # seqs committed on the origin above `snapshot` (out of order)
    tables: tuple[KeyHash, ...] = ()  # hashes of the tables and schemas it wrote (DDL certification)


# The session variables a DDL runs under, as MySQL's binlog carries them in a Query event: other
# members set them before running it. Only these names are accepted (they become SET statements).
DDL_CONTEXT_VARIABLES = ("sql_mode", "character_set_client", "collation_connection", "collation_server",
                         "time_zone", "foreign_key_checks", "unique_checks", "default_storage_engine",
                         "explicit_defaults_for_timestamp", "lc_time_names", "check_constraint_checks")
DDL_TABLES_MAX = 10_000  # table / schema hashes one DDL names (more: it names ALL_TABLES instead)


@dataclass(frozen=True, slots=True)
class DdlMessage:
    """A DDL statement, ordered first and then run on every member at its seq: by its origin's
    session (in the client's own session), by every other member after the origin's DdlOutcome,
    under `context` (the origin session's variables, see DDL_CONTEXT_VARIABLES)."""

    origin: str
    txn_id: int
    schema: str  # default schema of the session that ran it ('' for none)
    sql: bytes  # as the client sent it, in its character_set_client
    context: tuple[tuple[str, str], ...] = ()  # (variable, value) pairs
    tables: tuple[KeyHash, ...] = ()  # what it changes (see certifier.Certifier.ddl)

    def __post_init__(self) -> None:
        for name, value in self.context:
            if name not in DDL_CONTEXT_VARIABLES:
                raise ValueError(f"{name!r} is not a DDL context variable")
            if not value.isprintable() or "'" in value or "\\" in value or len(value) > 1024:
                raise ValueError(f"value {value[:40]!r} of {name} cannot be quoted as a plain literal")
        if len(self.tables) > DDL_TABLES_MAX:
            raise ValueError(f"a DDL naming {len(self.tables)} tables is over {DDL_TABLES_MAX}")


@dataclass(frozen=True, slots=True)
class DdlOutcome:
    """How DDL `seq` ended on its origin: `errno` 0 → every other member runs it. Otherwise
    (the server's error there) nobody does — unless `logged`: the server wrote it to its binary
    log although it failed, because it changed something first (MariaDB's non-atomic
    `DROP TABLE a, nosuch` drops `a`). Then every member runs it and must fail the same way."""

    origin: str
    seq: Seq
    errno: int = 0
    logged: bool = False


@dataclass(frozen=True, slots=True)
class StableReport:
    """The lowest snapshot `member` may still send (certification garbage collection)."""

    member: str
    lowest_snapshot: Seq


@dataclass(frozen=True, slots=True)
class SyncPoint:
    """A marker in the total order (consistency BEFORE): waiters need everything before it."""

    origin: str
    sync_id: int


@dataclass(frozen=True, slots=True)
class Announce:
    """A member's facts for the group: state, election weight, where clients reach it."""

    member: str
    state: str  # MemberState value: RECOVERING, ONLINE, ERROR, OFFLINE
    weight: int
    member_address: str  # host:port of its member port ('' if none)
    version: str


@dataclass(frozen=True, slots=True)
class AppliedAck:
    """`member` has committed `seq` on its backend (answers TxnMessage.ack)."""

    member: str
    seq: Seq


class AdminAction(enum.Enum):
    """GR's group actions (replication/admin.py): applied by every member at delivery."""

    SET_PRIMARY = 1  # group_replication_set_as_primary(target)
    SINGLE_PRIMARY = 2  # group_replication_switch_to_single_primary_mode([target])
    MULTI_PRIMARY = 3  # group_replication_switch_to_multi_primary_mode()
    # The old primary's second step of SET_PRIMARY: its transactions running when the action
    # was ordered have ended (or were rolled back at the timeout); the switch happens here.
    HANDOVER_DONE = 4


@dataclass(frozen=True, slots=True)
class AdminOp:
    """A group action asked for on `origin` (its session waits for the outcome of `op_id`).

    `target` is a member uuid, or '' (SINGLE_PRIMARY without one elects; MULTI_PRIMARY has none).
    `timeout_s`: set_as_primary's running-transactions timeout (0–3600), None when not given.
    Validated again at delivery by every member's engine, so all decide the same."""

    origin: str
    op_id: int
    action: AdminAction
    target: str = ""
    timeout_s: int | None = None

    def __post_init__(self) -> None:
        if self.action in (AdminAction.SET_PRIMARY, AdminAction.HANDOVER_DONE) and not self.target:
            raise ValueError(f"{self.action.name} needs a target member")
        if self.timeout_s is not None and not 0 <= self.timeout_s <= 3600:
            raise ValueError(f"timeout {self.timeout_s} outside 0..3600")
        if self.action is AdminAction.MULTI_PRIMARY and self.target:
            raise ValueError("MULTI_PRIMARY takes no target member")


STATS_COUNTERS = 9  # the integer fields of MemberStats, in wire order


@dataclass(frozen=True, slots=True)
class MemberStats:
    """`member`'s counters for performance_schema.replication_group_member_stats (GR broadcasts
    its members' stats the same way): every member shows the last report of each other one."""

    member: str
    in_queue: int = 0  # COUNT_TRANSACTIONS_IN_QUEUE: waiting for certification
    checked: int = 0  # COUNT_TRANSACTIONS_CHECKED
    conflicts: int = 0  # COUNT_CONFLICTS_DETECTED
    rows_validating: int = 0  # COUNT_TRANSACTIONS_ROWS_VALIDATING: certification database size
    last_conflict_free: int = 0  # seq of LAST_CONFLICT_FREE_TRANSACTION (0: none)
    remote_in_applier_queue: int = 0  # COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE
    remote_applied: int = 0  # COUNT_TRANSACTIONS_REMOTE_APPLIED
    local_proposed: int = 0  # COUNT_TRANSACTIONS_LOCAL_PROPOSED
    local_rollback: int = 0  # COUNT_TRANSACTIONS_LOCAL_ROLLBACK

    def counters(self) -> tuple[int, ...]:
        return (self.in_queue, self.checked, self.conflicts, self.rows_validating, self.last_conflict_free,
                self.remote_in_applier_queue, self.remote_applied, self.local_proposed, self.local_rollback)

    def __post_init__(self) -> None:
        if min(self.counters()) < 0:
            raise ValueError(f"negative counter in {self!r}")


Message = (TxnMessage | DdlMessage | StableReport | SyncPoint | Announce | AppliedAck | AdminOp | MemberStats
           | DdlOutcome)

_KIND = {TxnMessage: 1, DdlMessage: 2, StableReport: 3, SyncPoint: 4, Announce: 5, AppliedAck: 6, AdminOp: 7,
         MemberStats: 8, DdlOutcome: 9}
_Q = struct.Struct("<Q")
_I = struct.Struct("<I")


def _bytes(b: bytes) -> bytes:
    return _I.pack(len(b)) + b


def _text(s: str) -> bytes:
    return _bytes(s.encode("utf-8"))


def _hashes(hashes: tuple[KeyHash, ...]) -> bytes:
    return _I.pack(len(hashes)) + struct.pack(f"<{len(hashes)}Q", *hashes)


def encode(msg: Message) -> bytes:
    head = bytes((VERSION, _KIND[type(msg)]))
    match msg:
        case TxnMessage():
            if len(msg.write_set) > WRITE_SET_KEYS_MAX:
                raise ValueError(f"write set of {len(msg.write_set)} keys is over {WRITE_SET_KEYS_MAX}")
            ws = struct.pack(f"<{len(msg.write_set)}Q", *msg.write_set)
            if len(msg.seen) > SEEN_SEQS_MAX:
                raise ValueError(f"{len(msg.seen)} seen seqs is over {SEEN_SEQS_MAX}")
            seen = struct.pack(f"<{len(msg.seen)}Q", *msg.seen)
            return b"".join((head, _text(msg.origin), _Q.pack(msg.txn_id), _Q.pack(msg.snapshot),
                             _I.pack(len(msg.write_set)), ws, _bytes(msg.changes), bytes((1 if msg.ack else 0,)),
                             _I.pack(len(msg.seen)), seen, _hashes(msg.tables)))
        case DdlMessage():
            if len(msg.sql) > TEXT_BYTES_MAX:
                raise ValueError(f"DDL of {len(msg.sql)} bytes is over {TEXT_BYTES_MAX}")
            context = b"".join(_text(name) + _text(value) for name, value in msg.context)
            return b"".join((head, _text(msg.origin), _Q.pack(msg.txn_id), _text(msg.schema), _bytes(msg.sql),
                             _I.pack(len(msg.context)), context, _hashes(msg.tables)))
        case DdlOutcome():
            return b"".join((head, _text(msg.origin), _Q.pack(msg.seq), _I.pack(msg.errno),
                             bytes((1 if msg.logged else 0,))))
        case StableReport():
            return b"".join((head, _text(msg.member), _Q.pack(msg.lowest_snapshot)))
        case SyncPoint():
            return b"".join((head, _text(msg.origin), _Q.pack(msg.sync_id)))
        case Announce():
            return b"".join((head, _text(msg.member), _text(msg.state), _I.pack(msg.weight),
                             _text(msg.member_address), _text(msg.version)))
        case AppliedAck():
            return b"".join((head, _text(msg.member), _Q.pack(msg.seq)))
        case AdminOp():
            return b"".join((head, _text(msg.origin), _Q.pack(msg.op_id), bytes((msg.action.value,)),
                             _text(msg.target), _I.pack(0 if msg.timeout_s is None else msg.timeout_s + 1)))
        case MemberStats():
            return b"".join((head, _text(msg.member), *(_Q.pack(x) for x in msg.counters())))
        case _:
            assert_never(msg)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ReplicationDecodeError("truncated message")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def q(self) -> int:
        return int(_Q.unpack(self.take(8))[0])

    def i(self) -> int:
        return int(_I.unpack(self.take(4))[0])

    def blob(self, limit: int = 1 << 31) -> bytes:
        n = self.i()
        if n > limit:
            raise ReplicationDecodeError(f"field of {n} bytes over its bound")
        return self.take(n)

    def text(self) -> str:
        try:
            return self.blob(TEXT_BYTES_MAX).decode("utf-8")
        except UnicodeDecodeError:
            raise ReplicationDecodeError("invalid UTF-8 text") from None

    def hashes(self, limit: int) -> tuple[KeyHash, ...]:
        n = self.i()
        if n > limit:
            raise ReplicationDecodeError(f"{n} hashes over their bound of {limit}")
        return tuple(KeyHash(x) for x in struct.unpack(f"<{n}Q", self.take(8 * n)))

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ReplicationDecodeError(f"{len(self.data) - self.pos} trailing bytes")


def decode(payload: bytes) -> Message:
    """Decode one payload; raises ReplicationDecodeError on anything invalid."""
    if len(payload) < 2:
        raise ReplicationDecodeError("payload too short")
    if payload[0] != VERSION:
        raise ReplicationDecodeError(f"unsupported message version {payload[0]}")
    r = _Reader(payload)
    r.pos = 2
    kind = payload[1]
    msg: Message
    if kind == 1:
        origin, txn_id, snapshot, n = r.text(), r.q(), r.q(), r.i()
        if n > WRITE_SET_KEYS_MAX:
            raise ReplicationDecodeError("write set over its bound")
        ws = struct.unpack(f"<{n}Q", r.take(8 * n))
        changes = r.blob()
        flag = r.take(1)[0]
        if flag > 1:
            raise ReplicationDecodeError(f"invalid ack flag {flag}")
        m = r.i()
        if m > SEEN_SEQS_MAX:
            raise ReplicationDecodeError("seen seqs over their bound")
        seen = tuple(Seq(x) for x in struct.unpack(f"<{m}Q", r.take(8 * m)))
        tables = r.hashes(WRITE_SET_KEYS_MAX)
        msg = TxnMessage(origin, txn_id, Seq(snapshot), tuple(KeyHash(k) for k in ws), changes, bool(flag), seen,
                         tables)
    elif kind == 2:
        origin, txn_id, schema, sql = r.text(), r.q(), r.text(), r.blob(TEXT_BYTES_MAX)
        n = r.i()
        if n > len(DDL_CONTEXT_VARIABLES):
            raise ReplicationDecodeError(f"{n} DDL context variables")
        context = tuple((r.text(), r.text()) for _ in range(n))
        tables = r.hashes(DDL_TABLES_MAX)
        try:
            msg = DdlMessage(origin, txn_id, schema, sql, context, tables)
        except ValueError as exc:
            raise ReplicationDecodeError(f"invalid DDL message: {exc}") from None
    elif kind == 9:
        origin, seq, errno, logged = r.text(), Seq(r.q()), r.i(), r.take(1)[0]
        if logged > 1 or (logged and not errno):
            raise ReplicationDecodeError(f"invalid DDL outcome flag {logged} (errno {errno})")
        msg = DdlOutcome(origin, seq, errno, bool(logged))
    elif kind == 3:
        msg = StableReport(r.text(), Seq(r.q()))
    elif kind == 4:
        msg = SyncPoint(r.text(), r.q())
    elif kind == 5:
        msg = Announce(r.text(), r.text(), r.i(), r.text(), r.text())
    elif kind == 6:
        msg = AppliedAck(r.text(), Seq(r.q()))
    elif kind == 7:
        origin, op_id, action = r.text(), r.q(), r.take(1)[0]
        try:
            target, timeout = r.text(), r.i()
            msg = AdminOp(origin, op_id, AdminAction(action), target, None if timeout == 0 else timeout - 1)
        except ValueError as exc:
            raise ReplicationDecodeError(f"invalid admin operation: {exc}") from None
    elif kind == 8:
        member = r.text()
        msg = MemberStats(member, *(r.q() for _ in range(STATS_COUNTERS)))
    else:
        raise ReplicationDecodeError(f"unknown message kind {kind}")
    r.end()
    return msg
