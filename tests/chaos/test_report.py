"""The chaos matrix, its schedules and its report, without a cluster: what one seed decides, and
what a person reads (markdown table, SVG plot) from a run's results."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.chaos.checkers.result import Anomaly, result
from tests.chaos.history import Recorder
from tests.chaos.report import buckets, plot_svg, summary_markdown, write_plot
from tests.chaos.runner import (
    ALL_FAULTS,
    FAULT_CLASSES,
    MATRIX,
    Fault,
    Interval,
    RunResult,
    matrix,
    schedule,
)

MEMBERS = ["m1", "m2", "m3"]
SVG = "{http://www.w3.org/2000/svg}"


def test_one_seed_gives_the_whole_matrix_and_the_same_one_again() -> None:
    specs = matrix(42)
    assert specs == matrix(42)
    assert specs != matrix(43)
    faulty = [s for s in specs if s.kinds]
    assert len(faulty) >= 20 and len(specs) - len(faulty) >= 10
    assert [s.run for s in specs] == list(range(len(specs)))
    assert all(60 <= s.duration_s <= 120 for s in specs)
    assert all(len(s.levels) + 2 <= 6 for s in specs)  # with the 2 bank clients: <= 6 clients
    # Every fault kind is in some run; every class runs in both modes when it has two runs.
    assert {k for s in specs for k in s.kinds} == set(ALL_FAULTS)
    for klass, count in MATRIX:
        modes = [s.mode for s in specs if s.klass == klass]
        assert len(modes) == count
        if count >= 2:
            assert set(modes) == {"single-primary", "multi-primary"}, klass
    # Every strict level is exercised, next to EVENTUAL clients.
    levels = {lvl for s in specs for lvl in s.levels}
    assert {"BEFORE", "AFTER", "BEFORE_AND_AFTER", "EVENTUAL"} <= levels
    assert all(s.levels.count("EVENTUAL") >= 1 for s in specs)


def test_schedules_of_the_disaster_classes() -> None:
    for seed in range(20):
        crash = schedule(random.Random(f"{seed}:0"), FAULT_CLASSES["crash"], 90, MEMBERS)
        assert crash, seed
        for f in crash:
            # every member process, every backend and the router, each once, within a second
            assert sorted(f.targets) == sorted([f"{w}:{m}" for m in MEMBERS for w in ("member", "backend")]
                                               + ["router"])
            assert len(f.gaps_ms) == len(f.targets) - 1 and sum(f.gaps_ms) < 1000
        force = schedule(random.Random(f"{seed}:1"), FAULT_CLASSES["force-members"], 90, MEMBERS)
        assert force
        for f in force:
            assert sorted(f.targets) == MEMBERS  # survivor first, then the lost majority
        give_up = schedule(random.Random(f"{seed}:2"), FAULT_CLASSES["give-up"], 90, MEMBERS)
        assert give_up and all(0 < f.timeout_ms < 1000 for f in give_up)
        # Consecutive faults never overlap.
        for s in (crash, force, give_up):
            assert all(a.heal_at_s < b.at_s for a, b in zip(s, s[1:], strict=False))


def _run(tmp_path: Path, *, lost: int = 0, klass: str = "kills") -> RunResult:
    d = tmp_path / f"run-{klass}"
    d.mkdir()
    rec = Recorder(d / "h.jsonl", clock_ns=iter(range(0, 10**12, 10**8)).__next__)
    for i in range(30):
        op = rec.invoke(i % 3, "txn", [["append", 1, i]])
        if i % 5:
            rec.ok(op)
        else:
            rec.info(op, "timeout")
    ops = rec.ops()
    results = [result("list-append", []),
               result("lost-writes@m1", [Anomaly("lost", (1,), "element 1 lost")] * lost),
               result("stale-reads", [Anomaly("stale-read-eventual", (2,), "x")],
                      allowed={"stale-read-eventual"},
                      stats={"by_level": {"BEFORE": {"reads": 7, "stale": 0, "stale_allowed": 0},
                                          "EVENTUAL": {"reads": 9, "stale": 0, "stale_allowed": 1}}}),
               result("convergence", [])]
    faults = [] if klass == "none" else [Fault(0.5, 2.0, "kill-member", ("m2",))]
    r = RunResult(0, "9:0", [f.describe() for f in faults], [f.kind for f in faults], {"ok": 24, "fail": 0, "info": 6},
                  results, 1.5, [], str(d), klass=klass, duration_s=3,
                  intervals=[Interval("kill-member", faults[0].describe(), faults[0].label(), 0.5, 2.0, 2.6)]
                  if faults else [], workload_end_s=3.0, healed_s=3.1)
    write_plot(r, ops, 0, d / "plot.svg")
    return r


def test_summary_counts_what_the_checkers_found(tmp_path: Path) -> None:
    runs = [_run(tmp_path), _run(tmp_path, lost=2, klass="none")]
    text = summary_markdown(runs, 9, "python -m tests.chaos.runner --matrix --seed 9", tmp_path)
    assert "| runs with faults / without | 1 / 1 |" in text
    assert "| lost acknowledged writes | 2 |" in text
    assert "| identical backends (all ONLINE, same checksums and positions) | 2/2 |" in text
    assert "lost-writes:lost 2" in text
    assert "| runs with any violation | 1 |" in text
    assert "[svg](run-kills/plot.svg)" in text and "[svg](run-none/plot.svg)" in text


def test_plot_shows_operations_and_fault_bands(tmp_path: Path) -> None:
    r = _run(tmp_path)
    root = ET.parse(Path(r.directory) / "plot.svg").getroot()
    lines = root.findall(f"{SVG}polyline")
    assert {ln.get("stroke") for ln in lines} == {"#2e7d32", "#ef6c00", "#6a1b9a"}  # ok, fail, info
    bands = [e for e in root.findall(f"{SVG}rect") if e.find(f"{SVG}title") is not None]
    assert len(bands) == 2  # the fault, then its heal
    assert "kill-member" in (bands[0].find(f"{SVG}title").text or "")


def test_buckets_count_completions_per_second() -> None:
    rec = Recorder(clock_ns=iter([0, 10**8, 2 * 10**8, 15 * 10**8, 16 * 10**8, 17 * 10**8]).__next__)
    for kind in ("ok", "fail", "info"):
        op = rec.invoke(0, "read", None)
        getattr(rec, kind)(op, *(("err",) if kind != "ok" else ()))
    b = buckets(rec.ops(), 0)
    assert b == {"ok": [1, 0], "fail": [0, 1], "info": [0, 1]}
    svg = plot_svg("t", b, [], end_s=2)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
