"""router.routing.route and router.topology: tables of (statement × session state × topology),
scenarios through route + SessionState.apply, and a property test against a naive server model.

The server model (`Server`) is the oracle for transactions: it knows, per member connection,
what MySQL does with autocommit, BEGIN/COMMIT, implicit commits and read-only transactions, and
nothing about routing. The property test drives random statement sequences and topology changes
through the router exactly as the I/O side would (replay, finish_on, member_gone, reset) and
checks that a transaction never leaves its member and a write never reaches a SECONDARY.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replication.protocol.constants import Status
from replication.statements import Kind, Scope, Statement, classify
from router.routing import ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION, Decision, Pick, Rule, is_write, route
from router.state import NextTransaction, Pin, PinReason, SessionState, Transaction
from router.topology import (
    GROUP_MEMBERS_MAX,
    MemberId,
    MemberInfo,
    MemberRole,
    MemberState,
    Mode,
    Topology,
    TopologyError,
    parse_group_members,
    parse_router_members,
    PolledTable,
    distrust,
)

M = MemberId
P, S1, S2 = M("p"), M("s1"), M("s2")
A, B, C = M("a"), M("b"), M("c")
ON, REC, UNR, OFF, ERR = (MemberState.ONLINE, MemberState.RECOVERING, MemberState.UNREACHABLE,
                          MemberState.OFFLINE, MemberState.ERROR)
PRI, SEC = MemberRole.PRIMARY, MemberRole.SECONDARY


def topo(*members: tuple[str, MemberState, MemberRole], mode: Mode = Mode.SINGLE_PRIMARY) -> Topology:
    return Topology(tuple(MemberInfo(M(i), "127.0.0.1", 3310 + n, s, r) for n, (i, s, r) in enumerate(members)), mode)


SP = topo(("p", ON, PRI), ("s1", ON, SEC), ("s2", ON, SEC))
SP_NO_SECONDARY = topo(("p", ON, PRI), ("s1", REC, SEC), ("s2", UNR, SEC))
SP_PRIMARY_UNREACHABLE = topo(("p", UNR, PRI), ("s1", ON, SEC), ("s2", ON, SEC))
SP_PRIMARY_RECOVERING = topo(("p", REC, PRI), ("s1", ON, SEC), ("s2", ON, SEC))
SP_NOTHING_ONLINE = topo(("p", ERR, PRI), ("s1", OFF, MemberRole.NONE), ("s2", UNR, SEC))
SP_SWITCHED = topo(("p", ON, SEC), ("s1", ON, PRI), ("s2", ON, SEC))  # p demoted, s1 elected
SP_WITHOUT_P = topo(("s1", ON, PRI), ("s2", ON, SEC))  # p left the group
SP_TWO_PRIMARIES = topo(("p", ON, PRI), ("s1", ON, PRI), ("s2", ON, SEC))  # ambiguous primary
SP_TWO_PRIMARIES_NO_SECONDARY = topo(("p", ON, PRI), ("s1", ON, PRI), ("s2", UNR, SEC))
MP = topo(("a", ON, PRI), ("b", ON, PRI), ("c", ON, PRI), mode=Mode.MULTI_PRIMARY)
MP_A_UNREACHABLE = topo(("a", UNR, PRI), ("b", ON, PRI), ("c", ON, PRI), mode=Mode.MULTI_PRIMARY)
MP_NOTHING_ONLINE = topo(("a", UNR, PRI), ("b", ERR, PRI), ("c", OFF, PRI), mode=Mode.MULTI_PRIMARY)

SP_LOAD = {S1: 2, S2: 0}  # s2 is the least loaded secondary
MP_LOAD = {A: 1, B: 0, C: 5}  # b is the least loaded member


def pin(member: MemberId, *reasons: PinReason, lost: bool = False) -> Pin:
    return Pin(member, frozenset(reasons or (PinReason.USER_LOCK,)), lost)


FRESH = SessionState()
LAST_S1 = SessionState(last_member=S1)
LAST_P = SessionState(last_member=P)
AC0 = SessionState(autocommit=False, last_member=S1)
TXN_P = SessionState(transaction=Transaction(P, False, True), last_member=P)
TXN_P_IMPLICIT = SessionState(autocommit=False, transaction=Transaction(P, False, False), last_member=P)
RO_TXN_S1 = SessionState(transaction=Transaction(S1, True, True), last_member=S1)
RO_TXN_P = SessionState(transaction=Transaction(P, True, True), last_member=P)
PINNED_P = SessionState(pin=pin(P), last_member=P)
PINNED_S1 = SessionState(pin=pin(S1, PinReason.SESSION_FUNCTION), last_member=S1)
PINNED_P_LOST = SessionState(pin=pin(P, lost=True))
PINNED_TXN_S1 = SessionState(pin=pin(S1, PinReason.SESSION_FUNCTION), transaction=Transaction(S1, True, True),
                             last_member=S1)
NEXT_RO_P = SessionState(next_transaction=NextTransaction(P, True, None), last_member=P)
NEXT_RO_S1 = SessionState(next_transaction=NextTransaction(S1, True, None), last_member=S1)
NEXT_ISO_S1 = SessionState(next_transaction=NextTransaction(S1, None, "SERIALIZABLE"), last_member=S1)
SESSION_RO = SessionState(access_read_only=True, last_member=S1)
TXN_A = SessionState(transaction=Transaction(A, False, True), last_member=A)
RO_TXN_B = SessionState(transaction=Transaction(B, True, True), last_member=B)


@dataclass(frozen=True)
class Case:
    sql: str
    state: SessionState
    topology: Topology
    target: MemberId | None  # None: refused
    rule: Rule
    pick: Pick
    errno: int | None = None
    local: MemberId | None = None
    load: dict[MemberId, int] | None = None
    starts: bool | None = None
    ends: bool | None = None
    finish_on: MemberId | None = None
    pins: frozenset[PinReason] | None = None
    lost: MemberId | None = None


R, Pk = Rule, Pick
INS = "INSERT INTO t VALUES (1)"
SEL = "SELECT * FROM t WHERE id = 1"

CASES: dict[str, Case] = {
    # --- single-primary, free session: reads spread, writes to the primary -------------------------
    "read → least loaded secondary": Case(SEL, FRESH, SP, S2, R.READ, Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD),
    "consistency read anywhere": Case("SELECT @@group_replication_consistency", FRESH, SP, S2, R.READ,
                                      Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD),
    "SHOW → read": Case("SHOW TABLES", FRESH, SP, S2, R.READ, Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD),
    "EXPLAIN → read": Case("EXPLAIN SELECT * FROM t", FRESH, SP, S2, R.READ, Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD),
    "multi of reads → read": Case("SELECT 1; SELECT 2", FRESH, SP, S2, R.READ, Pk.LEAST_LOADED_SECONDARY,
                                  load=SP_LOAD),
    "INSERT → primary": Case(INS, FRESH, SP, P, R.WRITE, Pk.PRIMARY, load=SP_LOAD),
    "UPDATE → primary": Case("UPDATE t SET a = 1 WHERE id = 2", LAST_S1, SP, P, R.WRITE, Pk.PRIMARY),
    "DELETE → primary": Case("DELETE FROM t WHERE id = 2", FRESH, SP, P, R.WRITE, Pk.PRIMARY),
    "REPLACE → primary": Case("REPLACE INTO t VALUES (1)", FRESH, SP, P, R.WRITE, Pk.PRIMARY),
    "LOAD DATA → primary": Case("LOAD DATA INFILE 'x' INTO TABLE t", FRESH, SP, P, R.WRITE, Pk.PRIMARY),
    "INTO OUTFILE → primary": Case("SELECT 1 INTO OUTFILE '/tmp/x'", FRESH, SP, P, R.WRITE, Pk.PRIMARY),
    "sequence → primary": Case("SELECT NEXTVAL(s)", FRESH, SP, P, R.WRITE, Pk.PRIMARY),
    "SET GLOBAL → primary": Case("SET GLOBAL max_connections = 100", LAST_S1, SP, P, R.WRITE, Pk.PRIMARY),
    "KILL → primary": Case("KILL 5", FRESH, SP, P, R.WRITE, Pk.PRIMARY),
    "XA → primary, pins": Case("XA START 'x'", FRESH, SP, P, R.WRITE, Pk.PRIMARY,
                               pins=frozenset({PinReason.XA_TRANSACTION})),
    "FOR UPDATE → primary": Case("SELECT * FROM t FOR UPDATE", FRESH, SP, P, R.LOCKING_READ, Pk.PRIMARY),
    "FOR SHARE → primary": Case("SELECT * FROM t FOR SHARE", FRESH, SP, P, R.LOCKING_READ, Pk.PRIMARY),
    "LOCK IN SHARE MODE → primary": Case("SELECT * FROM t WHERE id IN (SELECT id FROM u LOCK IN SHARE MODE)", FRESH,
                                         SP, P, R.LOCKING_READ, Pk.PRIMARY),
    "GET_LOCK → primary, pins": Case("SELECT GET_LOCK('a', 1)", LAST_S1, SP, P, R.LOCKING_FUNCTION, Pk.PRIMARY,
                                     pins=frozenset({PinReason.USER_LOCK})),
    "DO RELEASE_LOCK → primary": Case("DO RELEASE_LOCK('a')", FRESH, SP, P, R.LOCKING_FUNCTION, Pk.PRIMARY),
    "CALL → primary": Case("CALL proc()", FRESH, SP, P, R.CALL, Pk.PRIMARY, pins=frozenset()),
    "CALL with @out → primary, pins": Case("CALL proc(@x)", FRESH, SP, P, R.CALL, Pk.PRIMARY,
                                           pins=frozenset({PinReason.USER_VARIABLE})),
    "DDL → primary": Case("CREATE TABLE x (a INT PRIMARY KEY)", LAST_S1, SP, P, R.DDL, Pk.PRIMARY),
    "ALTER → primary": Case("ALTER TABLE t ADD COLUMN b INT", FRESH, SP, P, R.DDL, Pk.PRIMARY),
    "temporary table → primary, pins": Case("CREATE TEMPORARY TABLE tt (a INT)", LAST_S1, SP, P, R.DDL, Pk.PRIMARY,
                                            pins=frozenset({PinReason.TEMPORARY_TABLE})),
    "LOCK TABLES → primary, pins": Case("LOCK TABLES t READ", FRESH, SP, P, R.WRITE, Pk.PRIMARY,
                                        pins=frozenset({PinReason.TABLE_LOCK})),
    "unknown → primary": Case("FROBNICATE the widgets", FRESH, SP, P, R.UNKNOWN, Pk.PRIMARY, load=SP_LOAD),
    "BEGIN JUNK is unknown → primary": Case("BEGIN JUNK", FRESH, SP, P, R.UNKNOWN, Pk.PRIMARY),
    "multi with a write → primary": Case("SELECT 1; INSERT INTO t VALUES (1)", FRESH, SP, P, R.MULTI, Pk.PRIMARY),
    "multi with a locking read → primary": Case("SELECT 1; SELECT * FROM t FOR UPDATE", FRESH, SP, P, R.MULTI,
                                                Pk.PRIMARY),
    "multi BEGIN…COMMIT → primary": Case("BEGIN; INSERT INTO t VALUES (1); COMMIT", FRESH, SP, P, R.MULTI,
                                         Pk.PRIMARY, starts=True, ends=True),
    "multi read-only transaction → read": Case("START TRANSACTION READ ONLY; SELECT 1", FRESH, SP, S2, R.READ,
                                               Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD, starts=True, ends=False),
    "multi SET then read: a read": Case("SET @a = 1; SELECT @a", FRESH, SP, S2, R.READ, Pk.LEAST_LOADED_SECONDARY,
                                        load=SP_LOAD),
    # --- transaction starts ----------------------------------------------------------------------
    "BEGIN → primary": Case("BEGIN", LAST_S1, SP, P, R.BEGIN, Pk.PRIMARY, starts=True, ends=False),
    "START TRANSACTION → primary": Case("START TRANSACTION", FRESH, SP, P, R.BEGIN, Pk.PRIMARY, starts=True),
    "START TRANSACTION WITH CONSISTENT SNAPSHOT → primary": Case("START TRANSACTION WITH CONSISTENT SNAPSHOT", FRESH,
                                                                 SP, P, R.BEGIN, Pk.PRIMARY, starts=True),
    "READ WRITE → primary": Case("START TRANSACTION READ WRITE", FRESH, SP, P, R.BEGIN, Pk.PRIMARY, starts=True),
    "READ ONLY → secondary": Case("START TRANSACTION READ ONLY", LAST_P, SP, S2, R.BEGIN_READ_ONLY,
                                  Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD, starts=True),
    "session read-only: BEGIN → secondary": Case("BEGIN", SESSION_RO, SP, S2, R.BEGIN_READ_ONLY,
                                                 Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD, starts=True),
    "session read-only: READ WRITE → primary": Case("START TRANSACTION READ WRITE", SESSION_RO, SP, P, R.BEGIN,
                                                    Pk.PRIMARY),
    "session read-only: INSERT → primary (it answers 1792)": Case(INS, SESSION_RO, SP, P, R.WRITE, Pk.PRIMARY),
    # --- session statements: current member, tracked --------------------------------------------
    "SET on a fresh session → a read member": Case("SET @a = 1", FRESH, SP, S2, R.SESSION, Pk.LEAST_LOADED_SECONDARY,
                                                   load=SP_LOAD, pins=frozenset()),
    "SET → last member": Case("SET @a = 1", LAST_S1, SP, S1, R.SESSION, Pk.LAST_MEMBER, load=SP_LOAD),
    "SET NAMES → last member (primary)": Case("SET NAMES utf8mb4", LAST_P, SP, P, R.SESSION, Pk.LAST_MEMBER,
                                              load=SP_LOAD),
    "USE → last member": Case("USE db", LAST_S1, SP, S1, R.SESSION, Pk.LAST_MEMBER),
    "SET consistency → last member": Case("SET group_replication_consistency = 'BEFORE'", LAST_S1, SP, S1, R.SESSION,
                                          Pk.LAST_MEMBER),
    "DEALLOCATE → last member": Case("DEALLOCATE PREPARE s", LAST_S1, SP, S1, R.SESSION, Pk.LAST_MEMBER),
    "empty → last member": Case("/* nothing */", LAST_S1, SP, S1, R.SESSION, Pk.LAST_MEMBER),
    "COMMIT outside a transaction → last member": Case("COMMIT", LAST_S1, SP, S1, R.SESSION, Pk.LAST_MEMBER,
                                                       starts=False, ends=False),
    "multi SET + USE → last member": Case("SET @a = 1; USE db", LAST_S1, SP, S1, R.SESSION, Pk.LAST_MEMBER),
    "unreplayable SET → primary (pins)": Case("SET @a = NOW()", LAST_S1, SP, P, R.PINS, Pk.PRIMARY,
                                              pins=frozenset({PinReason.USER_VARIABLE})),
    "SET from an expression → primary (pins)": Case("SET sql_mode = CONCAT(@@sql_mode, ',ANSI')", LAST_S1, SP, P,
                                                    R.PINS, Pk.PRIMARY,
                                                    pins=frozenset({PinReason.UNTRACKED_SETTING})),
    "SET TRANSACTION → primary": Case("SET TRANSACTION READ ONLY", LAST_S1, SP, P, R.NEXT_TRANSACTION, Pk.PRIMARY),
    "SET SESSION TRANSACTION → last member": Case("SET SESSION TRANSACTION READ ONLY", LAST_S1, SP, S1, R.SESSION,
                                                  Pk.LAST_MEMBER),
    # --- diagnostics follow the previous statement ------------------------------------------------
    "SHOW WARNINGS → last member": Case("SHOW WARNINGS", LAST_S1, SP, S1, R.DIAGNOSTICS, Pk.LAST_MEMBER,
                                        load=SP_LOAD, pins=frozenset()),
    "@@warning_count → last member": Case("SELECT @@warning_count", LAST_S1, SP, S1, R.DIAGNOSTICS, Pk.LAST_MEMBER),
    "GET DIAGNOSTICS → last member": Case("GET DIAGNOSTICS @n = NUMBER", LAST_P, SP, P, R.DIAGNOSTICS, Pk.LAST_MEMBER,
                                          pins=frozenset({PinReason.USER_VARIABLE})),
    "SHOW WARNINGS, no last member → read": Case("SHOW WARNINGS", FRESH, SP, S2, R.DIAGNOSTICS,
                                                 Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD),
    # --- reads that pin go where writes can follow ---------------------------------------------------
    "LAST_INSERT_ID() → primary (pins)": Case("SELECT LAST_INSERT_ID()", LAST_S1, SP, P, R.PINS, Pk.PRIMARY,
                                              pins=frozenset({PinReason.SESSION_FUNCTION})),
    "FOUND_ROWS() → primary (pins)": Case("SELECT FOUND_ROWS()", FRESH, SP, P, R.PINS, Pk.PRIMARY),
    "CONNECTION_ID() → primary (pins)": Case("SELECT CONNECTION_ID()", FRESH, SP, P, R.PINS, Pk.PRIMARY),
    "ROW_COUNT() → primary (pins)": Case("SELECT ROW_COUNT()", FRESH, SP, P, R.PINS, Pk.PRIMARY),
    "SELECT INTO @x → primary (pins)": Case("SELECT a INTO @x FROM t LIMIT 1", FRESH, SP, P, R.PINS, Pk.PRIMARY,
                                            pins=frozenset({PinReason.USER_VARIABLE})),
    "PREPARE → primary (pins)": Case("PREPARE s FROM 'SELECT 1'", FRESH, SP, P, R.PINS, Pk.PRIMARY,
                                     pins=frozenset({PinReason.PREPARED_STATEMENT})),
    "HANDLER → primary (pins)": Case("HANDLER t OPEN", FRESH, SP, P, R.WRITE, Pk.PRIMARY,
                                     pins=frozenset({PinReason.SESSION_FUNCTION})),
    # --- autocommit=0: every statement opens a transaction on the primary ----------------------------
    "autocommit=0 SELECT → primary": Case(SEL, AC0, SP, P, R.IMPLICIT_TRANSACTION, Pk.PRIMARY, starts=True),
    "autocommit=0 INSERT → primary": Case(INS, AC0, SP, P, R.IMPLICIT_TRANSACTION, Pk.PRIMARY, starts=True),
    "autocommit=0 SET → primary": Case("SET @a = 1", AC0, SP, P, R.SESSION, Pk.PRIMARY, starts=False),
    "autocommit=0 COMMIT → primary": Case("COMMIT", AC0, SP, P, R.SESSION, Pk.PRIMARY, starts=False, ends=False),
    "autocommit=0 SHOW WARNINGS → last": Case("SHOW WARNINGS", AC0, SP, S1, R.DIAGNOSTICS, Pk.LAST_MEMBER,
                                              starts=False),
    "autocommit=0 READ ONLY → secondary": Case("START TRANSACTION READ ONLY", AC0, SP, S2, R.BEGIN_READ_ONLY,
                                               Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD, starts=True),
    # --- in a transaction: its member --------------------------------------------------------------
    "txn: read → its member": Case(SEL, TXN_P, SP, P, R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER, load=SP_LOAD,
                                   starts=False, ends=False),
    "txn: consistency read → its member": Case("SELECT @@group_replication_consistency", TXN_P, SP, P,
                                               R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER),
    "txn: write → its member": Case(INS, TXN_P, SP, P, R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER),
    "txn: SET → its member": Case("SET @a = 1", TXN_P, SP, P, R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER),
    "txn: SHOW WARNINGS → its member": Case("SHOW WARNINGS", TXN_P, SP, P, R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER),
    "txn: COMMIT ends": Case("COMMIT", TXN_P, SP, P, R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER, starts=False,
                             ends=True),
    "txn: ROLLBACK ends": Case("ROLLBACK", TXN_P, SP, P, R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER, ends=True),
    "txn: COMMIT AND CHAIN ends and starts": Case("COMMIT AND CHAIN", TXN_P, SP, P, R.IN_TRANSACTION,
                                                  Pk.TRANSACTION_MEMBER, starts=True, ends=True),
    "txn: DDL commits implicitly": Case("CREATE TABLE x (a INT PRIMARY KEY)", TXN_P, SP, P, R.IN_TRANSACTION,
                                        Pk.TRANSACTION_MEMBER, ends=True, starts=False),
    "txn: BEGIN READ ONLY stays": Case("START TRANSACTION READ ONLY", TXN_P, SP, P, R.IN_TRANSACTION,
                                       Pk.TRANSACTION_MEMBER, starts=True, ends=True),
    "implicit txn: SET autocommit=1 commits": Case("SET autocommit = 1", TXN_P_IMPLICIT, SP, P, R.IN_TRANSACTION,
                                                   Pk.TRANSACTION_MEMBER, ends=True),
    "implicit txn: read → its member": Case(SEL, TXN_P_IMPLICIT, SP, P, R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER,
                                            starts=False),
    "txn on a demoted primary: read stays": Case(SEL, TXN_P, SP_SWITCHED, P, R.IN_TRANSACTION,
                                                 Pk.TRANSACTION_MEMBER),
    "txn on a demoted primary: COMMIT stays": Case("COMMIT", TXN_P, SP_SWITCHED, P, R.IN_TRANSACTION,
                                                   Pk.TRANSACTION_MEMBER),
    "txn on a demoted primary: write refused": Case(INS, TXN_P, SP_SWITCHED, None, R.IN_TRANSACTION,
                                                    Pk.REFUSED_NOT_WRITABLE, errno=1290),
    "txn member UNREACHABLE → 2013": Case(SEL, TXN_P, SP_PRIMARY_UNREACHABLE, None, R.IN_TRANSACTION,
                                          Pk.REFUSED_MEMBER_LOST, errno=2013, lost=P),
    "txn member left → 2013": Case("COMMIT", TXN_P, SP_WITHOUT_P, None, R.IN_TRANSACTION, Pk.REFUSED_MEMBER_LOST,
                                   errno=2013, lost=P),
    # --- read-only transaction on a secondary: stays there; writes refused ---------------------------
    "ro txn: read stays": Case(SEL, RO_TXN_S1, SP, S1, R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER, load=SP_LOAD),
    "ro txn: COMMIT stays": Case("COMMIT", RO_TXN_S1, SP, S1, R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER, ends=True),
    "ro txn: write → 1792": Case(INS, RO_TXN_S1, SP, None, R.IN_TRANSACTION, Pk.REFUSED_READ_ONLY_TRANSACTION,
                                 errno=ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION),
    "ro txn: locking read → 1792": Case("SELECT * FROM t FOR UPDATE", RO_TXN_S1, SP, None, R.IN_TRANSACTION,
                                        Pk.REFUSED_READ_ONLY_TRANSACTION, errno=1792),
    "ro txn: BEGIN moves to primary, finishing it": Case("BEGIN", RO_TXN_S1, SP, P, R.BEGIN, Pk.PRIMARY,
                                                         finish_on=S1, starts=True, ends=True),
    "ro txn: DDL moves to primary, finishing it": Case("CREATE TABLE x (a INT PRIMARY KEY)", RO_TXN_S1, SP, P,
                                                       R.DDL, Pk.PRIMARY, finish_on=S1, ends=True),
    "ro txn: BEGIN without primary → 1290": Case("BEGIN", RO_TXN_S1, SP_PRIMARY_UNREACHABLE, None, R.BEGIN,
                                                 Pk.REFUSED_NO_PRIMARY, errno=1290),
    "ro txn: SET autocommit=1 stays": Case("SET autocommit = 1", RO_TXN_S1, SP, S1, R.IN_TRANSACTION,
                                           Pk.TRANSACTION_MEMBER, ends=True),
    "ro txn: READ ONLY again stays": Case("START TRANSACTION READ ONLY", RO_TXN_S1, SP, S1, R.IN_TRANSACTION,
                                          Pk.TRANSACTION_MEMBER, starts=True, ends=True),
    "ro txn on the primary: write goes (server answers)": Case(INS, RO_TXN_P, SP, P, R.IN_TRANSACTION,
                                                               Pk.TRANSACTION_MEMBER),
    "pinned ro txn: BEGIN refused": Case("BEGIN", PINNED_TXN_S1, SP, None, R.IN_TRANSACTION,
                                         Pk.REFUSED_READ_ONLY_TRANSACTION, errno=1792),
    # --- pinned sessions -----------------------------------------------------------------------------
    "pinned: read → pinned member": Case(SEL, PINNED_P, SP, P, R.PINNED, Pk.PINNED_MEMBER, load=SP_LOAD),
    "pinned: write → pinned member": Case(INS, PINNED_P, SP, P, R.PINNED, Pk.PINNED_MEMBER),
    "pinned: SET → pinned member": Case("SET @a = 1", PINNED_P, SP, P, R.PINNED, Pk.PINNED_MEMBER),
    "pinned: BEGIN → pinned member": Case("BEGIN", PINNED_P, SP, P, R.PINNED, Pk.PINNED_MEMBER, starts=True),
    "pinned on a secondary: read": Case(SEL, PINNED_S1, SP, S1, R.PINNED, Pk.PINNED_MEMBER),
    "pinned on a secondary: write refused": Case(INS, PINNED_S1, SP, None, R.PINNED, Pk.REFUSED_NOT_WRITABLE,
                                                 errno=1290),
    "pinned on a secondary: BEGIN refused": Case("BEGIN", PINNED_S1, SP, None, R.PINNED, Pk.REFUSED_NOT_WRITABLE,
                                                 errno=1290),
    "pinned on a secondary: READ ONLY ok": Case("START TRANSACTION READ ONLY", PINNED_S1, SP, S1, R.PINNED,
                                                Pk.PINNED_MEMBER, starts=True),
    "pinned member UNREACHABLE → 2013": Case(SEL, PINNED_P, SP_PRIMARY_UNREACHABLE, None, R.PINNED,
                                             Pk.REFUSED_MEMBER_LOST, errno=2013, lost=P),
    "pinned member demoted: write refused": Case(INS, PINNED_P, SP_SWITCHED, None, R.PINNED,
                                                 Pk.REFUSED_NOT_WRITABLE, errno=1290),
    "pinned state lost → 2013 though ONLINE": Case(SEL, PINNED_P_LOST, SP, None, R.PINNED, Pk.REFUSED_MEMBER_LOST,
                                                   errno=2013, lost=P),
    "pinned, autocommit=0: opens a transaction": Case(SEL, replace(PINNED_P, autocommit=False), SP, P, R.PINNED,
                                                      Pk.PINNED_MEMBER, starts=True),
    # --- pending SET TRANSACTION -------------------------------------------------------------------
    "next txn: BEGIN → its member": Case("BEGIN", NEXT_RO_P, SP, P, R.NEXT_TRANSACTION_PENDING,
                                         Pk.NEXT_TRANSACTION_MEMBER, starts=True),
    "next txn: read → its member": Case(SEL, NEXT_RO_P, SP, P, R.NEXT_TRANSACTION_PENDING,
                                        Pk.NEXT_TRANSACTION_MEMBER, load=SP_LOAD),
    "next ro txn on a secondary: write → 1792": Case(INS, NEXT_RO_S1, SP, None, R.NEXT_TRANSACTION_PENDING,
                                                     Pk.REFUSED_READ_ONLY_TRANSACTION, errno=1792),
    "next txn on a secondary: write → 1290": Case(INS, NEXT_ISO_S1, SP, None, R.NEXT_TRANSACTION_PENDING,
                                                  Pk.REFUSED_NOT_WRITABLE, errno=1290),
    "next ro txn on a secondary: BEGIN stays": Case("BEGIN", NEXT_RO_S1, SP, S1, R.NEXT_TRANSACTION_PENDING,
                                                    Pk.NEXT_TRANSACTION_MEMBER, starts=True),
    "next txn member gone → 2013": Case("BEGIN", NEXT_RO_P, SP_PRIMARY_UNREACHABLE, None,
                                        R.NEXT_TRANSACTION_PENDING, Pk.REFUSED_MEMBER_LOST, errno=2013, lost=P),
    # --- degraded single-primary topologies --------------------------------------------------------
    "no secondary: read → primary": Case(SEL, FRESH, SP_NO_SECONDARY, P, R.READ, Pk.PRIMARY_NO_SECONDARY,
                                         load=SP_LOAD),
    "no secondary: write → primary": Case(INS, FRESH, SP_NO_SECONDARY, P, R.WRITE, Pk.PRIMARY),
    "no secondary: READ ONLY → primary": Case("START TRANSACTION READ ONLY", FRESH, SP_NO_SECONDARY, P,
                                              R.BEGIN_READ_ONLY, Pk.PRIMARY_NO_SECONDARY),
    "no secondary: SET, last member RECOVERING": Case("SET @a = 1", LAST_S1, SP_NO_SECONDARY, P, R.SESSION,
                                                      Pk.PRIMARY_NO_SECONDARY),
    "no secondary: SHOW WARNINGS, last RECOVERING": Case("SHOW WARNINGS", LAST_S1, SP_NO_SECONDARY, P,
                                                         R.DIAGNOSTICS, Pk.PRIMARY_NO_SECONDARY),
    "primary UNREACHABLE: read → secondary": Case(SEL, FRESH, SP_PRIMARY_UNREACHABLE, S2, R.READ,
                                                  Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD),
    "primary UNREACHABLE: write → 1290": Case(INS, FRESH, SP_PRIMARY_UNREACHABLE, None, R.WRITE,
                                              Pk.REFUSED_NO_PRIMARY, errno=1290),
    "primary UNREACHABLE: DDL → 1290": Case("DROP TABLE t", FRESH, SP_PRIMARY_UNREACHABLE, None, R.DDL,
                                            Pk.REFUSED_NO_PRIMARY, errno=1290),
    "primary UNREACHABLE: BEGIN → 1290": Case("BEGIN", FRESH, SP_PRIMARY_UNREACHABLE, None, R.BEGIN,
                                              Pk.REFUSED_NO_PRIMARY, errno=1290),
    "primary UNREACHABLE: unknown → 1290": Case("FROBNICATE", FRESH, SP_PRIMARY_UNREACHABLE, None, R.UNKNOWN,
                                                Pk.REFUSED_NO_PRIMARY, errno=1290),
    "primary UNREACHABLE: GET_LOCK → 1290": Case("SELECT GET_LOCK('a', 1)", FRESH, SP_PRIMARY_UNREACHABLE, None,
                                                 R.LOCKING_FUNCTION, Pk.REFUSED_NO_PRIMARY, errno=1290),
    "primary UNREACHABLE: READ ONLY → secondary": Case("START TRANSACTION READ ONLY", FRESH, SP_PRIMARY_UNREACHABLE,
                                                       S2, R.BEGIN_READ_ONLY, Pk.LEAST_LOADED_SECONDARY,
                                                       load=SP_LOAD),
    "primary UNREACHABLE: pinning read → secondary": Case("SELECT LAST_INSERT_ID()", FRESH, SP_PRIMARY_UNREACHABLE,
                                                          S2, R.PINS, Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD),
    "primary UNREACHABLE: SET TRANSACTION → secondary": Case("SET TRANSACTION READ ONLY", FRESH,
                                                             SP_PRIMARY_UNREACHABLE, S2, R.NEXT_TRANSACTION,
                                                             Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD),
    "primary UNREACHABLE: autocommit=0 read → secondary": Case(SEL, AC0, SP_PRIMARY_UNREACHABLE, S2,
                                                               R.IMPLICIT_TRANSACTION, Pk.LEAST_LOADED_SECONDARY,
                                                               load=SP_LOAD, starts=True),
    "primary UNREACHABLE: autocommit=0 write → 1290": Case(INS, AC0, SP_PRIMARY_UNREACHABLE, None,
                                                           R.IMPLICIT_TRANSACTION, Pk.REFUSED_NO_PRIMARY, errno=1290),
    "primary RECOVERING: write → 1290": Case(INS, FRESH, SP_PRIMARY_RECOVERING, None, R.WRITE, Pk.REFUSED_NO_PRIMARY,
                                             errno=1290),
    "primary RECOVERING: read → secondary": Case(SEL, LAST_P, SP_PRIMARY_RECOVERING, S2, R.READ,
                                                 Pk.LEAST_LOADED_SECONDARY, load=SP_LOAD),
    "after a primary switch: write → new primary": Case(INS, LAST_P, SP_SWITCHED, S1, R.WRITE, Pk.PRIMARY),
    "after a primary switch: read → a secondary": Case(SEL, FRESH, SP_SWITCHED, P, R.READ, Pk.LEAST_LOADED_SECONDARY,
                                                       load={P: 0, S2: 1}),
    "nothing ONLINE: read → 3783": Case(SEL, FRESH, SP_NOTHING_ONLINE, None, R.READ, Pk.REFUSED_NOTHING_ONLINE,
                                        errno=3783),
    "nothing ONLINE: write → 3783": Case(INS, FRESH, SP_NOTHING_ONLINE, None, R.WRITE, Pk.REFUSED_NOTHING_ONLINE,
                                         errno=3783),
    "nothing ONLINE: SET → 3783": Case("SET @a = 1", LAST_S1, SP_NOTHING_ONLINE, None, R.SESSION,
                                       Pk.REFUSED_NOTHING_ONLINE, errno=3783),
    "nothing ONLINE: BEGIN → 3783": Case("BEGIN", FRESH, SP_NOTHING_ONLINE, None, R.BEGIN, Pk.REFUSED_NOTHING_ONLINE,
                                         errno=3783),
    "nothing ONLINE: pinning read → 3783": Case("SELECT LAST_INSERT_ID()", FRESH, SP_NOTHING_ONLINE, None, R.PINS,
                                                Pk.REFUSED_NOTHING_ONLINE, errno=3783),
    "empty group: read → 3783": Case(SEL, FRESH, Topology(()), None, R.READ, Pk.REFUSED_NOTHING_ONLINE, errno=3783),
    # --- multi-primary ---------------------------------------------------------------------------
    "MP: read → local": Case(SEL, FRESH, MP, C, R.READ, Pk.LOCAL, load=MP_LOAD, local=C),
    "MP: read, no local → least loaded member": Case(SEL, FRESH, MP, B, R.READ, Pk.LEAST_LOADED_MEMBER,
                                                     load=MP_LOAD),
    "MP: read → the session's member": Case(SEL, replace(FRESH, last_member=C), MP, C, R.READ, Pk.LAST_MEMBER,
                                            load=MP_LOAD, local=A),
    "MP: write → the session's member, not local": Case(INS, replace(FRESH, last_member=C), MP, C, R.WRITE,
                                                         Pk.LAST_MEMBER, load=MP_LOAD, local=A),
    "MP: session's member UNREACHABLE: write → local": Case(INS, replace(FRESH, last_member=A), MP_A_UNREACHABLE,
                                                             C, R.WRITE, Pk.LOCAL, load=MP_LOAD, local=C),
    "MP: write → local": Case(INS, FRESH, MP, C, R.WRITE, Pk.LOCAL, load=MP_LOAD, local=C),
    "MP: write, no local → least loaded": Case(INS, FRESH, MP, B, R.WRITE, Pk.LEAST_LOADED_WRITER, load=MP_LOAD),
    "MP: write, local not a member → least loaded": Case(INS, FRESH, MP, B, R.WRITE, Pk.LEAST_LOADED_WRITER,
                                                         load=MP_LOAD, local=M("zz")),
    "MP: BEGIN → local": Case("BEGIN", FRESH, MP, A, R.BEGIN, Pk.LOCAL, load=MP_LOAD, local=A, starts=True),
    "MP: READ ONLY → local": Case("START TRANSACTION READ ONLY", FRESH, MP, A, R.BEGIN_READ_ONLY,
                                  Pk.LOCAL, load=MP_LOAD, local=A),
    "MP: READ ONLY, no local → least loaded": Case("START TRANSACTION READ ONLY", FRESH, MP, B, R.BEGIN_READ_ONLY,
                                                   Pk.LEAST_LOADED_MEMBER, load=MP_LOAD),
    "MP: locking read → local": Case("SELECT * FROM t FOR UPDATE", FRESH, MP, A, R.LOCKING_READ, Pk.LOCAL,
                                     load=MP_LOAD, local=A),
    "MP: DDL → local": Case("CREATE TABLE x (a INT PRIMARY KEY)", FRESH, MP, C, R.DDL, Pk.LOCAL, local=C),
    "MP: CALL → local": Case("CALL proc()", FRESH, MP, C, R.CALL, Pk.LOCAL, local=C),
    "MP: unknown → local": Case("FROBNICATE", FRESH, MP, C, R.UNKNOWN, Pk.LOCAL, local=C),
    "MP: autocommit=0 → the session's member": Case(SEL, replace(AC0, last_member=B), MP, B,
                                                    R.IMPLICIT_TRANSACTION, Pk.LAST_MEMBER, local=A, starts=True),
    "MP: pinning read → local": Case("SELECT LAST_INSERT_ID()", FRESH, MP, A, R.PINS, Pk.LOCAL, local=A),
    "MP: SET → last member": Case("SET @a = 1", replace(LAST_S1, last_member=C), MP, C, R.SESSION, Pk.LAST_MEMBER,
                                  local=A, load=MP_LOAD),
    "MP: txn → its member": Case(SEL, TXN_A, MP, A, R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER, local=C, load=MP_LOAD),
    "MP: ro txn, write → its member (server answers)": Case(INS, RO_TXN_B, MP, B, R.IN_TRANSACTION,
                                                            Pk.TRANSACTION_MEMBER, local=A),
    "MP: local UNREACHABLE: write → least loaded": Case(INS, FRESH, MP_A_UNREACHABLE, B, R.WRITE,
                                                        Pk.LEAST_LOADED_WRITER, local=A, load=MP_LOAD),
    "MP: local UNREACHABLE: read → least loaded": Case(SEL, FRESH, MP_A_UNREACHABLE, C, R.READ,
                                                       Pk.LEAST_LOADED_MEMBER, local=A, load={B: 3, C: 1}),
    "MP: txn member UNREACHABLE → 2013": Case(INS, TXN_A, MP_A_UNREACHABLE, None, R.IN_TRANSACTION,
                                              Pk.REFUSED_MEMBER_LOST, errno=2013, lost=A),
    "MP: nothing ONLINE → 3783": Case(INS, FRESH, MP_NOTHING_ONLINE, None, R.WRITE, Pk.REFUSED_NOTHING_ONLINE,
                                      errno=3783, local=A),
    "SP, two primaries: write → 1290": Case(INS, FRESH, SP_TWO_PRIMARIES, None, R.WRITE,
                                            Pk.REFUSED_AMBIGUOUS_PRIMARY, errno=1290),
    "SP, two primaries: BEGIN → 1290": Case("BEGIN", FRESH, SP_TWO_PRIMARIES, None, R.BEGIN,
                                            Pk.REFUSED_AMBIGUOUS_PRIMARY, errno=1290),
    "SP, two primaries: write in an open txn → 1290": Case(INS, TXN_P, SP_TWO_PRIMARIES, None, R.WRITE,
                                                           Pk.REFUSED_AMBIGUOUS_PRIMARY, errno=1290),
    "SP, two primaries: COMMIT of the open txn → its member": Case("COMMIT", TXN_P, SP_TWO_PRIMARIES, P,
                                                                   R.IN_TRANSACTION, Pk.TRANSACTION_MEMBER,
                                                                   ends=True),
    "SP, two primaries: read → a secondary": Case(SEL, FRESH, SP_TWO_PRIMARIES, S2, R.READ,
                                                  Pk.LEAST_LOADED_SECONDARY),
    "SP, two primaries, no secondary: read → 1290": Case(SEL, FRESH, SP_TWO_PRIMARIES_NO_SECONDARY, None, R.READ,
                                                         Pk.REFUSED_AMBIGUOUS_PRIMARY, errno=1290),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_route_table(case: Case) -> None:
    stmt = classify(case.sql)
    d = route(stmt, case.state, case.topology, local=case.local, load=case.load)
    assert (d.target, d.rule, d.pick) == (case.target, case.rule, case.pick), d.reason
    if case.target is None:
        assert d.refusal is not None and d.refusal.errno == case.errno, d.refusal
        assert d.refusal.message and d.refusal.to_payload()[:3] == b"\xff" + case.errno.to_bytes(2, "little")
    else:
        assert case.errno is None and d.refusal is None
    if case.starts is not None:
        assert d.starts_transaction is case.starts
    if case.ends is not None:
        assert d.ends_transaction is case.ends
    assert d.finish_on == case.finish_on
    assert d.lost == case.lost
    if case.pins is not None:
        assert d.pins == case.pins
    assert route(stmt, case.state, case.topology, local=case.local, load=case.load) == d  # a pure function


def test_every_rule_and_pick_is_in_the_table() -> None:
    rules = {c.rule for c in CASES.values()}
    picks = {c.pick for c in CASES.values()}
    assert rules == set(Rule), set(Rule) - rules
    assert picks == set(Pick), set(Pick) - picks


def test_reason_names_rule_and_pick() -> None:
    d = route(classify(INS), FRESH, SP)
    assert d.reason == "writes: the ONLINE primary"
    refused = route(classify(INS), FRESH, SP_PRIMARY_UNREACHABLE)
    assert refused.reason == "writes: refused: no ONLINE primary"
    assert refused.refusal is not None and "super-read-only" in refused.refusal.message
    lost = route(classify(SEL), TXN_P, SP_PRIMARY_UNREACHABLE)
    assert lost.refusal is not None and "member p, which is UNREACHABLE" in lost.refusal.message
    gone = route(classify(SEL), PINNED_P_LOST, SP)
    assert gone.refusal is not None and "connection that is gone" in gone.refusal.message
    left = route(classify(SEL), TXN_P, SP_WITHOUT_P)
    assert left.refusal is not None and "member p, which has left the group" in left.refusal.message


@pytest.mark.parametrize(
    ("load", "spread", "last", "expected"),
    [
        (None, 0, None, S1),  # tie, ids in order, spread 0
        (None, 1, None, S2),
        (None, 2, None, S1),
        (None, 1, S1, S1),  # tie → the previous statement's member (its connection is in sync)
        ({S1: 0, S2: 1}, 1, S2, S2),  # the previous member stays while at most LOAD_SLACK (1) more loaded
        ({S1: 0, S2: 2}, 1, S2, S1),  # least loaded beats the previous member beyond the slack
        ({S1: 3}, 0, S1, S2),  # absent load counts as 0
        (None, 0, P, S1),  # the previous member is not a candidate
    ],
)
def test_least_loaded_ties(load: dict[MemberId, int] | None, spread: int, last: MemberId | None,
                           expected: MemberId) -> None:
    d = route(classify(SEL), SessionState(last_member=last), SP, load=load, spread=spread)
    assert d.target == expected


def test_negative_load_is_refused() -> None:
    with pytest.raises(ValueError, match="load of member s1"):
        route(classify(SEL), FRESH, SP, load={S1: -1})


def test_decision_has_exactly_one_outcome() -> None:
    with pytest.raises(ValueError):
        Decision(None, Rule.READ, Pick.LAST_MEMBER)
    with pytest.raises(ValueError):
        Decision(P, Rule.BEGIN, Pick.PRIMARY, finish_on=P)


@pytest.mark.parametrize(
    ("sql", "write"),
    [(SEL, False), (INS, True), ("COMMIT", False), ("BEGIN", False), ("SET @a = 1", False),
     ("SET GLOBAL x = 1", True), ("SELECT 1; UPDATE t SET a = 1", True), ("SELECT 1; COMMIT", False),
     ("FROBNICATE", True), ("SELECT * FROM t FOR UPDATE", True), ("USE db", False)],
)
def test_is_write(sql: str, write: bool) -> None:
    assert is_write(classify(sql)) is write


# --- topology ------------------------------------------------------------------------------------


def test_parse_group_members_rows() -> None:
    rows = [
        ("uuid-1", "h1", 3310, "ONLINE", "PRIMARY"),
        (b"uuid-2", b"h2", "3311", b"online", b"SECONDARY"),
        ("uuid-3", "h3", 3312, "RECOVERING", "SECONDARY", 70),
        ("uuid-4", "h4", 3313, "OFFLINE", None),
        ("", "", 0, "OFFLINE", ""),  # GR's row before the plugin starts: skipped
    ]
    t = parse_group_members(rows)
    assert [m.member_id for m in t.members] == ["uuid-1", "uuid-2", "uuid-3", "uuid-4"]
    assert t.mode is Mode.SINGLE_PRIMARY and t.version == 0
    assert t.members[1] == MemberInfo(M("uuid-2"), "h2", 3311, ON, SEC)
    assert t.members[2].weight == 70 and t.members[0].weight == 50
    assert t.members[3].role is MemberRole.NONE
    assert [m.member_id for m in t.online()] == ["uuid-1", "uuid-2"]
    assert [m.member_id for m in t.primaries()] == ["uuid-1"]
    assert [m.member_id for m in t.secondaries()] == ["uuid-2", "uuid-3"]
    assert [m.member_id for m in t.writers()] == ["uuid-1"]
    assert t.member(M("uuid-3")) is t.members[2] and t.member(M("nope")) is None
    assert t.is_online(M("uuid-2")) and not t.is_online(M("uuid-3")) and not t.is_online(M("nope"))


def test_parse_group_members_mode_and_version() -> None:
    mp_rows = [("a", "h", 1, "ONLINE", "PRIMARY"), ("b", "h", 2, "ONLINE", "PRIMARY")]
    t0 = parse_group_members(mp_rows)
    assert t0.mode is Mode.MULTI_PRIMARY and t0.version == 0
    same = parse_group_members(mp_rows, previous=t0)
    assert same.version == 0 and same == t0
    changed = parse_group_members([("a", "h", 1, "ONLINE", "PRIMARY"), ("b", "h", 2, "UNREACHABLE", "PRIMARY")],
                                  previous=same)
    assert changed.version == 1 and changed.mode is Mode.MULTI_PRIMARY
    one = parse_group_members([("a", "h", 1, "ONLINE", "PRIMARY")], mode=Mode.MULTI_PRIMARY, previous=changed)
    assert one.mode is Mode.MULTI_PRIMARY and one.version == 2
    assert parse_group_members([("a", "h", 1, "ONLINE", "PRIMARY")], previous=one).version == 3  # mode changed


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("a", "h", 1, "ONLINE")], "expected 5 or 6 columns"),
        ([("a", "h", 1, "SLEEPING", "PRIMARY")], "unknown MEMBER_STATE 'SLEEPING'"),
        ([("a", "h", 1, "ONLINE", "LEADER")], "unknown MEMBER_ROLE 'LEADER'"),
        ([("a", "h", "x", "ONLINE", "PRIMARY")], "MEMBER_PORT 'x' is not an integer"),
        ([("a", "h", 70000, "ONLINE", "PRIMARY")], "port 70000 out of range"),
        ([("a", "h", True, "ONLINE", "PRIMARY")], "is not an integer"),
        ([("a", "h", 1, "ONLINE", "PRIMARY", 101)], "weight 101 out of range"),
        ([("a", "h", 1, "ONLINE", "PRIMARY"), ("a", "h", 2, "ONLINE", "SECONDARY")], "member a listed twice"),
        ([(b"\xff", "h", 1, "ONLINE", "PRIMARY")], "MEMBER_ID is not UTF-8"),
        ([("a", 5, 1, "ONLINE", "PRIMARY")], "MEMBER_HOST 5 is not text"),
        ([(f"m{i}", "h", i, "ONLINE", "SECONDARY") for i in range(GROUP_MEMBERS_MAX + 1)], "at most 9"),
    ],
)
def test_parse_group_members_refuses_bad_rows(rows: list[tuple[object, ...]], message: str) -> None:
    with pytest.raises(TopologyError, match=message.replace("(", r"\(")):
        parse_group_members(rows)


@pytest.mark.parametrize("port", ["", None, b"", " "])
def test_a_member_without_an_announced_port_counts_but_takes_no_traffic(port: object) -> None:
    """A new incarnation just admitted may show no MEMBER_PORT yet: the table is still taken
    (one such row used to make the router distrust every member's answer), and that member is
    neither online nor a writer for routing until its port is known."""
    t = parse_group_members([("a", "h", 1, "ONLINE", "SECONDARY"), ("b", "h", port, "ONLINE", "PRIMARY"),
                             ("c", "h", port, "ONLINE", "SECONDARY")], mode=Mode.SINGLE_PRIMARY)
    assert [m.member_id for m in t.members] == ["a", "b", "c"]
    assert [m.member_id for m in t.online()] == ["a"] and not t.is_online(MemberId("b"))
    assert [m.member_id for m in t.online_secondaries()] == ["a"]
    assert t.writers() == ()  # the primary's address is not known yet: no writes routed


def test_single_primary_with_two_primaries_has_no_writer() -> None:
    rows = [("a", "h", 1, "ONLINE", "PRIMARY"), ("b", "h", 2, "ONLINE", "PRIMARY"), ("c", "h", 3, "ONLINE", "SECONDARY")]
    t = parse_group_members(rows, mode=Mode.SINGLE_PRIMARY)
    assert t.ambiguous_primary and t.writers() == ()
    assert [m.member_id for m in t.primaries()] == ["a", "b"]
    d = route(classify(INS), FRESH, t)
    assert d.refusal is not None and d.refusal.errno == 1290 and "primary is ambiguous" in d.refusal.message
    assert "a, b" in d.refusal.message
    # Once one remains, writes go to it.
    after = parse_group_members([rows[0], ("b", "h", 2, "ONLINE", "SECONDARY"), rows[2]], mode=Mode.SINGLE_PRIMARY)
    assert not after.ambiguous_primary and route(classify(INS), FRESH, after).target == "a"
    # Multi-primary: several primaries are the point.
    assert not parse_group_members(rows, mode=Mode.MULTI_PRIMARY).ambiguous_primary


# --- which member answers the router trusts (router.topology.distrust) ----------------------------


def polled(rows: list[tuple[object, ...]], *, me: str | None, quorum: bool = True, single: bool = True) -> PolledTable:
    return parse_router_members([(*r, int(r[0] == me), int(quorum), int(single)) for r in rows])


GROUP3 = [("a", "h", 1, "ONLINE", "PRIMARY"), ("b", "h", 2, "ONLINE", "SECONDARY"), ("c", "h", 3, "ONLINE", "SECONDARY")]


def test_router_members_answer_parses_mode_quorum_and_self() -> None:
    p = polled(GROUP3, me="b")
    assert p.self_id == "b" and p.quorum and p.table.mode is Mode.SINGLE_PRIMARY
    assert distrust(p) is None
    mp = polled([(u, h, port, st, "PRIMARY") for u, h, port, st, _ in GROUP3], me="a", single=False)
    assert mp.table.mode is Mode.MULTI_PRIMARY and not mp.table.ambiguous_primary
    # The mode is the member's word: two PRIMARY rows in single-primary mode are not multi-primary.
    two = polled([GROUP3[0], ("b", "h", 2, "ONLINE", "PRIMARY"), GROUP3[2]], me="c")
    assert two.table.mode is Mode.SINGLE_PRIMARY and two.table.ambiguous_primary
    assert distrust(two) is None  # installed: it stops writes rather than guessing a primary
    with pytest.raises(TopologyError, match="expected 8 columns"):
        parse_router_members([("a", "h", 1, "ONLINE", "PRIMARY")])


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (polled([], me=None), "empty member table"),
        (polled(GROUP3, me="a", quorum=False), "no quorum"),
        # The member says quorum, but its own table shows a majority unreachable.
        (polled([GROUP3[0], ("b", "h", 2, "UNREACHABLE", "SECONDARY"), ("c", "h", 3, "UNREACHABLE", "SECONDARY")],
                me="a"), "no quorum"),
        (polled([("a", "h", 1, "ONLINE", "PRIMARY"), ("b", "h", 2, "UNREACHABLE", "SECONDARY")], me="a"), "no quorum"),
        (polled(GROUP3, me=None), "not in its own member table"),
        (polled([("a", "h", 1, "RECOVERING", ""), *GROUP3[1:]], me="a"), "RECOVERING"),
        (polled([("a", "h", 1, "ERROR", ""), *GROUP3[1:]], me="a", quorum=False), "ERROR"),
    ],
)
def test_router_distrusts(answer: PolledTable, why: str) -> None:
    reason = distrust(answer)
    assert reason is not None and why in reason


def test_router_trusts_a_majority_with_one_member_unreachable() -> None:
    p = polled([GROUP3[0], GROUP3[1], ("c", "h", 3, "UNREACHABLE", "SECONDARY")], me="a")
    assert distrust(p) is None
    assert distrust(polled([("a", "h", 1, "ONLINE", "PRIMARY")], me="a")) is None  # a group of one


# --- a naive server, and a driver that plays the I/O side -----------------------------------------


@dataclass
class Conn:
    """One member connection as MySQL sees it (only what decides the status flags)."""

    autocommit: bool = True
    in_trans: bool = False
    read_only: bool = False
    pending_read_only: bool | None = None
    pending: bool = False
    session_read_only: bool = False


def _assignment_bool(value: object) -> bool | None:
    if isinstance(value, str):
        return {"ON": True, "OFF": False, "1": True, "0": False}.get(value.upper())
    if isinstance(value, int):
        return bool(value)
    return None


class Server:
    """What MySQL does with a statement on one connection, for the flags: autocommit, BEGIN, COMMIT
    [AND CHAIN], implicit commits, SET TRANSACTION, read-only transactions, super_read_only."""

    @staticmethod
    def run(conn: Conn, stmt: Statement, writable: bool) -> bool:
        """Run `stmt`; False (and `conn` unchanged) if MySQL would refuse it."""
        trial = replace(conn)
        for part in stmt.parts if stmt.kind is Kind.MULTI else (stmt,):
            if not Server._part(trial, part, writable):
                return False
        for name in conn.__dataclass_fields__:
            setattr(conn, name, getattr(trial, name))
        return True

    @staticmethod
    def _part(c: Conn, s: Statement, writable: bool) -> bool:
        if s.implicit_commit or s.kind is Kind.BEGIN:
            c.in_trans = False
        if s.kind is Kind.BEGIN:
            ro = s.begin_read_only or (not s.begin_read_write and (
                c.pending_read_only if c.pending and c.pending_read_only is not None else c.session_read_only))
            c.in_trans, c.read_only, c.pending = True, ro, False
            return True
        if s.kind in (Kind.COMMIT, Kind.ROLLBACK):
            c.in_trans = s.chain and c.in_trans
            return True
        if s.kind is Kind.SET:
            for a in s.assignments:
                if a.scope is Scope.NEXT_TRANSACTION:
                    if c.in_trans:
                        return False  # 1568
                    c.pending = True
                    if "READ ONLY" in a.value:
                        c.pending_read_only = True
                    elif "READ WRITE" in a.value:
                        c.pending_read_only = False
                elif a.name == "autocommit":
                    value = _assignment_bool(a.literal)
                    assert value is not None
                    c.autocommit = value
                elif a.name == "transaction" and a.scope is Scope.SESSION:
                    c.session_read_only = "READ ONLY" in a.value
            return True
        if s.kind in (Kind.USE, Kind.EMPTY, Kind.DEALLOCATE, Kind.SHOW):
            return True
        write = is_write(s)
        if write and (not writable or (c.in_trans and c.read_only)):
            return False  # 1290 on a secondary, 1792 in a read-only transaction
        if s.implicit_commit:
            return True
        if not c.autocommit and not c.in_trans:
            ro = c.pending_read_only if c.pending and c.pending_read_only is not None else c.session_read_only
            c.in_trans, c.read_only, c.pending = True, ro, False
        elif not c.in_trans:
            c.pending = False  # an autocommit statement consumes SET TRANSACTION's characteristics
        return True

    @staticmethod
    def flags(c: Conn) -> int:
        out = 0
        if c.in_trans:
            out |= Status.IN_TRANS
            if c.read_only:
                out |= Status.IN_TRANS_READONLY
        if c.autocommit:
            out |= Status.AUTOCOMMIT
        return int(out)


@dataclass
class Driver:
    """Plays the I/O side: route, replay, finish_on, execute on the model, apply, member_gone."""

    topology: Topology
    local: MemberId | None = None
    state: SessionState = field(default_factory=SessionState)
    conns: dict[MemberId, Conn] = field(default_factory=dict)
    synced: dict[MemberId, SessionState] = field(default_factory=dict)
    spread: int = 0

    def conn(self, member: MemberId) -> Conn:
        return self.conns.setdefault(member, Conn())

    def _sync(self, member: MemberId) -> None:
        conn = self.conn(member)
        for sql in self.state.replay_sql(since=self.synced.get(member)):
            assert Server.run(conn, classify(sql), True), f"replay failed on {member}: {sql}"
        self.synced[member] = self.state

    def _close(self, member: MemberId) -> None:
        self.conns.pop(member, None)
        self.synced.pop(member, None)
        self.state = self.state.member_gone(member)

    def reset(self) -> None:
        self.conns.clear()
        self.synced.clear()
        self.state = self.state.reset()

    def step(self, sql: str, fail: bool = False) -> Decision:
        stmt = classify(sql)
        d = route(stmt, self.state, self.topology, local=self.local, spread=self.spread)
        if d.target is None:
            if d.lost is not None:
                self._close(d.lost)
            return d
        if d.finish_on is not None:
            finish = classify("COMMIT")
            conn = self.conn(d.finish_on)
            assert Server.run(conn, finish, True)
            self.state = self.state.apply(finish, True, Server.flags(conn), d.finish_on)
        self._sync(d.target)
        info = self.topology.member(d.target)
        assert info is not None
        conn = self.conn(d.target)
        ok = not fail and Server.run(conn, stmt, info.writable)
        self.state = self.state.apply(stmt, ok, Server.flags(conn), d.target)
        self.synced[d.target] = self.state
        return d

    def open_transactions(self) -> dict[MemberId, Conn]:
        return {m: c for m, c in self.conns.items() if c.in_trans}


# --- scenarios: sequences through route + apply ----------------------------------------------------

Expect = MemberId | int  # a member, or the errno of a refusal

SCENARIOS: dict[str, tuple[Topology, MemberId | None, list[tuple[str, Expect]]]] = {
    "explicit transaction stays on the primary": (SP, None, [
        (SEL, S1), ("BEGIN", P), (SEL, P), ("UPDATE t SET a = 1", P), ("SHOW WARNINGS", P), ("COMMIT", P),
        (SEL, S1), ("SHOW WARNINGS", S1),
    ]),
    "autocommit=0 keeps every transaction on the primary": (SP, None, [
        ("SET autocommit = 0", S1), (SEL, P), (INS, P), (SEL, P), ("COMMIT", P), (SEL, P), ("ROLLBACK", P),
        ("SET autocommit = 1", P), (SEL, S1),
    ]),
    "autocommit=0 then SET autocommit=1 inside commits": (SP, None, [
        ("SET autocommit = 0", S1), (INS, P), ("SET autocommit = 1", P), (SEL, S1), (INS, P),
    ]),
    "read-only transaction stays on its secondary": (SP, None, [
        ("START TRANSACTION READ ONLY", S1), (SEL, S1), (INS, 1792), (SEL, S1), ("COMMIT", S1), (INS, P),
    ]),
    "BEGIN inside a read-only transaction moves to the primary": (SP, None, [
        ("START TRANSACTION READ ONLY", S1), (SEL, S1), ("BEGIN", P), (INS, P), ("COMMIT", P), (SEL, S1),
    ]),
    "temporary table pins until dropped": (SP, None, [
        ("USE db", S1), ("CREATE TEMPORARY TABLE tt (a INT)", P), (SEL, P), ("SELECT * FROM tt", P),
        ("DROP TEMPORARY TABLE tt", P), (SEL, S1),
    ]),
    "LAST_INSERT_ID pins the session to the primary": (SP, None, [
        (INS, P), ("SELECT LAST_INSERT_ID()", P), (SEL, P), (INS, P), ("BEGIN", P), ("COMMIT", P),
    ]),
    "LOCK TABLES pins until UNLOCK TABLES": (SP, None, [
        ("LOCK TABLES t WRITE", P), (SEL, P), ("UNLOCK TABLES", P), (SEL, S1),
    ]),
    "SET TRANSACTION READ ONLY then BEGIN": (SP, None, [
        ("SET TRANSACTION READ ONLY", P), ("BEGIN", P), (INS, P), ("COMMIT", P), (SEL, S1),
    ]),
    "SET TRANSACTION is consumed by one autocommit statement": (SP, None, [
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", P), ("SET @a = 1", P), (SEL, P), (SEL, S1),
    ]),
    "session read-only: BEGIN on a secondary": (SP, None, [
        ("SET SESSION TRANSACTION READ ONLY", S1), ("BEGIN", S1), (SEL, S1), ("COMMIT", S1),
        ("START TRANSACTION READ WRITE", P), ("COMMIT", P),
    ]),
    "multi-statement transaction": (SP, None, [
        ("BEGIN; INSERT INTO t VALUES (1); COMMIT", P), (SEL, S1),
        ("BEGIN; INSERT INTO t VALUES (1)", P), (SEL, P), ("COMMIT", P),
    ]),
    "multi-primary: a session stays on the local member": (MP, C, [
        (SEL, C), (INS, C), ("BEGIN", C), (SEL, C), ("COMMIT", C), ("START TRANSACTION READ ONLY", C),
        ("COMMIT", C), (SEL, C),
    ]),
    "multi-primary, no local: a session stays on its first member": (MP, None, [
        (SEL, A), (INS, A), (SEL, A), ("BEGIN", A), (INS, A), ("COMMIT", A), (INS, A),
    ]),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name: str) -> None:
    topology, local, steps = SCENARIOS[name]
    driver = Driver(topology, local)
    for n, (sql, expected) in enumerate(steps):
        d = driver.step(sql)
        got: Expect = d.target if d.target is not None else d.refusal.errno  # type: ignore[union-attr]
        assert got == expected, f"step {n} {sql!r}: {d.reason}"
    assert len(driver.open_transactions()) <= 1


def test_scenario_failover_during_a_transaction() -> None:
    driver = Driver(SP)
    assert driver.step("BEGIN").target == P
    assert driver.step(INS).target == P
    driver.topology = SP_PRIMARY_UNREACHABLE
    d = driver.step(SEL)
    assert d.refusal is not None and d.refusal.errno == 2013 and d.lost == P
    assert driver.state.transaction is None and driver.state.last_member is None  # member_gone ran
    assert driver.step(SEL).target == S1  # the session goes on, outside a transaction
    assert driver.step(INS).refusal is not None  # no primary: 1290
    driver.topology = Topology(
        (MemberInfo(S1, "h", 1, ON, PRI), MemberInfo(S2, "h", 2, ON, SEC), MemberInfo(P, "h", 3, REC, SEC)))
    assert driver.step(INS).target == S1  # the new primary


def test_scenario_pinned_member_lost_until_reset() -> None:
    driver = Driver(SP)
    assert driver.step("SELECT GET_LOCK('job', 0)").target == P
    driver.topology = SP_PRIMARY_UNREACHABLE
    d = driver.step(SEL)
    assert d.refusal is not None and d.refusal.errno == 2013 and d.lost == P
    assert driver.state.pin is not None and driver.state.pin.lost
    driver.topology = SP  # back ONLINE, but the connection holding the lock is gone
    d = driver.step(SEL)
    assert d.refusal is not None and d.refusal.errno == 2013
    driver.reset()
    assert driver.step(SEL).target == S1


def test_scenario_replays_session_state_on_each_member() -> None:
    driver = Driver(SP)
    for sql in ("USE db", "SET NAMES utf8mb4", "SET autocommit = 0", "SET @a = 1"):
        driver.step(sql)
    assert driver.step(SEL).target == P
    assert driver.synced[P].settings() == driver.state.settings()
    assert driver.conn(P).autocommit is False and driver.conn(P).in_trans
    driver.step("COMMIT")
    driver.step("SET autocommit = 1")
    assert driver.step(SEL).target == S1
    assert driver.conn(S1).autocommit is True  # replayed back to 1 on s1


# --- property: transactions stay on one member; writes never reach a SECONDARY -----------------------

PLAIN_POOL = [
    SEL, INS, "UPDATE t SET a = 2", "SELECT * FROM t FOR UPDATE", "BEGIN", "START TRANSACTION READ ONLY",
    "START TRANSACTION READ WRITE", "COMMIT", "ROLLBACK", "COMMIT AND CHAIN", "SET autocommit = 0",
    "SET autocommit = 1", "SET @a = 1", "USE db", "SET NAMES utf8mb4", "SHOW WARNINGS",
    "CREATE TABLE x (a INT PRIMARY KEY)", "SET TRANSACTION READ ONLY", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET SESSION TRANSACTION READ ONLY", "SET SESSION TRANSACTION READ WRITE", "CALL proc()", "SELECT 1; SELECT 2",
    "BEGIN; INSERT INTO t VALUES (1); COMMIT", "BEGIN; SELECT 1", "FROBNICATE",
    "SET group_replication_consistency = 'BEFORE'", "START TRANSACTION READ ONLY; SELECT 1",
]
PINNING_POOL = [
    "SET @b = NOW()", "SELECT LAST_INSERT_ID()", "CREATE TEMPORARY TABLE tt (a INT)", "DROP TEMPORARY TABLE tt",
    "LOCK TABLES t WRITE", "UNLOCK TABLES", "SELECT GET_LOCK('a', 0)", "PREPARE s FROM 'SELECT 1'",
    "DEALLOCATE PREPARE s", "SELECT a INTO @x FROM t", "XA START 'x'", "XA END 'x'", "XA COMMIT 'x' ONE PHASE",
]
POOL = PLAIN_POOL * 4 + PINNING_POOL  # pins hold until reset: keep them rarer so free sessions are explored
TOPOLOGIES = [SP, SP, SP, SP_NO_SECONDARY, SP_PRIMARY_UNREACHABLE, SP_SWITCHED, SP_WITHOUT_P, SP_NOTHING_ONLINE]
MP_TOPOLOGIES = [MP, MP, MP_A_UNREACHABLE, MP_NOTHING_ONLINE]

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("sql"), st.sampled_from(POOL), st.sampled_from([False, False, False, True])),
        st.tuples(st.just("topology"), st.integers(0, 7), st.just(False)),
        st.tuples(st.just("reset"), st.just(0), st.just(False)),
    ),
    max_size=40,
)


def _check_run(steps: list[tuple[str, object, bool]], topologies: list[Topology], local: MemberId | None,
               spread: int) -> None:
    driver = Driver(topologies[0], local, spread=spread)
    for kind, arg, fail in steps:
        if kind == "topology":
            driver.topology = topologies[int(arg) % len(topologies)]  # type: ignore[call-overload]
            continue
        if kind == "reset":
            driver.reset()
            continue
        sql = str(arg)
        stmt = classify(sql)
        before = driver.open_transactions()
        assert len(before) <= 1
        d = driver.step(sql, fail)
        if d.target is not None:
            # A transaction's statements all go to its member (finish_on: it is committed first).
            for member in before:
                assert d.target == member or d.finish_on == member, (sql, d.reason, member)
            # A write never goes to a SECONDARY in single-primary mode.
            info = driver.topology.member(d.target)
            assert info is not None and info.online
            if driver.topology.mode is Mode.SINGLE_PRIMARY and is_write(stmt):
                assert info.role is MemberRole.PRIMARY, (sql, d.reason)
        after = driver.open_transactions()
        assert len(after) <= 1
        txn = driver.state.transaction
        assert set(after) == ({txn.member} if txn is not None else set()), (sql, after, txn)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_steps, st.integers(0, 3))
def test_property_single_primary(steps: list[tuple[str, object, bool]], spread: int) -> None:
    _check_run(steps, TOPOLOGIES, None, spread)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_steps, st.sampled_from([None, A, C]), st.integers(0, 3))
def test_property_multi_primary(steps: list[tuple[str, object, bool]], local: MemberId | None, spread: int) -> None:
    _check_run(steps, MP_TOPOLOGIES, local, spread)


# --- the plain-read shortcut decides exactly as the rules do ---------------------------------

_SHORTCUT_SQL = [
    "SELECT 1", "SELECT c FROM sbtest1 WHERE id = 5", "select * from t for update", "SELECT * FROM t LOCK IN SHARE MODE",
    "SELECT LAST_INSERT_ID()", "SELECT @x := 1", "SELECT GET_LOCK('a', 1)", "SELECT @@warning_count",
    "SELECT a INTO @v FROM t", "SELECT FOUND_ROWS()", "WITH x AS (SELECT 1) SELECT * FROM x", "SHOW WARNINGS",
    "SELECT 1; SELECT 2", "(SELECT 1) UNION (SELECT 2)", "SELECT * FROM t WHERE id = ?", "SELECT NEXTVAL(s)",
    "SELECT @x", "SELECT * FROM t INTO OUTFILE '/tmp/x'", "INSERT INTO t VALUES (1)", "BEGIN",
]
_SHORTCUT_STATES = [FRESH, LAST_S1, LAST_P, AC0, TXN_P, TXN_P_IMPLICIT, RO_TXN_S1, RO_TXN_P, PINNED_P, PINNED_S1,
                    SessionState(next_transaction=NextTransaction(S1, True, None), last_member=S1),
                    SessionState(access_read_only=True)]
_SHORTCUT_TOPOLOGIES = [SP, SP_NO_SECONDARY, SP_PRIMARY_UNREACHABLE, SP_NOTHING_ONLINE, SP_SWITCHED, SP_WITHOUT_P, MP,
                        MP_A_UNREACHABLE, MP_NOTHING_ONLINE]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_SHORTCUT_SQL), st.sampled_from(_SHORTCUT_STATES), st.sampled_from(_SHORTCUT_TOPOLOGIES),
       st.sampled_from([None, SP_LOAD, MP_LOAD, {S2: 3}]), st.integers(0, 3), st.sampled_from([None, A, S1]))
def test_plain_read_shortcut_matches_the_rules(sql: str, state: SessionState, topology: Topology,
                                               load: dict[MemberId, int] | None, spread: int,
                                               local: MemberId | None) -> None:
    from router.routing import _Picker, _route_by_rules

    stmt = classify(sql)
    fast = route(stmt, state, topology, local=local, load=load, spread=spread)
    picker = _Picker(topology, load or {}, state.last_member, spread, local)
    assert fast == _route_by_rules(stmt, state, topology, picker, local, load or {}, spread)


# --- the router's poll installs only trusted tables (router.service.Router.refresh) ----------------


def test_refresh_installs_only_a_member_with_quorum() -> None:
    import asyncio

    from router.service import Router, RouterSettings

    answers: dict[tuple[str, int], PolledTable | Exception] = {}

    async def ask(address: tuple[str, int]) -> PolledTable:
        answer = answers[address]
        if isinstance(answer, Exception):
            raise answer
        return answer

    router = Router(RouterSettings(seeds=(("h", 1), ("h", 2), ("h", 3))))
    router._ask = ask  # type: ignore[method-assign]  # the poll's I/O, replaced by canned answers

    healthy = [("a", "h", 1, "ONLINE", "PRIMARY"), ("b", "h", 2, "ONLINE", "SECONDARY"),
               ("c", "h", 3, "ONLINE", "SECONDARY")]
    answers.update({("h", 1): polled(healthy, me="a"), ("h", 2): OSError("refused"), ("h", 3): OSError("refused")})
    asyncio.run(router.refresh())
    assert [m.member_id for m in router.topology.online()] == ["a", "b", "c"]

    # a cut off in a minority (b and c unreachable from it; nobody else answers): not installed,
    # nothing is routed on its word.
    minority = [healthy[0], ("b", "h", 2, "UNREACHABLE", "SECONDARY"), ("c", "h", 3, "UNREACHABLE", "SECONDARY")]
    answers[("h", 1)] = polled(minority, me="a", quorum=False)
    asyncio.run(router.refresh())
    assert router.topology.online() == () and [m.member_id for m in router.topology.members] == ["a", "b", "c"]
    assert router.last_poll_error is not None and "no quorum" in router.last_poll_error
    assert route(classify(INS), FRESH, router.topology).refusal.errno == 3783  # type: ignore[union-attr]

    # b and c, the majority, answer: their table (a UNREACHABLE, b elected) is installed.
    majority = [("a", "h", 1, "UNREACHABLE", "PRIMARY"), ("b", "h", 2, "ONLINE", "PRIMARY"),
                ("c", "h", 3, "ONLINE", "SECONDARY")]
    answers[("h", 2)] = polled([("a", "h", 1, "UNREACHABLE", ""), majority[1], majority[2]], me="b")
    asyncio.run(router.refresh())
    assert route(classify(INS), FRESH, router.topology).target == "b"

    # An empty table (a member that lost its view) is never installed.
    answers.update({("h", 1): polled([], me=None), ("h", 2): polled([], me=None), ("h", 3): polled([], me=None)})
    asyncio.run(router.refresh())
    assert router.topology.members and router.topology.online() == ()
    assert "empty member table" in (router.last_poll_error or "")
