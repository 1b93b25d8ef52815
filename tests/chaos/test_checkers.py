"""Negative controls for the bank, lost-writes, stale-reads and convergence checkers: a valid
history passes, a hand-made broken one and a mutated valid one are flagged."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chaos.checkers import MemberState, check_bank, check_convergence, check_lost_writes, check_stale_reads
from tests.chaos.history import Completed, Op, complete
from tests.chaos.synth import Builder, serial_bank, serial_inserts

SETTINGS = settings(max_examples=50, deadline=None)
ACCOUNTS = [str(a) for a in range(5)]


# ------------------------------------------------------------------------- bank

@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 80))
def test_bank_serial_is_clean(seed: int, steps: int) -> None:
    r = check_bank(serial_bank(seed, steps), total=50, accounts=ACCOUNTS)
    assert r.valid and not r.kinds(), r.to_dict()
    assert r.stats["reads"] >= 1


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 80), delta=st.integers(1, 9), pick=st.integers(0, 99))
def test_bank_mutated_read_is_flagged(seed: int, steps: int, delta: int, pick: int) -> None:
    ops = serial_bank(seed, steps)
    reads = [i for i, o in enumerate(ops) if o.type == "ok" and o.f == "read"]
    i = reads[pick % len(reads)]
    balances = dict(ops[i].value)
    acct = sorted(balances)[pick % 5]
    balances[acct] += delta  # money out of nowhere
    ops[i] = dataclasses.replace(ops[i], value=balances)
    r = check_bank(ops, total=50, accounts=ACCOUNTS)
    assert "wrong-total" in r.violations
    assert r.violations["wrong-total"][0].ops == (ops[i - 1].index,)


def test_bank_hand_made() -> None:
    b = Builder()
    b.pair("read", None, "ok", {"a": 10, "b": 10})
    b.pair("read", None, "ok", {"a": -1, "b": 21})
    b.pair("read", None, "ok", {"a": 20})
    b.pair("read", None, "info")  # unanswered reads say nothing
    r = check_bank(b.history(), total=20, accounts=["a", "b"])
    assert r.counts() == {"negative-balance": 1, "wrong-accounts": 1}
    assert r.anomalies["negative-balance"][0].ops == (2,)


# ------------------------------------------------------------------------- lost writes

def _insert_elements(c: Completed) -> list[int]:
    return [c.invoke.value] if c.f == "insert" else []


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 80))
def test_lost_writes_serial_is_clean(seed: int, steps: int) -> None:
    ops, final = serial_inserts(seed, steps)
    r = check_lost_writes(ops, final, elements=_insert_elements)
    assert r.valid and not r.kinds(), r.to_dict()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 80), pick=st.integers(0, 999))
def test_lost_writes_mutations_are_flagged(seed: int, steps: int, pick: int) -> None:
    ops, final = serial_inserts(seed, steps)
    done = complete(ops)
    oks = [c.invoke.value for c in done if c.f == "insert" and c.type == "ok"]
    fails = [c.invoke.value for c in done if c.f == "insert" and c.type == "fail"]
    if oks:
        lost = oks[pick % len(oks)]
        r = check_lost_writes(ops, final - {lost}, elements=_insert_elements)
        assert [a.data["element"] for a in r.violations["lost"]] == [lost]
    if fails:
        extra = fails[pick % len(fails)]
        r = check_lost_writes(ops, final | {extra}, elements=_insert_elements)
        assert [a.data["element"] for a in r.violations["failed-present"]] == [extra]
    r = check_lost_writes(ops, final | {-1}, elements=_insert_elements)
    assert "unknown-element" in r.violations


def test_lost_writes_info_may_go_either_way() -> None:
    b = Builder()
    b.pair("insert", 1, "info")
    b.pair("insert", 2, "info")
    r = check_lost_writes(b.history(), {1}, elements=_insert_elements)
    assert r.valid and r.stats["info_present"] == 1 and r.stats["info_absent"] == 1


# ------------------------------------------------------------------------- stale reads

def _writes(c: Completed) -> list[tuple[str, int]]:
    return [("s", c.invoke.value)] if c.f == "insert" else []


def _reads(c: Completed) -> list[tuple[str, set[int]]]:
    return [("s", set(c.value["seen"]))] if c.f == "read" else []


def _level(c: Completed) -> str:
    return (c.value or {}).get("level", "EVENTUAL") if isinstance(c.value, dict) else "EVENTUAL"


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 80))
def test_stale_reads_serial_is_clean(seed: int, steps: int) -> None:
    ops, _ = serial_inserts(seed, steps)
    r = check_stale_reads(ops, writes=_writes, reads=_reads, level=_level)
    assert r.valid and not r.kinds(), r.to_dict()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 80), pick=st.integers(0, 999))
def test_stale_reads_mutation_is_flagged_under_before_and_counted_under_eventual(
        seed: int, steps: int, pick: int) -> None:
    ops, _ = serial_inserts(seed, steps)
    reads = [i for i, o in enumerate(ops) if o.type == "ok" and o.f == "read" and o.value["seen"]]
    acked = {c.invoke.value for c in complete(ops) if c.f == "insert" and c.type == "ok"}
    reads = [i for i in reads if acked & set(ops[i].value["seen"])]
    if not reads:
        return
    i = reads[pick % len(reads)]
    seen = ops[i].value["seen"]
    drop = sorted(acked & set(seen))[pick % len(acked & set(seen))]
    mutated = list(ops)
    mutated[i] = dataclasses.replace(ops[i], value={"level": "BEFORE", "seen": [x for x in seen if x != drop]})
    r = check_stale_reads(mutated, writes=_writes, reads=_reads, level=_level)
    assert not r.valid and r.violations["stale-read"][0].data["missing"] == [drop]
    mutated[i] = dataclasses.replace(mutated[i], value={"level": "EVENTUAL", "seen": [x for x in seen if x != drop]})
    r = check_stale_reads(mutated, writes=_writes, reads=_reads, level=_level)
    assert r.valid and r.counts() == {"stale-read-eventual": 1}


def test_stale_read_strictness_follows_the_levels_and_real_time() -> None:
    ops = [
        Op(0, 1, "invoke", "read", {"level": "BEFORE"}, 10),
        Op(1, 2, "invoke", "insert", 5, 11),
        Op(2, 2, "ok", "insert", 5, 12),  # acknowledged while the read was running: concurrent
        Op(3, 1, "ok", "read", {"level": "BEFORE", "seen": []}, 13),
        # An AFTER read promises nothing about an EVENTUAL write: counted, allowed.
        Op(4, 1, "invoke", "read", {"level": "AFTER"}, 14),
        Op(5, 1, "ok", "read", {"level": "AFTER", "seen": []}, 15),
        # A write at AFTER must be seen by any later read, even an EVENTUAL one.
        Op(6, 3, "invoke", "insert", 6, 16),
        Op(7, 3, "ok", "insert", 6, 17),
        Op(8, 1, "invoke", "read", {"level": "EVENTUAL"}, 18),
        Op(9, 1, "ok", "read", {"level": "EVENTUAL", "seen": [5]}, 19),
        # A BEFORE read must see every write acknowledged before it started.
        Op(10, 1, "invoke", "read", {"level": "BEFORE"}, 20),
        Op(11, 1, "ok", "read", {"level": "BEFORE", "seen": [6]}, 21),
    ]
    write_levels = {5: "EVENTUAL", 6: "AFTER"}
    r = check_stale_reads(ops, writes=_writes, reads=_reads, level=_level,
                          write_level=lambda c: write_levels[c.invoke.value])
    assert r.counts() == {"stale-read": 2, "stale-read-eventual": 1}
    assert [a.ops for a in r.violations["stale-read"]] == [(8, 6), (10, 1)]
    assert r.anomalies["stale-read-eventual"][0].ops == (4, 1)


# ------------------------------------------------------------------------- convergence

def test_convergence() -> None:
    same = MemberState({"t.a": 123, "t.b": 9}, position=42)
    assert check_convergence({"m1": same, "m2": same, "m3": same}).valid
    r = check_convergence({
        "m1": same,
        "m2": MemberState({"t.a": 124, "t.b": 9}, position=42),
        "m3": MemberState({"t.a": 123}, position=41),
    })
    assert r.counts() == {"checksum-mismatch": 1, "missing-table": 1, "position-mismatch": 1}
    r = check_convergence({"m1": same, "m2": MemberState(error="connection refused")})
    assert r.kinds() == {"member-unreachable"} and not r.valid
