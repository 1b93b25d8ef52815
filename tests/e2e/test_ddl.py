"""DDL on `grproxy sandbox` (issue [H] item 5; DESIGN §5, DDL): ordered through the group first,
then run in the client's own session on its member — its sql_mode, time zone, default schema,
with the server's own answer and warnings — and by every other member at the same point of the
order, under the same session variables. A DDL that fails on its origin is not replicated; one
that fails on another member only puts that member in ERROR. A DDL waiting for a local
transaction's metadata lock never lets the members diverge (the TRUNCATE case of the issue).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pymysql
import pytest

if TYPE_CHECKING:
    from conftest import MemberInfo, Sandbox

pytestmark = pytest.mark.e2e

CONVERGE_TIMEOUT_S = 60
ER_TRANSACTION_ROLLBACK_DURING_COMMIT = 3101
ER_BAD_TABLE = 1051
ER_TABLE_EXISTS = 1050


@pytest.fixture(scope="module")
def group(module_sandbox_factory: Callable[..., "Sandbox"]) -> "Sandbox":
    sandbox = module_sandbox_factory(members=3)
    c = sandbox.connect()
    with c.cursor() as cur:
        cur.execute("CREATE DATABASE ddl")
    c.close()
    return sandbox


def _on_backend(sandbox: "Sandbox", member: "MemberInfo", sql: str) -> list[tuple[object, ...]]:
    c = sandbox.connect_backend(member)
    try:
        with c.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        c.close()


def _everywhere(sandbox: "Sandbox", sql: str, members: list["MemberInfo"] | None = None) -> list[list[tuple[object, ...]]]:
    """`sql`'s answer on every backend once they agree (the appliers may lag: waited for)."""
    members = members if members is not None else list(sandbox.members)
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while True:
        answers = [_on_backend(sandbox, m, sql) for m in members]
        if all(a == answers[0] for a in answers):
            return answers
        assert time.monotonic() < deadline, f"backends differ on {sql!r}: {answers}\n{sandbox.log_tail()}"
        time.sleep(0.3)


def _ddl_tables_everywhere(sandbox: "Sandbox", name_condition: str) -> list[object]:
    """The names of schema ddl's tables whose TABLE_NAME meets `name_condition`, once every
    backend agrees on them."""
    [rows, *_] = _everywhere(sandbox, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'ddl' "
                                      f"AND TABLE_NAME {name_condition} ORDER BY 1")
    return [row[0] for row in rows]


def _errno(cur: pymysql.cursors.Cursor, sql: str) -> int:
    try:
        cur.execute(sql)
    except pymysql.err.MySQLError as exc:
        return int(exc.args[0])
    return 0


def _warnings(cur: pymysql.cursors.Cursor) -> list[int]:
    cur.execute("SHOW WARNINGS")
    return [int(row[1]) for row in cur.fetchall()]


def test_ddl_runs_in_the_clients_session_with_its_variables_and_warnings(group: "Sandbox") -> None:
    primary = group.primary()
    for name, conn in (("router", group.connect(database="ddl")), ("member", group.connect_member(primary, database="ddl"))):
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES', time_zone = '+05:00'")
            # ANSI_QUOTES: "q" is an identifier in this session, a string anywhere else.
            cur.execute(f'CREATE TABLE "q_{name}" ("id" INT PRIMARY KEY, '
                        "ts TIMESTAMP NOT NULL DEFAULT '2020-01-01 00:00:00')")
            assert cur.execute(f'INSERT INTO "q_{name}" ("id") VALUES (1)') == 1
            assert cur.execute(f"DROP TABLE IF EXISTS nosuch_{name}") == 0
            assert _warnings(cur) == [ER_BAD_TABLE]  # the server's own warning, in this session
            assert _errno(cur, f'CREATE TABLE "q_{name}" ("id" INT PRIMARY KEY)') == ER_TABLE_EXISTS
            # The server's answer is relayed: CREATE … SELECT's affected rows.
            assert cur.execute(f'CREATE TABLE "c_{name}" ("id" INT PRIMARY KEY) AS SELECT 1 AS "id" UNION SELECT 2') == 2
        conn.close()
        # The default was given in +05:00: every member stored the same instant.
        [answer, *_] = _everywhere(group, "SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS "
                                          f"WHERE TABLE_SCHEMA = 'ddl' AND TABLE_NAME = 'q_{name}' AND COLUMN_NAME = 'ts'")
        assert answer and "2019-12-31 19:00:00" in str(answer[0][0]), answer
        _everywhere(group, f"SELECT id FROM ddl.q_{name}")
        _everywhere(group, f"SELECT id FROM ddl.c_{name} ORDER BY id")
    assert all(g.state == "ONLINE" for g in group.group_members())


def test_ddl_that_fails_on_its_origin_is_not_replicated(group: "Sandbox") -> None:
    primary = group.primary()
    # A table only the primary's backend has (a DDL straight on a backend is no row write).
    _on_backend(group, primary, "CREATE TABLE ddl.only_here (x INT)")
    c = group.connect(database="ddl")
    try:
        with c.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as failed:
                cur.execute("CREATE TABLE only_here (id INT PRIMARY KEY)")
            assert failed.value.args[0] == ER_TABLE_EXISTS and "only_here" in failed.value.args[1]
            cur.execute("CREATE TABLE after_it (id INT PRIMARY KEY)")  # the group goes on
    finally:
        c.close()
    _everywhere(group, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'ddl' "
                       "AND TABLE_NAME = 'after_it'")
    for m in group.secondaries():
        assert _on_backend(group, m, "SHOW TABLES FROM ddl LIKE 'only_here'") == []
    assert all(g.state == "ONLINE" for g in group.group_members())
    _on_backend(group, primary, "DROP TABLE ddl.only_here")


def test_ddl_that_fails_after_changing_something_runs_everywhere(group: "Sandbox") -> None:
    """MariaDB's DROP TABLE is not atomic across its tables: `DROP TABLE a, nosuch` drops `a`,
    then fails with 1051 (and the server logs it, with its error). The client gets the error;
    every member drops `a` too, failing the same way, and stays ONLINE."""
    c = group.connect(database="ddl")
    try:
        with c.cursor() as cur:
            cur.execute("CREATE TABLE partly_a (id INT PRIMARY KEY)")
            cur.execute("CREATE TABLE partly_b (id INT PRIMARY KEY)")
            assert _errno(cur, "DROP TABLE partly_a, partly_nosuch, partly_b") == ER_BAD_TABLE
            assert _warnings(cur) == [ER_BAD_TABLE]  # the server's own diagnostics, in this session
            cur.execute("CREATE TABLE partly_after (id INT PRIMARY KEY)")  # the group goes on
    finally:
        c.close()
    assert _ddl_tables_everywhere(group, "LIKE 'partly%'") == ["partly_after"]
    assert all(g.state == "ONLINE" for g in group.group_members())


def test_a_client_that_leaves_during_a_failing_ddl_changes_nothing(group: "Sandbox") -> None:
    """The client gives up while its DDL runs; the DDL then fails (a duplicate key at the end of a
    CREATE … SELECT, which MariaDB rolls back whole). Its member still learns how it ended, so
    nobody runs it, and every member stays ONLINE."""
    primary = group.primary()
    c = group.connect_member(primary, database="ddl", read_timeout=1)
    with c.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError):  # the client's read timeout: it leaves
            cur.execute("CREATE TABLE left_behind (id INT PRIMARY KEY) "
                        "SELECT 1 AS id FROM (SELECT SLEEP(3)) AS s UNION ALL SELECT 1")
    c.close()
    c = group.connect(database="ddl")
    try:
        with c.cursor() as cur:
            # Ordered after the first: it runs once that one settled. The group goes on.
            cur.execute("CREATE TABLE after_leaving (id INT PRIMARY KEY)")
    finally:
        c.close()
    assert _ddl_tables_everywhere(group, "IN ('left_behind', 'after_leaving')") == ["after_leaving"]
    assert all(g.state == "ONLINE" for g in group.group_members())


def test_truncate_behind_an_open_transaction_leaves_every_backend_identical(group: "Sandbox") -> None:
    c = group.connect(database="ddl")
    with c.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        cur.execute("INSERT INTO t VALUES (1, 1)")
    c.close()
    outcomes = []
    for round_, delay_s in enumerate((0.0, 0.3, 1.0, 2.0)):
        s1, s2 = group.connect(database="ddl"), group.connect(database="ddl")
        truncated: list[int] = []
        try:
            with s1.cursor() as a:
                a.execute("BEGIN")
                a.execute(f"INSERT INTO t VALUES ({10 + round_}, 1)")
                truncate = threading.Thread(target=lambda: truncated.append(_errno(s2.cursor(), "TRUNCATE t")))
                truncate.start()
                time.sleep(delay_s)
                committed = _errno(a, "COMMIT")
                truncate.join(CONVERGE_TIMEOUT_S)
                assert not truncate.is_alive(), "TRUNCATE never finished"
            assert truncated == [0]
            assert committed in (0, ER_TRANSACTION_ROLLBACK_DURING_COMMIT), committed
            outcomes.append(committed)
        finally:
            s1.close()
            s2.close()
        [rows, *_] = _everywhere(group, "SELECT id FROM ddl.t ORDER BY id")
        # The INSERT either committed before the TRUNCATE (then it is gone) or failed with 3101.
        assert rows == [], rows
        _everywhere(group, "CHECKSUM TABLE ddl.t")
        c = group.connect(database="ddl")
        with c.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (1, 1)")
        c.close()
    assert all(g.state == "ONLINE" for g in group.group_members())


def test_ddl_that_fails_on_a_secondary_puts_it_in_error(group: "Sandbox") -> None:
    """Last in the module: it leaves a member in ERROR."""
    secondary = group.secondaries()[0]
    _on_backend(group, secondary, "CREATE TABLE ddl.clash (x INT)")
    c = group.connect(database="ddl")
    with c.cursor() as cur:
        cur.execute("CREATE TABLE clash (id INT PRIMARY KEY)")  # fine on the primary
    c.close()
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while True:
        mine = [g for g in group.group_members(via=secondary) if g.member.id == secondary.id]
        if mine and mine[0].state == "ERROR":
            break
        assert time.monotonic() < deadline, f"{secondary.id} did not go to ERROR: {mine}\n{group.log_tail()}"
        time.sleep(0.3)
    others = [m for m in group.members if m.id != secondary.id]
    group.wait_group(lambda rows: sorted(g.member.id for g in rows if g.state == "ONLINE")
                     == sorted(m.id for m in others), CONVERGE_TIMEOUT_S, "the others stay ONLINE without it")
    _everywhere(group, "SHOW CREATE TABLE ddl.clash", others)


def test_multi_primary_truncate_against_a_write_on_another_member(sandbox_factory: Callable[..., "Sandbox"]) -> None:
    """The DDL runs on one member while another member's session holds an open write on the
    same table: the remote DDL dooms it there (or its commit certifies against the DDL)."""
    group = sandbox_factory(members=2, mode="multi-primary")
    m1, m2 = group.members
    c = group.connect_member(m1)
    with c.cursor() as cur:
        cur.execute("CREATE DATABASE ddl")
        cur.execute("CREATE TABLE ddl.t (id INT PRIMARY KEY, v INT)")
    c.close()
    for round_, delay_s in enumerate((0.0, 0.5, 1.5)):
        writer, truncator = group.connect_member(m2, database="ddl"), group.connect_member(m1, database="ddl")
        try:
            with writer.cursor() as a, truncator.cursor() as b:
                a.execute("BEGIN")
                a.execute(f"INSERT INTO t VALUES ({round_}, 1)")
                b.execute("TRUNCATE t")
                time.sleep(delay_s)
                assert _errno(a, "COMMIT") in (0, ER_TRANSACTION_ROLLBACK_DURING_COMMIT)
        finally:
            writer.close()
            truncator.close()
        _everywhere(group, "CHECKSUM TABLE ddl.t")
    assert all(g.state == "ONLINE" for g in group.group_members())


def test_a_member_that_was_away_recovers_ddl_as_the_group_decided(sandbox_factory: Callable[..., "Sandbox"]) -> None:
    """Distributed recovery brings DDL with its decision: one that ran everywhere runs on the
    joiner (under its origin's variables), one that failed on its origin is skipped there, one
    that failed there after changing something fails alike there."""
    group = sandbox_factory(members=3)
    c = group.connect()
    with c.cursor() as cur:
        cur.execute("CREATE DATABASE ddl")
    c.close()
    primary = group.primary()
    away = group.secondaries()[0]
    group.kill_member(away)
    group.wait_group(lambda rows: len(rows) == 2, CONVERGE_TIMEOUT_S, "the group without the killed member")
    _on_backend(group, primary, "CREATE TABLE ddl.only_here (x INT)")
    c = group.connect(database="ddl")
    with c.cursor() as cur:
        assert _errno(cur, "CREATE TABLE only_here (id INT PRIMARY KEY)") == ER_TABLE_EXISTS  # skipped everywhere
        cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES', time_zone = '+05:00'")
        cur.execute("CREATE TABLE \"r\" (id INT PRIMARY KEY, ts TIMESTAMP NOT NULL DEFAULT '2020-01-01 00:00:00')")
        cur.execute('INSERT INTO "r" (id) VALUES (1), (2)')
        cur.execute("CREATE TABLE gone (id INT PRIMARY KEY)")
        # Fails after dropping `gone`: the joiner drops it too, failing alike.
        assert _errno(cur, "DROP TABLE gone, nosuch") == ER_BAD_TABLE
    c.close()
    _on_backend(group, primary, "DROP TABLE ddl.only_here")
    back = group.restart_member(away)
    group.wait_group(lambda rows: sorted(g.state for g in rows) == ["ONLINE"] * 3, 120, "all ONLINE again")
    _everywhere(group, "SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'ddl' "
                       "AND TABLE_NAME = 'r' AND COLUMN_NAME = 'ts'")
    _everywhere(group, "CHECKSUM TABLE ddl.r")
    _everywhere(group, "SHOW TABLES FROM ddl")
    assert _on_backend(group, back, "SHOW TABLES FROM ddl") == [("r",)]
    # From the donor's cache with its decision (a clone would have made `gone` absent anyway).
    log = (group.base_dir / "sb" / back.id / "grproxy.log").read_text(errors="replace")
    assert "ddl_failed_as_on_origin" in log, log[-3000:]
