"""Bounded parsers for what a client sends to log in: HandshakeResponse41 and COM_CHANGE_USER.

Every read is checked against the packet's end; anything malformed raises MalformedPacket.
(mysql-mimic's own parsers loop forever on a string without its NUL terminator, so a single
bad packet could freeze the event loop; these are used instead.)

MariaDB's extended capabilities travel in the last 4 bytes of the 23-byte filler when the
client does not set CLIENT_MYSQL (= CLIENT_LONG_PASSWORD, bit 0).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .constants import Cap
from .errors import MalformedPacket
from .packets import read_lenenc_int

ATTRS_BYTES_MAX = 64 * 1024  # connection attributes (MySQL's own limit is 64 KiB)
AUTH_BYTES_MAX = 4096


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    capabilities: int
    max_packet: int
    collation: int
    username: str
    auth_response: bytes
    database: str | None = None
    client_plugin: str | None = None
    connect_attrs: dict[str, str] = field(default_factory=dict)
    mariadb_capabilities: int = 0  # MariaDB extended capabilities (already shifted down by 32)
    ssl_request: bool = False  # only the fixed 32 bytes: the client asks for TLS first


@dataclass(frozen=True, slots=True)
class ChangeUser:
    username: str
    auth_response: bytes
    database: str | None
    collation: int | None = None
    client_plugin: str | None = None
    connect_attrs: dict[str, str] = field(default_factory=dict)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedPacket("packet ends inside a field")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def cstring(self, limit: int = 1024) -> bytes:
        end = self.data.find(b"\x00", self.pos, self.pos + limit + 1)
        if end < 0:
            raise MalformedPacket("string without its terminating NUL")
        out = self.data[self.pos : end]
        self.pos = end + 1
        return out

    def lenenc_bytes(self, limit: int) -> bytes:
        n, self.pos = read_lenenc_int(self.data, self.pos)
        if n > limit:
            raise MalformedPacket(f"field of {n} bytes over its bound")
        return self.take(n)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _attrs(r: _Reader) -> dict[str, str]:
    blob = r.lenenc_bytes(ATTRS_BYTES_MAX)
    inner = _Reader(blob)
    out: dict[str, str] = {}
    while not inner.at_end():
        key = inner.lenenc_bytes(ATTRS_BYTES_MAX)
        value = inner.lenenc_bytes(ATTRS_BYTES_MAX)
        out[_text(key)] = _text(value)
    return out


def parse_handshake_response(data: bytes, server_capabilities: int) -> HandshakeResponse:
    """Parse a client's login packet (or its SSL request). Raises MalformedPacket."""
    if len(data) < 32:
        raise MalformedPacket("handshake response shorter than 32 bytes")
    client_caps, max_packet, collation = struct.unpack_from("<IIB", data)
    mariadb_caps = 0 if client_caps & Cap.LONG_PASSWORD else struct.unpack_from("<I", data, 28)[0]
    caps = client_caps  # which fields are present follows the client's own flags
    if not caps & Cap.PROTOCOL_41:
        raise MalformedPacket("clients older than protocol 4.1 are not supported")
    if len(data) == 32:
        return HandshakeResponse(caps & server_capabilities, max_packet, collation, "", b"", ssl_request=True,
                                 mariadb_capabilities=mariadb_caps)
    r = _Reader(data, 32)
    username = _text(r.cstring())
    if caps & Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth = r.lenenc_bytes(AUTH_BYTES_MAX)
    elif caps & Cap.SECURE_CONNECTION:
        auth = r.take(r.take(1)[0])
    else:
        auth = r.cstring(AUTH_BYTES_MAX)
    database = _text(r.cstring()) if caps & Cap.CONNECT_WITH_DB and not r.at_end() else None
    plugin = None
    if caps & Cap.PLUGIN_AUTH and not r.at_end():
        plugin = _text(r.cstring(256))
    attrs = _attrs(r) if caps & Cap.CONNECT_ATTRS and not r.at_end() else {}
    return HandshakeResponse(caps & server_capabilities, max_packet, collation, username, auth, database or None,
                             plugin, attrs, mariadb_caps)


def parse_change_user(body: bytes, capabilities: int) -> ChangeUser:
    """Parse the body of COM_CHANGE_USER (after the command byte). Raises MalformedPacket."""
    r = _Reader(body)
    username = _text(r.cstring())
    if capabilities & Cap.SECURE_CONNECTION:
        auth = r.take(r.take(1)[0])
    else:
        auth = r.cstring(AUTH_BYTES_MAX)
    database = _text(r.cstring()) if not r.at_end() else ""
    collation = plugin = None
    attrs: dict[str, str] = {}
    if not r.at_end():
        collation = struct.unpack("<H", r.take(2))[0]
        if capabilities & Cap.PLUGIN_AUTH and not r.at_end():
            plugin = _text(r.cstring(256))
        if capabilities & Cap.CONNECT_ATTRS and not r.at_end():
            attrs = _attrs(r)
    return ChangeUser(username, auth, database or None, collation, plugin, attrs)


# MariaDB extended capabilities (bit numbers within the upper 32 bits).
MARIADB_EXTENDED_TYPE_INFO = 1 << 3  # column definitions carry JSON / geometry subtypes
# What grproxy relays faithfully: extended type info only changes column definition contents.
# Not offered: PROGRESS (progress packets look like ERR), COM_MULTI, STMT_BULK_OPERATIONS
# (new commands), CACHE_METADATA (result sets without metadata).
MARIADB_SUPPORTED = MARIADB_EXTENDED_TYPE_INFO


def with_mariadb_capabilities(greeting: bytes, mariadb_caps: int) -> bytes:
    """Mark a protocol-10 greeting as a MariaDB server's offering `mariadb_caps`: CLIENT_MYSQL
    (bit 0) cleared, the extended capabilities in the last 4 reserved bytes."""
    if not mariadb_caps:
        return greeting
    end = greeting.index(b"\x00", 1)
    caps_lo = end + 1 + 4 + 8 + 1
    reserved = caps_lo + 2 + 1 + 2 + 2 + 1
    out = bytearray(greeting)
    out[caps_lo] &= 0xFE
    out[reserved + 6 : reserved + 10] = struct.pack("<I", mariadb_caps)
    return bytes(out)
