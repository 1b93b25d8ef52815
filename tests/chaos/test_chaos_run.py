"""The chaos harness end to end, short: one fault-free run of ~20 s on a real 3-member group
with every link through the relays. Every checker must pass and the backends must converge.
(`make chaos` runs the seeded fault schedules.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.runner import run_once

pytestmark = pytest.mark.e2e


def test_fault_free_run_is_clean(tmp_path: Path) -> None:
    r = run_once(seed=20261205, run=0, kinds=(), duration_s=20, out=tmp_path / "run")
    details = {res.checker: res.to_dict() for res in r.results if not res.valid}
    assert r.valid, details
    assert r.converged_s is not None
    # Both workloads made progress (a liveness check, not a speed one).
    checked = {res.checker: res.stats for res in r.results}
    assert checked["bank"]["reads"] > 0
    assert checked["list-append"]["ok"] > 0
    assert r.ops["info"] == 0  # nothing was faulted: every answer arrived
