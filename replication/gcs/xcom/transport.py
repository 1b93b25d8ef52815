"""Asyncio TCP transport between group members: frames, handshake, TLS, allowlist, queues.

Theory of operation
-------------------
Connections are one-way, as in XCom: a member *dials* every peer it sends to and only writes on
that connection; it *accepts* a connection from every peer that sends to it and only reads on
that one. So there is never a dial race to settle, and each peer costs exactly one writer task
(:class:`_Outbound`: connect, handshake, write loop, reconnect with bounded backoff) and one
reader task (TLS, handshake, read loop). One accept loop checks ``ip_allowlist`` and the
connection limit on each accepted socket before a byte is read or any TLS work is done.

Sending (:meth:`TcpTransport.send`) never blocks and never does I/O: it appends an
:class:`~replication.gcs.xcom.frames.EncodedMessage` (encoded once, shared by every peer it goes
to) to the peer's bounded queue and wakes the writer. The bound is ``peer_queue_bytes_max`` /
``peer_queue_messages_max``; at the bound the *new* message is refused (``send`` returns False,
``messages_dropped_queue_full`` counts it). Dropping is safe because the consensus core
retransmits what matters; blocking would let one slow peer stall the whole member. When a
connection attempt fails, the peer's queue is purged (``messages_dropped_unreachable``): by the
time it is back, those messages are stale and the core has sent newer ones. Backpressure towards
the application is the binding's window of undelivered broadcasts, not these queues.

The writer gathers every queued single-frame message (up to ``write_batch_bytes_max``) into one
``writelines`` and then awaits ``drain()``; a fragmented message goes out one fragment per batch,
interleaved with the small messages, so heartbeats are not stuck behind a 100 MB transaction. On
a new connection an unfinished fragmented message restarts at its first fragment.

Each queued message names its destination :class:`NodeId`; after the handshake tells who listens
at the address, messages for another incarnation are dropped (``messages_dropped_stale``): a
member restarted after a crash is a new member and must not receive the old one's traffic. A
message for a *newer* incarnation queued after the handshake makes the writer reconnect once
(the old link may be half-open). Keepalives and ``tcp_user_timeout_ms`` make the kernel fail a
link to a host that vanished; the binding forgets the peers that leave the view.

Receiving: the reader feeds bytes to a :class:`FrameDecoder`, drops frames from senders the
admission predicate rejects (non-members, ``messages_dropped_non_member``), reassembles
fragments per sender (so a partial message survives reconnections and view changes; partials of
senders that stop being admitted are dropped), and puts whole messages into the :class:`Inbox`.
The inbox is bounded (``inbox_messages_max`` / ``inbox_bytes_max``); a reader finding it full
stops reading (TCP backpressure to the sender) until the consumer takes messages out (so the
bound is exceeded by at most what one read completed). An invalid
frame is dropped, counted and reported as :class:`PeerInvalidFrame`; a broken envelope closes
the connection (the stream cannot be resynchronised), counted and reported too. Nothing a peer
sends can raise out of the transport.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Final, Protocol

import structlog

from .allowlist import IpAllowlist
from .frames import (
    PROTOCOL_VERSION_MAX,
    PROTOCOL_VERSION_MIN,
    Data,
    EncodedMessage,
    Fragment,
    FrameDecoder,
    FrameLimits,
    FramingError,
    Hello,
    InvalidFrame,
    MessageEncoder,
    NodeId,
    Reassembler,
    Reject,
    RejectReason,
    Welcome,
    encode_control,
    split_address,
)
from .tls import TlsConfig, TlsContexts, build_contexts, certificate_names_host

_log = structlog.get_logger("grproxy.gcs.transport")

# Invalid frames logged one by one per connection; after that every 1000th (all are counted).
_INVALID_LOGS_PER_CONNECTION: Final = 10
# How many frames a handshake may take before we give up on a dialer/listener that talks too much.
_HANDSHAKE_READ_BYTES: Final = 8192


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Settings of one member's transport. Names and defaults follow GR where GR has them."""

    group_name: str
    compression_threshold: int = 1_000_000
    communication_max_message_size: int = 10_485_760
    message_bytes_max: int = 512 * 1024 * 1024
    reassembly_bytes_max: int = 1024 * 1024 * 1024
    peer_queue_bytes_max: int = 64 * 1024 * 1024
    peer_queue_messages_max: int = 100_000
    inbox_messages_max: int = 50_000
    inbox_bytes_max: int = 256 * 1024 * 1024
    write_batch_bytes_max: int = 1024 * 1024
    read_chunk_bytes: int = 256 * 1024
    inbound_connections_max: int = 64
    # Distinct addresses we keep a writer for (a group has at most 9 members; departed ones
    # are forgotten by the binding on view changes).
    peers_max: int = 64
    handshake_timeout_ms: int = 5_000
    # Unacknowledged data older than this fails a connection (TCP_USER_TIMEOUT, keepalives).
    tcp_user_timeout_ms: int = 10_000
    reconnect_backoff_ms_min: int = 50
    reconnect_backoff_ms_max: int = 2_000
    ip_allowlist: IpAllowlist = field(default_factory=lambda: IpAllowlist.parse("AUTOMATIC"))
    tls: TlsConfig = field(default_factory=TlsConfig)

    def __post_init__(self) -> None:
        if not self.group_name:
            raise ValueError("group_name must not be empty")
        positive = (
            "message_bytes_max",
            "reassembly_bytes_max",
            "peer_queue_bytes_max",
            "peer_queue_messages_max",
            "inbox_messages_max",
            "inbox_bytes_max",
            "write_batch_bytes_max",
            "read_chunk_bytes",
            "inbound_connections_max",
            "peers_max",
            "handshake_timeout_ms",
            "tcp_user_timeout_ms",
            "reconnect_backoff_ms_min",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.reconnect_backoff_ms_max < self.reconnect_backoff_ms_min:
            raise ValueError("reconnect_backoff_ms_max < reconnect_backoff_ms_min")
        if self.compression_threshold < 0 or self.communication_max_message_size < 0:
            raise ValueError("compression_threshold / communication_max_message_size must be >= 0")


@dataclass(slots=True)
class TransportStats:
    """Counters since start. Read a consistent copy with :meth:`TcpTransport.stats`."""

    messages_sent: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    messages_compressed: int = 0
    messages_fragmented: int = 0
    messages_received: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    messages_dropped_queue_full: int = 0
    messages_dropped_unreachable: int = 0
    messages_dropped_stale: int = 0
    messages_dropped_non_member: int = 0
    messages_dropped_peers_max: int = 0
    frames_invalid: int = 0
    streams_broken: int = 0
    connections_accepted: int = 0
    connections_refused_allowlist: int = 0
    connections_refused_limit: int = 0
    handshakes_rejected: int = 0
    handshakes_failed: int = 0
    connect_failures: int = 0
    reassembly_abandoned: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------- peer events


@dataclass(frozen=True, slots=True)
class PeerConnected:
    """A handshake completed. ``outbound``: we dialed (we write to it); else it dialed us."""

    node: NodeId
    outbound: bool


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    node: NodeId
    outbound: bool
    reason: str


@dataclass(frozen=True, slots=True)
class PeerRestarted:
    """The member at an address came back as a new incarnation."""

    old: NodeId
    new: NodeId


@dataclass(frozen=True, slots=True)
class PeerInvalidFrame:
    """A peer sent something we could not accept; ``fatal`` when it cost the connection."""

    node: NodeId | None
    address: str
    reason: str
    fatal: bool


@dataclass(frozen=True, slots=True)
class PeerRefused:
    """We refused a connection (allowlist, limit, or a failed handshake)."""

    address: str
    reason: str


@dataclass(frozen=True, slots=True)
class PeerUnreachable:
    """A connection attempt (dial, TLS or handshake) failed; its queue was dropped."""

    address: str
    reason: str
    failures: int


PeerEvent = (
    PeerConnected | PeerDisconnected | PeerRestarted | PeerInvalidFrame | PeerRefused | PeerUnreachable
)


class PeerObserver(Protocol):
    def __call__(self, event: PeerEvent) -> None: ...


# --------------------------------------------------------------------------- inbox


@dataclass(frozen=True, slots=True)
class Inbound:
    sender: NodeId
    body: bytes


class Inbox:
    """Bounded FIFO of received messages between the reader tasks and one consumer.

    Readers call :meth:`wait_space` before each read and :meth:`put` for each message that the
    read completed, so the bound is exceeded by at most one read chunk. The consumer calls
    :meth:`take`. ``wakeup`` is set whenever a message arrives (the consumer usually shares it
    with its other wake-up sources).
    """

    def __init__(self, messages_max: int, bytes_max: int, wakeup: asyncio.Event) -> None:
        self._items: deque[Inbound] = deque()
        self._bytes = 0
        self._messages_max = messages_max
        self._bytes_max = bytes_max
        self.wakeup = wakeup
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self._messages_max or self._bytes >= self._bytes_max

    async def wait_space(self) -> None:
        while self.full:
            self._space.clear()
            await self._space.wait()

    def put(self, item: Inbound) -> None:
        self._items.append(item)
        self._bytes += len(item.body)
        self.wakeup.set()

    def take(self, count_max: int) -> list[Inbound]:
        items = self._items
        n = min(count_max, len(items))
        out = [items.popleft() for _ in range(n)]
        self._bytes -= sum(len(i.body) for i in out)
        # Resume readers at half the bound, not at the bound, so they do not flap.
        if len(items) <= self._messages_max // 2 and self._bytes <= self._bytes_max // 2:
            self._space.set()
        return out


# --------------------------------------------------------------------------- transport


class HandshakeError(Exception):
    """A handshake failed on our side or was refused by the peer."""


def _tune_socket(writer: asyncio.StreamWriter, user_timeout_ms: int) -> None:
    """No Nagle (small Paxos messages must leave at once), and dead-peer detection by the
    kernel: keepalives on an idle link, and TCP_USER_TIMEOUT so that data left unacknowledged
    for ``user_timeout_ms`` (a host that vanished without a RST) fails the connection instead
    of leaving a writer blocked in drain() for the ~15 minutes of TCP retransmissions."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    keepalive_s = max(1, user_timeout_ms // 3000)
    for name, value in (("TCP_KEEPIDLE", keepalive_s), ("TCP_KEEPINTVL", keepalive_s), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms))
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            pass  # best effort: not every platform has every option


def _source_address(address: str) -> tuple[str, int] | None:
    """Where our outbound connections come from: the host of our own group address when it is
    a specific IP, so a peer's ip_allowlist that names member addresses also matches our
    connections on a multi-homed host; otherwise (a name, or a wildcard) the kernel's choice."""
    host, _ = split_address(address)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if ip.is_unspecified else (host, 0)


async def _read_one_frame(reader: asyncio.StreamReader, decoder: FrameDecoder) -> object:
    """Read until the decoder yields one frame; only used during the handshake."""
    got = 0
    while True:
        data = await reader.read(1024)
        if not data:
            raise HandshakeError("connection closed during handshake")
        got += len(data)
        frames = decoder.feed(data)  # FramingError propagates
        if frames:
            if len(frames) > 1:
                raise HandshakeError("peer sent frames before the handshake completed")
            return frames[0]
        if got > _HANDSHAKE_READ_BYTES:
            raise HandshakeError("handshake frame too long")


class TcpTransport:
    """One member's group transport. Create, :meth:`start`, then :meth:`send`; :meth:`close`.

    ``me`` is this member's identity (its address is the one it listens on). ``inbox`` receives
    whole messages from admitted peers. ``observer`` gets every :data:`PeerEvent` synchronously
    (it must not block). ``admit`` decides which senders are members; it can be replaced with
    :meth:`set_admission` on a view change. ``superseded`` says which dialers the group knows a
    newer incarnation of: they are refused at the handshake.
    """

    def __init__(
        self,
        me: NodeId,
        config: TransportConfig,
        inbox: Inbox,
        *,
        observer: PeerObserver | None = None,
        admit: Callable[[NodeId], bool] | None = None,
        superseded: Callable[[NodeId], bool] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.me = me
        self.config = config
        self.inbox = inbox
        self._observer = observer
        self._admit: Callable[[NodeId], bool] = admit or (lambda node: True)
        self._superseded: Callable[[NodeId], bool] = superseded or (lambda node: False)
        self._rng = rng or random.Random()
        self._limits = FrameLimits(config.message_bytes_max)
        self.encoder = MessageEncoder(
            compression_threshold=config.compression_threshold,
            max_message_size=config.communication_max_message_size,
            limits=self._limits,
        )
        self._tls: TlsContexts | None = build_contexts(config.tls)
        self._source_address = _source_address(me.address)
        self._reassembler: Reassembler[NodeId] = Reassembler(config.reassembly_bytes_max)
        self._stats = TransportStats()
        self._outbound: dict[str, _Outbound] = {}
        # One reader per dialer identity (name and incarnation): a reconnect of the same one
        # replaces its old connection; another incarnation of a name does not (see
        # _replace_inbound). What a superseded incarnation sends is dropped by `admit`.
        self._inbound: dict[NodeId, _InboundConn] = {}
        self._inbound_tasks: set[asyncio.Task[None]] = set()
        self._listen_sock: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._closing = False
        self._conn_seq = 0
        self.log = _log.bind(member_id=str(me))

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Listen on ``me.address``. Raises OSError if the port cannot be bound."""
        host, port = split_address(self.me.address)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(self.config.inbound_connections_max)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listen_sock = sock
        self._acceptor = loop.create_task(self._accept_loop(sock), name=f"gcs-accept-{self.me.address}")
        self.log.info("gcs transport listening", address=self.me.address, tls=self._tls is not None)

    async def close(self) -> None:
        """Stop listening, stop every writer and reader, close every connection."""
        self._closing = True
        tasks = [o.task for o in self._outbound.values() if o.task is not None]
        if self._acceptor is not None:
            tasks.append(self._acceptor)
        tasks += list(self._inbound_tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._outbound.clear()
        self._inbound.clear()
        if self._listen_sock is not None:
            self._listen_sock.close()

    # ----------------------------------------------------------------- sending

    def encode(self, body: bytes) -> EncodedMessage:
        """Frame a message body once; pass the result to :meth:`send` for every destination."""
        return self.encoder.encode(body)

    def send(self, dest: NodeId, message: EncodedMessage) -> bool:
        """Queue ``message`` for ``dest``. Never blocks. Returns False (and counts) when the
        peer's queue is at its bound or the transport is closing; the message is dropped."""
        if self._closing:
            return False
        out = self._outbound.get(dest.address)
        if out is None:
            if len(self._outbound) >= self.config.peers_max:
                self._stats.messages_dropped_peers_max += 1
                return False
            out = _Outbound(self, dest.address)
            self._outbound[dest.address] = out
        return out.enqueue(dest, message)

    def forget_peer(self, address: str) -> None:
        """Stop the writer for ``address`` and drop its queue (the member left for good)."""
        out = self._outbound.pop(address, None)
        if out is not None:
            out.stop()

    def set_compression_threshold(self, threshold: int) -> None:
        """GR's SET GLOBAL group_replication_compression_threshold: messages sent from now on
        are compressed when their body is longer than `threshold` bytes (0 = never). Receivers
        need no change: every frame says whether it is compressed."""
        if threshold < 0:
            raise ValueError("compression_threshold must be >= 0")
        self.config = replace(self.config, compression_threshold=threshold)
        self.encoder.compression_threshold = threshold

    async def drain(self) -> None:
        """Wait until every peer's queue is empty: written to its socket (and the socket's
        buffer flushed) or dropped. Bound it with the caller's deadline (``asyncio.timeout``):
        a peer in reconnection backoff keeps its queue until its next attempt."""
        while True:
            busy = [o for o in self._outbound.values() if not o.idle.is_set()]
            if not busy:
                return
            await asyncio.gather(*(o.idle.wait() for o in busy))

    # ----------------------------------------------------------------- membership

    def set_admission(self, admit: Callable[[NodeId], bool]) -> None:
        """Replace the predicate that says which senders are members; partial fragmented
        messages of senders no longer admitted are dropped at once."""
        self._admit = admit
        self._stats.reassembly_abandoned += self._reassembler.retain(admit)

    # ----------------------------------------------------------------- observability

    def stats(self) -> TransportStats:
        return replace(self._stats)

    def peer_queues(self) -> dict[str, tuple[int, int]]:
        """``address -> (queued messages, queued bytes)`` for every peer we write to."""
        return {a: (o.messages, o.bytes) for a, o in self._outbound.items()}

    def connected_peers(self) -> list[NodeId]:
        return [o.connected for o in self._outbound.values() if o.connected is not None]

    def _emit(self, event: PeerEvent) -> None:
        if self._observer is not None:
            try:
                self._observer(event)
            except Exception:  # an observer bug must not take the transport down
                self.log.exception("peer observer failed", peer_event=repr(event))

    def _next_conn_id(self) -> int:
        self._conn_seq += 1
        return self._conn_seq

    # ----------------------------------------------------------------- accepting

    async def _accept_loop(self, sock: socket.socket) -> None:
        """Accept connections; check each one before a byte is read (and before any TLS work),
        then hand it to its reader task. Accepting here, rather than through a server's
        protocol, lets the allowlist run before TLS on every event loop implementation."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                self.log.error("gcs accept failed", reason=repr(exc))
                await asyncio.sleep(self.config.reconnect_backoff_ms_max / 1000)
                continue
            if not self._admit_connection(addr):
                conn.close()
                continue
            task = loop.create_task(self._serve_inbound(conn, addr))
            self._inbound_tasks.add(task)

    def _admit_connection(self, peername: tuple[str, int]) -> bool:
        """Allowlist and connection limit, for a connection not read from yet. Refusals are
        counted, logged and reported."""
        remote = f"{peername[0]}:{peername[1]}"
        if not self.config.ip_allowlist.allows(str(peername[0])):
            self._stats.connections_refused_allowlist += 1
            self.log.warning("gcs connection refused: address not in ip_allowlist", remote=remote)
            self._emit(PeerRefused(remote, "ip_allowlist"))
            return False
        if len(self._inbound_tasks) >= self.config.inbound_connections_max:
            self._stats.connections_refused_limit += 1
            self.log.warning("gcs connection refused: inbound_connections_max reached", remote=remote)
            self._emit(PeerRefused(remote, "inbound_connections_max"))
            return False
        return True

    async def _serve_inbound(self, sock: socket.socket, peername: tuple[str, int]) -> None:
        """Reader task of one admitted inbound connection: TLS, handshake, read loop."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        remote = f"{peername[0]}:{peername[1]}"
        log = self.log.bind(conn_id=self._next_conn_id(), remote=remote)
        conn: _InboundConn | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            decoder = FrameDecoder(self._limits)
            try:
                async with asyncio.timeout(self.config.handshake_timeout_ms / 1000):
                    reader = asyncio.StreamReader(limit=self.config.read_chunk_bytes)
                    protocol = asyncio.StreamReaderProtocol(reader)
                    # Keep our own protocol object: with ssl, uvloop returns its SSLProtocol.
                    transport, _ = await loop.connect_accepted_socket(
                        lambda: protocol, sock, ssl=self._tls.server if self._tls is not None else None
                    )
                    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
                    _tune_socket(writer, self.config.tcp_user_timeout_ms)
                    hello = await self._server_handshake(reader, writer, decoder, log)
            except (HandshakeError, FramingError, TimeoutError, OSError, ssl.SSLError) as exc:
                self._stats.handshakes_rejected += 1
                log.warning("gcs handshake refused", reason=str(exc) or type(exc).__name__)
                self._emit(PeerRefused(remote, str(exc) or type(exc).__name__))
                return
            self._stats.connections_accepted += 1
            conn = _InboundConn(hello.sender, writer, task)
            self._replace_inbound(conn, log)
            log = log.bind(peer=str(hello.sender))
            log.info("gcs peer connected (inbound)")
            self._emit(PeerConnected(hello.sender, outbound=False))
            reason = await self._read_loop(reader, decoder, hello.sender, remote, log)
            log.info("gcs peer disconnected (inbound)", reason=reason)
            self._emit(PeerDisconnected(hello.sender, outbound=False, reason=reason))
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must cost one connection, never the member
            log.exception("gcs inbound connection failed")
        finally:
            self._inbound_tasks.discard(task)
            if conn is not None and self._inbound.get(conn.node) is conn:
                del self._inbound[conn.node]
            if writer is not None:
                writer.close()
            else:
                sock.close()

    async def _server_handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: FrameDecoder,
        log: structlog.typing.FilteringBoundLogger,
    ) -> Hello:
        frame = await _read_one_frame(reader, decoder)

        def refuse(reason: RejectReason, detail: str) -> HandshakeError:
            writer.write(encode_control(Reject(reason, detail)))
            return HandshakeError(f"{reason.name}: {detail}")

        if not isinstance(frame, Hello):
            raise refuse(RejectReason.MALFORMED_HELLO, f"expected HELLO, got {type(frame).__name__}")
        if not frame.sender.name or frame.sender.incarnation == 0:
            raise refuse(RejectReason.MALFORMED_HELLO, "the dialer must state its name and incarnation")
        if frame.group_name != self.config.group_name:
            raise refuse(RejectReason.GROUP_MISMATCH, f"group {frame.group_name!r} is not ours")
        version = min(frame.version_max, PROTOCOL_VERSION_MAX)
        if version < max(frame.version_min, PROTOCOL_VERSION_MIN):
            raise refuse(
                RejectReason.VERSION_UNSUPPORTED,
                f"peer speaks {frame.version_min}..{frame.version_max}, "
                f"we speak {PROTOCOL_VERSION_MIN}..{PROTOCOL_VERSION_MAX}",
            )
        if frame.target.name and frame.target.name != self.me.name:
            raise refuse(RejectReason.IDENTITY_MISMATCH, f"this is {self.me.name}, not {frame.target.name}")
        if frame.sender.name == self.me.name:
            if frame.sender.incarnation == self.me.incarnation:
                raise refuse(RejectReason.SELF_CONNECTION, "connected to itself")
            raise refuse(RejectReason.IDENTITY_MISMATCH, f"another process claims name {self.me.name}")
        if self._superseded(frame.sender):
            # The group's view has a newer incarnation of that name: a straggler of a dead
            # process. (Not "whoever dialed last": anyone may claim a newer incarnation.)
            raise refuse(RejectReason.IDENTITY_MISMATCH, f"{frame.sender} is superseded in the group's view")
        if self._tls is not None and self._tls.config.verifies_identity:
            host, _ = split_address(frame.sender.address)
            if not certificate_names_host(writer.get_extra_info("peercert"), host):
                raise refuse(
                    RejectReason.TLS_IDENTITY_MISMATCH, f"certificate does not name {host}"
                )
        writer.write(encode_control(Welcome(version, self.me)))
        await writer.drain()
        return frame

    def _replace_inbound(self, conn: _InboundConn, log: structlog.typing.FilteringBoundLogger) -> None:
        """Keep one reader per dialer identity: a new connection of the same incarnation wins
        (the old one may be half-open). Another incarnation of the same name is reported
        (PeerRestarted) but cuts nothing: a restarted process's old connection dies with it
        (keepalives; meanwhile `admit` drops what a superseded incarnation sends), while a live
        member's must survive a dialer that merely claims a newer incarnation of its name
        (fuzzing found it cut off, and its reconnects refused while the claim stood)."""
        old = self._inbound.get(conn.node)
        self._inbound[conn.node] = conn
        if old is not None:
            old.task.cancel()
            return
        for other in list(self._inbound.values()):
            if other.node.name == conn.node.name and other.node.incarnation < conn.node.incarnation:
                log.info("gcs peer restarted", old=str(other.node), new=str(conn.node))
                self._emit(PeerRestarted(other.node, conn.node))

    async def _read_loop(
        self,
        reader: asyncio.StreamReader,
        decoder: FrameDecoder,
        sender: NodeId,
        remote: str,
        log: structlog.typing.FilteringBoundLogger,
    ) -> str:
        """Read frames until EOF or a broken stream; returns why it stopped."""
        stats = self._stats
        inbox = self.inbox
        chunk = self.config.read_chunk_bytes
        invalid = 0  # invalid frames on this connection
        while True:
            if inbox.full:
                await inbox.wait_space()
            try:
                data = await reader.read(chunk)
            except (ConnectionError, OSError, ssl.SSLError) as exc:
                return f"read failed: {exc!r}"
            if not data:
                return "eof"
            stats.bytes_received += len(data)
            try:
                frames = decoder.feed(data)
                broken: FramingError | None = None
            except FramingError as exc:
                frames, broken = exc.frames, exc
            stats.frames_received += len(frames)
            admitted = self._admit(sender)
            for frame in frames:
                if type(frame) is Data:
                    if admitted:
                        stats.messages_received += 1
                        inbox.put(Inbound(sender, frame.body))
                    else:
                        stats.messages_dropped_non_member += 1
                    continue
                reason: str | None = None
                if type(frame) is Fragment:
                    if not admitted:
                        stats.messages_dropped_non_member += 1
                        continue
                    got = self._reassembler.add(sender, frame)
                    if isinstance(got, bytes):
                        stats.messages_received += 1
                        inbox.put(Inbound(sender, got))
                    elif got is not None:
                        reason = got.reason
                elif isinstance(frame, InvalidFrame):
                    reason = frame.reason
                else:
                    reason = f"{type(frame).__name__} after handshake"
                if reason is not None:
                    invalid += 1
                    self._invalid(sender, remote, reason, False, log, invalid)
            if broken is not None:
                stats.streams_broken += 1
                self._invalid(sender, remote, broken.reason, True, log, invalid + 1)
                return f"broken stream: {broken.reason}"

    def _invalid(
        self,
        sender: NodeId | None,
        remote: str,
        reason: str,
        fatal: bool,
        log: structlog.typing.FilteringBoundLogger,
        seen: int,
    ) -> None:
        """Count and report an invalid frame; ``seen`` counts them on this connection, so a
        peer flooding garbage costs a few log lines, not one per frame."""
        self._stats.frames_invalid += 1
        if fatal or seen <= _INVALID_LOGS_PER_CONNECTION or seen % 1000 == 0:
            log.warning("gcs invalid frame from peer", reason=reason, fatal=fatal, invalid_on_connection=seen)
        self._emit(PeerInvalidFrame(sender, remote, reason, fatal))


@dataclass(slots=True)
class _InboundConn:
    node: NodeId
    writer: asyncio.StreamWriter
    task: asyncio.Task[None]


@dataclass(slots=True)
class _Queued:
    dest: NodeId
    message: EncodedMessage
    seq: int  # enqueue order on this peer: tells messages older than the connection apart


class _Outbound:
    """The writer side of one peer address: bounded queue + one task (connect, write, retry).

    Invariants: ``messages``/``bytes`` equal the sum over ``small`` and ``big``; ``idle`` is set
    iff both queues are empty and the last batch was drained; at most one fragmented message
    (``big[0]``) is in progress, ``next_fragment`` frames of it already written on the current
    connection.
    """

    def __init__(self, transport: TcpTransport, address: str) -> None:
        self.t = transport
        self.address = address
        self.small: deque[_Queued] = deque()
        self.big: deque[_Queued] = deque()
        self.messages = 0
        self.bytes = 0
        self.next_fragment = 0
        self.enqueued = 0
        self.connected_after = 0  # messages with a higher seq were queued after the handshake
        self.expected: NodeId | None = None  # newest identity a sender addressed here
        self.connected: NodeId | None = None
        self.last_known: NodeId | None = None
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task: asyncio.Task[None] | None = None
        self.log = transport.log.bind(peer_address=address)

    # called from send(): no I/O, no await
    def enqueue(self, dest: NodeId, message: EncodedMessage) -> bool:
        cfg = self.t.config
        size = message.wire_len
        if self.messages and (
            self.messages >= cfg.peer_queue_messages_max or self.bytes + size > cfg.peer_queue_bytes_max
        ):
            self.t._stats.messages_dropped_queue_full += 1
            return False
        if self.expected is None or (dest.name and dest.incarnation >= self.expected.incarnation):
            self.expected = dest
        self.enqueued += 1
        (self.big if message.fragmented else self.small).append(_Queued(dest, message, self.enqueued))
        self.messages += 1
        self.bytes += size
        self.idle.clear()
        self.wakeup.set()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"gcs-writer-{self.address}")
        return True

    def stop(self) -> None:
        self._purge()
        if self.task is not None:
            self.task.cancel()

    def _pop(self, q: deque[_Queued]) -> _Queued:
        item = q.popleft()
        self.messages -= 1
        self.bytes -= item.message.wire_len
        return item

    def _purge(self) -> int:
        n = self.messages
        self.small.clear()
        self.big.clear()
        self.messages = self.bytes = 0
        self.next_fragment = 0
        self.idle.set()
        return n

    async def _run(self) -> None:
        cfg = self.t.config
        backoff_ms = cfg.reconnect_backoff_ms_min
        failures = 0
        try:
            while True:
                if not self.messages:
                    self.idle.set()
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                try:
                    async with asyncio.timeout(cfg.handshake_timeout_ms / 1000):
                        reader, writer, peer = await self._connect()
                except (HandshakeError, FramingError, TimeoutError, OSError, ssl.SSLError) as exc:
                    failures += 1
                    reason = str(exc) or type(exc).__name__
                    self.t._stats.connect_failures += 1
                    dropped = self._purge()
                    self.t._stats.messages_dropped_unreachable += dropped
                    self.t._emit(PeerUnreachable(self.address, reason, failures))
                    # Say it once per outage; the retries of a long outage go to debug.
                    (self.log.warning if failures == 1 else self.log.debug)(
                        "gcs connect failed",
                        reason=reason,
                        failures=failures,
                        dropped=dropped,
                        backoff_ms=backoff_ms,
                    )
                    await asyncio.sleep(backoff_ms * (0.5 + 0.5 * self.t._rng.random()) / 1000)
                    backoff_ms = min(backoff_ms * 2, cfg.reconnect_backoff_ms_max)
                    continue
                failures = 0
                connected_at = asyncio.get_running_loop().time()
                if self.last_known is not None and self.last_known.incarnation != peer.incarnation:
                    self.log.info("gcs peer restarted", old=str(self.last_known), new=str(peer))
                    self.t._emit(PeerRestarted(self.last_known, peer))
                self.connected = self.last_known = peer
                self.connected_after = self.enqueued
                self.next_fragment = 0  # an unfinished fragmented message starts over
                self.log.info("gcs peer connected (outbound)", peer=str(peer))
                self.t._emit(PeerConnected(peer, outbound=True))
                try:
                    reason = await self._write_loop(reader, writer, peer)
                except (ConnectionError, OSError, ssl.SSLError) as exc:
                    reason = f"write failed: {exc!r}"
                finally:
                    self.connected = None
                    writer.close()
                self.log.info("gcs peer disconnected (outbound)", peer=str(peer), reason=reason)
                self.t._emit(PeerDisconnected(peer, outbound=True, reason=reason))
                # A link that dies young (a peer that accepts, then drops us) must not turn
                # into a reconnect loop: keep backing off until links live longer than the cap.
                lived_ms = (asyncio.get_running_loop().time() - connected_at) * 1000
                if lived_ms < cfg.reconnect_backoff_ms_max:
                    await asyncio.sleep(backoff_ms * (0.5 + 0.5 * self.t._rng.random()) / 1000)
                    backoff_ms = min(backoff_ms * 2, cfg.reconnect_backoff_ms_max)
                else:
                    backoff_ms = cfg.reconnect_backoff_ms_min
        finally:
            self.idle.set()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, NodeId]:
        """Dial, TLS, HELLO/WELCOME. Runs under the caller's handshake deadline."""
        t = self.t
        host, port = split_address(self.address)
        tls = t._tls
        reader, writer = await asyncio.open_connection(
            host,
            port,
            ssl=tls.client if tls is not None else None,
            server_hostname=host if tls is not None else None,
            local_addr=t._source_address,
            limit=65536,
        )
        try:
            _tune_socket(writer, t.config.tcp_user_timeout_ms)
            target = self.expected or NodeId("", self.address, 0)
            hello = Hello(t.config.group_name, PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX, t.me, target)
            writer.write(encode_control(hello))
            frame = await _read_one_frame(reader, FrameDecoder(t._limits))
            if isinstance(frame, Reject):
                t._stats.handshakes_failed += 1
                raise HandshakeError(f"refused by peer: {frame.reason.name}: {frame.detail}")
            if not isinstance(frame, Welcome):
                t._stats.handshakes_failed += 1
                raise HandshakeError(f"expected WELCOME, got {type(frame).__name__}")
            if not PROTOCOL_VERSION_MIN <= frame.version <= PROTOCOL_VERSION_MAX:
                t._stats.handshakes_failed += 1
                raise HandshakeError(f"peer chose unsupported version {frame.version}")
            if target.name and frame.sender.name != target.name:
                t._stats.handshakes_failed += 1
                raise HandshakeError(f"expected {target.name} at {self.address}, found {frame.sender.name}")
            return reader, writer, frame.sender
        except BaseException:
            writer.close()
            raise

    async def _write_loop(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: NodeId
    ) -> str:
        stats = self.t._stats
        batch_max = self.t.config.write_batch_bytes_max
        small, big = self.small, self.big
        while True:
            if not self.messages:
                self.idle.set()
                self.wakeup.clear()
                await self.wakeup.wait()
            if reader.at_eof() or writer.is_closing():
                return "closed by peer"
            buffers: list[bytes | memoryview] = []
            nbytes = 0
            frames = 0
            reconnect = False
            while small and nbytes < batch_max:
                item = small[0]
                if not item.dest.accepts(peer):
                    if self._addressed_after_restart(item, peer):
                        reconnect = True
                        break
                    self._pop(small)
                    stats.messages_dropped_stale += 1
                    continue
                self._pop(small)
                msg = item.message
                buffers.extend(msg.frames[0])
                nbytes += msg.wire_len
                frames += 1
                stats.messages_sent += 1
                stats.messages_compressed += msg.compressed
            while big and not reconnect:
                item = big[0]
                if not item.dest.accepts(peer):
                    if self._addressed_after_restart(item, peer):
                        reconnect = True
                        break
                    self._pop(big)
                    self.next_fragment = 0
                    stats.messages_dropped_stale += 1
                    continue
                msg = item.message
                frame = msg.frames[self.next_fragment]
                buffers.extend(frame)
                nbytes += sum(len(b) for b in frame)
                frames += 1
                self.next_fragment += 1
                if self.next_fragment == len(msg.frames):
                    self._pop(big)
                    self.next_fragment = 0
                    stats.messages_sent += 1
                    stats.messages_fragmented += 1
                    stats.messages_compressed += msg.compressed
                break
            if buffers:
                writer.writelines(buffers)
                stats.frames_sent += frames
                stats.bytes_sent += nbytes
                await writer.drain()
            if reconnect:
                return "a newer incarnation is addressed: reconnecting"

    def _addressed_after_restart(self, item: _Queued, peer: NodeId) -> bool:
        """True when ``item`` is for a newer incarnation of ``peer`` and was queued after this
        connection's handshake: the core learned of a restart we have not seen (the old
        connection may be half-open), so reconnect rather than drop. Queued before the
        handshake, the handshake's answer is the newer news: the message is stale."""
        dest = item.dest
        return dest.name == peer.name and dest.incarnation > peer.incarnation and item.seq > self.connected_after
