"""A member process killed with -9 under writes, then restarted: it recovers from a donor and
converges with no transaction lost and none applied twice (issue [C], item 8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pymysql

from grproxy.mysqld import free_port

READY_TIMEOUT_S = 180
CONVERGE_TIMEOUT_S = 120


def _connect(port: int, **kw: object) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True,
                           connect_timeout=5, read_timeout=60, write_timeout=60, **kw)  # type: ignore[arg-type]


def _backend(m: dict) -> pymysql.connections.Connection:
    b = m["backend"]
    return pymysql.connect(host=b["host"], port=b["port"], user=b["user"], password=b["password"], autocommit=True)


def _member_states(port: int) -> dict[str, str]:
    c = _connect(port)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT MEMBER_PORT, MEMBER_STATE FROM performance_schema.replication_group_members")
            return {str(p): s for p, s in cur.fetchall()}
    finally:
        c.close()


def test_kill_9_member_restarts_and_converges(tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    base = tmp_path / "sb"
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "grproxy", "sandbox", "--members", "3", "--port", str(free_port()),
         "--base-dir", str(base), "--status-file", str(status_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    restarted: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        assert sandbox.stdout is not None
        lines = []
        while time.monotonic() < deadline:
            line = sandbox.stdout.readline()
            lines.append(line)
            if "ready" in line or not line:
                break
        assert any("ready" in l for l in lines), "".join(lines)
        doc = json.loads(status_file.read_text())
        router = doc["router"]["port"]
        victim = doc["members"][2]

        c = _connect(router)
        with c.cursor() as cur:
            cur.execute("CREATE DATABASE app")
            cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, writer INT, n INT, UNIQUE (writer, n))")
        c.close()

        acked: list[tuple[int, int]] = []
        stop = threading.Event()

        def writer(w: int) -> None:
            conn = _connect(router)
            n = 0
            while not stop.is_set():
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO app.t (writer, n) VALUES (%s, %s)", (w, n))
                    acked.append((w, n))
                except pymysql.err.MySQLError:
                    pass  # not acknowledged: may or may not exist, never twice (UNIQUE)
                n += 1
            conn.close()

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        time.sleep(2)
        os.kill(victim["pid"], signal.SIGKILL)  # the member process dies mid-load
        time.sleep(3)
        # Restart it as an operator would: same config, same backend (a new incarnation).
        config = base / "member3" / "grproxy.toml"
        with open(base / "member3" / "restart.log", "ab") as out:
            restarted = subprocess.Popen([sys.executable, "-m", "grproxy", "serve", "--config", str(config)],
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while True:
            try:
                states = _member_states(doc["members"][0]["member_port"])
                if states.get(str(victim["member_port"])) == "ONLINE" and list(states.values()).count("ONLINE") == 3:
                    break
            except pymysql.err.MySQLError:
                pass
            assert time.monotonic() < deadline, f"member did not come back ONLINE: {states}\n" + \
                (base / "member3" / "restart.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(60)
        assert acked, "no write was acknowledged"

        # Converged: identical content everywhere, every acknowledged write present once.
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while True:
            sums = []
            for m in doc["members"]:
                with _backend(m) as b, b.cursor() as cur:
                    cur.execute("CHECKSUM TABLE app.t")
                    sums.append(cur.fetchone()[1])
            if len(set(sums)) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(set(sums)) == 1, sums
        with _backend(victim) as b, b.cursor() as cur:
            cur.execute("SELECT writer, n FROM app.t")
            rows = cur.fetchall()
        assert len(rows) == len(set(rows))
        assert set(acked) <= set(rows), f"lost {len(set(acked) - set(rows))} acknowledged writes"
    finally:
        if restarted is not None:
            restarted.terminate()
            try:
                restarted.wait(20)
            except subprocess.TimeoutExpired:
                restarted.kill()
        sandbox.send_signal(signal.SIGTERM)
        try:
            sandbox.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(sandbox.pid, signal.SIGKILL)
