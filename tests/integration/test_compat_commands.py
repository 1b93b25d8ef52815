"""Protocol commands other than COM_QUERY, compared between grproxy and the backend directly:
COM_PING, COM_INIT_DB, COM_RESET_CONNECTION, COM_CHANGE_USER, COM_STATISTICS, COM_SET_OPTION,
COM_FIELD_LIST, COM_PROCESS_KILL, COM_QUIT, and prepared-statement lifetime."""

from __future__ import annotations

import re
import struct
from typing import Any

import pymysql
import pytest

import compat_connector_scenarios as connector_scenarios
from compat_support import (
    CLIENT_MULTI_STATEMENTS,
    COM_PING,
    COM_QUIT,
    COM_RESET_CONNECTION,
    DEFAULT_CAPABILITIES,
    ErrPacket,
    OkPacket,
    PreparedStatement,
    ResultSet,
    Target,
    is_eof,
    read_until_closed,
    run_cext,
)

pytestmark = pytest.mark.timeout(120)

COM_STATISTICS = 0x09
COM_FIELD_LIST = 0x04
COM_PROCESS_KILL = 0x0C
COM_SET_OPTION = 0x1B


@pytest.fixture(scope="module")
def other_database(backend: Any, database: str) -> Any:
    name = database + "_other"
    conn = pymysql.connect(host=backend.host, port=backend.port, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}`")
            cur.execute(f"CREATE TABLE `{name}`.marker (id INT PRIMARY KEY, note VARCHAR(20))")
            cur.execute(f"INSERT INTO `{name}`.marker VALUES (1, 'other db')")
        yield name
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def test_ping(target: Target, direct: Target) -> None:
    def observe(t: Target) -> Any:
        conn = t.pymysql()
        try:
            conn.ping(reconnect=False)
            status = conn.server_status
            with conn.cursor() as cur:
                cur.execute("SELECT 'after ping'")
                after = cur.fetchall()
        finally:
            conn.close()
        with t.raw() as client:
            client.command(COM_PING)
            raw = client.read_response()
        return status, after, raw

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert observed[1] == (("after ping",),)
    assert len(observed[2]) == 1 and isinstance(observed[2][0], OkPacket)


def test_init_db(target: Target, direct: Target, other_database: str) -> None:
    def observe(t: Target) -> Any:
        conn = t.pymysql()
        out = []
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT DATABASE()")
                out.append(cur.fetchall())
                conn.select_db(other_database)  # COM_INIT_DB
                cur.execute("SELECT DATABASE(), note FROM marker")
                out.append(cur.fetchall())
                try:
                    conn.select_db("no_such_database")
                    out.append("accepted")
                except pymysql.err.MySQLError as exc:
                    out.append(exc.args)
                cur.execute("SELECT DATABASE()")  # unchanged by the failed COM_INIT_DB
                out.append(cur.fetchall())
                cur.execute(f"USE `{t.database}`")
                cur.execute("SELECT DATABASE()")
                out.append(cur.fetchall())
        finally:
            conn.close()
        return out

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert observed == [
        ((target.database,),),
        ((other_database, "other db"),),
        (1049, "Unknown database 'no_such_database'"),
        ((other_database,),),
        ((target.database,),),
    ]


@pytest.mark.parametrize("impl", ["pure", "cext"])
def test_reset_connection_connector(target: Target, direct: Target, impl: str) -> None:
    def observe(t: Target) -> Any:
        table = t.table(f"tmp_reset_{impl}")
        if impl == "cext":
            return run_cext("reset_connection", t, table=table)
        return connector_scenarios.reset_connection(t.connector_kwargs(), table=table)

    observed, reference = observe(target), observe(direct)
    observed["temp_table"] = _strip_table(observed["temp_table"], target)
    reference["temp_table"] = _strip_table(reference["temp_table"], direct)
    assert observed == reference
    assert observed["before"] == [(42, 0)]
    # The user variable is gone. (autocommit: mysql-connector re-applies its own setting,
    # autocommit=False, after a reset; test_reset_connection_raw checks the server's default.)
    assert observed["after"] == [(None, 0)]
    assert observed["temp_table"][1:3] == (1146, "42S02")  # temporary table gone


def _strip_table(value: Any, t: Target) -> Any:
    if isinstance(value, tuple):
        return tuple(re.sub(r"tmp_reset_\w+", "T", v) if isinstance(v, str) else v for v in value)
    return value


def test_reset_connection_raw(target: Target, direct: Target) -> None:
    """COM_RESET_CONNECTION also drops the session's prepared statements and ends its
    transaction (rolled back)."""

    def observe(t: Target) -> Any:
        table = t.table("reset_raw")
        out: list[Any] = []
        with t.raw() as client:
            client.query_one(f"DROP TABLE IF EXISTS {table}")
            client.query_one(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
            stmt = client.prepare("SELECT 1")
            assert isinstance(stmt, PreparedStatement), stmt
            client.query_one("SET @v = 'set', autocommit = 0")
            client.query_one(f"INSERT INTO {table} VALUES (1)")  # uncommitted
            client.command(COM_RESET_CONNECTION)
            (reset,) = client.read_response()
            out.append(("reset", reset))
            (gone,) = client.execute(stmt.statement_id)
            assert isinstance(gone, ErrPacket), gone
            out.append(("old statement", gone.errno, gone.sqlstate, re.sub(r"\d+", "N", gone.message)))
            out.append(("vars", client.query_one("SELECT @v, @@autocommit, @@in_transaction")))
            out.append(("rows", client.query_one(f"SELECT COUNT(*) FROM {table}")))
            fresh = client.prepare("SELECT 2")
            assert isinstance(fresh, PreparedStatement), fresh
            out.append(("fresh statement", client.execute(fresh.statement_id)))
        return out

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert isinstance(observed[0][1], OkPacket)
    assert observed[1] == ("old statement", 1243, "HY000", "Unknown prepared statement handler (N) given to mysqld_stmt_execute")
    vars_row = observed[2][1]
    assert isinstance(vars_row, ResultSet) and vars_row.rows == [b"\xfb\x011\x010"]
    assert observed[3][1].rows == [b"\x010"]  # the uncommitted insert was rolled back


@pytest.mark.parametrize("impl", ["pure", "cext"])
def test_change_user(target: Target, direct: Target, other_database: str, impl: str) -> None:
    """COM_CHANGE_USER to app/apppw (configured on the backend and as a grproxy frontend user):
    session state reset, new default database, usable; a wrong password is refused with 1045."""

    def observe(t: Target) -> Any:
        params = {"user": "app", "password": "apppw", "database": other_database}
        if impl == "cext":
            result = run_cext("change_user", t, **params)
        else:
            result = connector_scenarios.change_user(t.connector_kwargs(), **params)
        wrong = result["wrong_password"]
        if isinstance(wrong, tuple):
            result["wrong_password"] = wrong[:3] + (re.sub(r"@'[^']*'", "@'H'", wrong[3]),)
        return result

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert observed["after_change"] == [(None, other_database, 2)]
    assert observed["wrong_password"][1:] == (1045, "28000", "Access denied for user 'app'@'H' (using password: YES)")


def test_statistics(target: Target, direct: Target) -> None:
    observed = connector_scenarios.statistics_and_ping(target.connector_kwargs())
    reference = connector_scenarios.statistics_and_ping(direct.connector_kwargs())
    assert observed["stat_keys"] == reference["stat_keys"]
    assert {"Uptime", "Threads", "Questions", "Open tables", "Queries per second avg"} <= set(observed["stat_keys"])
    assert observed["stats"]["Uptime"] > 0
    assert observed["ping"] == reference["ping"]
    assert observed["after"] == [("after",)]

    def raw(t: Target) -> bytes:
        with t.raw() as client:
            client.command(COM_STATISTICS)
            return client.read_packet()  # a bare string, not an OK packet

    text = raw(target).decode()
    assert re.fullmatch(
        r"Uptime: \d+  Threads: \d+  Questions: \d+  Slow queries: \d+  Opens: \d+  "
        r"(Flush tables: \d+  )?Open tables: \d+  Queries per second avg: [\d.]+",
        text,
    ), text


def test_set_option_multi_statements(target: Target, direct: Target) -> None:
    """COM_SET_OPTION switches multi-statement support for the session (answered by EOF)."""

    def observe(t: Target) -> Any:
        out: list[Any] = []
        with t.raw(capabilities=DEFAULT_CAPABILITIES) as client:  # no CLIENT_MULTI_STATEMENTS
            out.append(("off", [type(r).__name__ for r in client.query("SELECT 1; SELECT 2")]))
            client.command(COM_SET_OPTION, struct.pack("<H", 0))  # MYSQL_OPTION_MULTI_STATEMENTS_ON
            reply = client.read_packet()
            out.append(("set on", reply[:1], is_eof(reply)))
            results = client.query("SELECT 1; SELECT 2")
            out.append(("on", [r.rows if isinstance(r, ResultSet) else r for r in results]))
            client.command(COM_SET_OPTION, struct.pack("<H", 1))  # ..._OFF
            reply = client.read_packet()
            out.append(("set off", reply[:1], is_eof(reply)))
            out.append(("off again", [type(r).__name__ for r in client.query("SELECT 1; SELECT 2")]))
            out.append(("after", client.query_one("SELECT 'after'")))
        return out

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert observed[0] == ("off", ["ErrPacket"])
    assert observed[2] == ("on", [[b"\x011"], [b"\x012"]])
    assert observed[4] == ("off again", ["ErrPacket"])


def test_multi_statements_capability(target: Target, direct: Target) -> None:
    """A client that announces CLIENT_MULTI_STATEMENTS in its handshake may send batches."""

    def observe(t: Target) -> Any:
        with t.raw(capabilities=DEFAULT_CAPABILITIES | CLIENT_MULTI_STATEMENTS) as client:
            results = client.query("SELECT 1; SELECT 'two'; DO 0")
        return [(type(r).__name__, r.rows if isinstance(r, ResultSet) else r) for r in results]

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert [kind for kind, _ in observed] == ["ResultSet", "ResultSet", "OkPacket"]


def test_field_list(target: Target, direct: Target) -> None:
    """COM_FIELD_LIST (deprecated, still sent by older clients): column definitions of a table."""

    def observe(t: Target) -> Any:
        table = t.table("fields")
        with t.raw() as client:
            client.query_one(f"DROP TABLE IF EXISTS {table}")
            client.query_one(f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(10) DEFAULT 'x')")
            client.command(COM_FIELD_LIST, table.encode() + b"\0")
            packets = []
            while True:
                packet = client.read_packet()
                packets.append(packet.replace(table.encode(), b"T"))
                if is_eof(packet) or packet[:1] == b"\xff":
                    break
            after = client.query_one("SELECT 'after'")
        return packets, after

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert len(observed[0]) == 3  # two column definitions and an EOF


def test_process_kill_command(target: Target, direct: Target) -> None:
    """COM_PROCESS_KILL <id from the victim's handshake> closes the victim's connection."""

    def observe(t: Target) -> Any:
        victim = t.raw()
        try:
            with t.raw() as killer:
                killer.command(COM_PROCESS_KILL, struct.pack("<I", victim.connection_id))
                (killed,) = killer.read_response()
                killer.command(COM_PROCESS_KILL, struct.pack("<I", 2147480001))
                (unknown,) = killer.read_response()
            data, how = read_until_closed(victim.sock, timeout_s=5)
        finally:
            victim.close()
        return killed, unknown, how

    observed, reference = observe(target), observe(direct)
    killed, unknown, how = observed
    assert isinstance(killed, OkPacket)
    assert unknown == reference[1] == ErrPacket(1094, "HY000", "Unknown thread id: 2147480001")
    assert how == reference[2] == "eof"


def test_quit(target: Target) -> None:
    """COM_QUIT: the server closes the connection without a reply."""
    with target.raw() as client:
        client.command(COM_QUIT)
        data, how = read_until_closed(client.sock, timeout_s=5)
    assert (data, how) == (b"", "eof")


def test_prepared_statement_lifetime(target: Target, direct: Target) -> None:
    """Statement ids stay valid across other commands, COM_STMT_CLOSE frees one, COM_STMT_RESET
    keeps it, many statements may be open at once, and a closed id is unknown."""

    def observe(t: Target) -> Any:
        out: list[Any] = []
        with t.raw() as client:
            statements = []
            for i in range(50):
                stmt = client.prepare(f"SELECT {i} + ?")
                assert isinstance(stmt, PreparedStatement), stmt
                statements.append(stmt)
            out.append(("ids distinct", len({s.statement_id for s in statements})))
            client.query_one("SELECT 'interleaved'")
            for i, stmt in enumerate(statements[::7]):
                (result,) = client.execute(stmt.statement_id, [(8, (1000).to_bytes(8, "little"))])
                out.append(("exec", result.rows if isinstance(result, ResultSet) else result))
            client.close_statement(statements[0].statement_id)
            (closed,) = client.execute(statements[0].statement_id, [(8, (1).to_bytes(8, "little"))])
            assert isinstance(closed, ErrPacket), closed
            out.append(("closed", closed.errno, closed.sqlstate))
            client.command(0x1A, struct.pack("<I", statements[1].statement_id))  # COM_STMT_RESET
            (reset,) = client.read_response()
            out.append(("reset", type(reset).__name__))
            (again,) = client.execute(statements[1].statement_id, [(8, (5).to_bytes(8, "little"))])
            out.append(("after reset", again.rows if isinstance(again, ResultSet) else again))
        return out

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert observed[0] == ("ids distinct", 50)
    assert ("closed", 1243, "HY000") in observed
    assert observed[-2:] == [("reset", "OkPacket"), ("after reset", [b"\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00"])]
