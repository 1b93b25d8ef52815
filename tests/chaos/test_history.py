"""The history recorder: entries, completions, JSON lines on disk and back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.chaos.history import HistoryError, Op, Recorder, complete, dump, load


def test_record_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with Recorder(path) as rec:
        a = rec.invoke(0, "txn", [["append", 1, 2], ["r", 1, None]], member="m1")
        b = rec.invoke(1, "read", None)
        rec.ok(a, [["append", 1, 2], ["r", 1, [2]]])
        rec.info(b, "Lost connection to server during query")
        c = rec.invoke(2, "insert", 7)
        rec.fail(c, "(3101) conflict")
    ops = rec.ops()
    assert [o.type for o in ops] == ["invoke", "invoke", "ok", "info", "invoke", "fail"]
    assert all(x.time_ns <= y.time_ns for x, y in zip(ops, ops[1:]))
    assert load(path) == ops
    done = complete(ops)
    assert [d.type for d in done] == ["ok", "info", "fail"]
    assert done[0].value == [["append", 1, 2], ["r", 1, [2]]]
    assert done[0].invoke.member == "m1" and done[0].completion.member == "m1"
    assert done[1].completion.error.startswith("Lost connection")


def test_unfinished_operation_counts_as_info(tmp_path: Path) -> None:
    rec = Recorder()
    rec.invoke(0, "txn", [["append", 1, 1]])
    (d,) = complete(rec.ops())
    assert d.type == "info" and d.completion is None and d.complete_ns is None


def test_torn_last_line_is_ignored_but_a_bad_middle_line_is_not(tmp_path: Path) -> None:
    rec = Recorder()
    rec.ok(rec.invoke(0, "read", None), {"a": 1})
    path = tmp_path / "h.jsonl"
    dump(rec.ops(), path)
    path.write_text(path.read_text() + '{"index": 2, "proc')
    assert load(path) == rec.ops()
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", lines[1]]) + "\n")
    with pytest.raises(HistoryError, match=":2:"):
        load(path)


def test_process_rules() -> None:
    rec = Recorder()
    op = rec.invoke(0, "read", None)
    with pytest.raises(HistoryError):
        rec.invoke(0, "read", None)
    rec.ok(op)
    with pytest.raises(HistoryError):
        rec.ok(op)
    with pytest.raises(HistoryError):
        complete([Op(0, 3, "ok", "read", None, 1)])
    with pytest.raises(ValueError):
        Op(0, 0, "done", "read", None, 1)  # type: ignore[arg-type]


def test_threads_record_one_consistent_history() -> None:
    rec = Recorder()

    def client(p: int) -> None:
        for i in range(200):
            op = rec.invoke(p, "insert", p * 1000 + i)
            rec.ok(op)

    threads = [threading.Thread(target=client, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = rec.ops()
    assert [o.index for o in ops] == list(range(1600))
    assert len(complete(ops)) == 800
