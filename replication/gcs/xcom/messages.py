"""Messages of the consensus core and their wire encoding.

Every message and value is a frozen, slotted dataclass validated at construction; the union
`Message` is closed and dispatched with `match` + `assert_never` in the core. The transport
carries `encode_message(msg)` bytes opaquely and hands `decode_message(data)` to the core.

Encoding (struct-based, big-endian, no pickle/json)::

    message  := version:u8 (=1) tag:u8 body      -- nothing may follow the body
    member   := uuid:str address:str incarnation:u32
    str      := len:u16 utf-8 bytes               bytes := len:u32 raw bytes
    slot, ballot, seq := u64                      view_id := epoch:u32 number:u64
    tuple[T] := count:u32 T*                      value := kind:u8 body

`decode_message` raises `MessageDecodeError` (and nothing else) on any malformed input:
unknown version or tag, truncated or trailing bytes, bad UTF-8, counts larger than the input
could hold, values that fail validation. A peer that sends garbage has the frame dropped and
counted by the transport (STYLE 9); the core never sees it.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final, assert_never

from replication.gcs.interface import MEMBERS_MAX, MemberId, Slot, ViewId
from replication.gcs.xcom.types import Ballot

__all__ = [
    "WIRE_VERSION",
    "MessageDecodeError",
    "NoOp",
    "NOOP",
    "Run",
    "Batch",
    "ReconfigOp",
    "Reconfig",
    "Value",
    "ConfigRecord",
    "AcceptedValue",
    "OriginSeq",
    "SlotRange",
    "Accept",
    "Accepted",
    "Nack",
    "Prepare",
    "Promise",
    "Decide",
    "Learn",
    "Skip",
    "Fetch",
    "Forgotten",
    "Heartbeat",
    "JoinRequest",
    "Welcome",
    "JoinRefused",
    "NotMember",
    "ForceQuery",
    "ForceState",
    "ForceInstall",
    "ForceAck",
    "Forward",
    "ForwardReconfig",
    "Message",
    "encode_message",
    "decode_message",
]

WIRE_VERSION: Final = 2  # 2: Learn (value-less decide)
_U64_MAX: Final = 2**64 - 1
_U32_MAX: Final = 2**32 - 1


class MessageDecodeError(ValueError):
    """The bytes are not a valid message of this wire version."""


def _check_u64(value: int, what: str) -> None:
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"{what} out of range: {value}")


def _check_u32(value: int, what: str) -> None:
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"{what} out of range: {value}")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class NoOp:
    """The empty value: a skipped or revoked slot."""


NOOP: Final = NoOp()


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive broadcasts of one origin: seqs first_seq, first_seq+1, ..."""

    origin: MemberId
    first_seq: int
    payloads: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.first_seq < 1 or self.first_seq > _U64_MAX:
            raise ValueError(f"Run.first_seq out of range: {self.first_seq}")
        if not self.payloads:
            raise ValueError("Run.payloads must not be empty")


@dataclass(frozen=True, slots=True)
class Batch:
    """Application messages proposed in one slot (batching)."""

    runs: tuple[Run, ...]

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("Batch.runs must not be empty")


class ReconfigOp(enum.IntEnum):
    JOIN = 1
    LEAVE = 2
    EXPEL = 3


@dataclass(frozen=True, slots=True)
class Reconfig:
    """A membership change decided in a slot; it takes effect event_horizon slots later."""

    op: ReconfigOp
    members: tuple[MemberId, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.op, ReconfigOp):
            raise ValueError(f"Reconfig.op must be a ReconfigOp, got {self.op!r}")
        if not 1 <= len(self.members) <= MEMBERS_MAX:
            raise ValueError(f"Reconfig.members: 1..{MEMBERS_MAX} members, got {len(self.members)}")


Value = NoOp | Batch | Reconfig


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """A configuration as carried on the wire: its view id, first slot and members in order."""

    view_id: ViewId
    start: Slot
    members: tuple[MemberId, ...]

    def __post_init__(self) -> None:
        _check_u64(self.start, "ConfigRecord.start")
        if len(self.members) > MEMBERS_MAX:
            raise ValueError(f"ConfigRecord: at most {MEMBERS_MAX} members")
        if len(set(self.members)) != len(self.members):
            raise ValueError("ConfigRecord: duplicate members")


@dataclass(frozen=True, slots=True)
class AcceptedValue:
    slot: Slot
    ballot: Ballot
    value: Value


@dataclass(frozen=True, slots=True)
class OriginSeq:
    """Replicated per-origin state: the next origin_seq expected from `origin`."""

    origin: MemberId
    next_seq: int


@dataclass(frozen=True, slots=True)
class SlotRange:
    """Slots first .. end-1."""

    first: Slot
    end: Slot

    def __post_init__(self) -> None:
        _check_u64(self.first, "SlotRange.first")
        _check_u64(self.end, "SlotRange.end")
        if self.end < self.first:
            raise ValueError("SlotRange: end before first")


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Accept:
    """Phase 2a: accept `value` in `slot` at `ballot` (round 0: the owner, no prepare)."""

    slot: Slot
    ballot: Ballot
    value: Value


@dataclass(frozen=True, slots=True)
class Accepted:
    """Phase 2b: the sender accepted the value of `ballot` in `slot`."""

    slot: Slot
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class Nack:
    """The sender refused `ballot` in `slot`: it promised `promised` (higher)."""

    slot: Slot
    ballot: Ballot
    promised: Ballot


@dataclass(frozen=True, slots=True)
class Prepare:
    """Phase 1a over several slots at once (revocation of a suspected owner's slots)."""

    ballot: Ballot
    slots: tuple[Slot, ...]

    def __post_init__(self) -> None:
        if not self.slots:
            raise ValueError("Prepare.slots must not be empty")


@dataclass(frozen=True, slots=True)
class Promise:
    """Phase 1b: promised `ballot` for `slots`; `accepted` lists what the sender had accepted."""

    ballot: Ballot
    slots: tuple[Slot, ...]
    accepted: tuple[AcceptedValue, ...]


@dataclass(frozen=True, slots=True)
class Decide:
    """`value` is chosen in `slot` (learned at `ballot`)."""

    slot: Slot
    ballot: Ballot
    value: Value


@dataclass(frozen=True, slots=True)
class Learn:
    """`slot` is decided at `ballot` with the value the receiver accepted at that ballot: the
    proposer's Decide without the value, sent to the acceptors it sent its Accept to (links are
    FIFO, so the Accept arrived first). A receiver that holds no value accepted at `ballot`
    ignores it and learns the slot like any missing one (Fetch)."""

    slot: Slot
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class Skip:
    """From the owner: every slot it owns in [first, end) is a no-op (it never proposes there).

    `ballot` is the owner's round-0 ballot: its epoch tells which configuration made the
    sender the owner (a skip from before force_members says nothing about slots after it).
    """

    first: Slot
    end: Slot
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class Fetch:
    """Send me what you know decided in [first, end); an owner skips its unused slots there."""

    first: Slot
    end: Slot


@dataclass(frozen=True, slots=True)
class Forgotten:
    """Reply to Fetch: the sender no longer holds slots below `first_available`."""

    first_available: Slot


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness and progress: the sender's latest known view and next slot to execute."""

    view_id: ViewId
    next_slot: Slot


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A new incarnation (the sender) asks a seed to add it to the group."""


@dataclass(frozen=True, slots=True)
class Welcome:
    """To a joiner: the replicated state after slot next_slot-1; the joiner learns from there."""

    member: MemberId
    next_slot: Slot
    configs: tuple[ConfigRecord, ...]
    origins: tuple[OriginSeq, ...]

    def __post_init__(self) -> None:
        if not self.configs:
            raise ValueError("Welcome.configs must not be empty")


@dataclass(frozen=True, slots=True)
class JoinRefused:
    member: MemberId
    reason: str


@dataclass(frozen=True, slots=True)
class NotMember:
    """`member` is not part of configuration `view_id` (it was expelled or left)."""

    member: MemberId
    view_id: ViewId


@dataclass(frozen=True, slots=True)
class ForceQuery:
    """force_members, step 1: tell me your progress (the sender forces a configuration)."""

    force_id: int
    view_id: ViewId


@dataclass(frozen=True, slots=True)
class ForceState:
    """Reply to ForceQuery: next slot to execute, the undelivered slots known decided, and the
    first executed slot still held (a joiner never held the slots before its welcome)."""

    force_id: int
    next_slot: Slot
    known: tuple[Slot, ...]
    held_from: Slot = Slot(0)


@dataclass(frozen=True, slots=True)
class ForceInstall:
    """force_members, step 2: install `config` at config.start; slots in `gaps` are no-ops."""

    force_id: int
    config: ConfigRecord
    gaps: tuple[SlotRange, ...]


@dataclass(frozen=True, slots=True)
class ForceAck:
    force_id: int


@dataclass(frozen=True, slots=True)
class Forward:
    """paxos_single_leader: a non-leader hands its broadcasts to the leader to propose."""

    run: Run


@dataclass(frozen=True, slots=True)
class ForwardReconfig:
    """paxos_single_leader: a non-leader hands a membership change to the leader to propose."""

    reconfig: Reconfig


Message = (
    Accept
    | Accepted
    | Nack
    | Prepare
    | Promise
    | Decide
    | Learn
    | Skip
    | Fetch
    | Forgotten
    | Heartbeat
    | JoinRequest
    | Welcome
    | JoinRefused
    | NotMember
    | ForceQuery
    | ForceState
    | ForceInstall
    | ForceAck
    | Forward
    | ForwardReconfig
)

# --------------------------------------------------------------------------- encoding

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U64U64 = struct.Struct(">QQ")
_U64U64U64 = struct.Struct(">QQQ")
_VIEW = struct.Struct(">IQ")
_HEADER = struct.Struct(">BB")

_VALUE_NOOP = 0
_VALUE_BATCH = 1
_VALUE_RECONFIG = 2

_TAGS: Final[dict[type, int]] = {
    Accept: 1,
    Accepted: 2,
    Nack: 3,
    Prepare: 4,
    Promise: 5,
    Decide: 6,
    Skip: 7,
    Fetch: 8,
    Forgotten: 9,
    Heartbeat: 10,
    JoinRequest: 11,
    Welcome: 12,
    JoinRefused: 13,
    NotMember: 14,
    ForceQuery: 15,
    ForceState: 16,
    ForceInstall: 17,
    ForceAck: 18,
    Forward: 19,
    ForwardReconfig: 20,
    Learn: 21,
}


class _Writer:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(_U8.pack(v))

    def u32(self, v: int) -> None:
        self.parts.append(_U32.pack(v))

    def u64(self, v: int) -> None:
        self.parts.append(_U64.pack(v))

    def raw(self, b: bytes) -> None:
        self.parts.append(b)

    def str_(self, s: str) -> None:
        b = s.encode("utf-8")
        self.parts.append(_U16.pack(len(b)))
        self.parts.append(b)

    def bytes_(self, b: bytes) -> None:
        self.parts.append(_U32.pack(len(b)))
        self.parts.append(b)

    def member(self, m: MemberId) -> None:
        self.str_(m.uuid)
        self.str_(m.address)
        self.u32(m.incarnation)

    def view_id(self, v: ViewId) -> None:
        self.parts.append(_VIEW.pack(v.epoch, v.number))

    def count(self, n: int) -> None:
        self.parts.append(_U32.pack(n))

    def slots(self, slots: tuple[Slot, ...]) -> None:
        self.count(len(slots))
        if slots:
            self.parts.append(struct.pack(f">{len(slots)}Q", *slots))

    def run(self, r: Run) -> None:
        self.member(r.origin)
        self.u64(r.first_seq)
        self.count(len(r.payloads))
        for p in r.payloads:
            self.bytes_(p)

    def value(self, v: Value) -> None:
        match v:
            case NoOp():
                self.u8(_VALUE_NOOP)
            case Batch(runs=runs):
                self.u8(_VALUE_BATCH)
                self.count(len(runs))
                for r in runs:
                    self.run(r)
            case Reconfig(op=op, members=members):
                self.u8(_VALUE_RECONFIG)
                self.u8(int(op))
                self.count(len(members))
                for m in members:
                    self.member(m)
            case _:
                assert_never(v)

    def config(self, c: ConfigRecord) -> None:
        self.view_id(c.view_id)
        self.u64(c.start)
        self.count(len(c.members))
        for m in c.members:
            self.member(m)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> int:
        start = self.pos
        end = start + n
        if end > len(self.data):
            raise MessageDecodeError(f"truncated: need {n} bytes at offset {start}")
        self.pos = end
        return start

    def u8(self) -> int:
        return _U8.unpack_from(self.data, self._take(1))[0]

    def u32(self) -> int:
        return _U32.unpack_from(self.data, self._take(4))[0]

    def u64(self) -> int:
        return _U64.unpack_from(self.data, self._take(8))[0]

    def str_(self) -> str:
        n = _U16.unpack_from(self.data, self._take(2))[0]
        start = self._take(n)
        try:
            return bytes(self.data[start : start + n]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageDecodeError(f"bad utf-8 at offset {start}") from exc

    def bytes_(self) -> bytes:
        n = self.u32()
        start = self._take(n)
        return bytes(self.data[start : start + n])

    def count(self, element_size_min: int) -> int:
        n = self.u32()
        if n * element_size_min > len(self.data) - self.pos:
            raise MessageDecodeError(f"count {n} larger than the remaining input")
        return n

    def member(self) -> MemberId:
        uuid = self.str_()
        address = self.str_()
        incarnation = self.u32()
        return MemberId(uuid, address, incarnation)

    def view_id(self) -> ViewId:
        epoch, number = _VIEW.unpack_from(self.data, self._take(_VIEW.size))
        return ViewId(epoch, number)

    def slots(self) -> tuple[Slot, ...]:
        n = self.count(8)
        if n == 0:
            return ()
        start = self._take(8 * n)
        return tuple(Slot(s) for s in struct.unpack_from(f">{n}Q", self.data, start))

    def run(self) -> Run:
        origin = self.member()
        first_seq = self.u64()
        n = self.count(4)
        payloads = tuple(self.bytes_() for _ in range(n))
        return Run(origin, first_seq, payloads)

    def value(self) -> Value:
        kind = self.u8()
        if kind == _VALUE_NOOP:
            return NOOP
        if kind == _VALUE_BATCH:
            n = self.count(9)
            return Batch(tuple(self.run() for _ in range(n)))
        if kind == _VALUE_RECONFIG:
            op_raw = self.u8()
            try:
                op = ReconfigOp(op_raw)
            except ValueError as exc:
                raise MessageDecodeError(f"unknown reconfig op {op_raw}") from exc
            n = self.count(8)
            return Reconfig(op, tuple(self.member() for _ in range(n)))
        raise MessageDecodeError(f"unknown value kind {kind}")

    def config(self) -> ConfigRecord:
        view_id = self.view_id()
        start = Slot(self.u64())
        n = self.count(8)
        return ConfigRecord(view_id, start, tuple(self.member() for _ in range(n)))


def encode_message(msg: Message) -> bytes:
    """Encode `msg` for the wire. Raises ValueError/struct.error on a value out of range."""
    w = _Writer()
    w.raw(_HEADER.pack(WIRE_VERSION, _TAGS[type(msg)]))
    match msg:
        case Accept(slot=slot, ballot=ballot, value=value) | Decide(slot=slot, ballot=ballot, value=value):
            w.raw(_U64U64.pack(slot, ballot))
            w.value(value)
        case Accepted(slot=slot, ballot=ballot) | Learn(slot=slot, ballot=ballot):
            w.raw(_U64U64.pack(slot, ballot))
        case Nack(slot=slot, ballot=ballot, promised=promised):
            w.raw(_U64U64U64.pack(slot, ballot, promised))
        case Prepare(ballot=ballot, slots=slots):
            w.u64(ballot)
            w.slots(slots)
        case Promise(ballot=ballot, slots=slots, accepted=accepted):
            w.u64(ballot)
            w.slots(slots)
            w.count(len(accepted))
            for a in accepted:
                w.raw(_U64U64.pack(a.slot, a.ballot))
                w.value(a.value)
        case Skip(first=first, end=end, ballot=ballot):
            w.raw(_U64U64U64.pack(first, end, ballot))
        case Fetch(first=first, end=end):
            w.raw(_U64U64.pack(first, end))
        case Forgotten(first_available=first):
            w.u64(first)
        case Heartbeat(view_id=view_id, next_slot=next_slot):
            w.view_id(view_id)
            w.u64(next_slot)
        case JoinRequest():
            pass
        case Welcome(member=member, next_slot=next_slot, configs=configs, origins=origins):
            w.member(member)
            w.u64(next_slot)
            w.count(len(configs))
            for c in configs:
                w.config(c)
            w.count(len(origins))
            for o in origins:
                w.member(o.origin)
                w.u64(o.next_seq)
        case JoinRefused(member=member, reason=reason):
            w.member(member)
            w.str_(reason)
        case NotMember(member=member, view_id=view_id):
            w.member(member)
            w.view_id(view_id)
        case ForceQuery(force_id=force_id, view_id=view_id):
            w.u64(force_id)
            w.view_id(view_id)
        case ForceState(force_id=force_id, next_slot=next_slot, known=known, held_from=held_from):
            w.raw(_U64U64.pack(force_id, next_slot))
            w.slots(known)
            w.u64(held_from)
        case ForceInstall(force_id=force_id, config=config, gaps=gaps):
            w.u64(force_id)
            w.config(config)
            w.count(len(gaps))
            for g in gaps:
                w.raw(_U64U64.pack(g.first, g.end))
        case ForceAck(force_id=force_id):
            w.u64(force_id)
        case Forward(run=run):
            w.run(run)
        case ForwardReconfig(reconfig=reconfig):
            w.value(reconfig)
        case _:
            assert_never(msg)
    return b"".join(w.parts)


def _decode_body(tag: int, r: _Reader) -> Message:
    if tag == 1 or tag == 6:
        slot, ballot = _U64U64.unpack_from(r.data, r._take(16))
        value = r.value()
        cls = Accept if tag == 1 else Decide
        return cls(Slot(slot), Ballot(ballot), value)
    if tag == 2 or tag == 21:
        slot, ballot = _U64U64.unpack_from(r.data, r._take(16))
        return (Accepted if tag == 2 else Learn)(Slot(slot), Ballot(ballot))
    if tag == 3:
        slot, ballot, promised = _U64U64U64.unpack_from(r.data, r._take(24))
        return Nack(Slot(slot), Ballot(ballot), Ballot(promised))
    if tag == 4:
        return Prepare(Ballot(r.u64()), r.slots())
    if tag == 5:
        ballot = Ballot(r.u64())
        slots = r.slots()
        n = r.count(17)
        accepted = []
        for _ in range(n):
            slot, acc_ballot = _U64U64.unpack_from(r.data, r._take(16))
            accepted.append(AcceptedValue(Slot(slot), Ballot(acc_ballot), r.value()))
        return Promise(ballot, slots, tuple(accepted))
    if tag == 7:
        first, end, ballot = _U64U64U64.unpack_from(r.data, r._take(24))
        if end < first:
            raise MessageDecodeError("slot range ends before it starts")
        return Skip(Slot(first), Slot(end), Ballot(ballot))
    if tag == 8:
        first, end = _U64U64.unpack_from(r.data, r._take(16))
        if end < first:
            raise MessageDecodeError("slot range ends before it starts")
        return Fetch(Slot(first), Slot(end))
    if tag == 9:
        return Forgotten(Slot(r.u64()))
    if tag == 10:
        return Heartbeat(r.view_id(), Slot(r.u64()))
    if tag == 11:
        return JoinRequest()
    if tag == 12:
        member = r.member()
        next_slot = Slot(r.u64())
        n = r.count(20)
        configs = tuple(r.config() for _ in range(n))
        n = r.count(16)
        origins = tuple(OriginSeq(r.member(), r.u64()) for _ in range(n))
        return Welcome(member, next_slot, configs, origins)
    if tag == 13:
        return JoinRefused(r.member(), r.str_())
    if tag == 14:
        return NotMember(r.member(), r.view_id())
    if tag == 15:
        return ForceQuery(r.u64(), r.view_id())
    if tag == 16:
        force_id, next_slot = _U64U64.unpack_from(r.data, r._take(16))
        return ForceState(force_id, Slot(next_slot), r.slots(), Slot(r.u64()))
    if tag == 17:
        force_id = r.u64()
        config = r.config()
        n = r.count(16)
        gaps = []
        for _ in range(n):
            first, end = _U64U64.unpack_from(r.data, r._take(16))
            gaps.append(SlotRange(Slot(first), Slot(end)))
        return ForceInstall(force_id, config, tuple(gaps))
    if tag == 18:
        return ForceAck(r.u64())
    if tag == 19:
        return Forward(r.run())
    if tag == 20:
        value = r.value()
        if not isinstance(value, Reconfig):
            raise MessageDecodeError("ForwardReconfig must carry a Reconfig")
        return ForwardReconfig(value)
    raise MessageDecodeError(f"unknown message tag {tag}")


def decode_message(data: bytes) -> Message:
    """Decode one message. Raises MessageDecodeError on anything malformed, and only that."""
    if len(data) < _HEADER.size:
        raise MessageDecodeError("message shorter than its header")
    version, tag = _HEADER.unpack_from(data, 0)
    if version != WIRE_VERSION:
        raise MessageDecodeError(f"unsupported wire version {version}")
    r = _Reader(data)
    r.pos = _HEADER.size
    try:
        msg = _decode_body(tag, r)
    except MessageDecodeError:
        raise
    except (ValueError, struct.error, OverflowError) as exc:
        # Constructors validate (ValueError); struct errors cannot happen after _take's
        # checks but are mapped too so that garbage never escapes as another exception.
        raise MessageDecodeError(f"invalid message (tag {tag}): {exc}") from exc
    if r.pos != len(data):
        raise MessageDecodeError(f"{len(data) - r.pos} trailing bytes after message tag {tag}")
    return msg
