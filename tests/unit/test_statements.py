"""replication.statements: the SQL classifier, from tables and properties.

Each row of CASES names a statement, its kind and the set of boolean flags that must be True;
every other boolean flag must be False, so a row checks all flags at once. Extra expectations
(tables, verb, savepoint, …) are given per row where they matter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replication import statements as S
from replication.statements import (
    Assignment,
    Classifier,
    Kind,
    Scope,
    Statement,
    SystemVariable,
    TableRef,
    classify,
    classify_uncached,
)

FLAG_NAMES = {
    "ro": "is_read_only",
    "ic": "implicit_commit",
    "lock": "locking_read",
    "lockfn": "uses_locking_functions",
    "sess": "session_functions",
    "setvar": "assigns_user_variables",
    "getvar": "reads_user_variables",
    "file": "writes_file",
    "seq": "writes_sequence",
    "temp": "temporary_table",
    "bro": "begin_read_only",
    "brw": "begin_read_write",
    "snap": "begin_consistent_snapshot",
    "chain": "chain",
    "release": "release",
    "multi": "multi",
}


@dataclass(frozen=True)
class Case:
    sql: str
    kind: Kind
    flags: frozenset[str]
    expect: dict[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.sql


def T(name: str, schema: str | None = None) -> TableRef:
    return TableRef(schema, name)


def C(sql: str, kind: Kind, flags: str = "", **expect: object) -> Case:
    names = frozenset(flags.split())
    unknown = names - FLAG_NAMES.keys()
    assert not unknown, unknown
    return Case(sql, kind, names, expect)


K = Kind
CASES: list[Case] = [
    # --- SELECT: plain reads -------------------------------------------------------------
    C("SELECT 1", K.SELECT, "ro", verb="SELECT"),
    C("select * from t where id = 5", K.SELECT, "ro"),
    C("SELECT c FROM sbtest1 WHERE id=4711", K.SELECT, "ro"),
    C("  \n\tSELECT 1", K.SELECT, "ro"),
    C("SeLeCt 1", K.SELECT, "ro"),
    C("select/**/1", K.SELECT, "ro"),
    C("(SELECT a FROM t1) UNION (SELECT a FROM t2)", K.SELECT, "ro"),
    C("((SELECT 1))", K.SELECT, "ro"),
    C("SELECT * FROM information_schema.tables", K.SELECT, "ro"),
    C("SELECT * FROM performance_schema.replication_group_members", K.SELECT, "ro"),
    C("SELECT SLEEP(1)", K.SELECT, "ro"),
    C("SELECT 1;", K.SELECT, "ro"),
    C("SELECT * FROM t WHERE a = ?", K.SELECT, "ro"),
    C("SELECT get_lock FROM t", K.SELECT, "ro"),  # a column, not the function
    C("SELECT row_count, found_rows FROM stats", K.SELECT, "ro"),
    C("SELECT * FROM t WHERE x = 'a;b'", K.SELECT, "ro"),
    C("SELECT 'SELECT * FROM t FOR UPDATE'", K.SELECT, "ro"),
    C("SELECT 'UPDATE t SET a = 1'", K.SELECT, "ro"),
    C("SELECT `for update` FROM t", K.SELECT, "ro"),
    C('SELECT "for update" FROM t', K.SELECT, "ro"),
    C("SELECT 'it''s', 'a\\'b FOR UPDATE' FROM t", K.SELECT, "ro"),
    C("SELECT * FROM t WHERE name = 'O\\'Reilly; DROP TABLE t'", K.SELECT, "ro"),
    C("SELECT 'INTO OUTFILE', 'GET_LOCK(1)', 'LAST_INSERT_ID()' FROM t", K.SELECT, "ro"),
    C("SELECT * FROM t -- FOR UPDATE", K.SELECT, "ro"),
    C("SELECT * FROM t # FOR UPDATE", K.SELECT, "ro"),
    C("SELECT * FROM t /* FOR UPDATE */", K.SELECT, "ro"),
    C("SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t", K.SELECT, "ro"),
    C("/* UPDATE t SET a = 1 */ SELECT 1", K.SELECT, "ro"),
    C("/* leading */ SELECT 1 /* trailing */", K.SELECT, "ro"),
    C("# comment\nSELECT 1", K.SELECT, "ro"),
    C("-- comment\nSELECT 1", K.SELECT, "ro"),
    C("SELECT 1 /* unterminated FOR UPDATE", K.SELECT, "ro"),
    C("SELECT 1 -- ; DROP TABLE t", K.SELECT, "ro"),
    C("SELECT 1 /* ; DROP TABLE t */", K.SELECT, "ro"),
    C("SELECT 1 FROM dual WHERE 1 = 1", K.SELECT, "ro"),
    C("TABLE t", K.SELECT, "ro", verb="TABLE"),
    C("VALUES ROW(1, 2), ROW(3, 4)", K.SELECT, "ro", verb="VALUES"),
    C("WITH c AS (SELECT 1 AS a) SELECT * FROM c", K.SELECT, "ro", verb="SELECT"),
    C("WITH RECURSIVE r (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", K.SELECT, "ro"),
    C("WITH a AS (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b", K.SELECT, "ro"),
    C("(WITH c AS (SELECT 1) SELECT * FROM c)", K.SELECT, "ro"),
    C("/*!40101 SELECT */ 1", K.SELECT, "ro"),
    C("/*!99999 SELECT 1 */", K.SELECT, "ro"),
    # --- SELECT: locking reads, anywhere --------------------------------------------------
    C("SELECT * FROM t FOR UPDATE", K.SELECT, "lock"),
    C("select * from t for update", K.SELECT, "lock"),
    C("SELECT * FROM t FOR SHARE", K.SELECT, "lock"),
    C("SELECT * FROM t LOCK IN SHARE MODE", K.SELECT, "lock"),
    C("SELECT * FROM t WHERE a = ? FOR UPDATE", K.SELECT, "lock"),
    C("SELECT * FROM t FOR UPDATE NOWAIT", K.SELECT, "lock"),
    C("SELECT * FROM t1 JOIN t2 FOR UPDATE OF t1 SKIP LOCKED", K.SELECT, "lock"),
    C("SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)", K.SELECT, "lock"),
    C("(SELECT 1) UNION (SELECT 2 FOR UPDATE)", K.SELECT, "lock"),
    C("WITH c AS (SELECT id FROM t) SELECT * FROM c FOR UPDATE", K.SELECT, "lock"),
    C("WITH c AS (SELECT id FROM t FOR SHARE) SELECT * FROM c", K.SELECT, "lock"),
    C("SELECT * FROM t /*!50000 FOR UPDATE */", K.SELECT, "lock"),
    C("SELECT * FROM t /*! FOR UPDATE */", K.SELECT, "lock"),
    C("SELECT * FROM t /*M!100000 FOR UPDATE */", K.SELECT, "lock"),
    C("SELECT * FROM t /*!50000FOR UPDATE*/", K.SELECT, "lock"),
    C("/*!40101 SELECT 1 FOR UPDATE */", K.SELECT, "lock"),
    C("SELECT 1 FOR/*x*/UPDATE", K.SELECT, "lock"),
    C("SELECT 1 -- comment with 'quote\n FOR UPDATE", K.SELECT, "lock"),
    C("SELECT 1 #' \n FOR UPDATE", K.SELECT, "lock"),
    C("SELECT '--' FOR UPDATE", K.SELECT, "lock"),
    C("SELECT 'a' /* 'b */ FOR UPDATE", K.SELECT, "lock"),
    C('SELECT "a\\"b" FOR UPDATE', K.SELECT, "lock"),
    C("SELECT `a``b` FOR UPDATE", K.SELECT, "lock"),
    C("SELECT a*/*comment*/b FROM t FOR UPDATE", K.SELECT, "lock"),
    # --- SELECT: special functions and variables ------------------------------------------
    C("SELECT * FROM t WHERE GET_LOCK('x', 10)", K.SELECT, "lockfn"),
    C("SELECT GET_LOCK('x', 10)", K.SELECT, "lockfn"),
    C("SELECT get_lock ('x', 10)", K.SELECT, "lockfn"),
    C("SELECT RELEASE_LOCK('x')", K.SELECT, "lockfn"),
    C("SELECT RELEASE_ALL_LOCKS()", K.SELECT, "lockfn"),
    C("SELECT IS_FREE_LOCK('x'), IS_USED_LOCK('x')", K.SELECT, "lockfn"),
    C("SELECT LAST_INSERT_ID()", K.SELECT, "ro sess"),
    C("SELECT FOUND_ROWS()", K.SELECT, "ro sess"),
    C("SELECT ROW_COUNT()", K.SELECT, "ro sess"),
    C("SELECT CONNECTION_ID()", K.SELECT, "ro sess"),
    C("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", K.SELECT, "ro sess"),
    C("SELECT @@identity", K.SELECT, "ro sess"),
    C("SELECT @@last_insert_id", K.SELECT, "ro sess"),
    C("SELECT @@warning_count, @@error_count", K.SELECT, "ro sess"),
    C("SELECT @@group_replication_consistency", K.SELECT, "ro",
      system_variables=(SystemVariable(Scope.SESSION, "group_replication_consistency"),)),
    C("SELECT @@SESSION.sql_mode, @@GLOBAL.read_only", K.SELECT, "ro",
      system_variables=(SystemVariable(Scope.SESSION, "sql_mode"), SystemVariable(Scope.GLOBAL, "read_only"))),
    C("SELECT @x", K.SELECT, "ro getvar"),
    C("SELECT @x := 1", K.SELECT, "ro setvar"),
    C("SELECT @x := @x + 1 FROM t", K.SELECT, "ro setvar getvar"),
    C("SELECT a INTO @v FROM t WHERE id = 1", K.SELECT, "ro setvar"),
    C("SELECT a, b FROM t WHERE id = 1 INTO @x, @y", K.SELECT, "ro setvar"),
    C("SELECT * FROM t INTO OUTFILE '/tmp/t.csv'", K.SELECT, "file"),
    C("SELECT a FROM t INTO DUMPFILE '/tmp/a'", K.SELECT, "file"),
    C("SELECT NEXTVAL(s)", K.SELECT, "seq"),
    C("SELECT NEXT VALUE FOR s", K.SELECT, "seq"),
    C("SELECT SETVAL(s, 100)", K.SELECT, "seq"),
    C("SELECT LASTVAL(s)", K.SELECT, "ro sess"),
    C("SELECT PREVIOUS VALUE FOR s", K.SELECT, "ro sess"),
    # --- DML --------------------------------------------------------------------------------
    C("INSERT INTO t (a) VALUES (1)", K.DML, "", verb="INSERT", tables=(T("t"),)),
    C("INSERT t VALUES (1)", K.DML, "", tables=(T("t"),)),
    C("INSERT LOW_PRIORITY IGNORE INTO db.t VALUES (1)", K.DML, "", tables=(T("t", "db"),)),
    C("INSERT INTO `my db`.`my``table` VALUES (1)", K.DML, "", tables=(T("my`table", "my db"),)),
    C("INSERT INTO t SET a = 1", K.DML, "", tables=(T("t"),)),
    C("INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = a + 1", K.DML, "", tables=(T("t"),)),
    C("INSERT INTO t SELECT * FROM u", K.DML, "", tables=(T("t"),)),
    C("INSERT INTO t SELECT * FROM u FOR UPDATE", K.DML, "lock", tables=(T("t"),)),
    C("INSERT INTO t (id) VALUES (LAST_INSERT_ID())", K.DML, "sess"),
    C("INSERT INTO t (a) VALUES (@x)", K.DML, "getvar"),
    C("INSERT INTO t VALUES (NEXTVAL(s))", K.DML, "seq"),
    C("INSERT INTO t VALUES (1) RETURNING id", K.DML, "", tables=(T("t"),)),
    C("REPLACE INTO t VALUES (1, 'x')", K.DML, "", verb="REPLACE", tables=(T("t"),)),
    C("REPLACE t SELECT * FROM u", K.DML, "", tables=(T("t"),)),
    C("UPDATE t SET a = 1 WHERE id = 2", K.DML, "", verb="UPDATE", tables=(T("t"),)),
    C("update t set a = 'SELECT'", K.DML, "", tables=(T("t"),)),
    C("UPDATE LOW_PRIORITY IGNORE t SET a = 1", K.DML, "", tables=(T("t"),)),
    C("UPDATE t AS x SET x.a = 1", K.DML, "", tables=(T("t"),)),
    C("UPDATE db.t x SET x.a = 1", K.DML, "", tables=(T("t", "db"),)),
    C("UPDATE t1 JOIN t2 ON t1.id = t2.id SET t1.a = t2.b", K.DML, "", tables=(T("t1"),)),
    C("UPDATE t1 AS a JOIN db.t2 AS b ON a.id = b.id SET b.x = 1", K.DML, "", tables=(T("t2", "db"),)),
    C("UPDATE t1, t2 SET t1.a = 1, t2.b = 2", K.DML, "", tables=(T("t1"), T("t2"))),
    C("UPDATE t1, t2 SET a = 1", K.DML, "", tables=(T("t1"), T("t2"))),
    C("UPDATE (t1 JOIN t2 ON t1.id = t2.id) SET t2.a = 1", K.DML, "", tables=(T("t1"), T("t2"))),
    C("UPDATE t SET a = GET_LOCK('x', 1)", K.DML, "lockfn"),
    C("UPDATE t SET a = (SELECT b FROM u WHERE u.id = t.id FOR UPDATE)", K.DML, "lock"),
    C("DELETE FROM t WHERE id = 1", K.DML, "", verb="DELETE", tables=(T("t"),)),
    C("DELETE QUICK IGNORE FROM t", K.DML, "", tables=(T("t"),)),
    C("DELETE FROM t AS x WHERE x.id = 1 ORDER BY id LIMIT 1", K.DML, "", tables=(T("t"),)),
    C("DELETE FROM t WHERE id = 1 RETURNING *", K.DML, "", tables=(T("t"),)),
    C("DELETE t1, t2 FROM t1 JOIN t2 ON t1.id = t2.id", K.DML, "", tables=(T("t1"), T("t2"))),
    C("DELETE t1.* FROM t1 JOIN t2 USING (id)", K.DML, "", tables=(T("t1"),)),
    C("DELETE FROM t1 USING t1 JOIN t2 ON t1.id = t2.id", K.DML, "", tables=(T("t1"),)),
    C("DELETE a FROM t1 AS a JOIN t2 AS b ON a.id = b.id", K.DML, "", tables=(T("t1"),)),
    C("WITH c AS (SELECT id FROM u) UPDATE t JOIN c ON t.id = c.id SET t.a = 1", K.DML, "", verb="UPDATE",
      tables=(T("t"),)),
    C("WITH c AS (SELECT 1 AS id) DELETE FROM t WHERE id IN (SELECT id FROM c)", K.DML, "", verb="DELETE",
      tables=(T("t"),)),
    C("WITH c AS (SELECT 1) UPDATE t SET a = 1", K.DML, "", tables=(T("t"),)),
    C("WITH c AS (SELECT 1 AS id) UPDATE t JOIN c ON t.id = c.id SET a = 1", K.DML, "", tables=(T("t"),)),
    C("/* comment */ UPDATE t SET a = 1", K.DML, "", tables=(T("t"),)),
    C("-- lead\nDELETE FROM t", K.DML, "", tables=(T("t"),)),
    C("/*!40000 DELETE FROM t */", K.DML, "", tables=(T("t"),)),
    C("LOAD DATA INFILE '/tmp/x' INTO TABLE t", K.LOAD_DATA, "", verb="LOAD DATA", tables=(T("t"),)),
    C("LOAD DATA LOCAL INFILE 'x.csv' REPLACE INTO TABLE db.t FIELDS TERMINATED BY ','", K.LOAD_DATA, "",
      tables=(T("t", "db"),)),
    C("LOAD DATA INFILE 'x' INTO TABLE t (a, @b) SET c = @b", K.LOAD_DATA, "setvar getvar"),
    C("LOAD XML INFILE 'x.xml' INTO TABLE t", K.LOAD_DATA, "", verb="LOAD XML", tables=(T("t"),)),
    # --- DDL --------------------------------------------------------------------------------
    C("CREATE TABLE t (id INT PRIMARY KEY)", K.DDL, "ic", verb="CREATE TABLE", ddl_object="TABLE",
      tables=(T("t"),)),
    C("CREATE TABLE IF NOT EXISTS db.t (id INT)", K.DDL, "ic", tables=(T("t", "db"),)),
    C("CREATE TEMPORARY TABLE tmp (id INT)", K.DDL, "temp", tables=(T("tmp"),)),
    C("CREATE TEMPORARY TABLE IF NOT EXISTS tmp SELECT * FROM t", K.DDL, "temp", tables=(T("tmp"),)),
    C("CREATE TABLE t2 AS SELECT * FROM t", K.DDL, "ic", tables=(T("t2"),)),
    C("CREATE TABLE t2 SELECT * FROM t FOR UPDATE", K.DDL, "ic lock", tables=(T("t2"),)),
    C("CREATE TABLE t2 LIKE t", K.DDL, "ic", tables=(T("t2"),)),
    C("CREATE OR REPLACE TABLE t (a INT)", K.DDL, "ic", tables=(T("t"),)),
    C("CREATE TABLE event (id INT)", K.DDL, "ic", ddl_object="TABLE", tables=(T("event"),)),
    C("ALTER TABLE t ADD COLUMN c INT", K.DDL, "ic", verb="ALTER TABLE", tables=(T("t"),)),
    C("ALTER ONLINE TABLE t ADD INDEX (c)", K.DDL, "ic", tables=(T("t"),)),
    C("ALTER TABLE t RENAME TO u", K.DDL, "ic", tables=(T("t"), T("u"))),
    C("ALTER TABLE db.t ADD c INT, RENAME AS db.u", K.DDL, "ic", tables=(T("t", "db"), T("u", "db"))),
    C("ALTER TABLE t RENAME COLUMN a TO b", K.DDL, "ic", tables=(T("t"),)),
    C("DROP TABLE t", K.DDL, "ic", verb="DROP TABLE", tables=(T("t"),)),
    C("DROP TABLE IF EXISTS t1, db.t2", K.DDL, "ic", tables=(T("t1"), T("t2", "db"))),
    C("DROP TABLES t", K.DDL, "ic", ddl_object="TABLE", tables=(T("t"),)),
    C("DROP TEMPORARY TABLE IF EXISTS tmp", K.DDL, "temp", tables=(T("tmp"),)),
    C("RENAME TABLE a TO b", K.DDL, "ic", verb="RENAME TABLE", tables=(T("a"), T("b"))),
    C("RENAME TABLE a TO b, c TO d", K.DDL, "ic", tables=(T("a"), T("b"), T("c"), T("d"))),
    C("TRUNCATE TABLE t", K.DDL, "ic", verb="TRUNCATE TABLE", tables=(T("t"),)),
    C("TRUNCATE t", K.DDL, "ic", tables=(T("t"),)),
    C("CREATE INDEX i ON t (a)", K.DDL, "ic", ddl_object="INDEX", tables=(T("t"),)),
    C("CREATE UNIQUE INDEX i USING BTREE ON db.t (a)", K.DDL, "ic", tables=(T("t", "db"),)),
    C("DROP INDEX i ON t", K.DDL, "ic", verb="DROP INDEX", tables=(T("t"),)),
    C("CREATE VIEW v AS SELECT * FROM t", K.DDL, "ic", ddl_object="VIEW", tables=(T("v"),)),
    C("CREATE OR REPLACE ALGORITHM=MERGE DEFINER=`root`@`localhost` SQL SECURITY INVOKER VIEW v AS "
      "SELECT LAST_INSERT_ID(), @x FROM t FOR UPDATE", K.DDL, "ic", tables=(T("v"),)),
    C("ALTER VIEW v AS SELECT 1", K.DDL, "ic", tables=(T("v"),)),
    C("DROP VIEW IF EXISTS v1, v2", K.DDL, "ic", tables=(T("v1"), T("v2"))),
    C("CREATE DATABASE d", K.DDL, "ic", ddl_object="DATABASE", schema="d"),
    C("CREATE SCHEMA IF NOT EXISTS `my db`", K.DDL, "ic", ddl_object="DATABASE", schema="my db"),
    C("DROP DATABASE d", K.DDL, "ic", schema="d"),
    C("ALTER DATABASE d CHARACTER SET utf8mb4", K.DDL, "ic", schema="d"),
    C("CREATE PROCEDURE p() BEGIN SELECT 1; END", K.DDL, "ic", ddl_object="PROCEDURE"),
    C("CREATE DEFINER = 'admin'@'%' PROCEDURE p(OUT x INT) BEGIN SELECT GET_LOCK('a', 1) INTO x; END",
      K.DDL, "ic", ddl_object="PROCEDURE"),
    C("CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 1", K.DDL, "ic", ddl_object="FUNCTION"),
    C("CREATE TRIGGER trg BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1", K.DDL, "ic", ddl_object="TRIGGER",
      tables=(T("t"),)),
    C("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t", K.DDL, "ic", ddl_object="EVENT"),
    C("DROP PROCEDURE IF EXISTS p", K.DDL, "ic", ddl_object="PROCEDURE"),
    C("DROP FUNCTION f", K.DDL, "ic"),
    C("DROP TRIGGER trg", K.DDL, "ic", ddl_object="TRIGGER"),
    C("DROP EVENT e", K.DDL, "ic"),
    C("ALTER EVENT e DISABLE", K.DDL, "ic", ddl_object="EVENT"),
    C("CREATE SEQUENCE s START WITH 1", K.DDL, "ic", ddl_object="SEQUENCE", tables=(T("s"),)),
    C("DROP SEQUENCE s", K.DDL, "ic", tables=(T("s"),)),
    C("CREATE TABLESPACE ts ADD DATAFILE 'ts.ibd'", K.DDL, "ic", ddl_object="TABLESPACE"),
    C("/*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */ "
      "/*!50001 VIEW `v` AS select 1 AS `a` */", K.DDL, "ic", ddl_object="VIEW", tables=(T("v"),)),
    # --- transaction control ------------------------------------------------------------------
    C("BEGIN", K.BEGIN, "ic", verb="BEGIN"),
    C("begin", K.BEGIN, "ic"),
    C("BEGIN WORK", K.BEGIN, "ic"),
    C("BEGIN JUNK", K.OTHER, ""),
    C("BEGIN WORK JUNK", K.OTHER, ""),
    C("START TRANSACTION", K.BEGIN, "ic", verb="START TRANSACTION"),
    C("START TRANSACTION READ ONLY", K.BEGIN, "ro ic bro"),
    C("START TRANSACTION READ WRITE", K.BEGIN, "ic brw"),
    C("START TRANSACTION WITH CONSISTENT SNAPSHOT", K.BEGIN, "ic snap"),
    C("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", K.BEGIN, "ro ic bro snap"),
    C("start transaction read write, with consistent snapshot", K.BEGIN, "ic brw snap"),
    C("START TRANSACTION READ ONLY, READ WRITE", K.OTHER, ""),
    C("START TRANSACTION JUNK", K.OTHER, ""),
    C("START TRANSACTION READ ONLY,", K.OTHER, ""),
    C("START", K.OTHER, ""),
    C("COMMIT", K.COMMIT, ""),
    C("COMMIT WORK", K.COMMIT, ""),
    C("COMMIT AND CHAIN", K.COMMIT, "chain"),
    C("COMMIT AND NO CHAIN NO RELEASE", K.COMMIT, ""),
    C("COMMIT RELEASE", K.COMMIT, "release"),
    C("COMMIT WORK AND CHAIN RELEASE", K.COMMIT, "chain release"),
    C("COMMIT NOW", K.OTHER, ""),
    C("ROLLBACK", K.ROLLBACK, ""),
    C("ROLLBACK WORK AND CHAIN", K.ROLLBACK, "chain"),
    C("ROLLBACK TO SAVEPOINT s1", K.ROLLBACK_TO_SAVEPOINT, "", savepoint="s1"),
    C("ROLLBACK WORK TO s1", K.ROLLBACK_TO_SAVEPOINT, "", savepoint="s1"),
    C("ROLLBACK TO `my sp`", K.ROLLBACK_TO_SAVEPOINT, "", savepoint="my sp"),
    C("ROLLBACK TO SAVEPOINT", K.OTHER, ""),
    C("SAVEPOINT s1", K.SAVEPOINT, "", savepoint="s1"),
    C("SAVEPOINT", K.OTHER, ""),
    C("RELEASE SAVEPOINT s1", K.RELEASE_SAVEPOINT, "", savepoint="s1"),
    C("RELEASE s1", K.OTHER, ""),
    C("XA START 'x'", K.XA, "", verb="XA START"),
    C("XA BEGIN 'x'", K.XA, ""),
    C("XA END 'x'", K.XA, ""),
    C("XA PREPARE 'x'", K.XA, ""),
    C("XA COMMIT 'x'", K.XA, ""),
    C("XA RECOVER", K.XA, ""),
    C("LOCK TABLES t READ", K.LOCK_TABLES, "ic", tables=(T("t"),)),
    C("LOCK TABLE t1 WRITE, db.t2 AS x READ LOCAL", K.LOCK_TABLES, "ic", tables=(T("t1"), T("t2", "db"))),
    C("lock tables t low_priority write", K.LOCK_TABLES, "ic", tables=(T("t"),)),
    C("UNLOCK TABLES", K.UNLOCK_TABLES, "ic"),
    C("UNLOCK TABLE", K.UNLOCK_TABLES, "ic"),
    C("LOCK INSTANCE FOR BACKUP", K.ADMIN, ""),
    C("UNLOCK INSTANCE", K.ADMIN, ""),
    C("LOCK", K.OTHER, ""),
    # --- SET ------------------------------------------------------------------------------------
    C("SET autocommit = 0", K.SET, "ro", autocommit=False),
    C("SET autocommit=1", K.SET, "ro ic", autocommit=True),
    C("SET @@autocommit = ON", K.SET, "ro ic", autocommit=True),
    C("SET SESSION autocommit = OFF", K.SET, "ro", autocommit=False),
    C("SET autocommit = @v", K.SET, "ro ic getvar", autocommit=None),
    C("SET GLOBAL autocommit = 0", K.SET, "", autocommit=None),
    C("SET @x = 1", K.SET, "ro setvar"),
    C("SET @x := (SELECT max(id) FROM t)", K.SET, "ro setvar"),
    C("SET @x = @y + 1", K.SET, "ro setvar getvar"),
    C("SET @x = (SELECT a FROM t FOR UPDATE)", K.SET, "setvar lock"),
    C("SET @x = LAST_INSERT_ID()", K.SET, "ro setvar sess"),
    C("SET GLOBAL max_connections = 100", K.SET, ""),
    C("SET PERSIST max_connections = 100", K.SET, ""),
    C("SET PERSIST_ONLY max_connections = 100", K.SET, ""),
    C("SET @@GLOBAL.read_only = 1", K.SET, ""),
    C("SET sort_buffer_size = 10, GLOBAL max_connections = 5", K.SET, ""),
    C("SET NAMES utf8mb4", K.SET, "ro"),
    C("SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin'", K.SET, "ro"),
    C("SET CHARACTER SET utf8", K.SET, "ro"),
    C("SET CHARSET DEFAULT", K.SET, "ro"),
    C("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", K.SET, "ro"),
    C("SET SESSION TRANSACTION READ ONLY", K.SET, "ro"),
    C("SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED", K.SET, ""),
    C("SET ROLE ALL", K.SET, "ro"),
    C("SET @@SESSION.group_replication_consistency = 'BEFORE'", K.SET, "ro"),
    C("SET group_replication_consistency = 2", K.SET, "ro"),
    C("/*!40101 SET character_set_client = utf8 */", K.SET, "ro"),
    C("SET PASSWORD = 'x'", K.ACCOUNT, "ic"),
    C("SET PASSWORD FOR 'u'@'%' = 'x'", K.ACCOUNT, "ic"),
    C("SET DEFAULT ROLE ALL TO u", K.ACCOUNT, ""),
    C("SET STATEMENT max_statement_time = 10 FOR SELECT * FROM t", K.SELECT, "ro"),
    C("SET STATEMENT max_statement_time = 10 FOR UPDATE t SET a = 1", K.DML, "", tables=(T("t"),)),
    C("SET", K.OTHER, ""),
    C("SET x", K.OTHER, ""),
    C("SET = 1", K.OTHER, ""),
    # --- USE, CALL, SHOW, DO, PREPARE … ----------------------------------------------------
    C("USE db", K.USE, "ro", schema="db"),
    C("USE `my-db`", K.USE, "ro", schema="my-db"),
    C("USE", K.OTHER, ""),
    C("USE db extra", K.OTHER, ""),
    C("CALL p()", K.CALL, ""),
    C("CALL db.p(1, @out)", K.CALL, "setvar getvar"),
    C("CALL", K.OTHER, ""),
    C("SHOW TABLES", K.SHOW, "ro"),
    C("SHOW CREATE TABLE t", K.SHOW, "ro"),
    C("SHOW FULL PROCESSLIST", K.SHOW, "ro"),
    C("SHOW WARNINGS", K.SHOW, "ro sess"),
    C("SHOW ERRORS", K.SHOW, "ro sess"),
    C("SHOW COUNT(*) WARNINGS", K.SHOW, "ro sess"),
    C("DESCRIBE t", K.SHOW, "ro", verb="DESCRIBE"),
    C("DESC t", K.SHOW, "ro"),
    C("EXPLAIN SELECT * FROM t FOR UPDATE", K.SHOW, "ro", verb="EXPLAIN"),
    C("EXPLAIN FORMAT=JSON UPDATE t SET a = 1", K.SHOW, "ro"),
    C("EXPLAIN ANALYZE SELECT * FROM t", K.SHOW, "ro"),
    C("EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", K.SHOW, "lock"),
    C("EXPLAIN FOR CONNECTION 5", K.SHOW, "ro"),
    C("ANALYZE SELECT * FROM t", K.SHOW, "ro"),
    C("ANALYZE UPDATE t SET a = 1", K.SHOW, "", tables=(T("t"),)),
    C("ANALYZE TABLE t", K.ADMIN, "ic"),
    C("ANALYZE NO_WRITE_TO_BINLOG TABLE t", K.ADMIN, "ic"),
    C("HELP 'contents'", K.SHOW, "ro"),
    C("GET DIAGNOSTICS @n = NUMBER", K.SHOW, "ro sess setvar"),
    C("GET CURRENT DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT", K.SHOW, "ro sess setvar"),
    C("DO 1", K.DO, "ro"),
    C("DO SLEEP(1)", K.DO, "ro"),
    C("DO GET_LOCK('x', 10)", K.DO, "lockfn"),
    C("DO RELEASE_LOCK('x')", K.DO, "lockfn"),
    C("DO", K.OTHER, ""),
    C("PREPARE s FROM 'SELECT * FROM t WHERE id = ?'", K.PREPARE, "ro", prepared_name="s"),
    C("PREPARE s FROM @sql", K.PREPARE, "ro getvar", prepared_name="s"),
    C("PREPARE s", K.OTHER, ""),
    C("EXECUTE s", K.EXECUTE, "", prepared_name="s"),
    C("EXECUTE s USING @a, @b", K.EXECUTE, "getvar", prepared_name="s"),
    C("EXECUTE IMMEDIATE 'SELECT 1'", K.EXECUTE, "ro"),
    C("EXECUTE IMMEDIATE 'UPDATE t SET a = 1'", K.EXECUTE, ""),
    C("DEALLOCATE PREPARE s", K.DEALLOCATE, "ro", prepared_name="s"),
    C("DROP PREPARE s", K.DEALLOCATE, "ro", prepared_name="s"),
    C("KILL 42", K.KILL, ""),
    C("KILL QUERY 42", K.KILL, ""),
    C("KILL CONNECTION 42", K.KILL, ""),
    C("HANDLER t OPEN", K.HANDLER, "sess"),
    C("HANDLER t READ FIRST", K.HANDLER, "sess"),
    C("HANDLER t CLOSE", K.HANDLER, "sess"),
    # --- administration and accounts -------------------------------------------------------------
    C("FLUSH TABLES", K.ADMIN, "ic"),
    C("FLUSH TABLES WITH READ LOCK", K.ADMIN, "ic"),
    C("OPTIMIZE TABLE t", K.ADMIN, "ic"),
    C("REPAIR TABLE t", K.ADMIN, "ic"),
    C("CHECK TABLE t", K.ADMIN, "ic"),
    C("CHECKSUM TABLE t", K.ADMIN, ""),
    C("RESET MASTER", K.ADMIN, "ic", verb="RESET MASTER"),  # a member refuses it (3190)
    C("reset binary logs and gtids", K.ADMIN, "ic", verb="RESET MASTER"),
    C("RESET SLAVE", K.ADMIN, "ic", verb="RESET"),
    C("RESET SLAVE 'conn_master'", K.ADMIN, "ic", verb="RESET"),  # a connection name, not the option
    # Later in the option list (found by the fuzzer: it reset a member's binary log).
    C("RESET QUERY CACHE, SLAVE, MASTER TO 9", K.ADMIN, "ic", verb="RESET MASTER"),
    C("reset slave all, binary logs and gtids", K.ADMIN, "ic", verb="RESET MASTER"),
    C("RESET PERSIST", K.ADMIN, ""),
    C("PURGE BINARY LOGS TO 'mysql-bin.000010'", K.ADMIN, ""),
    C("CHANGE MASTER TO MASTER_HOST = 'h'", K.ADMIN, "ic"),
    C("CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'h'", K.ADMIN, "ic"),
    C("START SLAVE", K.ADMIN, "ic"),
    C("STOP REPLICA", K.ADMIN, "ic"),
    C("START GROUP_REPLICATION", K.ADMIN, "ic"),
    C("INSTALL PLUGIN p SONAME 'p.so'", K.ADMIN, "ic"),
    C("SHUTDOWN", K.ADMIN, ""),
    C("CACHE INDEX t IN hot", K.ADMIN, "ic"),
    C("LOAD INDEX INTO CACHE t", K.ADMIN, "ic"),
    C("GRANT SELECT ON db.* TO 'u'@'%'", K.ACCOUNT, "ic"),
    C("REVOKE ALL ON *.* FROM u", K.ACCOUNT, "ic"),
    C("CREATE USER 'u'@'%' IDENTIFIED BY 'p'", K.ACCOUNT, "ic"),
    C("ALTER USER u IDENTIFIED BY 'p'", K.ACCOUNT, "ic"),
    C("DROP USER u", K.ACCOUNT, "ic"),
    C("RENAME USER a TO b", K.ACCOUNT, "ic"),
    C("CREATE ROLE r", K.ACCOUNT, "ic"),
    C("DROP ROLE r", K.ACCOUNT, "ic"),
    # --- empty, unknown, compound ----------------------------------------------------------------
    C("", K.EMPTY, "ro"),
    C("   ", K.EMPTY, "ro"),
    C("-- nothing\n", K.EMPTY, "ro"),
    C("/* nothing */", K.EMPTY, "ro"),
    C(";", K.EMPTY, "ro"),
    C("FOO BAR", K.OTHER, "", verb="FOO"),
    C("SELEC 1", K.OTHER, ""),
    C("--not-a-comment\nSELECT 1", K.OTHER, ""),
    C("42", K.OTHER, ""),
    C("'SELECT 1'", K.OTHER, ""),
    C("`SELECT`", K.OTHER, ""),
    C("(UPDATE t SET a = 1)", K.OTHER, ""),
    C("SIGNAL SQLSTATE '45000'", K.OTHER, ""),
    C("@x := 1", K.OTHER, ""),
    C("BEGIN NOT ATOMIC SELECT 1; END", K.OTHER, ""),
    C("BEGIN NOT ATOMIC UPDATE t SET a = LAST_INSERT_ID(); END", K.OTHER, "sess"),
    C("IF 1 THEN SELECT 1; END IF", K.OTHER, ""),
    C("lbl: BEGIN NOT ATOMIC SELECT 1; END", K.OTHER, ""),
    # --- several statements in one text ----------------------------------------------------------
    C("SELECT 1; SELECT 2", K.MULTI, "ro multi"),
    C("SELECT 1;;SELECT 2", K.MULTI, "ro multi"),
    C("SELECT 'a;b'; SELECT \"c;d\"", K.MULTI, "ro multi"),
    C("SELECT 1; UPDATE t SET a = 1; SELECT 2", K.MULTI, "multi", tables=(T("t"),)),
    C("BEGIN; UPDATE t SET a = 1; COMMIT", K.MULTI, "ic multi", tables=(T("t"),)),
    C("SET autocommit = 0; SELECT 1", K.MULTI, "ro multi", autocommit=False),
    C("SELECT 1 /*!; DROP TABLE t */", K.MULTI, "ic multi", tables=(T("t"),)),
    C("SELECT GET_LOCK('x', 1); SELECT 1", K.MULTI, "lockfn multi"),
    C("SELECT @x := 1; SELECT @x", K.MULTI, "ro setvar getvar multi"),
    C("CREATE TEMPORARY TABLE tt (a INT); INSERT INTO tt VALUES (1)", K.MULTI, "temp multi",
      tables=(T("tt"),)),
    C("CREATE TABLE `begin` (a INT); SELECT 1", K.MULTI, "ic multi", tables=(T("begin"),)),
    C("CREATE PROCEDURE p() BEGIN DECLARE x INT; SET x = 1; IF x > 0 THEN SELECT 1; ELSE SELECT 2; END IF; "
      "END; CALL p()", K.MULTI, "ic multi"),
    C("CREATE PROCEDURE p() BEGIN WHILE 1 DO SELECT 1; END WHILE; REPEAT SELECT 2; UNTIL 1 END REPEAT; "
      "l: LOOP LEAVE l; END LOOP l; SELECT CASE WHEN 1 THEN 2 END; CASE x WHEN 1 THEN SELECT 1; END CASE; END; "
      "SELECT 3", K.MULTI, "ic multi"),
    C("CREATE TRIGGER trg BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END; INSERT INTO t VALUES (1)",
      K.MULTI, "ic multi", tables=(T("t"),)),
    C("CREATE TRIGGER trg BEFORE INSERT ON t FOR EACH ROW IF NEW.a > 0 THEN SET NEW.a = 1; END IF; SELECT 1",
      K.MULTI, "ic multi", tables=(T("t"),)),
]

BOOL_FIELDS = tuple(f.name for f in fields(Statement) if f.type == "bool")


def test_table_is_large_and_distinct() -> None:
    assert len(CASES) >= 150
    sqls = [c.sql for c in CASES]
    assert len(set(sqls)) == len(sqls), [s for s in sqls if sqls.count(s) > 1]
    assert set(FLAG_NAMES.values()) == set(BOOL_FIELDS)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_classification_table(case: Case) -> None:
    got = classify_uncached(case.sql)
    assert got.kind is case.kind, got
    true_flags = {name for name, attr in FLAG_NAMES.items() if getattr(got, attr)}
    assert true_flags == set(case.flags), got
    for attr, expected in case.expect.items():
        assert getattr(got, attr) == expected, (attr, got)
    if case.kind is Kind.MULTI:
        assert len(got.parts) >= 2 and all(p.kind is not Kind.MULTI for p in got.parts)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_same_answer_as_bytes_and_through_the_cache(case: Case) -> None:
    expected = classify_uncached(case.sql)
    assert classify_uncached(case.sql.encode()) == expected
    clf = Classifier()
    assert clf(case.sql) == expected
    assert clf(case.sql) == expected
    assert clf.cache_info().hits == 1


@pytest.mark.parametrize("case", CASES, ids=str)
def test_invariants(case: Case) -> None:
    got = classify_uncached(case.sql)
    assert (got.kind is Kind.MULTI) == got.multi == bool(got.parts)
    if got.kind in (Kind.OTHER, Kind.DML, Kind.DDL, Kind.CALL, Kind.ACCOUNT, Kind.ADMIN, Kind.LOAD_DATA):
        assert not got.is_read_only
    if got.is_read_only:
        assert not (got.locking_read or got.uses_locking_functions or got.writes_file or got.writes_sequence)
    if got.multi:
        assert got.is_read_only == all(p.is_read_only for p in got.parts)
        assert got.implicit_commit == any(p.implicit_commit for p in got.parts)
        for name in ("locking_read", "uses_locking_functions", "session_functions", "temporary_table"):
            assert getattr(got, name) == any(getattr(p, name) for p in got.parts)


# --- kinds of the parts of multi-statement texts -------------------------------------------------

MULTI_PARTS = [
    ("SELECT 1; UPDATE t SET a = 1; SELECT 2", [Kind.SELECT, Kind.DML, Kind.SELECT]),
    ("BEGIN; UPDATE t SET a = 1; COMMIT", [Kind.BEGIN, Kind.DML, Kind.COMMIT]),
    ("SELECT 1 /*!; DROP TABLE t */", [Kind.SELECT, Kind.DDL]),
    ("CREATE PROCEDURE p() BEGIN DECLARE x INT; SET x = 1; IF x > 0 THEN SELECT 1; ELSE SELECT 2; END IF; "
     "END; CALL p()", [Kind.DDL, Kind.CALL]),
    ("CREATE PROCEDURE p() BEGIN WHILE 1 DO SELECT 1; END WHILE; REPEAT SELECT 2; UNTIL 1 END REPEAT; "
     "l: LOOP LEAVE l; END LOOP l; SELECT CASE WHEN 1 THEN 2 END; CASE x WHEN 1 THEN SELECT 1; END CASE; END; "
     "SELECT 3", [Kind.DDL, Kind.SELECT]),
    ("CREATE TRIGGER trg BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END; INSERT INTO t VALUES (1)",
     [Kind.DDL, Kind.DML]),
    ("CREATE TRIGGER trg BEFORE INSERT ON t FOR EACH ROW IF NEW.a > 0 THEN SET NEW.a = 1; END IF; SELECT 1",
     [Kind.DDL, Kind.SELECT]),
    ("CREATE TABLE `begin` (a INT); SELECT 1", [Kind.DDL, Kind.SELECT]),
    ("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO BEGIN DELETE FROM t; DELETE FROM u; END; SELECT 1",
     [Kind.DDL, Kind.SELECT]),
    ("BEGIN NOT ATOMIC DECLARE x INT; SELECT 1; END; SELECT 2", [Kind.OTHER, Kind.SELECT]),
    ("SET autocommit = 0; INSERT INTO t VALUES (1); COMMIT; SET autocommit = 1",
     [Kind.SET, Kind.DML, Kind.COMMIT, Kind.SET]),
]


@pytest.mark.parametrize(("sql", "kinds"), MULTI_PARTS)
def test_multi_statement_parts(sql: str, kinds: list[Kind]) -> None:
    got = classify_uncached(sql)
    assert [p.kind for p in got.parts] == kinds


def test_multi_autocommit_is_the_last_one_set() -> None:
    got = classify_uncached("SET autocommit = 0; INSERT INTO t VALUES (1); COMMIT; SET autocommit = 1")
    assert got.autocommit is True and got.implicit_commit
    assert [a.name for a in got.assignments] == ["autocommit", "autocommit"]


# --- SET assignments -----------------------------------------------------------------------------

SESSION, GLOBAL, USER, NEXT = Scope.SESSION, Scope.GLOBAL, Scope.USER, Scope.NEXT_TRANSACTION
SET_CASES: list[tuple[str, list[tuple[Scope, str, str, object]]]] = [
    ("SET @@SESSION.group_replication_consistency = 'BEFORE'",
     [(SESSION, "group_replication_consistency", "'BEFORE'", "BEFORE")]),
    ("SET group_replication_consistency = 2", [(SESSION, "group_replication_consistency", "2", 2)]),
    ("SET SESSION group_replication_consistency = BEFORE_AND_AFTER",
     [(SESSION, "group_replication_consistency", "BEFORE_AND_AFTER", "BEFORE_AND_AFTER")]),
    ("SET @@group_replication_consistency = 'eventual'",
     [(SESSION, "group_replication_consistency", "'eventual'", "eventual")]),
    ("SET LOCAL group_replication_consistency = \"AFTER\"",
     [(SESSION, "group_replication_consistency", '"AFTER"', "AFTER")]),
    ("SET GLOBAL group_replication_consistency = 'AFTER'",
     [(GLOBAL, "group_replication_consistency", "'AFTER'", "AFTER")]),
    ("SET @@GLOBAL.group_replication_consistency = 1", [(GLOBAL, "group_replication_consistency", "1", 1)]),
    ("SET NAMES utf8mb4 COLLATE utf8mb4_0900_ai_ci",
     [(SESSION, "names", "utf8mb4 COLLATE utf8mb4_0900_ai_ci", None)]),
    ("SET NAMES 'utf8mb4'", [(SESSION, "names", "'utf8mb4'", "utf8mb4")]),
    ("SET NAMES DEFAULT", [(SESSION, "names", "DEFAULT", "DEFAULT")]),
    ("SET CHARACTER SET latin1", [(SESSION, "character set", "latin1", "LATIN1")]),
    ("SET CHARSET 'utf8'", [(SESSION, "character set", "'utf8'", "utf8")]),
    ("SET autocommit=0", [(SESSION, "autocommit", "0", 0)]),
    ("SET autocommit = TRUE", [(SESSION, "autocommit", "TRUE", 1)]),
    ("SET autocommit = 'off'", [(SESSION, "autocommit", "'off'", "off")]),
    ("SET sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES', @a = 1, SESSION wait_timeout = 10, GLOBAL x = 2, y = 3",
     [(SESSION, "sql_mode", "'ANSI_QUOTES,STRICT_ALL_TABLES'", "ANSI_QUOTES,STRICT_ALL_TABLES"),
      (USER, "a", "1", 1), (SESSION, "wait_timeout", "10", 10), (GLOBAL, "x", "2", 2), (GLOBAL, "y", "3", 3)]),
    ("SET GLOBAL a = 1, @@b = 2, c = 3", [(GLOBAL, "a", "1", 1), (SESSION, "b", "2", 2), (GLOBAL, "c", "3", 3)]),
    ("SET @@session.sql_mode = CONCAT(@@sql_mode, ',ANSI')",
     [(SESSION, "sql_mode", "CONCAT(@@sql_mode, ',ANSI')", None)]),
    ("SET @x := -5", [(USER, "x", "- 5", -5)]),
    ("SET @X = 1.5e3", [(USER, "x", "1.5e3", 1500.0)]),
    ("SET @`my var` = 'a''b', @'q' = \"c\\\"d\"", [(USER, "my var", "'a''b'", "a'b"), (USER, "q", '"c\\"d"', 'c"d')]),
    ("SET x = DEFAULT", [(SESSION, "x", "DEFAULT", "DEFAULT")]),
    ("SET x = 0x1F", [(SESSION, "x", "0x1F", 31)]),
    ("SET x = X'1F'", [(SESSION, "x", "X'1F'", None)]),
    ("SET x = N'abc'", [(SESSION, "x", "N'abc'", "abc")]),
    ("SET x = 'a' 'b'", [(SESSION, "x", "'a' 'b'", "ab")]),
    ("SET x = (1 + 2) * 3", [(SESSION, "x", "(1 + 2) * 3", None)]),
    ("SET x = 'a\\nb'", [(SESSION, "x", "'a\\nb'", "a\nb")]),
    ("SET /* c */ x /* c */ = /* c */ 1 /* c */", [(SESSION, "x", "1", 1)]),
    ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
     [(NEXT, "transaction", "ISOLATION LEVEL READ COMMITTED", None)]),
    ("SET SESSION TRANSACTION READ ONLY", [(SESSION, "transaction", "READ ONLY", None)]),
    ("SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
     [(GLOBAL, "transaction", "ISOLATION LEVEL SERIALIZABLE, READ WRITE", None)]),
    ("SET GLOBAL validate_password.policy = LOW", [(GLOBAL, "validate_password.policy", "LOW", "LOW")]),
    ("SET PERSIST max_connections = 500", [(Scope.PERSIST, "max_connections", "500", 500)]),
    ("SET @@persist_only.innodb_log_file_size = 1", [(Scope.PERSIST_ONLY, "innodb_log_file_size", "1", 1)]),
    ("SET ROLE ALL", [(SESSION, "role", "ALL", "ALL")]),
    ("SET RESOURCE GROUP rg", [(SESSION, "resource group", "rg", "RG")]),
    ("SET @a = 1, @b = 'two'", [(USER, "a", "1", 1), (USER, "b", "'two'", "two")]),
    ("SET x = f(a, g(b, c)), y = 2", [(SESSION, "x", "f(a, g(b, c))", None), (SESSION, "y", "2", 2)]),
]


@pytest.mark.parametrize(("sql", "expected"), SET_CASES)
def test_set_assignments(sql: str, expected: list[tuple[Scope, str, str, object]]) -> None:
    got = classify_uncached(sql)
    assert got.kind is Kind.SET, got
    assert [(a.scope, a.name, a.value, a.literal) for a in got.assignments] == expected
    assert [type(a.literal) for a in got.assignments] == [type(e[3]) for e in expected]


def test_set_literal_types() -> None:
    (a,) = classify_uncached("SET x = 2").assignments
    assert a.literal == 2 and type(a.literal) is int
    (a,) = classify_uncached("SET x = 2.0").assignments
    assert type(a.literal) is float
    (a,) = classify_uncached("SET x = '2'").assignments
    assert a.literal == "2"


def test_set_value_text_replays() -> None:
    """The canonical value text classifies, inside a SET, to the same assignment."""
    for sql, _ in SET_CASES:
        got = classify_uncached(sql)
        for a in got.assignments:
            if a.scope in (Scope.SESSION, Scope.GLOBAL, Scope.USER) and a.name not in (
                "names", "character set", "transaction", "role", "resource group"):
                target = f"@`{a.name}`" if a.scope is Scope.USER else f"{a.scope.value} `{a.name}`"
                (again,) = classify_uncached(f"SET {target} = {a.value}").assignments
                assert (again.value, again.literal) == (a.value, a.literal)


def test_system_variable_reads() -> None:
    got = classify_uncached("SELECT @@GLOBAL.group_replication_consistency, @@session.x, @@local.y, "
                            "@@persist.z, @@`w`")
    assert got.system_variables == (
        SystemVariable(Scope.GLOBAL, "group_replication_consistency"),
        SystemVariable(Scope.SESSION, "x"),
        SystemVariable(Scope.SESSION, "y"),
        SystemVariable(Scope.PERSIST, "z"),
        SystemVariable(Scope.SESSION, "w"),
    )
    assert got.is_read_only


def test_inner_statements() -> None:
    prepared = classify_uncached("PREPARE s FROM 'SELECT * FROM t WHERE id = ? FOR UPDATE'")
    assert prepared.inner is not None and prepared.inner.kind is Kind.SELECT and prepared.inner.locking_read
    assert not prepared.locking_read  # preparing takes no lock
    prepared = classify_uncached("PREPARE s FROM 'INSERT INTO t VALUES (?)'")
    assert prepared.inner is not None and prepared.inner.tables == (T("t"),)
    explained = classify_uncached("EXPLAIN UPDATE t SET a = 1")
    assert explained.inner is not None and explained.inner.kind is Kind.DML and explained.is_read_only
    assert classify_uncached("DESCRIBE t").inner is None
    immediate = classify_uncached("EXECUTE IMMEDIATE 'SELECT GET_LOCK(''x'', 1)'")
    assert immediate.inner is not None and immediate.uses_locking_functions and not immediate.is_read_only


def test_nesting_is_bounded() -> None:
    sql = "SELECT 1"
    for _ in range(S.STATEMENT_NESTING_MAX + 3):
        sql = "PREPARE s FROM '" + sql.replace("'", "''") + "'"
    got = classify_uncached(sql)
    depth, node = 0, got
    while node.inner is not None:
        node, depth = node.inner, depth + 1
    assert depth == S.STATEMENT_NESTING_MAX + 1  # levels 1..MAX classified, the next one is OTHER
    assert node.kind is Kind.OTHER and not node.is_read_only
    shallow = classify_uncached("PREPARE s FROM 'PREPARE t FROM ''SELECT 1'''")
    assert shallow.inner is not None and shallow.inner.inner is not None
    assert shallow.inner.inner.kind is Kind.SELECT
    very_deep = "SET STATEMENT x = 1 FOR " * 5000 + "SELECT 1"
    got = S._classify_text(very_deep)
    assert got.kind is Kind.OTHER and not got.is_read_only
    assert S._classify_text("SET STATEMENT x = 1 FOR " * 3 + "SELECT 1").kind is Kind.SELECT


# --- fast path first: no sqlglot, and no tokenizer for a plain SELECT ------------------------------


def test_common_statements_do_not_use_sqlglot(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(sql: str) -> object:
        raise AssertionError(f"sqlglot used for {sql!r}")

    monkeypatch.setattr(S, "_sqlglot_parse", forbidden)
    for sql in ("SELECT c FROM sbtest1 WHERE id = 1", "SELECT * FROM t FOR UPDATE", "INSERT INTO t VALUES (1)",
                "UPDATE t SET a = 1 WHERE id = 2", "DELETE FROM t WHERE id = 2", "REPLACE INTO t VALUES (1)",
                "BEGIN", "COMMIT", "ROLLBACK", "START TRANSACTION READ ONLY", "SET autocommit = 0",
                "SET NAMES utf8mb4", "USE db", "WITH c AS (SELECT 1) SELECT * FROM c",
                "WITH c AS (SELECT 1) UPDATE t SET a = 1", "CREATE TABLE t (a INT)", "SHOW TABLES"):
        S._classify_text(sql)


def test_plain_select_takes_the_quick_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(text: str) -> list[object]:
        raise AssertionError(f"tokenized {text!r}")

    monkeypatch.setattr(S, "_tokenize", forbidden)
    for sql in ("SELECT c FROM sbtest1 WHERE id=4711", "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 1 AND 99 "
                "ORDER BY c", "(SELECT 1) UNION (SELECT 2)"):
        assert S._classify_text(sql) is S._PLAIN_SELECT
    with pytest.raises(AssertionError):
        S._classify_text("SELECT * FROM t FOR UPDATE")


@pytest.mark.parametrize("case", [c for c in CASES if c.kind is Kind.SELECT], ids=str)
def test_quick_path_agrees_with_full_path(case: Case) -> None:
    full = S._classify_tokens(case.sql, S._tokenize(case.sql), 0)
    if S._is_plain_select(case.sql):
        assert full == S._PLAIN_SELECT


# --- the cache ------------------------------------------------------------------------------


def test_cache_hits_and_lru_eviction() -> None:
    clf = Classifier(entries_max=3)
    for sql in ("SELECT 1", "SELECT 2", "SELECT 3"):
        clf(sql)
    clf("SELECT 1")  # now the most recently used
    clf("SELECT 4")  # evicts SELECT 2
    info = clf.cache_info()
    assert (info.hits, info.misses, info.entries) == (1, 4, 3)
    clf("SELECT 1")
    clf("SELECT 2")
    info = clf.cache_info()
    assert (info.hits, info.misses, info.entries) == (2, 5, 3)


def test_cache_bounded_by_total_size() -> None:
    clf = Classifier(entries_max=100, chars_max=20)
    for i in range(10):
        clf(f"SELECT {i:03d}")  # 10 chars each
    info = clf.cache_info()
    assert info.entries == 2 and info.chars == 20


def test_huge_texts_are_not_cached() -> None:
    clf = Classifier(text_chars_max=16)
    sql = "SELECT 1 FROM t WHERE x IN (" + ", ".join(map(str, range(100))) + ")"
    assert clf(sql) == classify_uncached(sql)
    assert clf(sql).kind is Kind.SELECT
    info = clf.cache_info()
    assert (info.entries, info.uncached, info.hits, info.chars) == (0, 2, 0, 0)
    default = Classifier()
    default("INSERT INTO t VALUES ('" + "x" * (S.STATEMENT_CACHED_TEXT_CHARS_MAX + 1) + "')")
    assert default.cache_info().entries == 0


def test_cache_keys_bytes_and_str_separately() -> None:
    clf = Classifier()
    assert clf(b"SELECT 1") == clf("SELECT 1") == clf(bytearray(b"SELECT 1")) == clf(memoryview(b"SELECT 1"))
    info = clf.cache_info()
    assert info.entries == 2 and info.hits == 2


def test_cache_can_be_disabled_and_cleared() -> None:
    clf = Classifier(entries_max=0)
    clf("SELECT 1")
    clf("SELECT 1")
    assert clf.cache_info().entries == 0 and clf.cache_info().hits == 0
    clf = Classifier()
    clf("SELECT 1")
    clf.cache_clear()
    assert clf.cache_info() == (0, 0, 0, 0, 0, S.STATEMENT_CACHE_ENTRIES_MAX, 0, S.STATEMENT_CACHE_CHARS_MAX)
    with pytest.raises(ValueError):
        Classifier(entries_max=-1)


def test_module_classify_is_a_classifier() -> None:
    before = classify.cache_info()
    sql = "SELECT 'test_module_classify_is_a_classifier'"
    classify(sql)
    classify(sql)
    after = classify.cache_info()
    assert after.hits >= before.hits + 1
    assert after.entries_max == S.STATEMENT_CACHE_ENTRIES_MAX


def test_internal_error_is_other_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(text: str, nesting: int = 0) -> Statement:
        raise IndexError("bug")

    monkeypatch.setattr(S, "_classify_text", broken)
    got = classify_uncached("SELECT 1")
    assert got.kind is Kind.OTHER and not got.is_read_only
    clf = Classifier()
    assert clf("SELECT 1").kind is Kind.OTHER
    assert clf.cache_info().internal_errors == 1


def test_statement_is_frozen_and_slotted() -> None:
    got = classify_uncached("UPDATE t SET a = 1")
    with pytest.raises(AttributeError):
        got.kind = Kind.SELECT  # type: ignore[misc]
    assert not hasattr(got, "__dict__")
    a = Assignment(Scope.SESSION, "x", "1", 1)
    with pytest.raises(AttributeError):
        a.name = "y"  # type: ignore[misc]


# --- properties --------------------------------------------------------------------------------

SEPARATORS = st.sampled_from([" ", "  ", "\n", "\t", " /* c */ ", " /* FOR UPDATE; */ ", " -- c;\n", " # c\n",
                              "\r\n", " /*+ hint */ ", " -- 'x\n", " /* ' */ "])


def _token_texts(sql: str) -> list[str]:
    return [t[2] for t in S._tokenize(sql)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_comments_and_whitespace_between_tokens_change_nothing(data: st.DataObject) -> None:
    case = data.draw(st.sampled_from(CASES))
    tokens = _token_texts(case.sql)
    pieces = [data.draw(SEPARATORS)]
    for token in tokens:
        pieces.append(token)
        pieces.append(data.draw(SEPARATORS))
    variant = "".join(pieces)
    assert S._classify_text(variant) == classify_uncached(case.sql), variant


SELECT_FRAGMENTS = st.sampled_from([
    "SELECT", "select", "*", "a", "t", "FROM", "WHERE", "=", "1", "(", ")", ",", "FOR", "UPDATE", "SHARE", "LOCK",
    "IN", "SHARE MODE", "INTO", "OUTFILE", "'x'", "@v", "@@identity", ";", "GET_LOCK", "get_lock(", "row_count",
    "ROW_COUNT()", "NEXT VALUE FOR s", "NEXTVAL(s)", "'for update'", "`lock`", '"into"', "/* FOR UPDATE */",
    "/*!50000 FOR UPDATE */", "/*!FOR*/", "-- x\n", "# y\n", "'a\\'b'", "'it''s'", "information_schema",
    "format", "before", "lockout", "into_x", "ſelect", "K", "$for", "for$", "1for", "SQL_CALC_FOUND_ROWS",
    "LAST_INSERT_ID()", "PREVIOUS VALUE FOR s", "UNION", "DISTINCT", "x'41'", "N'n'", "*/", "/*", "--", "#",
    ":", "\u00a0", "\u2003", "ä", "FOR\u00a0UPDATE", "\ufeff",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(SELECT_FRAGMENTS, max_size=12), st.lists(st.sampled_from(["", " ", "\n", "/**/"]), min_size=13,
                                                          max_size=13))
def test_quick_path_is_sound(fragments: list[str], glue: list[str]) -> None:
    """Whenever the quick path answers "plain SELECT", the full path says exactly that too."""
    sql = "SELECT " + "".join(g + f for g, f in zip(glue, fragments))
    if S._is_plain_select(sql):
        assert S._classify_tokens(sql, S._tokenize(sql), 0) == S._PLAIN_SELECT, sql


INSERT_FRAGMENTS = st.sampled_from([
    "(1, 'a')", ",", "(2, NULL)", "NOW()", "'x;y'", "'@'", "'FOR UPDATE'", "FOR UPDATE", "SELECT * FROM u",
    "LAST_INSERT_ID()", "@v", ";", "/* c */", "-- c\n", "ON DUPLICATE KEY UPDATE a = VALUES(a)", "into",
    "/*!50000 LOCK IN SHARE MODE */", "GET_LOCK ('x', 1)", "`for`", "forecast", "blocked", "NEXT VALUE FOR s",
    "FOR\u00a0UPDATE", "LAST_INSERT_ID\u2003()", ":", "ä", "ſ",
])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["INSERT INTO t VALUES ", "INSERT INTO db.t (a, b) VALUES ", "REPLACE t VALUES ",
                     "insert low_priority ignore into `d`.`t` values ", "SELECT a FROM t WHERE b IN ",
                     "INSERT INTO db", "INSERT INTO t", "INSERT ", "SELECTä ", "ſelect ", "INSERTé INTO t ",
                     "\u00a0SELECT ", "( SELECT ", "(INSERT INTO t ", "INSERT: ", "SELECT: ",
                     "UPDATE t SET a = 1 WHERE id IN ", "UPDATE db.t AS x SET ", "UPDATE t1 JOIN t2 SET a = ",
                     "update low_priority `t` set a = 2 where b in ", "UPDATE t PARTITION (p) SET a = ",
                     "DELETE FROM t WHERE id IN ", "DELETE QUICK FROM db.t x WHERE ", "DELETE t1 FROM t1 WHERE ",
                     "DELETE FROM t1, t2 USING t1 WHERE ", "delete from t order by a limit ", "DELETE FROM t ",
                     "DELETE: ", "UPDATE ", "DELETE FROM "]),
    st.lists(INSERT_FRAGMENTS, max_size=10),
    st.integers(min_value=1, max_value=60),
)
def test_bulk_path_agrees_with_full_path(head: str, fragments: list[str], prefix_chars: int) -> None:
    sql = head + " ".join(fragments)
    bulk = S._classify_bulk(sql, 0, prefix_chars)
    if bulk is not None:
        assert bulk == S._classify_tokens(sql, S._tokenize(sql), 0), sql


def test_bulk_path_is_taken_for_a_big_extended_insert(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = ",".join(f"({i}, 'name {i}; for update', NOW(), NULL)" for i in range(2000))
    sql = f"INSERT INTO db.t (id, name, ts, x) VALUES {rows}"
    assert len(sql) > S.STATEMENT_BULK_TEXT_CHARS_MIN
    full = S._classify_tokens(sql, S._tokenize(sql), 0)
    assert full == Statement(Kind.DML, "INSERT", False, tables=(T("t", "db"),))
    calls: list[int] = []
    real = S._tokenize
    monkeypatch.setattr(S, "_tokenize", lambda text: calls.append(len(text)) or real(text))
    assert S._classify_text(sql) == full
    assert calls and max(calls) <= S.STATEMENT_BULK_PREFIX_CHARS
    hazard = sql + ", (LAST_INSERT_ID(), 'x', NOW(), NULL)"
    assert S._classify_text(hazard).session_functions


def test_bulk_path_is_taken_for_a_big_single_table_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    sql = "DELETE FROM t WHERE id IN (" + ", ".join(map(str, range(5000))) + ")"
    calls: list[int] = []
    real = S._tokenize
    monkeypatch.setattr(S, "_tokenize", lambda text: calls.append(len(text)) or real(text))
    got = S._classify_text(sql)
    assert got == Statement(Kind.DML, "DELETE", False, tables=(T("t"),))
    assert calls and max(calls) <= S.STATEMENT_BULK_PREFIX_CHARS
    assert S._classify_text(sql.replace("DELETE FROM t", "DELETE t FROM t JOIN u")).tables == (T("t"),)


def test_huge_literals_and_comments_lex_as_one_token() -> None:
    big = "x" * 200_000
    for sql in (f"INSERT INTO t VALUES ('{big}')", f'INSERT INTO t VALUES ("{big}")',
                f"SELECT `{big}` FROM t FOR UPDATE", f"UPDATE t SET a = 1 /* {big} */ WHERE b = 2",
                f"INSERT INTO t VALUES ('{big}"):
        tokens = S._tokenize(sql)
        assert len(tokens) < 12
        assert any(len(raw) >= len(big) for _, _, raw in tokens) or "/*" in sql
    assert classify_uncached(f"SELECT `{big}` FROM t FOR UPDATE").locking_read


LEXER_ALPHABET = st.text(alphabet=list("ab1_$ .,;()'\"`\\@-#/*!+=<>:\n\tNXx0éſ"), max_size=40)


@settings(max_examples=500, deadline=None)
@given(LEXER_ALPHABET)
def test_both_lexers_agree(text: str) -> None:
    if "/*!" in text or "/*M!" in text:
        return
    assert S._tokenize_exec(text) == S._tokenize(text)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_never_raises_on_any_text(text: str) -> None:
    got = S._classify_text(text)
    assert isinstance(got, Statement)
    if got.kind is Kind.OTHER:
        assert not got.is_read_only


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_never_raises_on_any_bytes(data: bytes) -> None:
    got = classify_uncached(data)
    assert got is not S._INTERNAL_ERROR
    assert classify(data) == got


SQLISH = st.sampled_from([
    "SELECT", "INSERT", "INTO", "UPDATE", "DELETE", "FROM", "SET", "WITH", "AS", "(", ")", ",", ";", "BEGIN", "END",
    "IF", "THEN", "CREATE", "PROCEDURE", "TABLE", "TEMPORARY", "DROP", "ALTER", "RENAME", "TO", "LOCK", "TABLES",
    "START", "TRANSACTION", "READ", "ONLY", "COMMIT", "ROLLBACK", "SAVEPOINT", "USE", "t", "db.t", "`q`", "'s'",
    "@x", "@@y", ":=", "=", "1", "FOR", "SHARE", "EXPLAIN", "PREPARE", "EXECUTE", "IMMEDIATE", "STATEMENT",
    "GLOBAL", "SESSION", "NAMES", "CHARACTER", "CASE", "WHILE", "DO", "ATOMIC", "NOT", ":", ".", "*", "/*!",
    "*/", "DEFINER", "VIEW", "TRIGGER", "ON", "JOIN", "USING", "LOAD", "DATA", "ANALYZE", "XA", "HANDLER", "GET",
    "DIAGNOSTICS", "RECURSIVE", "VALUES", "ROW", "REPLACE", "CALL", "KILL", "CHAIN", "AND", "NO", "RELEASE",
])


@settings(max_examples=600, deadline=None)
@given(st.lists(SQLISH, max_size=16), st.lists(st.sampled_from([" ", ""]), min_size=16, max_size=16))
def test_never_raises_on_keyword_soup(words: list[str], glue: list[str]) -> None:
    sql = "".join(w + g for w, g in zip(words, glue))
    got = S._classify_text(sql)
    assert isinstance(got, Statement)
    if got.kind is Kind.OTHER:
        assert not got.is_read_only


SINGLE_STATEMENTS = [c.sql for c in CASES if c.kind not in (Kind.MULTI, Kind.EMPTY) and ";" not in c.sql
                     and "--" not in c.sql and "#" not in c.sql and "/*" not in c.sql
                     and not re.match(r"\s*(BEGIN NOT|IF |lbl:|CREATE (PROCEDURE|DEFINER|TRIGGER|EVENT|FUNCTION))",
                                      c.sql)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(SINGLE_STATEMENTS), min_size=2, max_size=5))
def test_multi_is_read_only_iff_every_part_is(parts: list[str]) -> None:
    got = classify_uncached(";\n".join(parts))
    singles = [classify_uncached(p) for p in parts]
    assert got.kind is Kind.MULTI
    assert list(got.parts) == singles
    assert got.is_read_only == all(s.is_read_only for s in singles)
    assert got.session_functions == any(s.session_functions for s in singles)


# --- target tables against sqlglot as an oracle ------------------------------------------------

IDENT = st.sampled_from(["t", "t1", "orders", "`my table`", "`a``b`", "Ünï", "`select`", "_x$"])


def _oracle_target(sql: str) -> TableRef:
    import sqlglot
    from sqlglot import exp

    # sqlglot reads MySQL's REPLACE only as a Command; its target is where INSERT's is.
    tree = sqlglot.parse_one(re.sub(r"^REPLACE\b", "INSERT", sql), read="mysql")
    node = tree.this
    table = node if isinstance(node, exp.Table) else node.find(exp.Table)
    assert isinstance(table, exp.Table), sql
    return TableRef(table.db or None, table.name)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([
        "INSERT INTO {t} VALUES (1)", "INSERT {t} (a, b) VALUES (1, 2)", "INSERT IGNORE INTO {t} SELECT * FROM u",
        "REPLACE INTO {t} VALUES (1)", "UPDATE {t} SET a = 1 WHERE b = 2", "UPDATE {t} AS x SET x.a = 1",
        "UPDATE {t} SET a = a + 1 ORDER BY b LIMIT 3", "DELETE FROM {t} WHERE a = 1", "DELETE FROM {t} LIMIT 1",
        "INSERT INTO {t} SET a = 1 ON DUPLICATE KEY UPDATE a = 2",
    ]),
    st.one_of(IDENT, st.tuples(IDENT, IDENT).map(lambda p: f"{p[0]}.{p[1]}")),
)
def test_single_table_targets_match_sqlglot(template: str, name: str) -> None:
    sql = template.format(t=name)
    (got,) = classify_uncached(sql).tables
    assert got == _oracle_target(sql)


@pytest.mark.parametrize("trigger", ["SELECT 1 FOR UPDATE", "SELECT 1 FOR SHARE", "SELECT 1 LOCK IN SHARE MODE",
                                     "SELECT 1 INTO OUTFILE 'f'", "SELECT 1 INTO DUMPFILE 'f'", "NEXT VALUE FOR s",
                                     "PREVIOUS VALUE FOR s", "SELECT SQL_CALC_FOUND_ROWS 1"]
                         + [f"{name}()" for name in sorted(S._LOCKING_FUNCTIONS | S._SESSION_FUNCTIONS
                                                           | S._SEQUENCE_WRITE_FUNCTIONS)])
def test_bulk_prefilter_covers_every_trigger(trigger: str) -> None:
    """The substring prefilter may never hide a sequence the hazard regex (and the scan) reacts to."""
    for variant in (trigger, trigger.lower(), trigger.replace(" ", "\n  ")):
        assert S._HAZARD_WORD_RE.search(variant), variant
        assert S._bulk_hazard(variant), variant
        flags = S._scanned(S._P(variant, S._tokenize(variant), 0), 0)
        assert flags.writes or flags.session, variant


@pytest.mark.parametrize("sql, expected", [
    (b"SELECT CONNECTION_ID()", b"SELECT 42 AS `CONNECTION_ID()`"),
    (b"select connection_id( ), 1", b"select 42 AS `connection_id( )`, 1"),
    (b"SELECT 1, CONNECTION_ID() FROM t", b"SELECT 1, 42 AS `CONNECTION_ID()` FROM t"),
    (b"SELECT * FROM p WHERE id = CONNECTION_ID()", b"SELECT * FROM p WHERE id = 42"),
    (b"SELECT CONNECTION_ID() AS c", b"SELECT 42 AS c"),
    (b"SELECT CONNECTION_ID()+1", b"SELECT 42+1"),
    (b"KILL QUERY CONNECTION_ID()", b"KILL QUERY 42"),
    (b"SELECT MY_CONNECTION_ID()", b"SELECT MY_CONNECTION_ID()"),  # another function
    (b"SELECT CONNECTION_ID(1)", b"SELECT CONNECTION_ID(1)"),  # not an argument-less call
])
def test_replace_call(sql: bytes, expected: bytes) -> None:
    from replication.statements import replace_call

    assert replace_call(sql, "CONNECTION_ID", 42) == expected
