"""Clone: a joiner copies a donor's data when the donor's transaction cache no longer reaches
back to what the joiner lacks (DESIGN §8; MySQL's clone plugin plays this part in GR).

Theory of operation.

Donor (`CloneSnapshot`, served by `Donor` as `/* grproxy */ CLONE …` on its member port):

1. one connection to the donor's own backend opens `START TRANSACTION WITH CONSISTENT SNAPSHOT,
   READ ONLY` (REPEATABLE READ, time_zone +00:00, sql_mode '' so that SHOW CREATE prints plain
   backquoted SQL) and reads, in that snapshot, the backend's applied positions
   (grproxy.applied / applied_ranges). The applier commits each seq's rows with its position,
   so the positions describe the snapshot's rows exactly — except for a local (origin)
   transaction, whose position is written just before its XA COMMIT: a snapshot that sees such
   a position may miss its rows. So a snapshot is kept only if every position with an xid in it
   belongs to a seq the member already knew committed when the snapshot was asked for and none
   is still committing; otherwise it is taken again (SNAPSHOT_TRIES_MAX);
2. the objects of every user schema (not mysql, sys, performance_schema, information_schema,
   grproxy) as `CloneObject`s: schemas, sequences, tables (system-versioned ones with their
   current rows), functions, procedures, views, triggers and events, as SHOW CREATE gives them,
   with what the server keeps beside each (the sql_mode, time zone, client character set and
   connection collation it was created under, and its schema's collation then);
3. each table's rows, in chunks of CLONE_CHUNK_ROWS, read in the same snapshot in primary-key
   order from the last key sent (keyset pagination; LIMIT/OFFSET for a table without one), so
   neither side holds more than a chunk. The donor's server renders every value as an SQL
   literal (QUOTE, hex for binary, numbers for BIT, WKB for geometry), one text per row;
   generated columns are left to the joiner's server. A sequence is a table of one row (its
   next value not yet cached, bounds, increment, cache size, cycle option and cycle count):
   it is created with CREATE SEQUENCE and that row is copied like a table's, so the joiner's
   next NEXTVAL gives what the donor's would after a restart (values the donor's server holds
   in its cache are not state: MariaDB's own replicas skip them too). A sequence's row is not
   versioned (a snapshot reads its latest state); through a member it changes only by DDL,
   which fails the snapshot (below), or by a cache refill, which the member refuses or sees as a
   stray write.

Joiner (`clone_into`): its user schemas are dropped and recreated from the donor's objects in
an order that needs no object before it exists: schemas; sequences (a column's DEFAULT NEXTVAL
needs its sequence); tables; rows (of tables and sequences), inserted in batches of at most
CLONE_INSERT_BYTES_MAX; functions and procedures (a view may call a function); views, each
after the views its text names; triggers; events. Programs are created under their own
sql_mode, time zone, client character set (their text sent in that character set) and
connection collation, and with their schema's collation as it was then, so SHOW CREATE and
the collation of their string literals match the donor's. Then the caller replaces its
positions by the donor's snapshot positions.

* Events: an event that fires writes rows outside any certified transaction, which the member
  sees as a stray write (DESIGN §5) and goes to ERROR for. A joiner therefore creates an
  ENABLED event as DISABLE ON SLAVE, as a GR secondary keeps the events it replicated: it never
  fires here, the rest of its definition is the donor's (DISABLE and DISABLE ON SLAVE are kept).
* Views whose text names a table, column or function that no longer exists (a table dropped
  under a view: the donor keeps the invalid view) cannot be created as they are: the joiner
  creates stand-ins for what the server says is missing (an empty table, a column, a function
  returning NULL; at most VIEW_STANDINS_MAX per view), creates the view and drops the
  stand-ins, so the view is as invalid here as on the donor. One it still cannot create (a
  column missing from a table that exists) fails the clone with CloneError naming the view.
* Accounts and grants are not cloned: a member does not replicate CREATE USER, GRANT and the
  other account statements (they run on the member's own backend only), so each backend keeps
  its own accounts — among them the one grproxy logs in with. A program's DEFINER is cloned
  as it is.

All of it runs with `sql_log_bin = 0`: the clone is this member's local state, not a
transaction of the group, and its binlog reader would otherwise see rows nobody certified (a
stray write). FOREIGN_KEY_CHECKS and UNIQUE_CHECKS are off while rows go in (the donor's data
already satisfied them).

Limits: one snapshot per clone session; a donor serves CLONE_SESSIONS_MAX at once, and closes a
session idle for CLONE_IDLE_TIMEOUT_S. DDL that runs on the donor during a clone makes the
snapshot's reads fail (MariaDB 1412): the joiner then restarts the clone at the next donor.
The history of a system-versioned table is not cloned (it starts again at the clone).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import structlog

from replication.protocol.backend import BackendConnection
from replication.protocol.constants import Command
from replication.protocol.errors import BackendError

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
VIEW_STANDINS_MAX = 16  # stand-ins the joiner makes for one view that names what no longer exists
CLONE_SQL_MODE = "NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION"  # the joiner's, but for programs

_BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
_GEOMETRY_TYPES = frozenset({"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
                             "multipolygon", "geometrycollection"})
# A table's kinds in information_schema.TABLES that the clone copies with their rows (current
# rows only for a system-versioned one), and how SHOW CREATE names them.
_ROW_TABLE_TYPES = {"BASE TABLE": "TABLE", "SYSTEM VERSIONED": "TABLE", "SEQUENCE": "SEQUENCE"}


class CloneError(Exception):
    """The clone cannot go on with this donor (the joiner tries the next one)."""


@dataclass(frozen=True, slots=True)
class CloneObject:
    """One object of the donor's user schemas: what the joiner needs to create it as the
    donor's server did. `sql_mode` is the one a trigger, routine or event was created under
    (the others are created under CLONE_SQL_MODE); `columns` lists the columns a table's or
    sequence's rows are inserted into; `time_zone` is an event's; `character_set_client`
    and `collation_connection` are those a view, routine, trigger or event was created with,
    `database_collation` its schema's collation then (routines, triggers, events). Sent as one
    row of `CLONE OBJECTS` (WIRE_COLUMNS, in order; a donor that sends only the first six
    leaves the others empty: created under the joiner's own)."""

    kind: str
    schema: str
    name: str
    sql_mode: str
    create: str
    columns: str = ""
    time_zone: str = ""
    character_set_client: str = ""
    collation_connection: str = ""
    database_collation: str = ""

    KINDS: ClassVar[tuple[str, ...]] = ("SCHEMA", "SEQUENCE", "TABLE", "FUNCTION", "PROCEDURE", "VIEW", "TRIGGER",
                                        "EVENT")
    WIRE_COLUMNS: ClassVar[tuple[str, ...]] = ("kind", "schema", "name", "sql_mode", "create", "columns", "time_zone",
                                               "character_set_client", "collation_connection", "database_collation")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown clone object kind {self.kind!r} ({self.schema}.{self.name})")
        if not self.create:
            raise ValueError(f"clone object {self.kind} {self.schema}.{self.name} has no create statement")

    def row(self) -> tuple[str, ...]:
        return (self.kind, self.schema, self.name, self.sql_mode, self.create, self.columns, self.time_zone,
                self.character_set_client, self.collation_connection, self.database_collation)

    @classmethod
    def from_row(cls, row: Sequence[object]) -> "CloneObject":
        """Decode a `CLONE OBJECTS` row. Raises ValueError."""
        values = [_text(v) for v in row]
        if not 6 <= len(values) <= len(cls.WIRE_COLUMNS):
            raise ValueError(f"a clone object has {len(values)} fields")
        return cls(*values)


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


# --- what the joiner does to the donor's texts (pure) --------------------------------------------

# Python's codec for a server character set a client may use; text in another one is sent as
# utf8mb4 (its collation_connection is kept), pure ASCII text in any but these few as it is.
_PYTHON_CODECS = {"utf8mb4": "utf-8", "utf8mb3": "utf-8", "utf8": "utf-8", "ascii": "ascii", "latin1": "cp1252",
                  "latin2": "iso8859_2", "cp1250": "cp1250", "cp1251": "cp1251", "cp1256": "cp1256",
                  "cp1257": "cp1257", "greek": "iso8859_7", "hebrew": "iso8859_8", "latin5": "iso8859_9",
                  "latin7": "iso8859_13", "koi8r": "koi8_r", "koi8u": "koi8_u", "cp850": "cp850", "cp852": "cp852",
                  "cp866": "cp866", "sjis": "shift_jis", "cp932": "cp932", "ujis": "euc_jp", "gbk": "gbk",
                  "gb2312": "gb2312", "big5": "big5", "euckr": "euc_kr"}
_NOT_ASCII_CHARSETS = frozenset({"swe7", "ucs2", "utf16", "utf16le", "utf32", "binary"})


def encode_for_client(text: str, charset: str) -> tuple[bytes, str]:
    """`text` as the bytes a client whose character_set_client is `charset` sends, and the
    character set to declare: `charset` itself, or utf8mb4 when `charset` is unknown here or
    cannot spell `text`."""
    cs = charset.lower()
    codec = _PYTHON_CODECS.get(cs)
    if codec is None and cs and cs not in _NOT_ASCII_CHARSETS and text.isascii():
        codec = "ascii"
    if codec is not None:
        try:
            return text.encode(codec), charset
        except UnicodeEncodeError:
            pass
    return text.encode("utf-8"), "utf8mb4"


_EVENT_STATUS = re.compile(r" ON COMPLETION (?:NOT )?PRESERVE (ENABLE|DISABLE ON SLAVE|DISABLE ON REPLICA|DISABLE)"
                           r"(?= COMMENT | DO )")


def event_disabled_here(create: str, name: str) -> str:
    """SHOW CREATE EVENT's `create` of event `name` with ENABLE replaced by DISABLE ON SLAVE
    (other statuses kept). The status follows the schedule, which holds only numbers and
    quoted times, so it is looked for right after `EVENT <name> ON SCHEDULE`. Raises
    CloneError when the text is not laid out so."""
    head = f" EVENT {quote_identifier(name)} ON SCHEDULE "
    at = create.find(head)
    m = _EVENT_STATUS.search(create, at + len(head)) if at >= 0 else None
    if m is None:
        raise CloneError(f"SHOW CREATE EVENT of {name} has no status where expected: {create[:200]}")
    if m.group(1) != "ENABLE":
        return create
    return create[: m.start(1)] + "DISABLE ON SLAVE" + create[m.end(1):]


def order_views(views: Sequence[CloneObject]) -> list[CloneObject]:
    """`views` so that each comes after the views its text names (in the order given where
    nothing says otherwise). The text is SHOW CREATE VIEW's in a session without a default
    schema (the donor's), where every table or view read is named `schema`.`name`. A name that
    only looks like a reference (in a string) costs nothing but order; a cycle of such names
    keeps the order given (the joiner tries a view again once the others exist)."""
    index = {(v.schema, v.name): i for i, v in enumerate(views)}
    needs: list[set[int]] = []
    for v in views:
        head = f"VIEW {qualified_name(v.schema, v.name)} AS "
        body_at = v.create.find(head)
        body = v.create[body_at + len(head):] if body_at >= 0 else v.create
        needs.append({j for (schema, name), j in index.items()
                      if (schema, name) != (v.schema, v.name) and qualified_name(schema, name) in body})
    done: set[int] = set()
    out: list[CloneObject] = []
    while len(out) < len(views):
        ready = [i for i in range(len(views)) if i not in done and needs[i] <= done]
        if not ready:  # a cycle of textual mentions: the order given, the joiner retries
            ready = [i for i in range(len(views)) if i not in done]
        for i in ready:
            done.add(i)
            out.append(views[i])
    return out


def split_qualified(text: str, schemas: Collection[str]) -> tuple[str, str]:
    """`schema.name` as a server's error message prints it, split at the dot after a schema in
    `schemas` (names may hold dots), else at the first dot."""
    dots = [i for i, ch in enumerate(text) if ch == "."]
    for i in dots:
        if text[:i] in schemas:
            return text[:i], text[i + 1:]
    if not dots:
        return "", text
    return text[: dots[0]], text[dots[0] + 1:]


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
    objects: list[CloneObject] = field(default_factory=list)
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
            await conn.execute("SET SESSION time_zone = '+00:00', sql_mode = '', sql_quote_show_create = 1")
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

    async def _show_create(self, what: str, schema: str, name: str) -> list[str]:
        r = await self.conn.execute(f"SHOW CREATE {what} {qualified_name(schema, name)}")
        return [_text(v) for v in r.rows[0]]

    async def _read_objects(self) -> None:
        """Every user object (see CloneObject), schemas first."""
        c = self.conn
        out: list[CloneObject] = []
        r = await c.execute(f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({_excluded()}) "
                            "ORDER BY SCHEMA_NAME")
        schemas = [_text(s) for (s,) in r.rows]
        for s in schemas:
            row = (await c.execute(f"SHOW CREATE DATABASE {quote_identifier(s)}")).rows[0]
            out.append(CloneObject("SCHEMA", s, s, "", _text(row[1])))
        if not schemas:
            self.objects = out
            return
        in_list = ",".join(_sql_str(s) for s in schemas)
        r = await c.execute(f"SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                            f"WHERE TABLE_SCHEMA IN ({in_list}) ORDER BY TABLE_SCHEMA, TABLE_NAME")
        views = []
        for s, t, table_type in [(_text(a), _text(b), _text(k)) for a, b, k in r.rows]:
            if table_type == "VIEW":
                views.append((s, t))
                continue
            kind = _ROW_TABLE_TYPES.get(table_type)
            if kind is None:
                continue  # a temporary table: its session's own
            create = (await self._show_create(kind, s, t))[1]
            out.append(CloneObject(kind, s, t, "", create, await self._open_cursor(s, t)))
        r = await c.execute(f"SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
                            f"WHERE ROUTINE_SCHEMA IN ({in_list}) ORDER BY ROUTINE_SCHEMA, ROUTINE_NAME")
        for s, t, kind in [(_text(a), _text(b), _text(k)) for a, b, k in r.rows]:
            if kind not in ("PROCEDURE", "FUNCTION"):
                continue  # a PACKAGE (Oracle mode)
            _, sql_mode, create, client, connection, db_collation = (await self._show_create(kind, s, t))[:6]
            out.append(CloneObject(kind, s, t, sql_mode, create, "", "", client, connection, db_collation))
        for s, t in views:
            _, create, client, connection = (await self._show_create("VIEW", s, t))[:4]
            out.append(CloneObject("VIEW", s, t, "", create, "", "", client, connection))
        r = await c.execute(f"SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS "
                            f"WHERE TRIGGER_SCHEMA IN ({in_list}) ORDER BY TRIGGER_SCHEMA, ACTION_ORDER, TRIGGER_NAME")
        for s, t in [(_text(a), _text(b)) for a, b in r.rows]:
            _, sql_mode, create, client, connection, db_collation = (await self._show_create("TRIGGER", s, t))[:6]
            out.append(CloneObject("TRIGGER", s, t, sql_mode, create, "", "", client, connection, db_collation))
        r = await c.execute(f"SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS "
                            f"WHERE EVENT_SCHEMA IN ({in_list}) ORDER BY EVENT_SCHEMA, EVENT_NAME")
        for s, t in [(_text(a), _text(b)) for a, b in r.rows]:
            shown = await self._show_create("EVENT", s, t)
            _, sql_mode, time_zone, create, client, connection, db_collation = shown[:7]
            out.append(CloneObject("EVENT", s, t, sql_mode, create, "", time_zone, client, connection, db_collation))
        self.objects = out

    async def _open_cursor(self, schema: str, table: str) -> str:
        """Prepare the reads of a table's (or sequence's) rows; returns the columns they are
        inserted into (generated ones are the joiner's server's to compute)."""
        c = self.conn
        cols = await c.execute(
            "SELECT COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS "
            f"WHERE TABLE_SCHEMA = {_sql_str(schema)} AND TABLE_NAME = {_sql_str(table)} ORDER BY ORDINAL_POSITION")
        names, exprs = [], []
        for name, data_type, extra in cols.rows:
            if "GENERATED" in _text(extra).upper():
                continue  # VIRTUAL / STORED GENERATED, and a system-versioned table's period columns
            names.append(_text(name))
            exprs.append(literal_expr(_text(name), _text(data_type)))
        keys = await c.execute(
            "SELECT s.COLUMN_NAME, c.DATA_TYPE FROM information_schema.STATISTICS s JOIN information_schema.COLUMNS c "
            "ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME "
            f"WHERE s.TABLE_SCHEMA = {_sql_str(schema)} AND s.TABLE_NAME = {_sql_str(table)} AND s.INDEX_NAME = 'PRIMARY' "
            "ORDER BY s.SEQ_IN_INDEX")
        key_cols = tuple(_text(k) for k, _ in keys.rows)
        key_exprs = [literal_expr(_text(k), _text(dt)) for k, dt in keys.rows]
        select = ("SELECT CONCAT_WS(','," + ",".join(exprs) + ")"
                  + "".join("," + e for e in key_exprs) + f" FROM {qualified_name(schema, table)}")
        self.cursors[(schema, table)] = TableCursor(select, key_cols)
        return ",".join(quote_identifier(n) for n in names)

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

# What a view's CREATE answers when its text names what does not exist (yet).
ER_BAD_DB_ERROR = 1049
ER_BAD_FIELD_ERROR = 1054
ER_NO_SUCH_TABLE = 1146
ER_SP_DOES_NOT_EXIST = 1305
ER_VIEW_INVALID = 1356
_DANGLING_ERRNOS = frozenset({ER_BAD_DB_ERROR, ER_BAD_FIELD_ERROR, ER_NO_SUCH_TABLE, ER_SP_DOES_NOT_EXIST,
                              ER_VIEW_INVALID})
_NO_SUCH_TABLE = re.compile(r"Table '(.+)' doesn't exist")
_BAD_FIELD = re.compile(r"Unknown column '(.+)' in '[^']*'")
_NO_SUCH_FUNCTION = re.compile(r"FUNCTION (.+) does not exist")
_OWN_SQL_MODE_KINDS = frozenset({"FUNCTION", "PROCEDURE", "TRIGGER", "EVENT"})


async def clone_into(donor: DonorCall, local: BackendConnection, progress: CloneProgress,
                     on_schema: Callable[[str], None] | None = None,
                     before_changes: Callable[[], Awaitable[None]] | None = None) -> tuple[str, AppliedSet]:
    """Clone the donor's user schemas into this member's backend through `local` (a connection
    of its own; see the module docstring for what is created and in which order); `on_schema`
    hears every schema dropped or created; `before_changes` runs once the donor's snapshot is
    open, before this backend is changed. Returns (group uuid, the donor's snapshot positions);
    the caller replaces its positions with them. Raises CloneError, ValueError (an object the
    donor sent is malformed), BackendError / MySQLError from either side, TimeoutError from a
    donor call."""
    loop = asyncio.get_running_loop()
    hear = on_schema or (lambda _schema: None)
    r = await donor("CLONE BEGIN")
    clone_id, group_uuid, positions_text = _text(r.rows[0][0]), _text(r.rows[0][1]), _text(r.rows[0][2])
    try:
        answer = await donor(f"CLONE OBJECTS {clone_id}")
        objects = [CloneObject.from_row(row) for row in answer.rows]
        kinds: dict[str, list[CloneObject]] = {k: [o for o in objects if o.kind == k] for k in CloneObject.KINDS}
        progress.tables = len(kinds["TABLE"])
        progress.tables_done = progress.rows = progress.bytes = 0
        progress.started_at, progress.ended_at = loop.time(), 0.0
        await local.execute("SET SESSION sql_log_bin = 0")
        await local.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0, lc_messages = 'en_US'")
        r_local = await local.execute("SELECT @@character_set_client, @@collation_connection")
        session = _Session(local, _text(r_local.rows[0][0]), _text(r_local.rows[0][1]))
        await session.reset()
        if before_changes is not None:
            await before_changes()
        r_local = await local.execute(f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
                                      f"WHERE SCHEMA_NAME NOT IN ({_excluded()})")
        for (s,) in r_local.rows:
            hear(_text(s))
            await local.execute(f"DROP DATABASE {quote_identifier(_text(s))}")
        for obj in kinds["SCHEMA"]:
            hear(obj.schema)
            await local.execute(obj.create)
        for obj in kinds["SEQUENCE"] + kinds["TABLE"]:
            await local.execute(f"USE {quote_identifier(obj.schema)}")
            await local.execute(obj.create)
        for obj in kinds["SEQUENCE"] + kinds["TABLE"]:
            await _copy_rows(donor, local, clone_id, obj.schema, obj.name, obj.columns, progress)
            if obj.kind == "TABLE":
                progress.tables_done += 1
                log.info("clone_table_done", schema=obj.schema, table=obj.name, tables_done=progress.tables_done,
                         tables=progress.tables, rows=progress.rows, bytes=progress.bytes)
        r_local = await local.execute(f"SELECT SCHEMA_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                                      f"WHERE SCHEMA_NAME NOT IN ({_excluded()})")
        session.collations = {_text(s): _text(c) for s, c in r_local.rows}
        for obj in kinds["FUNCTION"] + kinds["PROCEDURE"]:
            await session.create(obj)
        await _create_views(session, kinds["VIEW"], hear)
        for obj in kinds["TRIGGER"]:
            await session.create(obj)
        for obj in kinds["EVENT"]:
            await session.create(replace(obj, create=event_disabled_here(obj.create, obj.name)))
        progress.ended_at = loop.time()
    finally:
        try:
            await donor(f"CLONE END {clone_id}")
        except Exception:  # noqa: BLE001 - the donor closes an idle clone itself
            pass
    return group_uuid, AppliedSet.parse(positions_text)


@dataclass(slots=True)
class _Session:
    """The joiner's clone connection and the session it returns to after each program."""

    conn: BackendConnection
    character_set_client: str
    collation_connection: str
    collations: dict[str, str] = field(default_factory=dict)  # schema → its collation here

    async def reset(self) -> None:
        await self.conn.execute(
            f"SET SESSION sql_mode = {_sql_str(CLONE_SQL_MODE)}, time_zone = '+00:00', "
            f"character_set_client = {_sql_str(self.character_set_client)}, "
            f"collation_connection = {_sql_str(self.collation_connection)}")

    async def create(self, obj: CloneObject) -> None:
        """Run `obj.create` as the donor's server ran it (see CloneObject); the session is
        reset afterwards, whatever happened. Raises BackendError."""
        c = self.conn
        await c.execute(f"USE {quote_identifier(obj.schema)}")
        data, client = encode_for_client(obj.create, obj.character_set_client or self.character_set_client)
        settings = [f"character_set_client = {_sql_str(client)}"]
        if obj.collation_connection:
            settings.append(f"collation_connection = {_sql_str(obj.collation_connection)}")
        if obj.kind in _OWN_SQL_MODE_KINDS:
            settings.append(f"sql_mode = {_sql_str(obj.sql_mode)}")
        if obj.time_zone:
            settings.append(f"time_zone = {_sql_str(obj.time_zone)}")
        schema_collation = self.collations.get(obj.schema, "")
        other_collation = bool(obj.database_collation and schema_collation
                               and obj.database_collation != schema_collation)
        alter = f"ALTER DATABASE {quote_identifier(obj.schema)} COLLATE "
        try:
            if other_collation:
                await c.execute(alter + _sql_str(obj.database_collation))
            await c.execute("SET SESSION " + ", ".join(settings))
            await c.command(Command.QUERY, data)
        finally:
            await self.reset()
            if other_collation:
                await c.execute(alter + _sql_str(schema_collation))


async def _create_views(session: _Session, views: list[CloneObject], hear: Callable[[str], None]) -> None:
    """Each view after those it names (order_views); a view that fails because what it names
    does not exist is tried again once the others exist, and one that still fails names what
    does not exist on the donor either: it is made with stand-ins (_create_dangling_view),
    dependents first (a view over an invalid view is refused, over a missing one it is not)."""
    pending = order_views(views)
    while pending:
        failed = []
        for view in pending:
            try:
                await session.create(view)
            except BackendError as exc:
                if exc.backend_errno not in _DANGLING_ERRNOS:
                    raise
                failed.append(view)
        if len(failed) == len(pending):
            break
        pending = failed
    for view in reversed(pending):
        await _create_dangling_view(session, view, hear)


async def _create_dangling_view(session: _Session, view: CloneObject, hear: Callable[[str], None]) -> None:
    """Create `view` while stand-ins take the place of what its text names and no longer exists
    (see the module docstring), then drop them. A missing table or view becomes an empty view
    when the donor's text names its columns as a view's are printed (`v`.`c`, where a table's
    are `schema`.`t`.`c`), else an empty table, so the text the joiner's server stores is the
    donor's. Raises CloneError when VIEW_STANDINS_MAX stand-ins did not do, or the server names
    something no stand-in can be made for."""
    c = session.conn
    undo: list[str] = []  # what drops the stand-ins, in the order made
    relations: list[_StandIn] = []
    functions: set[str] = set()
    try:
        for _ in range(VIEW_STANDINS_MAX + 1):
            try:
                await session.create(view)
                log.warning("clone_view_invalid", schema=view.schema, view=view.name, standins=len(undo))
                return
            except BackendError as exc:
                error = exc
            message = error.message
            if error.backend_errno == ER_NO_SUCH_TABLE and (m := _NO_SUCH_TABLE.fullmatch(message)):
                schema, name = split_qualified(m.group(1), session.collations)
                schema = schema or view.schema
                if schema not in session.collations:
                    hear(schema)
                    await c.execute(f"CREATE DATABASE {quote_identifier(schema)}")
                    undo.append(f"DROP DATABASE {quote_identifier(schema)}")
                    session.collations[schema] = ""
                as_view = (f"{qualified_name(schema, name)}." not in view.create
                           and f"{quote_identifier(name)}." in view.create)
                relation = _StandIn(qualified_name(schema, name), as_view)
                await c.execute(relation.create_sql())
                undo.append(f"DROP {'VIEW' if as_view else 'TABLE'} {relation.name}")
                relations.append(relation)
            elif error.backend_errno == ER_BAD_FIELD_ERROR and relations and (m := _BAD_FIELD.fullmatch(message)):
                column = m.group(1).rsplit(".", 1)[-1]
                if all(column in r.columns for r in relations):
                    break
                for relation in relations:  # which one the view meant, the text's alias hides
                    if column not in relation.columns:
                        relation.columns.append(column)
                        await c.execute(relation.add_column_sql(column))
            elif error.backend_errno == ER_SP_DOES_NOT_EXIST and (m := _NO_SUCH_FUNCTION.fullmatch(message)):
                schema, function = split_qualified(m.group(1), session.collations)
                name = qualified_name(schema or view.schema, function)
                if name in functions:
                    break
                await c.execute(f"CREATE FUNCTION {name}() RETURNS INT DETERMINISTIC RETURN NULL")
                undo.append(f"DROP FUNCTION {name}")
                functions.add(name)
            else:
                break
        raise CloneError(f"view {view.schema}.{view.name} cannot be created on this member: it names what does not "
                         f"exist on the donor either ({error}); fix or drop it through the group") from error
    finally:
        for sql in reversed(undo):
            await c.execute(sql)
        for schema in [s for s, collation in session.collations.items() if not collation]:
            del session.collations[schema]  # a stand-in schema, dropped above


@dataclass(slots=True)
class _StandIn:
    """An empty table or view in the place of one a dangling view names."""

    name: str  # qualified
    as_view: bool
    columns: list[str] = field(default_factory=list)

    def create_sql(self) -> str:
        if self.as_view:
            return f"CREATE VIEW {self.name} AS SELECT NULL AS `grproxy_standin`"
        return f"CREATE TABLE {self.name} (`grproxy_standin` INT)"

    def add_column_sql(self, column: str) -> str:
        if self.as_view:
            cols = ", ".join(f"NULL AS {quote_identifier(c)}" for c in ["grproxy_standin", *self.columns])
            return f"CREATE OR REPLACE VIEW {self.name} AS SELECT {cols}"
        return f"ALTER TABLE {self.name} ADD COLUMN {quote_identifier(column)} INT"


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
