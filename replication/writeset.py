"""From a prepared transaction's binlog events to what the group certifies (DESIGN §5).

A member runs every write transaction as XA on its own backend. At COMMIT it prepares it; the
server has then logged exactly what the transaction did — the client's statements, triggers,
procedures, defaults, non-deterministic functions — as row events. `derive` turns those into:

* the row changes other members apply (`rowimage.RowChange`, the applier's format), and
* the write set: hashes of every primary / unique key written or freed, and of the parent key
  each foreign key points at (`rowimage.write_set_keys`), with case- and accent-insensitive
  collations folded by the server's own WEIGHT_STRING (one round trip per transaction).

GR's rules refuse, with 3098, a transaction that wrote a table without a primary key or not in
InnoDB, and a change that fired a foreign key's cascading action on another table (the cascaded
rows are not in the binlog: applying the parent's row image elsewhere would not repeat them).
Rows of the `grproxy` schema (positions, the member's own bookkeeping) are not replicated.

A transaction also names the tables and schemas it wrote (`table_hash`, `schema_hash`, from its
events' table maps), and a DDL the ones it changes (`ddl_tables`): the certifier fails a
transaction whose snapshot precedes a DDL on one of them (certifier.py, DDL).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replication.protocol.errors import BeforeDmlValidation, HookError, NotSupported

from .binlog import BinlogTransaction, fetch_weights, to_row_changes, weight_requests
from .binlog.events import BinlogUnsupported
from .certifier import ALL_TABLES, KeyHash
from .messages import DDL_TABLES_MAX
from .rowimage import RowChange, TransactionChanges, TransactionTooLarge, write_set_keys
from .schema import SchemaCatalog, TableMeta
from .statements import Statement

if TYPE_CHECKING:
    from .protocol.backend import BackendConnection

OWN_SCHEMA = "grproxy"


@dataclass(frozen=True, slots=True)
class Derived:
    """A transaction's row changes (in binlog order), its write set, and the hashes of the
    tables and schemas it wrote."""

    changes: tuple[RowChange, ...]
    keys: frozenset[KeyHash]
    tables: frozenset[KeyHash] = frozenset()


_TABLE_PERSON = b"grproxy-table"


def _name_hash(kind: bytes, *names: str) -> KeyHash:
    # Names are folded: with lower_case_table_names=0 two tables differing in case share a hash
    # (a spurious conflict at worst, never a missed one).
    h = hashlib.blake2b(kind, digest_size=8, person=_TABLE_PERSON)
    for name in names:
        part = name.lower().encode("utf-8", "surrogateescape")  # a client's invalid UTF-8: its own bytes
        h.update(len(part).to_bytes(4, "big") + part)
    return KeyHash(int.from_bytes(h.digest(), "big") or 1)  # 0 is ALL_TABLES


def table_hash(schema: str, table: str) -> KeyHash:
    return _name_hash(b"table", schema, table)


def schema_hash(schema: str) -> KeyHash:
    return _name_hash(b"schema", schema)


_NO_TABLE_OBJECTS = frozenset({"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE", "VIEW", "USER", "ROLE",
                               "SERVER"})


def ddl_tables(stmt: "Statement", schema: str) -> tuple[KeyHash, ...]:
    """What DDL `stmt` (run with default schema `schema`) changes, for certification: a
    schema's hash for CREATE/ALTER/DROP DATABASE, the tables it names, or ALL_TABLES when the
    lexer found none (a transaction on any table then conflicts: safe, never a missed one).
    A CREATE TABLE naming one new table changes no table a transaction could have written, but
    is kept: CREATE … SELECT, OR REPLACE replace one. Routines, triggers, events, views and
    accounts change no table's rows or definition (a transaction's row images are what its
    member's server did): they name nothing."""
    if stmt.ddl_object in _NO_TABLE_OBJECTS:
        return ()
    if stmt.ddl_object in ("DATABASE", "SCHEMA"):
        return (schema_hash(stmt.schema),) if stmt.schema else (ALL_TABLES,)
    if not stmt.tables:
        return (ALL_TABLES,)
    hashes = tuple(sorted({table_hash(ref.schema or schema, ref.name) for ref in stmt.tables}))
    return hashes if len(hashes) <= DDL_TABLES_MAX else (ALL_TABLES,)


def _unfit(why: str) -> BeforeDmlValidation:
    return BeforeDmlValidation(f"The table does not comply with the requirements by an external plugin: {why}")


def _check(meta: TableMeta, deletes: bool, updated: Iterable[str]) -> None:
    why = meta.unfit_reason()
    if why:
        raise _unfit(why)
    if meta.table_type != "BASE TABLE" or meta.shape is None:
        raise NotSupported(f"{meta.schema}.{meta.table} ({meta.table_type.lower()}) cannot be replicated by grproxy")
    cascade = meta.cascade_on_delete() if deletes else None
    if cascade is None:
        cascade = meta.cascade_on_update(updated)
    if cascade is not None:
        raise _unfit(
            f"a change to {meta.schema}.{meta.table} fired the cascading action of foreign key {cascade.name} of "
            f"{cascade.schema}.{cascade.table} (ON UPDATE {cascade.update_rule} / ON DELETE {cascade.delete_rule})")


def _updated_columns(changes: Iterable[RowChange]) -> set[str]:
    """Key columns whose value an update changed (only keys can be a foreign key's target)."""
    out: set[str] = set()
    for c in changes:
        if c.before_key is None or c.after_key is None:
            continue
        for (name, _), old, new in zip(c.shape.key_parts, c.before_key, c.after_key):
            if old != new:
                out.add(name)
    return out


async def derive(txn: BinlogTransaction, conn: "BackendConnection", catalog: SchemaCatalog,
                 size_limit_bytes: int) -> Derived:
    """The row changes and write set of prepared transaction `txn`, read on `conn` (the
    session's own connection: its collations and time zone do not matter, the values are the
    logged ones). Raises BeforeDmlValidation (3098), NotSupported (1235), HookError (3100) over
    `size_limit_bytes` (GR's transaction_size_limit; 0 = none)."""
    wanted = [(t.schema, t.table) for t in txn.tables if t.schema != OWN_SCHEMA]
    if not wanted:
        return Derived((), frozenset())
    snapshot = await catalog.snapshot(conn, wanted)
    plans = []
    requests = set()
    for rows in txn.tables:
        if rows.schema == OWN_SCHEMA:
            continue
        meta = snapshot.table(rows.schema, rows.table)
        if meta is None:
            raise NotSupported(f"table {rows.schema}.{rows.table} is gone: its changes cannot be replicated")
        why = meta.unfit_reason()
        if why:
            raise _unfit(why)
        plans.append((meta, rows))
        requests |= weight_requests(meta, rows.table_map, rows.changes)
    weights = await fetch_weights(conn, requests) if requests else {}
    collected = TransactionChanges(size_limit_bytes)
    keys: set[KeyHash] = set()
    tables: set[KeyHash] = set()
    for meta, rows in plans:
        tables |= {table_hash(meta.schema, meta.table), schema_hash(meta.schema)}
        try:
            changes = to_row_changes(meta, rows.table_map, rows.changes, weights)
        except BinlogUnsupported as exc:
            raise NotSupported(f"grproxy cannot replicate this change: {exc}") from None
        # A delete is a row the server deleted (a rows event's delete): an update that moved a
        # key is a delete and an upsert among `changes`, but fires ON UPDATE, not ON DELETE.
        _check(meta, deletes=any(c.kind == "delete" for c in rows.changes), updated=_updated_columns(changes))
        try:
            collected.add(changes)
        except TransactionTooLarge as exc:
            raise HookError(f"Error on observer while running replication hook 'before_commit'. ({exc})") from None
        for change in changes:
            keys |= write_set_keys(change, meta)
    return Derived(tuple(collected.changes), frozenset(keys), frozenset(tables))
