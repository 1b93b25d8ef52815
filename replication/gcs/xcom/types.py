"""Small shared types of the consensus core: ballots and the `invariant` helper.

Sans-IO like the rest of the core (no clock, socket, randomness or logging imports).

A `Ballot` is one int so that comparing ballots is comparing ints (hot path). Layout:
``epoch << 32 | round << 8 | rank``. `epoch` grows only when force_members installs a
configuration, so every ballot of a forced configuration beats every ballot before it; round 0
is the owner's ballot (proposals without prepare, Mencius); a revocation uses round >= 1 and
the proposer's rank in the slot's configuration, so two proposers never share a ballot.
"""

from __future__ import annotations

from typing import NewType

from replication.gcs.interface import Slot

__all__ = [
    "Ballot",
    "Slot",
    "InvariantViolation",
    "invariant",
    "make_ballot",
    "ballot_epoch",
    "ballot_round",
    "owner_ballot",
    "BALLOT_RANK_MAX",
    "BALLOT_ROUND_MAX",
    "EPOCH_MAX",
]

Ballot = NewType("Ballot", int)

BALLOT_RANK_MAX = 255
BALLOT_ROUND_MAX = 2**24 - 1
EPOCH_MAX = 2**31 - 1


class InvariantViolation(AssertionError):
    """A programmer error inside the core; the member goes to ERROR, never swallowed."""


def invariant(condition: bool, message: str) -> None:
    """Check an invariant; unlike `assert` it is not stripped by ``python -O``.

    Raises InvariantViolation(message). Keep `message` cheap to build: callers on hot paths
    pass a constant string.
    """
    if not condition:
        raise InvariantViolation(message)


def make_ballot(epoch: int, round_: int, rank: int) -> Ballot:
    invariant(0 <= epoch <= EPOCH_MAX, "ballot epoch out of range")
    invariant(0 <= round_ <= BALLOT_ROUND_MAX, "ballot round out of range")
    invariant(0 <= rank <= BALLOT_RANK_MAX, "ballot rank out of range")
    return Ballot((epoch << 32) | (round_ << 8) | rank)


def owner_ballot(epoch: int) -> Ballot:
    """The ballot an owner uses in its own slots without a prepare phase (round 0)."""
    return Ballot(epoch << 32)


def ballot_epoch(ballot: Ballot) -> int:
    return ballot >> 32


def ballot_round(ballot: Ballot) -> int:
    return (ballot >> 8) & BALLOT_ROUND_MAX
