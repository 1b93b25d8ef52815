"""A connection to one MySQL/MariaDB backend server, as an asyncio Protocol.

Two ways to use it, never at the same time (one command in flight per connection):

* packet mode — `execute()`, `command()`: the proxy's own statements (session reset, KILL,
  probes). Answers are decoded into `Result` (text protocol only).
* relay mode — `relay()`: a client's raw command packet goes out as it is, and every byte of
  the answer is handed to a sink (normally the client's transport) as it arrives, until the
  `ResponseScanner` says the answer is complete. Nothing is decoded or re-encoded on the way.

A command of the proxy's own can be deferred (`defer`): it goes out in the same write as the
next command, in either mode, and its answer — one OK or ERR packet — is read and checked before
that command's answer (a member's XA START rides with the transaction's first statement). An
ERR there poisons the connection (the next command already ran without it).

A connection that breaks, times out, or is cancelled mid-command is *poisoned*: it is closed
and never used again (STYLE §14).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .constants import MAX_PAYLOAD, Cap, Command
from .errors import BackendError, BackendLost, BackendUnavailable, MalformedPacket
from .packets import (
    ServerHandshake,
    frame,
    handshake_response,
    parse_err,
    parse_ok,
    parse_server_handshake,
    read_lenenc_int,
    scramble_native,
    text_row_values,
    scramble_sha256,
)
from .scanner import Expect, ResponseScanner

PACKET_BYTES_MAX = 64 << 20  # packet mode: the largest answer the proxy buffers and decodes itself
RESULT_ROWS_MAX = 100_000  # packet mode: the proxy's own queries are small by construction


class Sink(Protocol):
    """Where relayed bytes go (an asyncio transport satisfies it)."""

    def write(self, data: bytes) -> None: ...


@dataclass(slots=True)
class Result:
    """A decoded text-protocol answer to one statement (packet mode)."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[bytes | None, ...]] = field(default_factory=list)
    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = 0
    warnings: int = 0


@dataclass(frozen=True, slots=True)
class BackendAddress:
    host: str
    port: int
    user: str
    password: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name or 'backend'} ({self.host}:{self.port})"


class BackendConnection(asyncio.Protocol):
    """See the module docstring. Create with `await BackendConnection.open(...)`."""

    def __init__(self, address: BackendAddress) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.handshake: ServerHandshake | None = None
        self.capabilities = 0
        self.collation = 0
        self.closed = False
        self.poisoned = False
        self.scanner = ResponseScanner()
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._lost_exc: BaseException | None = None
        # relay mode
        self._sink: Sink | None = None
        self._on_done: Callable[[ResponseScanner], None] | None = None
        self._on_lost: Callable[[bool], None] | None = None
        self._relayed_bytes = 0
        # deferred commands (`defer`): framed, not sent yet; sent, answers not read yet
        self._deferred = b""
        self._deferred_count = 0
        self._prelude_answers = 0
        self._prelude_buf = bytearray()
        # flow control hooks: the peer transport to pause when our writes back up
        self.on_pause_writing: Callable[[], None] | None = None
        self.on_resume_writing: Callable[[], None] | None = None

    @property
    def thread_id(self) -> int:
        """The backend's connection id (what KILL on that server takes)."""
        return self.handshake.connection_id if self.handshake else 0

    @property
    def busy(self) -> bool:
        """A command is in flight: an answer is relayed or awaited, or the server waits for a
        LOCAL INFILE upload (its final answer is still to come)."""
        return self._sink is not None or self._waiter is not None or self.scanner.infile

    def defer(self, payload: bytes) -> None:
        """Send command `payload` (a command byte and its body, answered by one OK or ERR
        packet: e.g. a COM_QUERY of XA START) in front of the next command, in the same write;
        its answer is read before that command's. Deferred commands that are never followed by
        another one (`drop_deferred`) are never sent."""
        self._deferred += frame(payload, 0)
        self._deferred_count += 1

    @property
    def deferred(self) -> int:
        """Commands deferred and not sent yet."""
        return self._deferred_count

    def drop_deferred(self) -> None:
        self._deferred, self._deferred_count = b"", 0

    def _with_deferred(self, raw: bytes) -> bytes:
        """`raw` with the deferred commands in front (their answers are now owed)."""
        if not self._deferred_count:
            return raw
        head = self._deferred
        self._prelude_answers += self._deferred_count
        self._deferred, self._deferred_count = b"", 0
        return head + raw

    def _prelude_failed(self, payload: bytes) -> None:
        errno, _, message = parse_err(payload)
        self._poison(MalformedPacket(f"a deferred command failed ({errno}: {message})"))

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        address: BackendAddress,
        *,
        capabilities: int,
        collation: int,
        database: str | None = None,
        connect_attrs: dict[str, str] | None = None,
        timeout_s: float = 5.0,
        mariadb_capabilities: int = 0,
    ) -> "BackendConnection":
        """Connect and authenticate with the proxy's backend account.

        `capabilities` are the flags the client negotiated (they shape how answers are framed,
        and answers are relayed as they are); the backend's own support is intersected.
        Raises BackendError for an error the server sent (errno passes through, e.g. 1049
        unknown database), BackendUnavailable when it cannot be reached in time.
        """
        loop = asyncio.get_running_loop()
        conn = cls(address)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(lambda: conn, address.host, address.port)
                await conn._handshake(capabilities, collation, database, connect_attrs, mariadb_capabilities)
        except BackendError:
            conn.close()
            raise
        except (OSError, TimeoutError, MalformedPacket, BackendLost) as exc:
            conn.close()
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            raise BackendUnavailable(f"Can't connect to backend {address}: {why}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    async def _handshake(
        self, capabilities: int, collation: int, database: str | None, attrs: dict[str, str] | None,
        mariadb_capabilities: int = 0,
    ) -> None:
        seq, payload = await self.read_packet()
        if payload[:1] == b"\xff":
            raise BackendError(*parse_err(payload))
        hs = parse_server_handshake(payload)
        self.handshake = hs
        caps = (capabilities | Cap.PROTOCOL_41 | Cap.SECURE_CONNECTION | Cap.PLUGIN_AUTH | Cap.TRANSACTIONS)
        caps &= hs.capabilities | Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA
        caps &= ~(Cap.SSL | Cap.COMPRESS | Cap.DEPRECATE_EOF | Cap.ZSTD_COMPRESSION | Cap.QUERY_ATTRIBUTES)
        if database:
            caps |= Cap.CONNECT_WITH_DB
        else:
            caps &= ~Cap.CONNECT_WITH_DB
        if attrs:
            caps |= Cap.CONNECT_ATTRS & hs.capabilities
        else:
            caps &= ~Cap.CONNECT_ATTRS
        self.capabilities = caps
        self.collation = collation or hs.collation
        plugin = hs.auth_plugin if hs.auth_plugin in ("mysql_native_password", "caching_sha2_password") else "mysql_native_password"
        nonce = hs.auth_data
        auth = self._scramble(plugin, nonce)
        self.write_packet(
            handshake_response(
                capabilities=caps, collation=self.collation, user=self.address.user,
                auth_response=auth, database=database, plugin=plugin, connect_attrs=attrs,
                mariadb_capabilities=mariadb_capabilities & hs.mariadb_capabilities,
            ),
            seq + 1,
        )
        while True:
            seq, payload = await self.read_packet()
            marker = payload[:1]
            if marker == b"\x00":
                return
            if marker == b"\xff":
                raise BackendError(*parse_err(payload))
            if marker == b"\xfe":  # auth switch request
                end = payload.find(b"\x00", 1)
                plugin = payload[1:end].decode("ascii", "replace")
                nonce = payload[end + 1 :].rstrip(b"\x00")
                if plugin not in ("mysql_native_password", "caching_sha2_password"):
                    raise BackendError(1251, "08004", f"grproxy cannot authenticate with plugin {plugin!r}")
                self.write_packet(self._scramble(plugin, nonce), seq + 1)
            elif marker == b"\x01" and plugin == "caching_sha2_password":
                if payload[1:2] == b"\x03":  # fast auth succeeded, OK follows
                    continue
                if payload[1:2] == b"\x04":  # full authentication: ask for the RSA public key
                    self.write_packet(b"\x02", seq + 1)
                    seq, key = await self.read_packet()
                    self.write_packet(_rsa_encrypt_password(self.address.password, nonce, key[1:]), seq + 1)
                else:
                    raise MalformedPacket("unexpected caching_sha2_password exchange")
            else:
                raise MalformedPacket(f"unexpected packet 0x{payload[0]:02x} during authentication")

    def _scramble(self, plugin: str, nonce: bytes) -> bytes:
        if plugin == "caching_sha2_password":
            return scramble_sha256(self.address.password, nonce)
        return scramble_native(self.address.password, nonce)

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            self._relay_data(sink, data)
            return
        self._buf += data
        if len(self._buf) > PACKET_BYTES_MAX + 4 * 1024:
            # Nobody reads this much in packet mode: the server is misbehaving.
            self._poison(MalformedPacket("backend sent more than the proxy buffers"))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _relay_data(self, sink: Sink, data: bytes) -> None:
        if self._prelude_answers:
            data = self._take_prelude_answers(data)
            if not data:
                return
        scanner = self.scanner
        try:
            used = scanner.feed(data)
        except MalformedPacket as exc:
            self._poison(exc)
            return
        if used:
            sink.write(data if used == len(data) else data[:used])
            self._relayed_bytes += used
        if scanner.done:
            if used < len(data):
                self._buf += data[used:]  # unsolicited bytes: kept for the next reader
            on_done = self._on_done
            self._sink = None
            self._on_done = None
            self._on_lost = None
            if on_done is not None:
                on_done(scanner)

    def _take_prelude_answers(self, data: bytes) -> bytes:
        """Consume the deferred commands' answers at the head of `data`; the rest follows."""
        buf = self._prelude_buf
        buf += data
        while self._prelude_answers:
            if len(buf) < 4:
                return b""
            length = int.from_bytes(buf[:3], "little")
            if len(buf) < 4 + length:
                return b""
            payload = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            self._prelude_answers -= 1
            if payload[:1] != b"\x00":
                self._prelude_failed(payload)
                buf.clear()
                return b""
        rest = bytes(buf)
        buf.clear()
        return rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost_exc = exc or BackendLost(f"Lost connection to backend {self.address}")
        on_lost = self._on_lost
        relayed = self._relayed_bytes > 0
        self._sink = None
        self._on_done = None
        self._on_lost = None
        if on_lost is not None:
            on_lost(relayed)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        if self.on_pause_writing:
            self.on_pause_writing()

    def resume_writing(self) -> None:
        if self.on_resume_writing:
            self.on_resume_writing()

    # --- relay mode -----------------------------------------------------------------------------

    def relay(
        self,
        raw: bytes,
        expect: Expect,
        sink: Sink,
        on_done: Callable[[ResponseScanner], None],
        on_lost: Callable[[bool], None],
    ) -> None:
        """Send a client's raw command packet(s) and relay the answer to `sink`.

        `on_done(scanner)` is called once the answer is complete (at once for Expect.NONE);
        `on_lost(relayed_any)` if the connection breaks first — `relayed_any` tells whether
        part of the answer already reached the sink.
        """
        if self.closed or self.transport is None:
            on_lost(False)
            return
        if self.busy:
            raise RuntimeError("[BUG] relay on a backend connection with a command in flight")
        self.scanner.start(expect)
        if expect == Expect.NONE:
            self.transport.write(raw)  # no answer to read the deferred ones' with: they wait
            on_done(self.scanner)
            return
        self._sink = sink
        self._on_done = on_done
        self._on_lost = on_lost
        self._relayed_bytes = 0
        self.transport.write(self._with_deferred(raw))
        if self._buf:  # bytes that arrived unsolicited belong to this answer's stream
            data = bytes(self._buf)
            self._buf.clear()
            self._relay_data(sink, data)

    def wrap_sink(self, wrap: Callable[[Sink], Sink]) -> Sink | None:
        """While an answer is being relayed: what is left of it goes to `wrap(sink)` instead of
        the relay's sink. Returns the new sink, or None when no answer is in flight."""
        if self._sink is None:
            return None
        self._sink = wrap(self._sink)
        return self._sink

    def relay_more(self, raw: bytes) -> None:
        """Forward more client packets within the current command (LOCAL INFILE data)."""
        if self.transport is not None and not self.closed:
            self.transport.write(raw)

    def resume_after_infile(
        self, sink: Sink, on_done: Callable[[ResponseScanner], None], on_lost: Callable[[bool], None]
    ) -> None:
        """The client's file is sent: relay the final answer. A connection lost during the
        upload (nobody was listening then) reports it now, through `on_lost`."""
        self.scanner.resume_after_infile()
        if self.closed or self.transport is None:
            on_lost(True)
            return
        self._sink = sink
        self._on_done = on_done
        self._on_lost = on_lost
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self._relay_data(sink, data)

    # --- packet mode ----------------------------------------------------------------------------

    def write_packet(self, payload: bytes, seq: int) -> None:
        if self.transport is None or self.closed:
            raise BackendLost(f"Lost connection to backend {self.address}")
        self.transport.write(frame(payload, seq))

    async def read_packet(self) -> tuple[int, bytes]:
        """Next logical packet (continuations joined): (sequence id of the last part, payload)."""
        parts: list[bytes] = []
        total = 0
        while True:
            while len(self._buf) < 4 or len(self._buf) < 4 + (int.from_bytes(self._buf[:3], "little")):
                if self.closed:
                    raise BackendLost(f"Lost connection to backend {self.address}")
                loop = asyncio.get_running_loop()
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            length = int.from_bytes(self._buf[:3], "little")
            seq = self._buf[3]
            parts.append(bytes(self._buf[4 : 4 + length]))
            del self._buf[: 4 + length]
            total += length
            if total > PACKET_BYTES_MAX:
                self._poison(MalformedPacket("backend packet over the proxy's bound"))
                raise BackendLost(f"backend {self.address} sent a packet over {PACKET_BYTES_MAX} bytes")
            if length < MAX_PAYLOAD:
                return seq, parts[0] if len(parts) == 1 else b"".join(parts)

    async def command(self, command: Command, body: bytes = b"") -> Result:
        """Send a command with an OK/ERR answer (or a text result for COM_QUERY) and decode it.

        Returns the last result when a statement produces several. Raises BackendError for an
        ERR answer (the connection stays usable), BackendLost when the connection broke.
        """
        results = await self.command_all(command, body)
        return results[-1]

    async def command_all(self, command: Command, body: bytes = b"", *, results: int | None = None) -> list[Result]:
        """As `command`, but every result of a multi-statement / CALL, in order.

        An ERR ends the answer: results before it are lost and BackendError is raised (as the
        protocol itself stops at the first failing statement). `results`: read exactly that many
        results (a multi-statement of that many statements that return no result sets) whatever
        their SERVER_MORE_RESULTS_EXISTS flags say — MariaDB 10.11 leaves the flag off the OK of
        a BINLOG statement that applied row events even when statements follow it (they still
        run and answer). A last result that says more follow poisons the connection.
        """
        if self.busy:
            raise RuntimeError("[BUG] command on a backend connection with a command in flight")
        try:
            if self.transport is None or self.closed:
                raise BackendLost(f"Lost connection to backend {self.address}")
            self.transport.write(self._with_deferred(frame(bytes((command,)) + body, 0)))
            while self._prelude_answers:
                _, answer = await self.read_packet()
                self._prelude_answers -= 1
                if answer[:1] != b"\x00":
                    self._prelude_failed(answer)
                    raise BackendLost(f"backend {self.address}: a deferred command failed: {parse_err(answer)[2]}")
            return await self._read_results(results)
        except asyncio.CancelledError:
            self._poison(None)
            raise
        except (BackendLost, MalformedPacket):
            self._poison(None)
            raise

    async def execute(self, sql: str) -> Result:
        """Run one statement in packet mode; returns the last result. Raises BackendError."""
        return await self.command(Command.QUERY, sql.encode("utf-8"))

    async def execute_all(self, sql: str) -> list[Result]:
        """Run a multi-statement text (needs Cap.MULTI_STATEMENTS); every result, in order."""
        return await self.command_all(Command.QUERY, sql.encode("utf-8"))

    async def _read_results(self, expected: int | None = None) -> list[Result]:
        results: list[Result] = []
        while True:
            result = Result()
            _, payload = await self.read_packet()
            first = payload[0] if payload else -1
            if first == 0xFF:  # an ERR ends the whole answer: nothing follows it
                raise BackendError(*parse_err(payload))
            if first == 0x00:
                ok = parse_ok(payload)
                result.affected_rows, result.last_insert_id = ok.affected_rows, ok.last_insert_id
                result.status, result.warnings = ok.status, ok.warnings
            elif first == 0xFE and len(payload) < 9:  # EOF answer (COM_SET_OPTION)
                result.status = payload[3] | (payload[4] << 8) if len(payload) >= 5 else 0
            else:
                ncols, _ = read_lenenc_int(payload, 0)
                for _ in range(ncols):
                    _, coldef = await self.read_packet()
                    result.columns.append(_column_name(coldef))
                await self.read_packet()  # EOF after the column definitions
                while True:
                    _, row = await self.read_packet()
                    if row[:1] == b"\xfe" and len(row) < 9:
                        if len(row) >= 5:
                            result.warnings = row[1] | (row[2] << 8)
                            result.status = row[3] | (row[4] << 8)
                        break
                    if row[:1] == b"\xff":
                        raise BackendError(*parse_err(row))
                    if len(result.rows) >= RESULT_ROWS_MAX:
                        self._poison(None)
                        raise BackendLost(f"result over {RESULT_ROWS_MAX} rows in packet mode")
                    result.rows.append(text_row_values(row, ncols))
            results.append(result)
            more = result.status & 0x0008  # SERVER_MORE_RESULTS_EXISTS
            if expected is None:
                if not more:
                    return results
            elif len(results) >= expected:
                if more:
                    self._poison(None)
                    raise MalformedPacket(f"backend {self.address} answered more than the {expected} statements sent")
                return results

    # --- closing --------------------------------------------------------------------------------

    def _poison(self, exc: BaseException | None) -> None:
        self.poisoned = True
        self.close()

    def close(self) -> None:
        """Close at once (no COM_QUIT); any command in flight is reported lost."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        self.closed = True

    async def quit(self) -> None:
        """Polite close: COM_QUIT, then close."""
        if self.transport is not None and not self.closed and not self.busy:
            try:
                self.transport.write(frame(bytes((Command.QUIT,)), 0))
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
            self.transport.close()
        self.closed = True


def _column_name(coldef: bytes) -> str:
    pos = 0
    values = []
    for _ in range(5):  # catalog, schema, table, org_table, name
        n, pos = read_lenenc_int(coldef, pos)
        values.append(coldef[pos : pos + n])
        pos += n
    return values[4].decode("utf-8", "replace")


def _rsa_encrypt_password(password: str, nonce: bytes, pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = serialization.load_pem_public_key(pem)
    raw = password.encode("utf-8") + b"\x00"
    xored = bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(raw))
    return key.encrypt(  # type: ignore[union-attr]
        xored, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    )



