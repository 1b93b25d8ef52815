"""What does grproxy cost per query? sysbench direct vs a bare byte relay vs grproxy.

    python -m bench.proxy_overhead [--seconds 10] [--threads 1,8,32] [--tests oltp_point_select,oltp_read_only]

Starts one MariaDB/MySQL server on a temporary datadir, the bare relay (bench/relay.py, the
ceiling for a Python proxy) and grproxy in front of it, then runs each sysbench test and
thread count against the three targets, alternating within the same run so that they share
the machine's state. Prints QPS, p95 latency and the ratios grproxy/direct and grproxy/relay.
It asserts nothing: the figures go into issue notes.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grproxy.mysqld import free_port, start_server

SYSBENCH_TABLES = 4
SYSBENCH_TABLE_SIZE = 10000


def wait_port(port: int, timeout_s: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def sysbench(test: str, port: int, threads: int, seconds: int, extra: list[str], action: str = "run") -> str:
    cmd = [
        "sysbench", test, "--db-driver=mysql", "--mysql-host=127.0.0.1", f"--mysql-port={port}",
        "--mysql-user=root", "--mysql-password=", "--mysql-db=sbtest", f"--tables={SYSBENCH_TABLES}",
        f"--table-size={SYSBENCH_TABLE_SIZE}", f"--threads={threads}", f"--time={seconds}",
        "--percentile=95", "--report-interval=0", *extra, action,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"sysbench failed ({' '.join(cmd)}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse(out: str) -> tuple[float, float, int]:
    qps = float(re.search(r"queries:\s+\d+\s+\(([\d.]+) per sec", out).group(1))  # type: ignore[union-attr]
    p95 = float(re.search(r"95th percentile:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = int(re.search(r"ignored errors:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    return qps, p95, errors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--threads", default="1,8,32")
    ap.add_argument("--tests", default="oltp_point_select,oltp_read_only")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the alternation this many times")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    tests = args.tests.split(",")

    with tempfile.TemporaryDirectory(prefix="grproxy-bench-") as tmp:
        server = start_server(Path(tmp) / "db", extra_options={"max_connections": "1000"})
        procs: list[subprocess.Popen[bytes]] = []
        try:
            relay_port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.relay", str(relay_port), "127.0.0.1", str(server.port)],
                                          stdout=subprocess.DEVNULL))
            proxy_port = free_port()
            conf = Path(tmp) / "grproxy.toml"
            conf.write_text(
                f'[frontend]\nport = {proxy_port}\n[[users]]\nname = "root"\npassword = ""\n'
                f'[[backends]]\nname = "db1"\nport = {server.port}\nuser = "{server.user}"\npassword = "{server.password}"\n'
                '[log]\nlevel = "warning"\n'
            )
            procs.append(subprocess.Popen([sys.executable, "-m", "grproxy", "serve", "--config", str(conf)]))
            wait_port(relay_port)
            wait_port(proxy_port)
            import pymysql

            c = pymysql.connect(host="127.0.0.1", port=server.port, user="root", password="")
            c.cursor().execute("CREATE DATABASE IF NOT EXISTS sbtest")
            c.close()
            sysbench("oltp_read_only", server.port, 4, 60, [], action="prepare")
            targets = {"direct": server.port, "relay": relay_port, "grproxy": proxy_port}
            pids = {"direct": None, "relay": procs[0].pid, "grproxy": procs[1].pid}
            print(f"backend: {server.binary.flavor} {'.'.join(map(str, server.binary.version))}; "
                  f"{args.seconds}s per run; sysbench {SYSBENCH_TABLES}x{SYSBENCH_TABLE_SIZE} rows")
            print(f"{'test':<20}{'thr':>4}{'ps':>6} | {'direct qps':>11}{'relay qps':>11}{'grproxy qps':>12} | "
                  f"{'p95 d/r/g ms':>18} | {'g/direct':>8}{'g/relay':>8}  errors")
            for test in tests:
                for ps_mode in ("disable",):
                    for t in threads:
                        sums = {k: [0.0, 0.0, 0, 0.0, 0] for k in targets}
                        for _ in range(args.rounds):
                            for name, port in targets.items():
                                pid = pids[name]
                                cpu0 = cpu_seconds(pid) if pid else 0.0
                                try:
                                    out = sysbench(test, port, t, args.seconds, [f"--db-ps-mode={ps_mode}"])
                                except RuntimeError as exc:
                                    raise RuntimeError(f"target {name} (port {port}, backend alive: {server.alive()}): {exc}") from None
                                cpu1 = cpu_seconds(pid) if pid else 0.0
                                qps, p95, err = parse(out)
                                queries = int(re.search(r"queries:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
                                sums[name][0] += qps / args.rounds
                                sums[name][1] += p95 / args.rounds
                                sums[name][2] += err
                                sums[name][3] += cpu1 - cpu0
                                sums[name][4] += queries
                        d, r, g = (sums[k] for k in ("direct", "relay", "grproxy"))
                        print(f"{test:<20}{t:>4}{ps_mode[:5]:>6} | {d[0]:>11.0f}{r[0]:>11.0f}{g[0]:>12.0f} | "
                              f"{d[1]:>6.2f}/{r[1]:>5.2f}/{g[1]:>5.2f} | {g[0] / d[0]:>8.2f}{g[0] / r[0]:>8.2f} | "
                              f"{1e6 * r[3] / max(r[4], 1):>6.1f}/{1e6 * g[3] / max(g[4], 1):>5.1f}  "
                              f"{int(d[2])}/{int(r[2])}/{int(g[2])}", flush=True)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
