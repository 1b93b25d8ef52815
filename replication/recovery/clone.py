"""Clone: a joiner copies a donor's data when the donor's transaction cache no longer reaches
back to what the joiner lacks (DESIGN §8; MySQL's clone plugin plays this part in GR).

Theory of operation.

Donor (`CloneSnapshot`, served by `Donor` as `/* grproxy */ CLONE …` on its member port):

1. one connection to the donor's own backend opens `START TRANSACTION WITH CONSISTENT SNAPSHOT,
   READ ONLY` (REPEATABLE READ, time_zone +00:00) and reads, in that snapshot, the backend's
   applied positions (grproxy.applied / applied_ranges). The applier commits each seq's rows
   with its position, so the positions describe the snapshot's rows exactly — except for a
   local (origin) transaction, whose position is written just before its XA COMMIT: a snapshot
   that sees such a position may miss its rows. So a snapshot is kept only if every position
   with an xid in it belongs to a seq the member already knew committed when the snapshot was
   asked for and none is still committing; otherwise it is taken again (SNAPSHOT_TRIES_MAX);
2. the objects of every user schema (not mysql, sys, performance_schema, information_schema,
   grproxy): schemas, tables, views, triggers, procedures and functions, as SHOW CREATE gives
   them (with the sql_mode they were created under);
3. each table's rows, in chunks of CLONE_CHUNK_ROWS, read in the same snapshot in primary-key
   order from the last key sent (keyset pagination; LIMIT/OFFSET for a table without one), so
   neither side holds more than a chunk. The donor's server renders every value as an SQL
   literal (QUOTE, hex for binary, numbers for BIT, WKB for geometry), one text per row.

Joiner (`clone_into`): its user schemas are dropped and recreated from the donor's objects,
rows are inserted in batches of at most CLONE_INSERT_BYTES_MAX, then its positions are replaced
by the donor's snapshot positions. All of it runs with `sql_log_bin = 0`: the clone is this
member's local state, not a transaction of the group, and its binlog reader would otherwise see
rows nobody certified (a stray write, DESIGN §5). FOREIGN_KEY_CHECKS and UNIQUE_CHECKS are off
while rows go in (the donor's data already satisfied them).

Limits: one snapshot per clone session; a donor serves CLONE_SESSIONS_MAX at once, and closes a
session idle for CLONE_IDLE_TIMEOUT_S. DDL that runs on the donor during a clone makes the
snapshot's reads fail (MariaDB 1412): the joiner then restarts the clone at the next donor.
Sequences and events are not cloned yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import structlog

from replication.protocol.backend import BackendConnection

from ..positions import AppliedSet
from ..rowimage import qualified_name, quote_identifier

log = structlog.get_logger("grproxy.recovery.clone")

SYSTEM_SCHEMAS = frozenset({"mysql", "sys", "performance_schema", "information_schema", "grproxy"})
CLONE_CHUNK_ROWS = 2_000  # rows of one CLONE ROWS answer
CLONE_INSERT_BYTES_MAX = 1 << 20  # one INSERT of the joiner (well under max_allowed_packet)
CLONE_SESSIONS_MAX = 1  # clones one donor serves at once
CLONE_IDLE_TIMEOUT_S = 60.0  # a clone session no command touched for this long is closed
SNAPSHOT_TRIES_MAX = 50  # snapshots taken until one holds no local commit in flight
SNAPSHOT_RETRY_S = 0.02

_BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
_GEOMETRY_TYPES = frozenset({"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
                             "multipolygon", "geometrycollection"})


class CloneError(Exception):
    """The clone cannot go on with this donor (the joiner tries the next one)."""


def _text(value: object) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def _sql_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"


def _excluded() -> str:
    return ",".join(_sql_str(s) for s in sorted(SYSTEM_SCHEMAS))


def literal_expr(column: str, data_type: str) -> str:
    """SQL that renders `column`'s value as an SQL literal (text, utf8mb4) on the donor."""
    c = quote_identifier(column)
    t = data_type.lower()
    if t in _BINARY_TYPES:
        expr = f"IF({c} IS NULL,'NULL',CONCAT('X''',HEX({c}),''''))"
    elif t == "float":
        # Shown with 6 digits a FLOAT would not read back as the same value; as a DOUBLE it does.
        expr = f"IF({c} IS NULL,'NULL',CAST({c} AS DOUBLE))"
    elif t == "bit":
        expr = f"IF({c} IS NULL,'NULL',CAST({c} AS UNSIGNED))"
    elif t in _GEOMETRY_TYPES:
        expr = f"IF({c} IS NULL,'NULL',CONCAT('ST_GeomFromWKB(X''',HEX(ST_AsBinary({c})),''',',ST_SRID({c}),')'))"
    else:
        expr = f"QUOTE({c})"
    return f"CONVERT({expr} USING utf8mb4)"


@dataclass(slots=True)
class TableCursor:
    """Where the next chunk of a table starts (the last key sent, or the rows sent so far)."""

    select: str  # SELECT <row literal>[, <key literals>] FROM t
    key_columns: tuple[str, ...]
    last_key: tuple[str, ...] | None = None
    offset: int = 0
    done: bool = False

    def next_sql(self, limit: int) -> str:
        if not self.key_columns:
            return f"{self.select} LIMIT {limit} OFFSET {self.offset}"
        order = ",".join(quote_identifier(k) for k in self.key_columns)
        where = ""
        if self.last_key is not None:
            terms = []
            for i, col in enumerate(self.key_columns):
                eq = [f"{quote_identifier(self.key_columns[j])} = {self.last_key[j]}" for j in range(i)]
                terms.append("(" + " AND ".join([*eq, f"{quote_identifier(col)} > {self.last_key[i]}"]) + ")")
            where = " WHERE " + " OR ".join(terms)
        return f"{self.select}{where} ORDER BY {order} LIMIT {limit}"


@dataclass(slots=True, eq=False)
class CloneSnapshot:
    """Donor side of one clone: a connection holding a consistent snapshot of the backend."""

    clone_id: int
    conn: BackendConnection
    positions: AppliedSet
    objects: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)
    cursors: dict[tuple[str, str], TableCursor] = field(default_factory=dict)
    idle_timer: asyncio.TimerHandle | None = None
    busy: bool = False
    owner: object = None  # the member-port session that began it

    @classmethod
    async def open(cls, clone_id: int, connect: Callable[[], Awaitable[BackendConnection]],
                   known_applied: Callable[[], AppliedSet], committing: Callable[[], Collection[int]]) -> "CloneSnapshot":
        """Take the snapshot (see the module docstring, 1 and 2). Raises CloneError when no
        snapshot free of local commits in flight was found, BackendError."""
        conn = await connect()
        try:
            await conn.execute("SET SESSION time_zone = '+00:00'")
            await conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            for _ in range(SNAPSHOT_TRIES_MAX):
                before = known_applied()
                await conn.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                ranges = await conn.execute("SELECT lo, hi FROM grproxy.applied_ranges")
                rows = await conn.execute("SELECT seq, xid IS NOT NULL FROM grproxy.applied")
                in_flight = set(committing())
                positions = AppliedSet((int(lo), int(hi)) for lo, hi in ranges.rows)  # type: ignore[arg-type]
                local: list[int] = []
                for seq, has_xid in rows.rows:
                    positions.add(int(seq))  # type: ignore[arg-type]
                    if has_xid not in (None, b"0"):
                        local.append(int(seq))  # type: ignore[arg-type]
                if all(s in before and s not in in_flight for s in local):
                    snap = cls(clone_id, conn, positions)
                    await snap._read_objects()
                    return snap
                await conn.execute("ROLLBACK")
                await asyncio.sleep(SNAPSHOT_RETRY_S)
            raise CloneError(f"no snapshot free of local commits in flight after {SNAPSHOT_TRIES_MAX} tries")
        except BaseException:
            conn.close()
            raise

    async def _read_objects(self) -> None:
        """Every user object as (kind, schema, name, sql_mode, create statement, insert columns),
        in creation order: schemas, tables, views, triggers, routines."""
        c = self.conn
        out: list[tuple[str, str, str, str, str, str]] = []
        r = await c.execute(f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({_excluded()}) "
                            "ORDER BY SCHEMA_NAME")
        schemas = [_text(s) for (s,) in r.rows]
        for s in schemas:
            row = (await c.execute(f"SHOW CREATE DATABASE {quote_identifier(s)}")).rows[0]
            out.append(("SCHEMA", s, s, "", _text(row[1]), ""))
        if not schemas:
            self.objects = out
            return
        in_list = ",".join(_sql_str(s) for s in schemas)
        r = await c.execute(f"SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                            f"WHERE TABLE_SCHEMA IN ({in_list}) ORDER BY TABLE_SCHEMA, TABLE_NAME")
        tables = [(_text(s), _text(t), _text(k)) for s, t, k in r.rows]
        views = []
        for s, t, kind in tables:
            if kind == "VIEW":
                views.append((s, t))
                continue
            if kind != "BASE TABLE":
                continue  # SEQUENCE, SYSTEM VERSIONED…: not cloned yet
            row = (await c.execute(f"SHOW CREATE TABLE {qualified_name(s, t)}")).rows[0]
            cols = await c.execute(
                "SELECT COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS "
                f"WHERE TABLE_SCHEMA = {_sql_str(s)} AND TABLE_NAME = {_sql_str(t)} ORDER BY ORDINAL_POSITION")
            names, exprs = [], []
            for name, data_type, extra in cols.rows:
                if "GENERATED" in _text(extra).upper():
                    continue  # computed by the joiner's server
                names.append(_text(name))
                exprs.append(literal_expr(_text(name), _text(data_type)))
            keys = await c.execute(
                "SELECT s.COLUMN_NAME, c.DATA_TYPE FROM information_schema.STATISTICS s JOIN information_schema.COLUMNS c "
                "ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME "
                f"WHERE s.TABLE_SCHEMA = {_sql_str(s)} AND s.TABLE_NAME = {_sql_str(t)} AND s.INDEX_NAME = 'PRIMARY' "
                "ORDER BY s.SEQ_IN_INDEX")
            key_cols = tuple(_text(k) for k, _ in keys.rows)
            key_exprs = [literal_expr(_text(k), _text(dt)) for k, dt in keys.rows]
            select = ("SELECT CONCAT_WS(','," + ",".join(exprs) + ")"
                      + "".join("," + e for e in key_exprs) + f" FROM {qualified_name(s, t)}")
            self.cursors[(s, t)] = TableCursor(select, key_cols)
            out.append(("TABLE", s, t, "", _text(row[1]), ",".join(quote_identifier(n) for n in names)))
        for s, t in views:
            row = (await c.execute(f"SHOW CREATE VIEW {qualified_name(s, t)}")).rows[0]
            out.append(("VIEW", s, t, "", _text(row[1]), ""))
        r = await c.execute(f"SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS "
                            f"WHERE TRIGGER_SCHEMA IN ({in_list}) ORDER BY TRIGGER_SCHEMA, ACTION_ORDER, TRIGGER_NAME")
        for s, t in [(_text(a), _text(b)) for a, b in r.rows]:
            row = (await c.execute(f"SHOW CREATE TRIGGER {qualified_name(s, t)}")).rows[0]
            out.append(("TRIGGER", s, t, _text(row[1]), _text(row[2]), ""))
        r = await c.execute(f"SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
                            f"WHERE ROUTINE_SCHEMA IN ({in_list}) ORDER BY ROUTINE_SCHEMA, ROUTINE_NAME")
        for s, t, kind in [(_text(a), _text(b), _text(k)) for a, b, k in r.rows]:
            if kind not in ("PROCEDURE", "FUNCTION"):
                continue
            row = (await c.execute(f"SHOW CREATE {kind} {qualified_name(s, t)}")).rows[0]
            out.append((kind, s, t, _text(row[1]), _text(row[2]), ""))
        self.objects = out

    async def rows(self, schema: str, table: str, limit: int = CLONE_CHUNK_ROWS) -> list[bytes]:
        """The next chunk of `schema.table`'s rows, each one text "lit,lit,…"; fewer than
        `limit` (possibly none) once the table is done. Raises CloneError for an unknown table."""
        cur = self.cursors.get((schema, table))
        if cur is None:
            raise CloneError(f"no table {schema}.{table} in clone {self.clone_id}")
        if cur.done:
            return []
        r = await self.conn.execute(cur.next_sql(limit))
        out = [bytes(row[0] or b"") for row in r.rows]
        if r.rows:
            if cur.key_columns:
                cur.last_key = tuple(_text(v) for v in r.rows[-1][1:])
            cur.offset += len(r.rows)
        if len(r.rows) < limit:
            cur.done = True
        return out

    def close(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.conn.close()


# --- the joiner's side ---------------------------------------------------------------------------


@dataclass(slots=True)
class CloneProgress:
    """What a clone did so far (logged, and shown by `/* grproxy */ MEMBER STATS`)."""

    tables: int = 0
    tables_done: int = 0
    rows: int = 0
    bytes: int = 0
    started_at: float = 0.0
    ended_at: float = 0.0

    def mib_per_s(self, now: float) -> float:
        elapsed = (self.ended_at or now) - self.started_at
        return self.bytes / (1 << 20) / elapsed if elapsed > 0 and self.started_at else 0.0


DonorCall = Callable[[str], Awaitable[Any]]  # a bounded command on the donor's member port


async def clone_into(donor: DonorCall, local: BackendConnection, progress: CloneProgress,
                     on_schema: Callable[[str], None] | None = None,
                     before_changes: Callable[[], Awaitable[None]] | None = None) -> tuple[str, AppliedSet]:
    """Clone the donor's user schemas into this member's backend through `local` (a connection
    of its own); `on_schema` hears every schema dropped or created; `before_changes` runs once
    the donor's snapshot is open, before this backend is changed. Returns (group uuid, the donor's snapshot positions); the caller replaces its
    positions with them. Raises CloneError, BackendError / MySQLError from either side,
    TimeoutError from a donor call."""
    loop = asyncio.get_running_loop()
    r = await donor("CLONE BEGIN")
    clone_id, group_uuid, positions_text = _text(r.rows[0][0]), _text(r.rows[0][1]), _text(r.rows[0][2])
    try:
        objects = await donor(f"CLONE OBJECTS {clone_id}")
        items = [tuple(_text(v) for v in row) for row in objects.rows]
        progress.tables = sum(1 for it in items if it[0] == "TABLE")
        progress.tables_done = progress.rows = progress.bytes = 0
        progress.started_at, progress.ended_at = loop.time(), 0.0
        await local.execute("SET SESSION sql_log_bin = 0")
        await local.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0, time_zone = '+00:00'")
        await local.execute("SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'")
        if before_changes is not None:
            await before_changes()
        r_local = await local.execute(f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
                                      f"WHERE SCHEMA_NAME NOT IN ({_excluded()})")
        for (s,) in r_local.rows:
            if on_schema is not None:
                on_schema(_text(s))
            await local.execute(f"DROP DATABASE {quote_identifier(_text(s))}")
        for kind, schema, name, sql_mode, create, _ in items:
            if kind == "SCHEMA":
                if on_schema is not None:
                    on_schema(schema)
                await local.execute(create)
            elif kind == "TABLE":
                await local.execute(f"USE {quote_identifier(schema)}")
                await local.execute(create)
        for kind, schema, name, _, _, columns in items:
            if kind != "TABLE":
                continue
            await _copy_rows(donor, local, clone_id, schema, name, columns, progress)
            progress.tables_done += 1
            log.info("clone_table_done", schema=schema, table=name, tables_done=progress.tables_done,
                     tables=progress.tables, rows=progress.rows, bytes=progress.bytes)
        views = [it for it in items if it[0] == "VIEW"]
        for _ in range(len(views) + 1):  # a view over a view needs the other first
            failed = []
            for it in views:
                try:
                    await local.execute(f"USE {quote_identifier(it[1])}")
                    await local.execute(it[4])
                except Exception:  # noqa: BLE001 - retried after the others; the last round raises
                    failed.append(it)
            if not failed or len(failed) == len(views):
                views = failed
                break
            views = failed
        for it in views:  # what still fails now says why
            await local.execute(f"USE {quote_identifier(it[1])}")
            await local.execute(it[4])
        for kind, schema, name, sql_mode, create, _ in items:
            if kind in ("TRIGGER", "PROCEDURE", "FUNCTION"):
                await local.execute(f"USE {quote_identifier(schema)}")
                await local.execute(f"SET SESSION sql_mode = {_sql_str(sql_mode)}")
                await local.execute(create)
        progress.ended_at = loop.time()
    finally:
        try:
            await donor(f"CLONE END {clone_id}")
        except Exception:  # noqa: BLE001 - the donor closes an idle clone itself
            pass
    return group_uuid, AppliedSet.parse(positions_text)


async def _copy_rows(donor: DonorCall, local: BackendConnection, clone_id: str, schema: str, table: str,
                     columns: str, progress: CloneProgress) -> None:
    head = f"INSERT INTO {qualified_name(schema, table)} ({columns}) VALUES "
    while True:
        r = await donor(f"CLONE ROWS {clone_id} {schema.encode().hex()} {table.encode().hex()}")
        batch: list[str] = []
        size = len(head)
        for (value,) in r.rows:
            text = _text(value)
            if batch and size + len(text) + 3 > CLONE_INSERT_BYTES_MAX:
                await local.execute(head + "(" + "),(".join(batch) + ")")
                batch, size = [], len(head)
            batch.append(text)
            size += len(text) + 3
            progress.rows += 1
            progress.bytes += len(text)
        if batch:
            await local.execute(head + "(" + "),(".join(batch) + ")")
        if len(r.rows) < CLONE_CHUNK_ROWS:
            return
