"""`writeset.derive` and its SchemaCatalog on real binlog transactions (DESIGN §5).

Transactions run on a real server; their binlog transactions are read back and derived as a
member derives its prepared ones: row changes and a write set whose key hashes are what
certification compares across members (primary and unique keys through their collations,
foreign-key parents as the parent hashes them), GR's refusals (3098), what has no exact image
here (1235) and transaction_size_limit (3100). The catalog: what it reads, its bound, and what
DDL makes it forget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence

import pytest

from grproxy.mysqld import ServerHandle
from replication.binlog.events import Heartbeat
from replication.binlog.stream import BinlogStream
from replication.binlog.transactions import Assembler, BinlogTransaction
from replication.protocol.errors import BeforeDmlValidation, HookError, MySQLError, NotSupported
from replication.positions import PositionStore
from replication.rowevents import RowEventApplier, ship
from replication.rowimage import Form, key_hash
from replication.schema import CatalogSnapshot, SchemaCatalog
from replication.writeset import Derived, derive
from tables_support import open_conn, run_sql, table_state
from test_binlog_support import HEARTBEAT_S, address, replica_id

DB = "derive"
EVENTS_MAX = 10_000

SETUP = [
    "CREATE TABLE parent (id INT PRIMARY KEY, code VARCHAR(8) NOT NULL, UNIQUE KEY code_u (code)) ENGINE=InnoDB",
    "CREATE TABLE child (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, pcode VARCHAR(8), pid INT, "
    "note TEXT, tag VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_bin, "
    "gen INT AS (pid * 2) VIRTUAL, hidden INT INVISIBLE DEFAULT 3, "
    "UNIQUE KEY note_u (note(10)), UNIQUE KEY tag_pid (tag, pid), "
    "CONSTRAINT by_code FOREIGN KEY (pcode) REFERENCES parent (code), "
    "CONSTRAINT by_id FOREIGN KEY (pid) REFERENCES parent (id) ON DELETE CASCADE) ENGINE=InnoDB",
    "CREATE TABLE loose (id INT PRIMARY KEY, v INT, KEY kv (v)) ENGINE=InnoDB",
    "CREATE TABLE odd (id INT PRIMARY KEY, lv INT, FOREIGN KEY (lv) REFERENCES loose (v)) ENGINE=InnoDB",
    "CREATE TABLE nopk (a INT, b INT) ENGINE=InnoDB",
    "CREATE TABLE my (id INT PRIMARY KEY, v INT) ENGINE=MyISAM",
    "CREATE TABLE Mixed (id INT PRIMARY KEY, upper_case INT)",
    "CREATE TABLE mixed (id INT PRIMARY KEY, lower_case INT)",
    "CREATE TABLE u (id INT PRIMARY KEY, name VARCHAR(10) NOT NULL, UNIQUE KEY name_u (name))",
    "INSERT INTO parent VALUES (1, 'one'), (2, 'two')",
]


@pytest.fixture(scope="module")
def servers(backend_factory: Callable[..., ServerHandle]) -> Iterator[tuple[ServerHandle, ServerHandle]]:
    yield backend_factory("derive_a"), backend_factory("derive_b")


@pytest.fixture
def a(servers: tuple[ServerHandle, ServerHandle]) -> ServerHandle:
    """Server A with a fresh `derive` database (B gets the same tables)."""
    for handle in servers:
        run_sql(handle, None, [f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB} CHARACTER SET utf8mb4"])
        run_sql(handle, DB, SETUP)
    return servers[0]


async def _transaction_with_rows(stream: BinlogStream) -> BinlogTransaction:
    assembler = Assembler(keep_events=True)
    for _ in range(EVENTS_MAX):
        event = await stream.next_event()
        if isinstance(event, Heartbeat):
            continue
        txn = assembler.feed(event, stream.last_raw)
        if txn is not None and txn.has_rows:
            return txn
    raise AssertionError(f"no transaction with rows in {EVENTS_MAX} events")


def derive_sql(handle: ServerHandle, catalog: SchemaCatalog, statements: Sequence[str], size_limit_bytes: int = 0,
               before_derive: Sequence[str] = ()) -> Derived:
    """Run `statements` in one transaction, read it from the binlog and derive it."""
    return derive_sql_txn(handle, catalog, statements, size_limit_bytes, before_derive)[1]


def derive_sql_txn(handle: ServerHandle, catalog: SchemaCatalog, statements: Sequence[str], size_limit_bytes: int = 0,
                   before_derive: Sequence[str] = ()) -> tuple[BinlogTransaction, Derived]:
    """As derive_sql; also the transaction as read (its events kept, as a member's reader keeps them)."""

    async def go() -> tuple[BinlogTransaction, Derived]:
        stream = await BinlogStream.open(address(handle), replica_server_id=replica_id(), heartbeat_s=HEARTBEAT_S)
        try:
            await asyncio.to_thread(run_sql, handle, DB, ["BEGIN", *statements, "COMMIT"])
            txn = await _transaction_with_rows(stream)
        finally:
            await stream.close()
        await asyncio.to_thread(run_sql, handle, DB, before_derive)
        conn = await open_conn(handle, DB)
        try:
            return txn, await derive(txn, conn, catalog, size_limit_bytes)
        finally:
            conn.close()

    return asyncio.run(go())


def refusal(handle: ServerHandle, statements: Sequence[str], **kw: object) -> MySQLError:
    with pytest.raises(MySQLError) as info:
        derive_sql(handle, SchemaCatalog(), statements, **kw)  # type: ignore[arg-type]
    return info.value


def snapshot(handle: ServerHandle, catalog: SchemaCatalog, names: list[tuple[str, str]]) -> CatalogSnapshot:
    async def go() -> CatalogSnapshot:
        conn = await open_conn(handle, DB)
        try:
            return await catalog.snapshot(conn, names)
        finally:
            conn.close()

    return asyncio.run(go())


# --- the write set -----------------------------------------------------------------------------------


def test_child_names_its_parents_as_they_hash_themselves(a: ServerHandle, servers: tuple[ServerHandle, ServerHandle]) -> None:
    catalog = SchemaCatalog()
    child_txn, child = derive_sql_txn(a, catalog, ["INSERT INTO child (pcode, pid, note, tag) VALUES ('ONE ', 2, 'n', 't')"])
    assert [c.op for c in child.changes] == ["upsert"]
    # Its own keys, and both parents' ('ONE ' = 'one' under utf8mb4_general_ci, PAD SPACE).
    assert key_hash(DB, "child", "PRIMARY", [b"1"]) in child.keys
    assert key_hash(DB, "parent", "PRIMARY", [b"2"]) in child.keys
    assert key_hash(DB, "parent", "code_u", [b"\x00O\x00N\x00E"]) in child.keys
    assert len(child.keys) == 5  # PRIMARY, note_u, tag_pid, parent PRIMARY 2, parent code_u 'one'
    update_txn, update_parent = derive_sql_txn(a, catalog, ["UPDATE parent SET code = 'deux' WHERE id = 2"])
    assert key_hash(DB, "parent", "PRIMARY", [b"2"]) in update_parent.keys
    assert update_parent.keys & child.keys  # a concurrent parent update and child insert conflict
    # Applied elsewhere (the applier's way: their row events, BINLOG), the two transactions give
    # the same tables.
    b = servers[1]

    async def apply() -> None:
        conn = await open_conn(b, DB)
        events = RowEventApplier()
        try:
            await conn.execute_all(";".join(PositionStore.SETUP_SQL[:2]))
            await conn.execute("DELETE FROM grproxy.applied WHERE seq IN (1, 2)")
            for seq, txn in enumerate((child_txn, update_txn), 1):
                await events.apply(conn, ship(txn, "grproxy"), head=("BEGIN",),
                                   tail=(PositionStore.record_sql(seq), "COMMIT"))
        finally:
            conn.close()

    asyncio.run(apply())
    assert table_state(a, DB) == table_state(b, DB)


def test_collation_equal_values_hash_equal_and_moves_free_the_old_entry(a: ServerHandle) -> None:
    catalog = SchemaCatalog()
    first = derive_sql(a, catalog, ["INSERT INTO u VALUES (1, 'a')"])
    moved = derive_sql(a, catalog, ["UPDATE u SET name = 'z' WHERE id = 1"])
    again = derive_sql(a, catalog, ["INSERT INTO u VALUES (2, 'A  ')"])  # equal to 'a' for the index
    name_a = {k for k in first.keys if k != key_hash(DB, "u", "PRIMARY", [b"1"])}
    assert len(name_a) == 1
    assert name_a <= moved.keys  # the freed entry
    assert name_a <= again.keys  # the same entry, taken again
    assert len(moved.keys) == 3  # PRIMARY 1, name 'a' (freed), name 'z' (taken)


def test_deletes_and_key_moves(a: ServerHandle) -> None:
    catalog = SchemaCatalog()
    moved = derive_sql(a, catalog, ["INSERT INTO u VALUES (1, 'a')", "UPDATE u SET id = 7 WHERE id = 1"])
    assert [c.op for c in moved.changes] == ["upsert", "delete", "upsert"]
    assert {key_hash(DB, "u", "PRIMARY", [b"1"]), key_hash(DB, "u", "PRIMARY", [b"7"])} <= moved.keys
    gone = derive_sql(a, catalog, ["DELETE FROM u WHERE id = 99", "INSERT INTO u VALUES (3, 'c')", "DELETE FROM u WHERE id = 3"])
    assert [c.op for c in gone.changes] == ["upsert", "delete"]  # binlog order


def test_generated_and_invisible_columns(a: ServerHandle) -> None:
    catalog = SchemaCatalog()
    derived = derive_sql(a, catalog, ["INSERT INTO child (pcode, pid, note, tag) VALUES ('two', 1, 'x', 'y')"])
    (change,) = derived.changes
    assert change.shape.columns == ("id", "pcode", "pid", "note", "tag", "hidden")  # no generated column
    assert change.after == (1, b"two", 1, b"x", b"y", 3)


def test_own_schema_rows_are_not_replicated(a: ServerHandle) -> None:
    run_sql(a, None, ["CREATE DATABASE IF NOT EXISTS grproxy", "CREATE TABLE IF NOT EXISTS grproxy.scratch (id INT PRIMARY KEY)"])
    try:
        derived = derive_sql(a, SchemaCatalog(), ["INSERT INTO grproxy.scratch VALUES (1)"])
        assert derived.changes == () and derived.keys == frozenset()
    finally:
        run_sql(a, None, ["DROP TABLE grproxy.scratch"])


# --- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("statements", "errno", "words"), [
    (["INSERT INTO nopk VALUES (1, 1)"], 3098, "no primary key"),
    (["INSERT INTO my VALUES (1, 1)"], 3098, "MyISAM"),
    (["INSERT INTO parent VALUES (3, 'three')", "INSERT INTO nopk VALUES (1, 1)"], 3098, "no primary key"),
    (["INSERT INTO child (pid) VALUES (1)", "DELETE FROM parent WHERE id = 1"], 3098, "by_id"),
    (["INSERT INTO loose VALUES (1, 1)", "INSERT INTO odd VALUES (1, 1)"], 1235, "not exactly a unique key"),
], ids=["no-primary-key", "myisam", "one-unfit-table-of-two", "cascade-on-delete", "fk-to-non-unique-index"])
def test_refusals(a: ServerHandle, statements: list[str], errno: int, words: str) -> None:
    err = refusal(a, statements)
    assert err.errno == errno and words in str(err), repr(err)
    assert isinstance(err, BeforeDmlValidation if errno == 3098 else NotSupported)


def test_cascading_actions_only_when_fired(a: ServerHandle) -> None:
    run_sql(a, DB, ["CREATE TABLE cc (id INT PRIMARY KEY, code VARCHAR(8), "
                    "FOREIGN KEY (code) REFERENCES parent (code) ON UPDATE CASCADE)"])
    err = refusal(a, ["UPDATE parent SET code = 'uno' WHERE id = 1"])
    assert err.errno == 3098 and "ON UPDATE CASCADE" in str(err)
    # A delete of a parent whose children only RESTRICT fires nothing.
    derived = derive_sql(a, SchemaCatalog(), ["INSERT INTO loose VALUES (5, 5)", "DELETE FROM loose WHERE id = 5"])
    assert [c.op for c in derived.changes] == ["upsert", "delete"]
    # A delete of a parent with an ON DELETE CASCADE child is refused even when no child row
    # references it (GR counts the foreign key, not the rows).
    err = refusal(a, ["DELETE FROM parent WHERE id = 2"])
    assert err.errno == 3098 and "by_id" in str(err)
    run_sql(a, DB, ["DROP TABLE cc"])


def test_transaction_size_limit(a: ServerHandle) -> None:
    statements = ["INSERT INTO u VALUES (10, REPEAT('x', 10)), (11, 'y')"]
    assert derive_sql(a, SchemaCatalog(), statements, size_limit_bytes=0).changes  # 0: no limit
    run_sql(a, DB, ["DELETE FROM u"])
    err = refusal(a, statements, size_limit_bytes=50)
    assert isinstance(err, HookError) and err.errno == 3100


def test_a_table_gone_before_derive_is_1235(a: ServerHandle) -> None:
    err = refusal(a, ["INSERT INTO mixed VALUES (1, 1)"], before_derive=["DROP TABLE mixed"])
    assert isinstance(err, NotSupported) and "gone" in str(err)


def test_stale_metadata_is_refused_until_forgotten(a: ServerHandle) -> None:
    catalog = SchemaCatalog()
    derive_sql(a, catalog, ["INSERT INTO mixed VALUES (1, 1)"])
    run_sql(a, DB, ["ALTER TABLE mixed ADD COLUMN extra INT DEFAULT 5"])
    with pytest.raises(NotSupported, match="stale"):
        derive_sql(a, catalog, ["INSERT INTO mixed VALUES (2, 2, 2)"])
    catalog.forget_for_ddl(DB, "ALTER TABLE mixed ADD COLUMN extra INT DEFAULT 5")
    derived = derive_sql(a, catalog, ["INSERT INTO mixed VALUES (3, 3, 3)"])
    assert derived.changes[0].after == (3, 3, 3)


# --- the catalog ---------------------------------------------------------------------------------------


def test_catalog_metadata(a: ServerHandle) -> None:
    catalog = SchemaCatalog()
    names = [(DB, "parent"), (DB, "child"), (DB, "nopk"), (DB, "my"), (DB, "odd"), (DB, "nosuch")]
    snap = snapshot(a, catalog, names)
    assert catalog.loads == 1  # everything in one round trip
    assert snap.table(DB, "nosuch") is None and catalog.get(DB, "nosuch") is None
    parent, child = snap.table(DB, "parent"), snap.table(DB, "child")
    assert parent is not None and child is not None
    assert parent.primary_key == ("id",)
    assert [(k.name, k.parts) for k in parent.unique_keys] == [("PRIMARY", (("id", 0),)), ("code_u", (("code", 0),))]
    assert sorted((c.table, c.name, c.delete_rule, c.parent_index) for c in parent.children) == [
        ("child", "by_code", "RESTRICT", "code_u"), ("child", "by_id", "CASCADE", "PRIMARY")]
    assert parent.cascade_on_delete() is not None and parent.cascade_on_update(["id", "code"]) is None
    assert parent.unfit_reason() is None and parent.shapeless_reason() is None
    assert child.primary_key == ("id",)
    assert {k.name: k.parts for k in child.unique_keys} == {
        "PRIMARY": (("id", 0),), "note_u": (("note", 10),), "tag_pid": (("tag", 0), ("pid", 0))}
    assert sorted((r.name, r.columns, r.parent_index) for r in child.parents) == [
        ("by_code", ("pcode",), "code_u"), ("by_id", ("pid",), "PRIMARY")]
    shape = child.shape
    assert shape is not None
    assert shape.columns == ("id", "pcode", "pid", "note", "tag", "hidden")
    assert shape.forms == (Form.INT, Form.TEXT, Form.INT, Form.TEXT, Form.TEXT, Form.INT)
    assert shape.charsets == (None, "utf8mb4", None, "utf8mb4", "latin1", None)
    assert child.by_name["gen"].generated and child.by_name["note"].collated and not child.by_name["tag"].pad_space is None
    assert "no primary key" in (snap.table(DB, "nopk").unfit_reason() or "")  # type: ignore[union-attr]
    assert "MyISAM" in (snap.table(DB, "my").unfit_reason() or "")  # type: ignore[union-attr]
    odd = snap.table(DB, "odd")
    assert odd is not None and odd.shape is None and "not exactly a unique key" in (odd.shapeless_reason() or "")


def test_catalog_bound_invalidation_and_exact_names(a: ServerHandle) -> None:
    catalog = SchemaCatalog(tables_max=2)
    snapshot(a, catalog, [(DB, "parent"), (DB, "child"), (DB, "u")])
    assert len(catalog) == 2 and catalog.get(DB, "parent") is None  # least recently used evicted
    snap = snapshot(a, catalog, [(DB, "Mixed"), (DB, "mixed")])
    assert [c.name for c in snap.table(DB, "Mixed").columns] == ["id", "upper_case"]  # type: ignore[union-attr]
    assert [c.name for c in snap.table(DB, "mixed").columns] == ["id", "lower_case"]  # type: ignore[union-attr]
    run_sql(a, DB, ["ALTER TABLE mixed ADD COLUMN extra INT"])
    loads = catalog.loads
    snap = snapshot(a, catalog, [(DB, "mixed")])
    assert catalog.loads == loads and len(snap.table(DB, "mixed").columns) == 2  # type: ignore[union-attr]
    catalog.invalidate(DB, "mixed")
    snap = snapshot(a, catalog, [(DB, "mixed")])
    assert [c.name for c in snap.table(DB, "mixed").columns] == ["id", "lower_case", "extra"]  # type: ignore[union-attr]
    # Invalidating a parent forgets the children that describe it, and the other way round.
    catalog = SchemaCatalog()
    snapshot(a, catalog, [(DB, "parent"), (DB, "child")])
    catalog.invalidate(DB, "parent")
    assert catalog.get(DB, "child") is None
    snapshot(a, catalog, [(DB, "parent"), (DB, "mixed")])
    catalog.invalidate_schema(DB)
    assert len(catalog) == 0


@pytest.mark.parametrize(("ddl", "forgotten", "kept"), [
    ("ALTER TABLE u ADD COLUMN w INT", ["u"], ["parent", "child", "mixed"]),
    ("DROP TABLE child", ["child", "parent"], ["u", "mixed"]),  # parent's metadata lists child
    ("CREATE TABLE c2 (id INT PRIMARY KEY, pid INT, FOREIGN KEY (pid) REFERENCES parent (id) ON DELETE CASCADE)",
     ["parent", "child", "u", "mixed"], []),  # a new child: parent's cascade must be seen
    ("ALTER TABLE mixed ADD CONSTRAINT fk FOREIGN KEY (lower_case) REFERENCES u (id)", ["u", "mixed", "parent"], []),
    ("DROP DATABASE derive", ["parent", "child", "u", "mixed"], []),
    ("CREATE FUNCTION f() RETURNS INT RETURN 1", ["parent", "child", "u", "mixed"], []),  # names no table
    ("RENAME TABLE mixed TO mixed2", ["mixed"], ["parent", "child", "u"]),
])
def test_forget_for_ddl(a: ServerHandle, ddl: str, forgotten: list[str], kept: list[str]) -> None:
    catalog = SchemaCatalog()
    snapshot(a, catalog, [(DB, t) for t in ("parent", "child", "u", "mixed")])
    catalog.forget_for_ddl(DB, ddl)
    for t in forgotten:
        assert catalog.get(DB, t) is None, t
    for t in kept:
        assert catalog.get(DB, t) is not None, t


def test_a_new_cascading_child_refuses_the_parents_delete(a: ServerHandle) -> None:
    """The member's catalog, warm before the child existed, learns of its cascade from the DDL."""
    catalog = SchemaCatalog()
    assert derive_sql(a, catalog, ["INSERT INTO u VALUES (1, 'a')"]).changes  # u cached without children
    ddl = "CREATE TABLE c3 (id INT PRIMARY KEY, uid INT, FOREIGN KEY (uid) REFERENCES u (id) ON DELETE CASCADE)"
    run_sql(a, DB, [ddl])
    catalog.forget_for_ddl(DB, ddl)
    with pytest.raises(BeforeDmlValidation):
        derive_sql(a, catalog, ["DELETE FROM u WHERE id = 1"])
