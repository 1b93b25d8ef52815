"""Helpers comparing real backends (no tests here): connections, setup, and a table's exact state.

`table_state(handle, database)` is what "identical" means in the write-path tests: for every
base table, CHECKSUM TABLE and every row with every column in hex, read in UTC (a TIMESTAMP's
text does not depend on the session), so two backends compare bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import pymysql

from grproxy.mysqld import ServerHandle
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import PROXY_CAPABILITIES, Cap

# CLIENT_NO_SCHEMA makes the server ignore database qualifiers (`db`.`t` becomes `t` of the
# current database): the member never asks for it, so the tests' connections go without it.
CAPS = int((PROXY_CAPABILITIES | Cap.MULTI_STATEMENTS | Cap.MULTI_RESULTS) & ~Cap.NO_SCHEMA)


async def open_conn(handle: ServerHandle, database: str | None = None, *, caps: int = CAPS) -> BackendConnection:
    return await BackendConnection.open(
        BackendAddress(handle.host, handle.port, "root", ""), capabilities=caps, collation=45, database=database
    )


def admin(handle: ServerHandle, database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=handle.host, port=handle.port, user="root", password="", database=database,
        charset="utf8mb4", autocommit=True, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
    )


def run_sql(handle: ServerHandle, database: str | None, statements: Sequence[str]) -> None:
    conn = admin(handle, database)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


def table_state(handle: ServerHandle, database: str) -> dict[str, object]:
    """CHECKSUM TABLE and every row (as hex, in UTC) of each base table of `database`."""
    conn = admin(handle, database)
    out: dict[str, object] = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' "
                "ORDER BY TABLE_NAME",
                (database,),
            )
            tables = [r[0] for r in cur.fetchall()]
            for t in tables:
                cur.execute(f"CHECKSUM TABLE `{t}`")
                checksum = cur.fetchone()[1]
                cur.execute(
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                    "ORDER BY ORDINAL_POSITION",
                    (database, t),
                )
                cols = [r[0] for r in cur.fetchall()]
                select = ", ".join(f"HEX(`{c}`)" for c in cols)
                cur.execute(f"SELECT {select} FROM `{t}` ORDER BY 1")
                out[t] = (checksum, cur.fetchall())
    finally:
        conn.close()
    return out
