"""python -m replication.gcs.sim --seeds N [--start-seed S] [--members M] [--faults ...]

Runs the xcom core under the deterministic simulator for seeds S .. S+N-1. On a violation it
prints the seed, what broke and the exact command that replays it; the exit status is 1 if any
seed failed. The last line is always ``seeds: N run, V violations``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator

from .runner import FAULTS, SeedResult, SimOptions, replay_command, run_seed, run_seeds


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m replication.gcs.sim", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    p.add_argument("--start-seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--members", type=int, default=None, help="group size (default: 3..5, chosen per seed)")
    p.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated subset of {','.join(FAULTS)}, or 'none' (default: all)",
    )
    p.add_argument("--mutant", action="store_true", help="takeovers ignore accepted values (must fail)")
    p.add_argument("--no-codec", action="store_true", help="do not pass messages through the wire codec")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--trace", action="store_true", help="print the run's events (use with --seeds 1)")
    p.add_argument("--max-failures", type=int, default=10, help="stop after this many failing seeds")
    return p.parse_args(argv)


def _results(seeds: list[int], options: SimOptions, jobs: int, trace: bool) -> Iterator[SeedResult]:
    if jobs <= 1:
        for seed in seeds:
            yield run_seed(seed, options, print if trace else None)
        return
    yield from run_seeds(seeds, options, jobs)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    faults = () if args.faults.strip() in ("", "none") else tuple(f.strip() for f in args.faults.split(","))
    try:
        options = SimOptions(members=args.members, faults=faults, mutant=args.mutant, codec=not args.no_codec)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seeds = list(range(args.start_seed, args.start_seed + args.seeds))
    started = time.monotonic()
    run = failed = 0
    deliveries = messages = 0
    for result in _results(seeds, options, args.jobs, args.trace):
        run += 1
        deliveries += result.deliveries
        messages += result.messages
        if result.violation is not None:
            failed += 1
            print(f"seed {result.seed}: VIOLATION {result.violation.kind}: {result.violation.detail}")
            print(f"  replay: {replay_command(result.seed, options)}")
            if failed >= args.max_failures:
                print(f"stopping after {failed} failing seeds")
                break
    elapsed = time.monotonic() - started
    print(f"{deliveries} deliveries, {messages} messages, {elapsed:.1f} s")
    print(f"seeds: {run} run, {failed} violations")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
