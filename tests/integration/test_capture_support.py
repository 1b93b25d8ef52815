"""Helpers of the capture integration tests (no tests here): two real backends, capture on A, apply on B.

`Pair` holds backend A (where statements run with capture, in database `cap`, and a reference
database `ref` where the same statement runs without capture) and backend B (where the captured
changes are applied, in database `cap`). `Pair.scenario(setup, statement)` resets all three
databases with the same setup, runs the statement with capture on A inside BEGIN … COMMIT in a
session with a non-UTC time zone and a latin1 client character set, round-trips the changes
through the codec, applies them on B inside a transaction, and returns everything a test needs
to compare.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pymysql

from grproxy.mysqld import ServerHandle
from replication.capture import ClientResult, capture_statement
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import PROXY_CAPABILITIES, Cap
from replication.protocol.errors import BackendError
from replication.rowimage import RowChange, apply_changes, decode_changes, encode_changes
from replication.schema import SchemaCatalog

CAPTURE_SESSION = "SET time_zone = '+05:30', NAMES latin1"
DB = "cap"
REF = "ref"
# CLIENT_NO_SCHEMA makes the server ignore database qualifiers (`db`.`t` becomes `t` of the
# current database): capture refuses such connections, so the tests' sessions go without it.
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


@dataclasses.dataclass
class Outcome:
    result: ClientResult | None
    changes: list[RowChange]
    error: BaseException | None
    reference: tuple[int, int, int] | BaseException  # (affected, insert id, warnings) run directly
    state_a: dict[str, object]
    state_b: dict[str, object]
    state_ref: dict[str, object]
    before_a: dict[str, object]
    catalog_round_trips: int = 0


@dataclasses.dataclass
class Pair:
    a: ServerHandle
    b: ServerHandle
    sql_mode: str = ""

    def __post_init__(self) -> None:
        conn = admin(self.a)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@GLOBAL.sql_mode")
                self.sql_mode = cur.fetchone()[0]
        finally:
            conn.close()

    def reset(self, setup: Sequence[str]) -> None:
        for handle, db in ((self.a, DB), (self.b, DB), (self.a, REF)):
            run_sql(handle, None, [f"DROP DATABASE IF EXISTS `{db}`", f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4"])
            run_sql(handle, db, ["SET time_zone = '+05:30'", *setup])

    def scenario(
        self,
        setup: Sequence[str],
        statement: str,
        *,
        session: str = CAPTURE_SESSION,
        sql_mode: str | None = "",
        temporary_tables: frozenset[tuple[str, str]] = frozenset(),
        encoding: str = "latin-1",
    ) -> Outcome:
        self.reset(setup)
        if sql_mode == "":
            sql_mode = self.sql_mode  # what the session tracker would pass
        before = table_state(self.a, DB)
        catalog = SchemaCatalog()
        result, changes, error = asyncio.run(
            self._capture(statement, session, sql_mode, temporary_tables, encoding, catalog)
        )
        if error is None:
            decoded = decode_changes(encode_changes(changes))
            assert decoded == changes
            asyncio.run(self._apply(decoded))
        reference = asyncio.run(self._reference(statement, session))
        return Outcome(
            result, changes, error, reference, table_state(self.a, DB), table_state(self.b, DB),
            table_state(self.a, REF), before, catalog.loads,
        )

    async def _capture(
        self, statement: str, session: str, sql_mode: str | None, temps: frozenset[tuple[str, str]], encoding: str,
        catalog: SchemaCatalog,
    ) -> tuple[ClientResult | None, list[RowChange], BaseException | None]:
        conn = await open_conn(self.a, DB)
        try:
            await conn.execute_all(session)
            await conn.execute("BEGIN")
            try:
                result, changes = await capture_statement(
                    conn, statement, DB, catalog, temporary_tables=temps, sql_mode=sql_mode, encoding=encoding
                )
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                await conn.execute("COMMIT")  # what survived of the transaction must be nothing
                return None, [], exc
            await conn.execute("COMMIT")
            return result, changes, None
        finally:
            conn.close()

    async def _apply(self, changes: list[RowChange]) -> None:
        conn = await open_conn(self.b, DB)
        try:
            await conn.execute("BEGIN")
            await apply_changes(conn, changes)
            await conn.execute("COMMIT")
        finally:
            conn.close()

    async def _reference(self, statement: str, session: str) -> tuple[int, int, int] | BaseException:
        conn = await open_conn(self.a, REF)
        try:
            await conn.execute_all(session)
            await conn.execute("BEGIN")
            try:
                r = await conn.execute(statement)
            except BackendError as exc:
                await conn.execute("ROLLBACK")
                return exc
            await conn.execute("COMMIT")
            return r.affected_rows, r.last_insert_id, r.warnings
        finally:
            conn.close()
