"""The xcom core under the deterministic simulator (DESIGN §12, STYLE 18-19).

- 2,000 seeds (four chunks of 500) with every fault on must show no violation;
- a few hundred seeds chosen fresh for each run (tests/conftest.py: the first seed is random,
  printed in the report header and in a failure, SIM_START_SEED=<n> reruns them);
- each scenario (stale expel, majority loss + force_members, whole-group restart, a second
  bootstrap, one-way links) on seeds that draw it every time: no violation, and the scenario
  really happened (SeedResult.events);
- seeds that once failed (REGRESSION_SEEDS) must pass, each with the reason it failed;
- a broken core (a taker that ignores values reported by promises, Bug #28966455) must be
  caught within 200 seeds, by a safety checker, and its seed must replay the same failure;
- a seed replays exactly, whatever PYTHONHASHSEED;
- the CLI's contract: exit status, the replay command, the last line.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
import sys
from pathlib import Path

import pytest

from replication.gcs.sim.runner import FAULTS, SimOptions, replay_command, run_seed, run_seeds

ROOT = Path(__file__).resolve().parents[2]
SEEDS = 2000
CHUNK = 500
JOBS = min(os.cpu_count() or 1, 4)  # worker processes for the seed ranges (results do not depend on it)
SAFETY_KINDS = {"consensus", "agreement", "total-order", "integrity", "safe-delivery", "view-synchrony", "invariant"}


# Seeds that found a bug, with the faults they ran under and the bug. The faults matter: a
# seed draws its schedule from them (OLD_FAULTS is the default before the scenarios of issue
# [E] were added; it draws the same schedules as then).
OLD_FAULTS = ("loss", "dup", "reorder", "partition", "isolate", "crash", "leave", "clock")
STALE = ("stale", "crash", "partition")
REGRESSION_SEEDS: dict[int, tuple[tuple[str, ...], str]] = {
    33803: (OLD_FAULTS, "after a clock jump a dead member looked freshly heard from: an expel of a live member "
            "left a configuration without a live majority (no restarted incarnation could join)"),
    104510295: (OLD_FAULTS, "two members expelled together lagged behind the slots the others had already "
                "forgotten; each waited for the other to say 'forgotten' and neither ever gave up"),
    57: (FAULTS, "a laggard that no member counts as a peer gets no heartbeats: its peers' progress, "
         "learned only from their Forgotten, was not taken into account"),
    458: (FAULTS, "a forced configuration started at the slot where the one in effect had started: it "
          "replaced it without a switch, so its view was never installed"),
    942: (FAULTS, "a joiner not listed in a force applied the forced branch's decisions under its own "
          "configuration and forked off"),
    980984755: (FAULTS, "a new group bootstrapped after the old one died; a member of the old one, still "
                "catching up, took the new group's decisions for its slots: slot decided twice"),
    1119: (FAULTS, "a LEAVE decided below a forced start was dropped: the member stayed 'leaving' in "
           "the forced group for good and refused every join"),
    141: (STALE, "a joiner welcomed before a force waited forever for decisions of the forced epoch"),
    268240069: (FAULTS, "a listed member learned a configuration change decided below the forced start "
                 "only after the force, dropped it and proposed in a slot it did not own"),
    268238274: (FAULTS, "a member the group was already removing forced itself: it executed the force's "
                 "gaps (declaring lost a decision the group had delivered), then left"),
    770: (FAULTS, "a forced survivor waited for slots that only the dead held (the other survivor, a "
          "joiner, never held the slots before its welcome)"),
    566445872: (FAULTS, "the force declared a joiner's pre-welcome slots empty: the other survivor ran "
                "other configurations there and two members owned slot 26"),
    268338234: (("oneway", "crash", "loss"), "an expelled member left at the switch holding the only copy "
                "of the decisions before it; its peers could never reach the switch"),
    268338500: (("majority-loss", "loss", "oneway"), "(checker) a force forks the history at its first "
                "gap: a survivor delivered a message one slot after the dead had"),
    980987962: (FAULTS, "single leader: a leaving member, first in line after the dead leader, revoked its "
                "slots to no-ops forever and never proposed its LEAVE; the others' expel never got a slot"),
    566542720: (("restart-all", "crash", "loss"), "(runner) the join of an incarnation that had given up "
                "left a view without a live majority; nobody called the DBA"),
}

def _failures(seeds: range, options: SimOptions, stop_after: int = 5) -> list[str]:
    found = []
    for seed, result in zip(seeds, run_seeds(list(seeds), options, JOBS)):
        if result.violation is not None:
            found.append(
                f"seed {seed}: {result.violation.kind}: {result.violation.detail}\n"
                f"  replay: {replay_command(seed, options)}"
            )
            if len(found) >= stop_after:
                break
    return found


@pytest.mark.parametrize("start", range(0, SEEDS, CHUNK), ids=lambda s: f"seeds{s}-{s + CHUNK - 1}")
def test_seeds_without_violation(start: int) -> None:
    failures = _failures(range(start, start + CHUNK), SimOptions())
    assert not failures, "\n".join(failures)


def test_fresh_seeds_without_violation(sim_fresh_seeds: range) -> None:
    failures = _failures(sim_fresh_seeds, SimOptions())
    assert not failures, (
        f"fresh seeds {sim_fresh_seeds.start}..{sim_fresh_seeds.stop - 1} "
        f"(SIM_START_SEED={sim_fresh_seeds.start} reruns them):\n" + "\n".join(failures)
    )


# scenario -> (faults of a focused run, events each must have produced over SCENARIO_SEEDS)
SCENARIOS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "stale-expel": (("stale", "crash", "partition"), ("stale-crash", "no-live-majority", "force")),
    "majority-loss": (("majority-loss", "loss", "oneway"), ("majority-loss", "no-live-majority", "force")),
    "restart-all": (("restart-all", "crash", "loss"), ("restart-all", "bootstrap-again")),
    "rebootstrap": (("rebootstrap", "loss", "clock"), ("rebootstrap", "group-exists")),
    "oneway": (("oneway", "crash", "loss"), ("oneway",)),
}
SCENARIO_SEEDS = 60


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_seeds(name: str) -> None:
    faults, expected = SCENARIOS[name]
    options = SimOptions(faults=faults)
    events: Counter[str] = Counter()
    failures = []
    for seed in range(SCENARIO_SEEDS):
        result = run_seed(seed, options)
        events.update(result.events)
        if result.violation is not None:
            failures.append(f"seed {seed}: {result.violation}\n  replay: {replay_command(seed, options)}")
    assert not failures, "\n".join(failures[:5])
    assert all(events[e] for e in expected), f"{name}: scenario not reached: {dict(events)}"
    if name == "rebootstrap":
        # Told to bootstrap only while the group is reachable: every one of them is refused.
        assert events["group-exists"] == events["rebootstrap"], dict(events)


@pytest.mark.parametrize("seed", sorted(REGRESSION_SEEDS))
def test_regression_seeds(seed: int) -> None:
    faults, why = REGRESSION_SEEDS[seed]
    options = SimOptions(faults=faults)
    result = run_seed(seed, options)
    assert result.violation is None, (
        f"{result.violation}\n  once failed because: {why}\n  replay: {replay_command(seed, options)}"
    )


def test_the_mutant_is_caught_within_200_seeds() -> None:
    options = SimOptions(mutant=True)
    for seed in range(200):
        result = run_seed(seed, options)
        if result.violation is None:
            continue
        assert result.violation.kind in SAFETY_KINDS, result.violation
        again = run_seed(seed, options)
        assert again.violation is not None and str(again.violation) == str(result.violation)
        return
    pytest.fail("the simulator did not catch a taker that ignores accepted values in 200 seeds")


def test_a_seed_replays_exactly() -> None:
    first: list[str] = []
    second: list[str] = []
    a = run_seed(123, SimOptions(), first.append)
    b = run_seed(123, SimOptions(), second.append)
    assert first and first == second
    assert (a.deliveries, a.messages, a.sim_ms) == (b.deliveries, b.messages, b.sim_ms)


def _cli(*args: str, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    return subprocess.run(
        [sys.executable, "-m", "replication.gcs.sim", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _without_timing(out: str) -> str:
    return re.sub(r", [0-9.]+ s$", "", out, flags=re.M)


def test_replay_does_not_depend_on_the_hash_seed() -> None:
    runs = [_cli("--seeds", "3", "--start-seed", "40", hash_seed=h) for h in ("1", "2")]
    assert runs[0].returncode == runs[1].returncode == 0, runs[0].stdout + runs[0].stderr
    assert _without_timing(runs[0].stdout) == _without_timing(runs[1].stdout)


def test_cli_success_and_its_last_line() -> None:
    proc = _cli("--seeds", "2", "--start-seed", "7")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "seeds: 2 run, 0 violations"


def test_cli_prints_a_replay_command_that_reproduces_the_failure() -> None:
    proc = _cli("--seeds", "200", "--mutant", "--max-failures", "1")
    assert proc.returncode == 1, proc.stdout
    lines = proc.stdout.splitlines()
    violation = next(line for line in lines if "VIOLATION" in line)
    replay = next(line for line in lines if line.strip().startswith("replay:")).split("replay:", 1)[1].split()
    assert replay[:3] == ["python", "-m", "replication.gcs.sim"] and "--mutant" in replay
    assert re.fullmatch(r"seeds: \d+ run, 1 violations", lines[-1])
    again = _cli(*replay[3:])
    assert again.returncode == 1
    assert violation in again.stdout.splitlines()
    assert again.stdout.splitlines()[-1] == "seeds: 1 run, 1 violations"


def test_cli_rejects_unknown_faults() -> None:
    proc = _cli("--seeds", "1", "--faults", "meteor")
    assert proc.returncode == 2 and "unknown faults" in proc.stderr
