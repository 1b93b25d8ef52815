"""Binary-protocol parameters of COM_STMT_EXECUTE, rendered as exact SQL literals.

A member captures writes from SQL text; a write sent as a server-side prepared statement is
turned into the equivalent text with each `?` replaced by a literal that the server reads back
as the same value the binary parameter carried:

* character strings → `_<charset> X'…'` (the client's bytes, in its character set: converted
  to the column's on write exactly as a bound string parameter would be);
* BLOB-typed parameters → `X'…'` (binary, no conversion);
* integers, DECIMAL text → plain numbers; FLOAT/DOUBLE → the shortest decimal that reads back
  as the same double (repr);
* DATE / DATETIME / TIMESTAMP / TIME → quoted temporal literals with microseconds.

Pure. Every read is bounded by the packet; a malformed packet raises MalformedPacket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .errors import MalformedPacket
from .packets import read_lenenc_int

T_DECIMAL, T_TINY, T_SHORT, T_LONG, T_FLOAT, T_DOUBLE, T_NULL, T_TIMESTAMP = 0, 1, 2, 3, 4, 5, 6, 7
T_LONGLONG, T_INT24, T_DATE, T_TIME, T_DATETIME, T_YEAR = 8, 9, 10, 11, 12, 13
T_VARCHAR, T_BIT, T_JSON, T_NEWDECIMAL, T_ENUM, T_SET = 15, 16, 245, 246, 247, 248
T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_BLOB, T_VAR_STRING, T_STRING, T_GEOMETRY = 249, 250, 251, 252, 253, 254, 255
_BLOBS = {T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_BLOB, T_GEOMETRY, T_BIT}
_STRINGS = {T_VARCHAR, T_VAR_STRING, T_STRING, T_JSON, T_ENUM, T_SET, T_DECIMAL, T_NEWDECIMAL}
_INTS = {T_TINY: 1, T_SHORT: 2, T_YEAR: 2, T_LONG: 4, T_INT24: 4, T_LONGLONG: 8}
_NUMERIC_CHARS = frozenset(b"0123456789+-.eE")


@dataclass(slots=True)
class PreparedWrite:
    """What a member keeps for a prepared write statement."""

    sql: str
    param_count: int
    types: list[tuple[int, bool]] = field(default_factory=list)  # (type, unsigned) of the last bind
    long_data: dict[int, bytearray] = field(default_factory=dict)


def placeholder_positions(sql: str) -> list[int]:
    """Offsets of `?` placeholders outside strings, quoted identifiers and comments."""
    out: list[int] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\" and c != "`":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
        elif c == "#" or (c == "-" and sql.startswith("-- ", i)) or (c == "-" and sql[i:i + 3] in ("--\n", "--\t")):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif c == "/" and sql.startswith("/*", i) and not sql.startswith("/*!", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            if c == "?":
                out.append(i)
            i += 1
    return out


def bind_execute(stmt: PreparedWrite, body: bytes, charset: str) -> str:
    """The SQL text equivalent to executing `stmt` with the parameters in `body` (the
    COM_STMT_EXECUTE payload after the command byte). Raises MalformedPacket."""
    n = stmt.param_count
    if len(body) < 9:
        raise MalformedPacket("COM_STMT_EXECUTE too short")
    pos = 9  # stmt_id(4), flags(1), iteration_count(4)
    values: list[str] = []
    if n:
        bitmap_len = (n + 7) // 8
        if len(body) < pos + bitmap_len + 1:
            raise MalformedPacket("COM_STMT_EXECUTE: no NULL bitmap")
        nulls = body[pos : pos + bitmap_len]
        pos += bitmap_len
        bound = body[pos]
        pos += 1
        if bound:
            if len(body) < pos + 2 * n:
                raise MalformedPacket("COM_STMT_EXECUTE: parameter types truncated")
            stmt.types = [(body[pos + 2 * i], bool(body[pos + 2 * i + 1] & 0x80)) for i in range(n)]
            pos += 2 * n
        elif len(stmt.types) != n:
            raise MalformedPacket("COM_STMT_EXECUTE without parameter types on first execution")
        for i in range(n):
            if i in stmt.long_data:
                values.append(_string_literal(bytes(stmt.long_data[i]), stmt.types[i][0], charset))
                continue
            if nulls[i // 8] & (1 << (i % 8)):
                values.append("NULL")
                continue
            literal, pos = _value(body, pos, *stmt.types[i], charset)
            values.append(literal)
    stmt.long_data.clear()
    positions = placeholder_positions(stmt.sql)
    if len(positions) != n:
        raise MalformedPacket(f"statement has {len(positions)} placeholders, {n} parameters")
    out, last = [], 0
    for p, v in zip(positions, values):
        out.append(stmt.sql[last:p])
        out.append(v)
        last = p + 1
    out.append(stmt.sql[last:])
    return "".join(out)


def _value(body: bytes, pos: int, typ: int, unsigned: bool, charset: str) -> tuple[str, int]:
    try:
        if typ in _INTS:
            size = _INTS[typ]
            raw = body[pos : pos + size]
            if len(raw) != size:
                raise MalformedPacket("integer parameter truncated")
            return str(int.from_bytes(raw, "little", signed=not unsigned)), pos + size
        if typ == T_FLOAT:
            return _float(struct.unpack_from("<f", body, pos)[0]), pos + 4
        if typ == T_DOUBLE:
            return _float(struct.unpack_from("<d", body, pos)[0]), pos + 8
        if typ == T_NULL:
            return "NULL", pos
        if typ in (T_DATE, T_DATETIME, T_TIMESTAMP):
            n = body[pos]
            raw = body[pos + 1 : pos + 1 + n]
            if len(raw) != n or n not in (0, 4, 7, 11):
                raise MalformedPacket("temporal parameter malformed")
            y, mo, d = (struct.unpack_from("<HBB", raw) if n else (0, 0, 0))
            h = mi = s = us = 0
            if n >= 7:
                h, mi, s = raw[4], raw[5], raw[6]
            if n == 11:
                us = struct.unpack_from("<I", raw, 7)[0]
            if typ == T_DATE:
                return f"'{y:04d}-{mo:02d}-{d:02d}'", pos + 1 + n
            return f"'{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}.{us:06d}'", pos + 1 + n
        if typ == T_TIME:
            n = body[pos]
            raw = body[pos + 1 : pos + 1 + n]
            if len(raw) != n or n not in (0, 8, 12):
                raise MalformedPacket("TIME parameter malformed")
            if not n:
                return "'00:00:00'", pos + 1
            neg, days, h, mi, s = struct.unpack_from("<BIBBB", raw)
            us = struct.unpack_from("<I", raw, 8)[0] if n == 12 else 0
            return f"'{'-' if neg else ''}{days} {h:02d}:{mi:02d}:{s:02d}.{us:06d}'", pos + 1 + n
        length, pos = read_lenenc_int(body, pos)
        raw = body[pos : pos + length]
        if len(raw) != length:
            raise MalformedPacket("string parameter truncated")
        if typ in (T_DECIMAL, T_NEWDECIMAL) and raw and set(raw) <= _NUMERIC_CHARS:
            return raw.decode("ascii"), pos + length
        return _string_literal(raw, typ, charset), pos + length
    except (struct.error, IndexError):
        raise MalformedPacket("parameter truncated") from None


_UTF8 = {"utf8mb4", "utf8", "utf8mb3"}


def _string_literal(raw: bytes, typ: int, charset: str) -> str:
    """A string parameter as the server would take it: bytes in the client's character set.

    Bytes that are not valid in that character set (binary data sent as a string parameter,
    as some connectors do for bytes) become a binary literal: stored raw in a binary column,
    as the parameter would be; a text column would have refused them either way.
    """
    if not raw:
        return "''"
    if typ in _BLOBS or charset == "binary":
        return f"X'{raw.hex()}'"
    if charset in _UTF8:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return f"X'{raw.hex()}'"
    elif charset == "ascii" and not raw.isascii():
        return f"X'{raw.hex()}'"
    return f"_{charset} X'{raw.hex()}'"


def _float(v: float) -> str:
    if v != v or v in (float("inf"), float("-inf")):
        raise MalformedPacket("NaN or infinity cannot be stored")
    return repr(v)
