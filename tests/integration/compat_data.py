"""The column types the compatibility suite sends through the proxy, and their edge values."""

from __future__ import annotations

import datetime
import decimal

TYPES_DDL = """
CREATE TABLE {table} (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED,
  si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED,
  zf INT(5) UNSIGNED ZEROFILL,
  dec65 DECIMAL(65,30), dec10 DECIMAL(10,2) NOT NULL DEFAULT 0,
  f FLOAT, d DOUBLE,
  dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, yr YEAR,
  ch CHAR(10), vc VARCHAR(255), tx TEXT, ltx LONGTEXT,
  ch_latin1 VARCHAR(20) CHARACTER SET latin1,
  bn BINARY(8), vb VARBINARY(64), bl BLOB, lbl LONGBLOB,
  en ENUM('a','b','c'), st SET('x','y','z'),
  bt BIT(12), bt64 BIT(64),
  js JSON,
  geo GEOMETRY, pt POINT,
  nul INT NULL
) CHARACTER SET utf8mb4
"""

COLUMNS = (
    "ti tiu si siu mi miu i iu bi biu zf dec65 dec10 f d dt tm dtm ts yr ch vc tx ltx ch_latin1 "
    "bn vb bl lbl en st bt bt64 js geo pt nul"
).split()

# SQL literals per row: minimums, maximums, a typical row with emoji and zero bytes, all NULL.
# Geometry goes through ST_GeomFromText so the stored value is WKB with an SRID prefix.
_MAX_DEC = "9" * 35 + "." + "9" * 30
ROW_LITERALS = [
    {
        "ti": "-128", "tiu": "0", "si": "-32768", "siu": "0", "mi": "-8388608", "miu": "0",
        "i": "-2147483648", "iu": "0", "bi": "-9223372036854775808", "biu": "0", "zf": "0",
        "dec65": "-" + _MAX_DEC, "dec10": "-99999999.99", "f": "-3.40282e38",
        "d": "-1.7976931348623157e308", "dt": "'1000-01-01'", "tm": "'-838:59:59.000000'",
        "dtm": "'1000-01-01 00:00:00.000000'", "ts": "'1970-01-02 00:00:00.000001'", "yr": "1901",
        "ch": "''", "vc": "''", "tx": "''", "ltx": "''", "ch_latin1": "''",
        "bn": "X'0000000000000000'", "vb": "X''", "bl": "X''", "lbl": "X''",
        "en": "'a'", "st": "''", "bt": "b'0'", "bt64": "b'0'", "js": "'[]'",
        "geo": "ST_GeomFromText('POINT(0 0)')", "pt": "POINT(0, 0)", "nul": "NULL",
    },
    {
        "ti": "127", "tiu": "255", "si": "32767", "siu": "65535", "mi": "8388607", "miu": "16777215",
        "i": "2147483647", "iu": "4294967295", "bi": "9223372036854775807",
        "biu": "18446744073709551615", "zf": "42",
        "dec65": _MAX_DEC, "dec10": "99999999.99", "f": "3.40282e38", "d": "1.7976931348623157e308",
        "dt": "'9999-12-31'", "tm": "'838:59:59.000000'", "dtm": "'9999-12-31 23:59:59.999999'",
        "ts": "'2038-01-18 03:14:07.999999'", "yr": "2155",
        "ch": "'0123456789'", "vc": "REPEAT('é', 255)", "tx": "REPEAT('x', 65535)",
        "ltx": "REPEAT('😀', 100000)", "ch_latin1": "'Ünïcödé'",
        "bn": "X'FFFFFFFFFFFFFFFF'", "vb": "REPEAT(X'FF', 64)", "bl": "REPEAT(X'00FF', 32767)",
        "lbl": "REPEAT(X'00', 70000)", "en": "'c'", "st": "'x,y,z'", "bt": "b'111111111111'",
        "bt64": "b'1111111111111111111111111111111111111111111111111111111111111111'",
        "js": "'{\"k\": [1, 2.5, \"\\\\u00e9\", null, true, {\"n\": {}}]}'",
        "geo": "ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0),(2 2,3 2,3 3,2 2))')",
        "pt": "POINT(-1.5e300, 2.25)", "nul": "NULL",
    },
    {
        "ti": "-1", "tiu": "1", "si": "-1", "siu": "1", "mi": "-1", "miu": "1", "i": "-1", "iu": "1",
        "bi": "-1", "biu": "9223372036854775808", "zf": "7",
        "dec65": "'0.000000000000000000000000000001'", "dec10": "'0.05'", "f": "3.14159",
        "d": "2.2250738585072014e-308", "dt": "'0000-00-00'", "tm": "'-00:00:00.000001'",
        "dtm": "'2024-02-29 12:34:56.789012'", "ts": "'2001-02-03 04:05:06.123456'", "yr": "0",
        "ch": "'héllo'", "vc": "'😀 emoji ✓ 中文 \\\\ \\' \"'", "tx": "'line1\\nline2\\ttab\\0nul'",
        "ltx": "'ünïcode'", "ch_latin1": "'café'",
        "bn": "X'0001000200030000'", "vb": "X'000000FFFE00'", "bl": "X'00'", "lbl": "X'0A0D5C2700'",
        "en": "'b'", "st": "'x,z'", "bt": "b'101'", "bt64": "b'1000000000000000000000000000000000000000000000000000000000000001'",
        "js": "'{\"emoji\": \"😀\", \"nested\": {\"a\": [1, {\"b\": null}]}}'",
        "geo": "ST_GeomFromText('LINESTRING(0 0,1 1,2 1)')", "pt": "POINT(1, 2)", "nul": "NULL",
    },
    {column: "NULL" for column in COLUMNS} | {"dec10": "0"},
]


def insert_statement(table: str) -> str:
    rows = []
    for literals in ROW_LITERALS:
        rows.append("(" + ", ".join(literals[c] for c in COLUMNS) + ")")
    return f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES\n" + ",\n".join(rows)


# Parameters a client binds (text-protocol escaping in PyMySQL, binary protocol in
# mysql-connector's prepared cursor). Only the columns a driver can send as a plain value.
PARAM_COLUMNS = "ti tiu si siu mi miu i iu bi biu dec65 dec10 f d dt tm dtm ts yr ch vc tx bn vb bl en st js nul".split()
PARAM_ROWS = [
    (
        -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
        -9223372036854775808, 18446744073709551615,
        decimal.Decimal("-" + _MAX_DEC), decimal.Decimal("12345678.90"), 1.5, -1.7976931348623157e308,
        datetime.date(1000, 1, 1), datetime.timedelta(hours=-838, minutes=-59, seconds=-59),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999), datetime.datetime(2001, 2, 3, 4, 5, 6, 123456),
        2155, "héllo", "😀 emoji ✓ 中文 \\ ' \"", "x" * 60000,
        b"\x00\x01\x00\x02\x00\x03\x00\x00", b"\x00\x00\x00\xff\xfe\x00", bytes(range(256)) * 200,
        "b", "x,z", '{"emoji": "😀"}', None,
    ),
    (
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        decimal.Decimal("0.000000000000000000000000000001"), decimal.Decimal("-0.05"), -0.0, 2.5e-300,
        datetime.date(2024, 2, 29), datetime.timedelta(microseconds=1),
        datetime.datetime(2024, 2, 29, 12, 34, 56, 789012), datetime.datetime(1970, 1, 2, 0, 0, 0, 1),
        1901, "", "", "",
        b"", b"", b"", "a", "", "[]", None,
    ),
]
