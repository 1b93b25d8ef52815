"""The bank workload of issue [C]: transfers between 8 accounts from 6 clients spread over the
members of a multi-primary group for 60 s, with DDL and DML interleaved on another table.

Checked as a user would: the total never changes (read through every member while it runs
and at the end), conflicts surface as 3101 and are retried by the clients, every backend ends
with identical CHECKSUM TABLE results.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pymysql

from grproxy.mysqld import free_port

ACCOUNTS = 8
OPENING_BALANCE = 1000
CLIENTS = 6
DURATION_S = 60
READY_TIMEOUT_S = 180
RETRYABLE = {3101, 1213, 1205}


def _connect(port: int) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True,
                           connect_timeout=5, read_timeout=60, write_timeout=60)


def test_bank_keeps_its_total_and_backends_converge(tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "grproxy", "sandbox", "--members", "3", "--mode", "multi-primary",
         "--port", str(free_port()), "--base-dir", str(tmp_path / "sb"), "--status-file", str(status_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        assert sandbox.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        lines = []
        while time.monotonic() < deadline:
            line = sandbox.stdout.readline()
            lines.append(line)
            if "ready" in line or not line:
                break
        assert any("ready" in l for l in lines), "".join(lines)
        doc = json.loads(status_file.read_text())
        ports = [m["member_port"] for m in doc["members"]]

        c = _connect(ports[0])
        with c.cursor() as cur:
            cur.execute("CREATE DATABASE bank")
            cur.execute("CREATE TABLE bank.acct (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
            cur.execute("INSERT INTO bank.acct VALUES " + ",".join(f"({i}, {OPENING_BALANCE})" for i in range(ACCOUNTS)))
        c.close()
        total = ACCOUNTS * OPENING_BALANCE
        _wait_rows(doc, "SELECT COUNT(*) FROM bank.acct", ACCOUNTS)

        stop = threading.Event()
        stats = {"committed": 0, "retried": 0, "errors": []}
        lock = threading.Lock()

        def client(n: int) -> None:
            rnd = random.Random(n)
            conn = _connect(ports[n % len(ports)])
            while not stop.is_set():
                a, b = rnd.sample(range(ACCOUNTS), 2)
                amount = rnd.randint(1, 50)
                try:
                    with conn.cursor() as cur:
                        cur.execute("BEGIN")
                        cur.execute("UPDATE bank.acct SET balance = balance - %s WHERE id = %s", (amount, a))
                        cur.execute("UPDATE bank.acct SET balance = balance + %s WHERE id = %s", (amount, b))
                        cur.execute("COMMIT")
                    with lock:
                        stats["committed"] += 1
                except pymysql.err.MySQLError as exc:
                    code = exc.args[0] if exc.args else None
                    if code not in RETRYABLE:
                        with lock:
                            stats["errors"].append(repr(exc))
                        return
                    with lock:
                        stats["retried"] += 1
                    try:
                        conn.rollback()
                    except pymysql.err.MySQLError:
                        conn = _connect(ports[n % len(ports)])
            conn.close()

        def auditor() -> None:
            """Reads the total through every member while transfers run."""
            conns = [_connect(p) for p in ports]
            while not stop.is_set():
                for conn in conns:
                    with conn.cursor() as cur:
                        cur.execute("SELECT SUM(balance), COUNT(*) FROM bank.acct")
                        seen = cur.fetchone()
                    if seen != (total, ACCOUNTS):
                        with lock:
                            stats["errors"].append(f"total seen {seen}")
                time.sleep(0.2)
            for conn in conns:
                conn.close()

        def ddl_and_dml() -> None:
            """DDL interleaved with DML on another table, through another member."""
            conn = _connect(ports[1])
            try:
                with conn.cursor() as cur:
                    cur.execute("CREATE TABLE bank.audit (id INT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(20))")
                    i = 0
                    while not stop.is_set():
                        cur.execute("INSERT INTO bank.audit (note) VALUES (%s)", (f"n{i}",))
                        if i % 10 == 5:
                            cur.execute(f"ALTER TABLE bank.audit ADD COLUMN c{i} INT DEFAULT {i}")
                        if i % 10 == 9:
                            cur.execute(f"ALTER TABLE bank.audit DROP COLUMN c{i - 4}")
                        i += 1
                        time.sleep(0.05)
            except pymysql.err.MySQLError as exc:
                with lock:
                    stats["errors"].append(f"ddl/dml: {exc!r}")
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        threads += [threading.Thread(target=auditor), threading.Thread(target=ddl_and_dml)]
        for t in threads:
            t.start()
        time.sleep(DURATION_S)
        stop.set()
        for t in threads:
            t.join(60)
        assert not stats["errors"], stats["errors"][:5]
        assert stats["committed"] > 0, stats

        # Quiesce, then every backend must hold exactly the same data.
        deadline = time.monotonic() + 60
        while True:
            sums = []
            for m in doc["members"]:
                b = m["backend"]
                with pymysql.connect(host=b["host"], port=b["port"], user=b["user"], password=b["password"]) as conn:
                    with conn.cursor() as cur:
                        cur.execute("CHECKSUM TABLE bank.acct, bank.audit")
                        sums.append(tuple(r[1] for r in cur.fetchall()))
                        cur.execute("SELECT SUM(balance) FROM bank.acct")
                        assert cur.fetchone()[0] == total
            if len(set(sums)) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(set(sums)) == 1, sums
        print(f"bank: {stats['committed']} transfers committed, {stats['retried']} retried (3101/1213) in {DURATION_S}s")
    finally:
        sandbox.send_signal(signal.SIGTERM)
        try:
            sandbox.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(sandbox.pid, signal.SIGKILL)


def _wait_rows(doc: dict, sql: str, expected: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    for m in doc["members"]:
        b = m["backend"]
        while True:
            with pymysql.connect(host=b["host"], port=b["port"], user=b["user"], password=b["password"]) as conn:
                with conn.cursor() as cur:
                    try:
                        cur.execute(sql)
                        if cur.fetchone()[0] == expected:
                            break
                    except pymysql.err.MySQLError:
                        pass
            assert time.monotonic() < deadline, f"{sql} never reached {expected} on {b['port']}"
            time.sleep(0.1)
