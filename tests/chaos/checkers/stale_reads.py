"""Stale reads: a read that starts after a write was acknowledged must see it, when the
consistency levels promise it.

Which pairs are strict (GR's levels, DESIGN §6):
- the read ran at BEFORE or BEFORE_AND_AFTER: the reading member first applies everything
  ordered before the read's sync point, which includes every write acknowledged before the
  read started;
- the write ran at AFTER or BEFORE_AND_AFTER: it was acknowledged only once every ONLINE member
  had applied it, so any later read anywhere sees it.
Otherwise (an EVENTUAL write read at EVENTUAL or AFTER, or BEFORE_ON_PRIMARY_FAILOVER outside a
failover) a secondary may lag: such stale reads are counted (kind ``stale-read-eventual``,
allowed), not violations.

"After" is real time on one clock: the write's ``ok`` time is earlier than the read's
``invoke`` time (both from the recorder's monotonic clock). Only ``ok`` writes count: an
``info`` write may have committed later than anything we know.

Inputs: ``writes(c)`` gives ``(key, element)`` pairs a write operation added; ``reads(c)`` gives
``(key, elements seen)`` pairs of a read operation; ``level(c)`` the consistency level an
operation ran at (used for the read, and for the write unless ``write_level`` is given).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from ..history import Completed, Op, complete
from .result import Anomaly, CheckResult, result

STRICT_READ_LEVELS = frozenset({"BEFORE", "BEFORE_AND_AFTER"})
STRICT_WRITE_LEVELS = frozenset({"AFTER", "BEFORE_AND_AFTER"})


def check_stale_reads(
    ops: Sequence[Op],
    *,
    writes: Callable[[Completed], Iterable[tuple[Any, Any]]],
    reads: Callable[[Completed], Iterable[tuple[Any, Collection[Any]]]],
    level: Callable[[Completed], str],
    write_level: Callable[[Completed], str] | None = None,
) -> CheckResult:
    """Kinds: ``stale-read`` (a strict pair: a read missed a write acknowledged before it
    started), ``stale-read-eventual`` (the same for a pair the levels do not protect; allowed).
    Stats: ``reads_checked`` (key reads) and ``by_level``: per reading level, key reads checked
    and how many of them were stale (strict, allowed)."""
    write_level = write_level or level
    done = complete(ops)
    # Per key, the acknowledged writes sorted by ack time.
    acked: dict[Any, list[tuple[int, Any, int]]] = {}
    strict_write: set[int] = set()
    for c in done:
        if c.type != "ok":
            continue
        for key, element in writes(c):
            assert c.complete_ns is not None
            acked.setdefault(key, []).append((c.complete_ns, element, c.invoke.index))
            if write_level(c).upper() in STRICT_WRITE_LEVELS:
                strict_write.add(c.invoke.index)
    for lst in acked.values():
        lst.sort(key=lambda t: t[0])
    times = {k: [t[0] for t in v] for k, v in acked.items()}
    found: list[Anomaly] = []
    checked = 0
    by_level: dict[str, dict[str, int]] = {}  # level -> reads checked, strict and allowed stale reads
    for c in done:
        if c.type != "ok":
            continue
        lvl = level(c).upper()
        counts = by_level.setdefault(lvl, {"reads": 0, "stale": 0, "stale_allowed": 0})
        for key, seen in reads(c):
            checked += 1
            counts["reads"] += 1
            before = acked.get(key, [])
            n = bisect.bisect_left(times.get(key, []), c.invoke_ns)
            missing = [(e, w) for _, e, w in before[:n] if e not in seen]
            strict = [(e, w) for e, w in missing if lvl in STRICT_READ_LEVELS or w in strict_write]
            for kind, which in (("stale-read", strict), ("stale-read-eventual", [m for m in missing if m not in strict])):
                if which:
                    counts["stale" if kind == "stale-read" else "stale_allowed"] += 1
                    found.append(Anomaly(kind, (c.invoke.index, *(w for _, w in which[:5])),
                                         f"read of {key!r} at {lvl} missed {len(which)} acknowledged write(s)",
                                         {"key": key, "missing": [e for e, _ in which[:20]], "level": lvl}))
    return result("stale-reads", found, allowed={"stale-read-eventual"},
                  stats={"reads_checked": checked, "by_level": dict(sorted(by_level.items()))})
