"""Writes through a member port replicate bit for bit (DESIGN §5: the write path on the binlog).

Two members (multi-primary, real TCP group communication, one MariaDB backend each) and a
third, standalone server as the reference. Every scenario resets database `cap` through member
A's port (DDL ordered through the group, seed rows replicated) and on the reference, runs one
statement on member A's port — autocommit, or inside BEGIN … COMMIT — in a session with a
+05:30 time zone and a latin1 client character set, runs the same statement on the reference,
then checks:

* the two members' backends end identical: CHECKSUM TABLE and every row in hex (the member's
  row images, derived from the binlog, applied by the other member's applier);
* the client saw what the reference's client saw: affected rows, insert id, warnings, result
  sets (RETURNING), or the same error;
* for deterministic statements the member's tables also equal the reference's (running inside
  the member's XA transaction changed nothing the client can see);
* the group was asked exactly when rows changed: a write that changed nothing commits locally
  without a group round (the member's applied position does not move).

The table holds every column type (integers signed and unsigned at their limits, DECIMAL(65,30),
FLOAT, DOUBLE, temporal types, TIMESTAMP(6) under +05:30, YEAR, utf8mb4 text with emoji through
a latin1 client, binary strings with zero bytes, ENUM, SET, BIT(13), JSON, GEOMETRY, NULLs,
virtual and stored generated columns, a unique key). What the statement capture of the first
version refused with 1235 (stored functions and procedures, CALL, multi-statements, views,
RETURNING, executable comments, REPLACE that replaces its own row, ODKU moving unique values,
keys from RAND(), mixed AUTO_INCREMENT, CREATE … SELECT, LOAD DATA LOCAL) now runs and
replicates, and so do writes to tables with triggers (they run on the origin; the other member
applies the row events, the trigger's own writes among them, without running them). The
refusals left are GR's own — 3098 for a table without a primary key or not
in InnoDB (before the statement: a MyISAM write cannot be undone at COMMIT), and for a change
that fired a cascading foreign key — raised at COMMIT by writeset.derive, leaving no trace on
any backend; and 1235 for what has no exact row image here (sequences, system-versioned tables,
a foreign key to a non-unique index).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pymysql
import pytest

from grproxy.mysqld import ServerHandle
from member_ports_support import LoopThread, PortGroup, reset_backends
from tables_support import table_state

DB = "cap"
SESSION_TZ = "SET time_zone = '+05:30'"
ER_BEFORE_DML_VALIDATION = 3098
ER_NOT_SUPPORTED_YET = 1235
ER_TRANSACTION_ROLLBACK_DURING_COMMIT = 3101

# --- the every-type table and its statements (as the capture tests had them) --------------------

WIDE = """
CREATE TABLE wide (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  k VARCHAR(40) CHARACTER SET utf8mb4 NULL,
  i8 TINYINT, u8 TINYINT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED,
  dc DECIMAL(65,30), f FLOAT, d DOUBLE,
  dt DATE, tm TIME(6), dtt DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, y YEAR,
  c CHAR(10) CHARACTER SET utf8mb4, vc VARCHAR(50) CHARACTER SET utf8mb4, l1 VARCHAR(20) CHARACTER SET latin1,
  bn BINARY(8), vb VARBINARY(20), bl BLOB, tx TEXT,
  e ENUM('a','b','c'), st SET('x','y','z'), bt BIT(13), j JSON, g GEOMETRY NULL,
  gen INT AS (i8 + 1) VIRTUAL, gens VARCHAR(60) AS (CONCAT(vc, '!')) STORED,
  UNIQUE KEY uk (k)
) ENGINE=InnoDB
"""
COLS = "id, k, i8, u8, i64, u64, dc, f, d, dt, tm, dtt, ts, y, c, vc, l1, bn, vb, bl, tx, e, st, bt, j, g"
EMOJI = "_utf8mb4 X'F09F988020C3BC6EC3AF'"  # '😀 ünï'
FULL = (
    "{id}, {k}, -128, 255, -9223372036854775808, 18446744073709551615, "
    "-99999999999999999999999999999999999.999999999999999999999999999999, 1.00000012, 1e-1 + 2e-1, "
    "'9999-12-31', '-838:59:59.000000', '1000-01-01 00:00:00.000001', '2024-03-10 02:30:00.123456', 2155, "
    "'abc', " + EMOJI + ", _latin1 X'636166E9', X'0001020000000000', X'00FF00', X'000102FF00', 'long text', "
    "'b', 'x,z', b'1010101010101', '{{\"a\": [1, 2.5, \"x\"], \"b\": null}}', ST_GeomFromText('POINT(1 2)')"
)
OTHER = (
    "{id}, {k}, 127, 0, 9223372036854775807, 0, 0.000000000000000000000000000001, -3.4028234e38, "
    "1.7976931348623157e308, '1000-01-01', '838:59:59.999999', '9999-12-31 23:59:59.999999', "
    "'1970-01-01 05:30:01.000000', 1901, '', '', '', X'', X'', X'', '', 'c', '', b'0', '[]', "
    "ST_GeomFromText('LINESTRING(0 0, 1 1)')"
)
NULLS = "{id}, {k}" + ", NULL" * 24


def row(template: str, id_: object, k: object = "NULL") -> str:
    return "(" + template.format(id=id_, k=k) + ")"


SEED = [
    WIDE,
    f"INSERT INTO wide ({COLS}) VALUES {row(FULL, 1, repr('k1'))}, {row(OTHER, 2, repr('k2'))}, {row(NULLS, 3)}, "
    f"{row(FULL, 4, repr('k4'))}, {row(OTHER, 5)}",
    "CREATE TABLE src LIKE wide",
    f"INSERT INTO src ({COLS}) VALUES {row(OTHER, 10, repr('s10'))}, {row(FULL, 11, repr('s11'))}, {row(NULLS, 12)}, "
    f"{row(FULL, 4, repr('s4'))}",
]

# (name, statement, deterministic: the member's tables must equal the reference's)
STATEMENTS: list[tuple[str, str, bool]] = [
    ("insert-values", f"INSERT INTO wide ({COLS}) VALUES {row(FULL, 20, repr('k20'))}, {row(NULLS, 21)}", True),
    ("insert-auto", f"INSERT INTO wide ({COLS}) VALUES {row(FULL, 'NULL', repr('a1'))}, {row(OTHER, 0, 'NULL')}, {row(NULLS, 'DEFAULT')}", True),
    ("insert-set", "INSERT INTO wide SET k = 'set1', vc = " + EMOJI + ", bn = X'00', ts = '2030-01-01 00:00:00.5', j = '{}'", True),
    ("insert-computed-key", "INSERT INTO wide (id, k, vc, ts) VALUES (100 + FLOOR(RAND() * 1000), UUID(), CONCAT('r', RAND()), NOW(6))", False),
    ("insert-select", f"INSERT INTO wide ({COLS}) SELECT id + 100, CONCAT(k, 'x'), i8, u8, i64, u64, dc, f, d, dt, tm, dtt, ts, y, c, vc, l1, bn, vb, bl, tx, e, st, bt, j, g FROM src", True),
    ("insert-select-self", "INSERT INTO wide (id, k, i64, dc, f, d, ts, vc, bl, g) SELECT id + 1000, NULL, i64 DIV 2, dc, f, d, ts, vc, bl, g FROM wide WHERE id < 4", True),
    ("insert-ignore", f"INSERT IGNORE INTO wide ({COLS}) VALUES {row(OTHER, 1, repr('dup'))}, {row(OTHER, 30, repr('k2'))}, {row(FULL, 31, repr('new31'))}", True),
    ("insert-ignore-all-dup", "INSERT IGNORE INTO wide (k, vc) VALUES ('k1', 'z'), ('k2', 'z')", True),
    ("odku", f"INSERT INTO wide ({COLS}) VALUES {row(OTHER, 1, repr('q'))}, {row(OTHER, 40, repr('k2'))}, {row(FULL, 41, repr('new41'))} "
             "ON DUPLICATE KEY UPDATE i8 = VALUES(i8) - 1, vc = CONCAT(vc, '+'), ts = NOW(6)", False),
    ("odku-counter", "INSERT INTO wide (k, i64) VALUES ('k4', 1) ON DUPLICATE KEY UPDATE i64 = i64 + 1", True),
    ("odku-counter-new", "INSERT INTO wide (k, i64) VALUES ('fresh', 1) ON DUPLICATE KEY UPDATE i64 = i64 + 1", True),
    ("odku-assigns-unique", "INSERT INTO wide (id, k) VALUES (2, 'zz') ON DUPLICATE KEY UPDATE k = CONCAT(k, '-moved')", True),
    ("replace", f"REPLACE INTO wide ({COLS}) VALUES {row(OTHER, 1, repr('k4'))}, {row(FULL, 50, repr('k50'))}", True),
    ("replace-same", f"REPLACE INTO wide ({COLS}) VALUES {row(FULL, 1, repr('k1'))}", True),
    ("update-by-key", "UPDATE wide SET i8 = i8 + 1, vc = CONCAT(vc, 'x'), ts = ts + INTERVAL 1 SECOND WHERE id = 1", True),
    ("update-by-keys-in", "UPDATE wide SET f = f / 3, d = d / 3, bt = bt + 1 WHERE id IN (1, 2, 3, 99)", True),
    ("update-where-order-limit", "UPDATE wide SET c = 'upd', st = 'y', e = 'c' WHERE id > 1 ORDER BY id DESC LIMIT 2", True),
    ("update-nondeterministic", "UPDATE wide SET k = UUID(), d = RAND(), ts = NOW(6), dtt = NOW(6) WHERE id <= 3", False),
    ("update-pk", "UPDATE wide SET id = id + 1000 WHERE id < 3 ORDER BY id DESC", True),
    ("update-nothing", "UPDATE wide SET i8 = 1 WHERE id > 999", True),
    ("update-unchanged", "UPDATE wide SET i8 = i8 WHERE id IN (1, 2)", True),
    ("delete-by-key", "DELETE FROM wide WHERE id = 2", True),
    ("delete-order-limit", "DELETE FROM wide WHERE y IS NOT NULL ORDER BY id DESC LIMIT 2", True),
    ("delete-all", "DELETE FROM wide", True),
    ("multi-update", "UPDATE wide JOIN src ON wide.id = src.id SET wide.vc = src.vc, src.i8 = 5, wide.ts = NOW(6) WHERE src.id < 20", False),
    ("multi-update-comma", "UPDATE wide w, src s SET w.tx = 'joined' WHERE w.k = 'k1' AND s.id = 10", True),
    ("multi-delete", "DELETE wide, src FROM wide JOIN src ON wide.id = src.id", True),
    ("multi-delete-using", "DELETE FROM w USING wide AS w JOIN src ON w.id + 6 = src.id", True),
    ("insert-select-odku", "INSERT INTO wide (id, k, i8, vc) SELECT id, CONCAT('s', id), i8, vc FROM src "
                           "ON DUPLICATE KEY UPDATE i8 = VALUES(i8), vc = 'dup'", True),
    ("insert-select-union", "INSERT INTO wide (id, k) SELECT 200, 'u1' UNION ALL SELECT 201, 'u2'", True),
    ("insert-select-empty", "INSERT INTO wide (id) SELECT id FROM src WHERE id > 1000", True),
    ("insert-ignore-select", "INSERT IGNORE INTO wide (id, k) SELECT id, k FROM src", True),
    ("update-ignore-duplicate", "UPDATE IGNORE wide SET k = IF(id = 2, 'k1', 'fresh') WHERE id IN (2, 3)", True),
    ("delete-ignore", "DELETE IGNORE FROM wide WHERE i8 < 0", True),
    ("update-string-literal-key", "UPDATE wide SET i8 = 7 WHERE id = '1'", True),
    ("replace-set-two-conflicts", "REPLACE wide SET id = 3, k = 'k2', vc = 'both'", True),
    ("insert-expression-values", "INSERT INTO wide (id, k, dc, d, ts, bl) VALUES (60, 'e', 1/3, PI(), '2020-02-29 12:00:00', REPEAT(X'00', 3))", True),
]

# Statements that write no row: committed locally, without a group round.
CHANGES_NOTHING = frozenset({"update-nothing", "update-unchanged", "insert-select-empty", "insert-ignore-all-dup"})

T = "CREATE TABLE t (id INT PRIMARY KEY, u VARCHAR(10) UNIQUE, v INT) ENGINE=InnoDB"
T_ROWS = "INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20)"
LOG = "CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40))"

# What the statement capture refused with 1235: now it runs, and replicates exactly.
# (name, setup, statement, deterministic)
FORMERLY_REFUSED: list[tuple[str, list[str], str, bool] | object] = [
    ("stored-function", [T, T_ROWS, "CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 7"],
     "UPDATE t SET v = f() WHERE id = 1", True),
    ("stored-function-qualified", [T, T_ROWS, "CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 7"],
     f"UPDATE t SET v = `{DB}`.f() WHERE id = 1", True),
    ("stored-function-that-writes", [T, T_ROWS, LOG, "CREATE FUNCTION g() RETURNS INT DETERMINISTIC MODIFIES SQL DATA BEGIN "
                                     "INSERT INTO log (what) VALUES ('g'); RETURN 3; END"],
     "UPDATE t SET v = g() WHERE id IN (1, 2)", True),
    ("call", [T, T_ROWS, LOG, "CREATE PROCEDURE p(n INT) BEGIN UPDATE t SET v = n; INSERT INTO log (what) VALUES ('p'); END"],
     "CALL p(4)", True),
    ("create-select", [T, T_ROWS], "CREATE TABLE t2 SELECT * FROM t", True),
    ("multi-statement", [T, T_ROWS], "UPDATE t SET v = 1 WHERE id = 1; DELETE FROM t WHERE id = 2", True),
    ("view", [T, T_ROWS, "CREATE VIEW vw AS SELECT * FROM t"], "UPDATE vw SET v = 1 WHERE id = 1", True),
    ("returning", [T, T_ROWS], "DELETE FROM t WHERE id = 1 RETURNING id, u", True),
    ("insert-returning", [T, T_ROWS], "INSERT INTO t VALUES (3, 'c', 30) RETURNING id, v", True),
    ("executable-comment", [T, T_ROWS], "UPDATE t SET v = 1 /*!, u = 'x' */ WHERE id = 1", True),
    ("replace-replaces-itself", [T, T_ROWS], "REPLACE INTO t (id, u, v) VALUES (5, 'x', 1), (6, 'x', 2)", True),
    ("pk-from-nondeterministic", [T, T_ROWS], "UPDATE t SET id = id + 10 + FLOOR(RAND() * 10) WHERE id = 1", False),
    ("auto-increment-mixed", ["CREATE TABLE ai (id INT AUTO_INCREMENT PRIMARY KEY, n INT)", "INSERT INTO ai (n) VALUES (1)"],
     "INSERT INTO ai (id, n) VALUES (NULL, 1), (500, 2), (NULL, 3)", True),
    ("odku-moves-unique-values", [T, T_ROWS],
     "INSERT INTO t (id, u, v) VALUES (1, 'a', 0), (3, 'b', 0) ON DUPLICATE KEY UPDATE u = CONCAT(u, '!')", True),
    ("odku-select-moves-unique-values", [T, T_ROWS],
     "INSERT INTO t (id, u, v) SELECT id, u, v FROM t ON DUPLICATE KEY UPDATE u = CONCAT(t.u, '!')", True),
    ("self-join-update", [T, T_ROWS], "UPDATE t AS x JOIN t AS y ON x.id = y.id - 1 SET x.v = y.v, y.v = 0", True),
    ("user-variable-keys", [T], "INSERT INTO t (id, u) VALUES ((@x := 40), 'a'), ((@x := @x + 1), 'b')", True),
    # Triggers run on the origin only: the other member applies the row events (a trigger's own
    # writes among them) without running its triggers (they were refused with 1235 while the
    # applier applied generated SQL, which would have run them a second time).
    ("trigger-sets-new", [T, T_ROWS, "CREATE TRIGGER trg BEFORE UPDATE ON t FOR EACH ROW SET NEW.v = NEW.v + 1"],
     "UPDATE t SET v = 0 WHERE id = 1", True),
    ("trigger-writes-another-table", [T, T_ROWS, LOG, "CREATE TRIGGER trg AFTER UPDATE ON t FOR EACH ROW "
                                      "INSERT INTO log (what) VALUES (CONCAT('v ', OLD.v, ' -> ', NEW.v))"],
     "UPDATE t SET v = v * 3", True),
]

# Edge cases of the happy path that need special sessions or tables.
# (name, setup, statement, deterministic, session statements)
SESSIONS: list[tuple[str, list[str], str, bool, list[str]]] = [
    ("no-auto-value-on-zero", ["CREATE TABLE z (id INT AUTO_INCREMENT PRIMARY KEY, n INT)"], "INSERT INTO z VALUES (0, 1)",
     True, ["SET sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')"]),
    ("zero-generates", ["CREATE TABLE z (id INT AUTO_INCREMENT PRIMARY KEY, n INT)", "INSERT INTO z VALUES (5, 5)"],
     "INSERT INTO z VALUES (0, 1), (0, 2)", True, []),
    ("enum-error-value", ["CREATE TABLE en (id INT PRIMARY KEY, e ENUM('a', 'b'))"],
     "INSERT INTO en VALUES (1, 'zzz'), (2, 'b')", True, ["SET sql_mode = ''"]),
    ("ansi-quotes", [T, T_ROWS], 'UPDATE "t" SET "v" = 99 WHERE "id" = 1', True, ["SET sql_mode = 'ANSI_QUOTES'"]),
    ("no-backslash-escapes", [T, T_ROWS], "UPDATE t SET u = 'a\\' WHERE id = 1", True, ["SET sql_mode = 'NO_BACKSLASH_ESCAPES'"]),
    ("invalid-date-allowed", ["CREATE TABLE dd (id INT PRIMARY KEY, d DATE)"], "INSERT INTO dd VALUES (1, '2024-02-30')",
     True, ["SET sql_mode = 'ALLOW_INVALID_DATES'"]),
    ("other-time-zone", ["CREATE TABLE tz (id INT PRIMARY KEY, ts TIMESTAMP(6) NULL, dt DATETIME(6))"],
     "INSERT INTO tz VALUES (1, '2024-03-31 02:30:00.5', '2024-03-31 02:30:00.5')", True, ["SET time_zone = '-11:00'"]),
]

# FOREIGN KEY trees: parents before children on apply, self-references, every order.
FK_SETUP = [
    "CREATE TABLE node (id INT PRIMARY KEY, parent INT NULL, name VARCHAR(30), FOREIGN KEY (parent) REFERENCES node (id))",
    "CREATE TABLE leaf (id INT PRIMARY KEY, node_id INT NOT NULL, FOREIGN KEY (node_id) REFERENCES node (id))",
    "INSERT INTO node VALUES (1, NULL, 'root'), (2, 1, 'a'), (3, 2, 'b')",
]
FK_STATEMENTS = [
    "INSERT INTO node VALUES (10, NULL, 'r2'), (11, 10, 'c'), (12, 11, 'd')",
    "INSERT INTO node VALUES (20, NULL, 'r3'), (5, 20, 'child-first-by-pk')",
    "DELETE FROM node WHERE id >= 2 ORDER BY id DESC",
    "UPDATE node SET parent = 1 WHERE id = 3",
    "INSERT INTO leaf VALUES (1, 3)",
    "UPDATE node SET name = 'renamed' WHERE id = 1",
]

# GR's own refusals: 3098 at COMMIT (writeset.derive), leaving no trace anywhere. Rows of tables
# the group refuses writes to are seeded by CREATE … SELECT (DDL: every member runs it).
CASCADE_CHILD = "CREATE TABLE c (id INT PRIMARY KEY, tid INT, FOREIGN KEY (tid) REFERENCES t (id) ON DELETE CASCADE)"
REFUSALS: list[tuple[str, list[str], str, int]] = [
    ("no-primary-key", ["CREATE TABLE nopk (a INT, b INT) ENGINE=InnoDB"],
     "INSERT INTO nopk VALUES (1, 1)", ER_BEFORE_DML_VALIDATION),
    ("no-primary-key-update", ["CREATE TABLE nopk (a INT, b INT) ENGINE=InnoDB SELECT 1 AS a, 1 AS b"],
     "UPDATE nopk SET b = 2", ER_BEFORE_DML_VALIDATION),
    ("myisam", ["CREATE TABLE m (id INT PRIMARY KEY, v INT) ENGINE=MyISAM SELECT 1 AS id, 1 AS v"],
     "UPDATE m SET v = 2 WHERE id = 1", ER_BEFORE_DML_VALIDATION),
    ("sequence-nextval", [T, "CREATE SEQUENCE s"], "INSERT INTO t (id) VALUES (NEXTVAL(s))", ER_NOT_SUPPORTED_YET),
    ("cascade-parent-delete", [T, T_ROWS, CASCADE_CHILD, "INSERT INTO c VALUES (1, 1)"],
     "DELETE FROM t WHERE id = 1", ER_BEFORE_DML_VALIDATION),
    ("cascade-parent-key-update",
     [T, T_ROWS, "CREATE TABLE c (id INT PRIMARY KEY, tu VARCHAR(10), FOREIGN KEY (tu) REFERENCES t (u) ON UPDATE CASCADE)"],
     "UPDATE t SET u = 'z' WHERE id = 1", ER_BEFORE_DML_VALIDATION),
    ("cascade-set-null", [T, T_ROWS, "CREATE TABLE c (id INT PRIMARY KEY, tid INT, FOREIGN KEY (tid) REFERENCES t (id) "
                                     "ON DELETE SET NULL)", "INSERT INTO c VALUES (1, 2)"],
     "DELETE FROM t WHERE id = 2", ER_BEFORE_DML_VALIDATION),
    ("replace-into-cascading-parent", [T, T_ROWS, CASCADE_CHILD, "INSERT INTO c VALUES (1, 1)"],
     "REPLACE INTO t VALUES (1, 'a', 11)", ER_BEFORE_DML_VALIDATION),
    ("multi-delete-of-cascading-parent", [T, T_ROWS, CASCADE_CHILD, "CREATE TABLE k (id INT PRIMARY KEY)",
                                          "INSERT INTO k VALUES (1)"],
     "DELETE t FROM t JOIN k ON t.id = k.id", ER_BEFORE_DML_VALIDATION),
    ("fk-to-non-unique-parent-index",
     [T, T_ROWS, "ALTER TABLE t ADD KEY kv (v)", "CREATE TABLE c (id INT PRIMARY KEY, tv INT, FOREIGN KEY (tv) REFERENCES t (v))"],
     "INSERT INTO c VALUES (1, 10)", ER_NOT_SUPPORTED_YET),
    ("system-versioned", ["CREATE TABLE sv (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING SELECT 1 AS id, 1 AS v"],
     "UPDATE sv SET v = 2 WHERE id = 1", ER_NOT_SUPPORTED_YET),
]
# Updates that only look like a cascading parent's: allowed.
NOT_CASCADING: list[tuple[str, list[str], str] | object] = [
    ("non-key-update-of-cascading-parent", [T, T_ROWS, CASCADE_CHILD, "INSERT INTO c VALUES (1, 1)"],
     "UPDATE t SET v = 0 WHERE id = 1"),
    ("delete-of-restrict-parent", [T, T_ROWS, "CREATE TABLE c (id INT PRIMARY KEY, tid INT, FOREIGN KEY (tid) REFERENCES t (id))"],
     "DELETE FROM t WHERE id = 2"),
    # Moving a parent's primary key fires ON UPDATE (RESTRICT here), not ON DELETE CASCADE,
    # though its row changes are a delete and an upsert.
    ("update-key-of-on-delete-cascade-parent", [T, T_ROWS, CASCADE_CHILD], "UPDATE t SET id = 7 WHERE id = 2"),
]


# --- the harness -----------------------------------------------------------------------------------


def _cases(rows: Sequence[object]) -> list[object]:
    """Table rows as pytest params named by their first field (marked ones are params already)."""
    return [r if hasattr(r, "marks") else pytest.param(*r, id=r[0]) for r in rows]  # type: ignore[misc]


@dataclasses.dataclass(frozen=True)
class Answer:
    """What one client saw: per result, (affected rows, insert id, warnings, rows) — or an errno."""

    results: tuple[tuple[int, int, int, tuple[tuple[object, ...], ...] | None], ...] = ()
    errno: int | None = None


@dataclasses.dataclass
class Outcome:
    member: Answer
    reference: Answer
    before: dict[str, object]
    state_a: dict[str, object]
    state_b: dict[str, object]
    state_ref: dict[str, object]
    group_rounds: int  # transactions the group certified for the statement


def _run(conn: pymysql.connections.Connection, statement: str, transaction: bool) -> Answer:
    out = []
    try:
        with conn.cursor() as cur:
            if transaction:
                cur.execute("BEGIN")
            cur.execute(statement)
            while True:
                r = conn._result  # noqa: SLF001 - PyMySQL keeps the OK packet's fields there
                rows = tuple(tuple(x) for x in cur.fetchall()) if cur.description else None
                out.append((r.affected_rows if rows is None else len(rows), r.insert_id, r.warning_count, rows))
                if not cur.nextset():
                    break
            if transaction:
                cur.execute("COMMIT")
    except pymysql.err.MySQLError as exc:
        if transaction:
            with conn.cursor() as cur:
                cur.execute("ROLLBACK")
        return Answer(tuple(out), exc.args[0])
    return Answer(tuple(out))


class Exactness:
    """Members A and B (member ports) and the reference server, as the module's tests use them."""

    def __init__(self, a: ServerHandle, b: ServerHandle, ref: ServerHandle, tmp: Path) -> None:
        reset_backends([a, b])
        self.a, self.b, self.ref, self.tmp = a, b, ref, tmp
        self.loop = LoopThread()
        self.group = PortGroup([a, b], single_primary=False)
        self.loop.run(self.group.start())
        c = self.connect(0)
        with c.cursor() as cur:
            cur.execute("SELECT @@auto_increment_increment, @@auto_increment_offset")
            inc, off = cur.fetchone()
        c.close()
        # The reference session numbers AUTO_INCREMENT rows as member A's sessions do.
        self.reference_session = [f"SET auto_increment_increment = {inc}, auto_increment_offset = {off}"]

    def close(self) -> None:
        self.loop.run(self.group.stop())
        self.loop.stop()

    def connect(self, i: int, *, database: str | None = None, charset: str = "latin1") -> pymysql.connections.Connection:
        return self.group.connect(i, database=database, charset=charset, init_command=SESSION_TZ, local_infile=True,
                                  client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS, read_timeout=60)

    def connect_reference(self, database: str | None = None, charset: str = "latin1") -> pymysql.connections.Connection:
        return pymysql.connect(host=self.ref.host, port=self.ref.port, user="root", password="", database=database,
                               charset=charset, autocommit=True, init_command=SESSION_TZ, local_infile=True,
                               client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS, read_timeout=60)

    def applied(self) -> int:
        return self.group.members[0].positions.applied.lwm

    def converge(self) -> None:
        self.loop.run(self.group.wait_converged())

    def reset(self, setup: Sequence[str]) -> None:
        """Database `cap` with `setup`, through member A's port and on the reference."""
        for conn, extra in ((self.connect(0, charset="utf8mb4"), ()),
                            (self.connect_reference(charset="utf8mb4"), self.reference_session)):
            with conn.cursor() as cur:
                for sql in extra:
                    cur.execute(sql)
                cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
                cur.execute(f"CREATE DATABASE `{DB}` CHARACTER SET utf8mb4")
                cur.execute(f"USE `{DB}`")
                for sql in setup:
                    cur.execute(sql)
            conn.close()
        self.converge()

    def scenario(self, setup: Sequence[str], statement: str, *, transaction: bool = False,
                 session: Sequence[str] = (), charset: str = "latin1") -> Outcome:
        self.reset(setup)
        before = table_state(self.a, DB)
        applied = self.applied()
        member = self.connect(0, database=DB, charset=charset)
        reference = self.connect_reference(DB, charset)
        try:
            for conn, extra in ((member, ()), (reference, self.reference_session)):
                with conn.cursor() as cur:
                    for sql in (*extra, *session):
                        cur.execute(sql)
            got = _run(member, statement, transaction)
            expected = _run(reference, statement, transaction)
        finally:
            member.close()
            reference.close()
        self.converge()
        return Outcome(got, expected, before, table_state(self.a, DB), table_state(self.b, DB),
                       table_state(self.ref, DB), self.applied() - applied)


@pytest.fixture(scope="module")
def ex(backend_factory: Callable[..., ServerHandle], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exactness]:
    harness = Exactness(backend_factory("exact_a"), backend_factory("exact_b"), backend_factory("exact_ref"),
                        tmp_path_factory.mktemp("exact"))
    yield harness
    harness.close()


def check(out: Outcome, name: str, deterministic: bool = True, *, answers: bool = True) -> None:
    """The checks of the module docstring, for a statement that is not refused (`answers`:
    compare what the clients saw too — not for DDL, whose answer tests/e2e/test_ddl.py covers)."""
    assert out.state_a == out.state_b, f"{name}: the members' backends differ"
    assert out.member.errno == out.reference.errno, f"{name}: {out.member} vs {out.reference}"
    assert len(out.member.results) == len(out.reference.results), name
    for got, expected in zip(out.member.results, out.reference.results) if answers else ():
        assert got[0] == expected[0], f"{name}: affected rows {got} vs {expected}"
        if deterministic:
            assert got == expected, name
    if deterministic:
        assert out.state_a == out.state_ref, f"{name}: the member's run differs from the reference's"
    changed = out.state_a != out.before
    if out.member.errno is None:
        if changed:
            assert out.group_rounds == 1, f"{name}: rows changed, {out.group_rounds} group rounds"
        elif name in CHANGES_NOTHING:  # (a REPLACE of an identical row still deletes and inserts it)
            assert out.group_rounds == 0, f"{name}: nothing changed, {out.group_rounds} group rounds"
    else:
        assert not changed and out.group_rounds == 0, f"{name}: the failed statement left a trace"


# --- every type, every statement kind --------------------------------------------------------------


@pytest.mark.parametrize("transaction", [False, True], ids=["autocommit", "transaction"])
@pytest.mark.parametrize(("name", "statement", "deterministic"), STATEMENTS, ids=[s[0] for s in STATEMENTS])
def test_statement_replicates_exactly(ex: Exactness, name: str, statement: str, deterministic: bool, transaction: bool) -> None:
    out = ex.scenario(SEED, statement, transaction=transaction)
    assert out.member.errno is None, f"{name}: {out.member}"
    check(out, name, deterministic)


@pytest.mark.parametrize(("name", "setup", "statement", "deterministic"), _cases(FORMERLY_REFUSED))
def test_what_capture_refused_replicates_exactly(ex: Exactness, name: str, setup: list[str], statement: str,
                                                 deterministic: bool) -> None:
    ddl = name == "create-select"
    out = ex.scenario(setup, statement, transaction=not ddl)
    check(out, name, deterministic, answers=not ddl)


def test_load_data_local_replicates_exactly(ex: Exactness) -> None:
    data = ex.tmp / "rows.csv"
    data.write_bytes(b"3,c,30\n4,d\\,e,40\n5,\\N,50\n")
    out = ex.scenario([T, T_ROWS], f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE t FIELDS TERMINATED BY ','")
    check(out, "load-data-local")
    assert len(out.state_a["t"][1]) == 5  # type: ignore[index]


@pytest.mark.parametrize(("name", "setup", "statement", "deterministic", "session"), SESSIONS, ids=[s[0] for s in SESSIONS])
def test_session_settings_replicate_exactly(ex: Exactness, name: str, setup: list[str], statement: str,
                                            deterministic: bool, session: list[str]) -> None:
    out = ex.scenario(setup, statement, session=session)
    assert out.member.errno is None, f"{name}: {out.member}"
    check(out, name, deterministic)


def test_backend_errors_pass_through_without_trace(ex: Exactness) -> None:
    for statement, errno in [("INSERT INTO t VALUES (3, 'c', 1), (1, 'z', 1)", 1062), ("UPDATE nosuch SET v = 1", 1146),
                             ("INSERT INTO t VALUES (3, 'b', 1)", 1062)]:
        for transaction in (False, True):
            out = ex.scenario([T, T_ROWS], statement, transaction=transaction)
            assert out.member.errno == errno, (statement, out.member)
            check(out, statement)


@pytest.mark.parametrize("statement", FK_STATEMENTS)
def test_foreign_keys_apply_in_order(ex: Exactness, statement: str) -> None:
    out = ex.scenario(FK_SETUP, statement, transaction=True)
    assert out.member.errno is None, out.member
    check(out, statement)


def test_utf8mb4_client_and_collated_keys(ex: Exactness) -> None:
    setup = ["CREATE TABLE s (k VARCHAR(20) PRIMARY KEY, v VARCHAR(20)) CHARACTER SET utf8mb4"]
    out = ex.scenario(setup, "INSERT INTO s VALUES ('ключ😀', 'знач'), ('b\\'q', 'x')", charset="utf8mb4")
    check(out, "utf8mb4 insert")
    out = ex.scenario(setup + ["INSERT INTO s VALUES ('ключ😀', 'a')"], "UPDATE s SET v = 'новое' WHERE k = 'КЛЮЧ😀'",
                      charset="utf8mb4")
    check(out, "utf8mb4 update through the collation")
    assert out.group_rounds == 1


def test_temporary_table_writes_are_not_replicated(ex: Exactness) -> None:
    out = ex.scenario([T, T_ROWS], "CREATE TEMPORARY TABLE t (id INT PRIMARY KEY, u VARCHAR(10), v INT); "
                                   "INSERT INTO t VALUES (3, 'c', 30)")
    check(out, "temporary")
    assert out.state_a == out.before and out.group_rounds == 0  # the base table is untouched


# --- server-side prepared writes: parameters in the binary protocol ---------------------------------

PREPARED_TABLE = (
    "CREATE TABLE p (id INT PRIMARY KEY, i64 BIGINT, u64 BIGINT UNSIGNED, dc DECIMAL(65,30), f FLOAT, d DOUBLE, "
    "dt DATE, tm TIME(6), dtt DATETIME(6), ts TIMESTAMP(6) NULL, vc VARCHAR(40) CHARACTER SET utf8mb4, "
    "bl BLOB, j JSON, bt BIT(13), e ENUM('a','b'))"
)
# (name, statement, parameters): what the member's prepared writes carried as literals before,
# now executed as prepared on the member's backend; every value must replicate as stored.
PREPARED: list[tuple[str, str, tuple[object, ...]]] = [
    ("integer-limits", "INSERT INTO p (id, i64, u64) VALUES (?, ?, ?)", (1, -9223372036854775808, 18446744073709551615)),
    ("decimal-extreme", "INSERT INTO p (id, dc) VALUES (?, ?)",
     (1, decimal.Decimal("-99999999999999999999999999999999999.999999999999999999999999999999"))),
    ("double", "INSERT INTO p (id, d, f) VALUES (?, ?, ?)", (1, 0.1 + 0.2, 1.00000012)),
    ("double-extremes", "INSERT INTO p (id, d, f) VALUES (?, ?, ?)", (1, 1.7976931348623157e308, -3.4028234e38)),
    ("date", "INSERT INTO p (id, dt) VALUES (?, ?)", (1, datetime.date(1000, 1, 1))),
    ("time-negative-fraction", "INSERT INTO p (id, tm) VALUES (?, ?)", (1, datetime.timedelta(hours=-5, microseconds=7))),
    ("datetime-fraction", "INSERT INTO p (id, dtt) VALUES (?, ?)", (1, datetime.datetime(2024, 2, 29, 23, 59, 58, 123456))),
    ("timestamp-in-session-zone", "INSERT INTO p (id, ts) VALUES (?, ?)", (1, datetime.datetime(2024, 3, 10, 2, 30, 0, 500000))),
    ("bytes-with-zeros", "INSERT INTO p (id, bl) VALUES (?, ?)", (1, b"\x00\x01\xff\x00")),
    ("utf8mb4-text", "INSERT INTO p (id, vc) VALUES (?, ?)", (1, "😀 ünï")),
    ("nulls", "INSERT INTO p (id, i64, dc, vc, bl) VALUES (?, ?, ?, ?, ?)", (1, None, None, None, None)),
    ("json-text", "INSERT INTO p (id, j) VALUES (?, ?)", (1, '{"a": [1, 2.5, "x"], "b": null}')),
    ("bit-and-enum-as-integers", "INSERT INTO p (id, bt, e) VALUES (?, ?, ?)", (1, 4095, 2)),
    ("update-by-parameters", "UPDATE p SET vc = CONCAT(vc, ?), d = d * ? WHERE id = ?", ("+", 1.5, 7)),
    ("delete-by-parameter", "DELETE FROM p WHERE id = ?", (7,)),
]


@pytest.mark.parametrize(("name", "statement", "params"), _cases(PREPARED))
def test_prepared_writes_replicate_exactly(ex: Exactness, name: str, statement: str, params: tuple[object, ...]) -> None:
    import mysql.connector

    ex.reset([PREPARED_TABLE, "INSERT INTO p (id, vc, d) VALUES (7, 'seven', 2.5)"])
    before = table_state(ex.a, DB)
    applied = ex.applied()
    answers = []
    for port in (ex.group.servers[0].port, ex.ref.port):
        conn = mysql.connector.connect(host="127.0.0.1", port=port, user="root", password="", database=DB,
                                       collation="utf8mb4_general_ci", use_pure=True, autocommit=True)
        try:
            text = conn.cursor()
            text.execute(SESSION_TZ)
            text.close()
            cur = conn.cursor(prepared=True)
            cur.execute(statement, params)
            answers.append(cur.rowcount)
            cur.close()
        finally:
            conn.close()
    ex.converge()
    state_a, state_b, state_ref = table_state(ex.a, DB), table_state(ex.b, DB), table_state(ex.ref, DB)
    assert answers[0] == answers[1] == 1, (name, answers)
    assert state_a == state_b == state_ref, name
    assert state_a != before and ex.applied() - applied == 1, name


# --- GR's refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transaction", [False, True], ids=["autocommit", "transaction"])
@pytest.mark.parametrize(("name", "setup", "statement", "errno"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_at_commit_without_trace(ex: Exactness, name: str, setup: list[str], statement: str, errno: int,
                                         transaction: bool) -> None:
    out = ex.scenario(setup, statement, transaction=transaction)
    assert out.member.errno == errno, f"{name}: {out.member}"
    if transaction:
        # The statement itself ran and its COMMIT was refused — except a write to a table that
        # is not transactional, or to a sequence: it would take effect at once, so it is
        # refused before it runs.
        assert len(out.member.results) == (0 if name in ("myisam", "sequence-nextval") else 1), out.member
    assert out.reference.errno is None  # a plain server takes it
    assert out.state_a == out.before and out.state_b == out.before, f"{name} left a trace"
    assert out.group_rounds == 0


@pytest.mark.parametrize(("name", "setup", "statement"), _cases(NOT_CASCADING))
def test_parents_without_a_fired_cascade_replicate(ex: Exactness, name: str, setup: list[str], statement: str) -> None:
    out = ex.scenario(setup, statement, transaction=True)
    assert out.member.errno is None, f"{name}: {out.member}"
    check(out, name)


def test_table_without_primary_key_refused_in_a_transaction_with_other_writes(ex: Exactness) -> None:
    """One unfit table refuses the whole transaction: the fit table's rows go too."""
    out = ex.scenario([T, T_ROWS, "CREATE TABLE nopk (a INT)"],
                      "UPDATE t SET v = 0 WHERE id = 1; INSERT INTO nopk VALUES (1)", transaction=True)
    assert out.member.errno == ER_BEFORE_DML_VALIDATION, out.member
    assert out.state_a == out.before == out.state_b and out.group_rounds == 0


def test_transaction_size_limit_is_3100(ex: Exactness) -> None:
    c = ex.connect(0)
    with c.cursor() as cur:
        cur.execute("SET GLOBAL group_replication_transaction_size_limit = 1000")
    try:
        out = ex.scenario([T, T_ROWS], "INSERT INTO t VALUES (3, REPEAT('x', 10), 1), (4, 'y', 2)")
        assert out.member.errno is None  # small
        out = ex.scenario([T, "CREATE TABLE big (id INT PRIMARY KEY, b BLOB)"], "INSERT INTO big VALUES (1, REPEAT('x', 5000))")
        assert out.member.errno == 3100, out.member
        assert out.state_a == out.before == out.state_b and out.group_rounds == 0
    finally:
        with c.cursor() as cur:
            cur.execute("SET GLOBAL group_replication_transaction_size_limit = 150000000")
        c.close()


# --- concurrency -------------------------------------------------------------------------------------

CONCURRENT_SETUP = [
    "CREATE TABLE counter (name VARCHAR(10) PRIMARY KEY, n BIGINT NOT NULL, touched TIMESTAMP(6) NOT NULL "
    "DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
    "CREATE TABLE event (id BIGINT AUTO_INCREMENT PRIMARY KEY, session INT, body VARCHAR(40), at DATETIME(6))",
    "CREATE TABLE slot (id INT PRIMARY KEY, owner INT, v DOUBLE)",
    "INSERT INTO counter (name, n) VALUES ('a', 0), ('b', 0)",
    "INSERT INTO slot VALUES (1, 0, 0), (2, 0, 0), (3, 0, 0)",
]
SESSIONS_PER_MEMBER = 3
TRANSACTIONS_PER_SESSION = 10


def _transaction(rng: random.Random, session: int) -> list[str]:
    out = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(5)
        if kind == 0:
            rows = ", ".join(f"({session}, UUID(), NOW(6))" for _ in range(rng.randint(1, 4)))
            out.append(f"INSERT INTO event (session, body, at) VALUES {rows}")
        elif kind == 1:
            out.append(f"INSERT INTO counter (name, n) VALUES ('{rng.choice('abc')}', 1) ON DUPLICATE KEY UPDATE n = n + 1")
        elif kind == 2:
            out.append(f"UPDATE slot SET owner = {session}, v = v + RAND() WHERE id = {rng.randint(1, 3)}")
        elif kind == 3:
            out.append(f"DELETE FROM slot WHERE owner = {session} ORDER BY id LIMIT 1")
        else:
            out.append(f"INSERT IGNORE INTO slot VALUES ({rng.randint(1, 4)}, {session}, 0)")
    return out


def test_concurrent_sessions_on_both_members_converge(ex: Exactness) -> None:
    """Sessions on both members contend on the same rows (counters, deleted and re-inserted
    rows, interleaved AUTO_INCREMENT inserts): conflicts are 3101 (retried), deadlocks 1213
    (retried); whatever commits, both backends end identical."""
    ex.reset(CONCURRENT_SETUP)
    counts = {"committed": 0, "3101": 0, "1213": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def session(member: int, index: int) -> None:
        rng = random.Random(index)
        conn = ex.connect(member, database=DB)
        try:
            for _ in range(TRANSACTIONS_PER_SESSION):
                statements = _transaction(rng, index)
                while True:
                    try:
                        with conn.cursor() as cur:
                            cur.execute("BEGIN")
                            for sql in statements:
                                cur.execute(sql)
                            cur.execute("COMMIT")
                        key = "committed"
                    except pymysql.err.MySQLError as exc:
                        if exc.args[0] not in (ER_TRANSACTION_ROLLBACK_DURING_COMMIT, 1213):
                            raise
                        with conn.cursor() as cur:
                            cur.execute("ROLLBACK")
                        key = str(exc.args[0])
                    with lock:
                        counts[key] += 1
                    if key == "committed":
                        break
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=session, args=(m, m * 10 + i)) for m in (0, 1) for i in range(SESSIONS_PER_MEMBER)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert counts["committed"] == 2 * SESSIONS_PER_MEMBER * TRANSACTIONS_PER_SESSION, counts
    ex.converge()
    a, b = table_state(ex.a, DB), table_state(ex.b, DB)
    assert a == b, counts
    assert len(a["event"][1]) > SESSIONS_PER_MEMBER  # type: ignore[index]
    print("concurrent outcomes:", counts)
