"""_DoomTail (replication/member_session.py): the sink of a statement whose transaction was
doomed while it ran holds back only the answer's last DOOM_TAIL_BYTES, and can replace the
terminating ERR packet (the lock watch's KILL QUERY: 1317) with 3101 under the same sequence id."""

from __future__ import annotations

from replication.member_session import DOOM_TAIL_BYTES, _DoomTail
from replication.protocol.packets import frame


class Out:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


def err(code: int, message: str) -> bytes:
    return b"\xff" + code.to_bytes(2, "little") + b"#70100" + message.encode()


def test_a_killed_statements_err_is_replaced_under_its_sequence_id() -> None:
    out = Out()
    tail = _DoomTail(out)
    rows = b"".join(frame(b"\x01" + bytes([65 + i % 26]) * 200, i + 1) for i in range(100))  # ~20 KB
    killed = frame(err(1317, "Query execution was interrupted"), 101)
    for i in range(0, len(rows), 777):
        tail.write(rows[i:i + 777])
    tail.write(killed[:5])  # the ERR packet split across chunks
    tail.write(killed[5:])
    assert len(out.data) == len(rows) + len(killed) - DOOM_TAIL_BYTES  # never more held than the bound
    assert tail.finish(len(killed), err(3101, "Plugin instructed the server to rollback the current transaction."))
    assert bytes(out.data[:len(rows)]) == rows
    sent = bytes(out.data[len(rows):])
    assert sent == frame(err(3101, "Plugin instructed the server to rollback the current transaction."), 101)


def test_an_answer_that_was_no_err_passes_unchanged() -> None:
    out = Out()
    tail = _DoomTail(out)
    ok = frame(b"\x00\x01\x00\x02\x00\x00\x00", 1)
    tail.write(ok)
    assert out.data == b""  # held: it could have been the answer's end
    assert not tail.finish(len(ok), err(3101, "x"))  # not an ERR packet: never replaced
    assert bytes(out.data) == ok


def test_nothing_is_replaced_when_the_err_packet_had_already_gone_out() -> None:
    out = Out()
    tail = _DoomTail(out)
    killed = frame(err(1317, "interrupted"), 3)
    tail.write(killed)
    tail.write(b"x" * (DOOM_TAIL_BYTES + 10))  # (cannot follow an ERR in a real answer)
    assert not tail.finish(len(killed), err(3101, "x"))
    assert bytes(out.data) == killed + b"x" * (DOOM_TAIL_BYTES + 10)
