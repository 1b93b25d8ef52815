"""Negative controls for the list-append (Elle-style) checker: serial histories are clean,
each injected anomaly is found, and mutations of valid histories are flagged."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chaos.checkers import check_list_append
from tests.chaos.checkers.list_append import tarjan_scc
from tests.chaos.history import Op, complete
from tests.chaos.synth import INJECTABLE, Builder, list_append_with, serial_list_append

SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), txns=st.integers(0, 60), keys=st.integers(1, 5))
def test_serial_histories_are_clean(seed: int, txns: int, keys: int) -> None:
    r = check_list_append(serial_list_append(seed, txns, keys))
    assert r.valid, r.to_dict()
    assert not r.kinds(), r.to_dict()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), txns=st.integers(0, 40), kind=st.sampled_from(INJECTABLE))
def test_injected_anomaly_is_found(seed: int, txns: int, kind: str) -> None:
    r = check_list_append(list_append_with(seed, txns, kind))
    assert kind in r.kinds(), (kind, r.to_dict())
    assert r.valid == (kind == "G2-item"), r.to_dict()


def _mutate_read(ops: list[Op], which: int, fn) -> list[Op]:  # type: ignore[no-untyped-def]
    """Apply fn to the read list of the ``which``-th read in ok completions that fn accepts."""
    out = list(ops)
    seen = 0
    for i, op in enumerate(out):
        if op.type != "ok" or op.f != "txn":
            continue
        value = [list(m) for m in op.value]
        for m in value:
            if m[0] == "r" and (new := fn(list(m[2]))) is not None:
                if seen == which:
                    m[2] = new
                    out[i] = dataclasses.replace(op, value=value)
                    return out
                seen += 1
    return out


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), txns=st.integers(5, 50), pick=st.integers(0, 1000))
def test_mutation_flip_ok_append_that_was_read_to_fail_is_G1a(seed: int, txns: int, pick: int) -> None:
    ops = serial_list_append(seed, txns, 3)
    read_elements = {(m[1], x) for c in complete(ops) if c.type == "ok"
                     for m in c.value if m[0] == "r" for x in m[2]}
    candidates = [c for c in complete(ops) if c.type == "ok" and c.completion is not None
                  and any(m[0] == "append" and (m[1], m[2]) in read_elements for m in c.value)]
    if not candidates:
        return
    victim = candidates[pick % len(candidates)].completion
    assert victim is not None
    ops[victim.index] = dataclasses.replace(victim, type="fail", error="mutated")
    assert "G1a" in check_list_append(ops).kinds()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), txns=st.integers(5, 50), pick=st.integers(0, 1000))
def test_mutation_of_a_read(seed: int, txns: int, pick: int) -> None:
    ops = serial_list_append(seed, txns, 3)
    # Swap the last two elements: disagrees with the other final read.
    swapped = _mutate_read(ops, pick % 3, lambda l: l[:-2] + [l[-1], l[-2]] if len(l) >= 2 else None)
    if swapped != ops:
        r = check_list_append(swapped)
        assert "incompatible-order" in r.kinds() and not r.valid
    # Repeat an element.
    dup = _mutate_read(ops, pick % 3, lambda l: l + [l[0]] if l else None)
    if dup != ops:
        assert "duplicate-elements" in check_list_append(dup).kinds()


def test_hand_made_write_skew_is_reported_but_allowed() -> None:
    b = Builder()
    b.pair("txn", [["r", "x", None], ["r", "y", None], ["append", "x", 1]], "ok",
           [["r", "x", []], ["r", "y", []], ["append", "x", 1]])
    b.pair("txn", [["r", "x", None], ["r", "y", None], ["append", "y", 2]], "ok",
           [["r", "x", []], ["r", "y", []], ["append", "y", 2]])
    b.pair("txn", [["r", "x", None], ["r", "y", None]], "ok", [["r", "x", [1]], ["r", "y", [2]]])
    r = check_list_append(b.history())
    assert r.kinds() == {"G2-item"} and r.valid
    (g2,) = r.anomalies["G2-item"]
    assert sorted(g2.ops) == [0, 2]
    assert [s["kind"] for s in g2.data["cycle"]] == ["rw", "rw"]


def test_hand_made_lost_update_without_snapshot_isolation_is_allowed() -> None:
    b = Builder()
    b.pair("txn", [["r", "x", None], ["append", "x", 1]], "ok", [["r", "x", []], ["append", "x", 1]])
    b.pair("txn", [["r", "x", None], ["append", "x", 2]], "ok", [["r", "x", []], ["append", "x", 2]])
    b.pair("txn", [["r", "x", None]], "ok", [["r", "x", [1, 2]]])
    strict = check_list_append(b.history())
    assert "lost-update" in strict.violations
    relaxed = check_list_append(b.history(), snapshot_isolation=False)
    assert "lost-update" in relaxed.kinds() and relaxed.valid


def test_hand_made_G0_names_its_cycle() -> None:
    b = Builder()
    t1 = b.pair("txn", [["append", "x", 1], ["append", "y", 1]], "ok")
    t2 = b.pair("txn", [["append", "x", 2], ["append", "y", 2]], "ok")
    b.pair("txn", [["r", "x", None], ["r", "y", None]], "ok", [["r", "x", [1, 2]], ["r", "y", [2, 1]]])
    r = check_list_append(b.history())
    assert set(r.violations) == {"G0"}
    (g0,) = r.anomalies["G0"]
    assert sorted(g0.ops) == [t1, t2]
    assert {s["kind"] for s in g0.data["cycle"]} == {"ww"}


def test_info_append_that_was_read_counts_as_committed_and_failed_one_does_not() -> None:
    b = Builder()
    b.pair("txn", [["append", "x", 1]], "info", error="lost connection")
    b.pair("txn", [["append", "x", 2]], "fail", error="3101")
    b.pair("txn", [["r", "x", None]], "ok", [["r", "x", [1]]])
    assert check_list_append(b.history()).valid
    b.pair("txn", [["r", "x", None]], "ok", [["r", "x", [1, 2]]])
    assert check_list_append(b.history()).kinds() == {"G1a"}


def test_append_twice_is_a_workload_bug() -> None:
    b = Builder()
    b.pair("txn", [["append", "x", 1]], "ok")
    b.pair("txn", [["append", "x", 1]], "ok")
    with pytest.raises(ValueError, match="twice"):
        check_list_append(b.history())


def test_tarjan_against_a_naive_reachability_oracle() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 12)
        g: dict[int, dict[int, set[str]]] = {}
        for _ in range(rng.randint(0, 30)):
            a, b = rng.randrange(n), rng.randrange(n)
            g.setdefault(a, {})[b] = {"ww"}
        reach = {v: {v} for v in range(n)}
        changed = True
        while changed:
            changed = False
            for v in range(n):
                new = set().union(*(reach[w] for w in g.get(v, {}))) | reach[v]
                if new != reach[v]:
                    reach[v], changed = new, True
        comps = tarjan_scc(range(n), g)
        assert sorted(x for c in comps for x in c) == list(range(n))
        for c in comps:
            for a in c:
                for b in range(n):
                    assert (b in c) == (b in reach[a] and a in reach[b])
