"""The group over real TCP: three OS processes on loopback (``replication.gcs.xcom.node``).

- they deliver the same sequence; a SIGKILLed member is expelled, comes back as a new
  incarnation, and the group delivers on (TLS off, and mutual TLS with VERIFY_IDENTITY);
- a process of another group is refused at the handshake;
- a connection from an address outside ``ip_allowlist`` is refused (and a member on an allowed
  address joins in the same group, so the refusal is the allowlist's doing).

Every wait is bounded; every process is killed at teardown. Nothing here measures time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from grproxy.mysqld import free_port
from replication.gcs.xcom.tls import generate_certificates

WAIT_S = 60  # bound of any single wait; generous for a loaded 2-core machine
GROUP = "itest"
# Fast failure detection so an expel takes a couple of seconds, not ten.
FAST_FD = [
    "--core", "heartbeat_interval_ms=200",
    "--core", "suspicion_timeout_ms=1000",
    "--core", "member_expel_timeout_ms=500",
    "--core", "join_retry_interval_ms=300",
]  # fmt: skip




class NodeProc:
    """One member process; every stdout JSON line is kept, in order."""

    def __init__(self, name: str, address: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.address = address
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "replication.gcs.xcom.node",
                "--name", name, "--address", address, "--log-level", "info", *args,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, what: str, pred: Callable[[list[dict[str, Any]]], Any], timeout_s: float = WAIT_S) -> Any:
        """Wait until ``pred(events)`` is truthy; return its value. Fails the test on timeout,
        with the tail of this member's log."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                got = pred(self.events)
                if got:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = self.log_path.read_text()[-3000:]
                    pytest.fail(f"{self.name}: timed out waiting for {what}\n--- log tail ---\n{tail}")
                self._cond.wait(min(remaining, 0.5))

    # views and deliveries as seen so far
    def views(self) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e["event"] == "view"]

    def deliveries(self) -> list[tuple[str, int, str]]:
        with self._cond:
            return [(e["origin"], e["seq"], e["payload"]) for e in self.events if e["event"] == "delivery"]

    def wait_view(self, pred: Callable[[list[str]], bool], what: str) -> dict[str, Any]:
        def check(events: list[dict[str, Any]]) -> dict[str, Any] | None:
            views = [e for e in events if e["event"] == "view"]
            return views[-1] if views and pred(views[-1]["members"]) else None

        return self.wait(what, check)

    def wait_delivered(self, n: int) -> None:
        self.wait(f"{n} deliveries", lambda evs: sum(e["event"] == "delivery" for e in evs) >= n)

    def stats(self) -> dict[str, Any]:
        before = len(self.events)
        self.send({"cmd": "stats"})
        return self.wait("stats", lambda evs: next((e for e in evs[before:] if e["event"] == "stats"), None))

    def wait_counter(self, key: str, minimum: int) -> int:
        """Poll the transport counter ``key`` until it reaches ``minimum`` (bounded)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            value = int(self.stats()["transport"][key])
            if value >= minimum:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: transport counter {key} stayed at {value} (< {minimum})")
            time.sleep(0.2)

    def member_id(self) -> str:
        return self.wait("started", lambda evs: next((e["member"] for e in evs if e["event"] == "started"), None))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., NodeProc]]:
    procs: list[NodeProc] = []

    def start(name: str, address: str, *args: str) -> NodeProc:
        node = NodeProc(name, address, list(args), tmp_path)
        procs.append(node)
        return node

    yield start
    for p in procs:  # teardown: nothing survives the test
        p.close()


def names(members: list[str]) -> list[str]:
    return sorted(m.split("#")[0] for m in members)


def burst(nodes: list[NodeProc], count: int, tag: str, pad: int = 0) -> None:
    """Every node broadcasts ``count`` messages ``<tag>-<node>-<i>`` (+ ``pad`` bytes); waits
    for the replies and checks every broadcast was delivered to its origin."""
    marks = [len(n.events) for n in nodes]
    for n in nodes:
        n.send({"cmd": "burst", "count": count, "prefix": f"{tag}-{n.name}", "window": 8, "pad": pad})
    for n, mark in zip(nodes, marks):
        reply = n.wait(
            f"burst {tag} done",
            lambda evs, mark=mark: next(
                (e for e in evs[mark:] if e["event"] == "reply" and e.get("cmd") == "burst"), None
            ),
        )
        assert reply["failed"] == 0, reply


@pytest.mark.parametrize("tls", ["plain", "verify_identity"])
def test_three_processes_agree_and_survive_a_kill(tls: str, spawn: Callable[..., NodeProc], tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    addrs = [f"127.0.0.1:{p}" for p in ports]
    tls_args: dict[str, list[str]] = {f"n{i}": [] for i in range(3)}
    if tls == "verify_identity":
        certs = generate_certificates(str(tmp_path / "certs"), ["n0", "n1", "n2"], ["127.0.0.1"])
        for name, files in certs.items():
            tls_args[name] = [
                "--ssl-mode", "VERIFY_IDENTITY",
                "--ssl-ca", files.ssl_ca, "--ssl-cert", files.ssl_cert, "--ssl-key", files.ssl_key,
            ]  # fmt: skip

    def start(i: int, *mode: str) -> NodeProc:
        name = f"n{i}"
        return spawn(name, addrs[i], "--group", GROUP, *FAST_FD, *tls_args[name], *mode)

    n0 = start(0, "--bootstrap")
    n0.wait_view(lambda m: names(m) == ["n0"], "bootstrap view")
    n1 = start(1, "--join", addrs[0])
    n2 = start(2, "--join", addrs[0])
    for n in (n0, n1, n2):
        n.wait_view(lambda m: names(m) == ["n0", "n1", "n2"], "view of three")

    # 1. the same sequence everywhere
    burst([n0, n1, n2], 40, "a")
    for n in (n0, n1, n2):
        n.wait_delivered(120)
    seqs = [n.deliveries() for n in (n0, n1, n2)]
    assert len(seqs[0]) == 120
    assert seqs[0] == seqs[1] == seqs[2]
    assert {origin.split("#")[0] for origin, _, _ in seqs[0]} == {"n0", "n1", "n2"}
    if tls == "verify_identity":
        s = n0.stats()
        assert s["transport"]["connections_accepted"] >= 2 and s["transport"]["handshakes_rejected"] == 0

    # 2. SIGKILL n2: it is expelled, the others deliver on
    old_n2 = n2.member_id()
    n2.kill()
    for n in (n0, n1):
        view = n.wait_view(lambda m: names(m) == ["n0", "n1"], "view without the killed member")
        assert old_n2 in view["left"]
    burst([n0, n1], 20, "b")
    for n in (n0, n1):
        n.wait_delivered(160)
    assert n0.deliveries() == n1.deliveries()

    # 3. n2 restarts on the same address: a new incarnation joins, and all deliver on
    n2b = start(2, "--join", addrs[0])
    new_n2 = n2b.member_id()
    assert new_n2 != old_n2 and int(new_n2.split("#")[1]) > int(old_n2.split("#")[1])
    views = [n.wait_view(lambda m: names(m) == ["n0", "n1", "n2"], "view with n2 again") for n in (n0, n1, n2b)]
    assert all(new_n2 in v["members"] for v in views)
    assert views[0]["delivered"] == views[1]["delivered"] == 160
    burst([n0, n1, n2b], 20, "c")
    for n in (n0, n1):
        n.wait_delivered(220)
    n2b.wait_delivered(60)
    d0, d1, d2 = n0.deliveries(), n1.deliveries(), n2b.deliveries()
    assert d0 == d1
    assert d2 == d0[160:]  # from its first view on, the new incarnation sees the same order
    assert {o.split("#")[0] for o, _, p in d2 if p.startswith("c-")} == {"n0", "n1", "n2"}
    # the dead incarnation's traffic never reached the new one
    assert all(not p.startswith("a-n2") for _, _, p in d2)


def test_member_of_another_group_is_refused(spawn: Callable[..., NodeProc]) -> None:
    a0 = f"127.0.0.1:{free_port()}"
    n0 = spawn("n0", a0, "--group", GROUP, *FAST_FD, "--bootstrap")
    n0.wait_view(lambda m: names(m) == ["n0"], "bootstrap view")
    intruder = spawn("x1", f"127.0.0.1:{free_port()}", "--group", "some-other-group", *FAST_FD, "--join", a0)
    intruder.member_id()
    n0.wait_counter("handshakes_rejected", 1)
    # a member of the right group still gets in, so n0 was healthy all along
    n1 = spawn("n1", f"127.0.0.1:{free_port()}", "--group", GROUP, *FAST_FD, "--join", a0)
    n1.wait_view(lambda m: names(m) == ["n0", "n1"], "view with the right member")
    assert not intruder.views()
    assert all("x1" not in m for v in n0.views() for m in v["members"])


def test_address_outside_allowlist_is_refused(spawn: Callable[..., NodeProc]) -> None:
    # Outbound connections come from the host of the member's own address, so a member
    # listening on 127.0.0.2 dials from 127.0.0.2, which n0's allowlist leaves out.
    a0 = f"127.0.0.1:{free_port()}"
    n0 = spawn("n0", a0, "--group", GROUP, *FAST_FD, "--ip-allowlist", "127.0.0.1/32", "--bootstrap")
    n0.wait_view(lambda m: names(m) == ["n0"], "bootstrap view")
    outsider = spawn("n1", f"127.0.0.2:{free_port('127.0.0.2')}", "--group", GROUP, *FAST_FD, "--join", a0)
    outsider.member_id()
    n0.wait_counter("connections_refused_allowlist", 1)
    insider = spawn("n2", f"127.0.0.1:{free_port()}", "--group", GROUP, *FAST_FD, "--join", a0)
    insider.wait_view(lambda m: names(m) == ["n0", "n2"], "view with the allowed member")
    assert not outsider.views()
    assert "ip_allowlist" in n0.log_path.read_text()


def test_members_with_different_compression_and_fragment_sizes_agree(spawn: Callable[..., NodeProc]) -> None:
    """Compression is flagged per frame and fragments are reassembled per sender, so members
    with different compression_threshold / communication_max_message_size deliver the same
    large messages in the same order."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    settings = [
        ["--compression-threshold", "0", "--max-message-size", "0"],  # neither
        ["--compression-threshold", "100", "--max-message-size", "128"],  # both (compressed, then cut)
        ["--compression-threshold", "0", "--max-message-size", "1000"],  # fragments only
    ]
    n0 = spawn("n0", addrs[0], "--group", GROUP, *FAST_FD, *settings[0], "--bootstrap")
    n0.wait_view(lambda m: names(m) == ["n0"], "bootstrap view")
    n1 = spawn("n1", addrs[1], "--group", GROUP, *FAST_FD, *settings[1], "--join", addrs[0])
    n2 = spawn("n2", addrs[2], "--group", GROUP, *FAST_FD, *settings[2], "--join", addrs[0])
    nodes = [n0, n1, n2]
    for n in nodes:
        n.wait_view(lambda m: names(m) == ["n0", "n1", "n2"], "view of three")
    burst(nodes, 10, "big", pad=50_000)
    for n in nodes:
        n.wait_delivered(30)
    d = [n.deliveries() for n in nodes]
    assert d[0] == d[1] == d[2]
    assert all(len(p) > 50_000 for _, _, p in d[0])
    t1 = n1.stats()["transport"]
    t2 = n2.stats()["transport"]
    assert t1["messages_compressed"] > 0 and t1["messages_fragmented"] > 0
    assert t2["messages_compressed"] == 0 and t2["messages_fragmented"] > 0
    assert n0.stats()["transport"]["messages_fragmented"] == 0
