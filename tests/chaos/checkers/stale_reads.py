"""Stale reads: a read that starts after a write was acknowledged must see it — under BEFORE,
AFTER and BEFORE_AND_AFTER.

Why these levels: under BEFORE the reading member first applies everything ordered before the
read's sync point, which includes every write acknowledged before the read started; under AFTER
the write was acknowledged only once every ONLINE member had applied it; BEFORE_AND_AFTER does
both. Under EVENTUAL (and BEFORE_ON_PRIMARY_FAILOVER, outside a failover) a secondary may lag,
so stale reads are counted (kind ``stale-read-eventual``, allowed), not violations.

"After" is real time on one clock: the write's ``ok`` time is earlier than the read's
``invoke`` time (both from the recorder's monotonic clock). Only ``ok`` writes count: an
``info`` write may have committed later than anything we know.

Inputs: ``write(c)`` gives ``(key, element)`` pairs a write operation added; ``read(c)`` gives
``(key, elements seen)`` pairs of a read operation (an element set per key); ``level(c)`` the
consistency level the read ran at (the write's level matters for AFTER: pass the write level
by making ``level`` look at the read's value if the workload records it there).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from ..history import Completed, Op, complete
from .result import Anomaly, CheckResult, result

STRICT_LEVELS = frozenset({"BEFORE", "AFTER", "BEFORE_AND_AFTER"})


def check_stale_reads(
    ops: Sequence[Op],
    *,
    writes: Callable[[Completed], Iterable[tuple[Any, Any]]],
    reads: Callable[[Completed], Iterable[tuple[Any, Collection[Any]]]],
    level: Callable[[Completed], str],
) -> CheckResult:
    """Kinds: ``stale-read`` (strict level: a read missed a write acknowledged before it
    started), ``stale-read-eventual`` (the same at a weaker level; allowed)."""
    done = complete(ops)
    # Per key, the acknowledged writes sorted by ack time.
    acked: dict[Any, list[tuple[int, Any, int]]] = {}
    for c in done:
        if c.type != "ok":
            continue
        for key, element in writes(c):
            assert c.complete_ns is not None
            acked.setdefault(key, []).append((c.complete_ns, element, c.invoke.index))
    for lst in acked.values():
        lst.sort(key=lambda t: t[0])
    times = {k: [t[0] for t in v] for k, v in acked.items()}
    found: list[Anomaly] = []
    checked = 0
    for c in done:
        if c.type != "ok":
            continue
        lvl = level(c).upper()
        for key, seen in reads(c):
            checked += 1
            before = acked.get(key, [])
            n = bisect.bisect_left(times.get(key, []), c.invoke_ns)
            missing = [(e, w) for _, e, w in before[:n] if e not in seen]
            if not missing:
                continue
            kind = "stale-read" if lvl in STRICT_LEVELS else "stale-read-eventual"
            found.append(Anomaly(kind, (c.invoke.index, *(w for _, w in missing[:5])),
                                 f"read of {key!r} at {lvl} missed {len(missing)} acknowledged write(s)",
                                 {"key": key, "missing": [e for e, _ in missing[:20]], "level": lvl}))
    return result("stale-reads", found, allowed={"stale-read-eventual"}, stats={"reads_checked": checked})
