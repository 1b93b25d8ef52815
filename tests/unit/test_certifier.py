"""Certifier: tables of cases, and properties against a naive O(n²) oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.certifier import Certifier, CertifierFull, KeyHash, Seq

K = KeyHash


def test_first_committer_wins() -> None:
    c = Certifier()
    a = c.certify({K(1), K(2)}, Seq(0))
    b = c.certify({K(2), K(3)}, Seq(0))  # ran concurrently with a: same snapshot
    assert a.positive and a.seq == 1
    assert not b.positive and b.seq is None and b.conflict_key == 2 and b.conflict_seq == 1
    assert c.last_seq == 1


def test_later_snapshot_sees_the_write() -> None:
    c = Certifier()
    c.certify({K(1)}, Seq(0))
    assert c.certify({K(1)}, Seq(1)).positive


def test_disjoint_keys_both_pass() -> None:
    c = Certifier()
    assert c.certify({K(1)}, Seq(0)).seq == 1
    assert c.certify({K(2)}, Seq(0)).seq == 2


def test_empty_write_set_passes_and_takes_a_seq() -> None:
    c = Certifier()
    assert c.certify(set(), Seq(0)).seq == 1


def test_snapshot_from_the_future_is_a_bug() -> None:
    with pytest.raises(ValueError, match="BUG"):
        Certifier().certify({K(1)}, Seq(5))


def test_bound_refuses_rather_than_forgets() -> None:
    c = Certifier(keys_max=3)
    c.certify({K(1), K(2)}, Seq(0))
    with pytest.raises(CertifierFull):
        c.certify({K(3), K(4)}, Seq(1))
    assert c.last_seq == 1 and len(c) == 2


def test_gc_waits_for_every_member_and_drops_only_stable_keys() -> None:
    c = Certifier()
    for i in range(1, 6):
        c.certify({K(i)}, Seq(i - 1))
    view = ["m1", "m2", "m3"]
    assert c.report_stable("m1", Seq(4), view) == 0
    assert c.report_stable("m2", Seq(5), view) == 0
    assert c.report_stable("m3", Seq(3), view) == 3  # min is 3: keys 1..3 go
    assert len(c) == 2 and c.stable == 3
    # A transaction with the lowest possible snapshot still conflicts on what was kept.
    assert not c.certify({K(4)}, Seq(3)).positive


def test_gc_forgets_members_that_left() -> None:
    c = Certifier()
    for i in range(1, 4):
        c.certify({K(i)}, Seq(i - 1))
    c.report_stable("m1", Seq(3), ["m1", "m2"])
    assert c.report_stable("m2", Seq(1), ["m1", "m2"]) == 1
    # m2 leaves: only m1's report counts now.
    assert c.report_stable("m1", Seq(3), ["m1"]) == 2


def test_state_transfer_round_trip() -> None:
    c = Certifier()
    c.certify({K(1), K(2)}, Seq(0))
    d = Certifier.from_state(*c.snapshot_state())
    assert d.certify({K(2)}, Seq(0)) == c.certify({K(2)}, Seq(0))
    assert d.last_seq == c.last_seq


# --- properties against the oracle --------------------------------------------------------------


def oracle(history: list[tuple[frozenset[int], int]]) -> list[int | None]:
    """O(n²): a transaction passes iff no earlier *passing* transaction with seq > its snapshot
    wrote one of its keys."""
    passed: list[tuple[int, frozenset[int]]] = []
    out: list[int | None] = []
    for keys, snapshot in history:
        if any(seq > snapshot and keys & ks for seq, ks in passed):
            out.append(None)
            continue
        seq = len(passed) + 1
        passed.append((seq, keys))
        out.append(seq)
    return out


txn = st.tuples(st.frozensets(st.integers(0, 12), max_size=4), st.integers(0, 50))


@settings(max_examples=400, deadline=None)
@given(st.lists(txn, max_size=60))
def test_matches_oracle(raw: list[tuple[frozenset[int], int]]) -> None:
    c = Certifier()
    history = []
    for keys, lag in raw:
        snapshot = max(0, c.last_seq - lag % (c.last_seq + 1))
        history.append((keys, snapshot))
        c.certify({K(k) for k in keys}, Seq(snapshot))
    replay = Certifier()
    got = [replay.certify({K(k) for k in keys}, Seq(s)).seq for keys, s in history]
    assert got == oracle(history)


@settings(max_examples=300, deadline=None)
@given(st.lists(txn, max_size=60), st.integers(0, 10))
def test_gc_never_changes_a_verdict(raw: list[tuple[frozenset[int], int]], gc_every: int) -> None:
    """With reports that respect the contract (snapshots never below a member's report),
    a collecting certifier gives exactly the verdicts of one that never collects."""
    keep, gc = Certifier(), Certifier()
    floor = 0  # the lowest snapshot any member may still send
    for i, (keys, lag) in enumerate(raw):
        snapshot = max(floor, keep.last_seq - lag % (keep.last_seq + 1))
        ws = {K(k) for k in keys}
        assert keep.certify(ws, Seq(snapshot)) == gc.certify(ws, Seq(snapshot))
        if gc_every and i % gc_every == 0:
            floor = max(floor, keep.last_seq - (lag % 3))
            gc.report_stable("m1", Seq(floor), ["m1"])


def test_out_of_order_commit_seen_is_not_a_conflict() -> None:
    """Seq 2 committed on the origin while seq 1 was still committing (LWM 0): a transaction
    that waited on seq 2's row lock saw its write, and must not fail certification."""
    c = Certifier()
    c.certify({K(1)}, Seq(0))  # seq 1 (another key)
    c.certify({K(7)}, Seq(0))  # seq 2 writes key 7
    assert c.certify({K(7)}, Seq(0), seen={Seq(2)}).positive
    assert not c.certify({K(7)}, Seq(0)).positive  # without saying so, it conflicts


def oracle_seen(history: list[tuple[frozenset[int], int, frozenset[int]]]) -> list[int | None]:
    passed: list[tuple[int, frozenset[int]]] = []
    out: list[int | None] = []
    for keys, snapshot, seen in history:
        if any(seq > snapshot and seq not in seen and keys & ks for seq, ks in passed):
            out.append(None)
            continue
        seq = len(passed) + 1
        passed.append((seq, keys))
        out.append(seq)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.frozensets(st.integers(0, 10), max_size=3), st.integers(0, 30),
                          st.lists(st.integers(0, 30), max_size=4)), max_size=50))
def test_seen_matches_oracle(raw: list[tuple[frozenset[int], int, list[int]]]) -> None:
    c = Certifier()
    history = []
    written: dict[int, frozenset[int]] = {}  # seq → keys of passing transactions
    for keys, lag, picks in raw:
        snapshot = max(0, c.last_seq - lag % (c.last_seq + 1))
        seen = {snapshot + 1 + p % max(1, c.last_seq - snapshot) for p in picks if c.last_seq > snapshot}
        # As on a real member: a seq is committed only after every earlier seq sharing a key
        # with it (the applier keeps their order), so what was seen is closed under that.
        changed = True
        while changed:
            changed = False
            for s_ in list(seen):
                for q, ks in written.items():
                    if snapshot < q < s_ and q not in seen and ks & written.get(s_, frozenset()):
                        seen.add(q)
                        changed = True
        history.append((keys, snapshot, frozenset(seen)))
        out = c.certify({K(k) for k in keys}, Seq(snapshot), {Seq(x) for x in seen})
        if out.seq is not None:
            written[out.seq] = keys
    replay = Certifier()
    got = [replay.certify({K(k) for k in keys}, Seq(s), {Seq(x) for x in seen}).seq for keys, s, seen in history]
    assert got == oracle_seen(history)


def test_ddl_fails_earlier_snapshots_on_its_tables_until_collected() -> None:
    from replication.certifier import ALL_TABLES

    c = Certifier()
    t, u = K(7), K(8)
    assert c.ddl((t,)) == 1
    before = c.certify({K(1)}, Seq(0), tables=(t,))
    assert not before.positive and before.conflict_key == t and before.conflict_seq == 1
    assert c.certify({K(1)}, Seq(0), seen={Seq(1)}, tables=(t,)).positive  # ran after it on its member
    assert c.certify({K(2)}, Seq(0), tables=(u,)).positive  # another table
    assert c.certify({K(3)}, Seq(1), tables=(t,)).positive  # snapshot includes the DDL
    assert c.ddl((ALL_TABLES,)) == 5
    assert not c.certify({K(4)}, Seq(4), tables=(u,)).positive  # a DDL on unknown tables: every table
    view = ["m1"]
    c.report_stable("m1", Seq(5), view)
    assert c.ddl_state() == {} and c.certify({K(4)}, Seq(4), tables=(t,)).positive
