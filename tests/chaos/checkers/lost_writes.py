"""Lost writes: every acknowledged write is in the final state, and no failed one is.

Each write adds one unique *element* (a row inserted, a value appended). After the run, the
final state is read (from every member once they converged). Then:

- ``ok`` write missing from the final state → ``lost`` (the group acknowledged a commit and
  then forgot it);
- ``fail`` write present → ``failed-present`` (a client was told "not committed" but it was);
- element present that no operation ever wrote → ``unknown-element``;
- ``info`` writes (answer lost) may be either way; they are counted in the stats only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from ..history import Completed, Op, complete
from .result import Anomaly, CheckResult, result

Element = Any


def check_lost_writes(
    ops: Sequence[Op],
    final: Collection[Element],
    *,
    elements: Callable[[Completed], Iterable[Element]],
) -> CheckResult:
    """``elements(c)`` gives the elements a write operation would add ([] for non-writes);
    elements must be hashable and unique over the history. ``final`` is the set read at the end.
    """
    final_set = set(final)
    written: dict[Element, Completed] = {}
    found: list[Anomaly] = []
    stats = {"ok": 0, "fail": 0, "info": 0, "info_present": 0, "info_absent": 0, "final": len(final_set)}
    for c in complete(ops):
        for e in elements(c):
            if e in written:
                raise ValueError(f"element {e!r} written twice (ops {written[e].invoke.index}, {c.invoke.index})")
            written[e] = c
            stats[c.type] += 1
            i = c.invoke.index
            if c.type == "ok" and e not in final_set:
                found.append(Anomaly("lost", (i,), f"acknowledged write of {e!r} is not in the final state",
                                     {"element": e}))
            elif c.type == "fail" and e in final_set:
                found.append(Anomaly("failed-present", (i,), f"failed write of {e!r} is in the final state",
                                     {"element": e, "error": c.completion.error if c.completion else None}))
            elif c.type == "info":
                stats["info_present" if e in final_set else "info_absent"] += 1
    for e in final_set - set(written):
        found.append(Anomaly("unknown-element", (), f"{e!r} is in the final state but was never written",
                             {"element": e}))
    return result("lost-writes", found, stats=stats)
