"""Group communication throughput and latency over real TCP on loopback.

``python -m bench.gcs_throughput [--duration-ms 2500] [--window 16] [--members 3,5]``

Every member is a separate OS process (``python -m replication.gcs.xcom.node``, uvloop), so
the numbers include the real transport, framing, the Paxos core and the asyncio binding, and
the processes compete for the machine's cores as a real deployment would. For each group size
and compression setting one group is started (n0 bootstraps, the rest join); then for each
payload size *every* member broadcasts for ``duration`` with at most ``window`` undelivered
messages of its own, and reports messages/s and its broadcast -> local delivery latency.

Columns: ``msgs/s`` = messages delivered in total order per second (all origins together);
``p50``/``p99`` = the worst member's percentile; ``MB/s`` = payload bytes per second;
``wire/payload`` = transport bytes sent per payload byte (below 1 with compression on);
``CPU µs/msg`` = CPU time (user + system, every member process together, from /proc) per
ordered message: unlike msgs/s and latency it hardly moves when other jobs load the machine;
``msgs/slot`` = messages per proposed batch (one Paxos instance each).
"Compression on" means ``compression_threshold = 1024`` (GR's default, 1000000, would leave
these messages alone): the transport compresses every frame above 1 KiB, i.e. most batches.
After each run the members' delivery digests are compared (same messages, same order).

Goal (not a test): >= 20k ordered messages/s on 3 members with p99 <= 5 ms for 1 KiB.
Benchmarks never fail a test; this prints a table and exits 0 unless a group failed to form.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from grproxy.mysqld import free_port

GROUP_FORM_TIMEOUT_S = 60
# A member stops a load when nothing of its own is delivered for LOAD_STALL_MS (and counts the
# rest as failed); it may wait that long twice (while sending, then while draining).
LOAD_STALL_MS = 10_000
LOAD_GRACE_S = 2 * LOAD_STALL_MS / 1000 + 15
STOP_TIMEOUT_S = 5




class Member:
    """One node process; stdout JSON lines are read by a thread into a queue."""

    def __init__(self, name: str, port: int, args: list[str]) -> None:
        self.name = name
        self.address = f"127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "replication.gcs.xcom.node",
            "--name",
            name,
            "--address",
            self.address,
            "--group",
            "bench",
            "--quiet",
            "--log-level",
            "warning",
            *args,
            *(["--profile", f"{os.environ['GCS_BENCH_PROFILE']}.{name}"] if os.environ.get("GCS_BENCH_PROFILE") else []),
        ]
        log_dir = os.environ.get("GCS_BENCH_LOG_DIR")
        stderr = open(os.path.join(log_dir, f"{name}.log"), "a") if log_dir else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.last_view: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, kind: str, deadline: float) -> dict[str, Any]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {kind!r} event in time")
            try:
                ev = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if ev.get("event") == "view":
                self.last_view = ev["members"]
            if ev.get("event") == kind:
                return ev

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "exit"})
                self.proc.wait(STOP_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@dataclass
class Row:
    members: int
    compression: bool
    size: int
    msgs_per_s: float
    p50_ms: float
    p99_ms: float
    mb_per_s: float
    wire_ratio: float
    agreed: bool
    failed: int
    cpu_us_per_msg: float
    msgs_per_slot: float


def cpu_s(members: list[Member]) -> float:
    """User + system CPU seconds of the member processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for m in members:
        with open(f"/proc/{m.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def form_group(n: int, compression: bool) -> list[Member]:
    threshold = "1024" if compression else "0"
    common = ["--compression-threshold", threshold]
    ports = [free_port() for _ in range(n)]
    members = [Member("n0", ports[0], [*common, "--bootstrap"])]
    seed = members[0].address
    members += [Member(f"n{i}", ports[i], [*common, "--join", seed]) for i in range(1, n)]
    deadline = time.monotonic() + GROUP_FORM_TIMEOUT_S
    for m in members:
        while len(m.last_view) < n:
            m.wait_for("view", deadline)
    return members


def stats_of(members: list[Member]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    for m in members:
        m.send({"cmd": "stats"})
    return [m.wait_for("stats", deadline) for m in members]


def run_load(members: list[Member], size: int, duration_ms: int, window: int, compression: bool) -> Row:
    before = stats_of(members)
    cpu_before = cpu_s(members)
    for m in members:
        m.send(
            {"cmd": "load", "duration_ms": duration_ms, "size": size, "window": window, "timeout_ms": LOAD_STALL_MS}
        )
    deadline = time.monotonic() + duration_ms / 1000 + LOAD_GRACE_S
    results = [m.wait_for("load_done", deadline) for m in members]
    cpu_used = cpu_s(members) - cpu_before
    # every member delivers everything: wait (bounded) until the counts agree
    agreed = False
    after: list[dict[str, Any]] = []
    settle = time.monotonic() + 10
    while time.monotonic() < settle:
        after = stats_of(members)
        if len({s["delivered"] for s in after}) == 1 and len({s["digest"] for s in after}) == 1:
            agreed = True
            break
        time.sleep(0.2)
    total = sum(r["count"] - r["failed"] for r in results)
    elapsed = max(r["elapsed_s"] for r in results)
    wire = sum(a["transport"]["bytes_sent"] - b["transport"]["bytes_sent"] for a, b in zip(after, before))
    payload_bytes = total * size * (len(members) - 1)  # each payload travels to every other member
    proposals = sum(a["counters"]["proposals"] - b["counters"]["proposals"] for a, b in zip(after, before))
    return Row(
        members=len(members),
        compression=compression,
        size=size,
        msgs_per_s=total / elapsed,
        p50_ms=max(r["p50_ms"] for r in results),
        p99_ms=max(r["p99_ms"] for r in results),
        mb_per_s=total * size / elapsed / 1e6,
        wire_ratio=wire / payload_bytes if payload_bytes else 0.0,
        agreed=agreed,
        failed=sum(r["failed"] for r in results),
        cpu_us_per_msg=cpu_used / total * 1e6 if total else 0.0,
        msgs_per_slot=total / proposals if proposals else 0.0,
    )


def print_table(rows: list[Row]) -> None:
    head = f"{'members':>7} {'compr':>5} {'payload':>8} {'msgs/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'MB/s':>7} {'wire/payload':>12} {'same order':>10} {'failed':>6} {'CPU µs/msg':>10} {'msgs/slot':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        size = f"{r.size // 1024} KiB" if r.size >= 1024 else f"{r.size} B"
        print(
            f"{r.members:>7} {'on' if r.compression else 'off':>5} {size:>8} {r.msgs_per_s:>9,.0f} "
            f"{r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.mb_per_s:>7.1f} {r.wire_ratio:>12.2f} {'yes' if r.agreed else 'NO':>10} {r.failed:>6} {r.cpu_us_per_msg:>10.0f} {r.msgs_per_slot:>9.1f}"
        )
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gcs_throughput", description=__doc__.split("\n")[0])
    p.add_argument("--members", default="3,5")
    p.add_argument("--sizes", default="100,1024,65536")
    p.add_argument("--compression", default="off,on")
    p.add_argument("--duration-ms", type=int, default=2500)
    p.add_argument("--window", type=int, default=16, help="undelivered broadcasts per member")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"gcs throughput: separate processes on loopback, uvloop, {os.cpu_count()} CPUs, "
        f"{args.duration_ms} ms per run, window {args.window} per member, every member sends"
    )
    rows: list[Row] = []
    started = time.monotonic()
    for n in (int(x) for x in args.members.split(",")):
        for compression in (c == "on" for c in args.compression.split(",")):
            members: list[Member] = []
            try:
                members = form_group(n, compression)
                for size in sizes:
                    row = run_load(members, size, args.duration_ms, args.window, compression)
                    rows.append(row)
                    print(f"  done: {row}", file=sys.stderr, flush=True)
            except TimeoutError as exc:
                print(f"members={n} compression={compression}: {exc}", file=sys.stderr)
                print_table(rows)
                return 1
            finally:
                for m in members:
                    m.stop()
    print_table(rows)
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
