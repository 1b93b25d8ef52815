"""Configurations of the consensus core: members, leaders, slot owners and majorities.

A configuration is in effect from its `start` slot until the next configuration's start. It
fixes, for each of its slots, the acceptors (its members; a quorum is a strict majority of
them) and the owner (leaders dealt round-robin from `start`). Pure functions of immutable data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from replication.gcs.interface import MemberId, Slot, View, ViewId
from replication.gcs.xcom.messages import ConfigRecord
from replication.gcs.xcom.types import invariant

__all__ = ["Config", "majority"]


def majority(member_count: int) -> int:
    """Size of a strict majority of `member_count` members: N // 2 + 1 (seed "Gone missing")."""
    return member_count // 2 + 1


@dataclass(frozen=True, slots=True)
class Config:
    view_id: ViewId
    start: Slot
    members: tuple[MemberId, ...]
    leaders: tuple[MemberId, ...]
    quorum: int
    member_set: frozenset[MemberId] = field(compare=False)
    leader_rank: dict[MemberId, int] = field(compare=False)
    member_rank: dict[MemberId, int] = field(compare=False)

    @classmethod
    def make(cls, view_id: ViewId, start: Slot, members: tuple[MemberId, ...], single_leader: bool) -> Config:
        """Build a configuration; the single leader is the longest-standing member (first)."""
        invariant(len(set(members)) == len(members), "configuration with duplicate members")
        leaders = members[:1] if single_leader else members
        return cls(
            view_id=view_id,
            start=start,
            members=members,
            leaders=leaders,
            quorum=majority(len(members)),
            member_set=frozenset(members),
            leader_rank={m: i for i, m in enumerate(leaders)},
            member_rank={m: i for i, m in enumerate(members)},
        )

    @classmethod
    def from_record(cls, record: ConfigRecord, single_leader: bool) -> Config:
        return cls.make(record.view_id, record.start, record.members, single_leader)

    def record(self) -> ConfigRecord:
        return ConfigRecord(self.view_id, self.start, self.members)

    @property
    def epoch(self) -> int:
        return self.view_id.epoch

    def owner(self, slot: int) -> MemberId:
        """The leader that may propose in `slot` at round 0 (no prepare)."""
        return self.leaders[(slot - self.start) % len(self.leaders)]

    def next_owned(self, member: MemberId, slot: int) -> int | None:
        """The first slot >= `slot` (and >= start) that `member` owns here; None if not a leader."""
        rank = self.leader_rank.get(member)
        if rank is None:
            return None
        slot = max(slot, self.start)
        n = len(self.leaders)
        return slot + (rank - (slot - self.start)) % n

    def view(self, previous: Config | None) -> View:
        before = previous.member_set if previous is not None else frozenset()
        return View(
            view_id=self.view_id,
            members=self.members,
            leaders=self.leaders,
            start_slot=self.start,
            joined=tuple(m for m in self.members if m not in before) if previous is not None else (),
            left=tuple(m for m in previous.members if m not in self.member_set) if previous is not None else (),
        )
