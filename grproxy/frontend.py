"""The MySQL-protocol front end: what clients connect to.

Built on mysql-mimic for the connection phase — its handshake packet, handshake-response and
COM_CHANGE_USER parsers and its mysql_native_password plugin check scrambles — but not on its
`Session`/command loop: after authentication every command is relayed as raw packets to a
backend (replication.protocol.relay.RelaySession) and answers come back byte for byte (DESIGN §4: a proxy
that re-encodes rows loses metadata and ~60 % of its speed).

One `ClientConnection` (an asyncio Protocol) per client. It owns the client transport and is
in one of these phases:

    HANDSHAKE --auth ok + backend connected--> COMMAND <--> (INFILE | LOCAL) --> CLOSED

COMMAND is the hot path: a complete command packet is handed to the session without a task
switch; the session calls `command_done()` when the answer has been relayed. Bytes that arrive
while a command is in flight stay buffered (bounded by max_allowed_packet; reading pauses).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from enum import Enum

import structlog
from mysql_mimic import packets as mimic_packets
from mysql_mimic.auth import NativePasswordAuthPlugin, User
from mysql_mimic.charset import CharacterSet
from mysql_mimic.types import Capabilities, ServerStatus

from replication.protocol.backend import BackendConnection
from replication.protocol.constants import MAX_PAYLOAD, OWN_CAPABILITIES, PROXY_CAPABILITIES, UTF8MB4_GENERAL_CI, Cap, Command
from replication.protocol.errors import (
    AccessDenied,
    BackendError,
    HandshakeError,
    InsecureTransport,
    KillDenied,
    MalformedPacket,
    MySQLError,
    PacketsOutOfOrder,
    PacketTooLarge,
    TooManyConnections,
    UnknownCommand,
    UnknownThread,
)
from replication.protocol.handshake import (
    MARIADB_SUPPORTED,
    parse_change_user,
    parse_handshake_response,
    with_mariadb_capabilities,
)
from replication.protocol.packets import frame, ok_payload
from replication.protocol.relay import Session, SessionFactory

from .config import Config, UserConfig
from .tls import TlsTransport

log = structlog.get_logger("grproxy.frontend")

# Proxy connection ids start high so that they do not collide with backend thread ids, which a
# client may also name in KILL (CONNECTION_ID() is answered by the backend).
CONN_ID_BASE = 1 << 28
CONN_ID_SPAN = (1 << 31) - CONN_ID_BASE
READ_BUFFER_BYTES_MAX = 1 << 20  # beyond this (while a command is in flight) reading pauses
ADMIN_CONNECT_TIMEOUT_S = 5.0  # KILL opens a short connection of its own
HANDSHAKE_BUFFER_BYTES_MAX = 1 << 16  # unread bytes before login (or in COM_CHANGE_USER): more → close
WRITE_BUFFER_HIGH_BYTES = 1 << 20  # client transport write buffer: pause the backend above it
_NATIVE = NativePasswordAuthPlugin()


class Phase(Enum):
    HANDSHAKE = "handshake"
    COMMAND = "command"
    INFILE = "infile"
    LOCAL = "local"  # a coroutine of the proxy's reads the client's packets (COM_CHANGE_USER)
    CLOSED = "closed"


class ClientConnection(asyncio.Protocol):
    """One client connection. See the module docstring for the phases."""

    def __init__(self, server: "FrontendServer") -> None:
        self.server = server
        self.conn_id = 0
        self.username = ""
        self.host = ""
        self.phase = Phase.HANDSHAKE
        self.session: Session | None = None
        self.capabilities = 0
        self.mariadb_capabilities = 0
        self.collation = UTF8MB4_GENERAL_CI
        self.tls = False
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False
        self._parts: list[bytes] = []
        self._parts_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._pauses: set[str] = set()  # why reading is paused: "buffer" (command in flight), "backend" (backpressure)
        self._nonce = b""
        self._handshake_task: asyncio.Task[None] | None = None
        self._local_task: asyncio.Task[None] | None = None  # COM_CHANGE_USER (phase LOCAL)
        self._tls: TlsTransport | None = None
        self._log = log
        # MariaDB Connector/C (the mariadb CLI, and drivers built on it) reports an ERR packet
        # carrying a client-side code (2000-2999: 2003, 2006, 2013) as "2027 Received malformed
        # packet"; such clients get a server-side code for the same condition instead.
        self._client_errors_refused = False

    # --- ClientLink (what a session uses) ------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport

    def send_packet(self, payload: bytes, seq: int) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if self._client_errors_refused and payload[:1] == b"\xff":
                payload = server_range_error(payload)
            self._transport.write(frame(payload, seq))

    def send_error(self, error: MySQLError, seq: int) -> None:
        self._log.info("error_sent", errno=getattr(error, "backend_errno", error.errno), message=error.message)
        self.send_packet(error.to_payload(), seq)

    def command_done(self) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.COMMAND
        self._busy = False
        self.unpause_reading("buffer")
        if self._buf:
            self._process()

    def begin_infile(self) -> None:
        self.phase = Phase.INFILE
        if self._buf:
            self._process()

    def pause_reading(self, reason: str) -> None:
        """Stop reading from the client until every reason given has been lifted."""
        if not self._pauses and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
        self._pauses.add(reason)

    def unpause_reading(self, reason: str) -> None:
        if reason not in self._pauses:
            return
        self._pauses.discard(reason)
        if not self._pauses and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        if self._transport is not None:
            self._transport.close()
        if self.session is not None:
            self.session.close()
        for task in (self._handshake_task, self._local_task):
            # A closed connection's coroutines stop here: the session gave its connections
            # back, and a COM_CHANGE_USER that went on would reset ones a pool now owns.
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.server.forget(self)

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)
        peer = transport.get_extra_info("peername")
        self.host = peer[0] if isinstance(peer, tuple) else "localhost"
        if not self.server.admit(self):
            self.send_packet(TooManyConnections("Too many connections").to_payload(), 0)
            self.phase = Phase.CLOSED
            transport.close()
            return
        self._log = log.bind(conn_id=self.conn_id)
        self._handshake_task = asyncio.get_running_loop().create_task(self._handshake())

    def data_received(self, data: bytes) -> None:
        if self._tls is not None:
            try:
                data = self._tls.feed(data)
            except ssl.SSLError as exc:
                self._log.info("tls_error", reason=str(exc))
                self.close()
                return
            if self._tls.closed_by_peer:
                self.close()
                return
            if not data:
                return
        if self.phase is Phase.COMMAND and not self._busy and not self._buf:
            n = len(data)
            if n > 4:
                length = data[0] | (data[1] << 8) | (data[2] << 16)
                if length + 4 == n and data[3] == 0 and length < MAX_PAYLOAD and length <= self.server.max_allowed_packet:
                    self._dispatch(data, 0)
                    return
        self._buf += data
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._log.debug("client_disconnected")
        self.close()

    def pause_writing(self) -> None:
        if self.session is not None and self.session.backend.transport is not None:
            self.session.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.session is not None and self.session.backend.transport is not None:
            self.session.backend.transport.resume_reading()

    # --- packet assembly --------------------------------------------------------------------------

    def _process(self) -> None:
        """Take complete packets out of the buffer for whoever may have them now."""
        buf = self._buf
        while len(buf) >= 4:
            phase = self.phase
            if phase in (Phase.HANDSHAKE, Phase.LOCAL):
                if len(buf) > HANDSHAKE_BUFFER_BYTES_MAX:
                    self._log.info("handshake_flood", buffered=len(buf))
                    self.close()
                    return
                waiter = self._waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                return
            if phase is Phase.CLOSED or (phase is Phase.COMMAND and self._busy):
                if len(buf) > READ_BUFFER_BYTES_MAX + self.server.max_allowed_packet:
                    self.pause_reading("buffer")
                return
            length = buf[0] | (buf[1] << 8) | (buf[2] << 16)
            seq = buf[3]
            if phase is Phase.COMMAND:
                if not self._parts and seq != 0:
                    self._fail(PacketsOutOfOrder("Got packets out of order"), seq + 1)
                    return
                if self._parts_bytes + length > self.server.max_allowed_packet:
                    self._fail(PacketTooLarge("Got a packet bigger than 'max_allowed_packet' bytes"), seq + 1)
                    return
            if len(buf) < 4 + length:
                return
            raw = bytes(buf[: 4 + length])
            del buf[: 4 + length]
            if phase is Phase.INFILE:
                assert self.session is not None
                last = length == 0
                if last:
                    self.phase = Phase.COMMAND
                    self._busy = True
                self.session.on_infile_packet(raw, last)
                continue
            if length == MAX_PAYLOAD:
                self._parts.append(raw)
                self._parts_bytes += length
                continue
            if self._parts:
                self._parts.append(raw)
                raw = b"".join(self._parts)
                self._parts.clear()
                self._parts_bytes = 0
            self._dispatch(raw, seq)

    def _dispatch(self, raw: bytes, last_seq: int) -> None:
        self._busy = True
        if len(raw) <= 4:
            self.send_error(UnknownCommand("Empty command packet"), 1)
            self._busy = False
            return
        if raw[4] == Command.QUIT:
            self.close()
            return
        if raw[4] == Command.CHANGE_USER:
            self.phase = Phase.LOCAL
            self._local_task = asyncio.get_running_loop().create_task(self._change_user(raw))
            return
        assert self.session is not None
        try:
            self.session.on_command(raw, last_seq)
        except Exception:  # noqa: BLE001 - a session's bug costs this client, never the caller
            # The caller may be another connection's callback: the member connection whose
            # answer completed the previous command dispatches the next buffered one.
            self._log.exception("session_error")
            self._fail(MySQLError("grproxy internal error; see the proxy log"), last_seq + 1)

    def _fail(self, error: MySQLError, seq: int) -> None:
        """Protocol violation by the client: ERR, then close (nothing more is read)."""
        self.send_error(error, seq)
        self.close()

    async def _read_packet(self, expect_seq: int) -> bytes:
        """Next packet payload, for the handshake and local commands (bounded, in-order)."""
        while True:
            if self.phase is Phase.CLOSED:
                raise ConnectionResetError("client closed the connection")
            buf = self._buf
            if len(buf) >= 4:
                length = buf[0] | (buf[1] << 8) | (buf[2] << 16)
                if buf[3] != expect_seq % 256:
                    raise PacketsOutOfOrder("Got packets out of order")
                if length >= 1 << 16:
                    raise HandshakeError("Bad handshake: packet too large")
                if len(buf) >= 4 + length:
                    payload = bytes(buf[4 : 4 + length])
                    del buf[: 4 + length]
                    return payload
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # --- connection phase -------------------------------------------------------------------------

    async def _handshake(self) -> None:
        server = self.server
        try:
            async with asyncio.timeout(server.config.frontend.connect_timeout_s):
                ok = await self._connection_phase()
        except TimeoutError:
            self._log.info("handshake_timeout")
            self.close()
            return
        except MySQLError as exc:
            self._log.info("handshake_refused", errno=exc.errno, reason=exc.message)
            self.send_packet(exc.to_payload(), 2)
            self.close()
            return
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self._log.info("handshake_failed", reason=str(exc))
            self.close()
            return
        except asyncio.CancelledError:
            self.close()
            raise
        except Exception:  # noqa: BLE001 - any bug here must not take the process down
            self._log.exception("handshake_error")
            self.close()
            return
        if not ok:
            self.close()
            return
        self.phase = Phase.COMMAND
        if self._buf:
            self._process()

    async def _connection_phase(self) -> bool:
        server = self.server
        self._nonce = os.urandom(20).translate(_PRINTABLE)
        caps = server.capabilities
        handshake = mimic_packets.make_handshake_v10(
            capabilities=Capabilities(caps),
            server_charset=CharacterSet.utf8mb4,
            server_version=server.server_version,
            connection_id=self.conn_id,
            auth_data=self._nonce + b"\x00",
            status_flags=ServerStatus.SERVER_STATUS_AUTOCOMMIT,
            auth_plugin_name=_NATIVE.name,
        )
        self.send_packet(with_mariadb_capabilities(handshake, server.mariadb_capabilities), 0)
        seq = 1
        data = await self._read_packet(seq)
        try:
            response = parse_handshake_response(data, caps)
        except MalformedPacket as exc:
            raise HandshakeError(f"Bad handshake: {exc.message}") from None
        if response.ssl_request:
            if server.ssl_context is None:
                raise HandshakeError("Bad handshake: TLS requested but not offered")
            # Bytes after the SSL request (the ClientHello, when it came in the same read) are
            # the start of the TLS stream.
            leftover = bytes(self._buf)
            self._buf.clear()
            tls = TlsTransport(self.transport, server.ssl_context)  # type: ignore[arg-type]
            self._transport = tls  # type: ignore[assignment]
            self._tls = tls
            self.tls = True
            if leftover:
                self._buf += tls.feed(leftover)
            await tls.handshake
            seq += 1
            data = await self._read_packet(seq)
            try:
                response = parse_handshake_response(data, caps)
            except MalformedPacket as exc:
                raise HandshakeError(f"Bad handshake: {exc.message}") from None
            if response.ssl_request:
                raise HandshakeError("Bad handshake: a second SSL request")
        if server.config.frontend.require_secure_transport and not self.tls:
            raise InsecureTransport("Connections using insecure transport are prohibited while --require_secure_transport=ON.")
        self.capabilities = response.capabilities
        self.mariadb_capabilities = response.mariadb_capabilities & server.mariadb_capabilities
        self.collation = response.collation or UTF8MB4_GENERAL_CI
        self.username = response.username
        ok, seq = await self._authenticate(response.username, response.auth_response, response.client_plugin, seq)
        if not ok:
            return False
        self._log = self._log.bind(user=self.username)
        attrs = dict(response.connect_attrs or {})
        self._client_errors_refused = attrs.get("_client_name") == "libmariadb"
        attrs["_proxy"] = "grproxy"
        attrs["_proxy_client_host"] = self.host
        try:
            self.session = await server.factory.open_session(
                self, server, capabilities=self.capabilities, collation=self.collation,
                database=response.database or None, attrs=attrs, mariadb_capabilities=self.mariadb_capabilities,
            )
        except MySQLError as exc:
            self.send_packet(exc.to_payload(), seq + 1)
            self._log.info("backend_refused", error=str(exc))
            return False
        self.send_packet(ok_payload(self.session.status), seq + 1)
        self._log.info("client_connected", host=self.host, database=response.database, tls=self.tls,
                       backend_thread=self.session.backend.thread_id)
        return True

    async def _authenticate(self, username: str, auth_response: bytes, plugin: str | None, seq: int) -> tuple[bool, int]:
        """mysql_native_password against the configured users; other plugins are switched.

        Returns (authenticated, sequence id of the last packet read). On failure an ERR 1045 has
        been sent.
        """
        nonce = self._nonce
        if plugin not in (None, "", _NATIVE.name):
            nonce = os.urandom(20).translate(_PRINTABLE)
            switch = mimic_packets.make_auth_switch_request(CharacterSet.utf8mb4, _NATIVE.name, nonce + b"\x00")
            self.send_packet(switch, seq + 1)
            seq += 2
            auth_response = await self._read_packet(seq)
        user_config = self.server.users.get(username)
        matches = False
        if user_config is not None:
            user = User(name=username, auth_string=user_config.password_hash[1:].lower() or None,
                        auth_plugin=_NATIVE.name)
            matches = _NATIVE.password_matches(user=user, scramble=auth_response, nonce=nonce)
        if not matches:
            using = "YES" if auth_response else "NO"
            self.send_packet(
                AccessDenied(f"Access denied for user '{username}'@'{self.host}' (using password: {using})").to_payload(),
                seq + 1,
            )
            self._log.info("access_denied", user=username)
            return False, seq
        return True, seq

    async def _change_user(self, raw: bytes) -> None:
        assert self.session is not None
        try:
            try:
                com = parse_change_user(raw[5:], self.capabilities)
            except MalformedPacket as exc:
                self._fail(HandshakeError(f"Malformed COM_CHANGE_USER: {exc.message}"), raw[3] + 1)
                return
            ok, seq = await self._authenticate(com.username, com.auth_response, com.client_plugin, raw[3])
            if not ok:
                self.close()  # as a MySQL server does after a failed COM_CHANGE_USER
                return
            self.username = com.username
            try:
                await self.session.reset_for_user(com.database or None)
            except BackendError as exc:
                self.send_packet(exc.to_payload(), seq + 1)
                self.command_done()
                return
            self.send_packet(ok_payload(self.session.status), seq + 1)
            self.command_done()
        except MySQLError as exc:
            self._fail(exc, raw[3] + 1)
        except (ConnectionError, OSError) as exc:  # the client left during it (an auth switch)
            self._log.info("change_user_abandoned", reason=str(exc))
            self.close()
        except Exception:  # noqa: BLE001
            self._log.exception("change_user_error")
            self.close()


_PRINTABLE = bytes((33 + (b % 94)) for b in range(256))  # nonce bytes: printable, never NUL


class FrontendServer:
    """Accepts clients on one listener; holds the process list (connection id → client).

    What a logged-in client's commands run on is the `factory`'s business: a relay onto a
    backend (the router's client port) or a member session (a member port).
    """

    def __init__(self, config: Config, server_version: str, backend_caps: int, factory: SessionFactory,
                 listen: tuple[str, int] | None = None, backend_mariadb_caps: int = 0) -> None:
        self.config = config
        self.factory = factory
        self.listen = listen or (config.frontend.host, config.frontend.port)
        self.max_allowed_packet = config.frontend.max_allowed_packet
        self.users: dict[str, UserConfig] = {u.name: u for u in config.users}
        self.server_version = server_version
        self.ssl_context = _ssl_context(config)
        caps = (PROXY_CAPABILITIES & backend_caps) | Cap.PROTOCOL_41 | Cap.SECURE_CONNECTION | Cap.PLUGIN_AUTH
        if self.ssl_context is not None:
            caps |= Cap.SSL
        self.capabilities = int(caps)
        self.mariadb_capabilities = backend_mariadb_caps & MARIADB_SUPPORTED
        self.connections: dict[int, ClientConnection] = {}
        self._next_id = 0
        self._server: asyncio.base_events.Server | None = None
        self.on_change: Callable[[], None] | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.listen
        self._server = await loop.create_server(lambda: ClientConnection(self), host, port, backlog=512,
                                                reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for client in list(self.connections.values()):
            client.close()
        if self._server is not None:
            await self._server.wait_closed()

    def admit(self, client: ClientConnection) -> bool:
        if len(self.connections) >= self.config.frontend.max_connections:
            return False
        while True:
            self._next_id = (self._next_id + 1) % CONN_ID_SPAN
            conn_id = CONN_ID_BASE + self._next_id
            if conn_id not in self.connections:
                break
        client.conn_id = conn_id
        self.connections[conn_id] = client
        return True

    def forget(self, client: ClientConnection) -> None:
        if self.connections.get(client.conn_id) is client:
            del self.connections[client.conn_id]

    async def kill(self, conn_id: int, *, query_only: bool, by: ClientConnection) -> None:  # type: ignore[override]
        """KILL [QUERY] for a proxy connection id (or the backend thread id of a session).

        A user may kill its own sessions; users with `admin = true` any session.
        """
        victim = self.connections.get(conn_id)
        if victim is None:
            victim = next(
                (c for c in self.connections.values() if c.session is not None and c.session.backend.thread_id == conn_id),
                None,
            )
        if victim is None or victim.session is None:
            raise UnknownThread(f"Unknown thread id: {conn_id}")
        killer = self.users.get(by.username)
        if victim.username != by.username and not (killer is not None and killer.admin):
            raise KillDenied(f"You are not owner of thread {conn_id}")
        thread_id = victim.session.backend.thread_id
        if victim is by and not query_only:
            by.close()
            return
        admin = await BackendConnection.open(
            victim.session.backend.address, capabilities=int(OWN_CAPABILITIES), collation=UTF8MB4_GENERAL_CI,
            timeout_s=ADMIN_CONNECT_TIMEOUT_S,
        )
        try:
            try:
                await admin.execute(f"KILL {'QUERY' if query_only else 'CONNECTION'} {thread_id}")
            except BackendError as exc:
                if exc.backend_errno != 1094:  # already gone is fine
                    raise
        finally:
            admin.close()
        if not query_only:
            victim.close()


# Client-side error codes a proxy sends, and the server-side code libmariadb clients get instead.
_SERVER_RANGE_ERRORS = {
    2003: (1105, b"HY000"),  # can't connect to the backend / member → ER_UNKNOWN_ERROR
    2006: (1927, b"70100"),  # gone away → ER_CONNECTION_KILLED
    2013: (1927, b"70100"),  # lost during a statement → ER_CONNECTION_KILLED
}


def server_range_error(payload: bytes) -> bytes:
    """An ERR payload with a client-side code (2000-2999) rewritten to a server-side one; the
    message keeps the original code in front, so nothing is lost."""
    if len(payload) < 9 or payload[3:4] != b"#":
        return payload
    errno = int.from_bytes(payload[1:3], "little")
    if not 2000 <= errno < 3000:
        return payload
    code, sqlstate = _SERVER_RANGE_ERRORS.get(errno, (1105, b"HY000"))
    return b"\xff" + code.to_bytes(2, "little") + b"#" + sqlstate + f"({errno}) ".encode() + payload[9:]


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    fe = config.frontend
    if not fe.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(fe.tls_cert, fe.tls_key)
    return ctx
