"""COM_STMT_EXECUTE parameters rendered as SQL literals."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.protocol.errors import MalformedPacket
from replication.protocol.packets import lenenc_int
from replication.protocol.params import (
    T_BLOB,
    T_DATETIME,
    T_DOUBLE,
    T_LONGLONG,
    T_NEWDECIMAL,
    T_TIME,
    T_TINY,
    T_VAR_STRING,
    PreparedWrite,
    bind_execute,
    placeholder_positions,
)


@pytest.mark.parametrize("sql,count", [
    ("INSERT INTO t VALUES (?, ?)", 2),
    ("INSERT INTO t VALUES ('?', \"?\", `?`, ?)", 1),
    ("UPDATE t SET a = ? -- ?\n WHERE b = ? # ?\n", 2),
    ("UPDATE t SET a = ? /* ? */ WHERE b = ?", 2),
    ("UPDATE t SET a = 'it''s ?' WHERE b = ?", 1),
    ("UPDATE t SET a = 'back\\\\' WHERE b = ?", 1),
])
def test_placeholders(sql: str, count: int) -> None:
    assert len(placeholder_positions(sql)) == count


def execute_body(types: list[tuple[int, bool]], values: list[bytes | None]) -> bytes:
    n = len(types)
    bitmap = bytearray((n + 7) // 8)
    for i, v in enumerate(values):
        if v is None:
            bitmap[i // 8] |= 1 << (i % 8)
    head = struct.pack("<IBI", 1, 0, 1) + bytes(bitmap) + b"\x01"
    head += b"".join(bytes((t, 0x80 if u else 0)) for t, u in types)
    return head + b"".join(v for v in values if v is not None)


def test_every_kind_of_value() -> None:
    stmt = PreparedWrite("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", 9)
    body = execute_body(
        [(T_TINY, False), (T_LONGLONG, True), (T_DOUBLE, False), (T_NEWDECIMAL, False), (T_VAR_STRING, False),
         (T_BLOB, False), (T_DATETIME, False), (T_TIME, False), (T_VAR_STRING, False)],
        [b"\xff", b"\xff" * 8, struct.pack("<d", 0.1), lenenc_int(5) + b"-1.50", lenenc_int(len("é'x".encode())) + "é'x".encode(),
         lenenc_int(3) + b"\x00\x01\x02", bytes((11,)) + struct.pack("<HBBBBBI", 2024, 2, 29, 1, 2, 3, 45),
         bytes((12,)) + struct.pack("<BIBBBI", 1, 2, 3, 4, 5, 6), None],
    )
    sql = bind_execute(stmt, body, "utf8mb4")
    assert sql == ("INSERT INTO t VALUES (-1, 18446744073709551615, 0.1, -1.50, _utf8mb4 X'c3a92778', X'000102', "
                   "'2024-02-29 01:02:03.000045', '-2 03:04:05.000006', NULL)")


def test_types_remembered_between_executions_and_long_data() -> None:
    stmt = PreparedWrite("UPDATE t SET b = ? WHERE id = ?", 2)
    bind_execute(stmt, execute_body([(T_BLOB, False), (T_TINY, False)], [lenenc_int(1) + b"x", b"\x07"]), "utf8mb4")
    stmt.long_data[0] = bytearray(b"\xff\xfe")
    body = struct.pack("<IBI", 1, 0, 1) + b"\x00" + b"\x00" + b"\x08"  # types not re-sent; param 1 = 8
    assert bind_execute(stmt, body, "utf8mb4") == "UPDATE t SET b = X'fffe' WHERE id = 8"
    assert not stmt.long_data


def test_invalid_utf8_string_becomes_binary() -> None:
    stmt = PreparedWrite("INSERT INTO t VALUES (?)", 1)
    sql = bind_execute(stmt, execute_body([(T_VAR_STRING, False)], [lenenc_int(2) + b"\x80\x81"]), "utf8mb4")
    assert sql == "INSERT INTO t VALUES (X'8081')"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 4))
def test_garbage_is_malformed_not_a_crash(body: bytes, n: int) -> None:
    stmt = PreparedWrite("INSERT INTO t VALUES (" + ", ".join("?" * n) + ")", n)
    try:
        bind_execute(stmt, body, "utf8mb4")
    except MalformedPacket:
        pass
