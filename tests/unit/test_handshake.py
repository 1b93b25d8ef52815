"""Login packet parsers: bounded, never hang, never crash on garbage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.protocol.constants import PROXY_CAPABILITIES, Cap
from replication.protocol.errors import MalformedPacket
from replication.protocol.handshake import (
    MARIADB_EXTENDED_TYPE_INFO,
    parse_change_user,
    parse_handshake_response,
    with_mariadb_capabilities,
)
from replication.protocol.packets import handshake_response, parse_server_handshake

SERVER = int(PROXY_CAPABILITIES)
CLIENT = int(Cap.PROTOCOL_41 | Cap.SECURE_CONNECTION | Cap.PLUGIN_AUTH | Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA
             | Cap.CONNECT_WITH_DB | Cap.CONNECT_ATTRS | Cap.LONG_PASSWORD)


def test_round_trip_with_our_own_builder() -> None:
    data = handshake_response(capabilities=CLIENT, collation=224, user="app", auth_response=b"\x01" * 20,
                              database="shop", plugin="mysql_native_password", connect_attrs={"_client": "x"})
    r = parse_handshake_response(data, SERVER)
    assert (r.username, r.auth_response, r.database, r.client_plugin, r.connect_attrs, r.collation) == (
        "app", b"\x01" * 20, "shop", "mysql_native_password", {"_client": "x"}, 224)
    assert not r.ssl_request and r.mariadb_capabilities == 0


def test_mariadb_extended_capabilities_travel_in_the_filler() -> None:
    data = handshake_response(capabilities=CLIENT, collation=45, user="u", auth_response=b"", database=None,
                              plugin="mysql_native_password", mariadb_capabilities=MARIADB_EXTENDED_TYPE_INFO)
    assert parse_handshake_response(data, SERVER).mariadb_capabilities == MARIADB_EXTENDED_TYPE_INFO


def test_ssl_request() -> None:
    data = struct.pack("<IIB23x", CLIENT | Cap.SSL, 1 << 24, 45)
    assert parse_handshake_response(data, SERVER | Cap.SSL).ssl_request


@pytest.mark.parametrize("tail", [b"root", b"root\x00\x14abc", b"root\x00\xfe", b"root\x00\x00shop"])
def test_truncated_fields_are_malformed(tail: bytes) -> None:
    caps = int(Cap.PROTOCOL_41 | Cap.SECURE_CONNECTION | Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA | Cap.CONNECT_WITH_DB)
    with pytest.raises(MalformedPacket):
        parse_handshake_response(struct.pack("<IIB23x", caps, 1 << 24, 45) + tail, SERVER)


@pytest.mark.parametrize("body", [b"app", b"app\x00\x14xx", b"app\x00\x00db", b"app\x00\x00db\x00\x2d"])
def test_change_user_truncated(body: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse_change_user(body, int(PROXY_CAPABILITIES))


def test_change_user_full() -> None:
    body = b"app\x00\x03abcshop\x00" + struct.pack("<H", 45) + b"mysql_native_password\x00"
    cu = parse_change_user(body, int(PROXY_CAPABILITIES))
    assert (cu.username, cu.auth_response, cu.database, cu.collation, cu.client_plugin) == (
        "app", b"abc", "shop", 45, "mysql_native_password")


@settings(max_examples=500, deadline=200)
@given(st.binary(max_size=300), st.integers(0, 2**32 - 1))
def test_garbage_terminates(data: bytes, caps: int) -> None:
    for parse in (lambda: parse_handshake_response(data, caps), lambda: parse_change_user(data, caps)):
        try:
            parse()
        except MalformedPacket:
            pass


def test_greeting_marks_mariadb_extended_capabilities() -> None:
    from mysql_mimic import packets
    from mysql_mimic.charset import CharacterSet
    from mysql_mimic.types import Capabilities, ServerStatus

    greeting = packets.make_handshake_v10(capabilities=Capabilities(SERVER), server_charset=CharacterSet.utf8mb4,
                                          server_version="10.11-grproxy", connection_id=7, auth_data=b"x" * 20 + b"\x00",
                                          status_flags=ServerStatus(2), auth_plugin_name="mysql_native_password")
    hs = parse_server_handshake(with_mariadb_capabilities(greeting, MARIADB_EXTENDED_TYPE_INFO))
    assert hs.mariadb_capabilities == MARIADB_EXTENDED_TYPE_INFO
    assert not hs.capabilities & Cap.LONG_PASSWORD and hs.connection_id == 7
