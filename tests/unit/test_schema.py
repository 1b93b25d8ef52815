"""Table metadata without a server: which tables have row images, why not, which changes fire a
cascading action, and what DDL makes the catalog forget (the catalog is filled by hand here;
tests/integration/test_writeset_derive.py reads it from a real server)."""

from __future__ import annotations

import pytest

from replication.rowimage import Form
from replication.schema import ChildRef, ParentRef, SchemaCatalog, TableMeta, UniqueKey, make_column

DB = "db"


def _t(name: str = "t", **kw: object) -> TableMeta:
    columns = kw.pop("columns", [make_column("id", 1, "int(11)"), make_column("v", 2, "varchar(10)")])
    kw.setdefault("primary_key", ["id"])
    return TableMeta.build(DB, name, columns, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("meta", "reason"), [
    (_t(), None),
    (_t(primary_key=[]), "has no primary key"),
    (_t(table_type="VIEW", engine=None, primary_key=[]), "is a view"),
    (_t(columns=[make_column("id", 1, "int(11)"), make_column("x", 2, "vector(3)")]), "vector(3), which row images do not carry"),
    (_t(columns=[make_column("id", 1, "int(11)", generated=True), make_column("v", 2, "int(11)")]),
     "includes the generated column id"),
    (_t(columns=[make_column("id", 1, "int(11)"), make_column("pv", 2, "int(11)")],
        parents=[ParentRef("fk", ("pv",), DB, "p", None)]), "not exactly a unique key"),
], ids=["fit", "no-primary-key", "view", "unknown-type", "generated-primary-key", "fk-to-non-unique-index"])
def test_shape_and_why_not(meta: TableMeta, reason: str | None) -> None:
    assert (meta.shape is None) == (reason is not None)
    why = meta.shapeless_reason()
    assert why is None if reason is None else reason in (why or ""), why


def test_unfit_tables() -> None:
    """GR's 3098 reasons; a MyISAM table has row images (the refusal is the engine's)."""
    myisam = _t(engine="MyISAM")
    assert myisam.shape is not None and "MyISAM storage engine, not InnoDB" in (myisam.unfit_reason() or "")
    assert "no primary key" in (_t(primary_key=[]).unfit_reason() or "")
    assert _t(table_type="VIEW", engine=None).unfit_reason() is None  # not a table: 1235, not 3098
    assert _t().unfit_reason() is None


def test_shape_columns_forms_and_key_parts() -> None:
    meta = _t(columns=[make_column("id", 1, "int(11)"), make_column("c", 2, "char(4)", charset="latin1"),
                       make_column("g", 3, "int(11)", generated=True), make_column("pid", 4, "int(11)")],
              unique_keys=[UniqueKey("cu", (("c", 2),))], parents=[ParentRef("fk", ("pid",), DB, "p", "PRIMARY")])
    assert meta.shape is not None
    assert meta.shape.columns == ("id", "c", "pid")  # generated columns are not in images
    assert meta.shape.forms == (Form.INT, Form.TEXT, Form.INT)
    assert meta.shape.charsets == (None, "latin1", None)
    assert meta.key_parts == (("id", 0), ("c", 2), ("pid", 0))
    assert [k.name for k in meta.unique_keys] == ["PRIMARY", "cu"]


CHILDREN = [
    ChildRef(DB, "c1", "by_id", "RESTRICT", "CASCADE", "PRIMARY"),
    ChildRef(DB, "c2", "by_code", "CASCADE", "NO ACTION", "code_u"),
    ChildRef(DB, "c3", "by_other", "SET NULL", "RESTRICT", "gone_index"),
]


@pytest.mark.parametrize(("children", "columns", "fired"), [
    (CHILDREN[:1], ["id"], None),  # ON UPDATE RESTRICT
    (CHILDREN[1:2], ["id"], None),  # code_u's column untouched
    (CHILDREN[1:2], ["CODE"], "by_code"),  # names compare case-insensitively
    (CHILDREN[2:], ["x"], "by_other"),  # an index the parent does not list counts as touched
], ids=["restrict", "other-key", "cascaded-key", "unknown-index"])
def test_cascade_on_update(children: list[ChildRef], columns: list[str], fired: str | None) -> None:
    meta = _t(columns=[make_column("id", 1, "int(11)"), make_column("code", 2, "varchar(5)")],
              unique_keys=[UniqueKey("code_u", (("code", 0),))], children=children)
    got = meta.cascade_on_update(columns)
    assert (got.name if got else None) == fired


def test_cascade_on_delete() -> None:
    assert _t(children=CHILDREN[1:]).cascade_on_delete() is None  # NO ACTION, RESTRICT
    assert _t(children=CHILDREN).cascade_on_delete().name == "by_id"  # type: ignore[union-attr]


def _catalog() -> SchemaCatalog:
    catalog = SchemaCatalog()
    for meta in (_t("parent", children=[ChildRef(DB, "child", "fk", "RESTRICT", "CASCADE", "PRIMARY")]),
                 _t("child", columns=[make_column("id", 1, "int(11)"), make_column("pid", 2, "int(11)")],
                    parents=[ParentRef("fk", ("pid",), DB, "parent", "PRIMARY")]),
                 _t("lone"), TableMeta.build("other", "t", [make_column("id", 1, "int(11)")], primary_key=["id"])):
        catalog._put(meta)  # noqa: SLF001 - filled by hand instead of from information_schema
    return catalog


@pytest.mark.parametrize(("ddl", "kept"), [
    ("ALTER TABLE lone ADD COLUMN w INT", {"parent", "child", "other.t"}),
    ("DROP TABLE child", {"lone", "other.t"}),  # the parent's metadata lists the child
    ("ALTER TABLE parent ADD COLUMN w INT", {"lone", "other.t"}),  # the child's lists the parent
    ("CREATE TABLE c2 (id INT PRIMARY KEY, lid INT, FOREIGN KEY (lid) REFERENCES lone (id))", set()),
    ("DROP DATABASE db", {"other.t"}),
    ("TRUNCATE TABLE other.t", {"parent", "child", "lone"}),
    ("CREATE PROCEDURE p() BEGIN END", set()),  # names no table: everything
], ids=["alter", "drop-child", "alter-parent", "new-foreign-key", "drop-database", "qualified", "no-table"])
def test_forget_for_ddl(ddl: str, kept: set[str]) -> None:
    catalog = _catalog()
    catalog.forget_for_ddl(DB, ddl)
    left = {t if s == DB else f"{s}.{t}" for s, t in [("db", "parent"), ("db", "child"), ("db", "lone"), ("other", "t")]
            if catalog.get(s, t) is not None}
    assert left == kept


def test_catalog_bound() -> None:
    catalog = SchemaCatalog(tables_max=2)
    for name in ("a", "b", "c"):
        catalog._put(_t(name))  # noqa: SLF001
    assert len(catalog) == 2 and catalog.get(DB, "a") is None
    catalog.get(DB, "b")  # b is now the most recent
    catalog._put(_t("d"))  # noqa: SLF001
    assert catalog.get(DB, "c") is None and catalog.get(DB, "b") is not None
    with pytest.raises(ValueError):
        SchemaCatalog(tables_max=0)


def test_a_name_that_is_not_utf8_is_absent_without_a_query() -> None:
    """A client's invalid UTF-8 in an identifier (kept as surrogates) names no table; the
    catalog answers "unknown" instead of failing to build its query (found by the fuzzer)."""
    import asyncio

    class NoQueries:
        capabilities = 1 << 16

        async def execute_all(self, sql: str) -> list[object]:
            raise AssertionError(f"queried {sql[:80]}")

        async def execute(self, sql: str) -> object:
            raise AssertionError(f"queried {sql[:80]}")

    bad = b"t\xfd".decode("utf-8", "surrogateescape")
    snap = asyncio.run(SchemaCatalog().snapshot(NoQueries(), [("db", bad), (bad, "t")]))  # type: ignore[arg-type]
    assert snap.table("db", bad) is None and snap.table(bad, "t") is None


def test_ddl_naming_a_table_in_invalid_utf8_hashes_its_bytes() -> None:
    """The DDL's tables are hashed from the client's own bytes (found by the fuzzer: the hash
    of a name kept as surrogates raised instead)."""
    from replication.statements import classify_uncached
    from replication.writeset import ALL_TABLES, ddl_tables

    ours = ddl_tables(classify_uncached(b"DROP TABLE `t\xfd`"), "db")
    other = ddl_tables(classify_uncached(b"DROP TABLE `t\xfe`"), "db")
    assert ours and ours != (ALL_TABLES,) and ours != other
