"""Scripted scenarios of the xcom core, compared with their expected transcripts.

Each file in scenarios/ is a script (see replication/gcs/sim/script.py) with the expected
output of every command indented below it, as etcd-io/raft's data-driven tests. After an
intended behaviour change, regenerate with ``GCS_SCENARIOS_REWRITE=1 pytest <this file>`` and
review the diff: the files are the specification by example.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replication.gcs.sim.script import run_script

SCENARIO_DIR = Path(__file__).parent / "scenarios"
SCENARIOS = sorted(SCENARIO_DIR.glob("*.txt"))
REWRITE = os.environ.get("GCS_SCENARIOS_REWRITE") == "1"


def test_the_required_scenarios_exist() -> None:
    names = {p.stem for p in SCENARIOS}
    required = {
        "bug_28966455_takeover_adopts",
        "bug_28966455_mutant_caught",
        "expel_majority_counting",
        "force_refused_with_majority",
        "force_after_two_die",
    }
    assert required <= names, f"missing scenarios: {sorted(required - names)}"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    expected = path.read_text()
    got = run_script(expected)
    if REWRITE:
        path.write_text(got)
    assert got == expected, f"transcript of {path.name} changed (GCS_SCENARIOS_REWRITE=1 to accept)"


def test_the_mutant_scenario_reports_a_violation_and_the_fixed_one_does_not() -> None:
    mutant = (SCENARIO_DIR / "bug_28966455_mutant_caught.txt").read_text()
    fixed = (SCENARIO_DIR / "bug_28966455_takeover_adopts.txt").read_text()
    assert "VIOLATION consensus" in run_script(mutant)
    assert "VIOLATION" not in run_script(fixed)
