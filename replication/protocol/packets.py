"""Packet framing and the few packet bodies grproxy builds or parses itself.

Everything here is pure (bytes in, values out). Result sets are never built here: the proxy
relays the backend's packets as they are.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from .constants import MAX_PAYLOAD, Cap
from .errors import MalformedPacket

_u16 = struct.Struct("<H")
_u32 = struct.Struct("<I")


def frame(payload: bytes, seq: int) -> bytes:
    """Frame a payload into one or more packets starting at sequence id `seq`.

    A payload of MAX_PAYLOAD bytes or more is split; a trailing empty packet ends a payload
    whose length is an exact multiple of MAX_PAYLOAD, as the protocol requires.
    """
    n = len(payload)
    if n < MAX_PAYLOAD:
        return (n | ((seq & 0xFF) << 24)).to_bytes(4, "little") + payload
    parts = []
    pos = 0
    while True:
        chunk = payload[pos : pos + MAX_PAYLOAD]
        parts.append((len(chunk) | ((seq & 0xFF) << 24)).to_bytes(4, "little"))
        parts.append(chunk)
        seq += 1
        pos += len(chunk)
        if len(chunk) < MAX_PAYLOAD:
            return b"".join(parts)


def lenenc_int(value: int) -> bytes:
    if value < 251:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + _u16.pack(value)
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def read_lenenc_int(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Read a length-encoded integer at `pos`. Returns (value, new position)."""
    try:
        first = data[pos]
        if first < 251:
            return first, pos + 1
        if first == 0xFC:
            return data[pos + 1] | (data[pos + 2] << 8), pos + 3
        if first == 0xFD:
            return int.from_bytes(data[pos + 1 : pos + 4], "little"), pos + 4
        if first == 0xFE:
            if len(data) < pos + 9:
                raise IndexError
            return int.from_bytes(data[pos + 1 : pos + 9], "little"), pos + 9
    except IndexError:
        raise MalformedPacket("truncated length-encoded integer") from None
    raise MalformedPacket(f"invalid length-encoded integer prefix 0x{first:02x}")


def text_row_values(row: bytes, ncols: int) -> tuple[bytes | None, ...]:
    """The values of a text-protocol row (None for SQL NULL). Raises MalformedPacket."""
    out: list[bytes | None] = []
    pos = 0
    try:
        for _ in range(ncols):
            if row[pos] == 0xFB:
                out.append(None)
                pos += 1
                continue
            n, pos = read_lenenc_int(row, pos)
            if pos + n > len(row):
                raise MalformedPacket("row value runs past the packet")
            out.append(row[pos : pos + n])
            pos += n
    except IndexError:
        raise MalformedPacket("truncated row") from None
    return tuple(out)


def ok_payload(status: int, affected_rows: int = 0, last_insert_id: int = 0, warnings: int = 0) -> bytes:
    return b"\x00" + lenenc_int(affected_rows) + lenenc_int(last_insert_id) + _u16.pack(status) + _u16.pack(warnings)


def eof_payload(status: int, warnings: int = 0) -> bytes:
    return b"\xfe" + _u16.pack(warnings) + _u16.pack(status)


@dataclass(frozen=True, slots=True)
class OkInfo:
    affected_rows: int
    last_insert_id: int
    status: int
    warnings: int


def parse_ok(payload: bytes | memoryview) -> OkInfo:
    """Parse the fixed part of an OK packet (0x00 or 0xFE marker, protocol 4.1)."""
    affected, pos = read_lenenc_int(payload, 1)
    insert_id, pos = read_lenenc_int(payload, pos)
    if len(payload) < pos + 4:
        raise MalformedPacket("truncated OK packet")
    status = payload[pos] | (payload[pos + 1] << 8)
    warnings = payload[pos + 2] | (payload[pos + 3] << 8)
    return OkInfo(affected, insert_id, status, warnings)


def parse_err(payload: bytes | memoryview) -> tuple[int, str, str]:
    """(errno, sqlstate, message) of an ERR packet payload."""
    payload = bytes(payload)
    if len(payload) < 3 or payload[0] != 0xFF:
        raise MalformedPacket("not an ERR packet")
    errno = _u16.unpack_from(payload, 1)[0]
    if len(payload) >= 9 and payload[3:4] == b"#":
        return errno, payload[4:9].decode("ascii", "replace"), payload[9:].decode("utf-8", "replace")
    return errno, "HY000", payload[3:].decode("utf-8", "replace")


# --- backend handshake ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerHandshake:
    """A backend's initial handshake (protocol v10)."""

    server_version: str
    connection_id: int
    capabilities: int
    collation: int
    status: int
    auth_data: bytes
    auth_plugin: str
    mariadb_capabilities: int = 0  # MariaDB extended capabilities (when CLIENT_MYSQL is off)

    @property
    def is_mariadb(self) -> bool:
        return "mariadb" in self.server_version.lower()


def parse_server_handshake(payload: bytes) -> ServerHandshake:
    try:
        if payload[0] != 10:
            raise MalformedPacket(f"unsupported protocol version {payload[0]}")
        end = payload.index(b"\x00", 1)
        version = payload[1:end].decode("utf-8", "replace")
        pos = end + 1
        conn_id = _u32.unpack_from(payload, pos)[0]
        pos += 4
        auth1 = payload[pos : pos + 8]
        pos += 9
        cap_lo = _u16.unpack_from(payload, pos)[0]
        pos += 2
        collation = payload[pos]
        status = _u16.unpack_from(payload, pos + 1)[0]
        cap_hi = _u16.unpack_from(payload, pos + 3)[0]
        auth_len = payload[pos + 5]
        mariadb_caps = struct.unpack_from("<I", payload, pos + 6 + 6)[0] if not cap_lo & 1 else 0
        pos += 6 + 10
        caps = cap_lo | (cap_hi << 16)
        auth2 = b""
        if caps & Cap.SECURE_CONNECTION:
            n = max(13, auth_len - 8)
            auth2 = payload[pos : pos + n].rstrip(b"\x00")
            pos += n
        plugin = "mysql_native_password"
        if caps & Cap.PLUGIN_AUTH and pos < len(payload):
            plugin = payload[pos:].split(b"\x00", 1)[0].decode("ascii", "replace")
        return ServerHandshake(version, conn_id, caps, collation, status, auth1 + auth2, plugin, mariadb_caps)
    except (IndexError, struct.error, ValueError):
        raise MalformedPacket("malformed server handshake") from None


def handshake_response(
    *,
    capabilities: int,
    collation: int,
    user: str,
    auth_response: bytes,
    database: str | None,
    plugin: str,
    connect_attrs: dict[str, str] | None = None,
    max_packet: int = 1 << 30,
    mariadb_capabilities: int = 0,
) -> bytes:
    """HandshakeResponse41 payload for a backend connection (MariaDB extended capabilities in
    the filler's last 4 bytes, with CLIENT_MYSQL cleared, when given)."""
    if mariadb_capabilities:
        capabilities &= ~Cap.LONG_PASSWORD
    filler = bytes(19) + _u32.pack(mariadb_capabilities)
    parts = [_u32.pack(capabilities), _u32.pack(max_packet), bytes((collation & 0xFF,)), filler]
    parts.append(user.encode("utf-8") + b"\x00")
    if capabilities & Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA:
        parts.append(lenenc_int(len(auth_response)) + auth_response)
    else:
        parts.append(bytes((len(auth_response),)) + auth_response)
    if capabilities & Cap.CONNECT_WITH_DB:
        parts.append((database or "").encode("utf-8") + b"\x00")
    if capabilities & Cap.PLUGIN_AUTH:
        parts.append(plugin.encode("ascii") + b"\x00")
    if capabilities & Cap.CONNECT_ATTRS:
        body = b"".join(
            lenenc_int(len(k.encode())) + k.encode() + lenenc_int(len(v.encode())) + v.encode()
            for k, v in (connect_attrs or {}).items()
        )
        parts.append(lenenc_int(len(body)) + body)
    return b"".join(parts)


def scramble_native(password: str, nonce: bytes) -> bytes:
    """mysql_native_password: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))."""
    if not password:
        return b""
    h1 = hashlib.sha1(password.encode("utf-8")).digest()
    h2 = hashlib.sha1(h1).digest()
    h3 = hashlib.sha1(nonce[:20] + h2).digest()
    return bytes(a ^ b for a, b in zip(h1, h3))


def scramble_sha256(password: str, nonce: bytes) -> bytes:
    """caching_sha2_password fast path: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce)."""
    if not password:
        return b""
    p1 = hashlib.sha256(password.encode("utf-8")).digest()
    p2 = hashlib.sha256(p1).digest()
    p3 = hashlib.sha256(p2 + nonce[:20]).digest()
    return bytes(a ^ b for a, b in zip(p1, p3))


def native_password_hash(password: str) -> str:
    """The stored form of a mysql_native_password: '*' + upper-hex SHA1(SHA1(pw)) ('' if empty)."""
    if not password:
        return ""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode("utf-8")).digest()).hexdigest().upper()
