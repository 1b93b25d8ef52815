"""What every checker returns: anomalies by kind, each naming the operations that show it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Anomaly:
    """One observed anomaly. ``ops`` are history indices (of invocations) of the operations
    involved; ``detail`` says what is wrong in words; ``data`` holds the evidence (the reads,
    the cycle …) as JSON-shaped values."""

    kind: str
    ops: tuple[int, ...]
    detail: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "ops": list(self.ops), "detail": self.detail, "data": self.data}


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    """A checker's verdict.

    ``anomalies`` maps a kind to what was found of it. ``allowed`` lists kinds that are reported
    but are no violation of what grproxy promises (G2 under GR's isolation, stale reads under
    EVENTUAL). ``valid`` is True iff no anomaly of any other kind was found. ``stats`` holds
    counts that help read the result (operations checked …).
    """

    checker: str
    anomalies: dict[str, tuple[Anomaly, ...]]
    allowed: frozenset[str] = frozenset()
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.violations

    @property
    def violations(self) -> dict[str, tuple[Anomaly, ...]]:
        return {k: v for k, v in self.anomalies.items() if v and k not in self.allowed}

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in sorted(self.anomalies.items()) if v}

    def kinds(self) -> set[str]:
        return {k for k, v in self.anomalies.items() if v}

    def to_dict(self, examples_max: int = 5) -> dict[str, Any]:
        return {
            "checker": self.checker,
            "valid": self.valid,
            "counts": self.counts(),
            "allowed": sorted(self.allowed),
            "stats": self.stats,
            "examples": {k: [a.to_dict() for a in v[:examples_max]] for k, v in sorted(self.anomalies.items()) if v},
        }


def result(checker: str, found: Iterable[Anomaly], *, allowed: Iterable[str] = (),
           stats: dict[str, Any] | None = None) -> CheckResult:
    by_kind: dict[str, list[Anomaly]] = {}
    for a in found:
        by_kind.setdefault(a.kind, []).append(a)
    return CheckResult(checker, {k: tuple(v) for k, v in by_kind.items()}, frozenset(allowed), stats or {})
