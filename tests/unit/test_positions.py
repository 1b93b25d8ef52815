"""AppliedSet: intervals and low-water mark against a plain set."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.positions import AppliedSet


def test_lwm_and_gaps() -> None:
    s = AppliedSet()
    assert s.lwm == 0
    for seq in (2, 3, 5):
        assert s.add(seq)
    assert s.lwm == 0 and str(s) == "2-3:5"
    assert s.add(1) and s.lwm == 3
    assert not s.add(3)  # duplicate
    assert list(s.missing(7)) == [4, 6, 7]
    s.add(4)
    assert s.lwm == 5 and str(s) == "1-5"


def test_parse_round_trip() -> None:
    s = AppliedSet.parse("1-10:12:15-20")
    assert str(s) == "1-10:12:15-20" and s.lwm == 10 and len(s) == 17
    assert 12 in s and 13 not in s


def test_invalid() -> None:
    with pytest.raises(ValueError):
        AppliedSet().add(0)
    with pytest.raises(ValueError):
        AppliedSet([(5, 3)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 60), max_size=80))
def test_matches_plain_set(seqs: list[int]) -> None:
    s = AppliedSet()
    plain: set[int] = set()
    for q in seqs:
        assert s.add(q) == (q not in plain)
        plain.add(q)
    lwm = 0
    while lwm + 1 in plain:
        lwm += 1
    assert s.lwm == lwm
    assert len(s) == len(plain)
    assert list(s.missing(60)) == [q for q in range(1, 61) if q not in plain]
    assert list(AppliedSet.parse(str(s)).intervals()) == list(s.intervals())
    ivs = list(s.intervals())
    assert all(a[1] + 1 < b[0] for a, b in zip(ivs, ivs[1:]))  # disjoint, non-adjacent


def test_a_reload_keeps_the_seqs_committed_while_the_backend_was_read() -> None:
    """Member._resolve_local reads the backend's positions while an applier that was not
    stopped (the member was expelled, not failed) may still commit: a seq committed after the
    read must not be dropped by the replace — recovery would fetch and apply it again."""
    from replication.positions import AppliedSet, Positions
    p = Positions(AppliedSet([(1, 5)]))
    since = p.reload_begin()
    stored = AppliedSet([(1, 5)])  # what the read saw
    p.mark_applied(6)  # the applier commits seq 6 meanwhile
    p.replace(stored, since=since)
    assert 6 in p.applied and p.lwm == 6
    p.mark_applied(7)
    assert since == [6]  # the reload ended: later marks are not collected
