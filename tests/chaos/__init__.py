"""Chaos testing of grproxy: a history recorder, checkers over histories, a fault-injecting
TCP relay, and a runner that drives a real 3-member group through the relays under faults.

Layout:
- history.py        operations as invoke / ok / fail / info, JSON lines on disk;
- checkers/         pure functions over a history (bank, list-append after Elle, lost writes,
                    stale reads, convergence), each returning anomalies by kind;
- netfault.py       asyncio relay + partition controller (pass, drop, delay, reset, one-way);
- cluster.py        launches backends, member processes and a router, every link via a relay;
- workloads.py      bank and list-append clients over PyMySQL, recording histories;
- runner.py         seeded schedules of faults, the matrix of runs (`make chaos`);
- report.py         summary.md (tables) and a plot per run (SVG, written by hand);
- fuzz.py           fuzzing of the front ends and the group port (fuzz_inputs.py: the inputs).
"""
