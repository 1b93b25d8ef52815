"""ResponseScanner: where a backend answer ends, however the bytes are split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.protocol.constants import MAX_PAYLOAD, Status
from replication.protocol.errors import MalformedPacket
from replication.protocol.errors import err_payload
from replication.protocol.packets import eof_payload, frame, lenenc_int, ok_payload
from replication.protocol.scanner import Expect, ResponseScanner


def packets(*payloads: bytes, seq: int = 1) -> bytes:
    out = []
    for p in payloads:
        framed = frame(p, seq)
        out.append(framed)
        seq += 1 + len(p) // MAX_PAYLOAD
    return b"".join(out)


def coldef(name: str) -> bytes:
    def s(x: bytes) -> bytes:
        return lenenc_int(len(x)) + x
    return s(b"def") + s(b"db") + s(b"t") + s(b"t") + s(name.encode()) + s(name.encode()) + b"\x0c" + bytes(12)


def text_row(*values: bytes | None) -> bytes:
    return b"".join(b"\xfb" if v is None else lenenc_int(len(v)) + v for v in values)


AUTOCOMMIT = int(Status.AUTOCOMMIT)
MORE = int(Status.MORE_RESULTS_EXISTS)


def resultset(ncols: int, rows: list[bytes], status: int = AUTOCOMMIT, eof_cols_status: int = AUTOCOMMIT) -> list[bytes]:
    return ([lenenc_int(ncols)] + [coldef(f"c{i}") for i in range(ncols)] + [eof_payload(eof_cols_status)]
            + rows + [eof_payload(status)])


big_row = b"\xfe" * (MAX_PAYLOAD + 10)  # a continuation packet starting with 0xFE must not end the result

CASES: list[tuple[str, Expect, bytes, dict[str, object]]] = [
    ("ok", Expect.SIMPLE, packets(ok_payload(AUTOCOMMIT, 1, 0)), {"status": AUTOCOMMIT}),
    ("err", Expect.QUERY, packets(err_payload(1146, "42S02", "Table 'x.t' doesn't exist")),
     {"error": (1146, "42S02", "Table 'x.t' doesn't exist")}),
    ("eof-simple", Expect.SIMPLE, packets(eof_payload(AUTOCOMMIT)), {"status": AUTOCOMMIT}),
    ("text-rs", Expect.QUERY, packets(*resultset(2, [text_row(b"1", None), text_row(b"22", b"x")])),
     {"status": AUTOCOMMIT, "packets": 7}),
    ("many-cols", Expect.QUERY, packets(*resultset(300, [text_row(*[b"v"] * 300)])), {"packets": 304}),
    ("multi-results", Expect.QUERY,
     packets(*resultset(1, [text_row(b"1")], status=AUTOCOMMIT | MORE), *resultset(1, [text_row(b"2")], status=AUTOCOMMIT | MORE),
             ok_payload(AUTOCOMMIT)),
     {"status": AUTOCOMMIT}),
    ("ok-more-ok", Expect.QUERY, packets(ok_payload(AUTOCOMMIT | MORE, 1), ok_payload(AUTOCOMMIT | 1, 2)),
     {"status": AUTOCOMMIT | 1}),
    ("err-mid-rows", Expect.QUERY,
     packets(lenenc_int(1), coldef("a"), eof_payload(AUTOCOMMIT), text_row(b"1"), err_payload(1317, "70100", "interrupted")),
     {"error": (1317, "70100", "interrupted")}),
    ("binary-cursor", Expect.EXECUTE,
     packets(lenenc_int(2), coldef("a"), coldef("b"), eof_payload(AUTOCOMMIT | int(Status.CURSOR_EXISTS))), {"packets": 4}),
    ("binary-rows", Expect.EXECUTE, packets(*resultset(1, [b"\x00\x00\x01", b"\x00\x00\x02"])), {"packets": 6}),
    ("prepare", Expect.PREPARE,
     packets(b"\x00" + (7).to_bytes(4, "little") + (2).to_bytes(2, "little") + (1).to_bytes(2, "little") + b"\x00\x00\x00",
             coldef("?"), eof_payload(AUTOCOMMIT), coldef("a"), coldef("b"), eof_payload(AUTOCOMMIT)),
     {"prepared": (7, 2, 1)}),
    ("prepare-no-params", Expect.PREPARE,
     packets(b"\x00" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little") + (0).to_bytes(2, "little") + b"\x00\x00\x00",
             coldef("a"), eof_payload(AUTOCOMMIT)),
     {"prepared": (8, 1, 0)}),
    ("prepare-nothing", Expect.PREPARE, packets(b"\x00" + (9).to_bytes(4, "little") + bytes(7)), {"prepared": (9, 0, 0)}),
    ("prepare-err", Expect.PREPARE, packets(err_payload(1064, "42000", "syntax")), {"error": (1064, "42000", "syntax")}),
    ("fetch", Expect.FETCH, packets(b"\x00\x00\x01", b"\x00\x00\x02", eof_payload(AUTOCOMMIT | int(Status.LAST_ROW_SENT))),
     {"packets": 3}),
    ("field-list", Expect.FIELD_LIST, packets(coldef("a"), coldef("b"), eof_payload(AUTOCOMMIT)), {"packets": 3}),
    ("statistics", Expect.SINGLE, packets(b"Uptime: 10  Threads: 1"), {"packets": 1}),
    ("big-row", Expect.QUERY, packets(*resultset(1, [big_row])), {"status": AUTOCOMMIT}),
    ("exact-multiple", Expect.QUERY, packets(*resultset(1, [b"\x01" * MAX_PAYLOAD])), {"status": AUTOCOMMIT}),
]


def run(expect: Expect, chunks: list[bytes]) -> tuple[ResponseScanner, int]:
    sc = ResponseScanner()
    sc.start(expect)
    used_total = 0
    for chunk in (c for c in chunks if c):
        assert not sc.done, "scanner finished before the response ended"
        used_total += sc.feed(chunk)
    return sc, used_total


@pytest.mark.parametrize("name,expect,data,checks", CASES, ids=[c[0] for c in CASES])
def test_whole_and_trailing_bytes(name: str, expect: Expect, data: bytes, checks: dict[str, object]) -> None:
    trailer = packets(b"\x00garbage-of-next-response", seq=0)
    sc = ResponseScanner()
    sc.start(expect)
    used = sc.feed(data + trailer)
    assert sc.done
    assert used == len(data)
    for attr, value in checks.items():
        assert getattr(sc, attr) == value, attr


@pytest.mark.parametrize("name,expect,data,checks", [c for c in CASES if len(c[2]) < 20000], ids=[c[0] for c in CASES if len(c[2]) < 20000])
def test_byte_at_a_time(name: str, expect: Expect, data: bytes, checks: dict[str, object]) -> None:
    sc, used = run(expect, [data[i : i + 1] for i in range(len(data))])
    assert sc.done and used == len(data)
    for attr, value in checks.items():
        assert getattr(sc, attr) == value, attr


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from([c for c in CASES if len(c[2]) < 100000]), cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12))
def test_any_split(case: tuple[str, Expect, bytes, dict[str, object]], cuts: list[int]) -> None:
    _, expect, data, checks = case
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(points, points[1:]) if b > a]
    sc, used = run(expect, chunks)
    assert sc.done and used == len(data)
    for attr, value in checks.items():
        assert getattr(sc, attr) == value


def test_big_row_split_at_continuation_boundary() -> None:
    data = packets(*resultset(1, [big_row]))
    for cut in (4 + MAX_PAYLOAD, 4 + MAX_PAYLOAD + 4, 4 + MAX_PAYLOAD + 5, len(data) - 9):
        sc, used = run(Expect.QUERY, [data[: cut + 40], data[cut + 40 :]])
        assert sc.done and used == len(data)


def test_not_done_until_last_byte() -> None:
    data = packets(*resultset(1, [text_row(b"x")]))
    sc = ResponseScanner()
    sc.start(Expect.QUERY)
    assert sc.feed(data[:-1]) == len(data) - 1
    assert not sc.done
    assert sc.feed(data[-1:]) == 1
    assert sc.done


def test_local_infile_pauses_and_resumes() -> None:
    sc = ResponseScanner()
    sc.start(Expect.QUERY)
    req = packets(b"\xfb/tmp/data.csv")
    assert sc.feed(req) == len(req)
    assert sc.done and sc.infile
    sc.resume_after_infile()
    ok = packets(ok_payload(AUTOCOMMIT, 3), seq=4)
    assert sc.feed(ok) == len(ok)
    assert sc.done and not sc.infile


def test_expect_none_is_done_at_once() -> None:
    sc = ResponseScanner()
    sc.start(Expect.NONE)
    assert sc.done


def test_start_while_busy_is_a_bug() -> None:
    sc = ResponseScanner()
    sc.start(Expect.QUERY)
    with pytest.raises(RuntimeError, match="BUG"):
        sc.start(Expect.QUERY)


@pytest.mark.parametrize("data", [
    packets(lenenc_int(1), coldef("a"), ok_payload(AUTOCOMMIT)[:1] + b"\x00" * 20),  # no EOF after the column
    frame(b"", 1),  # empty packet as an answer
    packets(b"\x05abc"),  # nonsense after PREPARE
])
def test_garbage_is_reported_not_crashed(data: bytes) -> None:
    sc = ResponseScanner()
    sc.start(Expect.PREPARE if data.endswith(b"abc") else Expect.QUERY)
    with pytest.raises(MalformedPacket):
        sc.feed(data)


def test_own_result_sets_frame_like_a_server() -> None:
    """Result sets grproxy builds itself end where the scanner says (and PyMySQL can read them)."""
    from replication.protocol.results import TYPE_LONGLONG, Column, text_resultset

    data = text_resultset([Column("MEMBER_ID"), Column("MEMBER_PORT", TYPE_LONGLONG, 20)],
                          [("a", 3310), ("b", None)], AUTOCOMMIT)
    sc = ResponseScanner()
    sc.start(Expect.QUERY)
    assert sc.feed(data + b"trailing") == len(data) and sc.done and sc.status == AUTOCOMMIT


def test_status_is_known_only_when_the_answer_carried_it() -> None:
    """A session took the scanner's status as its own after every answer. A prepare's answer
    left it as the previous answer had it: after a login, AUTOCOMMIT off, so the next prepared
    write ran as in a transaction and was never committed (found by fuzzing a member port)."""
    sc = ResponseScanner()
    sc.start(Expect.QUERY)
    sc.feed(frame(ok_payload(int(Status.IN_TRANS | Status.AUTOCOMMIT)), 1))
    assert sc.done and sc.status_seen and sc.status == int(Status.IN_TRANS | Status.AUTOCOMMIT)
    prepare_ok = b"\x00" + (7).to_bytes(4, "little") + (0).to_bytes(2, "little") + (1).to_bytes(2, "little") + b"\x00\x00\x00"
    param = b"\x03def\x00\x00\x00\x01?\x00\x0c?\x00\x00\x00\x00\x00\x06\x80\x00\x00\x00\x00"
    sc.start(Expect.PREPARE)
    sc.feed(frame(prepare_ok, 1) + frame(param, 2) + frame(eof_payload(int(Status.AUTOCOMMIT)), 3))
    assert sc.done and sc.prepared == (7, 0, 1)
    assert sc.status_seen and sc.status == int(Status.AUTOCOMMIT)  # the parameters' EOF says it
    bare = b"\x00" + (8).to_bytes(4, "little") + bytes(4) + b"\x00\x00\x00"
    sc.start(Expect.PREPARE)
    sc.feed(frame(bare, 1))
    assert sc.done and not sc.status_seen  # nothing said: the session keeps its own
    sc.start(Expect.QUERY)
    sc.feed(frame(err_payload(1064, "42000", "syntax"), 1))
    assert sc.done and not sc.status_seen
