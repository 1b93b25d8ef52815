"""Every column type, through every client, compared between grproxy and the backend directly.

What a client sees of a result: the decoded values and the column metadata (names, types,
flags, charset, length, decimals), in the text protocol (COM_QUERY) and the binary protocol
(prepared statements), and the bytes themselves (RawClient). grproxy relays result packets
(DESIGN §4), so all of it must be identical to what the backend sends directly.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
from typing import Any

import pymysql
import pytest

import compat_connector_scenarios as connector_scenarios
from compat_data import COLUMNS, PARAM_COLUMNS, PARAM_ROWS, TYPES_DDL, insert_statement
from compat_support import (
    CLIENT_DEPRECATE_EOF,
    DEFAULT_CAPABILITIES,
    PreparedStatement,
    ResultSet,
    Target,
    coldef_fields,
    pymysql_fields,
    run_cext,
)

pytestmark = pytest.mark.timeout(120)

TYPES_TABLE = "types_ref"
SELECT_ALL = f"SELECT * FROM {TYPES_TABLE} ORDER BY id"
# Computed columns carry other metadata than table columns (no table names, binary charset
# for numbers, max lengths from the expression).
SELECT_EXPRESSIONS = (
    "SELECT NULL AS n, 1 AS one, -1 AS minus, 18446744073709551615 AS u64, 1.5e0 AS dbl, "
    "CAST('-1.000000000000000000000000000001' AS DECIMAL(65,30)) AS d65, 0.1 + 0.2 AS dsum, "
    "_binary X'00FF00' AS bin, 'x😀' COLLATE utf8mb4_bin AS s, CAST('12:34:56.5' AS TIME(1)) AS tm, "
    "DATE'2024-02-29' AS dt, TIMESTAMP'2024-02-29 01:02:03.456789' AS ts, JSON_OBJECT('a', 1) AS js, "
    "b'101' AS bits, 9223372036854775807 + 0 AS big, CONCAT('a', NULL) AS cn"
)


@pytest.fixture(scope="module")
def types_table(backend: Any, database: str) -> str:
    conn = pymysql.connect(host=backend.host, port=backend.port, user="root", password="", database=database, charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {TYPES_TABLE}")
            cur.execute(TYPES_DDL.format(table=TYPES_TABLE))
            cur.execute(insert_statement(TYPES_TABLE))
            # The edge values must be stored as written, or the comparison proves less.
            cur.execute("SHOW WARNINGS")
            assert cur.fetchall() == ()
        conn.commit()
    finally:
        conn.close()
    return TYPES_TABLE


def _pymysql_observe(target: Target, sql: str, **connect: Any) -> dict[str, Any]:
    conn = target.pymysql(**connect)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return {
                "rows": cur.fetchall(),
                "description": cur.description,
                "fields": pymysql_fields(cur),
                "rowcount": cur.rowcount,
                "warnings": conn._result.warning_count,  # noqa: SLF001
            }
    finally:
        conn.close()


def test_pymysql_text_protocol_values_and_metadata(target: Target, direct: Target, types_table: str) -> None:
    observed = _pymysql_observe(target, SELECT_ALL)
    reference = _pymysql_observe(direct, SELECT_ALL)
    assert observed["fields"] == reference["fields"]
    assert observed["description"] == reference["description"]
    assert observed["rows"] == reference["rows"]
    assert observed["rowcount"] == reference["rowcount"] == 4

    rows = observed["rows"]
    col = {name: i + 1 for i, name in enumerate(COLUMNS)}
    assert rows[1][col["biu"]] == 18446744073709551615
    assert rows[0][col["bi"]] == -9223372036854775808
    assert rows[1][col["dec65"]] == decimal.Decimal("9" * 35 + "." + "9" * 30)
    assert rows[2][col["vc"]] == "😀 emoji ✓ 中文 \\ ' \""
    assert rows[2][col["tx"]] == "line1\nline2\ttab\0nul"
    assert rows[1][col["ltx"]] == "😀" * 100000
    assert rows[2][col["bn"]] == b"\x00\x01\x00\x02\x00\x03\x00\x00"
    assert rows[1][col["lbl"]] == b"\x00" * 70000
    assert rows[2][col["dtm"]] == datetime.datetime(2024, 2, 29, 12, 34, 56, 789012)
    assert rows[0][col["tm"]] == -datetime.timedelta(hours=838, minutes=59, seconds=59)
    assert rows[2][col["st"]] == "x,z"
    assert rows[1][col["bt64"]] == b"\xff" * 8
    assert rows[1][col["zf"]] == 42
    assert all(value is None for value in rows[3][1:] if value != decimal.Decimal(0))
    by_name = {f["name"]: f for f in observed["fields"]}
    assert by_name["biu"]["flags"] & 32  # UNSIGNED_FLAG
    assert by_name["zf"]["flags"] & 64  # ZEROFILL_FLAG
    assert by_name["dec65"]["scale"] == 30
    assert by_name["tm"]["scale"] == 6
    assert by_name["vc"]["charsetnr"] == 45  # utf8mb4_general_ci
    assert by_name["bl"]["charsetnr"] == 63  # binary


def test_pymysql_computed_columns(target: Target, direct: Target) -> None:
    observed = _pymysql_observe(target, SELECT_EXPRESSIONS)
    reference = _pymysql_observe(direct, SELECT_EXPRESSIONS)
    assert observed == reference
    (row,) = observed["rows"]
    assert row[0] is None and row[3] == 18446744073709551615 and row[8] == "x😀" and row[7] == b"\x00\xff\x00"


def test_pymysql_streaming_cursor(target: Target, direct: Target, types_table: str) -> None:
    """SSCursor reads the result unbuffered, row by row off the socket."""

    def observe(t: Target) -> Any:
        conn = t.pymysql(cursorclass=pymysql.cursors.SSCursor)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT seq, REPEAT(CHAR(65 + seq % 26 USING utf8mb4), seq % 1000) FROM seq_1_to_20000")
                first = cur.fetchmany(7)
                rest = list(cur.fetchall_unbuffered())
            with conn.cursor() as cur:
                cur.execute(SELECT_ALL)
                types_rows = list(cur.fetchall_unbuffered())
            return first, len(rest), rest[-1], types_rows
        finally:
            conn.close()

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert observed[0][0] == (1, "B") and observed[1] == 20000 - 7


def test_aiomysql_values_and_description(target: Target, direct: Target, types_table: str) -> None:
    import aiomysql

    async def observe(t: Target) -> Any:
        async with asyncio.timeout(60):
            conn = await aiomysql.connect(**t.aiomysql_kwargs())
            try:
                async with conn.cursor() as cur:
                    await cur.execute(SELECT_ALL)
                    rows = await cur.fetchall()
                    description = cur.description
                async with conn.cursor() as cur:
                    await cur.execute(SELECT_EXPRESSIONS)
                    computed = await cur.fetchall()
                return rows, description, computed
            finally:
                conn.close()

    observed = asyncio.run(observe(target))
    reference = asyncio.run(observe(direct))
    assert observed[1] == reference[1]
    assert observed[0] == reference[0]
    assert observed[2] == reference[2]
    assert observed[0][1][COLUMNS.index("biu") + 1] == 18446744073709551615


CONNECTOR_MODES = ["pure-text", "pure-prepared", "cext-text", "cext-prepared"]


def _connector_run(target: Target, mode: str, scenario: str, **params: Any) -> Any:
    impl, _, protocol = mode.partition("-")
    params.setdefault("prepared", protocol == "prepared")
    if impl == "cext":
        return run_cext(scenario, target, **params)
    return connector_scenarios.SCENARIOS[scenario](target.connector_kwargs(use_pure=True), **params)


@pytest.mark.parametrize("mode", CONNECTOR_MODES)
def test_connector_values_and_description(target: Target, direct: Target, types_table: str, mode: str) -> None:
    """mysql-connector: text protocol, and the binary protocol of its prepared cursor."""
    # Client limitation, not the server's: connector's pure-Python binary-row parser has no case
    # for MYSQL_TYPE_YEAR (IndexError), so the prepared variants leave YEAR out; the raw-bytes
    # test below covers YEAR in the binary protocol.
    columns = ["id", *(c for c in COLUMNS if not (c == "yr" and mode.endswith("prepared")))]
    sql = f"SELECT {', '.join(columns)} FROM {TYPES_TABLE} WHERE id >= %s ORDER BY id"
    observed = _connector_run(target, mode, "select_rows", sql=sql, params=[1])
    reference = _connector_run(direct, mode, "select_rows", sql=sql, params=[1])
    assert observed["description"] == reference["description"]
    assert observed["rows"] == reference["rows"]
    assert len(observed["rows"]) == 4
    biu = observed["rows"][1][columns.index("biu")]
    # Client bug, not the server's: the C extension's prepared cursor decodes BIGINT UNSIGNED
    # 18446744073709551615 as -1 (direct too); equality with direct above still covers it.
    assert biu == (-1 if mode == "cext-prepared" else 18446744073709551615)
    vc = observed["rows"][2][columns.index("vc")]
    assert vc in ("😀 emoji ✓ 中文 \\ ' \"", "😀 emoji ✓ 中文 \\ ' \"".encode())


@pytest.mark.parametrize("mode", CONNECTOR_MODES)
def test_connector_computed_columns(target: Target, direct: Target, mode: str) -> None:
    observed = _connector_run(target, mode, "select_rows", sql=SELECT_EXPRESSIONS)
    reference = _connector_run(direct, mode, "select_rows", sql=SELECT_EXPRESSIONS)
    assert observed == reference
    assert observed["rows"][0][3] == (-1 if mode == "cext-prepared" else 18446744073709551615)


def _fresh_params_table(admin: Any, name: str) -> None:
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        cur.execute(TYPES_DDL.format(table=name))


@pytest.mark.parametrize("client", ["pymysql", "pure-text", "pure-prepared", "cext-prepared"])
def test_bound_parameters_round_trip(target: Target, direct: Target, admin: Any, client: str) -> None:
    """Values sent as parameters (escaped into the text by PyMySQL and connector's text cursor,
    binary-encoded in COM_STMT_EXECUTE by the prepared cursors) are stored identically."""

    rows = PARAM_ROWS
    if client == "cext-prepared":
        # Client bugs, not the server's: the C extension cannot bind 18446744073709551615
        # (SystemError in stmt_execute) and binds a Python float as a 4-byte FLOAT (so
        # -1.7976931348623157e308 arrives as -inf: error 1264). It gets values it can bind.
        substitutes = {"biu": 9223372036854775807, "d": -2.5}
        rows = [
            tuple(substitutes.get(c, v) if i == 0 else v for c, v in zip(PARAM_COLUMNS, row, strict=True))
            for i, row in enumerate(rows)
        ]

    def observe(t: Target) -> Any:
        table = t.table(f"params_{client.replace('-', '_')}")
        _fresh_params_table(admin, table)
        if client == "pymysql":
            conn = t.pymysql(autocommit=True)
            try:
                with conn.cursor() as cur:
                    placeholders = ", ".join(["%s"] * len(PARAM_COLUMNS))
                    ids = []
                    for row in rows:
                        cur.execute(f"INSERT INTO {table} ({', '.join(PARAM_COLUMNS)}) VALUES ({placeholders})", row)
                        ids.append((cur.rowcount, cur.lastrowid))
            finally:
                conn.close()
        else:
            result = _connector_run(t, client, "insert_params", table=table, columns=PARAM_COLUMNS, rows=rows)
            ids = result["ids"]
        # Read back the same way for every client, straight from the backend: this test is about
        # what was stored.
        with admin.cursor() as cur:
            cur.execute(f"SELECT {', '.join(PARAM_COLUMNS)} FROM {table} ORDER BY id")
            stored = cur.fetchall()
        return ids, stored

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    ids, stored = observed
    assert ids == [(1, 1), (1, 2)]
    first = dict(zip(PARAM_COLUMNS, stored[0], strict=True))
    expected = dict(zip(PARAM_COLUMNS, rows[0], strict=True))
    for column in ("ti", "tiu", "bi", "biu", "dec65", "dec10", "dt", "dtm", "ts", "ch", "vc", "tx", "bn", "vb", "bl", "en"):
        assert first[column] == expected[column], column
    if client != "cext-prepared":
        # Client bug, not the server's: the C extension binds a negative timedelta as 00:00:00.
        assert first["tm"] == expected["tm"]
    assert first["nul"] is None


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])
def test_raw_bytes_text_and_binary_protocol(target: Target, direct: Target, types_table: str, deprecate_eof: bool) -> None:
    """Column definitions and rows, byte for byte, for COM_QUERY and COM_STMT_EXECUTE, for clients
    that do and do not announce CLIENT_DEPRECATE_EOF."""
    caps = DEFAULT_CAPABILITIES | (CLIENT_DEPRECATE_EOF if deprecate_eof else 0)

    def observe(t: Target) -> Any:
        # A server need not offer CLIENT_DEPRECATE_EOF; the client reads whichever framing was
        # negotiated, and the bytes compared below are the same in both.
        with t.raw(capabilities=caps) as client:
            text = client.query_one(SELECT_ALL)
            computed = client.query_one(SELECT_EXPRESSIONS)
            stmt = client.prepare(f"SELECT * FROM {TYPES_TABLE} WHERE id >= ? ORDER BY id")
            assert isinstance(stmt, PreparedStatement), stmt
            # parameter: MYSQL_TYPE_LONGLONG 1
            binary = client.execute(stmt.statement_id, [(8, (1).to_bytes(8, "little"))])
            client.close_statement(stmt.statement_id)
            after = client.query_one("SELECT 'after'")
            return {
                "text": text,
                "computed": computed,
                "prepare": (stmt.num_columns, stmt.num_params, stmt.warnings, stmt.params, stmt.columns),
                "binary": binary,
                "after": after,
            }

    observed, reference = observe(target), observe(direct)
    assert isinstance(observed["text"], ResultSet)
    for key in ("text", "computed"):
        assert observed[key].columns == reference[key].columns, key
        assert observed[key].rows == reference[key].rows, key
        assert (observed[key].eof_status, observed[key].eof_warnings) == (reference[key].eof_status, reference[key].eof_warnings)
    assert observed["prepare"] == reference["prepare"]
    assert len(observed["binary"]) == 1 and isinstance(observed["binary"][0], ResultSet), observed["binary"]
    assert observed["binary"][0].columns == reference["binary"][0].columns
    assert observed["binary"][0].rows == reference["binary"][0].rows
    assert len(observed["binary"][0].rows) == 4
    assert isinstance(observed["after"], ResultSet) and observed["after"].rows == reference["after"].rows
    fields = [coldef_fields(c) for c in observed["text"].columns]
    assert [f["name"].decode() for f in fields] == ["id", *COLUMNS]
    assert {f["name"]: f["decimals"] for f in fields}[b"dtm"] == 6


@pytest.mark.parametrize(
    ("charset", "collation"),
    [("latin1", None), ("utf8mb4", "utf8mb4_bin"), ("utf8", None), ("cp1251", None)],
)
def test_client_character_sets(target: Target, direct: Target, types_table: str, charset: str, collation: str | None) -> None:
    """The character set a client asks for in its handshake (and SET NAMES) is the one its
    session uses: results are converted to it and column charsets say so."""

    def observe(t: Target) -> Any:
        kwargs: dict[str, Any] = {"charset": charset}
        if collation:
            kwargs["collation"] = collation
        conn = t.pymysql(**kwargs)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT @@character_set_client, @@character_set_connection, @@character_set_results, @@collation_connection"
                )
                session = cur.fetchall()
                cur.execute(f"SELECT ch_latin1, ch, CAST(vc AS CHAR(8)) FROM {TYPES_TABLE} WHERE id = 3")
                values = cur.fetchall()
                fields = pymysql_fields(cur)
                cur.execute("SET NAMES utf8mb4")
                cur.execute("SELECT @@character_set_results, @@collation_connection")
                after = cur.fetchall()
            return session, values, fields, after
        finally:
            conn.close()

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    expected_charset = "utf8mb3" if charset == "utf8" else charset
    assert observed[0][0][:3] == (expected_charset,) * 3
    if collation:
        assert observed[0][0][3] == collation
    assert observed[3][0] == ("utf8mb4", "utf8mb4_general_ci")


def test_sql_mode_and_session_variables(target: Target, direct: Target, admin: Any) -> None:
    """Session settings a client makes shape what it later stores and reads."""

    def observe(t: Target) -> Any:
        table = t.table("sqlmode")
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, c VARCHAR(3), d DATE)")
        conn = t.pymysql(autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE', time_zone = '+05:30'")
                try:
                    cur.execute(f"INSERT INTO {table} VALUES (1, 'toolong', NULL)")
                    strict = "accepted"
                except pymysql.err.MySQLError as exc:
                    strict = exc.args
                cur.execute("SELECT @@sql_mode, @@time_zone, FROM_UNIXTIME(0)")
                settings = cur.fetchall()
                cur.execute("SET SESSION sql_mode = ''")
                cur.execute(f"INSERT INTO {table} VALUES (2, 'toolong', '2024-13-45')")
                cur.execute("SHOW WARNINGS")
                warnings = cur.fetchall()
                cur.execute(f"SELECT * FROM {table}")
                stored = cur.fetchall()
            return strict, settings, warnings, stored
        finally:
            conn.close()

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    strict, settings, warnings, stored = observed
    assert strict[0] == 1406  # Data too long for column
    assert settings[0][1] == "+05:30" and settings[0][2] == datetime.datetime(1970, 1, 1, 5, 30)
    assert warnings == (
        ("Warning", 1265, "Data truncated for column 'c' at row 1"),
        ("Warning", 1265, "Data truncated for column 'd' at row 1"),
    )
    assert stored == ((2, "too", "0000-00-00"),)  # PyMySQL returns zero dates as text
