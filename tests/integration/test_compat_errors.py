"""Errors as clients see them, compared between grproxy and the backend directly.

Backend errors pass through unchanged: errno, SQLSTATE and message (DESIGN §11). Login
failures, KILL and KILL QUERY are the proxy's own work and must look like the server's.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

import compat_connector_scenarios as connector_scenarios
from compat_support import ErrPacket, RawClient, RawServerError, Target, run_cext

pytestmark = pytest.mark.timeout(120)

# How long a killed statement may take to return (SLEEP(30) would take 30 s if the kill were lost).
KILL_LATENCY_S_MAX = 5.0


def _kv_table(admin: Any, name: str, rows: int = 0) -> str:
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        cur.execute(f"CREATE TABLE {name} (id INT AUTO_INCREMENT PRIMARY KEY, k INT UNIQUE, v VARCHAR(20))")
        for i in range(1, rows + 1):
            cur.execute(f"INSERT INTO {name} VALUES ({i}, {i}, 'row{i}')")
    return name


# ---------------------------------------------------------------------------------------------
# Backend errors pass through


def _pymysql_errors(t: Target, table: str) -> list[Any]:
    conn = t.pymysql(autocommit=True)
    out: list[Any] = []
    try:
        with conn.cursor() as cur:
            for sql in [
                f"INSERT INTO {table} (id, k, v) VALUES (1, 1, 'a')",
                f"INSERT INTO {table} (id, k, v) VALUES (2, 1, 'b')",  # 1062 on k
                "SELECT * FROM no_such_table",  # 1146
                "SELEC 1",  # 1064
                f"SELECT no_such_column FROM {table}",  # 1054
                "SELECT * FROM no_such_db.t",  # 1146 (or 1049)
                f"INSERT INTO {table} (id, k, v) VALUES (NULL, 3, 'c')",  # 1048 column cannot be null
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom é message', MYSQL_ERRNO = 1644",
                "SELECT 'still usable'",
            ]:
                try:
                    cur.execute(sql)
                    out.append(("ok", cur.fetchall()))
                except pymysql.err.MySQLError as exc:
                    out.append((type(exc).__name__, exc.args))
    finally:
        conn.close()
    return [
        (kind, tuple(a.replace(table, "T") if isinstance(a, str) else a for a in args) if kind != "ok" else args)
        for kind, args in out
    ]


def test_pymysql_error_passthrough(target: Target, direct: Target, admin: Any) -> None:
    observed = _pymysql_errors(target, _kv_table(admin, target.table("err")))
    reference = _pymysql_errors(direct, _kv_table(admin, direct.table("err")))
    assert observed == reference
    assert observed[1] == ("IntegrityError", (1062, "Duplicate entry '1' for key 'k'"))
    assert observed[2][1][0] == 1146 and observed[3][1][0] == 1064
    assert observed[7] == ("OperationalError", (1644, "custom é message"))
    assert observed[-1] == ("ok", (("still usable",),))


@pytest.mark.parametrize("mode", ["pure-text", "pure-prepared", "cext-text", "cext-prepared"])
def test_connector_error_sqlstate(target: Target, direct: Target, admin: Any, mode: str) -> None:
    """mysql-connector exposes errno, SQLSTATE and message; the prepared variants get the
    errors from COM_STMT_PREPARE (1146, 1064) and COM_STMT_EXECUTE (1062)."""
    impl, _, protocol = mode.partition("-")

    def observe(t: Target) -> Any:
        table = _kv_table(admin, t.table(f"err_{impl}_{protocol}"))
        if impl == "cext":
            result = run_cext("error_cases", t, table=table, prepared=protocol == "prepared")
        else:
            result = connector_scenarios.error_cases(t.connector_kwargs(), table=table, prepared=protocol == "prepared")
        return [tuple(x.replace(table, "T") if isinstance(x, str) else x for x in r) for r in result]

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert observed[1][1:] == (1062, "23000", "Duplicate entry '1' for key 'k'")
    assert observed[2][1:3] == (1146, "42S02")
    assert observed[3][1:3] == (1064, "42000")
    assert observed[4] == ("after", [(42,)])


def test_raw_err_packets(target: Target, direct: Target) -> None:
    """ERR packets field by field, from COM_QUERY, COM_STMT_PREPARE and COM_INIT_DB."""

    def observe(t: Target) -> Any:
        with t.raw() as client:
            return [
                client.query_one("SELECT * FROM no_such_table"),
                client.query_one("SELEC 1"),
                client.prepare("SELECT * FROM no_such_table WHERE a = ?"),
                client.query_one("DO GET_LOCK(REPEAT('x', 100), 0)"),
                _init_db(client, "no_such_database"),
                client.query_one("SELECT 'after'"),
            ]

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert observed[0] == ErrPacket(1146, "42S02", f"Table '{direct.database}.no_such_table' doesn't exist")
    assert isinstance(observed[2], ErrPacket) and observed[2].errno == 1146
    assert observed[4] == ErrPacket(1049, "42000", "Unknown database 'no_such_database'")


def _init_db(client: RawClient, name: str) -> Any:
    client.command(0x02, name.encode())
    (result,) = client.read_response()
    return result


# ---------------------------------------------------------------------------------------------
# Deadlock


def _deadlock(t: Target, table: str, admin: Any) -> dict[str, Any]:
    """Two transactions lock rows 1 and 2 in opposite order; InnoDB kills one with 1213."""
    import mysql.connector

    first = t.connector(autocommit=False)
    second = t.connector(autocommit=False)
    outcome: dict[str, Any] = {}
    try:
        c1, c2 = first.cursor(), second.cursor()
        for cur in (c1, c2):
            cur.execute("SET SESSION innodb_lock_wait_timeout = 20")
        c1.execute(f"UPDATE {table} SET v = 'first' WHERE id = 1")
        c2.execute(f"UPDATE {table} SET v = 'second' WHERE id = 2")

        def first_blocks() -> None:
            try:
                c1.execute(f"UPDATE {table} SET v = 'first' WHERE id = 2")
                outcome["first"] = ("ok", c1.rowcount)
            except mysql.connector.Error as exc:
                outcome["first"] = (exc.errno, exc.sqlstate, exc.msg)

        thread = threading.Thread(target=first_blocks, daemon=True)
        thread.start()
        # Wait (bounded) until the backend runs the first UPDATE. Whether it already waits for the
        # lock does not matter: once both UPDATEs are issued the cycle exists, and InnoDB picks
        # a victim either way (which one may differ between runs).
        _wait_running(admin, f"UPDATE {table} SET v = 'first' WHERE id = 2")
        time.sleep(0.2)
        try:
            c2.execute(f"UPDATE {table} SET v = 'second' WHERE id = 1")
            outcome["second"] = ("ok", c2.rowcount)
        except mysql.connector.Error as exc:
            outcome["second"] = (exc.errno, exc.sqlstate, exc.msg)
        thread.join(timeout=25)
        assert not thread.is_alive(), "the blocked UPDATE did not return"
        for name, conn, cur in (("first", first, c1), ("second", second, c2)):
            cur.execute("SELECT @@in_transaction")
            outcome[f"{name}_in_transaction"] = cur.fetchall()
            conn.commit()
        with admin.cursor() as cur:
            cur.execute(f"SELECT id, v FROM {table} ORDER BY id")
            outcome["rows"] = cur.fetchall()
        return outcome
    finally:
        first.close()
        second.close()


def test_deadlock_error(target: Target, direct: Target, admin: Any) -> None:
    def summary(outcome: dict[str, Any]) -> Any:
        """What any run must show, whichever transaction InnoDB chose as the victim."""
        victim = "first" if outcome["first"][0] != "ok" else "second"
        winner = "second" if victim == "first" else "first"
        return {
            "victim_error": outcome[victim],
            "winner": outcome[winner],
            "victim_in_transaction": outcome[f"{victim}_in_transaction"],
            "winner_in_transaction": outcome[f"{winner}_in_transaction"],
            "rows": outcome["rows"],
            "rows_written_by": {winner},
        }

    observed = _deadlock(target, _kv_table(admin, target.table("deadlock"), rows=2), admin)
    reference = _deadlock(direct, _kv_table(admin, direct.table("deadlock"), rows=2), admin)
    got, want = summary(observed), summary(reference)
    assert got["victim_error"] == want["victim_error"] == (
        1213, "40001", "Deadlock found when trying to get lock; try restarting transaction"
    )
    assert got["winner"] == want["winner"] == ("ok", 1)
    assert got["victim_in_transaction"] == want["victim_in_transaction"] == [(0,)]  # rolled back
    assert got["winner_in_transaction"] == want["winner_in_transaction"] == [(1,)]
    winner_value = got["rows_written_by"].pop()
    assert observed["rows"] == ((1, winner_value), (2, winner_value))  # only the winner's writes


# ---------------------------------------------------------------------------------------------
# Logins


def _login_error(host: str, port: int, user: str, password: str, database: str | None = None) -> Any:
    try:
        client = RawClient.connect(host, port, user, password, database=database)
    except RawServerError as exc:
        err = exc.err
        # The host in "Access denied for user 'u'@'host'" is how the server saw the client.
        return (err.errno, err.sqlstate, re.sub(r"@'[^']*'", "@'H'", err.message))
    client.quit()
    return "accepted"


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        ("root", "wrong", (1045, "28000", "Access denied for user 'root'@'H' (using password: YES)")),
        ("nobody_here", "pw", (1045, "28000", "Access denied for user 'nobody_here'@'H' (using password: YES)")),
        ("nobody_here", "", (1045, "28000", "Access denied for user 'nobody_here'@'H' (using password: NO)")),
        ("app", "", (1045, "28000", "Access denied for user 'app'@'H' (using password: NO)")),
        ("app", "apppw", "accepted"),
    ],
    ids=["wrong_password", "unknown_user", "unknown_user_no_password", "missing_password", "right_password"],
)
def test_login_failures(target: Target, direct: Target, user: str, password: str, expected: Any) -> None:
    observed = _login_error(target.host, target.port, user, password)
    reference = _login_error(direct.host, direct.port, user, password)
    assert observed == reference == expected


def test_login_failures_pymysql(target: Target) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        target.pymysql(password="wrong")
    assert info.value.args[0] == 1045
    # The proxy still serves the right password afterwards.
    conn = target.pymysql()
    conn.close()


def test_unknown_database_at_login(target: Target, direct: Target) -> None:
    observed = _login_error(target.host, target.port, "root", "", database="no_such_database")
    reference = _login_error(direct.host, direct.port, "root", "", database="no_such_database")
    assert observed == reference == (1049, "42000", "Unknown database 'no_such_database'")


# ---------------------------------------------------------------------------------------------
# KILL QUERY / KILL


def _run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            result["value"] = ("ok", fn())
        except pymysql.err.MySQLError as exc:
            result["value"] = (type(exc).__name__, exc.args)
        result["elapsed_s"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _wait_running(admin: Any, needle: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE %s AND id <> CONNECTION_ID()",
                (f"%{needle}%",),
            )
            if cur.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError(f"statement {needle!r} never showed up in the backend's processlist")


def _kill_query(t: Target, admin: Any, marker: str) -> Any:
    victim = t.pymysql()
    killer = t.pymysql()
    try:
        sql = f"SELECT SLEEP(30) AS {marker}"

        def sleep() -> Any:
            with victim.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()

        thread, result = _run_in_thread(sleep)
        _wait_running(admin, marker)
        with killer.cursor() as cur:
            cur.execute(f"KILL QUERY {victim.thread_id()}")
        thread.join(timeout=KILL_LATENCY_S_MAX + 30)
        assert not thread.is_alive()
        with victim.cursor() as cur:
            cur.execute("SELECT 'victim still connected'")
            after = cur.fetchall()
        return result["value"], result["elapsed_s"], after
    finally:
        victim.close()
        killer.close()


def test_kill_query(target: Target, direct: Target, admin: Any) -> None:
    """KILL QUERY <the id from the victim's handshake> from a second connection interrupts the
    victim's SELECT SLEEP(30) at once; the victim stays connected."""
    value, elapsed_s, after = _kill_query(target, admin, f"kq_{target.name}")
    reference, _, _ = _kill_query(direct, admin, "kq_direct_ref")
    assert value == reference == ("OperationalError", (1317, "Query execution was interrupted"))
    assert elapsed_s < KILL_LATENCY_S_MAX
    assert after == (("victim still connected",),)


def _kill_connection(t: Target, admin: Any, marker: str) -> Any:
    busy = t.pymysql()
    idle = t.pymysql()
    killer = t.pymysql()
    try:
        sql = f"SELECT SLEEP(30) AS {marker}"

        def sleep() -> Any:
            with busy.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()

        thread, result = _run_in_thread(sleep)
        _wait_running(admin, marker)
        with killer.cursor() as cur:
            cur.execute(f"KILL {busy.thread_id()}")
            kill_busy = killer.affected_rows()
            cur.execute(f"KILL CONNECTION {idle.thread_id()}")
        thread.join(timeout=KILL_LATENCY_S_MAX + 30)
        assert not thread.is_alive()
        try:
            with idle.cursor() as cur:
                cur.execute("SELECT 1")
                idle_after: Any = ("ok", cur.fetchall())
        except pymysql.err.MySQLError as exc:
            idle_after = (type(exc).__name__, exc.args[0])
        try:
            with killer.cursor() as cur:
                cur.execute("KILL 2147480000")
                unknown: Any = "accepted"
        except pymysql.err.MySQLError as exc:
            unknown = exc.args
        return result["value"][0], result["value"][1][0], result["elapsed_s"], kill_busy, idle_after, unknown
    finally:
        for conn in (busy, idle, killer):
            try:
                conn.close()
            except pymysql.err.Error:
                pass


def test_kill_connection(target: Target, direct: Target, admin: Any) -> None:
    """KILL <id> closes the other connection, busy or idle; KILL of an unknown id is 1094."""
    observed = _kill_connection(target, admin, f"kc_{target.name}")
    reference = _kill_connection(direct, admin, "kc_direct_ref")
    kind, errno, elapsed_s, _, idle_after, unknown = observed
    assert (kind, errno) == reference[:2] == ("OperationalError", 2013)
    assert elapsed_s < KILL_LATENCY_S_MAX
    assert idle_after == reference[4]
    assert idle_after[0] in ("OperationalError", "InterfaceError") and idle_after[1] in (0, 2006, 2013)
    assert unknown == reference[5] == (1094, "Unknown thread id: 2147480000")


@pytest.mark.parametrize("source", ["handshake", "CONNECTION_ID()"])
def test_kill_query_with_either_connection_id(target: Target, source: str) -> None:
    """KILL QUERY takes the id the handshake announced and the one CONNECTION_ID() returns.

    On a server they are equal; through grproxy CONNECTION_ID() is the backend thread's id
    (README, Limitations) and grproxy maps both to the same session.
    """
    import threading
    import time as _time

    victim = target.pymysql()
    killer = target.pymysql()
    try:
        with victim.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            (from_sql,) = cur.fetchone()
        target_id = victim.thread_id() if source == "handshake" else from_sql
        outcome: list[object] = []

        def run() -> None:
            try:
                with victim.cursor() as cur:
                    cur.execute("SELECT SLEEP(20)")
                    outcome.append(cur.fetchone())
            except Exception as exc:  # noqa: BLE001 - recorded and asserted below
                outcome.append(exc)

        t = threading.Thread(target=run)
        started = _time.monotonic()
        t.start()
        _time.sleep(0.5)
        with killer.cursor() as cur:
            cur.execute(f"KILL QUERY {int(target_id)}")
        t.join(15)
        assert not t.is_alive() and _time.monotonic() - started < 15
        # MariaDB answers a killed SLEEP either with 1317 or with the row (1,): both mean cancelled.
        assert outcome and (outcome[0] == (1,) or getattr(outcome[0], "args", (None,))[0] == 1317), outcome
        with victim.cursor() as cur:  # the connection survives KILL QUERY
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        victim.close()
        killer.close()
