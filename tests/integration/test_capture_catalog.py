"""SchemaCatalog on a real server: what it reads, its bound, its invalidation; the member adapters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from grproxy.mysqld import ServerHandle
from replication.capture import RowCapturer
from replication.rowimage import Form, apply_encoded, decode_changes, key_hash
from replication.schema import SchemaCatalog
from test_capture_support import DB, Pair, open_conn, run_sql, table_state

SETUP = [
    "CREATE TABLE parent (id INT PRIMARY KEY, code VARCHAR(8) NOT NULL, UNIQUE KEY code_u (code)) ENGINE=InnoDB",
    "CREATE TABLE child (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, pcode VARCHAR(8), pid INT, "
    "note TEXT, tag VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_bin, "
    "gen INT AS (pid * 2) VIRTUAL, hidden INT INVISIBLE DEFAULT 3, "
    "UNIQUE KEY note_u (note(10)), UNIQUE KEY tag_pid (tag, pid), "
    "CONSTRAINT by_code FOREIGN KEY (pcode) REFERENCES parent (code), "
    "CONSTRAINT by_id FOREIGN KEY (pid) REFERENCES parent (id) ON DELETE CASCADE) ENGINE=InnoDB",
    "CREATE TABLE logged (id INT PRIMARY KEY) ENGINE=InnoDB",
    "CREATE TRIGGER logged_bi BEFORE INSERT ON logged FOR EACH ROW SET NEW.id = NEW.id",
    "CREATE TABLE Mixed (id INT PRIMARY KEY, upper_case INT)",
    "CREATE TABLE mixed (id INT PRIMARY KEY, lower_case INT)",
    "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
]


@pytest.fixture(scope="module")
def pair(backend_factory: Callable[..., ServerHandle]) -> Pair:
    return Pair(backend_factory("catalog_a"), backend_factory("catalog_b"))


def _snapshot(handle: ServerHandle, catalog: SchemaCatalog, names: list[tuple[str, str]], functions: list[str] = []):  # noqa: B006
    async def run():  # type: ignore[no-untyped-def]
        conn = await open_conn(handle, DB)
        try:
            return await catalog.snapshot(conn, names, functions)
        finally:
            conn.close()

    return asyncio.run(run())


def test_metadata(pair: Pair) -> None:
    pair.reset(SETUP)
    catalog = SchemaCatalog()
    snap = _snapshot(pair.a, catalog, [(DB, "parent"), (DB, "child"), (DB, "logged"), (DB, "nosuch")], [DB])
    assert catalog.loads == 1  # everything in one round trip
    assert snap.table(DB, "nosuch") is None and catalog.get(DB, "nosuch") is None
    assert snap.stored_functions(DB) == frozenset({"twice"})
    parent, child, logged = snap.table(DB, "parent"), snap.table(DB, "child"), snap.table(DB, "logged")
    assert parent is not None and child is not None and logged is not None
    assert parent.primary_key == ("id",)
    assert [(k.name, k.parts) for k in parent.unique_keys] == [("PRIMARY", (("id", 0),)), ("code_u", (("code", 0),))]
    assert sorted((c.table, c.name, c.delete_rule, c.parent_index) for c in parent.children) == [
        ("child", "by_code", "RESTRICT", "code_u"), ("child", "by_id", "CASCADE", "PRIMARY")]
    assert [c.name for c in parent.cascading_children()] == ["by_id"]
    assert parent.cascade_on_delete() is not None and parent.cascade_on_update(["id", "code"]) is None
    assert parent.unfit_reason() is None and parent.unsupported_reason() is None
    assert child.primary_key == ("id",)
    assert {k.name: k.parts for k in child.unique_keys} == {
        "PRIMARY": (("id", 0),), "note_u": (("note", 10),), "tag_pid": (("tag", 0), ("pid", 0))}
    assert sorted((r.name, r.columns, r.parent_index) for r in child.parents) == [
        ("by_code", ("pcode",), "code_u"), ("by_id", ("pid",), "PRIMARY")]
    shape = child.shape
    assert shape is not None
    assert shape.columns == ("id", "pcode", "pid", "note", "tag", "hidden")  # no generated column
    assert shape.forms == (Form.INT, Form.TEXT, Form.INT, Form.TEXT, Form.TEXT, Form.INT)
    assert shape.charsets == (None, "utf8mb4", None, "utf8mb4", "latin1", None)
    by_name = child.by_name
    assert by_name["id"].auto_increment and by_name["gen"].generated and by_name["hidden"].invisible
    assert by_name["note"].key_expr("q", 10) == "WEIGHT_STRING(TRIM(TRAILING ' ' FROM LEFT(q.`note`, 10)))"
    assert [c.name for c in child.insertable_columns] == ["id", "pcode", "pid", "note", "tag", "gen"]
    assert logged.trigger_count == 1 and "triggers" in (logged.unsupported_reason() or "")


def test_bound_invalidation_and_exact_names(pair: Pair) -> None:
    pair.reset(SETUP)
    catalog = SchemaCatalog(tables_max=2)
    _snapshot(pair.a, catalog, [(DB, "parent"), (DB, "child"), (DB, "logged")])
    assert len(catalog) == 2 and catalog.get(DB, "parent") is None  # least recently used evicted
    snap = _snapshot(pair.a, catalog, [(DB, "Mixed"), (DB, "mixed")])
    assert [c.name for c in snap.table(DB, "Mixed").columns] == ["id", "upper_case"]  # type: ignore[union-attr]
    assert [c.name for c in snap.table(DB, "mixed").columns] == ["id", "lower_case"]  # type: ignore[union-attr]
    run_sql(pair.a, DB, ["ALTER TABLE mixed ADD COLUMN extra INT"])
    loads = catalog.loads
    snap = _snapshot(pair.a, catalog, [(DB, "mixed")])
    assert catalog.loads == loads and len(snap.table(DB, "mixed").columns) == 2  # type: ignore[union-attr]
    catalog.invalidate(DB, "mixed")
    snap = _snapshot(pair.a, catalog, [(DB, "mixed")])
    assert [c.name for c in snap.table(DB, "mixed").columns] == ["id", "lower_case", "extra"]  # type: ignore[union-attr]
    # Invalidating a parent forgets the children that describe it, and the other way round.
    catalog = SchemaCatalog()
    _snapshot(pair.a, catalog, [(DB, "parent"), (DB, "child")])
    catalog.invalidate(DB, "parent")
    assert catalog.get(DB, "child") is None
    _snapshot(pair.a, catalog, [(DB, "parent"), (DB, "mixed")])
    catalog.invalidate_schema(DB)
    assert len(catalog) == 0


def test_member_adapters(pair: Pair) -> None:
    """RowCapturer gives the session its result, changes and write set; apply_encoded applies them."""
    setup = SETUP + ["INSERT INTO parent VALUES (1, 'one'), (2, 'two')"]
    pair.reset(setup)
    capturer = RowCapturer()

    async def capture() -> object:
        conn = await open_conn(pair.a, DB)
        try:
            await conn.execute("BEGIN")
            first = await capturer.capture(conn, "INSERT INTO child (pcode, pid, note, tag) VALUES ('ONE ', 2, 'n', 't')", DB,
                                           sql_mode=pair.sql_mode)
            second = await capturer.capture(conn, "UPDATE parent SET code = 'deux' WHERE id = 2", DB, sql_mode=pair.sql_mode)
            await conn.execute("COMMIT")
            return first, second
        finally:
            conn.close()

    first, second = asyncio.run(capture())  # type: ignore[misc]
    assert first.result.affected_rows == 1 and first.result.last_insert_id == 1
    assert len(first.changes) == 1
    # The child's write set holds its own keys and both parents' keys ('ONE ' = 'one' by collation).
    assert key_hash(DB, "parent", "PRIMARY", [b"2"]) in first.keys
    assert key_hash(DB, "parent", "code_u", [b"\x00O\x00N\x00E"]) in first.keys
    assert key_hash(DB, "parent", "PRIMARY", [b"2"]) in second.keys
    data = capturer.encode(list(first.changes) + list(second.changes))
    assert decode_changes(data) == list(first.changes) + list(second.changes)

    async def apply() -> None:
        conn = await open_conn(pair.b, DB)
        try:
            await conn.execute("BEGIN")
            await apply_encoded(conn, data)
            await conn.execute("COMMIT")
        finally:
            conn.close()

    asyncio.run(apply())
    assert table_state(pair.a, DB) == table_state(pair.b, DB)
    capturer.invalidate(DB, "child")
    assert capturer.catalog.get(DB, "child") is None
    capturer.invalidate()
    assert len(capturer.catalog) == 0
