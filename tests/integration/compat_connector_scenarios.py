"""mysql-connector-python scenarios, runnable with the pure-Python protocol or the C extension.

Each scenario takes `connect` (keyword arguments for mysql.connector.connect, including
use_pure) and returns plain, picklable observations (values, descriptions, error triples), so
the same scenario can run in-process (pure) or in a fresh interpreter (C extension, see
compat_support.run_cext) and the results can be compared between direct and proxy.
Expected errors are caught and returned as data; anything else propagates and fails the test.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from typing import Any

import mysql.connector
from mysql.connector import errors


def _connect(connect: dict[str, Any], **overrides: Any) -> Any:
    conn = mysql.connector.connect(**{**connect, **overrides})
    expect_pure = connect.get("use_pure", True)
    is_cext = type(conn).__name__ == "CMySQLConnection"
    # A silent fallback to pure Python would make the C-extension tests test nothing.
    assert is_cext != expect_pure, f"asked use_pure={expect_pure}, got {type(conn).__name__}"
    return conn


def _err(exc: errors.Error) -> tuple[Any, ...]:
    return (type(exc).__name__, exc.errno, exc.sqlstate, exc.msg)


def select_rows(connect: dict[str, Any], *, sql: str, prepared: bool, params: list[Any] | None = None) -> dict[str, Any]:
    """Run one SELECT; return description (name, type, null_ok, flags, charset) and rows."""
    conn = _connect(connect)
    try:
        cur = conn.cursor(prepared=prepared)
        cur.execute(sql, tuple(params) if params else None)
        rows = cur.fetchall()
        description = [tuple(d) for d in cur.description]
        cur.close()
        return {"description": description, "rows": rows, "rowcount": cur.rowcount}
    finally:
        conn.close()


def insert_params(
    connect: dict[str, Any], *, table: str, columns: list[str], rows: list[tuple[Any, ...]], prepared: bool
) -> dict[str, Any]:
    """Insert rows with bound parameters, then read them back (text protocol)."""
    conn = _connect(connect, autocommit=True)
    try:
        cur = conn.cursor(prepared=prepared)
        placeholders = ", ".join(["%s"] * len(columns))
        ids = []
        for row in rows:
            cur.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", row)
            ids.append((cur.rowcount, cur.lastrowid))
        cur.close()
        cur = conn.cursor()
        cur.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")
        back = cur.fetchall()
        cur.close()
        return {"ids": ids, "rows": back}
    finally:
        conn.close()


def affected_rows(connect: dict[str, Any], *, table: str, prepared: bool, client_flags: list[int] | None = None) -> list[Any]:
    """rowcount/lastrowid after each kind of DML."""
    conn = _connect(connect, autocommit=True, **({"client_flags": client_flags} if client_flags else {}))
    out: list[Any] = []
    try:
        cur = conn.cursor(prepared=prepared)
        steps = [
            (f"INSERT INTO {table} (k, v) VALUES (%s, %s)", (1, "a")),
            (f"INSERT INTO {table} (k, v) VALUES (%s, %s)", (2, "b")),
            (f"UPDATE {table} SET v = %s WHERE k IN (1, 2)", ("a",)),  # matched 2, changed 1
            (f"UPDATE {table} SET v = %s WHERE k = %s", ("zz", 99)),  # matched 0
            (f"INSERT INTO {table} (k, v) VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = VALUES(v)", (1, "dup")),  # 2
            (f"INSERT INTO {table} (k, v) VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = VALUES(v)", (1, "dup")),  # unchanged
            (f"INSERT INTO {table} (k, v) VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = VALUES(v)", (3, "new")),  # 1
            (f"DELETE FROM {table} WHERE k >= %s", (2,)),
        ]
        for sql, params in steps:
            cur.execute(sql, params)
            out.append((sql.split(" ", 1)[0], cur.rowcount, cur.lastrowid))
        cur.close()
        return out
    finally:
        conn.close()


def error_cases(connect: dict[str, Any], *, table: str, prepared: bool) -> list[Any]:
    """(errno, sqlstate, message) for duplicate key, missing table, syntax error."""
    conn = _connect(connect, autocommit=True)
    out: list[Any] = []
    try:
        statements = [
            (f"INSERT INTO {table} (k, v) VALUES (%s, %s)", (1, "first")),
            (f"INSERT INTO {table} (k, v) VALUES (%s, %s)", (1, "again")),  # 1062
            ("SELECT * FROM no_such_table_here WHERE 1 = %s", (1,)),  # 1146
            ("SELEC 1 FROM dual WHERE 1 = %s", (1,)),  # 1064
        ]
        for sql, params in statements:
            cur = conn.cursor(prepared=prepared)
            try:
                cur.execute(sql, params)
                if cur.with_rows:
                    cur.fetchall()
                out.append(("ok", cur.rowcount))
            except errors.Error as exc:
                out.append(_err(exc))
            finally:
                cur.close()
        # The connection is still usable after each error.
        cur = conn.cursor(prepared=prepared)
        cur.execute("SELECT %s + 1", (41,))
        out.append(("after", cur.fetchall()))
        cur.close()
        return out
    finally:
        conn.close()


def blob_roundtrip(
    connect: dict[str, Any], *, table: str, size: int, long_data: bool, seed: int, prepared_readback: bool
) -> dict[str, Any]:
    """Insert `size` bytes through a prepared statement (inline or COM_STMT_SEND_LONG_DATA),
    read it back through the text protocol and, if prepared_readback, a prepared statement.

    Client bug, not the server's: connector's pure-Python binary-row reader keeps only the first
    16 MiB packet of a larger row (and then fails on the next column), so the pure variants
    read the value back through the text protocol only.
    """
    data = _blob(size, seed)
    conn = _connect(connect, autocommit=True)
    try:
        cur = conn.cursor(prepared=True)
        param: Any = io.BytesIO(data) if long_data else data
        cur.execute(f"INSERT INTO {table} (b) VALUES (%s)", (param,))
        row_id = cur.lastrowid
        cur.execute(f"SELECT LENGTH(b), SHA2(b, 256) FROM {table} WHERE id = %s", (row_id,))
        (server_length, server_sha) = cur.fetchall()[0]
        prepared: Any = None
        if prepared_readback:
            cur.execute(f"SELECT b FROM {table} WHERE id = %s", (row_id,))
            (prepared_back,) = cur.fetchall()[0]
            prepared = (len(prepared_back), hashlib.sha256(bytes(prepared_back)).hexdigest())
        cur.close()
        text = conn.cursor()
        text.execute(f"SELECT b FROM {table} WHERE id = {int(row_id)}")
        (text_back,) = text.fetchall()[0]
        text.close()
        return {
            "sent": hashlib.sha256(data).hexdigest(),
            "server": (server_length, server_sha),
            "prepared": prepared,
            "text": (len(text_back), hashlib.sha256(bytes(text_back)).hexdigest()),
        }
    finally:
        conn.close()


def _blob(size: int, seed: int) -> bytes:
    # Deterministic, incompressible, full of zero bytes and escape-worthy bytes.
    chunk = hashlib.sha256(str(seed).encode()).digest() + b"\x00\x00'\\\"\n\r\x1a" * 4
    return (chunk * (size // len(chunk) + 1))[:size]


def multi_results(connect: dict[str, Any], *, procedure: str) -> list[Any]:
    """A procedure returning two result sets, through callproc and through CALL (text and
    prepared), and a two-statement query."""
    conn = _connect(connect, autocommit=True)
    out: list[Any] = []
    try:
        cur = conn.cursor()
        cur.callproc(procedure)
        with warnings.catch_warnings():
            # stored_results() is deprecated for a property of the same name in newer releases.
            warnings.simplefilter("ignore", DeprecationWarning)
            stored = list(cur.stored_results())
        out.append(("callproc", [(r.description and [d[0] for d in r.description], r.fetchall()) for r in stored]))
        cur.close()

        cur = conn.cursor()
        cur.execute(f"CALL {procedure}()")
        sets = []
        while True:
            if cur.with_rows:
                sets.append(([d[0] for d in cur.description], cur.fetchall()))
            else:
                sets.append(("no rows", cur.rowcount))
            if not cur.nextset():
                break
        out.append(("call-text", sets))
        cur.close()

        cur = conn.cursor()
        cur.execute("SELECT 1 AS one; SELECT 'two' AS two, 2 AS n", map_results=True)
        sets = []
        while True:
            sets.append(([d[0] for d in cur.description], cur.fetchall()))
            if not cur.nextset():
                break
        out.append(("multi-statement", sets))
        cur.close()

        cur = conn.cursor()
        cur.execute("SELECT 'still usable'")
        out.append(("after", cur.fetchall()))
        cur.close()
        return out
    finally:
        conn.close()


def reset_connection(connect: dict[str, Any], *, table: str) -> dict[str, Any]:
    """COM_RESET_CONNECTION: session state (user variable, temporary table, autocommit) is gone,
    the connection stays usable."""
    conn = _connect(connect)
    try:
        cur = conn.cursor()
        cur.execute("SET @marker = 42, autocommit = 0")
        cur.execute(f"CREATE TEMPORARY TABLE {table} (x INT)")
        cur.execute(f"INSERT INTO {table} VALUES (1)")
        cur.execute("SELECT @marker, @@autocommit")
        before = cur.fetchall()
        cur.close()
        conn.cmd_reset_connection()
        cur = conn.cursor()
        cur.execute("SELECT @marker, @@autocommit")
        after = cur.fetchall()
        try:
            cur.execute(f"SELECT * FROM {table}")
            temp_table: Any = cur.fetchall()
        except errors.Error as exc:
            temp_table = _err(exc)
        cur.close()
        return {"before": before, "after": after, "temp_table": temp_table}
    finally:
        conn.close()


def change_user(connect: dict[str, Any], *, user: str, password: str, database: str) -> dict[str, Any]:
    """COM_CHANGE_USER to another account (state reset, usable), and with a wrong password."""
    conn = _connect(connect)
    out: dict[str, Any] = {}
    try:
        cur = conn.cursor()
        cur.execute("SET @marker = 'before'")
        cur.close()
        conn.cmd_change_user(username=user, password=password, database=database)
        cur = conn.cursor()
        cur.execute("SELECT @marker, DATABASE(), 1 + 1")
        out["after_change"] = cur.fetchall()
        cur.close()
        try:
            conn.cmd_change_user(username=user, password=password + "-wrong", database=database)
            out["wrong_password"] = "accepted"
        except errors.Error as exc:
            out["wrong_password"] = _err(exc)
        return out
    finally:
        try:
            conn.close()
        except errors.Error:
            pass


def statistics_and_ping(connect: dict[str, Any]) -> dict[str, Any]:
    conn = _connect(connect)
    try:
        stats = conn.cmd_statistics()
        ping = conn.cmd_ping()
        ping_summary = sorted(ping.keys()) if isinstance(ping, dict) else ping
        cur = conn.cursor()
        cur.execute("SELECT 'after'")
        after = cur.fetchall()
        cur.close()
        return {"stat_keys": sorted(stats.keys()), "stats": stats, "ping": ping_summary, "after": after}
    finally:
        conn.close()


def server_side_cursor(connect: dict[str, Any], *, sql: str, chunk: int) -> dict[str, Any]:
    """COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH `chunk` rows at a time
    (pure Python only: the C extension does not expose cursor types)."""
    from mysql.connector.constants import ServerFlag

    conn = _connect(connect)
    try:
        statement = conn.cmd_stmt_prepare(sql.encode())
        result = conn.cmd_stmt_execute(statement["statement_id"], parameters=statement["parameters"], flags=1)
        assert isinstance(result, tuple), result
        _, columns, eof = result
        status = eof.get("status_flag", eof.get("server_status", 0))
        chunks = []
        flags_seen = [status]
        for _ in range(100_000):
            if status & ServerFlag.STATUS_LAST_ROW_SENT or not status & ServerFlag.STATUS_CURSOR_EXISTS:
                break
            conn.cmd_stmt_fetch(statement["statement_id"], chunk)
            rows, eof = conn.get_rows(binary=True, columns=columns)
            status = eof.get("status_flag", eof.get("server_status", 0))
            flags_seen.append(status)
            chunks.append(rows)
        conn.cmd_stmt_close(statement["statement_id"])
        cur = conn.cursor()
        cur.execute("SELECT 'after'")
        after = cur.fetchall()
        cur.close()
        return {
            "columns": [tuple(c) for c in columns],
            "chunk_sizes": [len(c) for c in chunks],
            "rows": [r for c in chunks for r in c],
            "cursor_flag_first": bool(flags_seen[0] & ServerFlag.STATUS_CURSOR_EXISTS),
            "last_row_sent": bool(flags_seen[-1] & ServerFlag.STATUS_LAST_ROW_SENT),
            "after": after,
        }
    finally:
        conn.close()


SCENARIOS = {
    name: obj
    for name, obj in globals().items()
    if callable(obj) and not name.startswith("_") and getattr(obj, "__module__", "") == __name__
}
