"""`grproxy sandbox` as a user runs it: ready line, the mariadb client, status file, clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grproxy.mysqld import find_client_binary, free_port

READY_TIMEOUT_S = 120


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("members", [1, 3])
def test_sandbox_ready_connect_and_stop(tmp_path: Path, members: int) -> None:
    status_file = tmp_path / "status.json"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "grproxy", "sandbox", "--members", str(members), "--port", str(port),
         "--base-dir", str(tmp_path / "sb"), "--status-file", str(status_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "ready" in line:
                break
        ready = next((l for l in lines if "ready" in l), None)
        assert ready is not None, "no ready line:\n" + "".join(lines)
        rest = proc.stdout.readline()  # the connect hint follows the ready line
        assert f"-P{port}" in rest and "-uroot" in rest, rest

        doc = json.loads(status_file.read_text())
        assert doc["router"]["port"] == port and doc["router"]["host"] == "127.0.0.1"
        assert len(doc["members"]) == members
        for m in doc["members"]:
            assert set(m) >= {"id", "member_port", "group_port", "http_port", "pid", "backend"}
            assert set(m["backend"]) >= {"host", "port", "pid", "datadir", "user", "password"}
            assert _alive(m["backend"]["pid"])

        client = find_client_binary()

        def sql(p: int, text: str, user: str = "root", password: str = "") -> subprocess.CompletedProcess[str]:
            auth = [f"-u{user}"] + ([f"-p{password}"] if password else [])
            return subprocess.run([str(client), "-h127.0.0.1", f"-P{p}", *auth, "--batch", "--skip-column-names",
                                   "-e", text], capture_output=True, text=True, timeout=60)

        out = sql(port, "CREATE DATABASE IF NOT EXISTS sb; CREATE TABLE sb.t (id INT PRIMARY KEY, v VARCHAR(40));"
                        "INSERT INTO sb.t VALUES (1, 'a'),(2, 'b'); UPDATE sb.t SET v = UUID() WHERE id = 2;"
                        "SELECT SUM(id) FROM sb.t")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "3"
        members_out = sql(port, "SELECT MEMBER_STATE, MEMBER_ROLE FROM performance_schema.replication_group_members")
        assert sorted(members_out.stdout.split("\n")[:-1]) == sorted(
            ["ONLINE\tPRIMARY"] + ["ONLINE\tSECONDARY"] * (members - 1)), members_out.stdout
        # Every backend holds the same rows (the group applied them everywhere).
        deadline = time.monotonic() + 30
        while True:
            sums = {sql(m["backend"]["port"], "CHECKSUM TABLE sb.t", m["backend"]["user"], m["backend"]["password"]).stdout
                    for m in doc["members"]}
            if len(sums) == 1 and "\tNULL" not in next(iter(sums)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(sums) == 1 and "sb.t" in next(iter(sums)), sums
        for m in doc["members"][1:]:
            refused = sql(m["member_port"], "INSERT INTO sb.t VALUES (3, 'c')")
            assert "ERROR 1290" in refused.stderr, refused.stderr
        backend_pids = [m["backend"]["pid"] for m in doc["members"]]
        backend_ports = [m["backend"]["port"] for m in doc["members"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0
    for pid in backend_pids:
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"backend {pid} survived the sandbox"
    for p in [port, *backend_ports]:
        assert not _port_open(p), f"port {p} still open"
    assert not status_file.exists()


def test_sandbox_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        out = subprocess.run([sys.executable, "-m", "grproxy", "sandbox", "--port", str(port),
                              "--base-dir", str(tmp_path / "sb")], capture_output=True, text=True, timeout=READY_TIMEOUT_S)
    finally:
        blocker.close()
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
