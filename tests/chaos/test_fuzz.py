"""Fuzzing inside `make test` (FUZZ_INPUTS, default 50,000 inputs over every target; `make
chaos` runs 1,000,000 with `python -m tests.chaos.fuzz`), and the regression tests of what
fuzzing found that need real processes (the in-process ones are in tests/unit:
test_frontend_robustness.py, gcs/test_core_non_members.py).

The seed is random unless FUZZ_SEED is set; a failure names it, and
`python -m tests.chaos.fuzz --seed N --inputs M` (or `--replay TARGET:INDEX`) runs it again.
One sandbox (3 members, a router) serves the whole module: the regression tests leave it as
they found it (every member ONLINE), and the fuzz run checks that it still serves.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from replication.protocol.packets import handshake_response, parse_server_handshake
from tests.chaos import fuzz

pytestmark = pytest.mark.e2e

INPUTS = int(os.environ.get("FUZZ_INPUTS", "50000"))
ONLINE_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fuzz.Sandbox]:
    sb = fuzz.Sandbox(tmp_path_factory.mktemp("fuzz") / "sandbox")
    sb.start()
    try:
        sb.wait_ready()
        fuzz.ServingCheck(sb).setup()
        yield sb
    finally:
        sb.stop()


def _connect(port: int, **kwargs: object) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True,
                           connect_timeout=10, read_timeout=30, **kwargs)  # type: ignore[arg-type]


def _primary_port(sb: fuzz.Sandbox) -> int:
    conn = _connect(int(sb.members[0]["member_port"]))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT MEMBER_PORT FROM performance_schema.replication_group_members "
                        "WHERE MEMBER_ROLE = 'PRIMARY'")
            return int(cur.fetchone()[0])  # a member port (what a GR member shows is its SQL port)
    finally:
        conn.close()


def _all_online(sb: fuzz.Sandbox) -> list[str]:
    deadline = time.monotonic() + ONLINE_TIMEOUT_S
    while True:
        states = []
        for m in sb.members:
            try:
                conn = _connect(int(m["member_port"]))
                with conn.cursor() as cur:
                    cur.execute("SELECT MEMBER_STATE FROM performance_schema.replication_group_members")
                    states.append(",".join(sorted(r[0] for r in cur.fetchall())))
                conn.close()
            except pymysql.MySQLError as exc:
                states.append(f"error {exc}")
        if all(s == "ONLINE,ONLINE,ONLINE" for s in states) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


class Raw:
    """A client that logs in as root and sends raw packets (what no driver sends)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        _, greeting = self.read()
        parse_server_handshake(greeting)
        caps = 0x000FA20F | 0x8000 | 0x200  # protocol 4.1, secure connection, plugin auth, multi results…
        login = handshake_response(capabilities=caps, collation=45, user="root", auth_response=b"", database=None,
                                   plugin="mysql_native_password")
        self.send(login, 1)
        assert self.read()[1][:1] == b"\x00"

    def send(self, payload: bytes, seq: int = 0) -> None:
        self.sock.sendall(len(payload).to_bytes(3, "little") + bytes((seq,)) + payload)

    def read(self) -> tuple[int, bytes]:
        head = self._exactly(4)
        return head[3], self._exactly(int.from_bytes(head[:3], "little"))

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    def until_eof_or_ok(self) -> list[bytes]:
        """Packets up to and including the next OK, ERR or EOF that ends an answer."""
        out = []
        while True:
            _, p = self.read()
            out.append(p)
            if p[:1] in (b"\x00", b"\xff") or (p[:1] == b"\xfe" and len(p) < 9):
                return out

    def close(self) -> None:
        self.sock.close()


def _errno(payload: bytes) -> int:
    assert payload[:1] == b"\xff", payload
    return int(struct.unpack_from("<H", payload, 1)[0])


def test_router_answers_an_execute_cut_short_with_1835_and_goes_on(sandbox: fuzz.Sandbox) -> None:
    """COM_STMT_EXECUTE with no flags / iteration count (9 bytes) raised IndexError in the
    router: 'grproxy internal error' and the connection closed (or, for a command buffered
    behind another, an exception in the member connection's callback)."""
    c = Raw(sandbox.router[1])
    try:
        c.send(b"\x16SELECT ?")
        prepared = c.read()[1]
        assert prepared[:1] == b"\x00"
        columns, params = struct.unpack_from("<HH", prepared, 5)
        for count in (params, columns):
            if count:
                c.until_eof_or_ok()  # the definitions, then EOF
        stmt_id = prepared[1:5]
        c.send(b"\x17" + stmt_id)
        assert _errno(c.read()[1]) == 1835
        c.send(b"\x03SELECT 'still here'")
        assert any(b"still here" in p for p in c.until_eof_or_ok() + c.until_eof_or_ok())
    finally:
        c.close()


def test_a_member_refuses_reset_master_as_a_gr_member_does(sandbox: fuzz.Sandbox) -> None:
    """COM_REFRESH with REFRESH_MASTER (first found as a TLS request's capability bits read as
    a command mid-stream) reset the primary's binary log: its binlog dump ended with 1236 and
    every later write through the router failed with 3100."""
    port = _primary_port(sandbox)
    c = Raw(port)
    try:
        for payload in (b"\x07\x80", b"\x07\x82", b"\x03RESET MASTER", b"\x03SELECT 1; RESET MASTER",
                        b"\x03RESET BINARY LOGS AND GTIDS", b"\x16RESET MASTER",
                        # later in the option list (seed 156498926: MASTER TO <huge> turned the
                        # backend's binary log off, and its next commit crashed the server)
                        b"\x03RESET SLAVE, MASTER TO 2314850639666899308", b"\x03RESET QUERY CACHE, BINARY LOGS AND GTIDS"):
            c.send(payload)
            assert _errno(c.read()[1]) == 3190, payload
    finally:
        c.close()
    conn = _connect(sandbox.router[1])
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS fuzz.after_reset (id INT PRIMARY KEY)")
            cur.execute("REPLACE INTO fuzz.after_reset VALUES (1)")  # writes still commit
    finally:
        conn.close()


def test_a_client_leaving_while_its_ddl_runs_does_not_take_the_member_down(sandbox: fuzz.Sandbox) -> None:
    """The session closed its backend connection under its DDL: the member did not know the
    DDL's outcome and went to ERROR; the group then ran the DDL elsewhere, where a statement
    that had failed on the origin failed too, and every member went to ERROR."""
    port = _primary_port(sandbox)
    admin = _connect(sandbox.router[1])
    with admin.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS fuzz.ddl_left")
        cur.execute("CREATE TABLE fuzz.ddl_left (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO fuzz.ddl_left VALUES (1)")
    admin.close()
    primary = next(m for m in sandbox.members if int(m["member_port"]) == port)
    b = primary["backend"]
    blocker = pymysql.connect(host=b["host"], port=int(b["port"]), user=b["user"], password=b["password"],
                              connect_timeout=10)
    try:
        with blocker.cursor() as cur:  # an outside transaction: the DDL waits for its metadata lock
            cur.execute("BEGIN")
            cur.execute("SELECT * FROM fuzz.ddl_left")
        c = Raw(port)
        c.send(b"\x03ALTER TABLE fuzz.ddl_left ADD COLUMN c2 INT")
        deadline = time.monotonic() + 20
        with blocker.cursor() as cur:
            while True:
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'ALTER TABLE fuzz.ddl_left%' "
                            "AND STATE LIKE '%metadata lock%'")
                if cur.fetchone()[0] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        c.close()  # the client leaves while its DDL runs
        time.sleep(0.5)
        blocker.commit()
    finally:
        blocker.close()
    assert _all_online(sandbox) == ["ONLINE,ONLINE,ONLINE"] * 3
    columns = _every_backend(sandbox, "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'fuzz' "
                                      "AND TABLE_NAME = 'ddl_left' AND COLUMN_NAME = 'c2'", 1)
    assert columns == [1, 1, 1]  # it ran on the origin, so the group ran it everywhere


def _prepare_update(c: Raw) -> bytes:
    """COM_STMT_PREPARE of `UPDATE fuzz.t SET v = ? WHERE id = ?`; returns the statement id."""
    c.send(b"\x16UPDATE fuzz.t SET v = ? WHERE id = ?")
    prepared = c.read()[1]
    assert prepared[:1] == b"\x00", prepared
    columns, params = struct.unpack_from("<HH", prepared, 5)
    for count in (params, columns):
        if count:
            c.until_eof_or_ok()
    return prepared[1:5]


def _execute_update(c: Raw, stmt_id: bytes, value: bytes, row: int) -> bytes:
    """COM_STMT_EXECUTE of _prepare_update's statement, types bound; returns the answer."""
    c.send(b"\x17" + stmt_id + b"\x00" + struct.pack("<I", 1) + b"\x00" + b"\x01" + b"\xfe\x00" + b"\x03\x00"
           + bytes((len(value),)) + value + struct.pack("<i", row))
    return c.read()[1]


def _every_backend(sb: fuzz.Sandbox, sql: str, expected: object) -> list[object]:
    """What `sql`'s first value is on every backend, once all say `expected` (or the bound)."""
    deadline = time.monotonic() + ONLINE_TIMEOUT_S
    while True:
        seen = []
        for m in sb.members:
            mb = m["backend"]
            conn = pymysql.connect(host=mb["host"], port=int(mb["port"]), user=mb["user"], password=mb["password"])
            with conn.cursor() as cur:
                cur.execute(sql)
                seen.append(cur.fetchone()[0])
            conn.close()
        if seen == [expected] * len(sb.members) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def _backends_say(sb: fuzz.Sandbox, row: int, value: str) -> list[object]:
    return _every_backend(sb, f"SELECT v FROM fuzz.t WHERE id = {row}", value)


@pytest.mark.parametrize("through", ["router", "member port"])
def test_a_prepared_autocommit_write_is_committed(sandbox: fuzz.Sandbox, through: str) -> None:
    """After a prepare, the session took the scanner's status, which a prepare's answer never
    set: the previous answer's — right after login none, so AUTOCOMMIT looked off. The next
    prepared write then ran in an XA transaction nobody committed: the client got OK (status
    'in transaction'), and the write was lost when it disconnected. Through the router too."""
    row = 78 if through == "router" else 79
    admin = _connect(sandbox.router[1])
    with admin.cursor() as cur:
        cur.execute(f"REPLACE INTO fuzz.t (id, v) VALUES ({row}, 'before')")
    admin.close()
    c = Raw(sandbox.router[1] if through == "router" else _primary_port(sandbox))
    try:
        answer = _execute_update(c, _prepare_update(c), b"prepared", row)
        assert answer[:1] == b"\x00", answer
        status = int(struct.unpack_from("<H", answer, 3)[0])  # affected rows and insert id are 1 byte each here
        assert not status & 0x0001, f"OK says 'in transaction' (status 0x{status:04x})"
    finally:
        c.close()
    assert _backends_say(sandbox, row, "prepared") == ["prepared"] * 3


def test_execute_of_the_last_prepared_statement_is_replicated(sandbox: fuzz.Sandbox) -> None:
    """COM_STMT_EXECUTE with statement id 0xFFFFFFFF (MariaDB: the one prepared last) was not
    recognised as the prepared write it names: relayed as is, it committed on the primary's
    backend outside the group — the member went to ERROR ("a write the group never saw") and
    the backends differed."""
    admin = _connect(sandbox.router[1])
    with admin.cursor() as cur:
        cur.execute("REPLACE INTO fuzz.t (id, v) VALUES (77, 'before')")
    admin.close()
    c = Raw(_primary_port(sandbox))
    try:
        _prepare_update(c)
        assert _execute_update(c, b"\xff\xff\xff\xff", b"last-prepared", 77)[:1] == b"\x00"
        c.send(b"\x16SELECT 1 FROM no_such_table")  # a failed prepare: 'the last one' is unknown now
        assert c.read()[1][:1] == b"\xff"
        assert _errno(_execute_update(c, b"\xff\xff\xff\xff", b"unknown", 77)) == 1243
    finally:
        c.close()
    assert _all_online(sandbox) == ["ONLINE,ONLINE,ONLINE"] * 3
    assert _backends_say(sandbox, 77, "last-prepared") == ["last-prepared"] * 3


def test_one_session_losing_its_member_connection_does_not_stop_the_others(sandbox: fuzz.Sandbox) -> None:
    """The router marked a member down for down_hold_s whenever one session's connection to it
    broke: a client whose own doing ended its connection (a KILL; a write under LOCK TABLES,
    whose XA START fails and poisons the connection) took the primary away from every client —
    writes answered 1290 'no ONLINE primary' for 2 s."""
    a = _connect(sandbox.router[1])
    failed: list[BaseException] = []
    with a.cursor() as cur:
        cur.execute("BEGIN")  # the transaction runs on the primary
        cur.execute("SELECT @@pseudo_thread_id")  # the primary's backend thread of this session
        thread_id = int(cur.fetchone()[0])

    def sleep() -> None:
        try:
            with a.cursor() as cur:
                cur.execute("SELECT SLEEP(5)")
        except pymysql.MySQLError as exc:
            failed.append(exc)

    sleeper = threading.Thread(target=sleep)
    sleeper.start()
    time.sleep(0.5)
    killer = _connect(_primary_port(sandbox))
    try:
        with killer.cursor() as cur:
            cur.execute(f"KILL {thread_id}")  # the member ends that one session
    finally:
        killer.close()
    sleeper.join(10)
    a.close()
    assert failed, "the killed statement should have failed"
    b = _connect(sandbox.router[1])
    try:
        with b.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS fuzz.others (id INT PRIMARY KEY)")
            cur.execute("REPLACE INTO fuzz.others VALUES (1)")  # the primary still takes writes
    finally:
        b.close()


def test_fuzz(sandbox: fuzz.Sandbox, tmp_path: Path) -> None:
    """INPUTS inputs over every target: 0 crashes, 0 hangs, nothing from a non-member
    delivered, the sandbox still serves and its backends agree."""
    seed = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(1, 10**9))
    lines: list[str] = []
    report = fuzz.run(seed, INPUTS, tmp_path, sandbox=sandbox, log=lines.append)
    (tmp_path / "fuzz-report.json").write_text(json.dumps(report.to_dict(), indent=2))
    print("\n".join(lines))
    replay = f"replay: FUZZ_SEED={seed} FUZZ_INPUTS={INPUTS} (python -m tests.chaos.fuzz --seed {seed} --inputs {INPUTS})"
    assert report.total == INPUTS
    assert sum(sum(s.values()) for s in report.stats.values()) + sum(report.counts.values()) >= INPUTS // 2
    for kind in ("crash", "hang", "non-member-delivery", "serving", "inconsistent"):
        assert report.count(kind) == 0, f"{report.summary()}\n{replay}\n" + "\n".join(
            str(f) for f in report.findings if f.kind == kind)
