"""Read scaling through the router: a 1-member vs a 3-member group, and what BEFORE costs.

    python -m bench.read_scaling [--seconds 12] [--threads 8,32] [--rounds 1] [--ps-modes auto]
                                 [--skip-refs] [--keep]

What it runs, in one process and one run. Two sandbox groups at the same time, both
single-primary (`grproxy sandbox --members 1` and `--members 3`), each with the sbtest schema
(4 x 10000 rows, prepared through its router). Then, for every sysbench --db-ps-mode (`auto` =
server-side prepared statements, sysbench's default) and thread count, each cell alternating
its targets (--rounds times):

1. Read scaling, oltp_read_only, against
   - "direct backend": the 1-member group's MariaDB, no grproxy (reference);
   - "member port": that member's own port (grproxy's member, no router; reference);
   - "router, 1 member" and "router, 3 members": the sandboxes' client ports;
   and the same test with --skip_trx=on against the two routers only. sysbench's
   oltp_read_only wraps its 14 reads in BEGIN … COMMIT, and the router sends a plain BEGIN to
   the primary (the transaction might write), so only the autocommit variant can spread over
   the secondaries. Printed: QPS (as sysbench counts it: BEGIN and COMMIT are queries too), p95
   latency of a sysbench event (one transaction or group of 14 reads), errors/s, CPU per query
   of the processes serving the target, the sysbench client's CPU per query, and where the
   SELECTs ran (Com_select delta on each backend); then router 3 members / router 1 member.
2. Check: is the level honoured by a read through the router, as a text statement (COM_QUERY)
   and as a server-side prepared statement (COM_STMT_EXECUTE, what sysbench sends by default)?
   As MySQL's gr_consistent_reads_before test: the secondaries' appliers are held back with
   `LOCK TABLES sbtest1 READ` on their backends, a row is updated on the primary, and a fresh
   router session (wait_timeout 2 s) reads it. At EVENTUAL it reads the old value (the check
   can see stale reads); at BEFORE it must wait (3781 at wait_timeout) or read the new value.
   The level is the group's default, set with `SET GLOBAL group_replication_consistency` on
   every member port (root is an admin there); the router learns it from its next poll of the
   members, so the benchmark waits LEVEL_SETTLE_S after setting it. It ends at EVENTUAL.
   Needs mysql-connector-python (the test extra) for the binary protocol.
3. Point selects, oltp_point_select: the router against the front end of issue [A] (`grproxy
   serve` relaying to one backend: no [member], no [router]), whose figure the issue's target
   is ("EVENTUAL point selects through the router within 10 % of the front end from [A]"); and
   the consistency cost, the 3-member router at the group's default level EVENTUAL, then
   BEFORE. Per cell, in this order (direct backend and member port again as references):
   - "router, 1 member", then "front end [A], g1 member1": a front end in front of the
     1-member group's only backend, which that router also reads directly;
   - "router, 3 members EVENTUAL", then "front end [A], g3 member2": a front end in front of
     one secondary's backend (the router spreads EVENTUAL reads over both secondaries);
   - "router, 3 members BEFORE".
   Router and front end run back to back (alternating with --rounds), so that load drift
   touches both alike; printed: their QPS ratios. The group's default stays EVENTUAL; for the
   BEFORE rows every sysbench connection runs `SET SESSION group_replication_consistency =
   'BEFORE'` once before its first read (a line added to the Lua wrapper), which the router
   replays on each member connection the session uses. Not `SET GLOBAL` on the member ports,
   as this benchmark did first: the router's pooled member-port connections keep the default
   of their last reset, so new router sessions that take one after the change run at the old
   level (the BEFORE figures were partly EVENTUAL; see the note printed when the counts below
   show it). Printed: QPS, p95 and the ratios BEFORE / EVENTUAL; and the batching of sync
   points (the target: "BEFORE costs at most one group round trip per batch of concurrent
   statements"): every member port answers `/* grproxy */ MEMBER STATS` (admin) with the sync
   points asked for (one per held BEFORE statement) and broadcast (one group round trip each)
   since it started; read on every member port before and after each 3-member run, printed as
   the deltas, requests per broadcast, and requests per query (1.00 when every read was held).

sysbench's --db-ps-mode: the --ps-modes given (default `auto`). When a router run with `auto`
fails or has errors, the read-scaling cells are measured again with `disable`; when the check
does not find BEFORE honoured in one protocol (an old value, or no clear answer), the
point-select cells are measured in the other one too, and the unenforced BEFORE rows are
flagged. The check stays when both are enforced: it guards against regressions (server-side
prepared statements were not held on member ports before commit c613065).

On a 2-core machine the 3-member group runs on the same two cores as the 1-member group, so
"scaling" here measures what the extra members and the routing cost rather than added
capacity; the CPU per query columns say where the time goes. It asserts nothing and exits 0;
non-zero only when a group could not be started or one of its processes died.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from bench.harness import (
    SYSBENCH_TABLE_SIZE,
    SYSBENCH_TABLES,
    RunResult,
    FrontEnd,
    Sandbox,
    StartFailure,
    Sysbench,
    cpu_by_pid,
    describe_errors,
    fmt_num,
    p95,
    wait_consistent,
)

SANDBOX_START_ATTEMPTS = 2  # mariadb-install-db fails now and then on a busy shared /tmp: one retry
CONSISTENCY = "group_replication_consistency"
LEVELS = ("EVENTUAL", "BEFORE")
# The router learns a member's default level from its poll of the members (refresh_s, 0.5 s by
# default) unless the SET GLOBAL went through the router; until then it may still read EVENTUAL
# straight from the backends. Waited after every SET GLOBAL on the member ports.
LEVEL_SETTLE_S = 2.0
CHECK_WAIT_TIMEOUT_S = 2  # the check's session wait_timeout: how long a held read may wait
PROTOCOLS = {"text": "disable", "prepared": "auto"}  # check protocol -> the sysbench --db-ps-mode it stands for
MEMBER_STATS = "/* grproxy */ MEMBER STATS"  # admin; the comment is the command's prefix (keep it)
TARGET_RATIO = 0.9  # the issue's target: router EVENTUAL point selects within 10 % of the front end


@dataclass(frozen=True, slots=True)
class Workload:
    label: str
    test: str
    extra: tuple[str, ...] = ()


READ_ONLY = Workload("oltp_read_only", "oltp_read_only")
READ_ONLY_AUTOCOMMIT = Workload("read_only skip_trx", "oltp_read_only", ("--skip_trx=on",))
POINT_SELECT = Workload("oltp_point_select", "oltp_point_select")


@dataclass(frozen=True, slots=True)
class Target:
    """Somewhere sysbench connects to, and what serves it."""

    label: str
    port: int
    user: str
    password: str
    processes: dict[str, int]  # role -> pid, whose CPU is charged to this target
    backends: tuple[dict, ...]  # status-file backend records, for the Com_select spread


@dataclass
class Measure:
    """One (workload, ps mode, threads, row) cell, summed over rounds."""

    result: RunResult = field(default_factory=RunResult)
    rounds: int = 0
    client_cpu_s: float = 0.0
    selects: Counter[str] = field(default_factory=Counter)  # backend label -> Com_select delta
    sync_requests: Counter[str] = field(default_factory=Counter)  # member -> MEMBER STATS deltas
    sync_broadcasts: Counter[str] = field(default_factory=Counter)
    sync_read: bool = False  # MEMBER STATS answered before and after every round

    @property
    def qps(self) -> float:
        return self.result.qps / max(self.rounds, 1)

    @property
    def p95_ms(self) -> float | None:
        return p95(self.result.histogram)

    @property
    def errors_per_s(self) -> float | None:
        return self.result.errors / self.result.seconds if self.result.seconds else None

    def us_per_query(self, cpu_s: float) -> float | None:
        return 1e6 * cpu_s / self.result.queries if self.result.queries else None

    def troubled(self) -> bool:
        return bool(self.result.failures or self.result.errors or not self.result.queries)


CellKey = tuple[str, str, int, str]  # workload label, ps mode, threads, row label


# ---------------------------------------------------------------------------------------------
# the groups


def start_group(base: Path, members: int) -> Sandbox:
    last: StartFailure | None = None
    for attempt in range(1, SANDBOX_START_ATTEMPTS + 1):
        sandbox = Sandbox(base / f"attempt{attempt}", "single-primary", members=members)
        try:
            sandbox.start()
            return sandbox
        except StartFailure as exc:
            sandbox.stop()
            last = exc
            print(f"  {members}-member sandbox failed to start (attempt {attempt}): {str(exc).splitlines()[0]}",
                  flush=True)
    assert last is not None
    raise last


def query_one(port: int, sql: str, user: str = "root", password: str = "") -> tuple:
    conn = pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, connect_timeout=10,
                           read_timeout=30, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone() or ()
    finally:
        conn.close()


def com_select(backends: tuple[dict, ...]) -> Counter[str]:
    """Com_select of each backend by member (prepared executions count too)."""
    out: Counter[str] = Counter()
    for b in backends:
        row = query_one(int(b["port"]), "SHOW GLOBAL STATUS LIKE 'Com_select'", b["user"], b["password"])
        out[Path(b["datadir"]).parent.name] = int(row[1])  # …/memberN/data
    return out


def set_group_consistency(sandbox: Sandbox, level: str) -> list[str]:
    """SET GLOBAL on every member port, then LEVEL_SETTLE_S for the router's poll; returns what
    a fresh session on each member reports."""
    seen = []
    for port in sandbox.member_ports:
        query_one(port, f"SET GLOBAL {CONSISTENCY} = '{level}'")
        seen.append(str(query_one(port, f"SELECT @@{CONSISTENCY}")[0]))
    time.sleep(LEVEL_SETTLE_S)
    return seen


def member_stats(sandbox: Sandbox) -> dict[str, tuple[int, int]]:
    """(SYNC_POINT_REQUESTS, SYNC_POINT_BROADCASTS) of every member, by member id."""
    out = {}
    for m in sandbox.status["members"]:  # type: ignore[index]
        row = query_one(int(m["member_port"]), MEMBER_STATS)
        out[str(m["id"])] = (int(row[0]), int(row[1]))
    return out


def sync_summary(m: Measure) -> str:
    requests, broadcasts = sum(m.sync_requests.values()), sum(m.sync_broadcasts.values())
    per = f"{requests / broadcasts:.1f} requests per broadcast" if broadcasts else "no broadcast"
    by_member = ", ".join(f"{k} {m.sync_requests[k]}/{m.sync_broadcasts[k]}" for k in sorted(m.sync_requests))
    per_query = (f"; per query: {requests / m.result.queries:.2f} requests, {broadcasts / m.result.queries:.3f} "
                 "broadcasts") if m.result.queries else ""
    return (f"{requests} requested, {broadcasts} broadcast: {per}{per_query} "
            f"(requested/broadcast by member: {by_member})")


def read_check(sandbox: Sandbox, protocol: str) -> tuple[str, bool | None]:
    """Is the group's current default level enforced for a read through the router?

    As MySQL's gr_consistent_reads_before test: the secondaries' appliers are held back with
    `LOCK TABLES sbtest1 READ` on their backends, one row is updated on the primary (member1's
    port), then a fresh router session reads it (`text`: COM_QUERY; `prepared`: server-side
    prepared statement, COM_STMT_EXECUTE, as sysbench's default). Returns a description and
    whether the read saw the update or waited (True), returned the old value (False), or
    neither (None: an error). Releases the locks and waits until the backends agree again."""
    import mysql.connector  # the test extra: a client that speaks the binary protocol

    members = sandbox.status["members"]  # type: ignore[index]
    primary = int(members[0]["member_port"])  # the sandbox bootstraps member1: the primary
    locks = []
    try:
        for m in members[1:]:
            b = m["backend"]
            conn = pymysql.connect(host="127.0.0.1", port=int(b["port"]), user=b["user"], password=b["password"],
                                   database="sbtest", autocommit=True, connect_timeout=10)
            locks.append(conn)
            with conn.cursor() as cur:
                cur.execute("LOCK TABLES sbtest1 READ")
        old = query_one(primary, "SELECT k FROM sbtest.sbtest1 WHERE id = 1")[0]
        query_one(primary, "UPDATE sbtest.sbtest1 SET k = k + 1 WHERE id = 1")
        new = query_one(primary, "SELECT k FROM sbtest.sbtest1 WHERE id = 1")[0]
        client = mysql.connector.connect(host="127.0.0.1", port=sandbox.router_port, user="root", password="",
                                         database="sbtest", autocommit=True, use_pure=True, connection_timeout=10)
        t0 = time.monotonic()
        try:
            client.cursor().execute(f"SET SESSION wait_timeout = {CHECK_WAIT_TIMEOUT_S}")
            t0 = time.monotonic()
            if protocol == "prepared":
                cur = client.cursor(prepared=True)
                cur.execute("SELECT k FROM sbtest1 WHERE id = %s", (1,))
            else:  # no parameters: the connector would wrap a server error in its own
                cur = client.cursor()
                cur.execute("SELECT k FROM sbtest1 WHERE id = 1")
            got = cur.fetchall()[0][0]
        except mysql.connector.Error as exc:
            held = exc.errno == 3781
            what = f"error {exc.errno} after {time.monotonic() - t0:.1f}s" + (
                " (held until wait_timeout)" if held else f": {exc.msg}")
            return what, True if held else None
        finally:
            client.close()
        elapsed = time.monotonic() - t0
        if got == new:
            return f"new value after {elapsed:.2f}s", True
        if got == old:
            return f"OLD value after {elapsed:.2f}s", False
        return f"unexpected value {got} (old {old}, new {new})", None
    finally:
        for conn in locks:
            conn.close()
        wait_consistent([(int(m["backend"]["port"]), m["backend"]["user"], m["backend"]["password"])
                         for m in members])


# ---------------------------------------------------------------------------------------------
# runs


def measure(sb: Sysbench, w: Workload, target: Target, threads: int, ps_mode: str, into: Measure,
            session_sql: tuple[str, ...] = ()) -> RunResult:
    """One sysbench run against `target`, added into `into`."""
    selects0 = com_select(target.backends)
    cpu0 = cpu_by_pid(target.processes)
    client0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # sysbench: the sandboxes have not exited
    r = sb.run(w.test, [(target.port, threads)], ps_mode=ps_mode, user=target.user, password=target.password,
               extra=w.extra, session_sql=session_sql)
    client1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = cpu_by_pid(target.processes)
    r.cpu_by_process = Counter({k: cpu1[k] - cpu0[k] for k in target.processes})
    r.cpu_s = sum(r.cpu_by_process.values())
    into.result.add(r)
    into.rounds += 1
    into.client_cpu_s += (client1.ru_utime + client1.ru_stime) - (client0.ru_utime + client0.ru_stime)
    with contextlib.suppress(pymysql.err.MySQLError):  # a dead backend shows in the run's failures
        selects1 = com_select(target.backends)
        for k in selects1:  # not Counter subtraction: it drops the members that served nothing
            into.selects[k] += selects1[k] - selects0[k]
    return r


def spread(m: Measure) -> str:
    total = sum(m.selects.values())
    if len(m.selects) < 2 or total <= 0:
        return ""
    return " ".join(f"{k.removeprefix('member')}:{100 * v / total:.0f}%" for k, v in sorted(m.selects.items()))


HEADER = (f"{'workload':<19}{'ps':<8}{'thr':>3}  {'target':<26}{'QPS':>8}{'p95 ms':>8}{'err/s':>7}"
          f"{'cpu us/q':>9}{'cli us/q':>9}  SELECTs by member")


def line(key: CellKey, m: Measure) -> str:
    workload, ps_mode, threads, label = key
    fail = f"  FAILED: {'; '.join(m.result.failures)[:300]}" if m.result.failures else ""
    errs = f"  errors {describe_errors(m.result)}" if m.result.errors else ""
    return (f"{workload:<19}{ps_mode:<8}{threads:>3}  {label:<26}{m.qps:>8.0f}{fmt_num(m.p95_ms, '.2f'):>8}"
            f"{fmt_num(m.errors_per_s, '.1f'):>7}{fmt_num(m.us_per_query(m.result.cpu_s), '.0f'):>9}"
            f"{fmt_num(m.us_per_query(m.client_cpu_s), '.0f'):>9}  {spread(m)}{errs}{fail}")


def ratio(a: float | None, b: float | None) -> str:
    return f"x{a / b:.2f}" if a is not None and b else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=12, help="per sysbench run (default 12)")
    ap.add_argument("--threads", default="8,32", help="sysbench thread counts (default 8,32)")
    ap.add_argument("--rounds", type=int, default=1, help="alternations of the targets per cell (default 1)")
    ap.add_argument("--ps-modes", default="auto",
                    help="sysbench --db-ps-mode values (default auto; disable is added when auto has trouble)")
    ap.add_argument("--skip-refs", action="store_true", help="no direct-backend / member-port reference runs")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs, datadirs)")
    args = ap.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",") if t]
    ps_modes = [p for p in args.ps_modes.split(",") if p]
    if any(p not in ("auto", "disable") for p in ps_modes):
        ap.error("--ps-modes takes auto and/or disable")
    if shutil.which("sysbench") is None:
        print("read_scaling: sysbench not found (make install / apt-get install sysbench)", file=sys.stderr)
        return 1

    def on_term(signum: int, frame: object) -> None:  # SIGTERM stops the benchmark like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))  # short: unix socket paths
    sb = Sysbench(work / "lua", args.seconds)
    groups: dict[int, Sandbox] = {}
    front_ends: list[FrontEnd] = []
    notes: list[str] = []
    cells: dict[CellKey, Measure] = {}
    read_modes: list[str] = []  # ps modes measured, by section
    point_modes: list[str] = []
    checks: dict[tuple[str, str], tuple[str, bool | None]] = {}  # (level, protocol) -> read_check
    t_start = time.monotonic()
    try:
        print(f"read_scaling: {args.seconds}s per run, threads {thread_counts}, {args.rounds} round(s), "
              f"sysbench {SYSBENCH_TABLES}x{SYSBENCH_TABLE_SIZE} rows; work dir {work}", flush=True)
        print(f"load average before start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores; other work skews "
              "figures)", flush=True)
        for members in (1, 3):
            t0 = time.monotonic()
            g = groups[members] = start_group(work / f"g{members}", members)
            print(f"{members}-member group: ready in {time.monotonic() - t0:.1f}s, router {g.router_port}, "
                  f"member ports {g.member_ports}", flush=True)
            t0 = time.monotonic()
            # One prepare thread (see group_writes: concurrent CREATE INDEX evicts table metadata).
            sb.prepare(g.router_port, threads=1)
            verdict = wait_consistent([(int(b["port"]), b["user"], b["password"]) for b in g.backends()])
            print(f"{members}-member group: sbtest prepared through the router in {time.monotonic() - t0:.1f}s; "
                  f"backends {verdict}", flush=True)

        g1, g3 = groups[1], groups[3]
        member1 = g1.status["members"][0]  # type: ignore[index]
        backend1 = member1["backend"]
        refs = [] if args.skip_refs else [
            Target("direct backend", int(backend1["port"]), backend1["user"], backend1["password"],
                   {"member1-db": int(backend1["pid"])}, (backend1,)),
            Target("member port", int(member1["member_port"]), "root", "",
                   {"member1": int(member1["pid"]), "member1-db": int(backend1["pid"])}, (backend1,)),
        ]
        router1 = Target("router, 1 member", g1.router_port, "root", "", g1.processes(), tuple(g1.backends()))
        router3 = Target("router, 3 members", g3.router_port, "root", "", g3.processes(), tuple(g3.backends()))
        # [A]'s front end before the 1-member group's only backend (the one its router reads
        # directly), and before one secondary's backend of the 3-member group (member1 is the
        # primary: the sandbox bootstraps it).
        front = {}
        for g, member in ((g1, member1), (g3, g3.status["members"][1])):  # type: ignore[index]
            fe = FrontEnd(work / f"front_g{len(g.member_ports)}", member["backend"])
            fe.start()
            front_ends.append(fe)
            front[g] = Target(f"front end [A], g{len(g.member_ports)} {member['id']}", fe.port, "root", "",
                              {"front-end": fe.pid, f"{member['id']}-db": int(member["backend"]["pid"])},
                              (member["backend"],))
            print(f"front end [A] (grproxy serve) on port {fe.port} before the {len(g.member_ports)}-member group's "
                  f"{member['id']} backend (port {member['backend']['port']})", flush=True)
        front1, front3 = front[g1], front[g3]

        def run(w: Workload, ps_mode: str, threads: int, target: Target, label: str | None = None,
                session_sql: tuple[str, ...] = ()) -> Measure:
            key = (w.label, ps_mode, threads, label or target.label)
            into = cells.setdefault(key, Measure())
            r = measure(sb, w, target, threads, ps_mode, into, session_sql)
            print(f"  {' '.join(map(str, key))}: {r.qps:.0f} QPS, p95 {fmt_num(p95(r.histogram), '.2f')} ms, "
                  f"errors {describe_errors(r)}" + (f"  FAILED: {'; '.join(r.failures)[:300]}" if r.failures else ""),
                  flush=True)
            dead = g1.dead_processes() + g3.dead_processes() + [f"front end [A] on port {fe.port} (exit "
                                                                f"{fe.proc.returncode})" for fe in front_ends
                                                                if fe.dead() and fe.proc is not None]
            if dead:
                raise StartFailure(f"grproxy processes died: {', '.join(dead)}\n{g1.tail()}\n{g3.tail()}\n"
                                   + "\n".join(fe.tail() for fe in front_ends if fe.dead()))
            return into

        def stats_or_none(when: str) -> dict[str, tuple[int, int]] | None:
            try:
                return member_stats(g3)
            except (pymysql.err.MySQLError, OSError, ValueError, IndexError) as exc:
                notes.append(f"{MEMBER_STATS} {when}: {exc}")
                return None

        def run_at_level(ps_mode: str, threads: int, level: str) -> None:
            """oltp_point_select through the 3-member router, EVENTUAL as the group's default,
            another level set by every sysbench connection (SET SESSION) before its first read."""
            session_sql = () if level == "EVENTUAL" else (f"SET SESSION {CONSISTENCY} = '{level}'",)
            stats0 = stats_or_none(f"before a {level} run")
            into = run(POINT_SELECT, ps_mode, threads, router3, f"router, 3 members {level}", session_sql)
            stats1 = stats_or_none(f"after a {level} run")
            if stats0 is not None and stats1 is not None:
                into.sync_read = into.sync_read or into.rounds == 1
                for member, (requests, broadcasts) in stats1.items():
                    into.sync_requests[member] += requests - stats0.get(member, (0, 0))[0]
                    into.sync_broadcasts[member] += broadcasts - stats0.get(member, (0, 0))[1]
                print(f"    sync points (cell total): {sync_summary(into)}", flush=True)
            else:
                into.sync_read = False

        # 1. read scaling
        while ps_modes:
            ps_mode = ps_modes.pop(0)
            read_modes.append(ps_mode)
            for threads in thread_counts:
                for _ in range(args.rounds):
                    for target in [*refs, router1, router3]:
                        run(READ_ONLY, ps_mode, threads, target)
                    for target in (router1, router3):
                        run(READ_ONLY_AUTOCOMMIT, ps_mode, threads, target)
            troubled = [k for k, m in cells.items() if k[1] == ps_mode and k[3].startswith("router") and m.troubled()]
            if ps_mode == "auto" and troubled and "disable" not in ps_modes + read_modes:
                notes.append(f"--db-ps-mode=auto: failures or errors through the router in {len(troubled)} cell(s) "
                             f"({', '.join(' '.join(map(str, k)) for k in troubled)}): measured again with "
                             "--db-ps-mode=disable")
                ps_modes.append("disable")

        # 2. does a read through the router honour the level, in each protocol? (ends at EVENTUAL)
        point_modes.extend(read_modes)
        if importlib.util.find_spec("mysql") is None or importlib.util.find_spec("mysql.connector") is None:
            notes.append("no check of the levels: mysql-connector-python is not installed (pip install -e '.[test]')")
        else:
            for level in reversed(LEVELS):
                set_group_consistency(g3, level)
                for protocol in PROTOCOLS:
                    checks[(level, protocol)] = read_check(g3, protocol)
                    print(f"  check {level} {protocol}: {checks[(level, protocol)][0]}", flush=True)
        for protocol in PROTOCOLS:
            if checks and checks.get(("EVENTUAL", protocol), ("", None))[1] is not False:
                notes.append(f"the check did not read an old value at EVENTUAL ({protocol}): it cannot tell whether "
                             "BEFORE is enforced")
        for protocol, ps_mode in PROTOCOLS.items():
            verdict = checks.get(("BEFORE", protocol), ("", None))[1]
            if checks and verdict is not True and ps_mode in point_modes:
                other = next(m for p, m in PROTOCOLS.items() if p != protocol)
                also = "" if other in point_modes else f"; --db-ps-mode={other} measured as well"
                why = "the check read the old value" if verdict is False else "the check had no clear answer"
                notes.append(f"BEFORE is not shown enforced for {protocol} reads through the router ({why}): the "
                             f"BEFORE figures with --db-ps-mode={ps_mode} may measure no consistency{also}")
                if other not in point_modes:
                    point_modes.append(other)

        # 3. point selects: router vs [A]'s front end (back to back), and the consistency cost
        seen = [str(query_one(port, f"SELECT @@{CONSISTENCY}")[0]) for port in g3.member_ports]
        if set(seen) != {"EVENTUAL"}:
            notes.append(f"the group's default level before the point selects is {seen} on the member ports, not "
                         "EVENTUAL: the EVENTUAL rows may measure another level")
        for ps_mode in point_modes:
            for threads in thread_counts:
                for _ in range(args.rounds):
                    for target in refs:
                        run(POINT_SELECT, ps_mode, threads, target)
                    run(POINT_SELECT, ps_mode, threads, router1)
                    run(POINT_SELECT, ps_mode, threads, front1)
                    run_at_level(ps_mode, threads, "EVENTUAL")
                    run(POINT_SELECT, ps_mode, threads, front3)
                    run_at_level(ps_mode, threads, "BEFORE")
    except StartFailure as exc:
        print(f"read_scaling: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("read_scaling: interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        sb.kill_all()
        for fe in front_ends:
            fe.stop()
        g3 = groups.get(3)
        if g3 is not None and g3.proc is not None and g3.proc.poll() is None:
            with contextlib.suppress(pymysql.err.MySQLError, OSError):
                set_group_consistency(g3, "EVENTUAL")
        for g in groups.values():
            g.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    total_s = time.monotonic() - t_start
    report(cells, read_modes, point_modes, checks, thread_counts, args, notes)
    print(f"total time {total_s:.0f}s; load average now {os.getloadavg()[0]:.2f}")
    return 0


def report(cells: dict[CellKey, Measure], read_modes: list[str], point_modes: list[str],
           checks: dict[tuple[str, str], tuple[str, bool | None]], thread_counts: list[int], args: argparse.Namespace,
           notes: list[str]) -> None:
    def rows(w: Workload, ps_mode: str, threads: int) -> list[tuple[CellKey, Measure]]:
        return [(k, m) for k, m in cells.items() if k[:3] == (w.label, ps_mode, threads)]

    def qps_p95(w: Workload, ps_mode: str, threads: int, label: str) -> tuple[float | None, float | None]:
        m = cells.get((w.label, ps_mode, threads, label))
        return (m.qps, m.p95_ms) if m else (None, None)

    print()
    print(f"Results: {args.seconds}s x {args.rounds} round(s) per cell, single-primary groups. p95 = per sysbench "
          "event (oltp_read_only: 14 reads, in BEGIN…COMMIT unless skip_trx); cpu us/q = CPU of the processes "
          "serving the target per query; cli us/q = sysbench's own CPU per query")
    print()
    print("Read scaling")
    print(HEADER)
    print("-" * len(HEADER))
    for ps_mode in read_modes:
        for threads in thread_counts:
            for w in (READ_ONLY, READ_ONLY_AUTOCOMMIT):
                for key, m in rows(w, ps_mode, threads):
                    print(line(key, m))
                (q1, p1), (q3, p3) = (qps_p95(w, ps_mode, threads, f"router, {n}") for n in ("1 member", "3 members"))
                if q1 and q3:
                    print(f"{'':<32}router 3 members / 1 member: QPS {ratio(q3, q1)}, p95 {ratio(p3, p1)}")
    print()
    print("Point selects: oltp_point_select through the routers vs the front end of [A] (grproxy serve relaying to "
          "one backend: g1 member1 = the 1-member group's only backend, g3 member2 = a secondary's of the 3-member "
          "group), run back to back; and the 3-member router at EVENTUAL (the group's default) vs BEFORE (SET SESSION "
          "by every sysbench connection)")
    print(HEADER)
    print("-" * len(HEADER))
    enforced = {ps_mode: checks.get(("BEFORE", protocol), ("", None))[1] for protocol, ps_mode in PROTOCOLS.items()}
    for ps_mode in point_modes:
        for threads in thread_counts:
            for key, m in rows(POINT_SELECT, ps_mode, threads):
                flag = "  <- BEFORE NOT ENFORCED (see check)" if key[3].endswith("BEFORE") and enforced.get(
                    ps_mode) is False else ""
                print(line(key, m) + flag)
            fronts = {k[3][len("front end [A], "):][:2]: k[3] for k, _ in rows(POINT_SELECT, ps_mode, threads)
                      if k[3].startswith("front end [A], ")}  # "g1" / "g3" -> label
            for router_label, group in (("router, 1 member", "g1"), ("router, 3 members EVENTUAL", "g3")):
                front_label = fronts.get(group, "")
                (qr, pr), (qf, pf) = (qps_p95(POINT_SELECT, ps_mode, threads, lb) for lb in (router_label, front_label))
                if qr and qf:
                    print(f"{'':<32}{router_label} / {front_label}: QPS {ratio(qr, qf)}, p95 {ratio(pr, pf)}")
                    if qr < TARGET_RATIO * qf:
                        notes.append(f"ps={ps_mode} {threads} thr: {router_label} at {ratio(qr, qf)} of {front_label}"
                                     f" (QPS): outside the issue's target (within 10 % of the front end from [A])")
            (qe, pe), (qb, pb) = (qps_p95(POINT_SELECT, ps_mode, threads, f"router, 3 members {lv}") for lv in LEVELS)
            if qe and qb:
                print(f"{'':<32}BEFORE / EVENTUAL: QPS {ratio(qb, qe)}, p95 {ratio(pb, pe)}")
            qm, _ = qps_p95(POINT_SELECT, ps_mode, threads, "member port")
            if qe and qm:
                print(f"{'':<32}router 3 members EVENTUAL / member port: QPS {ratio(qe, qm)}")
            for level in LEVELS:
                m = cells.get((POINT_SELECT.label, ps_mode, threads, f"router, 3 members {level}"))
                if m is None:
                    continue
                if not m.sync_read:
                    print(f"{'':<32}sync points, {level}: not read (see notes)")
                    continue
                print(f"{'':<32}sync points, {level}: {sync_summary(m)}")
                requests = sum(m.sync_requests.values())
                if level == "BEFORE" and m.result.queries and requests < 0.99 * m.result.queries:
                    notes.append(f"ps={ps_mode} {threads} thr: {requests} sync points requested for "
                                 f"{m.result.queries} point selects under BEFORE: "
                                 f"{100 * (1 - requests / m.result.queries):.0f} % of them ran without one (not held)")
                elif level == "BEFORE" and qe and qb and qb >= 0.9 * qe:
                    notes.append(f"ps={ps_mode} {threads} thr: BEFORE within 10 % of EVENTUAL: was it in effect?")
    if checks:
        print()
        print("Check: the secondaries' appliers held (LOCK TABLES sbtest1 READ on their backends), a row updated on the "
              f"primary, read by a fresh router session (wait_timeout {CHECK_WAIT_TIMEOUT_S}s):")
        for (level, protocol), (what, ok) in checks.items():
            expect = ("expected: the check can see stale reads" if level == "EVENTUAL" else
                      "enforced" if ok else "NOT ENFORCED" if ok is False else "unclear")
            print(f"  {level:<9}{protocol:<9}: {what}  ({expect})")
    print()
    print("CPU us per query by process (router = the sandbox process; memberN = its grproxy process, memberN-db its "
          "MariaDB):")
    for (workload, ps_mode, threads, label), m in cells.items():
        if m.result.queries and len(m.result.cpu_by_process) > 1:
            parts = ", ".join(f"{k} {1e6 * v / m.result.queries:.0f}" for k, v in m.result.cpu_by_process.items())
            print(f"  {workload} ps={ps_mode} {threads} thr {label}: {parts}")
    if notes:
        print()
        print("notes:")
        for note in notes:
            print(f"  {note}")


if __name__ == "__main__":
    sys.exit(main())
