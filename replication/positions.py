"""Applied positions: which seqs a backend has committed, as compact intervals.

Seqs are applied out of order (the applier runs non-conflicting transactions in parallel), so
the set is kept as sorted, disjoint, non-adjacent closed intervals — the shape of MySQL's
`gtid_executed` ("1-1000:1002-1010"). The *low-water mark* (LWM) is the end of the interval
that starts at 1: every seq at or below it is applied. Snapshots and consistency waits are
stated in LWM terms.

`AppliedSet` is pure. The member persists each added seq in the backend, in the same
transaction as the data it belongs to, and rebuilds the set from the backend at start-up, so a
crash neither loses nor repeats a transaction (`PositionStore`, replication/member.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from .certifier import Seq

INTERVALS_MAX = 100_000  # gaps tolerated at once; more means the applier is wedged


class TooManyGaps(Exception):
    """The applied set fragmented past INTERVALS_MAX intervals."""


class AppliedSet:
    """A set of seqs as intervals, with its low-water mark."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, intervals: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for lo, hi in sorted(intervals):
            for seq in (lo, hi):
                if seq < 1:
                    raise ValueError(f"seq {seq} < 1")
            if lo > hi:
                raise ValueError(f"empty interval {lo}-{hi}")
            self._add_range(lo, hi)

    @property
    def lwm(self) -> Seq:
        """The highest seq such that every seq from 1 to it is in the set (0 if 1 is not)."""
        if self._starts and self._starts[0] == 1:
            return Seq(self._ends[0])
        return Seq(0)

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._starts, seq) - 1
        return i >= 0 and self._ends[i] >= seq

    def add(self, seq: int) -> bool:
        """Add one seq; False if it was already there (a duplicate apply)."""
        if seq < 1:
            raise ValueError(f"seq {seq} < 1")
        if seq in self:
            return False
        self._add_range(seq, seq)
        return True

    def _add_range(self, lo: int, hi: int) -> None:
        starts, ends = self._starts, self._ends
        i = bisect.bisect_left(ends, lo - 1)  # first interval that could touch [lo, hi]
        j = i
        new_lo, new_hi = lo, hi
        while j < len(starts) and starts[j] <= hi + 1:
            new_lo = min(new_lo, starts[j])
            new_hi = max(new_hi, ends[j])
            j += 1
        starts[i:j] = [new_lo]
        ends[i:j] = [new_hi]
        if len(starts) > INTERVALS_MAX:
            raise TooManyGaps(f"applied set has more than {INTERVALS_MAX} gaps")

    def intervals(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends)

    def missing(self, upto: int) -> Iterator[int]:
        """Seqs in 1..upto that are not in the set (what recovery must fetch)."""
        nxt = 1
        for lo, hi in self.intervals():
            if lo > upto:
                break
            yield from range(nxt, min(lo, upto + 1))
            nxt = hi + 1
        yield from range(nxt, upto + 1)

    def __str__(self) -> str:
        return ":".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.intervals())

    @classmethod
    def parse(cls, text: str) -> "AppliedSet":
        """Inverse of str(): '1-10:12:15-20'."""
        out = []
        for part in filter(None, text.split(":")):
            lo, _, hi = part.partition("-")
            out.append((int(lo), int(hi or lo)))
        return cls(out)

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.intervals())
