"""Helpers for the compatibility suite (tests/integration/test_compat_*.py).

`Target` is where a client connects: the backend itself ("direct") or grproxy in front of it
("proxy"). Every compatibility test runs a scenario against its target and compares what the
client observed with the same scenario run directly against the backend; the "direct" variant
of each test therefore validates the test itself.

`RawClient` is a minimal MySQL-protocol client over a plain socket, for what real clients hide:
exact column-definition and row bytes, OK-packet fields, and malformed packets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql

HERE = Path(__file__).resolve().parent

# Bounds on every network wait of the suite: a hung proxy fails a test, it does not hang it.
READ_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 10


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a client connects. `name` is "direct" or "proxy" (or a variant of those)."""

    name: str
    host: str
    port: int
    user: str
    password: str
    database: str

    def pymysql(self, **overrides: Any) -> pymysql.connections.Connection:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "charset": "utf8mb4",
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
            "write_timeout": READ_TIMEOUT_S,
        }
        kwargs.update(overrides)
        return pymysql.connect(**kwargs)

    def connector_kwargs(self, **overrides: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "charset": "utf8mb4",
            "connection_timeout": CONNECT_TIMEOUT_S,
            "use_pure": True,
        }
        kwargs.update(overrides)
        return kwargs

    def connector(self, **overrides: Any) -> Any:
        import mysql.connector

        return mysql.connector.connect(**self.connector_kwargs(**overrides))

    def aiomysql_kwargs(self, **overrides: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "db": self.database,
            "charset": "utf8mb4",
            "connect_timeout": CONNECT_TIMEOUT_S,
        }
        kwargs.update(overrides)
        return kwargs

    def sqlalchemy_url(self, driver: str = "pymysql") -> str:
        from sqlalchemy.engine import URL

        return URL.create(
            f"mysql+{driver}",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
            query={"charset": "utf8mb4"},
        ).render_as_string(hide_password=False)

    def raw(self, **kwargs: Any) -> RawClient:
        kwargs.setdefault("database", self.database)
        return RawClient.connect(self.host, self.port, self.user, self.password, **kwargs)

    def table(self, base: str) -> str:
        """A table name private to this target, so direct and proxy runs do not collide.

        Same length for every target ("dir", "pro"), so byte-for-byte comparisons of packets
        that contain the name (column definitions) only differ where the name is.
        """
        return f"{base}_{self.name[:3]}"


# ---------------------------------------------------------------------------------------------
# Running mysql-connector-python's C extension in a fresh interpreter.
#
# The wheel's C extension bundles an OpenSSL newer than the system's. pytest imports hashlib
# (so the system libcrypto) before any test runs, and then `_mysql_connector` fails to load
# ("version `OPENSSL_3.2.0' not found"); mysql.connector silently falls back to pure Python.
# A fresh interpreter that imports `_mysql_connector` first loads the bundled library, which
# the rest of Python then shares. So C-extension scenarios run in a subprocess
# (compat_cext_runner.py) and send their observations back pickled.


def run_cext(scenario: str, target: Target, *, timeout_s: float = 120, **params: Any) -> Any:
    """Run compat_connector_scenarios.<scenario> with use_pure=False in a fresh interpreter.

    Returns what the scenario returned. Fails (AssertionError) with the child's stderr if it
    raised or the C extension did not load.
    """
    spec = {
        "scenario": scenario,
        "connect": target.connector_kwargs(use_pure=False),
        "params": params,
    }
    proc = subprocess.run(
        [sys.executable, str(HERE / "compat_cext_runner.py")],
        input=pickle.dumps(spec),
        capture_output=True,
        timeout=timeout_s,
        check=False,
        cwd=HERE,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"C-extension scenario {scenario} against {target.name} failed "
            f"(exit {proc.returncode}):\n{proc.stderr.decode(errors='replace')[-4000:]}"
        )
    return pickle.loads(proc.stdout)  # noqa: S301 - our own child process


# ---------------------------------------------------------------------------------------------
# Small utilities


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def pymysql_fields(cursor: pymysql.cursors.Cursor) -> list[dict[str, Any]]:
    """Everything PyMySQL decoded from the column definitions of the last result."""
    result = cursor._result  # noqa: SLF001 - the only way PyMySQL exposes flags/charsetnr
    assert result is not None
    return [
        {
            "catalog": f.catalog,
            "db": f.db,
            "table_name": f.table_name,
            "org_table": f.org_table,
            "name": f.name,
            "org_name": f.org_name,
            "charsetnr": f.charsetnr,
            "length": f.length,
            "type_code": f.type_code,
            "flags": f.flags,
            "scale": f.scale,
        }
        for f in (result.fields or ())
    ]


def error_of(exc: BaseException) -> tuple[Any, ...]:
    """(class name, errno, sqlstate, message) of a client exception, for comparisons."""
    errno = getattr(exc, "errno", None)
    sqlstate = getattr(exc, "sqlstate", None)
    msg = getattr(exc, "msg", None)
    if errno is None and getattr(exc, "args", None):
        # PyMySQL: args == (errno, message)
        args = exc.args
        if len(args) >= 2 and isinstance(args[0], int):
            errno, msg = args[0], args[1]
    return (type(exc).__name__, errno, sqlstate, msg)


# ---------------------------------------------------------------------------------------------
# RawClient: the MySQL client/server protocol, just enough to see bytes.

CLIENT_LONG_PASSWORD = 1
CLIENT_FOUND_ROWS = 2
CLIENT_LONG_FLAG = 4
CLIENT_CONNECT_WITH_DB = 8
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_DEPRECATE_EOF = 1 << 24

DEFAULT_CAPABILITIES = (
    CLIENT_LONG_PASSWORD
    | CLIENT_LONG_FLAG
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
)

SERVER_STATUS_IN_TRANS = 0x0001
SERVER_STATUS_AUTOCOMMIT = 0x0002
SERVER_MORE_RESULTS_EXISTS = 0x0008
SERVER_STATUS_CURSOR_EXISTS = 0x0040
SERVER_STATUS_LAST_ROW_SENT = 0x0080
SERVER_STATUS_IN_TRANS_READONLY = 0x2000

COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_PING = 0x0E
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_STMT_FETCH = 0x1C
COM_RESET_CONNECTION = 0x1F

CURSOR_TYPE_READ_ONLY = 1

MAX_PAYLOAD = 0xFFFFFF


class ConnectionClosed(Exception):
    """The peer closed the connection (EOF on the socket)."""


def lenenc_int(value: int) -> bytes:
    if value < 251:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + struct.pack("<H", value)
    if value < 1 << 24:
        return b"\xfd" + struct.pack("<I", value)[:3]
    return b"\xfe" + struct.pack("<Q", value)


def read_lenenc_int(data: bytes, pos: int) -> tuple[int | None, int]:
    first = data[pos]
    if first < 251:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    if first == 0xFC:
        return struct.unpack_from("<H", data, pos + 1)[0], pos + 3
    if first == 0xFD:
        return int.from_bytes(data[pos + 1 : pos + 4], "little"), pos + 4
    return struct.unpack_from("<Q", data, pos + 1)[0], pos + 9


def read_lenenc_str(data: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = read_lenenc_int(data, pos)
    if length is None:
        return None, pos
    return data[pos : pos + length], pos + length


def native_password_scramble(password: str, salt: bytes) -> bytes:
    if not password:
        return b""
    stage1 = hashlib.sha1(password.encode()).digest()  # noqa: S324 - the protocol's hash
    stage2 = hashlib.sha1(stage1).digest()  # noqa: S324
    mix = hashlib.sha1(salt + stage2).digest()  # noqa: S324
    return bytes(a ^ b for a, b in zip(stage1, mix, strict=True))


@dataclasses.dataclass
class OkPacket:
    affected_rows: int
    last_insert_id: int
    status: int
    warnings: int
    info: bytes


@dataclasses.dataclass
class ErrPacket:
    errno: int
    sqlstate: str
    message: str


def parse_ok(payload: bytes) -> OkPacket:
    assert payload[0] in (0x00, 0xFE), payload[:16]
    affected, pos = read_lenenc_int(payload, 1)
    insert_id, pos = read_lenenc_int(payload, pos)
    status, warnings = struct.unpack_from("<HH", payload, pos)
    return OkPacket(affected or 0, insert_id or 0, status, warnings, payload[pos + 4 :])


def parse_err(payload: bytes) -> ErrPacket:
    assert payload[0] == 0xFF, payload[:16]
    errno = struct.unpack_from("<H", payload, 1)[0]
    if payload[3:4] == b"#":
        return ErrPacket(errno, payload[4:9].decode(), payload[9:].decode(errors="replace"))
    return ErrPacket(errno, "", payload[3:].decode(errors="replace"))


def is_eof(payload: bytes) -> bool:
    return payload[:1] == b"\xfe" and len(payload) < 9


@dataclasses.dataclass
class ResultSet:
    column_count: int
    columns: list[bytes]  # column-definition payloads, raw
    rows: list[bytes]  # row payloads, raw
    eof_status: int  # status flags of the terminating EOF
    eof_warnings: int
    error: ErrPacket | None = None  # an ERR in place of the final EOF


Response = OkPacket | ErrPacket | ResultSet


@dataclasses.dataclass
class PreparedStatement:
    statement_id: int
    num_columns: int
    num_params: int
    warnings: int
    params: list[bytes]
    columns: list[bytes]


class RawClient:
    """A blocking MySQL-protocol client over a socket; no decoding beyond packet framing."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0
        self.capabilities = 0
        self.server_version = b""
        self.connection_id = 0
        self.server_capabilities = 0

    # -- connecting --------------------------------------------------------------------------

    @classmethod
    def open(cls, host: str, port: int, *, timeout_s: float = READ_TIMEOUT_S) -> RawClient:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        sock.settimeout(timeout_s)
        return cls(sock)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        database: str | None = None,
        capabilities: int = DEFAULT_CAPABILITIES,
        charset: int = 45,  # utf8mb4_general_ci
        timeout_s: float = READ_TIMEOUT_S,
    ) -> RawClient:
        client = cls.open(host, port, timeout_s=timeout_s)
        try:
            client.handshake(user, password, database=database, capabilities=capabilities, charset=charset)
        except BaseException:
            client.close()
            raise
        return client

    def read_greeting(self) -> bytes:
        """Read the server's initial handshake; returns the auth salt (scramble)."""
        payload = self.read_packet()
        if payload[0] == 0xFF:
            err = parse_err(payload)
            raise RawServerError(err)
        assert payload[0] == 10, f"protocol version {payload[0]}"
        end = payload.index(b"\0", 1)
        self.server_version = payload[1:end]
        pos = end + 1
        self.connection_id = struct.unpack_from("<I", payload, pos)[0]
        pos += 4
        salt = payload[pos : pos + 8]
        pos += 9
        cap_lo = struct.unpack_from("<H", payload, pos)[0]
        pos += 2 + 1 + 2  # capabilities (low), charset, status
        cap_hi = struct.unpack_from("<H", payload, pos)[0]
        pos += 2
        auth_len = payload[pos]
        pos += 1 + 10
        self.server_capabilities = cap_lo | (cap_hi << 16)
        salt2_len = max(13, auth_len - 8)
        salt += payload[pos : pos + salt2_len].rstrip(b"\0")
        return salt

    def handshake(
        self,
        user: str,
        password: str,
        *,
        database: str | None = None,
        capabilities: int = DEFAULT_CAPABILITIES,
        charset: int = 45,
    ) -> OkPacket:
        salt = self.read_greeting()
        caps = capabilities
        if database:
            caps |= CLIENT_CONNECT_WITH_DB
        caps &= self.server_capabilities | CLIENT_CONNECT_WITH_DB
        self.capabilities = caps
        auth = native_password_scramble(password, salt[:20])
        body = struct.pack("<IIB", caps, MAX_PAYLOAD, charset) + b"\0" * 23
        body += user.encode() + b"\0"
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            body += lenenc_int(len(auth)) + auth
        else:
            body += bytes([len(auth)]) + auth
        if caps & CLIENT_CONNECT_WITH_DB:
            body += (database or "").encode() + b"\0"
        body += b"mysql_native_password\0"
        self.send_packet(body, seq=self.seq)
        while True:
            reply = self.read_packet()
            if reply[0] == 0x00:
                return parse_ok(reply)
            if reply[0] == 0xFF:
                raise RawServerError(parse_err(reply))
            if reply[0] == 0xFE:  # auth switch request
                end = reply.index(b"\0", 1)
                plugin = reply[1:end]
                new_salt = reply[end + 1 :].rstrip(b"\0")
                assert plugin == b"mysql_native_password", f"auth switch to {plugin!r}"
                self.send_packet(native_password_scramble(password, new_salt[:20]), seq=self.seq)
                continue
            raise AssertionError(f"unexpected auth reply {reply[:32]!r}")

    # -- framing -----------------------------------------------------------------------------

    def _recv_exactly(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionClosed()
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def read_packet(self) -> bytes:
        """One logical packet (16 MiB continuations joined)."""
        parts = []
        while True:
            header = self._recv_exactly(4)
            length = int.from_bytes(header[:3], "little")
            self.seq = (header[3] + 1) & 0xFF
            parts.append(self._recv_exactly(length))
            if length < MAX_PAYLOAD:
                return b"".join(parts)

    def send_packet(self, payload: bytes, *, seq: int = 0) -> None:
        out = []
        pos = 0
        while True:
            chunk = payload[pos : pos + MAX_PAYLOAD]
            out.append(len(chunk).to_bytes(3, "little") + bytes([seq & 0xFF]) + chunk)
            seq += 1
            pos += len(chunk)
            if len(chunk) < MAX_PAYLOAD:
                break
        self.seq = seq & 0xFF
        self.sock.sendall(b"".join(out))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def quit(self) -> None:
        try:
            self.send_packet(bytes([COM_QUIT]))
        except OSError:
            pass
        self.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------------------

    def command(self, command: int, body: bytes = b"") -> None:
        self.send_packet(bytes([command]) + body, seq=0)

    def _deprecate_eof(self) -> bool:
        return bool(self.capabilities & CLIENT_DEPRECATE_EOF)

    def read_response(self, *, binary: bool = False) -> list[Response]:
        """Read every result of one command (following SERVER_MORE_RESULTS_EXISTS)."""
        results: list[Response] = []
        while True:
            first = self.read_packet()
            if first[0] == 0x00:
                ok = parse_ok(first)
                results.append(ok)
                more = ok.status & SERVER_MORE_RESULTS_EXISTS
            elif first[0] == 0xFF:
                results.append(parse_err(first))
                return results
            else:
                rs = self._read_resultset(first)
                results.append(rs)
                more = rs.error is None and rs.eof_status & SERVER_MORE_RESULTS_EXISTS
            if not more:
                return results

    def _read_resultset(self, first: bytes) -> ResultSet:
        count, _ = read_lenenc_int(first, 0)
        assert count is not None
        columns = [self.read_packet() for _ in range(count)]
        if not self._deprecate_eof():
            eof = self.read_packet()
            assert is_eof(eof), f"expected EOF after column definitions, got {eof[:16]!r}"
            warnings, status = struct.unpack_from("<HH", eof, 1)
            if status & SERVER_STATUS_CURSOR_EXISTS:
                # COM_STMT_EXECUTE opened a cursor: rows come with COM_STMT_FETCH.
                return ResultSet(count, columns, [], status, warnings)
        rows = []
        while True:
            packet = self.read_packet()
            if packet[0] == 0xFF:
                return ResultSet(count, columns, rows, 0, 0, parse_err(packet))
            if packet[0] == 0xFE and len(packet) < MAX_PAYLOAD and (len(packet) < 9 or self._deprecate_eof()):
                if len(packet) < 9:
                    warnings, status = struct.unpack_from("<HH", packet, 1)
                else:
                    ok = parse_ok(packet)
                    warnings, status = ok.warnings, ok.status
                return ResultSet(count, columns, rows, status, warnings)
            rows.append(packet)

    def query(self, sql: str | bytes) -> list[Response]:
        self.command(COM_QUERY, sql.encode() if isinstance(sql, str) else sql)
        return self.read_response()

    def query_one(self, sql: str | bytes) -> Response:
        results = self.query(sql)
        assert len(results) == 1, results
        return results[0]

    def prepare(self, sql: str) -> PreparedStatement | ErrPacket:
        self.command(COM_STMT_PREPARE, sql.encode())
        first = self.read_packet()
        if first[0] == 0xFF:
            return parse_err(first)
        assert first[0] == 0x00, first[:16]
        statement_id, num_columns, num_params = struct.unpack_from("<IHH", first, 1)
        warnings = struct.unpack_from("<H", first, 10)[0] if len(first) >= 12 else 0
        params = [self.read_packet() for _ in range(num_params)]
        if num_params and not self._deprecate_eof():
            assert is_eof(self.read_packet())
        columns = [self.read_packet() for _ in range(num_columns)]
        if num_columns and not self._deprecate_eof():
            assert is_eof(self.read_packet())
        return PreparedStatement(statement_id, num_columns, num_params, warnings, params, columns)

    def execute(
        self, statement_id: int, params: list[tuple[int, bytes | None]] = (), *, flags: int = 0  # type: ignore[assignment]
    ) -> list[Response]:
        """COM_STMT_EXECUTE; params are (MySQL type code, binary-encoded value or None)."""
        body = struct.pack("<IBI", statement_id, flags, 1)
        if params:
            null_bitmap = bytearray((len(params) + 7) // 8)
            for i, (_, value) in enumerate(params):
                if value is None:
                    null_bitmap[i // 8] |= 1 << (i % 8)
            body += bytes(null_bitmap) + b"\x01"
            body += b"".join(struct.pack("<H", type_code) for type_code, _ in params)
            body += b"".join(value for _, value in params if value is not None)
        self.command(COM_STMT_EXECUTE, body)
        return self.read_response(binary=True)

    def fetch(self, statement_id: int, rows: int) -> ResultSet | ErrPacket:
        """COM_STMT_FETCH: rows then an EOF (no column definitions)."""
        self.command(COM_STMT_FETCH, struct.pack("<II", statement_id, rows))
        out = []
        while True:
            packet = self.read_packet()
            if packet[0] == 0xFF:
                return parse_err(packet)
            if packet[0] == 0xFE and len(packet) < 9:
                warnings, status = struct.unpack_from("<HH", packet, 1)
                return ResultSet(0, [], out, status, warnings)
            if packet[0] == 0xFE and self._deprecate_eof() and len(packet) < MAX_PAYLOAD:
                ok = parse_ok(packet)
                return ResultSet(0, [], out, ok.status, ok.warnings)
            out.append(packet)

    def close_statement(self, statement_id: int) -> None:
        self.command(COM_STMT_CLOSE, struct.pack("<I", statement_id))  # no response


class RawServerError(Exception):
    def __init__(self, err: ErrPacket) -> None:
        super().__init__(f"{err.errno} ({err.sqlstate}): {err.message}")
        self.err = err


def coldef_fields(payload: bytes) -> dict[str, Any]:
    """Decode a column-definition payload (Protocol::ColumnDefinition41)."""
    pos = 0
    names = {}
    for key in ("catalog", "schema", "table", "org_table", "name", "org_name"):
        value, pos = read_lenenc_str(payload, pos)
        names[key] = value
    _, pos = read_lenenc_int(payload, pos)  # length of fixed fields (0x0c)
    charset, length, type_code, flags, decimals = struct.unpack_from("<HIBHB", payload, pos)
    return {**names, "charset": charset, "length": length, "type": type_code, "flags": flags, "decimals": decimals}


def read_until_closed(sock: socket.socket, *, timeout_s: float) -> tuple[bytes, str]:
    """Read what the peer sends until it closes; returns (data, how it ended).

    how: "eof" (clean close), "reset" (RST), or "timeout" (still open after timeout_s).
    """
    deadline = time.monotonic() + timeout_s
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, "timeout"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, "timeout"
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk


def split_packets(data: bytes) -> Iterator[bytes]:
    pos = 0
    while pos + 4 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "little")
        yield data[pos + 4 : pos + 4 + length]
        pos += 4 + length


def tcp_accepts(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def env_without_proxy_settings() -> dict[str, str]:
    """Environment for client subprocesses: no MYSQL_* variables leaking in from the user."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "MARIADB_"))}
