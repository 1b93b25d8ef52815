"""The `mariadb` (or `mysql`) command-line client in batch mode through grproxy: its output
(stdout, stderr, exit code) must be what the same command prints against the backend."""

from __future__ import annotations

import difflib
import hashlib
import re
import subprocess
from typing import Any

import pymysql
import pytest

from compat_data import TYPES_DDL, insert_statement
from compat_support import Target, env_without_proxy_settings
from grproxy.mysqld import find_client_binary

pytestmark = pytest.mark.timeout(120)

CLI_TIMEOUT_S = 60
TABLE = "cli_types"


@pytest.fixture(scope="module")
def cli() -> str:
    # No skip: the project installs the client (`make test`); find_client_binary says how.
    return str(find_client_binary())


@pytest.fixture(scope="module")
def cli_tables(backend: Any, database: str) -> str:
    conn = pymysql.connect(host=backend.host, port=backend.port, user="root", password="", database=database, charset="utf8mb4", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cur.execute(TYPES_DDL.format(table=TABLE))
            cur.execute(insert_statement(TABLE))
            cur.execute("DROP PROCEDURE IF EXISTS cli_two_results")
            cur.execute("CREATE PROCEDURE cli_two_results() BEGIN SELECT 1 AS a; SELECT 'two' AS b, NULL AS c; END")
    finally:
        conn.close()
    return TABLE


def run_cli(cli: str, t: Target, *args: str, stdin: str | None = None, password: str | None = None, user: str | None = None) -> tuple[int, str, str]:
    cmd = [
        cli,
        "--no-defaults",
        "--protocol=TCP",
        f"-h{t.host}",
        f"-P{t.port}",
        f"-u{user or t.user}",
        "--batch",
        "--default-character-set=utf8mb4",
    ]
    pw = t.password if password is None else password
    if pw:
        cmd.append(f"-p{pw}")
    cmd += list(args)
    proc = subprocess.run(
        cmd,
        input=stdin.encode() if stdin is not None else None,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=CLI_TIMEOUT_S,
        env=env_without_proxy_settings(),
        check=False,
    )
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def _both(cli: str, target: Target, direct: Target, *args: str, **kwargs: Any) -> tuple[Any, Any]:
    observed, reference = run_cli(cli, target, *args, **kwargs), run_cli(cli, direct, *args, **kwargs)
    assert_same_output(observed, reference)
    return observed, reference


def assert_same_output(observed: tuple[int, str, str], reference: tuple[int, str, str]) -> None:
    """Equal, or fail with a readable diff of what differs."""
    if observed == reference:
        return
    parts = [f"exit code {observed[0]} (direct: {reference[0]})"]
    for name, got, want in (("stdout", observed[1], reference[1]), ("stderr", observed[2], reference[2])):
        if got != want:
            diff = difflib.unified_diff(want.splitlines(), got.splitlines(), "direct", "through target", lineterm="", n=2)
            parts.append(f"{name} differs:\n" + "\n".join(list(diff)[:80]))
    raise AssertionError("\n".join(parts))


@pytest.mark.parametrize(
    "options",
    [[], ["--raw"], ["--column-type-info", "--table"], ["--vertical"], ["--xml"], ["--html"], ["--skip-column-names"]],
    ids=["batch", "raw", "column_type_info", "vertical", "xml", "html", "skip_column_names"],
)
def test_select_every_type(cli: str, target: Target, direct: Target, cli_tables: str, options: list[str]) -> None:
    sql = f"SELECT * FROM {cli_tables} ORDER BY id"
    observed, reference = _both(cli, target, direct, target.database, *options, "-e", sql)
    assert observed == reference
    code, out, err = observed
    assert code == 0 and err == ""
    assert "18446744073709551615" in out and "😀 emoji" in out
    if "--column-type-info" in options:  # (printed with table output only)
        assert "Field   2:  `ti`" in out and "Flags:      UNSIGNED NUM" in out


def test_computed_columns_type_info(cli: str, target: Target, direct: Target) -> None:
    sql = (
        "SELECT NULL AS n, 18446744073709551615 AS u, -1.5e300 AS d, CAST(1 AS DECIMAL(65,30)) AS dec65, "
        "_binary X'00FF' AS b, 'é😀' AS s, NOW(6) - NOW(6) AS zero, CAST('12:00:00.5' AS TIME(3)) AS t, "
        "JSON_ARRAY(1, 'a') AS j, b'1010' AS bits, ST_AsText(POINT(1, 2)) AS p"
    )
    observed, reference = _both(cli, target, direct, target.database, "--column-type-info", "--table", "-e", sql)
    assert observed == reference
    assert observed[0] == 0 and "Collation:  binary" in observed[1]


def test_warnings_and_errors(cli: str, target: Target, direct: Target) -> None:
    observed, reference = _both(cli, target, direct, target.database, "--show-warnings", "-e", "SELECT 1/0 AS q; SELECT CAST('x1' AS SIGNED) AS c")
    assert observed == reference
    assert observed[0] == 0
    assert "Warning (Code 1365): Division by 0" in observed[2] + observed[1]

    observed, reference = _both(cli, target, direct, target.database, "-e", "SELECT 1; SELECT * FROM no_such_table; SELECT 2")
    assert observed == reference
    code, out, err = observed
    assert code == 1
    assert err.strip().endswith(f"ERROR 1146 (42S02) at line 1: Table '{target.database}.no_such_table' doesn't exist")
    assert out == "1\n1\n"  # stops at the error

    observed, reference = _both(cli, target, direct, target.database, "--force", stdin="SELEC 1;\nSELECT 'after' AS a;\n")
    assert observed == reference
    assert "ERROR 1064 (42000)" in observed[2] and "after" in observed[1]  # --force went on


SCRIPT = """
DROP TABLE IF EXISTS script_{tag};
CREATE TABLE script_{tag} (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20)) CHARACTER SET utf8mb4;
INSERT INTO script_{tag} (v) VALUES ('a'), ('b😀'), (NULL);
SELECT ROW_COUNT(), LAST_INSERT_ID();
BEGIN;
UPDATE script_{tag} SET v = 'changed' WHERE id = 1;
SELECT @@in_transaction;
ROLLBACK;
SELECT * FROM script_{tag} ORDER BY id;
SET @x = 41;
SELECT @x + 1 AS answer;
CALL cli_two_results();
DELIMITER //
CREATE OR REPLACE FUNCTION twice_{tag}(n INT) RETURNS INT DETERMINISTIC BEGIN RETURN n * 2; END//
DELIMITER ;
SELECT twice_{tag}(21);
USE mysql;
SELECT DATABASE();
USE {database};
SELECT COUNT(*) FROM script_{tag};
DROP FUNCTION twice_{tag};
DROP TABLE script_{tag};
"""


def test_script_on_stdin(cli: str, target: Target, direct: Target, cli_tables: str) -> None:
    """A script piped in: transactions, a procedure with two result sets, DELIMITER, USE."""

    def run(t: Target) -> Any:
        tag = t.name[:3]
        code, out, err = run_cli(cli, t, t.database, stdin=SCRIPT.format(tag=tag, database=t.database))
        return code, out.replace(f"_{tag}", "_T"), err.replace(f"_{tag}", "_T")

    observed, reference = run(target), run(direct)
    assert observed == reference
    code, out, err = observed
    assert (code, err) == (0, "")
    assert "ROW_COUNT()\tLAST_INSERT_ID()\n3\t1\n" in out
    assert "a\n1\n" in out and "b\tc\ntwo\tNULL\n" in out  # both result sets of the CALL
    assert "answer\n42\n" in out and "twice_T(21)\n42\n" in out


def test_large_output(cli: str, target: Target, direct: Target) -> None:
    sql = "SELECT seq, REPEAT('x', seq % 300), seq * 1.5, IF(seq % 7 = 0, NULL, seq) FROM seq_1_to_100000"
    observed, reference = _both(cli, target, direct, target.database, "-e", sql)
    assert observed[0] == reference[0] == 0
    assert hashlib.sha256(observed[1].encode()).hexdigest() == hashlib.sha256(reference[1].encode()).hexdigest()
    assert observed[1].count("\n") == 100001


def test_login_errors(cli: str, target: Target, direct: Target) -> None:
    def run(t: Target, **kwargs: Any) -> Any:
        code, out, err = run_cli(cli, t, "-e", "SELECT 1", **kwargs)
        return code, out, re.sub(r"@'[^']*'", "@'H'", err)

    observed, reference = run(target, password="wrong"), run(direct, password="wrong")
    assert observed == reference
    assert observed[0] == 1 and observed[2].strip() == "ERROR 1045 (28000): Access denied for user 'root'@'H' (using password: YES)"

    observed, reference = run(target, user="nobody_here"), run(direct, user="nobody_here")
    assert observed == reference
    assert observed[2].strip() == "ERROR 1045 (28000): Access denied for user 'nobody_here'@'H' (using password: NO)"

    code, out, err = run_cli(cli, target, "no_such_database", "-e", "SELECT 1")
    assert (code, err.strip()) == (1, "ERROR 1049 (42000): Unknown database 'no_such_database'")
