"""Convergence: once faults are healed and the group is quiet, every member's backend holds the
same data at the same position.

Inputs per member: checksums of every user table (``CHECKSUM TABLE``; a table missing on a
member shows as absent) and the applied position (whatever the members report: a seq, a GTID
set text). Kinds: ``checksum-mismatch`` (a table differs), ``missing-table`` (a table absent on
some member), ``position-mismatch``, ``member-unreachable`` (no answer from a member: it cannot
be shown to have converged).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .result import Anomaly, CheckResult, result


@dataclasses.dataclass(frozen=True, slots=True)
class MemberState:
    """What one member reported; ``error`` when it could not be asked."""

    checksums: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    position: Any = None
    error: str | None = None


def check_convergence(states: Mapping[str, MemberState]) -> CheckResult:
    found: list[Anomaly] = []
    live = {m: s for m, s in states.items() if s.error is None}
    for m, s in sorted(states.items()):
        if s.error is not None:
            found.append(Anomaly("member-unreachable", (), f"{m}: {s.error}", {"member": m}))
    tables = sorted({t for s in live.values() for t in s.checksums})
    for t in tables:
        values = {m: s.checksums.get(t) for m, s in sorted(live.items())}
        absent = [m for m, s in live.items() if t not in s.checksums]
        if absent:
            found.append(Anomaly("missing-table", (), f"table {t} absent on {sorted(absent)}",
                                 {"table": t, "values": values}))
        elif len({repr(v) for v in values.values()}) > 1:
            found.append(Anomaly("checksum-mismatch", (), f"table {t} differs: {values}",
                                 {"table": t, "values": values}))
    positions = {m: s.position for m, s in sorted(live.items())}
    if len({repr(p) for p in positions.values()}) > 1:
        found.append(Anomaly("position-mismatch", (), f"applied positions differ: {positions}",
                             {"positions": positions}))
    return result("convergence", found, stats={"members": len(states), "tables": len(tables)})
