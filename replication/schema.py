"""Table metadata for the write path: what a written table needs known, read from information_schema.

Theory of operation (DESIGN §5). When a member derives a prepared transaction's row changes and
write set from the binlog (replication/writeset.py, replication/binlog/rows.py), it must know,
for every table the transaction wrote: its columns and their types (to map the table map's
columns onto row images in an exactly re-applicable form, generated columns left out), its
primary key (rows are replicated by primary key; no primary key → 3098), its unique keys and the
foreign keys it holds (the write set, with each key part's collation), the foreign keys that
point at it with a cascading action (a change that fires one → 3098: the cascaded rows are not
in the binlog) and its engine and type (InnoDB base tables only → 3098). `TableMeta` holds that;
`TableMeta.build` derives from it the `RowShape` of its row images and its key parts.

`SchemaCatalog` caches `TableMeta` per (schema, table), bounded (`tables_max`, least recently
used evicted), and loads every missing table of a transaction in one round trip (one
multi-statement of information_schema queries). DDL must call `forget_for_ddl` (or
`invalidate(schema, table)`, `invalidate_schema`, `invalidate_all`) before its effect can be
seen by a derive: the catalog never guesses that a cached entry is stale (a table map that
disagrees with it is refused as stale metadata, never applied). Unknown tables are not cached.

No I/O at import, no module-level state: the member owns one catalog per backend.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .rowimage import Form, RowShape

if TYPE_CHECKING:
    from .protocol.backend import BackendConnection, Result

TABLE_META_CACHE_MAX = 10_000  # tables whose metadata a catalog keeps
CATALOG_TABLES_PER_LOAD_MAX = 64  # tables loaded in one multi-statement round trip

TableName = tuple[str, str]  # (schema, table), spelled as the server stores them

_INT_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year"})
_STRING_TYPES = frozenset({"char", "varchar", "tinytext", "text", "mediumtext", "longtext"})
_BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
_GEOMETRY_TYPES = frozenset(
    {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
     "geometrycollection", "geomcollection"}
)
_TEMPORAL_TYPES = frozenset({"date", "time", "datetime"})
_NATIVE_TEXT_TYPES = frozenset({"inet6", "inet4", "uuid"})  # MariaDB types whose text form is canonical


@dataclass(frozen=True, slots=True)
class Column:
    """One column as information_schema.COLUMNS describes it."""

    name: str
    position: int
    data_type: str  # lower-case DATA_TYPE
    column_type: str  # COLUMN_TYPE, e.g. "bigint(20) unsigned"
    nullable: bool = True
    charset: str | None = None
    collation: str | None = None
    generated: bool = False

    @property
    def form(self) -> Form | None:
        """How values of this column travel (None: a type row images do not carry)."""
        t = self.data_type
        if t in _INT_TYPES or t == "bit" or t == "set":
            return Form.INT
        if t == "enum":
            return Form.ENUM
        if t in ("decimal", "numeric", "dec", "fixed"):
            return Form.DECIMAL
        if t in ("float", "double", "real", "double precision"):
            return Form.DOUBLE
        if t in _TEMPORAL_TYPES:
            return Form.TEMPORAL
        if t == "timestamp":
            return Form.TIMESTAMP
        if t in _STRING_TYPES:
            return Form.TEXT if self.charset else None
        if t in _NATIVE_TEXT_TYPES:
            return Form.TEXT
        if t in _BINARY_TYPES:
            return Form.BYTES
        if t == "json":
            return Form.JSON
        if t in _GEOMETRY_TYPES:
            return Form.GEOMETRY
        return None

    @property
    def text_charset(self) -> str | None:
        """The character set values of a TEXT-form column are read and applied in."""
        if self.data_type in _NATIVE_TEXT_TYPES:
            return "utf8mb4"
        return self.charset if self.form is Form.TEXT else None

    @property
    def collated(self) -> bool:
        """Compared through a collation (key material is a weight string, not the bytes)."""
        return self.data_type in _STRING_TYPES and self.charset is not None

    @property
    def pad_space(self) -> bool:
        """PAD SPACE collation: trailing spaces do not count in comparisons."""
        c = (self.collation or "").lower()
        return not ("nopad" in c or "_0900_" in c)  # MariaDB *_nopad_*, MySQL 8's *_0900_* are NO PAD


@dataclass(frozen=True, slots=True)
class UniqueKey:
    """A unique index (the primary key is named PRIMARY). parts: (column, prefix length or 0)."""

    name: str
    parts: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class ParentRef:
    """A foreign key this table holds: its columns point at `parent_index` of the parent.

    `columns` are the child's columns in the order of the parent index's columns, so their key
    material hashes exactly like the parent's own entry. `parent_index` is None when no unique
    index of the parent has exactly the referenced columns (InnoDB allows that): the table then
    has no row shape (its writes are refused with 1235), since the parent would not hash that
    entry and a concurrent delete of the parent row would not conflict.
    """

    name: str
    columns: tuple[str, ...]
    parent_schema: str
    parent_table: str
    parent_index: str | None
    update_rule: str = "RESTRICT"
    delete_rule: str = "RESTRICT"


@dataclass(frozen=True, slots=True)
class ChildRef:
    """A foreign key of another table pointing at this one (at its index `parent_index`)."""

    schema: str
    table: str
    name: str
    update_rule: str
    delete_rule: str
    parent_index: str | None = None

    @property
    def update_cascades(self) -> bool:
        return self.update_rule not in _QUIET_RULES

    @property
    def delete_cascades(self) -> bool:
        return self.delete_rule not in _QUIET_RULES


_QUIET_RULES = frozenset({"RESTRICT", "NO ACTION"})
_REFERENCES = re.compile(r"\bREFERENCES\b", re.IGNORECASE)  # a DDL that may add a foreign key


@dataclass(frozen=True, slots=True, eq=False)
class TableMeta:
    """Everything the write path needs to know about one table. Build with `TableMeta.build`."""

    schema: str
    table: str
    table_type: str
    engine: str | None
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    unique_keys: tuple[UniqueKey, ...]  # PRIMARY first
    parents: tuple[ParentRef, ...]
    children: tuple[ChildRef, ...]
    unsupported_index: str | None = None  # a unique index on an expression (not in the write set)
    shape: RowShape | None = None
    key_parts: tuple[tuple[str, int], ...] = ()
    by_name: Mapping[str, Column] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        schema: str,
        table: str,
        columns: Sequence[Column],
        *,
        primary_key: Sequence[str] = (),
        unique_keys: Sequence[UniqueKey] = (),
        parents: Sequence[ParentRef] = (),
        children: Sequence[ChildRef] = (),
        engine: str | None = "InnoDB",
        table_type: str = "BASE TABLE",
        unsupported_index: str | None = None,
        primary_key_parts: Sequence[tuple[str, int]] | None = None,
    ) -> "TableMeta":
        """Derive the row shape and key parts. `unique_keys` excludes the primary key."""
        cols = tuple(sorted(columns, key=lambda c: c.position))
        by_name = {c.name: c for c in cols}
        pk_parts = tuple(primary_key_parts) if primary_key_parts is not None else tuple((c, 0) for c in primary_key)
        uniques = ((UniqueKey("PRIMARY", pk_parts),) if pk_parts else ()) + tuple(unique_keys)
        parts: list[tuple[str, int]] = []
        for key in uniques:
            parts.extend(p for p in key.parts if p not in parts)
        for ref in parents:
            parts.extend((c, 0) for c in ref.columns if (c, 0) not in parts)
        shape = None
        stored = [c for c in cols if not c.generated]
        pk_names = tuple(c for c, _ in pk_parts)
        if (
            pk_names
            and stored
            and all(c.form is not None for c in cols)
            and all(n in by_name and not by_name[n].generated for n in pk_names)
            and all(p[0] in by_name for p in parts)
            # A foreign key to a non-unique parent index: the parent row has no key the write
            # set could name (a concurrent delete of it would not conflict), so no images.
            and all(r.parent_index is not None for r in parents)
        ):
            names = tuple(c.name for c in stored)
            shape = RowShape(
                schema,
                table,
                names,
                tuple(c.form for c in stored),  # type: ignore[misc]
                tuple(c.text_charset for c in stored),
                tuple(names.index(n) for n in pk_names),
                tuple(parts),
                any(r.parent_schema == schema and r.parent_table == table for r in parents),
            )
        return cls(
            schema, table, table_type, engine, cols, pk_names, uniques, tuple(parents), tuple(children),
            unsupported_index, shape, tuple(parts), by_name,
        )

    def unfit_reason(self) -> str | None:
        """Why a write to this table is refused with 3098 (unfit for replication), if it is."""
        if self.table_type not in ("BASE TABLE",):
            return None  # views, sequences, versioned tables: not replicated (1235, writeset.derive)
        if (self.engine or "").lower() != "innodb":
            return f"table {self.schema}.{self.table} uses the {self.engine} storage engine, not InnoDB"
        if not self.primary_key:
            return f"table {self.schema}.{self.table} has no primary key"
        return None

    def shapeless_reason(self) -> str | None:
        """Why this table has no row shape (its rows cannot be images), if it has none."""
        if self.shape is not None:
            return None
        unfit = self.unfit_reason()
        if unfit:
            return unfit
        if self.table_type != "BASE TABLE":
            return f"{self.schema}.{self.table} is a {self.table_type.lower()}"
        for c in self.columns:
            if c.form is None:
                return f"column {self.table}.{c.name} has type {c.column_type}, which row images do not carry"
        for n in self.primary_key:
            col = self.by_name.get(n)
            if col is not None and col.generated:
                return f"the primary key of {self.table} includes the generated column {n}"
        for ref in self.parents:
            if ref.parent_index is None:
                return (f"foreign key {ref.name} of {self.table} references columns of "
                        f"{ref.parent_schema}.{ref.parent_table} that are not exactly a unique key")
        return f"{self.schema}.{self.table} has no stored column or names a key column it does not have"

    def cascade_on_delete(self) -> ChildRef | None:
        """A foreign key whose action deleting a row of this table would fire, if any."""
        return next((c for c in self.children if c.delete_cascades), None)

    def cascade_on_update(self, columns: Iterable[str]) -> ChildRef | None:
        """A foreign key whose action updating these columns would fire, if any.

        A child references one of this table's unique keys; an unknown one counts as touched.
        """
        assigned = {c.lower() for c in columns}
        for child in self.children:
            if not child.update_cascades:
                continue
            key = next((k for k in self.unique_keys if k.name == child.parent_index), None)
            if key is None or any(col.lower() in assigned for col, _ in key.parts):
                return child
        return None


def make_column(
    name: str,
    position: int,
    column_type: str,
    *,
    nullable: bool = True,
    charset: str | None = None,
    collation: str | None = None,
    generated: bool = False,
) -> Column:
    """A Column from a COLUMN_TYPE string (for tests and tools); strings default to utf8mb4."""
    data_type = re.match(r"[a-z ]+", column_type.lower())
    dt = data_type.group(0).strip() if data_type else column_type.lower()
    if dt.endswith(" unsigned"):
        dt = dt[: -len(" unsigned")]
    if dt in _STRING_TYPES and charset is None:
        charset, collation = "utf8mb4", collation or "utf8mb4_general_ci"
    return Column(name, position, dt, column_type, nullable, charset, collation, generated)


# --- the catalog ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    """Metadata of the tables a transaction wrote, as one plain value (a test can build one)."""

    tables: Mapping[TableName, TableMeta] = field(default_factory=dict)

    def table(self, schema: str, table: str) -> TableMeta | None:
        """The table's metadata (names compared exactly, as lower_case_table_names=0 does)."""
        return self.tables.get((schema, table))


class CatalogError(Exception):
    """information_schema answered something the catalog cannot interpret."""


def _is_utf8(name: TableName) -> bool:
    """Both parts of `name` are text a server's utf8 catalog can hold (no lone surrogates)."""
    try:
        for part in name:
            part.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lit(text: str) -> str:
    """A utf8mb4 string literal immune to the session's character sets and escaping mode."""
    return f"_utf8mb4 X'{text.encode('utf-8').hex()}'"


def _b(v: bytes | None) -> str | None:
    return None if v is None else v.decode("utf-8")


class SchemaCatalog:
    """Cached TableMeta per (schema, table).

    Loads run on the connection the caller gives (the member's metadata connection: a session's
    own is busy with its prepared XA transaction; information_schema reads take no row locks).
    """

    def __init__(self, *, tables_max: int = TABLE_META_CACHE_MAX) -> None:
        if tables_max < 1:
            raise ValueError("catalog bounds must be positive")
        self.tables_max = tables_max
        self._tables: OrderedDict[TableName, TableMeta] = OrderedDict()
        self.loads = 0  # round trips spent loading (observability and tests)

    # --- cache ---------------------------------------------------------------------------------

    def get(self, schema: str, table: str) -> TableMeta | None:
        meta = self._tables.get((schema, table))
        if meta is not None:
            self._tables.move_to_end((schema, table))
        return meta

    def invalidate(self, schema: str, table: str) -> None:
        """Forget one table (DDL on it, or on a table that references it)."""
        self._tables.pop((schema, table), None)
        # Tables whose metadata mentions it (as a parent or child) are stale too.
        for name, meta in list(self._tables.items()):
            if any((r.parent_schema, r.parent_table) == (schema, table) for r in meta.parents) or any(
                (c.schema, c.table) == (schema, table) for c in meta.children
            ):
                self._tables.pop(name, None)

    def invalidate_schema(self, schema: str) -> None:
        """Forget every table of a schema (DROP DATABASE)."""
        for name in [n for n in self._tables if n[0] == schema]:
            self.invalidate(*name)

    def forget_for_ddl(self, schema: str, sql: str) -> None:
        """DDL `sql` ran with default schema `schema`: forget the metadata of what it names
        (everything, when it names no table, or may add a foreign key: the parent's metadata
        lists its children, and a parent not cached as one would not be forgotten by name)."""
        from .statements import classify

        stmt = classify(sql)
        if _REFERENCES.search(sql):
            self.invalidate_all()
        elif stmt.ddl_object in ("DATABASE", "SCHEMA") and stmt.schema:
            self.invalidate_schema(stmt.schema)
        elif stmt.tables:
            for ref in stmt.tables:
                self.invalidate(ref.schema or schema, ref.name)
        else:
            self.invalidate_all()

    def invalidate_all(self) -> None:
        self._tables.clear()

    def __len__(self) -> int:
        return len(self._tables)

    def _put(self, meta: TableMeta) -> None:
        self._tables[(meta.schema, meta.table)] = meta
        self._tables.move_to_end((meta.schema, meta.table))
        while len(self._tables) > self.tables_max:
            self._tables.popitem(last=False)

    # --- loading -------------------------------------------------------------------------------

    async def snapshot(self, conn: "BackendConnection", tables: Iterable[TableName]) -> CatalogSnapshot:
        """Metadata of `tables` (unknown ones absent).

        Everything missing from the cache is loaded in one round trip per
        CATALOG_TABLES_PER_LOAD_MAX tables. A name that is not valid UTF-8 (the client's bytes,
        kept as surrogates) names no table: it is absent without a query. Raises BackendError
        if information_schema cannot be read.
        """
        wanted = list(dict.fromkeys(tables))
        missing = [n for n in wanted if self.get(*n) is None and _is_utf8(n)]
        while missing:
            chunk, missing = missing[:CATALOG_TABLES_PER_LOAD_MAX], missing[CATALOG_TABLES_PER_LOAD_MAX:]
            await self._load(conn, chunk)
        found: dict[TableName, TableMeta] = {}
        for name in wanted:
            meta = self.get(*name)
            if meta is not None:
                found[name] = meta
        return CatalogSnapshot(found)

    async def _load(self, conn: "BackendConnection", names: Sequence[TableName]) -> None:
        statements: list[str] = []
        for schema, table in names:
            statements += _table_queries(schema, table)
        if conn.capabilities & (1 << 16):  # CLIENT_MULTI_STATEMENTS: one round trip
            results = await conn.execute_all(";\n".join(statements))
            self.loads += 1
        else:
            results = []
            for sql in statements:
                results.append(await conn.execute(sql))
                self.loads += 1
        if len(results) != len(statements):
            raise CatalogError(f"{len(statements)} catalog queries gave {len(results)} results")
        per = len(_table_queries("", ""))
        for i, (schema, table) in enumerate(names):
            meta = _meta_from_results(schema, table, results[i * per : (i + 1) * per])
            if meta is not None:
                self._put(meta)


def _table_queries(schema: str, table: str) -> list[str]:
    s, t = _lit(schema), _lit(table)
    return [
        "SELECT CAST(TABLE_NAME AS BINARY), CAST(TABLE_TYPE AS BINARY), CAST(ENGINE AS BINARY) "
        f"FROM information_schema.TABLES WHERE TABLE_SCHEMA = {s} AND TABLE_NAME = {t}",
        "SELECT CAST(TABLE_NAME AS BINARY), CAST(COLUMN_NAME AS BINARY), ORDINAL_POSITION, CAST(DATA_TYPE AS BINARY), "
        "CAST(COLUMN_TYPE AS BINARY), IS_NULLABLE, CAST(CHARACTER_SET_NAME AS BINARY), CAST(COLLATION_NAME AS BINARY), "
        "CAST(EXTRA AS BINARY) "
        f"FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {s} AND TABLE_NAME = {t} ORDER BY ORDINAL_POSITION",
        "SELECT CAST(TABLE_NAME AS BINARY), CAST(INDEX_NAME AS BINARY), NON_UNIQUE, SEQ_IN_INDEX, "
        "CAST(COLUMN_NAME AS BINARY), SUB_PART "
        f"FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {s} AND TABLE_NAME = {t} "
        "ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        # Foreign keys this table holds, with the parent's unique indexes to match them against.
        "SELECT CAST(k.TABLE_NAME AS BINARY), CAST(k.CONSTRAINT_NAME AS BINARY), k.ORDINAL_POSITION, "
        "CAST(k.COLUMN_NAME AS BINARY), CAST(k.REFERENCED_TABLE_SCHEMA AS BINARY), "
        "CAST(k.REFERENCED_TABLE_NAME AS BINARY), CAST(k.REFERENCED_COLUMN_NAME AS BINARY), "
        "CAST(r.UPDATE_RULE AS BINARY), CAST(r.DELETE_RULE AS BINARY) "
        "FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.REFERENTIAL_CONSTRAINTS r "
        "ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME "
        "AND r.TABLE_NAME = k.TABLE_NAME "
        f"WHERE k.TABLE_SCHEMA = {s} AND k.TABLE_NAME = {t} AND k.REFERENCED_TABLE_NAME IS NOT NULL "
        "ORDER BY k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
        "SELECT CAST(s.TABLE_SCHEMA AS BINARY), CAST(s.TABLE_NAME AS BINARY), CAST(s.INDEX_NAME AS BINARY), "
        "s.SEQ_IN_INDEX, CAST(s.COLUMN_NAME AS BINARY), s.SUB_PART "
        "FROM information_schema.STATISTICS s JOIN (SELECT DISTINCT REFERENCED_TABLE_SCHEMA AS ps, "
        "REFERENCED_TABLE_NAME AS pt FROM information_schema.KEY_COLUMN_USAGE "
        f"WHERE TABLE_SCHEMA = {s} AND TABLE_NAME = {t} AND REFERENCED_TABLE_NAME IS NOT NULL) p "
        "ON s.TABLE_SCHEMA = p.ps AND s.TABLE_NAME = p.pt WHERE s.NON_UNIQUE = 0 "
        "ORDER BY s.TABLE_SCHEMA, s.TABLE_NAME, s.INDEX_NAME, s.SEQ_IN_INDEX",
        # Foreign keys of other tables pointing at this one.
        "SELECT CAST(CONSTRAINT_SCHEMA AS BINARY), CAST(TABLE_NAME AS BINARY), CAST(CONSTRAINT_NAME AS BINARY), "
        "CAST(UPDATE_RULE AS BINARY), CAST(DELETE_RULE AS BINARY), CAST(REFERENCED_TABLE_NAME AS BINARY), "
        "CAST(UNIQUE_CONSTRAINT_NAME AS BINARY) "
        f"FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE UNIQUE_CONSTRAINT_SCHEMA = {s} "
        f"AND REFERENCED_TABLE_NAME = {t}",
    ]


def _meta_from_results(schema: str, table: str, results: Sequence["Result"]) -> TableMeta | None:
    tables, columns, stats, fks, parent_stats, children = results
    # information_schema compares names case-insensitively: keep exact matches only.
    trow = [r for r in tables.rows if _b(r[0]) == table]
    if not trow:
        return None
    table_type = _b(trow[0][1]) or ""
    engine = _b(trow[0][2])
    cols = []
    for r in columns.rows:
        if _b(r[0]) != table:
            continue
        extra = (_b(r[8]) or "").upper()
        cols.append(
            Column(
                name=_b(r[1]) or "",
                position=int(r[2] or 0),
                data_type=(_b(r[3]) or "").lower(),
                column_type=_b(r[4]) or "",
                nullable=(r[5] == b"YES"),
                charset=_b(r[6]),
                collation=_b(r[7]),
                generated=("VIRTUAL GENERATED" in extra or "STORED GENERATED" in extra or "PERSISTENT" in extra),
            )
        )
    indexes: dict[str, list[tuple[str | None, int]]] = {}
    unique_names: list[str] = []
    for r in stats.rows:
        if _b(r[0]) != table:
            continue
        name = _b(r[1]) or ""
        if r[2] == b"0" and name not in unique_names:
            unique_names.append(name)
        indexes.setdefault(name, []).append((_b(r[4]), int(r[5]) if r[5] is not None else 0))
    unsupported_index = None
    pk_parts: list[tuple[str, int]] = []
    uniques: list[UniqueKey] = []
    for name in unique_names:
        parts = indexes[name]
        if any(c is None for c, _ in parts):
            unsupported_index = name
            continue
        clean = tuple((c, sub) for c, sub in parts if c is not None)
        if name == "PRIMARY":
            pk_parts = list(clean)
        else:
            uniques.append(UniqueKey(name, clean))
    parent_indexes: dict[tuple[str, str], dict[str, list[str]]] = {}
    for r in parent_stats.rows:
        key = (_b(r[0]) or "", _b(r[1]) or "")
        parent_indexes.setdefault(key, {}).setdefault(_b(r[2]) or "", []).append(
            _b(r[4]) or "" if r[5] is None else "\x00prefix"
        )
    grouped: dict[str, list[tuple[str, str, str, str, str, str]]] = {}
    for r in fks.rows:
        if _b(r[0]) != table:
            continue
        grouped.setdefault(_b(r[1]) or "", []).append(
            (_b(r[3]) or "", _b(r[4]) or "", _b(r[5]) or "", _b(r[6]) or "", _b(r[7]) or "", _b(r[8]) or "")
        )
    parents = []
    for name, rows in grouped.items():
        child_cols = [r[0] for r in rows]
        ref_cols = [r[3] for r in rows]
        pschema, ptable = rows[0][1], rows[0][2]
        candidates = parent_indexes.get((pschema, ptable), {})
        if (pschema, ptable) == (schema, table):  # self-reference: this table's own indexes
            candidates = {n: [c if sub == 0 else "\x00prefix" for c, sub in indexes[n]] for n in unique_names if all(c for c, _ in indexes[n])}
        chosen = None
        ordered: tuple[str, ...] = tuple(child_cols)
        for iname in sorted(candidates, key=lambda n: (n != "PRIMARY", n)):
            icols = candidates[iname]
            if sorted(c.lower() for c in icols) == sorted(c.lower() for c in ref_cols):
                chosen = iname
                lookup = {rc.lower(): cc for rc, cc in zip(ref_cols, child_cols)}
                ordered = tuple(lookup[c.lower()] for c in icols)
                break
        parents.append(ParentRef(name, ordered, pschema, ptable, chosen, rows[0][4], rows[0][5]))
    child_refs = [
        ChildRef(_b(r[0]) or "", _b(r[1]) or "", _b(r[2]) or "", _b(r[3]) or "", _b(r[4]) or "", _b(r[6]))
        for r in children.rows
        if _b(r[5]) == table
    ]
    return TableMeta.build(
        schema,
        table,
        cols,
        primary_key=[c for c, _ in pk_parts],
        primary_key_parts=pk_parts,
        unique_keys=uniques,
        parents=parents,
        children=child_refs,
        engine=engine,
        table_type=table_type,
        unsupported_index=unsupported_index,
    )
