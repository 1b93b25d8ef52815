"""Membership changes on a 3-member grproxy sandbox: failover, whole-group reboot, recovery rates.

    python -m bench.membership [--txns 3000] [--clone-rows 200000] [--row-bytes 200] [--keep]

One `grproxy sandbox --members 3 --mode single-primary --port 0 --base-dir DIR --status-file F`
(started as tests/e2e/conftest.py starts it; ports and pids come from the status file), and on
it, in this order:

- (2) failover, member killed: SIGKILL to the primary's grproxy member process (its MariaDB
  keeps running); seconds from the kill until the first INSERT committed through the router.
  The killed member is then restarted (`grproxy serve --config <base>/memberN/grproxy.toml`)
  and waited for (ONLINE);
- (3) whole-group reboot: SIGKILL to all three member processes (the backends keep running),
  each restarted with `grproxy serve --config …` (they wait, RECOVERING/ERROR, for a group),
  then `grproxy reboot --config <each member's toml>`: the seconds that command takes (it
  returns once every member is ONLINE), and from the restarts to the first INSERT committed
  through the router;
- (4a) recovery from a donor's transaction cache: a secondary's member process is killed,
  --txns autocommit INSERTs go through the router (4 client threads), the member is restarted
  and recovers them: transactions fetched and per second as `/* grproxy */ MEMBER STATS` on its
  member port reports them (RECOVERY_FETCHED, RECOVERY_FETCH_TXNS_PER_S), and the seconds from
  the restart to ONLINE;
- (4b) recovery by clone: a secondary's member process is killed, --clone-rows rows of about
  --row-bytes bytes are loaded through the router (INSERT … SELECT in batches of 5000 rows),
  and the member is restarted with `grproxy serve --config … --clone` (a forced clone): the
  `clone_done` line of its log (bytes, seconds, MiB/s), and restart to ONLINE;
- (1) failover, backend killed: SIGKILL to the primary's MariaDB; seconds from the kill until
  the first INSERT committed through the router. Last, because the killed server is not
  started again.

The client that measures a failover retries one INSERT (a new id each time) in a loop: a fresh
connection after any error, connect timeout 1 s, read/write timeouts 2 s, 50 ms between tries;
the errors it got meanwhile are counted by errno and printed beside the figure.

The table is printed in the numbering above (1, 2, 3, 4a, 4b), with the load average before
and after (the machine has 2 cores and may be busy: figures move with it). The whole run takes
1-3 minutes with the defaults. Two runs at a load average of 4-7 on 2 cores (58 s and 81 s):
(1) 3.4 / 2.7 s (three failed backend probes a second apart, then the election); (2) 10.3 s
both times (the killed process is suspected after 5 s of silence and expelled after
member_expel_timeout_s = 5 s more, as in GR; meanwhile the router has no ONLINE primary and
writes get 1290); (3) reboot 4.4 / 5.2 s, restarts → first write 5.4 / 7.8 s; (4a) 2800 /
1600 txn/s (MEMBER STATS' rate is fetched transactions over the fetch phase, their apply
included: 3000 take 1-2 s, so it is noisy); (4b) 16.3 / 6.7 MiB/s (40 MiB).

It asserts nothing and exits 0; 1 when the sandbox could not be started or a step failed (the
steps measured until then are printed), 130 when interrupted. Everything it started is stopped
at the end, also on errors and Ctrl-C / SIGTERM: the members it restarted (each in its own
process group), then the sandbox's process group (its router, member processes and backends).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from bench.harness import StartFailure, cmdline, log_tail, pid_alive

USER = "root"
PASSWORD = ""
SANDBOX_START_TIMEOUT_S = 180.0
STOP_GRACE_S = 30.0
MEMBER_EXIT_TIMEOUT_S = 10.0
ONLINE_TIMEOUT_S = 150.0  # a restarted member until ONLINE (a clone included)
WRITE_TIMEOUT_S = 120.0  # a failover / reboot until the first committed write
REBOOT_TIMEOUT_S = 150.0
WAITING_TIMEOUT_S = 60.0  # restarted members until they answer GROUP STATUS
LOAD_BATCH_ROWS = 5000
WRITER_THREADS = 4
RETRY_SLEEP_S = 0.05


class StepFailed(Exception):
    """A step could not be measured: the benchmark prints what it has and exits 1."""


# ---------------------------------------------------------------------------------------------
# processes


def _die_with_parent() -> None:  # in the child between fork and exec (Linux)
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _exited(pid: int) -> bool:
    """Whether our child `pid` has exited (zombie or gone), without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _group_has_live_members(pgid: int) -> bool:
    """Whether a running (not zombie) process other than the leader is in process group `pgid`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pgid:
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@dataclass
class Member:
    id: str
    member_port: int
    pid: int  # its grproxy process now (the sandbox's child, or one this benchmark restarted)
    backend_port: int
    backend_pid: int


class Sandbox:
    """`grproxy sandbox` in its own process group, and the member processes restarted by us
    (each in a process group of its own, our children)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.sb_dir = base / "sb"
        self.status_file = base / "status.json"
        self.log = base / "sandbox.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.router_port = 0
        self.members: dict[str, Member] = {}
        self.restarted: dict[str, list[subprocess.Popen[bytes]]] = {}

    # --- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "grproxy", "sandbox", "--members", "3", "--mode", "single-primary",
                 "--port", "0", "--base-dir", str(self.sb_dir), "--status-file", str(self.status_file)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True, preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + SANDBOX_START_TIMEOUT_S
        while True:
            text = self.log.read_text(errors="replace")
            if any(line.startswith("grproxy sandbox ready") for line in text.splitlines()) and self.status_file.exists():
                with contextlib.suppress(json.JSONDecodeError):
                    doc = json.loads(self.status_file.read_text())
                    if doc.get("router") and all(m.get("member_port") and m.get("pid") for m in doc["members"]):
                        break
            if self.proc.poll() is not None:
                raise StartFailure(f"grproxy sandbox exited with {self.proc.returncode}:\n{log_tail(self.log)}")
            if time.monotonic() > deadline:
                raise StartFailure(f"grproxy sandbox not ready in {SANDBOX_START_TIMEOUT_S:.0f}s:\n{log_tail(self.log)}")
            time.sleep(0.2)
        self.router_port = int(doc["router"]["port"])
        for m in doc["members"]:
            self.members[m["id"]] = Member(m["id"], int(m["member_port"]), int(m["pid"]), int(m["backend"]["port"]),
                                           int(m["backend"]["pid"]))

    def stop(self) -> None:
        """Our restarted members (SIGTERM to their groups, SIGKILL after the grace), then the
        sandbox's group the same way. A group is signalled only while its leader, our child, is
        unreaped (its id is ours until then)."""
        procs = [p for ps in self.restarted.values() for p in ps]
        for p in procs:
            if not _exited(p.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in procs:
            while not _exited(p.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _exited(p.pid) or _group_has_live_members(p.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
        self.restarted.clear()
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        pgid = proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while not _exited(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        while _group_has_live_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _exited(pgid) or _group_has_live_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)

    # --- members -----------------------------------------------------------------------------

    def config(self, m: Member) -> Path:
        return self.sb_dir / m.id / "grproxy.toml"

    def member_log(self, m: Member) -> Path:
        return self.sb_dir / m.id / "grproxy.log"

    def _check_ours(self, pid: int, what: str) -> None:
        """Refuse (StepFailed) to signal a pid that is not a live process of this sandbox's
        directory (pids wrap quickly on a busy machine)."""
        if not pid_alive(pid):
            raise StepFailed(f"{what} (pid {pid}) is not running")
        if str(self.sb_dir) not in cmdline(pid):
            raise StepFailed(f"pid {pid} is not {what} of this sandbox: {cmdline(pid)[:200]!r}")

    def kill_member(self, m: Member) -> float:
        """SIGKILL to the member's grproxy process; returns the monotonic time of the kill and
        waits until it is gone."""
        self._check_ours(m.pid, f"{m.id}'s grproxy process")
        t = time.monotonic()
        os.kill(m.pid, signal.SIGKILL)
        ours = next((p for p in self.restarted.get(m.id, []) if p.pid == m.pid), None)
        deadline = time.monotonic() + MEMBER_EXIT_TIMEOUT_S
        while (not _exited(m.pid)) if ours is not None else pid_alive(m.pid):
            if time.monotonic() > deadline:
                raise StepFailed(f"{m.id} (pid {m.pid}) survived SIGKILL")
            time.sleep(0.02)
        return t

    def kill_backend(self, m: Member) -> float:
        self._check_ours(m.backend_pid, f"{m.id}'s backend")
        t = time.monotonic()
        os.kill(m.backend_pid, signal.SIGKILL)
        return t

    def restart_member(self, m: Member, *extra: str) -> None:
        """`grproxy serve --config <base>/memberN/grproxy.toml` (+ extra), logging to the
        member's log, in a process group of its own."""
        with open(self.member_log(m), "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "grproxy", "serve", "--config", str(self.config(m)), *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True, preexec_fn=_die_with_parent,
            )
        self.restarted.setdefault(m.id, []).append(proc)
        m.pid = proc.pid

    def by_member_port(self, port: int) -> Member:
        return next(m for m in self.members.values() if m.member_port == port)

    def tails(self, lines: int = 15) -> str:
        parts = [f"--- sandbox\n{log_tail(self.log, lines)}"]
        for m in self.members.values():
            parts.append(f"--- {m.id}\n{log_tail(self.member_log(m), lines)}")
        return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# SQL


def connect(port: int, connect_timeout: float = 2, timeout: float = 10) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, autocommit=True,
                           connect_timeout=connect_timeout, read_timeout=timeout, write_timeout=timeout)


def query(port: int, sql: str, timeout: float = 10) -> list[dict[str, Any]]:
    conn = connect(port, timeout=timeout)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        conn.close()


def execute(port: int, *statements: str, timeout: float = 120) -> None:
    conn = connect(port, connect_timeout=5, timeout=timeout)
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
    finally:
        conn.close()


def errno_of(exc: BaseException) -> int:
    if isinstance(exc, pymysql.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return -1  # not a MySQL error (socket, protocol)


def member_state(m: Member) -> str | None:
    try:
        return str(query(m.member_port, "/* grproxy */ GROUP STATUS", timeout=5)[0]["MEMBER_STATE"])
    except Exception:  # noqa: BLE001 - not answering yet
        return None


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, sb: Sandbox) -> float:
    """Poll `check` every 0.2 s; returns the monotonic time it held; StepFailed after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic()
        if time.monotonic() > deadline:
            raise StepFailed(f"{what}: not within {timeout_s:.0f}s\n{sb.tails()}")
        time.sleep(0.2)


def group_view(sb: Sandbox) -> list[tuple[Member, str, str]]:
    """replication_group_members (member, state, role) from the first member port that answers
    with every member's address."""
    for m in sb.members.values():
        try:
            rows = query(m.member_port, "SELECT MEMBER_PORT, MEMBER_STATE, MEMBER_ROLE "
                                        "FROM performance_schema.replication_group_members", timeout=5)
        except Exception:  # noqa: BLE001
            continue
        if rows and all(r["MEMBER_PORT"] for r in rows):
            return [(sb.by_member_port(int(r["MEMBER_PORT"])), str(r["MEMBER_STATE"]), str(r["MEMBER_ROLE"]))
                    for r in rows]
    return []


def primary(sb: Sandbox) -> Member:
    rows = [m for m, state, role in group_view(sb) if state == "ONLINE" and role == "PRIMARY"]
    if len(rows) != 1:
        raise StepFailed(f"expected one ONLINE primary: {group_view(sb)}")
    return rows[0]


def secondary(sb: Sandbox) -> Member:
    rows = [m for m, state, role in group_view(sb) if state == "ONLINE" and role == "SECONDARY"]
    if not rows:
        raise StepFailed(f"no ONLINE secondary: {group_view(sb)}")
    return rows[-1]


def all_online(sb: Sandbox, count: int = 3) -> bool:
    view = group_view(sb)
    return sum(1 for _, state, _ in view if state == "ONLINE") >= count


class RetryingWriter:
    """One INSERT through the router, retried until it commits: a fresh connection after any
    error, short timeouts, a new id every try (an unknown outcome must not collide)."""

    def __init__(self, port: int, table: str, first_id: int) -> None:
        self.port = port
        self.table = table
        self.next_id = first_id
        self.conn: pymysql.connections.Connection | None = None
        self.errnos: Counter[int] = Counter()

    def try_once(self) -> bool:
        i, self.next_id = self.next_id, self.next_id + 1
        try:
            if self.conn is None:
                self.conn = connect(self.port, connect_timeout=1, timeout=2)
            with self.conn.cursor() as cur:
                cur.execute(f"INSERT INTO {self.table} (id, v) VALUES (%s, 1)", (i,))
            return True
        except Exception as exc:  # noqa: BLE001 - every failure counts, by errno
            self.errnos[errno_of(exc)] += 1
            self.close()
            return False

    def until_committed(self, timeout_s: float) -> float | None:
        """Monotonic time of the first committed INSERT, or None after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while not self.try_once():
            if time.monotonic() > deadline:
                return None
            time.sleep(RETRY_SLEEP_S)
        return time.monotonic()

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def errnos_text(c: Counter[int]) -> str:
    return ", ".join(f"{'other' if e == -1 else e}×{n}" for e, n in sorted(c.items())) or "none"


def log_events(path: Path, offset: int, names: set[str]) -> list[dict[str, Any]]:
    """The JSON log lines after byte `offset` whose event is one of `names`."""
    out = []
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read().decode(errors="replace")
    except OSError:
        return out
    for line in data.splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(json.JSONDecodeError):
            doc = json.loads(line)
            if doc.get("event") in names:
                out.append(doc)
    return out


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# the steps


@dataclass
class Results:
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # key, scenario, measure, value, notes
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, scenario: str, measure: str, value: str, note: str = "") -> None:
        self.rows.append((key, scenario, measure, value, note))
        print(f"  [{key}] {scenario}: {measure} = {value}" + (f"  ({note})" if note else ""), flush=True)


class Bench:
    def __init__(self, sb: Sandbox, args: argparse.Namespace, results: Results) -> None:
        self.sb = sb
        self.args = args
        self.r = results
        self.ids = 1_000_000  # failover writers' ids; bulk rows use their own table

    def writer(self) -> RetryingWriter:
        w = RetryingWriter(self.sb.router_port, "bench.probe", self.ids)
        self.ids += 1_000_000
        return w

    def prepare(self) -> None:
        execute(self.sb.router_port,
                "CREATE DATABASE IF NOT EXISTS bench",
                "CREATE TABLE bench.probe (id BIGINT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB",
                "CREATE TABLE bench.small (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(40)) ENGINE=InnoDB",
                "CREATE TABLE bench.bulk (id BIGINT PRIMARY KEY, pad VARCHAR(1024) NOT NULL) ENGINE=InnoDB")
        w = self.writer()
        if w.until_committed(30) is None:
            raise StepFailed(f"a first write through the router did not commit: {errnos_text(w.errnos)}")
        w.close()

    def warm(self) -> RetryingWriter:
        """A writer whose connection just committed (the router's pools are warm)."""
        w = self.writer()
        if w.until_committed(30) is None:
            raise StepFailed(f"writes through the router fail before the kill: {errnos_text(w.errnos)}")
        w.errnos.clear()
        return w

    def failover(self, key: str, what: str, kill: Callable[[Member], float]) -> Member:
        old = primary(self.sb)
        w = self.warm()
        t_kill = kill(old)
        t_ok = w.until_committed(WRITE_TIMEOUT_S)
        w.close()
        if t_ok is None:
            raise StepFailed(f"{what}: no write committed within {WRITE_TIMEOUT_S:.0f}s "
                             f"(errors {errnos_text(w.errnos)})\n{self.sb.tails()}")
        wait_until("a new primary", lambda: primary(self.sb) is not old, 30, self.sb)
        new = primary(self.sb)
        self.r.add(key, f"failover, {what} SIGKILL", "kill → first write committed", f"{t_ok - t_kill:.2f} s",
                   f"{old.id} → {new.id}; client errors meanwhile: {errnos_text(w.errnos)}")
        return old

    def rejoin(self, m: Member) -> None:
        t0 = time.monotonic()
        self.sb.restart_member(m)
        t1 = wait_until(f"{m.id} ONLINE after its restart", lambda: member_state(m) == "ONLINE", ONLINE_TIMEOUT_S,
                        self.sb)
        wait_until("3 members ONLINE", lambda: all_online(self.sb), 30, self.sb)
        print(f"  {m.id} restarted: ONLINE after {t1 - t0:.1f}s", flush=True)

    def reboot(self) -> None:
        members = list(self.sb.members.values())
        for m in members:  # all within a moment
            self.sb.kill_member(m)
        t_restart = time.monotonic()
        for m in members:
            self.sb.restart_member(m)
        t_waiting = wait_until(
            "restarted members waiting for a group",
            lambda: all(member_state(m) in ("RECOVERING", "ERROR", "OFFLINE") for m in members),
            WAITING_TIMEOUT_S, self.sb)
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "grproxy", "reboot",
             *(a for m in members for a in ("--config", str(self.sb.config(m))))],
            capture_output=True, text=True, timeout=REBOOT_TIMEOUT_S + 30, stdin=subprocess.DEVNULL,
        )
        t_reboot = time.monotonic() - t0
        if done.returncode != 0:
            raise StepFailed(f"grproxy reboot exited {done.returncode}: {done.stdout}{done.stderr}\n{self.sb.tails()}")
        m_from = re.search(r"rebooted from \S+ \(127\.0\.0\.1:(\d+)\)", done.stdout)
        source = self.sb.by_member_port(int(m_from[1])).id if m_from else "?"
        w = self.writer()
        t_ok = w.until_committed(WRITE_TIMEOUT_S)
        w.close()
        if t_ok is None:
            raise StepFailed(f"no write after the reboot within {WRITE_TIMEOUT_S:.0f}s ({errnos_text(w.errnos)})\n"
                             f"{self.sb.tails()}")
        self.r.add("3", "whole-group reboot", "`grproxy reboot` until all ONLINE", f"{t_reboot:.2f} s",
                   f"rebooted from {source}; restarted members were waiting {t_waiting - t_restart:.1f}s after their start")
        self.r.add("3", "whole-group reboot", "restarts → first write committed", f"{t_ok - t_restart:.2f} s",
                   f"client errors after the reboot returned: {errnos_text(w.errnos)}")
        wait_until("3 members ONLINE after the reboot", lambda: all_online(self.sb), 30, self.sb)

    def write_many(self, n: int) -> tuple[float, Counter[int]]:
        """n autocommit INSERTs into bench.small through the router, over WRITER_THREADS
        connections; returns (seconds, errors by errno). A failed INSERT is retried with a new id."""
        errors: Counter[int] = Counter()
        lock = threading.Lock()
        quota = [n // WRITER_THREADS + (1 if i < n % WRITER_THREADS else 0) for i in range(WRITER_THREADS)]
        deadline = time.monotonic() + 120

        def run(t: int) -> None:
            next_id = (t + 1) * 10_000_000 + self.ids
            done = 0
            conn = None
            while done < quota[t] and time.monotonic() < deadline:
                try:
                    if conn is None:
                        conn = connect(self.sb.router_port, connect_timeout=2, timeout=10)
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO bench.small (id, v, note) VALUES (%s, %s, 'recovery')",
                                    (next_id, done))
                    done += 1
                except Exception as exc:  # noqa: BLE001
                    with lock:
                        errors[errno_of(exc)] += 1
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                    conn = None
                    time.sleep(RETRY_SLEEP_S)
                next_id += 1
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

        t0 = time.monotonic()
        threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(WRITER_THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.ids += 100_000_000
        return time.monotonic() - t0, errors

    def recovery_from_cache(self) -> None:
        n = self.args.txns
        victim = secondary(self.sb)
        self.sb.kill_member(victim)
        seconds, errors = self.write_many(n)
        print(f"  {victim.id} down: {n} INSERTs through the router in {seconds:.1f}s ({n / seconds:.0f}/s), "
              f"errors {errnos_text(errors)}", flush=True)
        offset = log_size(self.sb.member_log(victim))
        t0 = time.monotonic()
        self.sb.restart_member(victim)
        t1 = wait_until(f"{victim.id} ONLINE after its restart", lambda: member_state(victim) == "ONLINE",
                        ONLINE_TIMEOUT_S, self.sb)
        stats = query(victim.member_port, "/* grproxy */ MEMBER STATS")[0]
        events = {e["event"]: e for e in log_events(self.sb.member_log(victim), offset,
                                                     {"recovery_fetch", "recovered", "clone_done"})}
        fetched = stats.get("RECOVERY_FETCHED")
        rate = stats.get("RECOVERY_FETCH_TXNS_PER_S")
        extra = []
        if "recovery_fetch" in events:
            extra.append(f"missing at join {events['recovery_fetch'].get('missing')}")
        if "clone_done" in events:
            extra.append("it CLONED instead (cache short?)")
        self.r.add("4a", f"recovery from a donor's cache ({n} txns written while down)",
                   "fetched txns/s (MEMBER STATS)", f"{float(rate or 0):.0f} txn/s",
                   f"{victim.id}: fetched {fetched}, phase {stats.get('RECOVERY_PHASE')}, "
                   + (", ".join(extra) + ", " if extra else "") + f"restart → ONLINE {t1 - t0:.1f}s")
        wait_until("3 members ONLINE", lambda: all_online(self.sb), 30, self.sb)

    def recovery_by_clone(self) -> None:
        rows, width = self.args.clone_rows, self.args.row_bytes
        victim = secondary(self.sb)
        self.sb.kill_member(victim)
        t0 = time.monotonic()
        for start in range(1, rows + 1, LOAD_BATCH_ROWS):
            end = min(rows, start + LOAD_BATCH_ROWS - 1)
            execute(self.sb.router_port,
                    f"INSERT INTO bench.bulk (id, pad) SELECT seq, RPAD(SHA2(seq, 256), {width}, SHA2(seq, 512)) "
                    f"FROM bench.seq_{start}_to_{end}", timeout=300)
        load_s = time.monotonic() - t0
        print(f"  {victim.id} down: loaded {rows} rows of {width} bytes in {load_s:.1f}s "
              f"({rows / load_s:.0f} rows/s, {rows * width / (1 << 20) / load_s:.1f} MiB/s of row text)", flush=True)
        offset = log_size(self.sb.member_log(victim))
        t0 = time.monotonic()
        self.sb.restart_member(victim, "--clone")
        t1 = wait_until(f"{victim.id} ONLINE after its --clone restart", lambda: member_state(victim) == "ONLINE",
                        ONLINE_TIMEOUT_S, self.sb)
        stats = query(victim.member_port, "/* grproxy */ MEMBER STATS")[0]
        done = log_events(self.sb.member_log(victim), offset, {"clone_done"})
        if not done:
            raise StepFailed(f"{victim.id} came ONLINE without a clone_done log line (stats {stats})")
        c = done[-1]
        mib = int(c.get("bytes", 0)) / (1 << 20)
        self.r.add("4b", f"recovery by clone ({rows} rows x {width} B)", "clone MiB/s (clone_done)",
                   f"{float(c.get('mib_per_s', 0)):.2f} MiB/s",
                   f"{victim.id}: {mib:.1f} MiB, {c.get('rows')} rows, {c.get('tables')} tables in {c.get('seconds')}s "
                   f"(MEMBER STATS {stats.get('CLONE_MIB_PER_S')} MiB/s, {stats.get('CLONE_BYTES')} B); "
                   f"restart → ONLINE {t1 - t0:.1f}s")
        wait_until("3 members ONLINE", lambda: all_online(self.sb), 30, self.sb)


def load_text() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def print_table(results: Results) -> None:
    order = {"1": 0, "2": 1, "3": 2, "4a": 3, "4b": 4}
    rows = sorted(results.rows, key=lambda r: order.get(r[0], 9))  # stable: 3's two lines keep their order
    w_s = max([len(r[1]) for r in rows] + [8])
    w_m = max([len(r[2]) for r in rows] + [7])
    w_v = max([len(r[3]) for r in rows] + [5])
    header = f"{'#':<3} {'scenario':<{w_s}}  {'measure':<{w_m}}  {'value':>{w_v}}  notes"
    print(header)
    print("-" * min(len(header) + 40, 160))
    for key, scenario, measure, value, note in rows:
        print(f"{key:<3} {scenario:<{w_s}}  {measure:<{w_m}}  {value:>{w_v}}  {note}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--txns", type=int, default=3000, help="INSERTs written while a member is down (4a; default 3000)")
    ap.add_argument("--clone-rows", type=int, default=200_000, help="rows loaded before the clone (4b; default 200000)")
    ap.add_argument("--row-bytes", type=int, default=200, help="bytes per loaded row (default 200)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs, datadirs)")
    args = ap.parse_args()

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="gm-", dir="/tmp"))  # short: unix socket paths
    sb = Sandbox(work)
    results = Results()
    load_before = load_text()
    t_start = time.monotonic()
    code = 0
    print(f"membership: 3-member single-primary sandbox; {args.txns} txns for 4a, {args.clone_rows} rows x "
          f"{args.row_bytes} B for 4b; work dir {work}", flush=True)
    print(f"load average (1/5/15 min) before start: {load_before} (2 cores, shared)", flush=True)
    try:
        t0 = time.monotonic()
        sb.start()
        print(f"sandbox ready in {time.monotonic() - t0:.1f}s: router {sb.router_port}, members "
              f"{[m.member_port for m in sb.members.values()]}", flush=True)
        bench = Bench(sb, args, results)
        bench.prepare()
        print("2: failover, primary's member process killed", flush=True)
        old = bench.failover("2", "primary member process", sb.kill_member)
        bench.rejoin(old)
        print("3: whole-group reboot", flush=True)
        bench.reboot()
        print("4a: recovery from a donor's transaction cache", flush=True)
        bench.recovery_from_cache()
        print("4b: recovery by clone", flush=True)
        bench.recovery_by_clone()
        print("1: failover, primary's backend killed", flush=True)
        bench.failover("1", "primary backend (MariaDB)", sb.kill_backend)
    except StartFailure as exc:
        print(f"membership: could not start the sandbox: {exc}", file=sys.stderr)
        code = 1
    except StepFailed as exc:
        print(f"membership: step failed: {exc}", file=sys.stderr)
        results.notes.append(f"stopped early: {str(exc).splitlines()[0]}")
        code = 1
    except KeyboardInterrupt:
        print("membership: interrupted; stopping everything", file=sys.stderr)
        code = 130
    except Exception as exc:  # noqa: BLE001 - a client error mid-step: print what was measured
        import traceback

        traceback.print_exc()
        results.notes.append(f"stopped early: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        sb.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"Membership on a 3-member grproxy sandbox (single-primary; MariaDB backends; times from the "
          f"benchmark's clock), total {time.monotonic() - t_start:.0f}s")
    print_table(results)
    for note in results.notes:
        print(f"  {note}")
    print(f"load average (1/5/15 min): before {load_before}, after {load_text()} (2 cores; other work on the "
          "machine skews these figures)")
    return code


if __name__ == "__main__":
    sys.exit(main())
