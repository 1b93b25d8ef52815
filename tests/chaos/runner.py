"""Seeded chaos runs: a real group through relays, workloads, a fault schedule, checkers.

Usage::

    python -m tests.chaos.runner [--seed N] [--runs 3] [--duration 40] [--faults a,b,…] [--out DIR]

Each run starts a fresh 3-member group (tests/chaos/cluster.py), creates the schemas through the
router, and runs the bank workload (2 clients) and the list-append workload (4 clients: BEFORE,
EVENTUAL, AFTER, EVENTUAL) for ``--duration`` seconds while a nemesis applies faults from a
schedule drawn from the seed: network faults through the relays (isolate a member, majority /
minority split, bridge, one-way, delay, reset) and process faults (SIGSTOP/SIGCONT of a member
process or a backend, SIGKILL of either followed by a restart). Then everything is healed, the
group must become whole again and converge (a liveness bound, not a speed assertion), the final
state is read from every backend, and the checkers run:

- bank (every read sums to the total, no negative balance),
- list-append (Elle-style cycles and friends; G2-item allowed),
- lost writes (per ONLINE member), stale reads (reads at BEFORE, writes at AFTER),
  convergence (checksums and applied positions of every backend).

The seed fixes the schedule (which fault, when, on whom) and every client's requests; what the
system does concurrently is real and not replayed exactly. A run's directory keeps the
histories (JSON lines), every process's log, the schedule and the verdict; the summary table is
written to ``summary.md`` (and ``summary.json``) in ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql

from .checkers import (
    MemberState,
    check_bank,
    check_convergence,
    check_list_append,
    check_lost_writes,
    check_stale_reads,
)
from .checkers.result import Anomaly, CheckResult, result
from .cluster import Cluster, connect
from .history import Completed, Recorder
from .netfault import RESET, Rule
from .workloads import Bank, Client, ListAppend, parse_list

NETWORK_FAULTS = ("isolate", "split", "bridge", "one-way", "delay", "reset")
PROCESS_FAULTS = ("stop-member", "stop-backend", "kill-member", "kill-backend")
ALL_FAULTS = NETWORK_FAULTS + PROCESS_FAULTS
LA_LEVELS = ("BEFORE", "EVENTUAL", "AFTER", "EVENTUAL")
BANK_CLIENTS = 2
CONVERGENCE_TIMEOUT_S = 120.0
USER_TABLES = ("bank.accounts", "la.lists")


@dataclasses.dataclass(frozen=True)
class Fault:
    at_s: float  # since the workload started
    heal_at_s: float
    kind: str
    targets: tuple[str, ...]
    delay_ms: int = 0

    def describe(self) -> str:
        extra = f" {self.delay_ms}ms" if self.kind == "delay" else ""
        return f"{self.at_s:5.1f}s-{self.heal_at_s:5.1f}s {self.kind}{extra} {' '.join(self.targets)}"


def schedule(rng: random.Random, kinds: tuple[str, ...], duration_s: float, members: list[str]) -> list[Fault]:
    """Faults one after another: each lasts 4-16 s (long enough, at times, for the failure
    detector to suspect and expel: 5 s of silence + member_expel_timeout 5 s), with 2-5 s of
    calm between."""
    out: list[Fault] = []
    if not kinds:
        return out
    t = rng.uniform(2, 4)
    while t + 3 < duration_s - 2:
        kind = rng.choice(kinds)
        length = min(rng.uniform(4, 16), duration_s - 2 - t)
        shuffled = rng.sample(members, len(members))
        delay_ms = rng.choice((50, 100, 300)) if kind == "delay" else 0
        targets: tuple[str, ...]
        if kind in ("one-way",):
            targets = (shuffled[0], shuffled[1])
        elif kind == "bridge":
            targets = tuple(shuffled[:3])  # bridge, one side, other side
        elif kind == "delay":
            targets = ()
        else:
            targets = (shuffled[0],)
        out.append(Fault(round(t, 1), round(t + length, 1), kind, targets, delay_ms))
        t += length + rng.uniform(2, 5)
    return out


class Nemesis:
    """Applies a schedule to a cluster, then heals everything.

    Runs in the main thread on purpose: processes are started with PR_SET_PDEATHSIG, which
    kills a child when the *thread* that started it exits, so a member or backend restarted
    from a short-lived thread would die with it.
    """

    def __init__(self, cluster: Cluster, faults: list[Fault], members: list[str]) -> None:
        self.c = cluster
        self.faults = faults
        self.members = members
        self.applied: list[str] = []
        self.errors: list[str] = []

    def run(self, duration_s: float) -> None:
        """Apply the schedule; returns ``duration_s`` after it was called."""
        t0 = time.monotonic()

        def sleep_until(at_s: float) -> None:
            time.sleep(max(0.0, t0 + min(at_s, duration_s) - time.monotonic()))

        for f in self.faults:
            if f.at_s >= duration_s:
                break
            sleep_until(f.at_s)
            try:
                self.apply(f)
                self.applied.append(f.describe())
                self.c.note(f"fault {f.describe()}")
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                self.errors.append(f"{f.describe()}: {exc!r}")
            sleep_until(f.heal_at_s)
            try:
                self.heal(f)
                self.c.note(f"heal {f.kind}")
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"heal {f.describe()}: {exc!r}")
        sleep_until(duration_s)

    def apply(self, f: Fault) -> None:
        c, net = self.c, self.c.net
        members = self.members
        match f.kind:
            case "isolate":
                c.on_loop(lambda: net.isolate(f.targets[0]))
            case "reset":
                c.on_loop(lambda: net.isolate(f.targets[0], rule=RESET))
            case "split":
                minority = [f.targets[0]]
                majority = [m for m in members if m not in minority]
                c.on_loop(lambda: net.partition(majority, minority))
            case "bridge":
                b, x, y = f.targets
                c.on_loop(lambda: net.bridge(b, [b, x], [b, y]))
            case "one-way":
                c.on_loop(lambda: net.one_way(f.targets[0], f.targets[1]))
            case "delay":
                c.on_loop(lambda: net.delay_all(f.delay_ms))
            case "stop-member":
                c.signal_member(f.targets[0], signal.SIGSTOP)
            case "stop-backend":
                c.signal_backend(f.targets[0], signal.SIGSTOP)
            case "kill-member":
                c.signal_member(f.targets[0], signal.SIGKILL)
            case "kill-backend":
                c.signal_backend(f.targets[0], signal.SIGKILL)
            case _:
                raise ValueError(f"unknown fault {f.kind}")

    def heal(self, f: Fault) -> None:
        c = self.c
        match f.kind:
            case "stop-member":
                c.signal_member(f.targets[0], signal.SIGCONT)
            case "stop-backend":
                c.signal_backend(f.targets[0], signal.SIGCONT)
            case "kill-member":
                c.restart_member(f.targets[0])
            case "kill-backend":
                c.restart_backend(f.targets[0])
            case _:
                c.on_loop(c.net.heal)

    def heal_all(self) -> None:
        c = self.c
        c.on_loop(c.net.heal)
        for m in c.members:
            if m.stopped:
                c.signal_member(m.name, signal.SIGCONT)
            if m.backend.alive():
                c.signal_backend(m.name, signal.SIGCONT)
            else:
                c.restart_backend(m.name)
            if not m.alive():
                c.restart_member(m.name)
        c.note("healed all")


def run_clients(cluster: Cluster, seed_text: str, duration_s: float, out: Path,
                nemesis: Nemesis | None) -> tuple[Recorder, Recorder, Bank, ListAppend, dict[str, int]]:
    bank, la = Bank(), ListAppend()
    bank_rec, la_rec = Recorder(out / "bank.jsonl"), Recorder(out / "list-append.jsonl")
    clients: list[tuple[Client, Callable[[Client], Any]]] = []
    for i in range(BANK_CLIENTS):
        clients.append((Client(i, BANK_CLIENTS, cluster.router_port, bank_rec, _seed_int(f"{seed_text}:bank:{i}")),
                        bank.step))
    for i, level in enumerate(LA_LEVELS):
        clients.append((Client(i, len(LA_LEVELS), cluster.router_port, la_rec,
                               _seed_int(f"{seed_text}:la:{i}"), level=level), la.step))
    stop = threading.Event()

    def loop(client: Client, step: Callable[[Client], Any]) -> None:
        while not stop.is_set():
            op = step(client)
            if op.type != "ok":
                stop.wait(0.05)  # do not spin on a group that refuses everything
        client.close()

    threads = [threading.Thread(target=loop, args=cs, daemon=True) for cs in clients]
    for t in threads:
        t.start()
    if nemesis is not None:
        nemesis.run(duration_s)
    else:
        stop.wait(duration_s)
    stop.set()
    for t in threads:
        t.join(60)
    bank_rec.close()
    la_rec.close()
    counts = {"ok": 0, "fail": 0, "info": 0}
    for c, _ in clients:
        for k, v in c.counts.items():
            counts[k] += v
    return bank_rec, la_rec, bank, la, counts


def _seed_int(text: str) -> int:
    return random.Random(text).getrandbits(64)


@dataclasses.dataclass
class MemberFinal:
    state: MemberState
    lists: dict[int, list[int]] | None = None
    balances: dict[str, int] | None = None


def read_final(cluster: Cluster) -> dict[str, MemberFinal]:
    out: dict[str, MemberFinal] = {}
    for m in cluster.members:
        b = m.backend
        try:
            conn = connect(b.port, user=b.user, password=b.password, timeout_s=10)
        except pymysql.MySQLError as exc:
            out[m.name] = MemberFinal(MemberState(error=str(exc)))
            continue
        try:
            with conn.cursor() as cur:
                sums = {}
                for t in USER_TABLES:
                    cur.execute(f"CHECKSUM TABLE {t}")
                    (_, value), = cur.fetchall()
                    if value is not None:
                        sums[t] = int(value)
                cur.execute("SELECT lo, hi FROM grproxy.applied_ranges")
                seqs: set[tuple[int, int]] = {(int(lo), int(hi)) for lo, hi in cur.fetchall()}
                cur.execute("SELECT seq FROM grproxy.applied")
                seqs |= {(int(s), int(s)) for (s,) in cur.fetchall()}
                cur.execute("SELECT k, v FROM la.lists")
                lists = {int(k): parse_list(v) for k, v in cur.fetchall()}
                cur.execute("SELECT id, balance FROM bank.accounts")
                balances = {str(i): int(v) for i, v in cur.fetchall()}
            out[m.name] = MemberFinal(MemberState(sums, _intervals(seqs)), lists, balances)
        except pymysql.MySQLError as exc:
            out[m.name] = MemberFinal(MemberState(error=str(exc)))
        finally:
            conn.close()
    return out


def _intervals(pairs: set[tuple[int, int]]) -> str:
    merged: list[list[int]] = []
    for lo, hi in sorted(pairs):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in merged)


def wait_converged(cluster: Cluster, timeout_s: float) -> tuple[float | None, str]:
    """Seconds until every member is ONLINE in every member's view and all backends agree
    (checksums and positions), or None with the last observation."""
    t0 = time.monotonic()
    names = {m.name for m in cluster.members}
    last = ""
    while time.monotonic() - t0 < timeout_s:
        try:
            cluster.wait_online(names, timeout_s=1)
        except TimeoutError as exc:
            last = str(exc)
            continue
        finals = read_final(cluster)
        verdict = check_convergence({n: f.state for n, f in finals.items()})
        if verdict.valid:
            return time.monotonic() - t0, "converged"
        last = "; ".join(a.detail for v in verdict.anomalies.values() for a in v)[:500]
        time.sleep(0.5)
    return None, last


def online_group(cluster: Cluster) -> set[str]:
    """The members of the group as its members see it: the ONLINE set reported by a majority of
    all members, each of which lists itself in it. Empty when there is no such group. A member
    outside the group (ERROR, expelled) lists only itself or nothing, so its backend is not
    taken for the group's state."""
    views: dict[str, frozenset[str]] = {}
    for m in cluster.members:
        if not m.alive():
            continue
        try:
            views[m.name] = frozenset(cluster.online_view(m))
        except pymysql.MySQLError:
            continue
    majority = len(cluster.members) // 2 + 1
    for view in set(views.values()):
        agreeing = [n for n, v in views.items() if v == view and n in view]
        if len(agreeing) >= majority and set(agreeing) == set(view):
            return set(view)
    return set()


def _append_elements(c: Completed) -> list[tuple[int, int]]:
    if c.f != "txn":
        return []
    return [(m[1], m[2]) for m in (c.invoke.value or []) if m[0] == "append"]


def check_run(bank: Bank, bank_ops: list[Any], la_ops: list[Any], finals: dict[str, MemberFinal],
              online: set[str], converged_s: float | None, convergence_note: str,
              convergence_timeout_s: float = CONVERGENCE_TIMEOUT_S,
              snapshot_isolation: bool = True) -> list[CheckResult]:
    results = [
        check_bank(bank_ops, total=bank.total, accounts=[str(a) for a in bank.accounts]),
        check_list_append(la_ops, snapshot_isolation=snapshot_isolation),
        check_stale_reads(
            la_ops,
            writes=_append_elements,
            reads=lambda c: [(m[1], set(m[2])) for m in (c.value or []) if c.f == "txn" and m[0] == "r"],
            level=lambda c: LA_LEVELS[c.process % len(LA_LEVELS)],
        ),
    ]
    for name in sorted(online):
        f = finals.get(name)
        if f is None or f.lists is None:
            continue
        final = {(k, v) for k, vs in f.lists.items() for v in vs}
        r = check_lost_writes(la_ops, final, elements=_append_elements)
        results.append(dataclasses.replace(r, checker=f"lost-writes@{name}"))
        if f.balances is not None:
            s = sum(f.balances.values())
            if s != bank.total:
                results.append(result(f"bank-final@{name}", [Anomaly("wrong-total", (), f"final balances sum to {s}",
                                                                      {"balances": f.balances})]))
    conv = check_convergence({n: f.state for n, f in finals.items()})
    if converged_s is None and len(online) > 1:
        # The group is not whole; the members it does have must still agree with each other.
        inner = check_convergence({n: f.state for n, f in finals.items() if n in online})
        results.append(dataclasses.replace(inner, checker="convergence-online", anomalies={
            f"online-{k}": v for k, v in inner.anomalies.items()}))
    if converged_s is None:
        conv = dataclasses.replace(conv, anomalies={**conv.anomalies, "no-convergence": (
            Anomaly("no-convergence", (), f"not whole and converged within {convergence_timeout_s:.0f}s: "
                    f"{convergence_note}"),)})
    results.append(conv)
    return results


@dataclasses.dataclass
class RunResult:
    run: int
    seed: str
    faults: list[str]
    fault_kinds: list[str]
    ops: dict[str, int]
    results: list[CheckResult]
    converged_s: float | None
    nemesis_errors: list[str]
    directory: str

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.results)

    def violations(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            for k, v in r.violations.items():
                out[f"{r.checker.split('@')[0]}:{k}"] = out.get(f"{r.checker.split('@')[0]}:{k}", 0) + len(v)
        return out

    def allowed(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            for k, v in r.anomalies.items():
                if v and k in r.allowed:
                    out[k] = out.get(k, 0) + len(v)
        return out

    def lost_writes(self) -> int:
        return max((len(r.anomalies.get("lost", ())) for r in self.results if r.checker.startswith("lost-writes")),
                   default=0)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "seed": self.seed, "faults": self.faults, "ops": self.ops,
                "converged_s": self.converged_s, "valid": self.valid, "violations": self.violations(),
                "allowed": self.allowed(), "lost_writes": self.lost_writes(),
                "nemesis_errors": self.nemesis_errors, "directory": self.directory,
                "results": [r.to_dict() for r in self.results]}


def run_once(seed: int, run: int, kinds: tuple[str, ...], duration_s: float, out: Path, *,
             faults: list[Fault] | None = None, convergence_timeout_s: float = CONVERGENCE_TIMEOUT_S,
             single_primary: bool = True) -> RunResult:
    """One run; ``faults`` replaces the seeded schedule (a test's fixed scenario)."""
    seed_text = f"{seed}:{run}"
    rng = random.Random(seed_text)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-{run}-"))
    cluster = Cluster(base, single_primary=single_primary)
    members = [f"m{i}" for i in range(1, cluster.count + 1)]
    if faults is None:
        faults = schedule(rng, kinds, duration_s, members)
    (out / "schedule.txt").write_text("\n".join(f.describe() for f in faults) + "\n")
    try:
        with cluster:
            conn = connect(cluster.router_port, timeout_s=30)
            with conn.cursor() as cur:
                Bank.setup(Bank(), cur)
                ListAppend.setup(ListAppend(), cur)
            conn.close()
            nemesis = Nemesis(cluster, faults, members) if faults else None
            bank_rec, la_rec, bank, _la, counts = run_clients(cluster, seed_text, duration_s, out, nemesis)
            if nemesis is not None:
                nemesis.heal_all()
            converged_s, note = wait_converged(cluster, convergence_timeout_s)
            finals = read_final(cluster)
            online = online_group(cluster) & {n for n, f in finals.items() if f.state.error is None}
            results = check_run(bank, bank_rec.ops(), la_rec.ops(), finals, online, converged_s, note,
                                convergence_timeout_s, cluster.snapshot_isolation)
            exits = cluster.unexpected_exits()
            if exits:
                results.append(result("processes", [Anomaly("unexpected-exit", (), e) for e in exits]))
            (out / "final.json").write_text(json.dumps(
                {n: {"error": f.state.error, "checksums": dict(f.state.checksums), "position": f.state.position,
                     "balances": f.balances, "lists": {str(k): v for k, v in sorted((f.lists or {}).items())}}
                 for n, f in finals.items()}, indent=1) + "\n")
            (out / "events.txt").write_text("\n".join(f"{t - cluster.events[0][0]:8.2f} {w}" for t, w in cluster.events) + "\n")
    finally:
        for p in [*(m.log_path for m in cluster.members), base / "router" / "grproxy.log"]:
            if p.exists():
                shutil.copy(p, out / f"{p.parent.name}.log")
        shutil.rmtree(base, ignore_errors=True)
    rr = RunResult(run, seed_text, [f.describe() for f in faults], [f.kind for f in faults], counts, results, converged_s,
                   nemesis.errors if nemesis else [], str(out))
    (out / "verdict.json").write_text(json.dumps(rr.to_dict(), indent=2, default=str) + "\n")
    return rr


def failed_run(seed: int, run: int, out: Path, exc: BaseException) -> RunResult:
    """A run that broke before its checks (the group did not start, setup was refused …)."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.txt").write_text(text)
    err = result("run", [Anomaly("run-error", (), f"{type(exc).__name__}: {exc}"[:400], {"traceback": text[-2000:]})])
    return RunResult(run, f"{seed}:{run}", [], [], {"ok": 0, "fail": 0, "info": 0}, [err], None, [], str(out))


def summary_table(runs: list[RunResult], seed: int, kinds: tuple[str, ...], duration_s: float,
                  mode: str = "single-primary") -> str:
    lines = [
        f"# chaos summary — seed {seed}, {mode}", "",
        f"replay: `python -m tests.chaos.runner --seed {seed} --runs {len(runs)} --duration {duration_s:g} "
        f"--mode {mode} --faults {','.join(kinds) or 'none'}`", "",
        "| run | faults | ops ok/fail/info | violations by kind | allowed (reported) | lost writes | converged in | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        kinds_applied = sorted(set(r.fault_kinds)) or ["none"]
        viol = ", ".join(f"{k} {n}" for k, n in sorted(r.violations().items())) or "—"
        allowed = ", ".join(f"{k} {n}" for k, n in sorted(r.allowed().items())) or "—"
        conv = f"{r.converged_s:.1f} s" if r.converged_s is not None else "NO"
        lines.append(f"| {r.seed} | {len(r.faults)}: {' '.join(kinds_applied)} | "
                     f"{r.ops['ok']}/{r.ops['fail']}/{r.ops['info']} | {viol} | {allowed} | {r.lost_writes()} | "
                     f"{conv} | {'ok' if r.valid else 'ANOMALIES'} |")
    total_ops = sum(sum(r.ops.values()) for r in runs)
    total_faults = sum(len(r.faults) for r in runs)
    bad = sum(1 for r in runs if not r.valid)
    lines += ["", f"runs {len(runs)}, operations {total_ops}, faults {total_faults}, runs with anomalies {bad}", ""]
    for r in runs:
        lines += [f"## run {r.seed}", "", "schedule:", "```", *(r.faults or ["(no faults)"]), "```"]
        if r.nemesis_errors:
            lines += ["nemesis errors:", "```", *r.nemesis_errors, "```"]
        for res in r.results:
            if res.kinds():
                lines.append(f"- {res.checker}: {res.counts()}" + ("" if res.valid else " **violation**"))
                for k, v in res.anomalies.items():
                    if v and k not in res.allowed:
                        lines.append(f"  - e.g. {v[0].detail}")
        lines += [f"- files: {r.directory}", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.runner", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=40.0, help="seconds of workload per run")
    p.add_argument("--faults", default=",".join(ALL_FAULTS),
                   help=f"comma-separated subset of {','.join(ALL_FAULTS)}, or 'none'")
    p.add_argument("--mode", choices=("single-primary", "multi-primary"), default="single-primary")
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "grproxy-chaos"),
                   help="directory for histories, logs and the summary (default: $TMPDIR/grproxy-chaos)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    kinds = () if args.faults in ("", "none") else tuple(args.faults.split(","))
    unknown = set(kinds) - set(ALL_FAULTS)
    if unknown:
        p.error(f"unknown faults {sorted(unknown)}")
    out = Path(args.out).resolve() / f"seed-{seed}"
    print(f"chaos: seed {seed} ({args.runs} runs of {args.duration:.0f}s, {args.mode}, "
          f"faults {','.join(kinds) or 'none'}) → {out}",
          flush=True)
    runs = []
    for i in range(args.runs):
        try:
            r = run_once(seed, i, kinds, args.duration, out / f"run-{i}",
                         single_primary=args.mode == "single-primary")
        except Exception as exc:  # noqa: BLE001 - a run that could not even start is a finding too
            r = failed_run(seed, i, out / f"run-{i}", exc)
        runs.append(r)
        print(f"  run {r.seed}: ops {r.ops}, faults {len(r.faults)}, violations {r.violations() or 'none'}, "
              f"converged {r.converged_s if r.converged_s is None else round(r.converged_s, 1)}", flush=True)
    text = summary_table(runs, seed, kinds, args.duration, args.mode)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps([r.to_dict() for r in runs], indent=2, default=str) + "\n")
    print(text)
    print(f"chaos: summary in {out / 'summary.md'}; replay with --seed {seed}", flush=True)
    return 0 if all(r.valid for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
