"""Configurations against naive oracles (raft quorum/quick_test.go style)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from replication.gcs.interface import MemberId, Slot, ViewId
from replication.gcs.xcom.quorum import Config, majority
from replication.gcs.xcom.types import (
    ballot_epoch,
    ballot_round,
    make_ballot,
    owner_ballot,
)


def _members(n: int) -> tuple[MemberId, ...]:
    return tuple(MemberId(f"m{i}", f"h{i}:1", 1) for i in range(n))


@given(st.integers(1, 9))
def test_majority_is_the_smallest_strict_majority(n: int) -> None:
    oracle = min(k for k in range(n + 1) if 2 * k > n)
    assert majority(n) == oracle
    # Any two majorities intersect.
    assert 2 * majority(n) > n


@given(st.integers(1, 9), st.integers(1, 50), st.booleans(), st.integers(0, 200))
def test_owner_and_next_owned_match_enumeration(n: int, start: int, single: bool, probe: int) -> None:
    config = Config.make(ViewId(0, 1), Slot(start), _members(n), single)
    leaders = config.leaders
    assert leaders == (config.members[:1] if single else config.members)
    slots = range(start, start + 3 * n + 5)
    owners = {s: leaders[(s - start) % len(leaders)] for s in slots}
    for s in slots:
        assert config.owner(s) == owners[s]
    for who in config.members:
        got = config.next_owned(who, start + probe)
        if who not in leaders:
            assert got is None
            continue
        expected = next(s for s in range(start + probe, start + probe + n + 1) if config.owner(s) == who)
        assert got == expected


@given(st.integers(0, 2**31 - 1), st.integers(0, 2**24 - 1), st.integers(0, 255))
def test_ballots_order_by_epoch_then_round_then_rank(epoch: int, round_: int, rank: int) -> None:
    b = make_ballot(epoch, round_, rank)
    assert (ballot_epoch(b), ballot_round(b), b & 0xFF) == (epoch, round_, rank)
    assert owner_ballot(epoch) <= b
    if epoch:
        assert make_ballot(epoch - 1, 2**24 - 1, 255) < owner_ballot(epoch)
