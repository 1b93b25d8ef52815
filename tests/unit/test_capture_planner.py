"""The capture planner on a fixed schema: statement → plan kind, added round trips, or refusal errno.

Pure: the catalog is a hand-built CatalogSnapshot. Integration tests run the same kinds on real
servers (tests/integration/test_capture_replication.py).
"""

from __future__ import annotations

import pytest

from replication.capture import CaptureRefused, PlanKind, TableUnfit, parse_statement, plan
from replication.schema import CatalogSnapshot, ChildRef, ParentRef, TableMeta, UniqueKey, make_column

DB = "db"


def _tables() -> dict[tuple[str, str], TableMeta]:
    t = TableMeta.build(
        DB, "t",
        [make_column("id", 1, "int(11)", nullable=False, auto_increment=True), make_column("u", 2, "varchar(10)"),
         make_column("n", 3, "int(11)")],
        primary_key=["id"], unique_keys=[UniqueKey("u", (("u", 0),))],
    )
    s = TableMeta.build(
        DB, "s",
        [make_column("a", 1, "int(11)", nullable=False), make_column("b", 2, "char(4)", nullable=False),
         make_column("v", 3, "double"), make_column("g", 4, "int(11)", generated=True)],
        primary_key=["a", "b"],
    )
    nopk = TableMeta.build(DB, "nopk", [make_column("a", 1, "int(11)")])
    my = TableMeta.build(DB, "my", [make_column("id", 1, "int(11)")], primary_key=["id"], engine="MyISAM")
    trg = TableMeta.build(DB, "trg", [make_column("id", 1, "int(11)")], primary_key=["id"], trigger_count=1)
    parent = TableMeta.build(
        DB, "parent", [make_column("id", 1, "int(11)"), make_column("code", 2, "varchar(5)"), make_column("x", 3, "int(11)")],
        primary_key=["id"], unique_keys=[UniqueKey("code", (("code", 0),))],
        children=[ChildRef(DB, "child", "fk_c", "RESTRICT", "CASCADE", "PRIMARY"),
                  ChildRef(DB, "child2", "fk_code", "CASCADE", "RESTRICT", "code")],
    )
    child = TableMeta.build(
        DB, "child", [make_column("id", 1, "int(11)"), make_column("pid", 2, "int(11)")], primary_key=["id"],
        parents=[ParentRef("fk_c", ("pid",), DB, "parent", "PRIMARY", "RESTRICT", "CASCADE")],
    )
    badfk = TableMeta.build(
        DB, "badfk", [make_column("id", 1, "int(11)"), make_column("px", 2, "int(11)")], primary_key=["id"],
        parents=[ParentRef("fk_x", ("px",), DB, "parent", None)],
    )
    vw = TableMeta.build(DB, "vw", [make_column("id", 1, "int(11)")], primary_key=[], table_type="VIEW", engine=None)
    versioned = TableMeta.build(DB, "sv", [make_column("id", 1, "int(11)")], primary_key=["id"], table_type="SYSTEM VERSIONED")
    odd = TableMeta.build(DB, "odd", [make_column("id", 1, "int(11)"), make_column("v", 2, "vector(3)")], primary_key=["id"])
    other = TableMeta.build("other", "t", [make_column("id", 1, "int(11)")], primary_key=["id"])
    metas = [t, s, nopk, my, trg, parent, child, badfk, vw, versioned, odd, other]
    return {(m.schema, m.table): m for m in metas}


CATALOG = CatalogSnapshot(_tables(), {DB: frozenset({"f"}), "other": frozenset()})
TEMPS = frozenset({(DB, "tmp")})

# statement → (kind, round trips capture adds)
PLANS: list[tuple[str, PlanKind, int]] = [
    ("INSERT INTO t (u, n) VALUES ('x', 1), ('y', 2)", PlanKind.INSERT, 0),
    ("INSERT INTO t VALUES (5, 'x', 1)", PlanKind.INSERT, 0),
    ("insert into t values (5, 'x', 1);", PlanKind.INSERT, 0),
    ("INSERT INTO t (id, u) VALUES (NULL, 'a'), (0, 'b'), (DEFAULT, 'c')", PlanKind.INSERT, 0),
    ("INSERT INTO t SET u = 'k', n = 2", PlanKind.INSERT, 0),
    ("INSERT INTO t VALUE (1, 'a;b', 2)", PlanKind.INSERT, 0),
    ("INSERT INTO t (id, u) VALUES (UUID_SHORT(), 'z')", PlanKind.INSERT, 1),
    ("INSERT INTO t (u, n) SELECT b, a FROM s", PlanKind.INSERT, 1),
    ("INSERT INTO t (u, n) (SELECT b, a FROM s) ON DUPLICATE KEY UPDATE n = n + 1", PlanKind.INSERT, 1),
    ("INSERT INTO t (u, n) VALUES ('x', 1) ON DUPLICATE KEY UPDATE n = n + 1", PlanKind.INSERT, 0),
    ("INSERT INTO t (u, n) VALUES ('x', 1) ON DUPLICATE KEY UPDATE u = 'y'", PlanKind.INSERT, 1),
    ("INSERT INTO t (n) VALUES (1) ON DUPLICATE KEY UPDATE n = n + 1", PlanKind.INSERT, 1),
    ("INSERT IGNORE INTO t (u) VALUES ('a'), ('b')", PlanKind.INSERT, 0),
    ("INSERT IGNORE INTO t (n) VALUES (1)", PlanKind.INSERT, 1),
    ("REPLACE INTO t (id, u, n) VALUES (1, 'a', 2)", PlanKind.INSERT, 0),
    ("REPLACE t SET id = 1, u = 'a'", PlanKind.INSERT, 0),
    ("INSERT LOW_PRIORITY IGNORE INTO db.t (id) VALUES (-3)", PlanKind.INSERT, 0),
    ("INSERT INTO other.t VALUES (1)", PlanKind.INSERT, 0),
    ("UPDATE t SET n = n + 1 WHERE id = 5", PlanKind.UPDATE_BY_KEYS, 0),
    ("UPDATE t SET n = 1 WHERE 5 = id", PlanKind.UPDATE_BY_KEYS, 0),
    ("UPDATE t AS x SET x.n = 2 WHERE x.id IN (1, 2, 3) AND x.n > 0", PlanKind.UPDATE_BY_KEYS, 0),
    ("UPDATE t SET n = 1 WHERE id = 1 AND n BETWEEN 1 AND 5 LIMIT 1", PlanKind.UPDATE_BY_KEYS, 0),
    ("UPDATE t SET u = 'q' WHERE id = 1", PlanKind.UPDATE_BY_KEYS, 0),
    ("UPDATE t SET u = 'q' WHERE id IN (1, 2)", PlanKind.UPDATE, 1),  # unique key shuffled across rows
    ("UPDATE t SET n = 1 WHERE id = 1 OR id = 2", PlanKind.UPDATE, 1),
    ("UPDATE t SET n = 1 WHERE id > 3 ORDER BY n LIMIT 2", PlanKind.UPDATE, 1),
    ("UPDATE t SET n = 1", PlanKind.UPDATE, 1),
    ("UPDATE LOW_PRIORITY IGNORE t SET n = 1 WHERE u = 'a'", PlanKind.UPDATE, 1),
    ("UPDATE t SET id = id + 10 WHERE id < 3 ORDER BY id DESC", PlanKind.UPDATE, 1),
    ("UPDATE s SET v = 0 WHERE a = 1 AND b = 'x'", PlanKind.UPDATE_BY_KEYS, 0),
    ("UPDATE s SET v = 0 WHERE (a, b) IN ((1, 'x'), (2, 'y'))", PlanKind.UPDATE_BY_KEYS, 0),
    ("UPDATE s SET v = 0 WHERE a = 1", PlanKind.UPDATE, 1),
    ("DELETE FROM s WHERE a = 1 AND b = 'x' AND v > 0", PlanKind.DELETE_BY_KEYS, 0),
    ("DELETE FROM t WHERE id IN (1, 2)", PlanKind.DELETE_BY_KEYS, 0),
    ("DELETE FROM s WHERE v < 0", PlanKind.DELETE, 1),
    ("DELETE QUICK FROM t WHERE n = 1 ORDER BY id LIMIT 1", PlanKind.DELETE, 1),
    ("UPDATE t JOIN s ON t.id = s.a SET t.n = s.v, s.v = 0 WHERE s.b = 'q'", PlanKind.MULTI_UPDATE, 1),
    ("UPDATE t, s SET t.n = 1 WHERE t.id = s.a", PlanKind.MULTI_UPDATE, 1),
    ("UPDATE t JOIN (SELECT 1 AS x) d ON d.x = t.id SET t.n = 1", PlanKind.MULTI_UPDATE, 1),
    ("DELETE t, s FROM t JOIN s ON t.id = s.a", PlanKind.MULTI_DELETE, 1),
    ("DELETE FROM t USING t JOIN s ON t.id = s.a", PlanKind.MULTI_DELETE, 1),
    ("DELETE x FROM t AS x JOIN s ON x.id = s.a", PlanKind.MULTI_DELETE, 1),
    ("INSERT INTO tmp VALUES (1)", PlanKind.TEMPORARY, 0),
    ("UPDATE tmp SET a = 1", PlanKind.TEMPORARY, 0),
    ("INSERT INTO nosuch VALUES (1)", PlanKind.FAILS, 0),
    ("UPDATE t SET nosuch = 1 WHERE id = 1", PlanKind.FAILS, 0),
    ("INSERT INTO t (id, u) VALUES (1)", PlanKind.FAILS, 0),
    ("INSERT INTO parent (id, code, x) VALUES (1, 'a', 2)", PlanKind.INSERT, 0),
    ("UPDATE parent SET x = 3 WHERE id = 1", PlanKind.UPDATE_BY_KEYS, 0),
    ("UPDATE parent SET id = 2 WHERE id = 1", PlanKind.UPDATE, 1),  # fk_c cascades on delete only
    ("INSERT INTO parent VALUES (1, 'a', 1) ON DUPLICATE KEY UPDATE x = 2", PlanKind.INSERT, 0),
    ("INSERT INTO child VALUES (1, 1)", PlanKind.INSERT, 0),
    ("SELECT * FROM t", PlanKind.NOT_DML, 0),
    ("SELECT * FROM t FOR UPDATE", PlanKind.NOT_DML, 0),
    ("SET @a = 1", PlanKind.NOT_DML, 0),
    ("BEGIN", PlanKind.NOT_DML, 0),
    ("ALTER TABLE t ADD COLUMN z INT", PlanKind.NOT_DML, 0),
]

# statement → errno of the refusal
REFUSALS: list[tuple[str, int]] = [
    ("INSERT INTO nopk VALUES (1)", 3098),
    ("UPDATE nopk SET a = 2", 3098),
    ("UPDATE my SET id = 2 WHERE id = 1", 3098),
    ("DELETE FROM parent WHERE id = 1", 3098),
    ("UPDATE parent SET code = 'z' WHERE id = 1", 3098),
    ("REPLACE INTO parent VALUES (1, 'a', 1)", 3098),
    ("INSERT INTO parent VALUES (1, 'a', 1) ON DUPLICATE KEY UPDATE code = 'b'", 3098),
    ("DELETE parent FROM parent JOIN t ON parent.id = t.id", 3098),
    ("UPDATE trg SET id = 1 WHERE id = 1", 1235),
    ("INSERT INTO badfk VALUES (1, 1)", 1235),
    ("UPDATE vw SET id = 1", 1235),
    ("UPDATE sv SET id = 1 WHERE id = 1", 1235),
    ("INSERT INTO odd VALUES (1, NULL)", 1235),
    ("UPDATE t SET n = f() WHERE id = 1", 1235),
    ("UPDATE t SET n = db.f() WHERE id = 1", 1235),
    ("SELECT f()", 1235),
    ("CALL p()", 1235),
    ("LOAD DATA INFILE 'x' INTO TABLE t", 1235),
    ("CREATE TABLE t2 SELECT * FROM t", 1235),
    ("UPDATE t SET n = 1; DELETE FROM t", 1235),
    ("UPDATE t SET n = 1 /*!, u = 'x' */ WHERE id = 1", 1235),
    ("INSERT INTO t (id) VALUES (NEXTVAL(sq))", 1235),
    ("INSERT INTO t (id) VALUES (NEXT VALUE FOR sq)", 1235),
    ("DELETE FROM t WHERE id = 1 RETURNING id", 1235),
    ("INSERT INTO t (id) VALUES (1) RETURNING id", 1235),
    ("INSERT DELAYED INTO t VALUES (1, 'a', 1)", 1235),
    ("INSERT INTO t (id, u) VALUES (NULL, 'a'), (7, 'b')", 1235),
    ("INSERT INTO t (u, n) VALUES ('x', 1) ON DUPLICATE KEY UPDATE id = 3", 1235),
    ("UPDATE t SET id = id + FLOOR(RAND() * 3)", 1235),
    ("UPDATE t SET n = 5, id = n WHERE id = 1", 1235),
    ("INSERT INTO t (id, u) VALUES (1, 'a'), (2, 'b') ON DUPLICATE KEY UPDATE u = CONCAT(u, '!')", 1235),
    ("UPDATE tmp JOIN t ON tmp.a = t.id SET tmp.a = 1, t.n = 2", 1235),
    ("UPDATE t AS x JOIN t AS y ON x.id = y.n SET x.n = 1, y.n = 2", 1235),
    ("WITH c AS (SELECT 1 AS id) UPDATE t JOIN c ON t.id = c.id SET t.n = 1", 1235),
    ("INSERT INTO t (id, u) VALUES ((@x := @x + 1), 'a')", 1235),
    ("INSERT INTO t (u) VALUES ('a\\')", 1235),  # unterminated with backslash escapes
    ("UPDATE t SET \"n\" = 1 WHERE id = 1", 1235),  # a string, not a column, without ANSI_QUOTES
]


def _plan(sql: str, sql_mode: str = "") -> object:
    return plan(sql, DB, CATALOG, temporary_tables=TEMPS, sql_mode=sql_mode)


@pytest.mark.parametrize(("sql", "kind", "extra"), PLANS, ids=[p[0][:60] for p in PLANS])
def test_plan_kind(sql: str, kind: PlanKind, extra: int) -> None:
    p = _plan(sql)
    assert p.kind is kind  # type: ignore[attr-defined]
    assert p.extra_round_trips == extra  # type: ignore[attr-defined]


@pytest.mark.parametrize(("sql", "errno"), REFUSALS, ids=[r[0][:60] for r in REFUSALS])
def test_refusal(sql: str, errno: int) -> None:
    with pytest.raises((CaptureRefused, TableUnfit)) as info:
        _plan(sql)
    assert info.value.errno == errno
    assert "statement" in info.value.message


def test_sql_mode_changes_lexing() -> None:
    assert _plan('UPDATE t SET "n" = 1 WHERE id = 1', sql_mode="ANSI_QUOTES").kind is PlanKind.UPDATE_BY_KEYS  # type: ignore[attr-defined]
    assert _plan("UPDATE t SET u = 'a\\' WHERE id = 1", sql_mode="NO_BACKSLASH_ESCAPES").kind is PlanKind.UPDATE_BY_KEYS  # type: ignore[attr-defined]
    p = _plan("UPDATE t SET u = 'it\\'s' WHERE id = 1")
    assert p.kind is PlanKind.UPDATE_BY_KEYS  # type: ignore[attr-defined]


def test_oracle_mode_is_refused() -> None:
    with pytest.raises(CaptureRefused):
        _plan("UPDATE t SET n = 1 WHERE id = 1", sql_mode="PIPES_AS_CONCAT,ANSI_QUOTES,ORACLE")


def test_key_probe_is_the_clients_own_text() -> None:
    p = plan("DELETE FROM s WHERE a = 1 AND b = 'x' AND v > 0", DB, CATALOG)
    assert p.probe == "a = 1 AND b = 'x'"
    assert p.pre_read is not None and p.pre_read.endswith("WHERE a = 1 AND b = 'x' ORDER BY `s`.`a`, `s`.`b` FOR UPDATE")
    p = plan("UPDATE t SET n = 1 WHERE id = 1 AND n BETWEEN 1 AND 5", DB, CATALOG)
    assert p.probe == "id = 1"
    p = plan("UPDATE t AS x SET x.n = 2 WHERE x.id IN (1, 2, 3) AND x.n > 0", DB, CATALOG)
    assert p.probe == "x.id IN (1, 2, 3)"
    assert p.pre_read is not None and "FROM t AS x WHERE" in p.pre_read


def test_reads_are_exact_and_locking() -> None:
    p = plan("UPDATE s SET v = 0 WHERE a = 1 AND b = 'x'", DB, CATALOG)
    assert p.pre_read == p.post_read
    sql = p.post_read or ""
    assert sql.endswith("FOR UPDATE")
    assert "CAST(`s`.`b` AS BINARY)" in sql  # no character_set_results conversion
    assert "(`s`.`v` + 0E0)" in sql  # doubles read round-trip
    assert "WEIGHT_STRING(TRIM(TRAILING ' ' FROM `s`.`b`))" in sql  # collation-aware key material
    assert "`s`.`g`" not in sql  # generated columns are not read into images


def test_general_update_reads_in_processing_order() -> None:
    p = plan("UPDATE t SET id = id + 10 WHERE id < 3 ORDER BY id DESC", DB, CATALOG)
    assert p.pre_read is not None
    assert "ORDER BY id DESC, `t`.`id`" in p.pre_read
    assert p.pre_read.endswith("FOR UPDATE")
    assert p.pk_change == (("id", "(id + 10)"),)


def test_insert_reads() -> None:
    p = plan("INSERT INTO t (u, n) VALUES ('x', 1), ('y', 2)", DB, CATALOG)
    assert p.pre_read is None  # a plain INSERT changes no existing row
    assert p.post_read is not None and "BETWEEN LAST_INSERT_ID() AND LAST_INSERT_ID() + 1 * @@SESSION.auto_increment_increment" in p.post_read
    p = plan("REPLACE INTO t (id, u, n) VALUES (1, 'a', 2)", DB, CATALOG)
    assert p.probe == "(`db`.`t`.`id` = 1) OR (`db`.`t`.`u` = 'a')"
    assert p.pre_read is not None and p.post_read is not None


def test_parse_locates_clauses() -> None:
    parsed = parse_statement("REPLACE LOW_PRIORITY INTO `d b`.`t``x` (a, `b`) VALUES (1, 'x'), (2, DEFAULT)", "db")
    assert parsed.replace and parsed.target is not None
    assert (parsed.target.schema, parsed.target.table) == ("d b", "t`x")
    assert parsed.columns == ("a", "b")
    assert [[parsed.text(s) for s in row] for row in parsed.rows] == [["1", "'x'"], ["2", "DEFAULT"]]
    parsed = parse_statement("UPDATE t SET a = (SELECT MAX(x) FROM u WHERE u.y = t.y ORDER BY 1 LIMIT 1) WHERE b = 1 ORDER BY c LIMIT 3", "db")
    assert [a.column for a in parsed.assignments] == ["a"]
    assert parsed.where is not None and parsed.text(parsed.where) == "b = 1"
    assert parsed.order is not None and parsed.text(parsed.order) == "c"
    assert parsed.limit is not None and parsed.text(parsed.limit) == "3"
    assert parse_statement("UPDATE t SET a = 1 -- trailing\n", "db").kind.value == "update"
