"""Frame codec of the group transport: bytes in, typed frames out, no I/O.

Theory of operation
-------------------
A group connection carries a stream of *frames*. Every frame is an envelope::

    offset size field
    0      2    magic b"GX"
    2      1    envelope version (ENVELOPE_VERSION)
    3      1    kind  (FrameKind)
    4      1    flags (FrameFlags: COMPRESSED, FRAGMENT)
    5      1    reserved, must be 0
    6      4    body length: bytes of body that follow on the wire
    10     4    raw length: bytes of the whole message once decompressed
    14     ...  body

A *message* (the encoded core message, opaque here) travels as one DATA frame, or, when its
(possibly compressed) body is longer than ``communication_max_message_size``, as several DATA
frames flagged FRAGMENT, each starting with a fragment header ``msg_id u64, offset u32,
total u32`` (offset and total count bytes of the compressed body). A body longer than
``compression_threshold`` is LZ4-compressed (python-lz4 block API, size not stored: the raw
length is in the envelope) and flagged, but only when that makes it smaller. The receiver
looks at the flag, never at its own threshold, so members with different thresholds
interoperate (seed 003: "there is no requirement that all servers in the group have
compression enabled").

Errors come in two kinds, because a byte stream cannot be resynchronised:

* a broken *envelope* (bad magic, unknown envelope version, a length over the bound) makes the
  rest of the stream meaningless: :class:`FrameDecoder` raises :class:`FramingError` and the
  connection must be closed;
* a broken *body* inside a sound envelope (unknown kind or flag, LZ4 garbage, truncated
  handshake fields) is reported as an :class:`InvalidFrame` value: the frame is dropped and
  counted, and the stream goes on.

Bounds: the decoder never buffers more than one envelope plus ``message_bytes_max`` of body,
and refuses (before allocating) any raw length over ``message_bytes_max``, so a peer cannot
make us decompress a bomb. The :class:`Reassembler` holds at most one partial message per
sender and at most ``reassembly_bytes_max`` bytes over all senders.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Final, Generic, NewType, TypeVar, assert_never

import lz4.block

MAGIC: Final = b"GX"
ENVELOPE_VERSION: Final = 1
# Group protocol versions this build speaks; negotiated in the handshake (highest common).
PROTOCOL_VERSION_MIN: Final = 1
PROTOCOL_VERSION_MAX: Final = 1

_HEADER: Final = struct.Struct("!2sBBBBII")
HEADER_LEN: Final = _HEADER.size  # 14
_FRAGMENT_HEADER: Final = struct.Struct("!QII")
FRAGMENT_HEADER_LEN: Final = _FRAGMENT_HEADER.size  # 16
_U16: Final = struct.Struct("!H")
_U64: Final = struct.Struct("!Q")
_VERSIONS: Final = struct.Struct("!HH")

# Handshake strings are short by construction; the bound keeps a hostile HELLO small.
STRING_BYTES_MAX: Final = 1024
# Below this, header and body are joined into one buffer (one small copy beats two writes).
_JOIN_BYTES_MAX: Final = 64 * 1024

MessageId = NewType("MessageId", int)


class FrameKind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    REJECT = 3
    DATA = 4


class FrameFlags(enum.IntFlag):
    NONE = 0
    COMPRESSED = 0x01
    FRAGMENT = 0x02


# Plain ints for the hot paths: IntFlag/IntEnum arithmetic costs a Python call per operation.
_COMPRESSED: Final = int(FrameFlags.COMPRESSED)
_FRAGMENT: Final = int(FrameFlags.FRAGMENT)
_KIND_DATA: Final = int(FrameKind.DATA)
_KNOWN_FLAGS: Final = _COMPRESSED | _FRAGMENT


class RejectReason(enum.IntEnum):
    """Why a listener refused a handshake; sent in REJECT before closing."""

    GROUP_MISMATCH = 1
    VERSION_UNSUPPORTED = 2
    IDENTITY_MISMATCH = 3
    SELF_CONNECTION = 4
    TOO_MANY_CONNECTIONS = 5
    TLS_IDENTITY_MISMATCH = 6
    MALFORMED_HELLO = 7


class FramingError(Exception):
    """The envelope is broken: the stream cannot be resynchronised, close the connection.

    ``frames`` holds the frames decoded from the same input before the break, so the caller
    can still act on them.
    """

    def __init__(self, reason: str, frames: list[Frame] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.frames: list[Frame] = frames if frames is not None else []


def _check_string(value: str, what: str) -> None:
    if len(value.encode("utf-8")) > STRING_BYTES_MAX:
        raise ValueError(f"{what} longer than {STRING_BYTES_MAX} bytes")


def split_address(address: str) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[v6]:port"`` for IPv6) into host and port.

    Raises ValueError when the port is missing or out of range.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"address {address!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


@dataclass(frozen=True, slots=True)
class NodeId:
    """Who is at the other end of a connection, as the handshake states it.

    ``name`` is the member's stable name/uuid, ``address`` its group endpoint ``host:port``,
    ``incarnation`` grows each time the process restarts (a restarted member is a new member).
    An empty name or incarnation 0 means "whoever listens at this address" (used to dial seeds
    whose identity is not known yet).
    """

    name: str
    address: str
    incarnation: int

    def __post_init__(self) -> None:
        _check_string(self.name, "name")
        _check_string(self.address, "address")
        split_address(self.address)
        if not 0 <= self.incarnation < 2**64:
            raise ValueError(f"incarnation {self.incarnation} out of range")

    def is_wildcard(self) -> bool:
        return not self.name or self.incarnation == 0

    def accepts(self, actual: NodeId) -> bool:
        """True when a message addressed to ``self`` may be handed to ``actual``."""
        if self.name and self.name != actual.name:
            return False
        return self.incarnation == 0 or self.incarnation == actual.incarnation

    def __str__(self) -> str:
        return f"{self.name or '?'}@{self.address}#{self.incarnation}"


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame of a dialer: who I am, who I think you are, what I speak."""

    group_name: str
    version_min: int
    version_max: int
    sender: NodeId
    target: NodeId

    def __post_init__(self) -> None:
        _check_string(self.group_name, "group_name")
        if not 0 < self.version_min <= self.version_max < 2**16:
            raise ValueError(f"bad version range {self.version_min}..{self.version_max}")


@dataclass(frozen=True, slots=True)
class Welcome:
    """The listener's answer to an acceptable HELLO: the chosen version and its identity."""

    version: int
    sender: NodeId

    def __post_init__(self) -> None:
        if not 0 < self.version < 2**16:
            raise ValueError(f"bad version {self.version}")


@dataclass(frozen=True, slots=True)
class Reject:
    """The listener's answer to an unacceptable HELLO, sent just before it closes."""

    reason: RejectReason
    detail: str

    def __post_init__(self) -> None:
        _check_string(self.detail, "detail")


@dataclass(frozen=True, slots=True)
class Data:
    """One whole message (decompressed)."""

    body: bytes
    compressed: bool


@dataclass(frozen=True, slots=True)
class Fragment:
    """One piece of a fragmented message; ``chunk`` is a slice of the compressed body."""

    msg_id: MessageId
    offset: int
    total_len: int
    raw_len: int
    compressed: bool
    chunk: bytes


@dataclass(frozen=True, slots=True)
class InvalidFrame:
    """A frame whose envelope was sound but whose content was not: drop it and count it."""

    kind: int
    reason: str


Frame = Hello | Welcome | Reject | Data | Fragment | InvalidFrame


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Receiver-side bounds. ``message_bytes_max`` bounds one message, decompressed or not."""

    message_bytes_max: int = 512 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 0 < self.message_bytes_max < 2**32:
            raise ValueError("message_bytes_max must be in 1 .. 2**32-1")


# --------------------------------------------------------------------------- encoding


def _pack_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _U16.pack(len(raw)) + raw


def _pack_node(node: NodeId) -> bytes:
    return _pack_string(node.name) + _pack_string(node.address) + _U64.pack(node.incarnation)


def _envelope(kind: int, flags: int, body_len: int, raw_len: int) -> bytes:
    return _HEADER.pack(MAGIC, ENVELOPE_VERSION, kind, flags, 0, body_len, raw_len)


def encode_control(frame: Hello | Welcome | Reject) -> bytes:
    """Encode a handshake frame to wire bytes."""
    match frame:
        case Hello():
            body = (
                _pack_string(frame.group_name)
                + _VERSIONS.pack(frame.version_min, frame.version_max)
                + _pack_node(frame.sender)
                + _pack_node(frame.target)
            )
            kind = FrameKind.HELLO
        case Welcome():
            body = _U16.pack(frame.version) + _pack_node(frame.sender)
            kind = FrameKind.WELCOME
        case Reject():
            body = bytes([int(frame.reason)]) + _pack_string(frame.detail)
            kind = FrameKind.REJECT
        case _:
            assert_never(frame)
    return _envelope(kind, 0, len(body), len(body)) + body


Buffer = bytes | memoryview


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """A message ready for the wire: one or more frames, each a tuple of buffers to write.

    Encoded once and shared by every peer the same message goes to, so a broadcast is
    compressed once, not once per peer.
    """

    frames: tuple[tuple[Buffer, ...], ...]
    raw_len: int
    wire_len: int
    compressed: bool

    @property
    def fragmented(self) -> bool:
        return len(self.frames) > 1


@dataclass(slots=True)
class MessageEncoder:
    """Turns message bodies into frames, compressing and fragmenting by the sender's settings.

    ``compression_threshold``: bodies longer than this are LZ4-compressed (0 = never).
    ``max_message_size``: a (compressed) body longer than this is cut into fragments of at
    most this many bytes (0 = never). Fragment ids are unique for the life of the encoder,
    which is one per process incarnation.
    """

    compression_threshold: int = 1_000_000
    max_message_size: int = 10_485_760
    limits: FrameLimits = field(default_factory=FrameLimits)
    _next_msg_id: int = 1

    def __post_init__(self) -> None:
        if self.compression_threshold < 0 or self.max_message_size < 0:
            raise ValueError("compression_threshold and max_message_size must be >= 0")

    def encode(self, body: bytes) -> EncodedMessage:
        """Frame ``body``. Raises ValueError if it exceeds ``limits.message_bytes_max``."""
        raw_len = len(body)
        if raw_len > self.limits.message_bytes_max:
            raise ValueError(
                f"message of {raw_len} bytes exceeds message_bytes_max "
                f"{self.limits.message_bytes_max}"
            )
        payload: bytes = body
        flags = 0
        if 0 < self.compression_threshold < raw_len:
            packed = lz4.block.compress(body, store_size=False)
            if len(packed) < raw_len:
                payload = packed
                flags = _COMPRESSED
        size = len(payload)
        if self.max_message_size == 0 or size <= self.max_message_size:
            header = _envelope(_KIND_DATA, flags, size, raw_len)
            frame: tuple[Buffer, ...]
            frame = (header + payload,) if size <= _JOIN_BYTES_MAX else (header, payload)
            return EncodedMessage((frame,), raw_len, HEADER_LEN + size, bool(flags))
        msg_id = self._next_msg_id
        self._next_msg_id += 1
        flags |= _FRAGMENT
        view = memoryview(payload)
        frames: list[tuple[Buffer, ...]] = []
        wire_len = 0
        for offset in range(0, size, self.max_message_size):
            chunk = view[offset : offset + self.max_message_size]
            n = len(chunk)
            head = _envelope(_KIND_DATA, flags, FRAGMENT_HEADER_LEN + n, raw_len)
            head += _FRAGMENT_HEADER.pack(msg_id, offset, size)
            frames.append((head + chunk,) if n <= _JOIN_BYTES_MAX else (head, chunk))
            wire_len += HEADER_LEN + FRAGMENT_HEADER_LEN + n
        return EncodedMessage(tuple(frames), raw_len, wire_len, bool(flags & _COMPRESSED))


# --------------------------------------------------------------------------- decoding


class _Truncated(Exception):
    pass


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise _Truncated
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def string(self) -> str:
        n = self.u16()
        if n > STRING_BYTES_MAX:
            raise ValueError("string over bound")
        return self.take(n).decode("utf-8")

    def node(self) -> NodeId:
        return NodeId(self.string(), self.string(), self.u64())

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(f"{len(self.data) - self.pos} trailing bytes")


def decompress(payload: bytes, raw_len: int) -> bytes:
    """Undo LZ4 block compression; raises ValueError unless exactly ``raw_len`` bytes result."""
    try:
        out = lz4.block.decompress(payload, uncompressed_size=raw_len)
    except lz4.block.LZ4BlockError as exc:
        raise ValueError(f"LZ4: {exc}") from None
    if len(out) != raw_len:
        raise ValueError(f"LZ4 gave {len(out)} bytes, envelope said {raw_len}")
    return out


def _parse_body(kind: int, flags: int, raw_len: int, body: bytes) -> Frame:
    if flags & ~_KNOWN_FLAGS:
        return InvalidFrame(kind, f"unknown flags 0x{flags:02x}")
    try:
        if kind == _KIND_DATA:
            compressed = bool(flags & _COMPRESSED)
            if flags & _FRAGMENT:
                if len(body) < FRAGMENT_HEADER_LEN:
                    raise _Truncated
                msg_id, offset, total = _FRAGMENT_HEADER.unpack_from(body)
                chunk = body[FRAGMENT_HEADER_LEN:]
                if not chunk or offset + len(chunk) > total:
                    raise ValueError("fragment outside its message")
                if not compressed and total != raw_len:
                    raise ValueError("uncompressed fragment total differs from raw length")
                return Fragment(MessageId(msg_id), offset, total, raw_len, compressed, chunk)
            if compressed:
                return Data(decompress(body, raw_len), True)
            if raw_len != len(body):
                raise ValueError("raw length differs from body length")
            return Data(body, False)
        if flags:
            raise ValueError("handshake frames carry no flags")
        r = _Reader(body)
        frame: Frame
        if kind == FrameKind.HELLO:
            group = r.string()
            vmin, vmax = _VERSIONS.unpack(r.take(_VERSIONS.size))
            frame = Hello(group, vmin, vmax, r.node(), r.node())
        elif kind == FrameKind.WELCOME:
            frame = Welcome(r.u16(), r.node())
        elif kind == FrameKind.REJECT:
            frame = Reject(RejectReason(r.take(1)[0]), r.string())
        else:
            return InvalidFrame(kind, "unknown frame kind")
        r.end()
        return frame
    except _Truncated:
        return InvalidFrame(kind, "truncated body")
    except (ValueError, UnicodeDecodeError) as exc:  # also bad enum values, bad addresses
        return InvalidFrame(kind, str(exc) or type(exc).__name__)


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole frames back.

    Contract: ``feed`` returns the frames completed by the new bytes, in stream order; it may
    be called with any split of the stream (one byte at a time included) and gives the same
    frames. It raises :class:`FramingError` (carrying the frames decoded before the break) when
    the envelope is broken; after that the decoder is dead and raises again on every call.
    """

    __slots__ = ("_buf", "_needed", "_limits", "_broken")

    def __init__(self, limits: FrameLimits | None = None) -> None:
        self._buf = bytearray()
        self._needed = HEADER_LEN
        self._limits = limits if limits is not None else FrameLimits()
        self._broken: str | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken is not None:
            raise FramingError(self._broken)
        buf = self._buf
        buf += data
        n = len(buf)
        if n < self._needed:
            return []
        out: list[Frame] = []
        pos = 0
        bytes_max = self._limits.message_bytes_max
        while n - pos >= HEADER_LEN:
            magic, version, kind, flags, reserved, body_len, raw_len = _HEADER.unpack_from(
                buf, pos
            )
            reason = None
            if magic != MAGIC:
                reason = f"bad magic {bytes(magic)!r}"
            elif version != ENVELOPE_VERSION:
                reason = f"unsupported envelope version {version}"
            elif reserved:
                reason = "reserved byte set"
            elif body_len > bytes_max + FRAGMENT_HEADER_LEN or raw_len > bytes_max:
                reason = f"frame of {body_len}/{raw_len} bytes over message_bytes_max {bytes_max}"
            if reason is not None:
                self._broken = reason
                del buf[:]
                raise FramingError(reason, out)
            end = pos + HEADER_LEN + body_len
            if end > n:
                self._needed = end - pos
                break
            body = bytes(buf[pos + HEADER_LEN : end])
            out.append(_parse_body(kind, flags, raw_len, body))
            pos = end
        else:
            self._needed = HEADER_LEN
        if pos:
            del buf[:pos]
        return out


# --------------------------------------------------------------------------- reassembly

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Partial:
    msg_id: int
    total_len: int
    raw_len: int
    compressed: bool
    data: bytearray


@dataclass(slots=True)
class ReassemblyStats:
    completed: int = 0
    abandoned: int = 0  # a newer message started before the old one finished, or sender gone
    invalid: int = 0  # out-of-order, inconsistent or over-bound fragments


class Reassembler(Generic[K]):
    """Rebuilds fragmented messages, keyed by sender (not by connection).

    A sender's fragments arrive in order (they share one TCP stream, and a sender restarts a
    fragmented message from offset 0 after reconnecting), so one partial message per sender is
    enough: a fragment at offset 0 starts a new message and abandons an unfinished one. Keying
    by sender lets a partial survive a reconnection or a view change; :meth:`retain` drops the
    partials of senders that are no longer members, and fragments from non-members must not be
    fed at all (the caller filters them first).

    Bounds: each message is at most ``limits.message_bytes_max`` (checked by the decoder), and
    the sum of buffered partial bytes is at most ``reassembly_bytes_max``: a fragment that
    would exceed it abandons its own message and is counted invalid.
    """

    def __init__(self, reassembly_bytes_max: int = 1024 * 1024 * 1024) -> None:
        if reassembly_bytes_max <= 0:
            raise ValueError("reassembly_bytes_max must be > 0")
        self._bytes_max = reassembly_bytes_max
        self._partials: dict[K, _Partial] = {}
        self._bytes = 0
        self.stats = ReassemblyStats()

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._partials)

    def _drop(self, sender: K) -> None:
        partial = self._partials.pop(sender, None)
        if partial is not None:
            self._bytes -= len(partial.data)

    def add(self, sender: K, frag: Fragment) -> bytes | InvalidFrame | None:
        """Add one fragment. Returns the whole decompressed message when complete, an
        :class:`InvalidFrame` when the fragment cannot belong to a message, else None."""
        partial = self._partials.get(sender)
        if frag.offset == 0:
            if partial is not None:
                self.stats.abandoned += 1
                self._drop(sender)
            partial = _Partial(frag.msg_id, frag.total_len, frag.raw_len, frag.compressed, bytearray())
            self._partials[sender] = partial
        elif (
            partial is None
            or partial.msg_id != frag.msg_id
            or frag.offset != len(partial.data)
            or (partial.total_len, partial.raw_len, partial.compressed)
            != (frag.total_len, frag.raw_len, frag.compressed)
        ):
            self.stats.invalid += 1
            if partial is not None and partial.msg_id == frag.msg_id:
                self._drop(sender)  # its bytes have a hole now: useless
            return InvalidFrame(FrameKind.DATA, "fragment does not continue a message")
        if self._bytes + len(frag.chunk) > self._bytes_max:
            self.stats.invalid += 1
            self._drop(sender)
            return InvalidFrame(FrameKind.DATA, "reassembly_bytes_max reached")
        partial.data += frag.chunk
        self._bytes += len(frag.chunk)
        if len(partial.data) < partial.total_len:
            return None
        self._drop(sender)
        payload = bytes(partial.data)
        try:
            body = decompress(payload, partial.raw_len) if partial.compressed else payload
        except ValueError as exc:
            self.stats.invalid += 1
            return InvalidFrame(FrameKind.DATA, str(exc))
        self.stats.completed += 1
        return body

    def forget(self, sender: K) -> None:
        """Drop the partial message of ``sender`` (it left, or restarted)."""
        if sender in self._partials:
            self.stats.abandoned += 1
            self._drop(sender)

    def retain(self, keep: Callable[[K], bool]) -> int:
        """Drop the partials of every sender for which ``keep`` is false; returns how many."""
        gone = [s for s in self._partials if not keep(s)]
        for sender in gone:
            self.forget(sender)
        return len(gone)
