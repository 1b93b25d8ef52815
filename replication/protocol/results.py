"""Result sets grproxy answers itself (admin tables such as replication_group_members).

Relayed results are never built here; this is for the few answers that have no backend.
Text protocol, classic EOF framing (grproxy never offers CLIENT_DEPRECATE_EOF).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .packets import eof_payload, frame, lenenc_int

TYPE_LONGLONG = 0x08
TYPE_VAR_STRING = 0xFD
_BINARY_COLLATION = 63
_UTF8MB4 = 45
_NOT_NULL = 0x0001
_UNSIGNED = 0x0020


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: int = TYPE_VAR_STRING
    length: int = 255
    nullable: bool = True
    table: str = ""
    schema: str = ""


def _lenenc_str(b: bytes) -> bytes:
    return lenenc_int(len(b)) + b


def column_definition(col: Column) -> bytes:
    flags = 0 if col.nullable else _NOT_NULL
    if col.type == TYPE_LONGLONG:
        flags |= _UNSIGNED
    charset = _BINARY_COLLATION if col.type == TYPE_LONGLONG else _UTF8MB4
    name = col.name.encode()
    return b"".join((
        _lenenc_str(b"def"), _lenenc_str(col.schema.encode()), _lenenc_str(col.table.encode()),
        _lenenc_str(col.table.encode()), _lenenc_str(name), _lenenc_str(name), b"\x0c",
        struct.pack("<HIBHB", charset, col.length * (4 if charset == _UTF8MB4 else 1), col.type, flags, 0), b"\x00\x00",
    ))


def text_row(values: Sequence[object]) -> bytes:
    out = []
    for v in values:
        if v is None:
            out.append(b"\xfb")
        else:
            out.append(_lenenc_str(v if isinstance(v, bytes) else str(v).encode("utf-8")))
    return b"".join(out)


def text_resultset(columns: Sequence[Column], rows: Sequence[Sequence[object]], status: int, seq: int = 1) -> bytes:
    """The whole answer to a query: column count, definitions, EOF, rows, EOF — framed from
    sequence id `seq` (1 for an answer to a command)."""
    packets = [lenenc_int(len(columns))]
    packets += [column_definition(c) for c in columns]
    packets.append(eof_payload(status))
    packets += [text_row(r) for r in rows]
    packets.append(eof_payload(status))
    out = []
    for p in packets:
        out.append(frame(p, seq))
        seq += 1
    return b"".join(out)
