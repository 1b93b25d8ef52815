"""What a client session has set, where its transaction runs, and what pins it to one member.

A router session talks to several members (reads spread over secondaries, writes on the primary),
each through its own member connection. `SessionState` is the explicit record (STYLE 16) of
everything that must be the same on every one of those connections, and of everything that
exists on one connection only.

Theory of operation
-------------------

1. **Settings are replayed.** Session system variables, user variables, the current schema, the
   character set, autocommit, the session's transaction characteristics, the consistency level
   and the active role are recorded from the statements that set them, *after* they succeeded.
   `replay_sql()` gives the statements that bring a fresh member connection to the same state;
   `replay_sql(since=older)` gives only what changed since a connection was last brought to
   `older` (the I/O side keeps, per member connection, the state it last replayed). Values are
   replayed from their literal (re-quoted so that sql_mode's quoting rules cannot change them);
   a value that is not a plain literal (`NOW()`, `@@sql_mode`, a subquery) cannot be replayed
   from the text.

2. **Connection-local state pins.** Temporary tables, LOCK TABLES, user-level locks (GET_LOCK),
   connection-scoped functions (LAST_INSERT_ID(), FOUND_ROWS(), ROW_COUNT(), CONNECTION_ID()…),
   SQL prepared statements, XA transactions, and any value the router could not replay live on
   the connection that made them. The session is then *pinned* to that member (`Pin`, with every `PinReason` that
   holds it): the router sends it nothing else until the reasons are gone. Temporary tables,
   table locks and prepared statements are tracked by name and release the pin when the last one
   goes; the other reasons hold until `reset()` (COM_RESET_CONNECTION / COM_CHANGE_USER).

3. **Transactions follow the server.** Whether a transaction is open is taken from the server's
   status flags (SERVER_STATUS_IN_TRANS, …_IN_TRANS_READONLY, …_AUTOCOMMIT) of the statement's
   final OK/EOF packet, not guessed from the SQL: `SELECT` under autocommit=0 opens one, DDL
   commits one, a CALL may do either. The statement kind is only used to check the flags: a
   BEGIN whose OK shows no open transaction is a bug somewhere, and is reported as one.

4. **Transitions are pure.** `apply(statement, ok, status_flags, target)` returns a new state;
   the state itself is frozen. Settings change only when the statement succeeded (MySQL's SET is
   all-or-nothing). Two things move on failure too, on purpose: `last_member` (SHOW WARNINGS
   after a failed statement must reach the member that failed it), and a multi-statement text
   that failed part-way after changing session state pins the session (which of its parts ran is
   not known, so its state is not replayable).

5. **Everything is bounded.** At most SESSION_VARIABLES_MAX system variables and
   USER_VARIABLES_MAX user variables are tracked, each value at most SESSION_VALUE_CHARS_MAX
   characters, at most TEMPORARY_TABLES_MAX temporary tables and PREPARED_STATEMENTS_MAX SQL
   prepared statements by name. State beyond a bound is not tracked: the session is pinned
   instead (PinReason.STATE_BOUND), which is always correct, only less flexible.

6. **Impossible combinations are bugs.** A state whose fields contradict each other (a
   transaction on one member and a pin on another, a pin reason without its cause, …), or a
   statement reported as run on a member the state forbids, raises `RouterBug` with a "[BUG] …"
   message naming what was seen (vitess safe_session style). It is never silently repaired.

Assumptions: a fresh member connection has no default schema and the client's handshake
character set, and every member has the same server defaults. A schema dropped by DROP DATABASE
cannot be "un-USEd" on another connection (`replay_sql(since=…)` then leaves that connection on
the dropped schema). One-shot `SET TRANSACTION` characteristics are not replayed: the router
keeps the session on the member that received them until the next transaction is over
(`NextTransaction`); any statement that completes outside a transaction consumes them, SET and
USE excepted.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace

from replication.consistency import VARIABLE as CONSISTENCY_VARIABLE
from replication.consistency import InvalidLevel, Level, parse_level
from replication.protocol.constants import Status
from replication.statements import Assignment, Kind, Scope, Statement

from router.topology import MemberId

__all__ = [
    "SESSION_VARIABLES_MAX",
    "USER_VARIABLES_MAX",
    "SESSION_VALUE_CHARS_MAX",
    "SESSION_NAME_CHARS_MAX",
    "TEMPORARY_TABLES_MAX",
    "PREPARED_STATEMENTS_MAX",
    "RouterBug",
    "PinReason",
    "Pin",
    "Transaction",
    "NextTransaction",
    "Charset",
    "SessionState",
    "is_diagnostics",
    "changes_session",
]

SESSION_VARIABLES_MAX = 64  # distinct session system variables tracked for replay
USER_VARIABLES_MAX = 64  # distinct user variables tracked for replay
SESSION_VALUE_CHARS_MAX = 1024  # longest replayed value (rendered SQL text), schema or role
SESSION_NAME_CHARS_MAX = 64  # longest variable name (MySQL's own limit for identifiers)
TEMPORARY_TABLES_MAX = 64  # temporary tables tracked by name (to release the pin when all are dropped)
PREPARED_STATEMENTS_MAX = 64  # SQL prepared statements tracked by name

_IN_TRANS = int(Status.IN_TRANS)
_AUTOCOMMIT = int(Status.AUTOCOMMIT)
_IN_TRANS_READONLY = int(Status.IN_TRANS_READONLY)
_DB_DROPPED = int(Status.DB_DROPPED)


class RouterBug(AssertionError):
    """A combination the router's own rules make impossible: a programmer error, never a client's.

    Raised (not asserted: `-O` must not strip it) with a "[BUG] …" message naming what was seen.
    """


class PinReason(enum.Enum):
    """Why a session must stay on one member connection."""

    TEMPORARY_TABLE = "temporary table"
    TABLE_LOCK = "LOCK TABLES"
    USER_LOCK = "user-level lock (GET_LOCK() and friends)"
    SESSION_FUNCTION = "connection-scoped function (LAST_INSERT_ID(), FOUND_ROWS(), ROW_COUNT(), CONNECTION_ID(), …)"
    USER_VARIABLE = "user variable whose value cannot be replayed"
    UNTRACKED_SETTING = "session setting whose value cannot be replayed"
    PREPARED_STATEMENT = "SQL prepared statement"
    XA_TRANSACTION = "XA transaction (XA START … XA COMMIT belong to one connection)"
    STATE_BOUND = "more session state than the router tracks"
    UNKNOWN_STATE = "multi-statement text that changed session state failed part-way"


# Reasons that are released when their cause is gone (the cause is tracked in its own field);
# every other reason holds until reset().
_DERIVED_REASONS = frozenset({PinReason.TEMPORARY_TABLE, PinReason.TABLE_LOCK, PinReason.PREPARED_STATEMENT})


@dataclass(frozen=True, slots=True)
class Pin:
    """The member holding the session's connection-local state, and why.

    `lost`: the connection to `member` is gone (see `SessionState.member_gone`); its state went
    with it, so every statement is refused until `SessionState.reset()`.
    """

    member: MemberId
    reasons: frozenset[PinReason]
    lost: bool = False

    def __post_init__(self) -> None:
        if not self.reasons:
            raise RouterBug(f"[BUG] pin to {self.member} without a reason")

    def describe(self) -> str:
        return ", ".join(sorted(r.value for r in self.reasons))


@dataclass(frozen=True, slots=True)
class Transaction:
    """The open transaction: the member it runs on, whether it is read-only, whether a client
    statement (BEGIN, START TRANSACTION, XA START) opened it rather than autocommit=0."""

    member: MemberId
    read_only: bool
    explicit: bool


@dataclass(frozen=True, slots=True)
class NextTransaction:
    """Characteristics set by `SET TRANSACTION …` (no SESSION/GLOBAL) for the next transaction
    only, on `member`'s connection. `read_only` None: the access mode was not given."""

    member: MemberId
    read_only: bool | None
    isolation: str | None


@dataclass(frozen=True, slots=True)
class Charset:
    """The last SET NAMES / SET CHARACTER SET: `statement` is "NAMES" or "CHARACTER SET",
    `value` the rest of the clause as written (e.g. "utf8mb4 COLLATE utf8mb4_bin")."""

    statement: str
    value: str

    def sql(self) -> str:
        return f"SET {self.statement} {self.value}"


_EMPTY_REASONS: frozenset[PinReason] = frozenset()

# Variables replaced wholesale by SET NAMES / SET CHARACTER SET.
_CHARSET_VARIABLES = frozenset(
    {"character_set_client", "character_set_results", "character_set_connection", "collation_connection"}
)
# The session transaction characteristics have two spellings each: SET SESSION TRANSACTION … and
# a system variable (MySQL's transaction_*, MariaDB's tx_*). Only one spelling is kept at a time,
# so the order of replay cannot matter.
_ISOLATION_VARIABLES = frozenset({"transaction_isolation", "tx_isolation"})
_ACCESS_VARIABLES = frozenset({"transaction_read_only", "tx_read_only"})
# Setting one of a pair sets the other on the server (a collation implies its character set and a
# character set its default collation), so only the last one set is kept: replaying both in the
# order of first setting could end on the wrong one.
_COUPLED_VARIABLES = {
    "character_set_connection": "collation_connection",
    "collation_connection": "character_set_connection",
    "character_set_server": "collation_server",
    "collation_server": "character_set_server",
    "character_set_database": "collation_database",
    "collation_database": "character_set_database",
}
# Variables with one-shot or connection-identity meaning: replaying them elsewhere would be wrong.
_UNREPLAYABLE_VARIABLES = frozenset(
    {"insert_id", "last_insert_id", "identity", "rand_seed1", "rand_seed2", "gtid_next", "pseudo_thread_id"}
)
# Assignment names that are keyword forms or tracked in their own field, never as variables.
_RESERVED_NAMES = frozenset({"names", "character set", "transaction", "role", "resource group", "autocommit",
                             CONSISTENCY_VARIABLE})
# Bare words that are functions, not constants (CURRENT_USER needs no parentheses).
_FUNCTION_WORDS = frozenset(
    {"CURRENT_USER", "CURRENT_ROLE", "CURRENT_TIMESTAMP", "CURRENT_DATE", "CURRENT_TIME", "LOCALTIME",
     "LOCALTIMESTAMP", "UTC_DATE", "UTC_TIME", "UTC_TIMESTAMP", "SYSDATE", "USER", "NOW"}
)
_ISOLATION_LEVELS = frozenset({"READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"})
_DIAGNOSTIC_VARIABLES = frozenset({"warning_count", "error_count"})
_SESSION_KINDS = frozenset({Kind.SET, Kind.USE, Kind.EMPTY, Kind.DEALLOCATE})
# Statements whose effect on the state is read from the statement itself (never the fast path).
_CONTROL_KINDS = frozenset({Kind.SET, Kind.USE, Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK, Kind.MULTI, Kind.XA, Kind.DDL,
                            Kind.LOCK_TABLES, Kind.UNLOCK_TABLES, Kind.PREPARE, Kind.DEALLOCATE})
_SIMPLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)?\Z")
_NUMBER_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\Z")
_TRUE_WORDS = frozenset({"1", "ON", "TRUE"})


def is_diagnostics(stmt: Statement) -> bool:
    """Whether `stmt` reads the previous statement's diagnostics (SHOW WARNINGS / ERRORS / COUNT,
    GET DIAGNOSTICS, @@warning_count, @@error_count): it belongs on the member that ran the
    previous statement, and pins nothing by itself."""
    if not stmt.session_functions:
        return False
    if stmt.kind is Kind.SHOW:
        return True
    return any(v.name in _DIAGNOSTIC_VARIABLES for v in stmt.system_variables)


def changes_session(stmt: Statement) -> bool:
    """Whether `stmt` (any part of it) may change settings this module replays or add or release
    a pin. (BEGIN's release of table locks is not counted: it only matters while TABLE_LOCK
    already pins the session, and a pin kept a little longer is harmless.)"""
    parts = stmt.parts if stmt.kind is Kind.MULTI else (stmt,)
    for p in parts:
        if p.kind in (Kind.SET, Kind.USE, Kind.LOCK_TABLES, Kind.UNLOCK_TABLES, Kind.PREPARE, Kind.DEALLOCATE,
                      Kind.XA):
            return True
        if p.temporary_table or p.uses_locking_functions or p.assigns_user_variables:
            return True
        if p.session_functions and not is_diagnostics(p):
            return True
        if p.kind is Kind.DDL and p.verb == "DROP TABLE":
            return True
    return False


def quote_identifier(name: str) -> str:
    """`name` as a backquoted identifier."""
    return "`" + name.replace("`", "``") + "`"


def _variable_sql(name: str) -> str:
    """A system variable name as SQL: plain when it is a plain (dotted) name, else backquoted."""
    if _SIMPLE_NAME_RE.match(name):
        return name
    return ".".join(quote_identifier(part) for part in name.split("."))


def _user_variable_sql(name: str) -> str:
    if _SIMPLE_NAME_RE.match(name) and "." not in name:
        return "@" + name
    return "@" + quote_identifier(name)


def _quote_string(text: str) -> str | None:
    """A string literal that means `text` whatever sql_mode says about backslashes and double
    quotes, or None if there is none that simple (a backslash in the value, invalid UTF-8)."""
    if "\\" in text:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return "'" + text.replace("'", "''") + "'"


def _render(a: Assignment, *, user: bool) -> str | None:
    """The SQL text that gives the variable the value `a` gave it, or None if that is not a
    constant known from the text (see the module docstring, point 1)."""
    literal = a.literal
    if literal is None:
        return None
    if isinstance(literal, (int, float)):
        return a.value  # number tokens (decimals, hex, TRUE/FALSE) read the same in every sql_mode
    v = a.value
    if v[:1] in ("'", '"') or (v[:1] in ("N", "n") and v[1:2] in ("'", '"')):
        return _quote_string(literal)
    if user:  # a bare word assigned to a user variable: only NULL is a constant
        return "NULL" if literal == "NULL" else None
    if literal in _FUNCTION_WORDS:
        return None
    return v


def _render_reported(value: str) -> str | None:
    """A value the server reported through session-state tracking, as SQL."""
    if _NUMBER_RE.match(value):
        return value
    return _quote_string(value)


def _parse_characteristics(text: str) -> tuple[str | None, bool | None] | None:
    """'ISOLATION LEVEL READ COMMITTED, READ ONLY' → ('READ COMMITTED', True); None if not understood."""
    isolation: str | None = None
    read_only: bool | None = None
    for part in text.split(","):
        words = part.upper().split()
        if words[:2] == ["ISOLATION", "LEVEL"] and " ".join(words[2:]) in _ISOLATION_LEVELS:
            isolation = " ".join(words[2:])
        elif words == ["READ", "ONLY"]:
            read_only = True
        elif words == ["READ", "WRITE"]:
            read_only = False
        else:
            return None
    return isolation, read_only


def _temp_key(schema: str | None, current: str | None, name: str) -> tuple[str, str]:
    return (schema if schema is not None else (current or ""), name)


@dataclass(frozen=True, slots=True)
class SessionState:
    """The state of one client session, as the router needs it. Immutable; see the module
    docstring for the rules. Build the initial state with `SessionState()` (optionally with the
    handshake's `schema`), then feed every executed statement to `apply`.

    Fields:
        schema: current schema (USE, COM_INIT_DB), None for none.
        charset: the last SET NAMES / SET CHARACTER SET, None if never set.
        system_variables: session system variables set, (name, SQL value) in order of first
            setting; the last value wins. Names are lower case.
        user_variables: user variables assigned from a constant, (name without @, SQL value).
        autocommit: the session's autocommit.
        isolation: SET SESSION TRANSACTION ISOLATION LEVEL <isolation>, e.g. "READ COMMITTED".
        access_read_only: SET SESSION TRANSACTION READ ONLY (True) / READ WRITE (False).
        consistency: group_replication_consistency set by the session; None = group default.
        role: SET ROLE <role> as written.
        transaction: the open transaction, if any.
        next_transaction: pending one-shot characteristics (SET TRANSACTION …), if any.
        pin: the member holding connection-local state, if any.
        temporary_tables: (schema, name) of the temporary tables created and not dropped.
        table_locks: LOCK TABLES held.
        prepared_statements: names (lower case) of SQL prepared statements.
        last_member: the member the previous statement ran on (even if it failed).
    """

    schema: str | None = None
    charset: Charset | None = None
    system_variables: tuple[tuple[str, str], ...] = ()
    user_variables: tuple[tuple[str, str], ...] = ()
    autocommit: bool = True
    isolation: str | None = None
    access_read_only: bool | None = None
    consistency: Level | None = None
    role: str | None = None
    transaction: Transaction | None = None
    next_transaction: NextTransaction | None = None
    pin: Pin | None = None
    temporary_tables: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    table_locks: bool = False
    prepared_statements: frozenset[str] = field(default_factory=frozenset)
    last_member: MemberId | None = None

    def __post_init__(self) -> None:
        self._check()

    # --- invariants ---------------------------------------------------------------------------

    def _check(self) -> None:
        def bug(message: str) -> RouterBug:
            return RouterBug(f"[BUG] session state: {message}")

        for label, items, limit in (("system", self.system_variables, SESSION_VARIABLES_MAX),
                                    ("user", self.user_variables, USER_VARIABLES_MAX)):
            if len(items) > limit:
                raise bug(f"{len(items)} {label} variables tracked, bound is {limit}")
            names = [n for n, _ in items]
            if len(set(names)) != len(names):
                raise bug(f"{label} variable tracked twice: {names}")
            for name, value in items:
                if len(value) > SESSION_VALUE_CHARS_MAX or len(name) > SESSION_NAME_CHARS_MAX:
                    raise bug(f"{label} variable {name[:64]!r} over the tracking bounds")
        reserved = _RESERVED_NAMES.intersection(n for n, _ in self.system_variables)
        if reserved:
            raise bug(f"{sorted(reserved)} tracked as plain variables")
        if self.isolation is not None and _ISOLATION_VARIABLES.intersection(n for n, _ in self.system_variables):
            raise bug("isolation level tracked both as SET SESSION TRANSACTION and as a variable")
        if self.access_read_only is not None and _ACCESS_VARIABLES.intersection(n for n, _ in self.system_variables):
            raise bug("access mode tracked both as SET SESSION TRANSACTION and as a variable")
        if len(self.temporary_tables) > TEMPORARY_TABLES_MAX or len(self.prepared_statements) > PREPARED_STATEMENTS_MAX:
            raise bug("more temporary tables or prepared statements tracked than the bounds allow")
        reasons = self.pin.reasons if self.pin is not None else _EMPTY_REASONS
        for cause, reason in ((bool(self.temporary_tables), PinReason.TEMPORARY_TABLE),
                              (self.table_locks, PinReason.TABLE_LOCK),
                              (bool(self.prepared_statements), PinReason.PREPARED_STATEMENT)):
            if cause != (reason in reasons):
                raise bug(f"pin reason {reason.name} {'missing' if cause else 'without its cause'}")
        txn, pin, nxt = self.transaction, self.pin, self.next_transaction
        if txn is not None and pin is not None:
            if pin.lost:
                raise bug(f"transaction on {txn.member} while the pinned state on {pin.member} is lost")
            if pin.member != txn.member:
                raise bug(f"current session pinned to {pin.member} ({pin.describe()}) but its transaction "
                          f"runs on {txn.member}")
        if nxt is not None and txn is not None:
            raise bug(f"one-shot transaction characteristics pending on {nxt.member} inside a transaction "
                      f"on {txn.member}")
        if nxt is not None and pin is not None and pin.member != nxt.member:
            raise bug(f"session pinned to {pin.member} but its next transaction's characteristics are on "
                      f"{nxt.member}")

    # --- reading ------------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self.transaction is not None

    @property
    def pinned_member(self) -> MemberId | None:
        """The member the session must stay on (a lost pin included), or None."""
        return self.pin.member if self.pin is not None else None

    @property
    def session_read_only(self) -> bool:
        """Whether the session's transactions are read-only by default (SET SESSION TRANSACTION
        READ ONLY, or transaction_read_only / tx_read_only set to ON)."""
        if self.access_read_only is not None:
            return self.access_read_only
        for name, value in self.system_variables:
            if name in _ACCESS_VARIABLES:
                return value.strip("'").upper() in _TRUE_WORDS
        return False

    def settings(self) -> tuple[object, ...]:
        """The replayable part of the state, for comparisons: two states with equal settings put a
        member connection in the same state. Variables compare as mappings: their order only
        matters within the groups replay_sql orders itself (SET NAMES before the character-set
        variables; coupled variables and the two spellings of the transaction characteristics are
        never tracked together)."""
        return (self.schema, self.charset, frozenset(self.system_variables), frozenset(self.user_variables),
                self.autocommit, self.isolation, self.access_read_only, self.consistency, self.role)

    def same_settings(self, other: SessionState, *, consistency: bool = True) -> bool:
        """Whether `other` puts a connection in the same state, without building `settings()`
        (the router asks on every statement that moves between member connections). True
        implies equal settings; variables set in another order compare unequal (then a replay
        finds nothing to send). `consistency` False: the level does not count (a connection to
        a plain server, which has none; see replay_sql)."""
        return (self.system_variables == other.system_variables and self.user_variables == other.user_variables
                and self.schema == other.schema and self.charset == other.charset
                and self.autocommit == other.autocommit and self.isolation == other.isolation
                and self.access_read_only == other.access_read_only and self.role == other.role
                and (not consistency or self.consistency == other.consistency))

    # --- replay -------------------------------------------------------------------------------

    def replay_sql(self, since: SessionState | None = None, *, consistency: bool = True) -> list[str]:
        """The statements that bring a member connection to this state's settings.

        Args:
            since: the state the connection was last brought to (an earlier state of this same
                session, with no reset() in between), or None for a fresh connection.
            consistency: False for a connection to a plain server (a member's backend, read
                directly), which has no group_replication_consistency to set.
        Returns: SQL texts to run in order (each a single statement; the I/O side may join
            them with ';' on a connection with CLIENT_MULTI_STATEMENTS). Empty when nothing
            differs. Pins, transactions and pending one-shot characteristics are never replayed:
            they belong to one connection.
        Order: USE, then SET NAMES / CHARACTER SET (which resets the character-set variables),
        then system variables in order of first setting, autocommit, transaction
        characteristics, consistency level, role, and user variables last.
        """
        base = since if since is not None else _FRESH
        out: list[str] = []
        if self.schema is not None and self.schema != base.schema:
            out.append(f"USE {quote_identifier(self.schema)}")
        base_vars = dict(base.system_variables)
        charset_reset = self.charset is not None and (
            self.charset != base.charset
            or any(name in _CHARSET_VARIABLES and dict(self.system_variables).get(name) != value
                   for name, value in base.system_variables)
        )
        if charset_reset:
            assert self.charset is not None
            out.append(self.charset.sql())
        for name, value in self.system_variables:
            if base_vars.get(name) != value or (charset_reset and name in _CHARSET_VARIABLES):
                out.append(f"SET SESSION {_variable_sql(name)} = {value}")
        if self.autocommit != base.autocommit:
            out.append(f"SET autocommit = {1 if self.autocommit else 0}")
        if self.isolation is not None and self.isolation != base.isolation:
            out.append(f"SET SESSION TRANSACTION ISOLATION LEVEL {self.isolation}")
        if self.access_read_only is not None and self.access_read_only != base.access_read_only:
            out.append(f"SET SESSION TRANSACTION {'READ ONLY' if self.access_read_only else 'READ WRITE'}")
        if consistency and self.consistency != base.consistency:
            value = "DEFAULT" if self.consistency is None else f"'{self.consistency.name}'"
            out.append(f"SET SESSION {CONSISTENCY_VARIABLE} = {value}")
        if self.role is not None and self.role != base.role:
            out.append(f"SET ROLE {self.role}")
        base_users = dict(base.user_variables)
        for name, value in self.user_variables:
            if base_users.get(name) != value:
                out.append(f"SET {_user_variable_sql(name)} = {value}")
        return out

    # --- transitions --------------------------------------------------------------------------

    def apply(
        self,
        stmt: Statement,
        ok: bool,
        status_flags: int,
        target: MemberId,
        *,
        reported: Mapping[str, str] | None = None,
    ) -> SessionState:
        """The state after `stmt` ran on `target`.

        Args:
            stmt: the classification of the text the client sent (Kind.MULTI for several).
            ok: whether it succeeded (for a multi-statement text: every part did).
            status_flags: server status flags of its final OK/EOF packet (ignored when not ok).
            target: the member it ran on.
            reported: session system variables the server reported after it (session-state
                tracking), name (lower case) → value; lets a value set by an expression be
                replayed. Optional.
        Returns: the new state (`self` when nothing changed).
        Raises RouterBug when `target` is a member the state does not allow (a pinned session
        elsewhere, a transaction elsewhere without an implicit commit), when the status flags
        contradict the statement (BEGIN without an open transaction, COMMIT with one), or
        when the result would break an invariant.
        """
        self._check_target(stmt, target)
        if not ok:
            if stmt.kind is Kind.MULTI and changes_session(stmt):
                return _Draft(self).pinned(target, PinReason.UNKNOWN_STATE).freeze(target)
            return self if self.last_member == target else replace(self, last_member=target)
        if (
            stmt.kind not in _CONTROL_KINDS
            and not stmt.implicit_commit
            and self.next_transaction is None
            and (status_flags & (_IN_TRANS | _AUTOCOMMIT | _DB_DROPPED))
            == ((_IN_TRANS if self.transaction is not None else 0) | (_AUTOCOMMIT if self.autocommit else 0))
            and not changes_session(stmt)
        ):
            # The hot path: a read or write that leaves everything as it was, but maybe where
            # the previous statement ran (no invariant depends on that: no re-check).
            if self.last_member == target:
                return self
            moved = object.__new__(SessionState)
            for name in _FIELD_NAMES:
                object.__setattr__(moved, name, getattr(self, name))
            object.__setattr__(moved, "last_member", target)
            return moved
        draft = _Draft(self)
        parts = stmt.parts if stmt.kind is Kind.MULTI else (stmt,)
        for part in parts:
            draft.track(part, target, reported)
        draft.follow_server(stmt, parts, status_flags, target)
        return draft.freeze(target)

    def pins_for(self, stmt: Statement) -> frozenset[PinReason]:
        """The pin reasons `stmt` would add if it succeeded (without server-reported values), so
        that the router can send it where a pin may live. Empty for most statements."""
        if not changes_session(stmt):
            return _EMPTY_REASONS
        draft = _Draft(self, predicting=True)
        for part in stmt.parts if stmt.kind is Kind.MULTI else (stmt,):
            draft.track(part, self.last_member or MemberId("?"), None)
        current = self.pin.reasons if self.pin is not None else _EMPTY_REASONS
        return frozenset(draft.reasons() - current)

    def with_schema(self, schema: str | None) -> SessionState:
        """The state after a successful COM_INIT_DB (or the handshake's database)."""
        if schema is not None and len(schema) > SESSION_VALUE_CHARS_MAX:
            raise RouterBug(f"[BUG] schema name of {len(schema)} characters accepted by a server")
        return replace(self, schema=schema)

    def member_gone(self, member: MemberId) -> SessionState:
        """The state after the I/O side lost or closed its connection to `member` (the member
        left, the connection broke, or it was reset after a refusal): a transaction or pending
        one-shot characteristics there are over, a pin there is marked lost (the session is
        refused until reset()), and `member` is no longer the last member."""
        txn = None if self.transaction is not None and self.transaction.member == member else self.transaction
        nxt = (None if self.next_transaction is not None and self.next_transaction.member == member
               else self.next_transaction)
        pin = self.pin
        if pin is not None and pin.member == member and not pin.lost:
            pin = replace(pin, lost=True)
        last = None if self.last_member == member else self.last_member
        return replace(self, transaction=txn, next_transaction=nxt, pin=pin, last_member=last)

    def reset(self) -> SessionState:
        """The state after COM_RESET_CONNECTION or COM_CHANGE_USER: nothing set, nothing pinned.
        (The I/O side resets every member connection of the session too.)"""
        return _FRESH

    # --- helpers ------------------------------------------------------------------------------

    def _check_target(self, stmt: Statement, target: MemberId) -> None:
        pin = self.pin
        if pin is not None:
            if pin.lost:
                raise RouterBug(f"[BUG] a statement ran on {target} for a session whose pinned state on "
                                f"{pin.member} is lost ({pin.describe()})")
            if pin.member != target:
                raise RouterBug(f"[BUG] current session pinned to {pin.member} ({pin.describe()}) but a "
                                f"statement ran on {target}")
        txn = self.transaction
        if txn is not None and txn.member != target and not _implicitly_commits(stmt):
            what = stmt.verb or stmt.kind.value
            raise RouterBug(f"[BUG] current session in a transaction on {txn.member} but {what} ran on {target}")
        nxt = self.next_transaction
        if nxt is not None and nxt.member != target:
            raise RouterBug(f"[BUG] next transaction's characteristics are on {nxt.member} but a statement ran "
                            f"on {target}")


_FIELD_NAMES = tuple(f.name for f in fields(SessionState))


def _implicitly_commits(stmt: Statement) -> bool:
    """Whether `stmt` ends the open transaction before doing anything else (its first part does)."""
    first = stmt.parts[0] if stmt.kind is Kind.MULTI and stmt.parts else stmt
    return first.implicit_commit or first.kind is Kind.BEGIN


class _Draft:
    """A mutable copy of a SessionState while one statement is applied (ordered dicts for the
    variables), frozen back into a SessionState by `freeze`."""

    __slots__ = ("base", "predicting", "schema", "charset", "sysvars", "uservars", "autocommit", "isolation", "access",
                 "consistency", "role", "transaction", "next_transaction", "sticky", "temporary", "locks",
                 "prepared")

    def __init__(self, base: SessionState, *, predicting: bool = False) -> None:
        self.base = base
        self.predicting = predicting  # before the server saw the statement: never raise on its values
        self.schema = base.schema
        self.charset = base.charset
        self.sysvars = dict(base.system_variables)
        self.uservars = dict(base.user_variables)
        self.autocommit = base.autocommit
        self.isolation = base.isolation
        self.access = base.access_read_only
        self.consistency = base.consistency
        self.role = base.role
        self.transaction = base.transaction
        self.next_transaction = base.next_transaction
        self.sticky: set[PinReason] = set(base.pin.reasons - _DERIVED_REASONS) if base.pin is not None else set()
        self.temporary = set(base.temporary_tables)
        self.locks = base.table_locks
        self.prepared = set(base.prepared_statements)

    def pinned(self, target: MemberId, reason: PinReason) -> _Draft:
        self.sticky.add(reason)
        return self

    def reasons(self) -> set[PinReason]:
        out = set(self.sticky)
        if self.temporary:
            out.add(PinReason.TEMPORARY_TABLE)
        if self.locks:
            out.add(PinReason.TABLE_LOCK)
        if self.prepared:
            out.add(PinReason.PREPARED_STATEMENT)
        return out

    # --- one statement's effects on settings and pins -----------------------------------------

    def track(self, stmt: Statement, target: MemberId, reported: Mapping[str, str] | None) -> None:
        kind = stmt.kind
        if kind is Kind.SET:
            for a in stmt.assignments:
                self._assignment(a, target, reported)
        elif kind is Kind.USE:
            if stmt.schema is None or len(stmt.schema) > SESSION_VALUE_CHARS_MAX:
                self.sticky.add(PinReason.STATE_BOUND)
            else:
                self.schema = stmt.schema
        elif kind is Kind.DDL:
            self._ddl(stmt)
        elif kind is Kind.LOCK_TABLES:
            self.locks = True
        elif kind is Kind.UNLOCK_TABLES:
            self.locks = False
        elif kind is Kind.BEGIN:
            self.locks = False  # starting a transaction releases table locks (MySQL manual, LOCK TABLES)
        elif kind is Kind.PREPARE and stmt.prepared_name is not None:
            name = stmt.prepared_name.lower()
            if name in self.prepared or len(self.prepared) < PREPARED_STATEMENTS_MAX:
                self.prepared.add(name)
            else:
                self.sticky.add(PinReason.STATE_BOUND)
        elif kind is Kind.DEALLOCATE and stmt.prepared_name is not None:
            self.prepared.discard(stmt.prepared_name.lower())
        elif kind is Kind.XA:
            self.sticky.add(PinReason.XA_TRANSACTION)
        if stmt.uses_locking_functions:
            self.sticky.add(PinReason.USER_LOCK)
        if stmt.session_functions and not is_diagnostics(stmt):
            self.sticky.add(PinReason.SESSION_FUNCTION)
        if stmt.assigns_user_variables and kind is not Kind.SET:
            self.sticky.add(PinReason.USER_VARIABLE)  # SELECT … INTO @x, @x := …, CALL p(@x), …

    def _ddl(self, stmt: Statement) -> None:
        keys = [_temp_key(t.schema, self.schema, t.name) for t in stmt.tables]
        if stmt.temporary_table and stmt.verb.startswith("CREATE"):
            if not keys:
                self.sticky.add(PinReason.STATE_BOUND)  # a temporary table the router cannot name
            for key in keys:
                if key in self.temporary or len(self.temporary) < TEMPORARY_TABLES_MAX:
                    self.temporary.add(key)
                else:
                    self.sticky.add(PinReason.STATE_BOUND)
        elif stmt.verb == "DROP TABLE":  # DROP [TEMPORARY] TABLE: a temporary table shadows a base table
            self.temporary.difference_update(keys)

    def _assignment(self, a: Assignment, target: MemberId, reported: Mapping[str, str] | None) -> None:
        scope, name = a.scope, a.name
        if scope in (Scope.GLOBAL, Scope.PERSIST, Scope.PERSIST_ONLY):
            return  # server-wide: not session state
        if scope is Scope.NEXT_TRANSACTION:
            parsed = _parse_characteristics(a.value)
            if parsed is None:
                self.sticky.add(PinReason.UNTRACKED_SETTING)
                return
            isolation, read_only = parsed
            old = self.next_transaction
            if old is not None and old.member == target:
                isolation = isolation if isolation is not None else old.isolation
                read_only = read_only if read_only is not None else old.read_only
            self.next_transaction = NextTransaction(target, read_only, isolation)
            return
        if scope is Scope.USER:
            value = _render(a, user=True)
            if value is None:
                self.uservars.pop(name, None)
                self.sticky.add(PinReason.USER_VARIABLE)
            elif len(value) > SESSION_VALUE_CHARS_MAX or len(name) > SESSION_NAME_CHARS_MAX or (
                    name not in self.uservars and len(self.uservars) >= USER_VARIABLES_MAX):
                self.uservars.pop(name, None)
                self.sticky.add(PinReason.STATE_BOUND)
            else:
                self.uservars[name] = value
            return
        # Scope.SESSION
        if name in ("names", "character set"):
            if len(a.value) > SESSION_VALUE_CHARS_MAX:
                self.sticky.add(PinReason.STATE_BOUND)
                return
            self.charset = Charset("NAMES" if name == "names" else "CHARACTER SET", a.value)
            for var in _CHARSET_VARIABLES:
                self.sysvars.pop(var, None)
        elif name == "transaction":
            parsed = _parse_characteristics(a.value)
            if parsed is None:
                self.sticky.add(PinReason.UNTRACKED_SETTING)
                return
            isolation, read_only = parsed
            if isolation is not None:
                self.isolation = isolation
                for var in _ISOLATION_VARIABLES:
                    self.sysvars.pop(var, None)
            if read_only is not None:
                self.access = read_only
                for var in _ACCESS_VARIABLES:
                    self.sysvars.pop(var, None)
        elif name == "role":
            if len(a.value) > SESSION_VALUE_CHARS_MAX:
                self.sticky.add(PinReason.STATE_BOUND)
            else:
                self.role = a.value
        elif name == "resource group":
            self.sticky.add(PinReason.UNTRACKED_SETTING)
        elif name == "autocommit":
            pass  # the server's status flags say what autocommit became (follow_server)
        elif name == CONSISTENCY_VARIABLE:
            self._consistency(a, reported)
        elif name in _UNREPLAYABLE_VARIABLES:
            self.sticky.add(PinReason.UNTRACKED_SETTING)
        else:
            value = _render(a, user=False)
            if value is None and reported is not None and name in reported:
                value = _render_reported(reported[name])
            if value is None:
                self.sysvars.pop(name, None)
                self.sticky.add(PinReason.UNTRACKED_SETTING)
            elif len(value) > SESSION_VALUE_CHARS_MAX or len(name) > SESSION_NAME_CHARS_MAX or (
                    name not in self.sysvars and len(self.sysvars) >= SESSION_VARIABLES_MAX):
                self.sysvars.pop(name, None)
                self.sticky.add(PinReason.STATE_BOUND)
            else:
                self.sysvars[name] = value
                coupled = _COUPLED_VARIABLES.get(name)
                if coupled is not None:
                    self.sysvars.pop(coupled, None)
                if name in _ISOLATION_VARIABLES:
                    self.isolation = None
                    for var in _ISOLATION_VARIABLES - {name}:
                        self.sysvars.pop(var, None)
                elif name in _ACCESS_VARIABLES:
                    self.access = None
                    for var in _ACCESS_VARIABLES - {name}:
                        self.sysvars.pop(var, None)

    def _consistency(self, a: Assignment, reported: Mapping[str, str] | None) -> None:
        literal: object = a.literal
        if literal is None and reported is not None and CONSISTENCY_VARIABLE in reported:
            literal = reported[CONSISTENCY_VARIABLE]
        if literal is None:
            self.sticky.add(PinReason.UNTRACKED_SETTING)
            return
        if isinstance(literal, str) and literal.upper() == "DEFAULT":
            self.consistency = None
            return
        try:
            self.consistency = parse_level(literal)
        except InvalidLevel:
            if self.predicting:
                return  # the member will refuse it
            # Only reachable from apply() after the member accepted the value: the member and the
            # router disagree on what a level is.
            raise RouterBug(f"[BUG] a member accepted {CONSISTENCY_VARIABLE} = {a.value} that the router "
                            "cannot parse") from None

    # --- the server's word on transactions ----------------------------------------------------

    def follow_server(self, stmt: Statement, parts: Iterable[Statement], flags: int, target: MemberId) -> None:
        in_trans = bool(flags & _IN_TRANS)
        autocommit = bool(flags & _AUTOCOMMIT)
        what = stmt.verb or stmt.kind.value
        if stmt.kind is Kind.BEGIN and not in_trans:
            raise RouterBug(f"[BUG] {what} succeeded on {target} but the server reports no open transaction")
        if stmt.kind in (Kind.COMMIT, Kind.ROLLBACK) and not stmt.chain and in_trans:
            raise RouterBug(f"[BUG] {what} succeeded on {target} but the server reports an open transaction")
        if stmt.kind is Kind.SET and stmt.autocommit is not None and stmt.autocommit != autocommit:
            raise RouterBug(f"[BUG] SET autocommit = {int(stmt.autocommit)} succeeded on {target} but the "
                            f"server reports autocommit {'on' if autocommit else 'off'}")
        self.autocommit = autocommit
        if flags & _DB_DROPPED:
            self.schema = None
        old = self.transaction
        parts = tuple(parts)
        ended = any(p.implicit_commit or p.kind in (Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK) for p in parts)
        last_begin = next((p for p in reversed(parts) if p.kind is Kind.BEGIN), None)
        chained = any(p.kind in (Kind.COMMIT, Kind.ROLLBACK) and p.chain for p in parts)
        if not in_trans:
            self.transaction = None
        elif old is not None and not ended:
            if old.member != target:  # _check_target let it through only with an implicit commit
                raise RouterBug(f"[BUG] transaction on {old.member} continued on {target}")
        else:
            pending = self.next_transaction
            if last_begin is not None:
                read_only = last_begin.begin_read_only or (
                    not last_begin.begin_read_write
                    and (pending.read_only if pending is not None and pending.read_only is not None
                         else self._session_read_only()))
                explicit = True
            elif chained and old is not None:
                read_only, explicit = old.read_only, old.explicit
            else:
                read_only = pending.read_only if pending is not None and pending.read_only is not None else False
                explicit = any(p.kind is Kind.XA for p in parts)
            self.transaction = Transaction(target, read_only or bool(flags & _IN_TRANS_READONLY), explicit)
        # One-shot characteristics: taken by a transaction that starts, or consumed by a statement
        # that completes outside one (SET and USE excepted; see the module docstring).
        if self.next_transaction is not None and (
            self.transaction is not None or not all(p.kind in _SESSION_KINDS for p in parts)
        ):
            self.next_transaction = None

    def _session_read_only(self) -> bool:
        if self.access is not None:
            return self.access
        for name in _ACCESS_VARIABLES:
            if name in self.sysvars:
                return self.sysvars[name].strip("'").upper() in _TRUE_WORDS
        return False

    # --- back to an immutable state -----------------------------------------------------------

    def freeze(self, target: MemberId) -> SessionState:
        base = self.base
        reasons = frozenset(self.reasons())
        if not reasons:
            pin = None
        elif base.pin is not None and base.pin.member == target and not base.pin.lost:
            pin = base.pin if base.pin.reasons == reasons else Pin(target, reasons)
        elif base.pin is not None:  # _check_target forbids it; kept as a guard for direct callers
            raise RouterBug(f"[BUG] pin on {base.pin.member} would move to {target}")
        else:
            pin = Pin(target, reasons)
        return SessionState(
            schema=self.schema,
            charset=self.charset,
            system_variables=tuple(self.sysvars.items()),
            user_variables=tuple(self.uservars.items()),
            autocommit=self.autocommit,
            isolation=self.isolation,
            access_read_only=self.access,
            consistency=self.consistency,
            role=self.role,
            transaction=self.transaction,
            next_transaction=self.next_transaction,
            pin=pin,
            temporary_tables=frozenset(self.temporary),
            table_locks=self.locks,
            prepared_statements=frozenset(self.prepared),
            last_member=target,
        )


_FRESH = SessionState()
