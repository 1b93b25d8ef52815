"""Capture on backend A, apply on backend B: the tables must end identical, bit for bit.

Every statement kind capture handles runs against a table holding every column type (signed and
unsigned integers at their limits, DECIMAL(65,30), FLOAT, DOUBLE, temporal types, TIMESTAMP(6)
under a +05:30 session, YEAR, utf8mb4 text with emoji through a latin1 client, binary strings
with zero bytes, ENUM, SET, BIT(13), JSON, GEOMETRY, NULLs, generated columns). For each:

* CHECKSUM TABLE and every row (hex) are equal on A and B after applying the captured changes;
* the client result (affected rows, insert id, warnings) equals running the same statement
  directly, without capture, on a third copy of the tables (database `ref`);
* for deterministic statements the captured database also equals that third copy (the rewrite
  capture runs changed nothing the client can see);
* the round trips capture added are what the plan promised.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from grproxy.mysqld import ServerHandle
from test_capture_support import DB, Pair

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

# (name, statement, deterministic: the captured database must equal the reference run,
#  round trips capture adds to the statement's own with a warm catalog)
STATEMENTS: list[tuple[str, str, bool, int]] = [
    ("insert-values", f"INSERT INTO wide ({COLS}) VALUES {row(FULL, 20, repr('k20'))}, {row(NULLS, 21)}", True, 0),
    ("insert-auto", f"INSERT INTO wide ({COLS}) VALUES {row(FULL, 'NULL', repr('a1'))}, {row(OTHER, 0, 'NULL')}, {row(NULLS, 'DEFAULT')}", True, 0),
    ("insert-set", "INSERT INTO wide SET k = 'set1', vc = " + EMOJI + ", bn = X'00', ts = '2030-01-01 00:00:00.5', j = '{}'", True, 0),
    ("insert-computed-key", f"INSERT INTO wide (id, k, vc, ts) VALUES (100 + FLOOR(RAND() * 1000), UUID(), CONCAT('r', RAND()), NOW(6))", False, 1),
    ("insert-select", f"INSERT INTO wide ({COLS}) SELECT id + 100, CONCAT(k, 'x'), i8, u8, i64, u64, dc, f, d, dt, tm, dtt, ts, y, c, vc, l1, bn, vb, bl, tx, e, st, bt, j, g FROM src", True, 1),
    ("insert-select-self", "INSERT INTO wide (id, k, i64, dc, f, d, ts, vc, bl, g) SELECT id + 1000, NULL, i64 DIV 2, dc, f, d, ts, vc, bl, g FROM wide WHERE id < 4", True, 1),
    ("insert-ignore", f"INSERT IGNORE INTO wide ({COLS}) VALUES {row(OTHER, 1, repr('dup'))}, {row(OTHER, 30, repr('k2'))}, {row(FULL, 31, repr('new31'))}", True, 0),
    ("insert-ignore-all-dup", "INSERT IGNORE INTO wide (k, vc) VALUES ('k1', 'z'), ('k2', 'z')", True, 0),
    ("odku", f"INSERT INTO wide ({COLS}) VALUES {row(OTHER, 1, repr('q'))}, {row(OTHER, 40, repr('k2'))}, {row(FULL, 41, repr('new41'))} "
             "ON DUPLICATE KEY UPDATE i8 = VALUES(i8) - 1, vc = CONCAT(vc, '+'), ts = NOW(6)", False, 0),
    ("odku-counter", "INSERT INTO wide (k, i64) VALUES ('k4', 1) ON DUPLICATE KEY UPDATE i64 = i64 + 1", True, 0),
    ("odku-counter-new", "INSERT INTO wide (k, i64) VALUES ('fresh', 1) ON DUPLICATE KEY UPDATE i64 = i64 + 1", True, 0),
    ("odku-assigns-unique", "INSERT INTO wide (id, k) VALUES (2, 'zz') ON DUPLICATE KEY UPDATE k = CONCAT(k, '-moved')", True, 1),
    ("replace", f"REPLACE INTO wide ({COLS}) VALUES {row(OTHER, 1, repr('k4'))}, {row(FULL, 50, repr('k50'))}", True, 0),
    ("replace-same", f"REPLACE INTO wide ({COLS}) VALUES {row(FULL, 1, repr('k1'))}", True, 0),
    ("update-by-key", "UPDATE wide SET i8 = i8 + 1, vc = CONCAT(vc, 'x'), ts = ts + INTERVAL 1 SECOND WHERE id = 1", True, 0),
    ("update-by-keys-in", "UPDATE wide SET f = f / 3, d = d / 3, bt = bt + 1 WHERE id IN (1, 2, 3, 99)", True, 0),
    ("update-where-order-limit", "UPDATE wide SET c = 'upd', st = 'y', e = 'c' WHERE id > 1 ORDER BY id DESC LIMIT 2", True, 1),
    ("update-nondeterministic", "UPDATE wide SET k = UUID(), d = RAND(), ts = NOW(6), dtt = NOW(6) WHERE id <= 3", False, 1),
    ("update-pk", "UPDATE wide SET id = id + 1000 WHERE id < 3 ORDER BY id DESC", True, 1),
    ("update-nothing", "UPDATE wide SET i8 = 1 WHERE id > 999", True, 0),
    ("update-unchanged", "UPDATE wide SET i8 = i8 WHERE id IN (1, 2)", True, 0),
    ("delete-by-key", "DELETE FROM wide WHERE id = 2", True, 0),
    ("delete-order-limit", "DELETE FROM wide WHERE y IS NOT NULL ORDER BY id DESC LIMIT 2", True, 1),
    ("delete-all", "DELETE FROM wide", True, 1),
    ("multi-update", "UPDATE wide JOIN src ON wide.id = src.id SET wide.vc = src.vc, src.i8 = 5, wide.ts = NOW(6) WHERE src.id < 20", False, 1),
    ("multi-update-comma", "UPDATE wide w, src s SET w.tx = 'joined' WHERE w.k = 'k1' AND s.id = 10", True, 1),
    ("multi-delete", "DELETE wide, src FROM wide JOIN src ON wide.id = src.id", True, 1),
    ("multi-delete-using", "DELETE FROM w USING wide AS w JOIN src ON w.id + 6 = src.id", True, 1),
    ("insert-select-odku", "INSERT INTO wide (id, k, i8, vc) SELECT id, CONCAT('s', id), i8, vc FROM src "
                           "ON DUPLICATE KEY UPDATE i8 = VALUES(i8), vc = 'dup'", True, 1),
    ("insert-select-union", "INSERT INTO wide (id, k) SELECT 200, 'u1' UNION ALL SELECT 201, 'u2'", True, 1),
    ("insert-select-empty", "INSERT INTO wide (id) SELECT id FROM src WHERE id > 1000", True, 0),  # no INSERT to run
    ("insert-ignore-select", "INSERT IGNORE INTO wide (id, k) SELECT id, k FROM src", True, 1),
    ("update-ignore-duplicate", "UPDATE IGNORE wide SET k = IF(id = 2, 'k1', 'fresh') WHERE id IN (2, 3)", True, 1),
    ("delete-ignore", "DELETE IGNORE FROM wide WHERE i8 < 0", True, 1),
    ("update-string-literal-key", "UPDATE wide SET i8 = 7 WHERE id = '1'", True, 0),
    ("replace-set-two-conflicts", "REPLACE wide SET id = 3, k = 'k2', vc = 'both'", True, 0),
    ("insert-expression-values", "INSERT INTO wide (id, k, dc, d, ts, bl) VALUES (60, 'e', 1/3, PI(), '2020-02-29 12:00:00', REPEAT(X'00', 3))", True, 0),
]
@pytest.fixture(scope="module")
def pair(backend_factory: Callable[..., ServerHandle]) -> Pair:
    return Pair(backend_factory("capture_a"), backend_factory("capture_b"))


@pytest.mark.parametrize(("name", "statement", "deterministic", "extra"), STATEMENTS, ids=[s[0] for s in STATEMENTS])
def test_statement_replicates_exactly(pair: Pair, name: str, statement: str, deterministic: bool, extra: int) -> None:
    out = pair.scenario(SEED, statement)
    assert out.error is None, f"{name}: capture failed: {out.error!r}"
    assert out.result is not None
    assert out.state_a == out.state_b, f"{name}: backends differ after apply"
    reference = out.reference
    assert not isinstance(reference, BaseException), reference
    affected, insert_id, warnings = reference
    assert out.result.affected_rows == affected, name
    if deterministic:
        assert out.result.last_insert_id == insert_id, name
        assert out.result.warnings == warnings, name
        assert out.state_a == out.state_ref, f"{name}: the captured run differs from the direct run"
    # The statement's own round trip, catalog loads (a cold catalog here), and what capture adds.
    assert out.result.round_trips - out.catalog_round_trips - 1 == extra, name
    if out.state_a != out.before_a:
        assert out.changes, f"{name}: rows changed but nothing was captured"
    else:
        assert not out.changes, f"{name}: nothing changed but {len(out.changes)} changes were captured"
