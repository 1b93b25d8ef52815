"""router.state.SessionState: transitions, pins, bounds, invariants and replay_sql, from tables,
plus a property test: replaying `replay_sql()` through classify + apply reproduces the settings."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.consistency import Level
from replication.protocol.constants import Status
from replication.statements import Scope, classify
from router.state import (
    PREPARED_STATEMENTS_MAX,
    SESSION_VALUE_CHARS_MAX,
    SESSION_VARIABLES_MAX,
    TEMPORARY_TABLES_MAX,
    USER_VARIABLES_MAX,
    Charset,
    NextTransaction,
    Pin,
    PinReason,
    RouterBug,
    SessionState,
    Transaction,
)
from router.topology import MemberId

M1, M2 = MemberId("m1"), MemberId("m2")
AUTOCOMMIT = int(Status.AUTOCOMMIT)
IN_TRANS = int(Status.IN_TRANS)
RO = int(Status.IN_TRANS_READONLY)


def flags_after(state: SessionState, sql: str) -> int:
    """Status flags a server reports after `sql` for statements outside transactions (SET, USE,
    reads): autocommit as the statement leaves it, no open transaction."""
    stmt = classify(sql)
    autocommit = state.autocommit
    for part in stmt.parts or (stmt,):
        for a in part.assignments:
            if a.name == "autocommit" and a.scope is Scope.SESSION and part.autocommit is not None:
                autocommit = part.autocommit
    return AUTOCOMMIT if autocommit else 0


def run(sqls: Sequence[str], state: SessionState | None = None, member: MemberId = M1) -> SessionState:
    state = state if state is not None else SessionState()
    for sql in sqls:
        state = state.apply(classify(sql), True, flags_after(state, sql), member)
    return state


# --- replay_sql from a fresh connection ---------------------------------------------------------------

REPLAY: dict[str, tuple[list[str], list[str]]] = {
    "nothing": ([], []),
    "SET NAMES with collation": (["SET NAMES utf8mb4 COLLATE utf8mb4_bin"], ["SET NAMES utf8mb4 COLLATE utf8mb4_bin"]),
    "SET CHARACTER SET": (["SET CHARACTER SET latin1"], ["SET CHARACTER SET latin1"]),
    "sql_mode": (["SET SESSION sql_mode='STRICT_TRANS_TABLES,NO_ZERO_DATE'"],
                 ["SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE'"]),
    "@@SESSION. spelling": (["SET @@SESSION.wait_timeout = 60"], ["SET SESSION wait_timeout = 60"]),
    "LOCAL spelling": (["SET LOCAL time_zone = '+00:00'"], ["SET SESSION time_zone = '+00:00'"]),
    "USE": (["USE db"], ["USE `db`"]),
    "USE quoted": (["USE `we``ird db`"], ["USE `we``ird db`"]),
    "user variable": (["SET @a = 1"], ["SET @a = 1"]),
    "user variable :=": (["SET @a := 'x'"], ["SET @a = 'x'"]),
    "user variable decimal kept as written": (["SET @a = 1.50"], ["SET @a = 1.50"]),
    "user variable negative": (["SET @a = -2"], ["SET @a = - 2"]),
    "user variable hex kept as written": (["SET @a = 0x41"], ["SET @a = 0x41"]),
    "user variable NULL": (["SET @a = NULL"], ["SET @a = NULL"]),
    "user variable TRUE": (["SET @a = TRUE"], ["SET @a = TRUE"]),
    "double quotes re-quoted": (['SET @a = "it\'s"'], ["SET @a = 'it''s'"]),
    "adjacent strings joined": (["SET @a = 'a' 'b'"], ["SET @a = 'ab'"]),
    "odd user variable name": (["SET @`My Var` = 2"], ["SET @`my var` = 2"]),
    "user variable names are case-insensitive": (["SET @A = 1", "SET @a = 2"], ["SET @a = 2"]),
    "consistency by name": (["SET group_replication_consistency = 'BEFORE'"],
                            ["SET SESSION group_replication_consistency = 'BEFORE'"]),
    "consistency by number": (["SET @@SESSION.group_replication_consistency = 4"],
                              ["SET SESSION group_replication_consistency = 'BEFORE_AND_AFTER'"]),
    "consistency back to default": (["SET group_replication_consistency = 'AFTER'",
                                     "SET group_replication_consistency = DEFAULT"], []),
    "global consistency is not session state": (["SET GLOBAL group_replication_consistency = 'AFTER'"], []),
    "last value wins, first position kept": (["SET sql_mode = 'A'", "SET time_zone = 'UTC'", "SET sql_mode = 'B'"],
                                             ["SET SESSION sql_mode = 'B'", "SET SESSION time_zone = 'UTC'"]),
    "DEFAULT value": (["SET sql_mode = DEFAULT"], ["SET SESSION sql_mode = DEFAULT"]),
    "bare word value": (["SET sql_mode = ANSI"], ["SET SESSION sql_mode = ANSI"]),
    "one SET, several scopes": (["SET sql_mode = 'A', @a = 1, GLOBAL max_connections = 10, SESSION time_zone = 'UTC'"],
                                ["SET SESSION sql_mode = 'A'", "SET SESSION time_zone = 'UTC'", "SET @a = 1"]),
    "SET NAMES resets the charset variables": (["SET character_set_results = NULL", "SET NAMES latin1"],
                                               ["SET NAMES latin1"]),
    "charset variable after SET NAMES": (["SET NAMES latin1", "SET character_set_results = NULL"],
                                         ["SET NAMES latin1", "SET SESSION character_set_results = NULL"]),
    "isolation": (["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"],
                  ["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"]),
    "isolation, then its variable": (["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                                      "SET tx_isolation = 'SERIALIZABLE'"],
                                     ["SET SESSION tx_isolation = 'SERIALIZABLE'"]),
    "isolation variable, then the statement": (["SET transaction_isolation = 'SERIALIZABLE'",
                                                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"],
                                               ["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"]),
    "coupled variables: the last one set wins": (["SET collation_server = 'latin1_bin'",
                                                  "SET character_set_server = 'utf8mb4'", "SET time_zone = 'UTC'",
                                                  "SET collation_server = 'utf8mb4_bin'"],
                                                 ["SET SESSION time_zone = 'UTC'",
                                                  "SET SESSION collation_server = 'utf8mb4_bin'"]),
    "coupled connection variables": (["SET collation_connection = 'latin1_bin'",
                                      "SET character_set_connection = 'utf8mb4'"],
                                     ["SET SESSION character_set_connection = 'utf8mb4'"]),
    "both isolation spellings: last wins": (["SET tx_isolation = 'SERIALIZABLE'",
                                             "SET transaction_isolation = 'READ-COMMITTED'"],
                                            ["SET SESSION transaction_isolation = 'READ-COMMITTED'"]),
    "session access mode and isolation": (["SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY"],
                                          ["SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                                           "SET SESSION TRANSACTION READ ONLY"]),
    "one-shot SET TRANSACTION is not replayed": (["SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"], []),
    "autocommit": (["SET autocommit = 0"], ["SET autocommit = 0"]),
    "autocommit back on": (["SET autocommit = 0", "SET autocommit = ON"], []),
    "role": (["SET ROLE ALL"], ["SET ROLE ALL"]),
    "everything, in replay order": (
        ["SET @a = 1", "SET SESSION sql_mode = 'ANSI'", "SET group_replication_consistency = 'BEFORE'",
         "SET NAMES utf8mb4 COLLATE utf8mb4_bin", "USE db", "SET autocommit = 0",
         "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", "SET ROLE r1"],
        ["USE `db`", "SET NAMES utf8mb4 COLLATE utf8mb4_bin", "SET SESSION sql_mode = 'ANSI'", "SET autocommit = 0",
         "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
         "SET SESSION group_replication_consistency = 'BEFORE'", "SET ROLE r1", "SET @a = 1"],
    ),
}


@pytest.mark.parametrize("name", REPLAY)
def test_replay_sql(name: str) -> None:
    sqls, expected = REPLAY[name]
    state = run(sqls)
    assert state.replay_sql() == expected
    assert state.pin is None
    # Replaying reproduces the same settings on a fresh session (the oracle for every row).
    assert run(state.replay_sql()).settings() == state.settings()


def test_fields_after_settings() -> None:
    state = run(["USE db", "SET NAMES utf8mb4 COLLATE utf8mb4_bin", "SET group_replication_consistency = 'BEFORE'",
                 "SET SESSION sql_mode = 'ANSI'", "SET @a = 1"])
    assert state.schema == "db"
    assert state.charset == Charset("NAMES", "utf8mb4 COLLATE utf8mb4_bin")
    assert state.consistency is Level.BEFORE
    assert state.system_variables == (("sql_mode", "'ANSI'"),)
    assert state.user_variables == (("a", "1"),)
    assert state.last_member == M1 and not state.in_transaction and state.pinned_member is None


def test_replay_since_gives_only_the_changes() -> None:
    old = run(["USE a", "SET sql_mode = 'A'", "SET time_zone = 'UTC'", "SET @x = 1", "SET NAMES latin1"])
    new = run(["USE b", "SET sql_mode = 'B'", "SET @x = 1", "SET @y = 2", "SET autocommit = 0"], old)
    assert new.replay_sql(since=old) == ["USE `b`", "SET SESSION sql_mode = 'B'", "SET autocommit = 0", "SET @y = 2"]
    assert new.replay_sql(since=new) == []
    back = run(["SET autocommit = 1", "SET group_replication_consistency = 'AFTER'"], new)
    assert back.replay_sql(since=new) == ["SET autocommit = 1", "SET SESSION group_replication_consistency = 'AFTER'"]
    default = run(["SET group_replication_consistency = DEFAULT"], back)
    assert default.replay_sql(since=back) == ["SET SESSION group_replication_consistency = DEFAULT"]


def test_replay_since_re_sends_charset_variables_a_set_names_reset() -> None:
    old = run(["SET NAMES latin1", "SET character_set_results = NULL"])
    same_names = run(["SET NAMES latin1"], old)  # resets character_set_results on the server
    assert same_names.replay_sql(since=old) == ["SET NAMES latin1"]
    changed_var = run(["SET character_set_results = 'utf8mb4'"], old)
    assert changed_var.replay_sql(since=old) == ["SET NAMES latin1", "SET SESSION character_set_results = 'utf8mb4'"]


def test_expression_values_are_replayed_from_reported_values() -> None:
    sql = "SET @@SESSION.sql_mode = CONCAT(@@sql_mode, ',ANSI'), @@SESSION.sql_auto_is_null = 0"
    state = SessionState().apply(classify(sql), True, AUTOCOMMIT, M1,
                                 reported={"sql_mode": "STRICT_TRANS_TABLES,ANSI", "sql_auto_is_null": "0"})
    assert state.pin is None
    assert state.replay_sql() == ["SET SESSION sql_mode = 'STRICT_TRANS_TABLES,ANSI'",
                                  "SET SESSION sql_auto_is_null = 0"]
    unreported = SessionState().apply(classify(sql), True, AUTOCOMMIT, M1)
    assert unreported.pin == Pin(M1, frozenset({PinReason.UNTRACKED_SETTING}))
    assert unreported.replay_sql() == ["SET SESSION sql_auto_is_null = 0"]
    level = SessionState().apply(classify("SET group_replication_consistency = @lvl"), True, AUTOCOMMIT, M1,
                                 reported={"group_replication_consistency": "AFTER"})
    assert level.consistency is Level.AFTER and level.pin is None


# --- pins ---------------------------------------------------------------------------------------------

TMP, LCK, ULK, FN, UV, UNT, PS, BND = (PinReason.TEMPORARY_TABLE, PinReason.TABLE_LOCK, PinReason.USER_LOCK,
                                       PinReason.SESSION_FUNCTION, PinReason.USER_VARIABLE,
                                       PinReason.UNTRACKED_SETTING, PinReason.PREPARED_STATEMENT,
                                       PinReason.STATE_BOUND)

PINS: dict[str, tuple[list[str], set[PinReason]]] = {
    "plain read": (["SELECT * FROM t"], set()),
    "temporary table": (["USE db", "CREATE TEMPORARY TABLE tt (a INT)"], {TMP}),
    "temporary table dropped": (["USE db", "CREATE TEMPORARY TABLE tt (a INT)", "DROP TEMPORARY TABLE tt"], set()),
    "temporary table dropped by qualified name": (["USE db", "CREATE TEMPORARY TABLE tt (a INT)",
                                                   "USE other", "DROP TEMPORARY TABLE IF EXISTS db.tt"], set()),
    "temporary table of another schema stays": (["USE a", "CREATE TEMPORARY TABLE tt (a INT)", "USE b",
                                                 "DROP TEMPORARY TABLE IF EXISTS tt"], {TMP}),
    "DROP TABLE drops the temporary table first": (["USE db", "CREATE TEMPORARY TABLE tt (a INT)", "DROP TABLE tt"],
                                                   set()),
    "two temporary tables, one dropped": (["USE db", "CREATE TEMPORARY TABLE t1 (a INT)",
                                           "CREATE TEMPORARY TABLE t2 (a INT)", "DROP TEMPORARY TABLE t1"], {TMP}),
    "LOCK TABLES": (["LOCK TABLES t READ"], {LCK}),
    "UNLOCK TABLES releases": (["LOCK TABLES t READ", "UNLOCK TABLES"], set()),
    "GET_LOCK": (["SELECT GET_LOCK('job', 1)"], {ULK}),
    "RELEASE_LOCK does not release the pin": (["SELECT GET_LOCK('job', 1)", "SELECT RELEASE_LOCK('job')"], {ULK}),
    "LAST_INSERT_ID()": (["SELECT LAST_INSERT_ID()"], {FN}),
    "FOUND_ROWS()": (["SELECT FOUND_ROWS()"], {FN}),
    "SQL_CALC_FOUND_ROWS": (["SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1"], {FN}),
    "ROW_COUNT()": (["SELECT ROW_COUNT()"], {FN}),
    "CONNECTION_ID()": (["SELECT CONNECTION_ID()"], {FN}),
    "HANDLER": (["HANDLER t OPEN"], {FN}),
    "SHOW WARNINGS does not pin": (["SHOW WARNINGS"], set()),
    "@@warning_count does not pin": (["SELECT @@warning_count"], set()),
    "SELECT … INTO @x": (["SELECT a INTO @x FROM t LIMIT 1"], {UV}),
    "@x := in a SELECT": (["SELECT @x := a FROM t LIMIT 1"], {UV}),
    "CALL with @out": (["CALL p(@x)"], {UV}),
    "GET DIAGNOSTICS into @n": (["GET DIAGNOSTICS @n = NUMBER"], {UV}),
    "SET @x = NOW()": (["SET @x = NOW()"], {UV}),
    "SET @x = CURRENT_USER": (["SET @x = CURRENT_USER"], {UV}),
    "SET @x from another variable": (["SET @a = 1, @b = @a + 1"], {UV}),
    "SET @x = subquery": (["SET @x = (SELECT 1)"], {UV}),
    "SET @x with a backslash": (["SET @x = 'a\\\\b'"], {UV}),
    "SET @x = X'41'": (["SET @x = X'41'"], {UV}),
    "SET @x = LAST_INSERT_ID()": (["SET @x = LAST_INSERT_ID()"], {UV, FN}),
    "SET from an expression": (["SET sql_mode = CONCAT(@@sql_mode, ',ANSI')"], {UNT}),
    "SET timestamp = CURRENT_TIMESTAMP": (["SET timestamp = CURRENT_TIMESTAMP"], {UNT}),
    "SET insert_id (one-shot)": (["SET insert_id = 5"], {UNT}),
    "SET RESOURCE GROUP": (["SET RESOURCE GROUP g1"], {UNT}),
    "PREPARE": (["PREPARE s FROM 'SELECT 1'"], {PS}),
    "DEALLOCATE releases": (["PREPARE s FROM 'SELECT 1'", "DEALLOCATE PREPARE S"], set()),
    "two prepared, one deallocated": (["PREPARE s FROM 'SELECT 1'", "PREPARE t FROM 'SELECT 2'",
                                       "DROP PREPARE s"], {PS}),
    "XA": (["XA START 'x'"], {PinReason.XA_TRANSACTION}),
    "reasons accumulate": (["USE db", "CREATE TEMPORARY TABLE tt (a INT)", "SELECT GET_LOCK('a', 1)",
                            "DROP TEMPORARY TABLE tt"], {ULK}),
}


@pytest.mark.parametrize("name", PINS)
def test_pins(name: str) -> None:
    sqls, reasons = PINS[name]
    state = run(sqls)
    if reasons:
        assert state.pin == Pin(M1, frozenset(reasons)), state.pin
    else:
        assert state.pin is None, state.pin
    # The router's prediction: the last statement's new reasons, known before it runs.
    before = run(sqls[:-1])
    added = reasons - (before.pin.reasons if before.pin is not None else set())
    assert before.pins_for(classify(sqls[-1])) == added


def test_pinned_replayable_settings_are_still_tracked() -> None:
    state = run(["SELECT GET_LOCK('a', 1)", "SET @a = 1", "USE db"])
    assert state.pinned_member == M1
    assert state.replay_sql() == ["USE `db`", "SET @a = 1"]


def test_failed_statement_changes_nothing_but_last_member() -> None:
    state = run(["SET @a = 1"])
    failed = state.apply(classify("SET @a = 2, sql_mode = 'A'"), False, 0, M2)
    assert failed.settings() == state.settings() and failed.pin is None and failed.last_member == M2
    assert failed.apply(classify("SELECT 1"), False, 0, M2) is failed


def test_failed_multi_statement_that_changed_state_pins() -> None:
    state = SessionState().apply(classify("SET @a = 1; SELECT nope"), False, 0, M1)
    assert state.pin == Pin(M1, frozenset({PinReason.UNKNOWN_STATE}))
    assert state.user_variables == ()
    reads = SessionState().apply(classify("SELECT 1; SELECT nope"), False, 0, M1)
    assert reads.pin is None


def test_statements_that_change_nothing_return_the_same_state() -> None:
    state = run(["SELECT 1"])
    assert state.apply(classify("SELECT * FROM t"), True, AUTOCOMMIT, M1) is state
    assert state.apply(classify("UPDATE t SET a = 1"), True, AUTOCOMMIT, M1) is state
    txn = state.apply(classify("BEGIN"), True, IN_TRANS | AUTOCOMMIT, M1)
    assert txn.apply(classify("INSERT INTO t VALUES (1)"), True, IN_TRANS | AUTOCOMMIT, M1) is txn
    # …but not when the server says otherwise: autocommit=0 opened a transaction.
    ac0 = run(["SET autocommit = 0"])
    opened = ac0.apply(classify("SELECT * FROM t"), True, IN_TRANS, M1)
    assert opened is not ac0 and opened.transaction == Transaction(M1, False, False)


# --- bounds ------------------------------------------------------------------------------------------


def test_system_variable_bound() -> None:
    state = run([f"SET SESSION v{i} = {i}" for i in range(SESSION_VARIABLES_MAX)])
    assert len(state.system_variables) == SESSION_VARIABLES_MAX and state.pin is None
    again = run(["SET SESSION v0 = 'changed'"], state)  # updating a tracked one stays within the bound
    assert again.pin is None and dict(again.system_variables)["v0"] == "'changed'"
    over = run(["SET SESSION one_too_many = 1"], state)
    assert over.pin == Pin(M1, frozenset({PinReason.STATE_BOUND}))
    assert "one_too_many" not in dict(over.system_variables)
    assert len(over.system_variables) == SESSION_VARIABLES_MAX


def test_user_variable_bound() -> None:
    state = run([f"SET @u{i} = {i}" for i in range(USER_VARIABLES_MAX)])
    assert len(state.user_variables) == USER_VARIABLES_MAX and state.pin is None
    over = run(["SET @u_extra = 1"], state)
    assert over.pin is not None and over.pin.reasons == {PinReason.STATE_BOUND}
    assert len(over.user_variables) == USER_VARIABLES_MAX


def test_value_bound() -> None:
    fits = "x" * (SESSION_VALUE_CHARS_MAX - 2)  # rendered with its two quotes
    state = run([f"SET @a = '{fits}'", f"SET sql_mode = '{fits}'"])
    assert state.pin is None and len(dict(state.user_variables)["a"]) == SESSION_VALUE_CHARS_MAX
    longer = fits + "y"
    over = run([f"SET @a = '{longer}'", f"SET sql_mode = '{longer}'"], state)
    assert over.pin == Pin(M1, frozenset({PinReason.STATE_BOUND}))
    assert over.user_variables == () and over.system_variables == ()  # stale values are not kept


def test_temporary_table_bound() -> None:
    creates = [f"CREATE TEMPORARY TABLE t{i} (a INT)" for i in range(TEMPORARY_TABLES_MAX)]
    state = run(["USE db", *creates])
    assert len(state.temporary_tables) == TEMPORARY_TABLES_MAX
    assert state.pin is not None and state.pin.reasons == {PinReason.TEMPORARY_TABLE}
    over = run(["CREATE TEMPORARY TABLE t_extra (a INT)"], state)
    assert over.pin is not None and over.pin.reasons == {PinReason.TEMPORARY_TABLE, PinReason.STATE_BOUND}
    dropped = run([f"DROP TEMPORARY TABLE t{i}" for i in range(TEMPORARY_TABLES_MAX)], over)
    assert dropped.pin is not None and dropped.pin.reasons == {PinReason.STATE_BOUND}  # t_extra is untracked


def test_prepared_statement_bound() -> None:
    state = run([f"PREPARE p{i} FROM 'SELECT 1'" for i in range(PREPARED_STATEMENTS_MAX)])
    assert state.pin is not None and state.pin.reasons == {PinReason.PREPARED_STATEMENT}
    over = run(["PREPARE p_extra FROM 'SELECT 1'"], state)
    assert over.pin is not None and PinReason.STATE_BOUND in over.pin.reasons


# --- transactions follow the server's status flags -------------------------------------------------------


def test_explicit_transaction() -> None:
    state = SessionState().apply(classify("BEGIN"), True, IN_TRANS | AUTOCOMMIT, M1)
    assert state.transaction == Transaction(M1, read_only=False, explicit=True)
    state = state.apply(classify("INSERT INTO t VALUES (1)"), True, IN_TRANS | AUTOCOMMIT, M1)
    assert state.transaction == Transaction(M1, False, True)
    state = state.apply(classify("COMMIT"), True, AUTOCOMMIT, M1)
    assert state.transaction is None


def test_read_only_transaction() -> None:
    state = SessionState().apply(classify("START TRANSACTION READ ONLY"), True, IN_TRANS | RO | AUTOCOMMIT, M2)
    assert state.transaction == Transaction(M2, True, True)
    chained = state.apply(classify("COMMIT AND CHAIN"), True, IN_TRANS | AUTOCOMMIT, M2)
    assert chained.transaction == Transaction(M2, True, True)  # CHAIN keeps the access mode
    session_ro = run(["SET SESSION TRANSACTION READ ONLY"])
    begun = session_ro.apply(classify("BEGIN"), True, IN_TRANS | AUTOCOMMIT, M1)
    assert begun.transaction is not None and begun.transaction.read_only


def test_implicit_transaction_under_autocommit_0() -> None:
    state = run(["SET autocommit = 0"])
    assert state.autocommit is False and state.transaction is None
    state = state.apply(classify("SELECT * FROM t"), True, IN_TRANS, M1)
    assert state.transaction == Transaction(M1, False, False)
    state = state.apply(classify("CREATE TABLE x (a INT)"), True, 0, M1)  # implicit commit
    assert state.transaction is None
    state = state.apply(classify("SET autocommit = 1"), True, AUTOCOMMIT, M1)
    assert state.autocommit is True


def test_implicit_commit_may_move_the_transaction() -> None:
    """The finish_on path: a read-only transaction on m2 is committed, BEGIN runs on m1."""
    state = SessionState().apply(classify("START TRANSACTION READ ONLY"), True, IN_TRANS | RO | AUTOCOMMIT, M2)
    moved = state.apply(classify("BEGIN"), True, IN_TRANS | AUTOCOMMIT, M1)
    assert moved.transaction == Transaction(M1, False, True)


def test_one_shot_characteristics() -> None:
    state = run(["SET TRANSACTION READ ONLY"])
    assert state.next_transaction == NextTransaction(M1, True, None)
    state = run(["SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SET @a = 1", "USE db"], state)
    assert state.next_transaction == NextTransaction(M1, True, "SERIALIZABLE")  # merged; SET/USE keep it
    begun = state.apply(classify("BEGIN"), True, IN_TRANS | AUTOCOMMIT, M1)
    assert begun.next_transaction is None and begun.transaction == Transaction(M1, True, True)
    consumed = state.apply(classify("SELECT 1"), True, AUTOCOMMIT, M1)
    assert consumed.next_transaction is None and consumed.transaction is None
    assert state.replay_sql() == ["USE `db`", "SET @a = 1"]


def test_dropped_schema() -> None:
    state = run(["USE db"])
    dropped = state.apply(classify("DROP DATABASE db"), True, AUTOCOMMIT | int(Status.DB_DROPPED), M1)
    assert dropped.schema is None
    assert state.with_schema("other").schema == "other"


BUGS: dict[str, tuple[SessionState, str, bool, int, MemberId, str]] = {
    "BEGIN without IN_TRANS": (SessionState(), "BEGIN", True, AUTOCOMMIT, M1, "no open transaction"),
    "COMMIT with IN_TRANS": (SessionState(transaction=Transaction(M1, False, True)), "COMMIT", True,
                             IN_TRANS | AUTOCOMMIT, M1, "reports an open transaction"),
    "SET autocommit=0 still on": (SessionState(), "SET autocommit = 0", True, AUTOCOMMIT, M1, "autocommit on"),
    "transaction continued elsewhere": (SessionState(transaction=Transaction(M1, False, True)), "SELECT 1", True,
                                        IN_TRANS, M2, "in a transaction on m1"),
    "failed statement elsewhere in a transaction": (SessionState(transaction=Transaction(M1, False, True)),
                                                    "INSERT INTO t VALUES (1)", False, 0, M2,
                                                    "in a transaction on m1"),
    "pinned session elsewhere": (SessionState(pin=Pin(M1, frozenset({PinReason.USER_LOCK}))), "SELECT 1", True,
                                 AUTOCOMMIT, M2, "pinned to m1"),
    "lost pin used": (SessionState(pin=Pin(M1, frozenset({PinReason.USER_LOCK}), lost=True)), "SELECT 1", True,
                      AUTOCOMMIT, M1, "is lost"),
    "next transaction elsewhere": (SessionState(next_transaction=NextTransaction(M1, True, None)), "BEGIN", True,
                                   IN_TRANS | AUTOCOMMIT, M2, "characteristics are on m1"),
    "unparsable accepted level": (SessionState(), "SET group_replication_consistency = 'SOMETIMES'", True, AUTOCOMMIT,
                                  M1, "cannot parse"),
}


@pytest.mark.parametrize("name", BUGS)
def test_impossible_transitions_are_bugs(name: str) -> None:
    state, sql, ok, flags, target, message = BUGS[name]
    with pytest.raises(RouterBug, match=r"^\[BUG\] .*" + message):
        state.apply(classify(sql), ok, flags, target)


def test_prediction_never_raises_on_unvalidated_values() -> None:
    assert SessionState().pins_for(classify("SET group_replication_consistency = 'SOMETIMES'")) == frozenset()


INVALID: dict[str, dict[str, object]] = {
    "transaction and pin on different members": dict(transaction=Transaction(M1, False, True),
                                                      pin=Pin(M2, frozenset({PinReason.USER_LOCK}))),
    "transaction with a lost pin": dict(transaction=Transaction(M1, False, True),
                                        pin=Pin(M1, frozenset({PinReason.USER_LOCK}), lost=True)),
    "temporary tables without a pin": dict(temporary_tables=frozenset({("db", "t")})),
    "pin reason without its cause": dict(pin=Pin(M1, frozenset({PinReason.TABLE_LOCK}))),
    "table locks without a pin": dict(table_locks=True),
    "prepared statements without a pin": dict(prepared_statements=frozenset({"s"})),
    "one-shot characteristics inside a transaction": dict(transaction=Transaction(M1, False, True),
                                                          next_transaction=NextTransaction(M1, True, None)),
    "one-shot characteristics away from the pin": dict(pin=Pin(M1, frozenset({PinReason.USER_LOCK})),
                                                       next_transaction=NextTransaction(M2, True, None)),
    "variable tracked twice": dict(system_variables=(("a", "1"), ("a", "2"))),
    "autocommit as a variable": dict(system_variables=(("autocommit", "0"),)),
    "consistency as a variable": dict(system_variables=(("group_replication_consistency", "'AFTER'"),)),
    "isolation twice": dict(isolation="SERIALIZABLE", system_variables=(("tx_isolation", "'READ-COMMITTED'"),)),
    "too many variables": dict(system_variables=tuple((f"v{i}", "1") for i in range(SESSION_VARIABLES_MAX + 1))),
    "value too long": dict(user_variables=(("a", "'" + "x" * SESSION_VALUE_CHARS_MAX + "'"),)),
}


@pytest.mark.parametrize("name", INVALID)
def test_invalid_states_are_bugs(name: str) -> None:
    with pytest.raises(RouterBug, match=r"^\[BUG\] session state: "):
        SessionState(**INVALID[name])  # type: ignore[arg-type]


def test_pin_needs_a_reason() -> None:
    with pytest.raises(RouterBug, match=r"^\[BUG\] pin to m1 without a reason"):
        Pin(M1, frozenset())


# --- member_gone, reset ---------------------------------------------------------------------------------


def test_member_gone() -> None:
    txn = SessionState(transaction=Transaction(M1, False, True), last_member=M1)
    gone = txn.member_gone(M1)
    assert gone.transaction is None and gone.last_member is None
    assert txn.member_gone(M2) == txn
    pinned = run(["USE db", "CREATE TEMPORARY TABLE tt (a INT)"])
    lost = pinned.member_gone(M1)
    assert lost.pin is not None and lost.pin.lost and lost.pin.reasons == {PinReason.TEMPORARY_TABLE}
    assert lost.member_gone(M1) == lost
    pending = run(["SET TRANSACTION READ ONLY"])
    assert pending.member_gone(M1).next_transaction is None


def test_reset_forgets_everything() -> None:
    state = run(["USE db", "SET @a = 1", "SELECT GET_LOCK('a', 1)"]).member_gone(M1)
    assert state.reset() == SessionState()
    assert state.reset().replay_sql() == []


# --- property: replay reproduces the settings, from scratch and from any earlier state -------------------

_names = st.sampled_from(["sql_mode", "time_zone", "wait_timeout", "character_set_results", "tx_isolation",
                          "transaction_isolation", "transaction_read_only", "collation_connection",
                          "character_set_connection", "character_set_server", "collation_server", "v1"])
_user_names = st.sampled_from(["a", "b", "Mixed", "with space"])
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\\\x00"), max_size=12)


def _quote(text: str, double: bool) -> str:
    if double:
        return '"' + text.replace('"', '""') + '"'
    return "'" + text.replace("'", "''") + "'"


_literals = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-1000, max_value=1000).map(str),
    st.tuples(_text, st.booleans()).map(lambda t: _quote(*t)),
    st.sampled_from(["NULL", "DEFAULT", "ON", "OFF", "TRUE"]),
)
_statements = st.one_of(
    st.tuples(_names, _literals).map(lambda t: f"SET SESSION {t[0]} = {t[1]}"),
    st.tuples(_user_names, _literals.filter(lambda v: v != "DEFAULT" and v not in ("ON", "OFF"))).map(
        lambda t: f"SET @`{t[0]}` = {t[1]}"),
    st.sampled_from([
        "USE db1", "USE `db 2`", "SET NAMES utf8mb4", "SET NAMES latin1 COLLATE latin1_bin", "SET CHARACTER SET utf8",
        "SET autocommit = 0", "SET autocommit = 1", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET SESSION TRANSACTION READ ONLY", "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
        "SET group_replication_consistency = 'BEFORE'", "SET group_replication_consistency = DEFAULT",
        "SET @@SESSION.group_replication_consistency = 3", "SET ROLE r1", "SET ROLE NONE",
    ]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_statements, max_size=25), st.integers(0, 25))
def test_property_replay_round_trip(sqls: list[str], cut: int) -> None:
    older = run(sqls[:cut])
    state = run(sqls[cut:], older)
    assert state.pin is None  # every generated value is replayable
    assert run(state.replay_sql()).settings() == state.settings()
    assert run(state.replay_sql(since=older), older).settings() == state.settings()
    assert state.replay_sql(since=state) == []


def test_same_settings() -> None:
    from dataclasses import replace as _replace

    from replication.consistency import Level

    a = SessionState(schema="x", user_variables=(("a", "1"),))
    assert a.same_settings(_replace(a, last_member=MemberId("s1")))  # where it ran is no setting
    assert not a.same_settings(_replace(a, schema="y"))
    assert not a.same_settings(_replace(a, user_variables=(("a", "2"),)))
    b = _replace(a, consistency=Level.BEFORE)
    assert not a.same_settings(b) and a.same_settings(b, consistency=False)
    assert a.same_settings(b, consistency=False) and a.settings() != b.settings()
