"""The write path on the binary log (issue [H]), on `grproxy sandbox` with real MariaDB servers
and real clients, through the router and through member ports. Every test ends with the same
CHECKSUM TABLE on every backend.

What a GR member replicates because it takes the server's own row changes now works: CALL of a
procedure that writes, triggers, LOAD DATA LOCAL, multi-statement writes, RETURNING, savepoints,
server-side prepared writes, a 20 MB row. GR's own refusals remain (3098 without a primary key).
The group decides every commit: a client that gives up mid-commit (a frozen secondary delays the
group) leaves every member with the same rows; a member killed between XA PREPARE and the verdict
resolves its prepared transaction at restart. A write that bypasses grproxy puts its member in
ERROR (nothing slips through).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pymysql
import pytest

if TYPE_CHECKING:  # the fixtures hand these out; `conftest` is no importable module at run time
    from conftest import MemberInfo, Sandbox

pytestmark = pytest.mark.e2e

CONVERGE_TIMEOUT_S = 60
ER_BEFORE_DML_VALIDATION = 3098


@pytest.fixture(scope="module")
def group(module_sandbox_factory: Callable[..., "Sandbox"]) -> "Sandbox":
    sandbox = module_sandbox_factory(members=3)
    c = sandbox.connect()
    with c.cursor() as cur:
        cur.execute("CREATE DATABASE app")
    c.close()
    return sandbox


def assert_converged(sandbox: "Sandbox", tables: list[str], members: list["MemberInfo"] | None = None) -> None:
    """Every backend (or every one of `members`) ends with the same checksums (the appliers
    may still be catching up: waited for, bounded)."""
    members = members if members is not None else list(sandbox.members)
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while True:
        sums = [sandbox.checksums(m, tables) for m in members]
        if len(set(sums)) == 1:
            return
        assert time.monotonic() < deadline, f"backends differ: {sums}\n{sandbox.log_tail()}"
        time.sleep(0.3)


def _rows(conn: pymysql.connections.Connection, sql: str) -> list[tuple[object, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_procedures_triggers_load_data_multi_statements_returning_savepoints(group: "Sandbox", tmp_path: Path) -> None:
    c = group.connect(local_infile=True, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE app.item (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(40), qty INT)")
        cur.execute("CREATE TABLE app.audit (id INT PRIMARY KEY AUTO_INCREMENT, what VARCHAR(80), at_qty INT)")
        cur.execute("CREATE PROCEDURE app.restock(n INT) BEGIN "
                    "UPDATE app.item SET qty = qty + n; INSERT INTO app.audit (what, at_qty) VALUES ('restock', n); END")
        cur.execute("INSERT INTO app.item (name, qty) VALUES ('apple', 1), ('pear', 2)")
        cur.execute("CALL app.restock(10)")
        data = tmp_path / "items.csv"
        data.write_text("plum,3\nfig,4\n")
        cur.execute(f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE app.item FIELDS TERMINATED BY ',' (name, qty)")
        assert cur.rowcount == 2
        cur.execute("INSERT INTO app.item (name, qty) VALUES ('kiwi', 5); UPDATE app.item SET qty = qty * 2 WHERE name = 'kiwi'")
        while cur.nextset():
            pass
        cur.execute("INSERT INTO app.item (name, qty) VALUES ('lime', 6) RETURNING id, name")
        returned = cur.fetchall()
        assert len(returned) == 1 and returned[0][1] == "lime"
        cur.execute("DELETE FROM app.item WHERE name = 'pear' RETURNING name")
        assert cur.fetchall() == (("pear",),)
        cur.execute("BEGIN")
        cur.execute("INSERT INTO app.item (name, qty) VALUES ('kept', 7)")
        cur.execute("SAVEPOINT s1")
        cur.execute("INSERT INTO app.item (name, qty) VALUES ('undone', 8)")
        cur.execute("ROLLBACK TO SAVEPOINT s1")
        cur.execute("COMMIT")
    names = {r[0] for r in _rows(c, "SELECT name FROM app.item")}
    assert names == {"apple", "plum", "fig", "kiwi", "lime", "kept"}
    c.close()
    assert_converged(group, ["app.item", "app.audit"])
    for m in group.members:  # the procedure's rows reached every member
        b = group.connect_backend(m)
        assert _rows(b, "SELECT COUNT(*) FROM app.audit WHERE what = 'restock'") == [(1,)]
        assert _rows(b, "SELECT qty FROM app.item WHERE name = 'kiwi'") == [(10,)]
        b.close()


def test_a_trigger_runs_on_the_origin_only(group: "Sandbox") -> None:
    """An AFTER INSERT trigger writing an audit table, written through the router and through
    the primary's member port: the trigger runs once, on the origin; the other members apply
    its row events, the audit rows among them, without running it again (were they to, the
    audit table would hold each row twice, or the apply would fail on its duplicate key)."""
    c = group.connect()
    with c.cursor() as cur:
        cur.execute("CREATE TABLE app.trig (id INT PRIMARY KEY, qty INT)")
        cur.execute("CREATE TABLE app.trig_audit (id INT PRIMARY KEY AUTO_INCREMENT, trig_id INT, qty INT)")
        cur.execute("CREATE TRIGGER app.trig_ins AFTER INSERT ON app.trig FOR EACH ROW "
                    "INSERT INTO app.trig_audit (trig_id, qty) VALUES (NEW.id, NEW.qty)")
        cur.execute("INSERT INTO app.trig VALUES (1, 10), (2, 20)")
        cur.execute("BEGIN")
        cur.execute("INSERT INTO app.trig VALUES (3, 30)")
        cur.execute("UPDATE app.trig SET qty = qty + 1 WHERE id = 1")  # no UPDATE trigger: audited once
        cur.execute("COMMIT")
    c.close()
    primary = group.primary()
    m = group.connect_member(primary)
    with m.cursor() as cur:
        cur.execute("INSERT INTO app.trig VALUES (4, 40)")
    m.close()
    assert_converged(group, ["app.trig", "app.trig_audit"])
    for member in group.members:
        b = group.connect_backend(member)
        assert _rows(b, "SELECT trig_id, qty FROM app.trig_audit ORDER BY trig_id") == [(1, 10), (2, 20), (3, 30), (4, 40)]
        b.close()


def test_prepared_writes_run_as_prepared_statements(group: "Sandbox") -> None:
    conn = group.connect_connector()
    text = conn.cursor()
    text.execute("CREATE TABLE app.ps (id INT PRIMARY KEY, note VARCHAR(30), amount DECIMAL(10,2), at DATETIME(6))")
    text.close()
    cur = conn.cursor(prepared=True)
    with pytest.raises(Exception, match="1235"):  # DDL is ordered through the group: text only
        cur.execute("CREATE TABLE app.ps2 (id INT PRIMARY KEY)")
    for i in range(20):
        cur.execute("INSERT INTO app.ps VALUES (?, ?, ?, ?)", (i, f"n{i}", f"{i}.25", f"2026-12-05 10:00:{i:02d}.123456"))
    cur.execute("UPDATE app.ps SET amount = amount + ? WHERE id < ?", ("1.50", 5))
    cur.execute("DELETE FROM app.ps WHERE id = ?", (19,))
    cur.close()
    conn.close()
    assert_converged(group, ["app.ps"])
    b = group.connect_backend(group.members[2])
    # (0.25 + 1.25 + … + 18.25) + 5 × 1.50
    assert _rows(b, "SELECT COUNT(*), SUM(amount) FROM app.ps") == [(19, __import__("decimal").Decimal("183.25"))]
    b.close()


def test_a_20_mb_row_replicates(group: "Sandbox") -> None:
    c = group.connect(max_allowed_packet=64 << 20)
    big = os.urandom(10 << 20).hex()  # 20 MiB of text
    with c.cursor() as cur:
        cur.execute("CREATE TABLE app.blob (id INT PRIMARY KEY, body LONGTEXT)")
        cur.execute("INSERT INTO app.blob VALUES (1, %s)", (big,))
    c.close()
    assert_converged(group, ["app.blob"])


def test_grs_own_refusal_remains_a_table_without_primary_key(group: "Sandbox") -> None:
    c = group.connect()
    with c.cursor() as cur:
        cur.execute("CREATE TABLE app.nopk (a INT)")
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("INSERT INTO app.nopk VALUES (1)")
        assert info.value.args[0] == ER_BEFORE_DML_VALIDATION
        cur.execute("SELECT COUNT(*) FROM app.nopk")
        assert cur.fetchall() == ((0,),)
    c.close()


ER_WRONG_VALUE_FOR_VAR = 1231


@pytest.mark.parametrize("setting", ["SET sql_log_bin = 0", "SET SESSION binlog_format = 'STATEMENT'",
                                     "SET @@binlog_row_image = MINIMAL", "SET GLOBAL binlog_format = MIXED",
                                     "PREPARE s FROM 'SET sql_log_bin = OFF'",
                                     "SET STATEMENT sql_log_bin = 0 FOR SELECT 1",
                                     "SET STATEMENT binlog_format = 'STATEMENT' FOR SELECT 1"])
def test_settings_that_would_keep_writes_from_the_binary_log_are_refused(group: "Sandbox", setting: str) -> None:
    """A session with sql_log_bin=0 (or statement-format logging) would commit its writes on its
    own member only: the group replicates what the binary log shows. Refused (1231) through the
    router and on a member port, and the session's writes still replicate afterwards."""
    c = group.connect()
    m = group.connect_member(group.primary())
    with c.cursor() as cur, m.cursor() as mcur:
        cur.execute("CREATE TABLE IF NOT EXISTS app.logged (id INT PRIMARY KEY)")
        for conn_cur in (cur, mcur):
            with pytest.raises(pymysql.err.MySQLError) as info:
                conn_cur.execute(setting)
            assert info.value.args[0] == ER_WRONG_VALUE_FOR_VAR, info.value
            conn_cur.execute("SELECT @@session.sql_log_bin, @@session.binlog_format, @@global.binlog_format")
            assert conn_cur.fetchall() == ((1, "ROW", "ROW"),)
        cur.execute("REPLACE INTO app.logged VALUES (1)")
        mcur.execute("REPLACE INTO app.logged VALUES (2)")
    c.close()
    m.close()
    assert_converged(group, ["app.logged"])
    for member in group.members:
        conn = group.connect_backend(member)
        assert _rows(conn, "SELECT id FROM app.logged ORDER BY id") == [(1,), (2,)]
        conn.close()


ER_NOT_SUPPORTED_YET = 1235


def test_a_write_under_lock_tables_is_refused_and_nothing_slips_through(group: "Sandbox") -> None:
    """XA START fails under LOCK TABLES; a write sent behind it used to run outside any
    transaction — committed on its member only, which went to ERROR (and the client got 2027).
    Refused before anything runs; the member stays ONLINE; after UNLOCK TABLES writes replicate."""
    c = group.connect()
    m = group.connect_member(group.primary())
    with c.cursor() as cur, m.cursor() as mcur:
        cur.execute("CREATE TABLE IF NOT EXISTS app.locked (id INT PRIMARY KEY)")
        for i, conn_cur in enumerate((cur, mcur)):
            conn_cur.execute("LOCK TABLES app.locked WRITE")
            with pytest.raises(pymysql.err.MySQLError) as info:
                conn_cur.execute(f"INSERT INTO app.locked VALUES ({10 + i})")
            assert info.value.args[0] == ER_NOT_SUPPORTED_YET, info.value
            conn_cur.execute("SELECT COUNT(*) FROM app.locked")  # reads under the lock still work
            conn_cur.execute("UNLOCK TABLES")
            conn_cur.execute(f"INSERT INTO app.locked VALUES ({20 + i})")
            conn_cur.execute("LOCK TABLES app.locked WRITE")
            conn_cur.execute("BEGIN")  # releases the locks, as on the server
            conn_cur.execute(f"INSERT INTO app.locked VALUES ({30 + i})")
            conn_cur.execute("COMMIT")
    c.close()
    m.close()
    rows = group.wait_group(lambda g: len(g) == 3, 30, "three members")
    assert all(g.state == "ONLINE" for g in rows), rows
    assert_converged(group, ["app.locked"])
    b = group.connect_backend(group.primary())
    assert _rows(b, "SELECT id FROM app.locked ORDER BY id") == [(20,), (21,), (30,), (31,)]
    b.close()


def test_member_port_autocommit_and_explicit_transactions(group: "Sandbox") -> None:
    primary = group.primary()
    c = group.connect_member(primary)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE app.mp (id INT PRIMARY KEY, v INT)")
        cur.execute("INSERT INTO app.mp VALUES (1, 1)")
        cur.execute("SELECT @@in_transaction")
        assert cur.fetchall() == ((0,),)  # autocommit: nothing left open
        cur.execute("SET autocommit = 0")
        cur.execute("SELECT v FROM app.mp WHERE id = 1")
        cur.execute("UPDATE app.mp SET v = 2 WHERE id = 1")
        cur.execute("COMMIT")
        cur.execute("SET autocommit = 1")
        cur.execute("BEGIN")
        cur.execute("UPDATE app.mp SET v = 3 WHERE id = 1")
        cur.execute("ROLLBACK")
        cur.execute("UPDATE app.mp SET v = v WHERE id = 1")  # changes nothing: no group round
        cur.execute("SELECT v FROM app.mp")
        assert cur.fetchall() == ((2,),)
    c.close()
    assert_converged(group, ["app.mp"])


def test_client_that_gives_up_mid_commit_leaves_members_identical(group: "Sandbox") -> None:
    """Freeze a secondary's member process, write through the router with a 1.5 s read
    timeout, thaw it: whatever each commit's fate, every member ends with the same rows (the
    group decides; before [H] some inserts committed on the others but not on the origin)."""
    c = group.connect()
    with c.cursor() as cur:
        cur.execute("CREATE TABLE app.impatient (id INT PRIMARY KEY, v INT)")
    c.close()
    victim = group.secondaries()[0]
    group.signal_member(victim, signal.SIGSTOP)
    outcomes: dict[str, int] = {}
    try:
        for i in range(20):
            conn = None
            try:
                conn = group.connect(read_timeout=1.5, write_timeout=1.5)
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO app.impatient VALUES ({i}, {i})")
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except pymysql.MySQLError as exc:
                key = str(exc.args[0])
                outcomes[key] = outcomes.get(key, 0) + 1
            finally:
                if conn is not None:
                    conn.close()
    finally:
        group.signal_member(victim, signal.SIGCONT)
    print("outcomes:", outcomes)
    assert_converged(group, ["app.impatient"])
    for m in group.members:
        b = group.connect_backend(m)
        assert _rows(b, "XA RECOVER") == [], f"{m.id} kept a prepared transaction"
        b.close()


@pytest.mark.parametrize("binlog_format", ["ROW", "STATEMENT"])
def test_write_bypassing_grproxy_puts_its_member_in_error(sandbox_factory: Callable[..., "Sandbox"],
                                                          binlog_format: str) -> None:
    """A write straight to a member's backend — logged as rows, or as a statement — puts the
    member in ERROR; it stays out until a clone rebuilt its backend."""
    sandbox = sandbox_factory(members=3)
    c = sandbox.connect()
    with c.cursor() as cur:
        cur.execute("CREATE DATABASE app")
        cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY)")
    c.close()
    victim = sandbox.secondaries()[0]
    b = sandbox.connect_backend(victim)
    with b.cursor() as cur:
        cur.execute(f"SET SESSION binlog_format = '{binlog_format}'")
        cur.execute("INSERT INTO app.t VALUES (42)")  # straight to the backend: the group never saw it
    b.close()
    deadline = time.monotonic() + 30
    while True:
        m = sandbox.connect_member(victim)
        with m.cursor() as cur:
            cur.execute("/* grproxy */ GROUP STATUS")
            row = cur.fetchone()
        m.close()
        if row[1] == "ERROR":
            assert "never saw" in row[4]
            break
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    rows = sandbox.wait_group(lambda g: len(g) == 2, 30, "the diverged member left the group")
    assert victim.id not in {g.member.id for g in rows}

    # Its backend keeps the write: neither START GROUP_REPLICATION nor a restart takes it back
    # into the group (GR refuses a member with errant transactions), and the error says how to
    # rebuild it.
    m = sandbox.connect_member(victim)
    with m.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("START GROUP_REPLICATION")
        assert "never saw" in str(info.value) and "--clone" in str(info.value), info.value
    # Rebuilt by a clone from its member port, it is back with the group's rows, the stray
    # one gone.
    with m.cursor() as cur:
        cur.execute("/* grproxy */ GROUP REJOIN CLONE")
    m.close()
    sandbox.wait_group(lambda g: len(g) == 3 and all(x.state == "ONLINE" for x in g), 90, "the rebuilt member is back")
    assert_converged(sandbox, ["app.t"])
    b = sandbox.connect_backend(victim)
    assert _rows(b, "SELECT COUNT(*) FROM app.t") == [(0,)]
    b.close()


def test_writes_made_on_a_stopped_members_backend_keep_it_out(sandbox_factory: Callable[..., "Sandbox"]) -> None:
    """A write made on a member's backend while its grproxy process was down (nobody watching
    the binlog) is found at restart from the backend's GTIDs outside grproxy's domain: the
    start is refused, naming them; `serve --clone` rebuilds it and it converges; a later
    plain restart takes it back as it now is."""
    sandbox = sandbox_factory(members=3)
    c = sandbox.connect()
    with c.cursor() as cur:
        cur.execute("CREATE DATABASE app")
        cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO app.t VALUES (1)")
    c.close()
    victim = sandbox.secondaries()[0]
    assert_converged(sandbox, ["app.t"])
    sandbox.kill_member(victim)
    b = sandbox.connect_backend(victim)
    with b.cursor() as cur:
        cur.execute("UPDATE app.t SET id = 2")
        cur.execute("SELECT @@gtid_binlog_pos")
        pos = cur.fetchall()
    b.close()
    refused = sandbox.restart_member(victim)
    proc = sandbox.restarted_process(refused)
    assert proc is not None and proc.wait(60) != 0
    log = (sandbox.base_dir / "sb" / victim.id / "grproxy.log").read_text(errors="replace")
    assert "does not have" in log and "around grproxy" in log, (pos, log[-2000:])
    victim = sandbox.restart_member(victim, "--clone")
    sandbox.wait_group(lambda g: len(g) == 3 and all(x.state == "ONLINE" for x in g), 90, "the rebuilt member is back")
    assert_converged(sandbox, ["app.t"])
    b = sandbox.connect_backend(victim)
    assert _rows(b, "SELECT id FROM app.t") == [(1,)]
    b.close()
    sandbox.kill_member(victim)
    victim = sandbox.restart_member(victim)
    sandbox.wait_group(lambda g: len(g) == 3 and all(x.state == "ONLINE" for x in g), 90, "restarted after the clone")


def test_member_killed_between_prepare_and_verdict_resolves_it_at_restart(sandbox_factory: Callable[..., "Sandbox"]) -> None:
    """The primary prepares a transaction whose verdict cannot come (both secondaries frozen:
    no majority), then its process is killed. Thawed, the others go on; restarted with its
    config, the old primary ends the prepared transaction before serving — rolled back, then
    recovered from a donor if the group certified it after all — so every member ends with the
    same rows and no prepared transaction is left behind."""
    sandbox = sandbox_factory(members=3)
    c = sandbox.connect()
    with c.cursor() as cur:
        cur.execute("CREATE DATABASE app")
        cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
        cur.execute("INSERT INTO app.t VALUES (1, 1)")
    c.close()
    primary = sandbox.primary()
    secondaries = sandbox.secondaries()
    assert_converged(sandbox, ["app.t"])
    for s in secondaries:
        sandbox.signal_member(s, signal.SIGSTOP)
    errors: list[object] = []

    def commit() -> None:
        try:
            conn = sandbox.connect_member(primary, read_timeout=120)
            with conn.cursor() as cur:
                cur.execute("INSERT INTO app.t VALUES (2, 2)")
        except pymysql.MySQLError as exc:
            errors.append(exc.args)

    writer = threading.Thread(target=commit, daemon=True)
    try:
        writer.start()
        b = sandbox.connect_backend(primary)
        deadline = time.monotonic() + 30
        while not _rows(b, "XA RECOVER"):
            assert time.monotonic() < deadline, "the transaction was never prepared"
            time.sleep(0.05)
        b.close()
        sandbox.kill_member(primary)
    finally:
        for s in secondaries:
            sandbox.signal_member(s, signal.SIGCONT)
    writer.join(30)
    rows = sandbox.wait_group(lambda g: any(x.role == "PRIMARY" and x.state == "ONLINE" for x in g)
                              and primary.id not in {x.member.id for x in g}, 60, "a new primary without the old one")
    assert rows
    restarted = sandbox.restart_member(primary)
    deadline = time.monotonic() + 120
    while True:
        try:
            m = sandbox.connect_member(restarted)
            with m.cursor() as cur:
                cur.execute("/* grproxy */ GROUP STATUS")
                state = cur.fetchone()[1]
            m.close()
            if state == "ONLINE":
                break
        except pymysql.MySQLError:
            pass
        assert time.monotonic() < deadline, sandbox.log_tail()
        time.sleep(0.3)
    b = sandbox.connect_backend(restarted)
    assert _rows(b, "XA RECOVER") == []
    b.close()
    assert_converged(sandbox, ["app.t"])


def _member_log_events(sandbox: "Sandbox", member: "MemberInfo", event: str) -> list[dict[str, object]]:
    import json

    path = sandbox.base_dir / "sb" / member.id / "grproxy.log"
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if f'"{event}"' in line:
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def test_flow_control_throttles_the_writer_while_a_secondary_falls_behind(
        sandbox_factory: Callable[..., "Sandbox"]) -> None:
    """GR's QUOTA flow control: a secondary whose applier is stuck (a row lock held on its
    backend by an outside session, which the applier waits for) passes the applier threshold;
    the primary then commits within a quota (what that member applied per period, less 10 %)
    until it catches up, and lifts the quota afterwards. Nothing is lost: every backend ends identical."""
    sandbox = sandbox_factory(members=3, settings={"flow_control_applier_threshold": 3})
    primary, slow = sandbox.primary(), sandbox.secondaries()[0]
    writer = sandbox.connect_member(primary)
    _rows(writer, "CREATE DATABASE fc")
    _rows(writer, "CREATE TABLE fc.t (id INT PRIMARY KEY, v INT NOT NULL)")
    _rows(writer, "INSERT INTO fc.t VALUES (0, 0)")
    assert_converged(sandbox, ["fc.t"])
    assert _rows(sandbox.connect_member(primary), "SHOW VARIABLES LIKE 'group_replication_flow_control_applier_threshold'") \
        == [("group_replication_flow_control_applier_threshold", "3")]

    blocker = sandbox.connect_backend(slow, autocommit=False)
    _rows(blocker, "SELECT v FROM fc.t WHERE id = 0 FOR UPDATE")  # the applier waits for this lock
    done = threading.Event()
    commits = [0]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            while not done.is_set():
                _rows(writer, "UPDATE fc.t SET v = v + 1 WHERE id = 0")
                commits[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while not _member_log_events(sandbox, primary, "flow_control_throttling"):
            assert not errors, errors
            assert time.monotonic() < deadline, f"no throttling after {commits[0]} commits\n{sandbox.log_tail()}"
            time.sleep(0.2)
        throttled = _member_log_events(sandbox, primary, "flow_control_throttling")[0]
        # The quota is what the stuck member applied in the period it was measured in, less 10 %.
        assert isinstance(throttled["quota"], int) and throttled["quota"] >= 1, throttled
        while not _member_log_events(sandbox, primary, "flow_control_held"):  # the writer's commits waited
            assert not errors, errors
            assert time.monotonic() < deadline, f"no commit was held\n{sandbox.log_tail()}"
            time.sleep(0.2)
    finally:
        done.set()
        blocker.rollback()
        blocker.close()
    thread.join(CONVERGE_TIMEOUT_S)
    assert not thread.is_alive() and not errors, errors
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while not _member_log_events(sandbox, primary, "flow_control_released"):  # once the member caught up
        assert time.monotonic() < deadline, f"the quota was never lifted\n{sandbox.log_tail()}"
        time.sleep(0.2)
    assert_converged(sandbox, ["fc.t"])
    assert _rows(sandbox.connect_backend(slow), "SELECT v FROM fc.t WHERE id = 0") == [(commits[0],)]
    writer.close()
