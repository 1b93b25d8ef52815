"""SQL statement classification: what a statement is and what it may do, cheaply, from its text.

Two callers ask the same questions about the same texts:

* the member session (replication layer): may this statement write (it then runs inside the
  member's XA transaction), is it DDL to be totally ordered, is it transaction control, may it
  be relayed as a plain read?
* the router: may it go to a read member (`is_read_only`), must the session stay on its
  connection (`session_functions`, `temporary_table`, user variables, locking functions), does it
  change the session state that the router replays (`assignments`, `USE`), does it start, end or
  implicitly end a transaction?

`classify(sql)` answers with a frozen `Statement`. It is a pure function of the text (plus a
cache), so it is tested from tables and the router's `route(classification, session, topology)`
stays pure too (STYLE 15).

Theory of operation
-------------------

1. **Cache.** `classify` is a `Classifier`: an LRU keyed by the exact text (str or bytes), bounded
   by entry count (STATEMENT_CACHE_ENTRIES_MAX) and by the total size of the cached texts
   (STATEMENT_CACHE_CHARS_MAX). Texts longer than STATEMENT_CACHED_TEXT_CHARS_MAX are classified
   without being cached: a 20 MiB INSERT must not stay in memory because it was classified once.
   The cache memoises a pure function, so no behaviour depends on it being there.

2. **Quick path.** A point SELECT is the hottest statement of all. If the text starts with
   `SELECT` (after whitespace and parentheses) and contains none of the *hazard* spellings — `;`,
   `@`, `FOR`, `LOCK`, `INTO`, the special function names, … — nothing in it can make it more
   than a plain read, so the answer is a shared constant, after two regular-expression scans in
   C. The hazard list is built from the very word sets the full scan reacts to, so the quick path
   can only ever send work to the full path, never answer differently (a property test checks it).
   Texts of STATEMENT_BULK_TEXT_CHARS_MIN or more take the *bulk path* instead: literals and
   comments are blanked by one C-level substitution, and if the remaining code holds none of the
   scan's trigger sequences, a long SELECT is a plain read and a long INSERT/REPLACE or
   single-table UPDATE/DELETE needs only its first STATEMENT_BULK_PREFIX_CHARS lexed (a 1 MiB
   extended INSERT: tens of ms instead of half a second of event-loop time).

3. **Tokenizer.** Otherwise one compiled regular expression lexes the text into tokens: words,
   quoted identifiers, strings, numbers, `@user` and `@@system` variables, operators. Whitespace
   and comments (`-- `, `#`, `/* */`, optimizer hints `/*+ */`) vanish; MySQL/MariaDB executable
   comments (`/*! … */`, `/*!50001 … */`, `/*M!100100 … */`) are code: their opener and closer
   vanish and their content is lexed like any other text. Keywords are therefore never found
   inside strings, quoted identifiers or comments, and never missed inside executable comments.

4. **Split.** A text holding several statements (CLIENT_MULTI_STATEMENTS) is split at `;`
   tokens. Stored-program definitions (CREATE PROCEDURE/FUNCTION/TRIGGER/EVENT, MariaDB's
   `BEGIN NOT ATOMIC`, top-level IF/WHILE/LOOP/REPEAT/CASE) carry `;` inside BEGIN … END bodies:
   for those the splitter follows block nesting so the body stays one statement.

5. **First keyword(s).** Each statement is dispatched on its first word after leading
   parentheses, with a strict look at the words that follow where it matters ("BEGIN JUNK" is not
   BEGIN, "START SLAVE" is not START TRANSACTION, "DROP PREPARE" is not DDL, `WITH …` is skipped
   to its main verb). Transaction control, SET, USE, LOCK TABLES and DDL headers are read by hand
   from the tokens; so are the target tables of single-table DML and DDL.

6. **Flag scan.** One pass over the tokens finds what can hide anywhere in a statement: locking
   clauses (`FOR UPDATE`, `FOR SHARE`, `LOCK IN SHARE MODE`, also in subqueries), locking and
   connection-scoped functions (only when followed by `(`: a column named `row_count` is a
   column), MariaDB sequence functions, `INTO OUTFILE/DUMPFILE/@var`, `@var :=` and `@var` reads,
   `@@system` variables. Statements that only *define* code (views, routines, triggers, events)
   and plain EXPLAIN do not execute it, so they are not scanned.

7. **sqlglot (dialect "mysql")** is used only where the hand reader stops: the target tables of
   multi-table UPDATE/DELETE (alias resolution), and the main verb of a `WITH` the hand reader
   cannot skip. It parses the canonical token text (comments removed, executable comments
   expanded). When sqlglot cannot parse either, the answer errs on the safe side.

8. **Never raise, never guess "read".** Any text, including invalid UTF-8 bytes, yields a
   `Statement`. What is not understood is `Kind.OTHER` with `is_read_only=False`: an unknown
   statement is never routed to a replica. An internal error is turned into the same answer at one
   place (`classify_uncached`) and counted by the `Classifier`.

Assumptions: the default sql_mode for lexing — backslash escapes in strings (not
NO_BACKSLASH_ESCAPES) and double quotes as string delimiters (not ANSI_QUOTES).
"""

from __future__ import annotations

import enum
import functools
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "replace_call",
    "STATEMENT_CACHE_ENTRIES_MAX",
    "STATEMENT_CACHE_CHARS_MAX",
    "STATEMENT_CACHED_TEXT_CHARS_MAX",
    "STATEMENT_NESTING_MAX",
    "STATEMENT_BULK_TEXT_CHARS_MIN",
    "STATEMENT_BULK_PREFIX_CHARS",
    "Kind",
    "Scope",
    "TableRef",
    "SystemVariable",
    "Assignment",
    "Statement",
    "CacheInfo",
    "Classifier",
    "classify",
    "classify_uncached",
]

STATEMENT_CACHE_ENTRIES_MAX = 10_000
STATEMENT_CACHE_CHARS_MAX = 8 * 1024 * 1024  # sum of cached text lengths (chars, or bytes for bytes keys)
STATEMENT_CACHED_TEXT_CHARS_MAX = 8 * 1024  # longer texts are classified but never cached
STATEMENT_NESTING_MAX = 8  # EXPLAIN / PREPARE … FROM '…' / SET STATEMENT … FOR / EXECUTE IMMEDIATE depth
STATEMENT_BULK_TEXT_CHARS_MIN = 16 * 1024  # from this length on, try the bulk path (see _classify_bulk)
STATEMENT_BULK_PREFIX_CHARS = 4096  # how much of a bulk INSERT is tokenized


class Kind(enum.Enum):
    """What a statement is. `MULTI` is a text of several statements (see `Statement.parts`)."""

    SELECT = "SELECT"  # SELECT, (SELECT …) UNION …, WITH … SELECT, TABLE t, VALUES ROW(…)
    DML = "DML"  # INSERT, REPLACE, UPDATE, DELETE (multi-table, … SELECT, ON DUPLICATE KEY UPDATE)
    DDL = "DDL"  # CREATE/ALTER/DROP/RENAME/TRUNCATE of tables, indexes, views, databases, routines…
    BEGIN = "BEGIN"  # BEGIN [WORK], START TRANSACTION [modes]
    COMMIT = "COMMIT"
    ROLLBACK = "ROLLBACK"
    ROLLBACK_TO_SAVEPOINT = "ROLLBACK_TO_SAVEPOINT"
    SAVEPOINT = "SAVEPOINT"
    RELEASE_SAVEPOINT = "RELEASE_SAVEPOINT"
    SET = "SET"  # variables, NAMES, CHARACTER SET, TRANSACTION, ROLE, RESOURCE GROUP
    USE = "USE"
    LOCK_TABLES = "LOCK_TABLES"
    UNLOCK_TABLES = "UNLOCK_TABLES"
    CALL = "CALL"
    SHOW = "SHOW"  # SHOW, DESCRIBE/DESC, EXPLAIN, HELP, GET DIAGNOSTICS
    DO = "DO"
    LOAD_DATA = "LOAD_DATA"  # LOAD DATA / LOAD XML
    PREPARE = "PREPARE"
    EXECUTE = "EXECUTE"
    DEALLOCATE = "DEALLOCATE"  # DEALLOCATE PREPARE / DROP PREPARE
    KILL = "KILL"
    ADMIN = "ADMIN"  # FLUSH, ANALYZE/OPTIMIZE/REPAIR/CHECK/CHECKSUM TABLE, RESET, replication control…
    ACCOUNT = "ACCOUNT"  # GRANT, REVOKE, CREATE/ALTER/DROP/RENAME USER, roles, SET PASSWORD
    HANDLER = "HANDLER"
    XA = "XA"
    MULTI = "MULTI"
    EMPTY = "EMPTY"  # nothing but whitespace and comments (the server answers 1065)
    OTHER = "OTHER"  # not understood: never read-only


class Scope(enum.Enum):
    """Where a SET assignment (or an @@variable read) applies."""

    SESSION = "SESSION"  # SESSION, LOCAL, @@SESSION., @@LOCAL., @@, or no keyword
    GLOBAL = "GLOBAL"
    PERSIST = "PERSIST"
    PERSIST_ONLY = "PERSIST_ONLY"
    USER = "USER"  # @user_variable
    NEXT_TRANSACTION = "NEXT_TRANSACTION"  # SET TRANSACTION … without SESSION/GLOBAL


_SERVER_WIDE_SCOPES = frozenset({Scope.GLOBAL, Scope.PERSIST, Scope.PERSIST_ONLY})


class TableRef(NamedTuple):
    """A table as written: `schema` is None when unqualified. Identifiers are unquoted, case kept."""

    schema: str | None
    name: str


class SystemVariable(NamedTuple):
    """An `@@[scope.]name` read. `name` is lower case; `@@name` reads the SESSION value."""

    scope: Scope
    name: str


@dataclass(frozen=True, slots=True)
class Assignment:
    """One assignment of a SET statement.

    `name` is lower case: a system variable (`sql_mode`, `group_replication_consistency`,
    `validate_password.policy`), a user variable without its `@`, or one of the keyword forms
    `names`, `character set`, `transaction`, `role`, `resource group` (their `value` is the rest
    of the clause, e.g. "utf8mb4 COLLATE utf8mb4_bin", "ISOLATION LEVEL READ COMMITTED").
    `value` is the canonical token text of the expression (comments removed, single spaces), so
    it can be replayed as `SET <scope> <name> = <value>`. `literal` is its constant value when the
    expression is a plain literal: str for a quoted string (unescaped) or a bare word (upper case:
    'ON', 'OFF', 'DEFAULT', 'BEFORE'), int or float for a number (TRUE is 1, FALSE is 0), else
    None.
    """

    scope: Scope
    name: str
    value: str
    literal: str | int | float | None = None


@dataclass(frozen=True, slots=True)
class Statement:
    """The classification of one statement, or of a multi-statement text (`kind` MULTI).

    Flags say what the statement itself does when executed:

    * `is_read_only`: changes no rows, schema, files, sequences or server-wide settings and takes
      no locks beyond a consistent read — it could run on a super_read_only secondary. False for
      every statement not understood, every transaction-control statement except
      `START TRANSACTION READ ONLY`, and EXECUTE (its statement is known only to the session).
    * `locking_read`: SELECT … FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE, anywhere.
    * `uses_locking_functions`: GET_LOCK, RELEASE_LOCK, RELEASE_ALL_LOCKS, IS_USED_LOCK,
      IS_FREE_LOCK.
    * `session_functions`: reads or produces connection-scoped state that another connection would
      not have: LAST_INSERT_ID(), FOUND_ROWS(), ROW_COUNT(), CONNECTION_ID(), LASTVAL(),
      PREVIOUS VALUE FOR, SQL_CALC_FOUND_ROWS, @@identity / @@last_insert_id / @@warning_count /
      @@error_count, SHOW WARNINGS/ERRORS/PROFILE(S), GET DIAGNOSTICS, HANDLER. Pins the session.
    * `assigns_user_variables` / `reads_user_variables`: `@x := …`, `SELECT … INTO @x`,
      `SET @x = …`, OUT arguments of CALL (any `@x` argument counts as both) / any other `@x`.
    * `writes_file`: SELECT … INTO OUTFILE / DUMPFILE. `writes_sequence`: NEXTVAL(), SETVAL(),
      NEXT VALUE FOR (MariaDB sequences).
    * `temporary_table`: CREATE/DROP TEMPORARY TABLE (session-local, not replicated, pins).
    * `implicit_commit`: MySQL commits the open transaction before executing it: DDL (except
      CREATE/DROP TEMPORARY TABLE), account management, BEGIN/START TRANSACTION, LOCK/UNLOCK
      TABLES, SET autocommit to anything but a literal 0/OFF, the administrative statements
      MySQL lists (FLUSH, ANALYZE/CHECK/OPTIMIZE/REPAIR TABLE, RESET, replication control…).
      Context-free: "BEGIN while in a transaction" is the caller's knowledge.

    Kind-specific fields: `begin_*` (BEGIN), `chain`/`release` (COMMIT, ROLLBACK), `savepoint`
    (the savepoint kinds), `prepared_name` (PREPARE, EXECUTE, DEALLOCATE), `inner` (the statement
    of PREPARE … FROM '<literal>', EXECUTE IMMEDIATE '<literal>', EXPLAIN/DESCRIBE <statement>),
    `schema` (USE, CREATE/ALTER/DROP DATABASE), `ddl_object` (DDL: 'TABLE', 'INDEX', 'VIEW',
    'DATABASE', 'PROCEDURE', 'FUNCTION', 'TRIGGER', 'EVENT', 'SEQUENCE', …), `assignments` and
    `autocommit` (SET: the session autocommit value a literal assigns, else None), `tables`
    (tables written by DML, LOAD DATA and DDL, or locked by LOCK TABLES; empty when they could not
    be determined), `system_variables` (@@ reads, for the router to answer grproxy's own).

    MULTI: `parts` holds each statement in order; flags are ORed over the parts, `is_read_only`
    is ANDed, `tables`/`assignments`/`system_variables` are concatenated, `autocommit` is the last
    part's that sets one; the other kind-specific fields stay unset (look at the parts).
    """

    kind: Kind
    verb: str  # the leading keyword(s) in upper case, e.g. "SELECT", "CREATE TABLE", "START TRANSACTION"
    is_read_only: bool
    implicit_commit: bool = False
    locking_read: bool = False
    uses_locking_functions: bool = False
    session_functions: bool = False
    assigns_user_variables: bool = False
    reads_user_variables: bool = False
    writes_file: bool = False
    writes_sequence: bool = False
    temporary_table: bool = False
    begin_read_only: bool = False
    begin_read_write: bool = False
    begin_consistent_snapshot: bool = False
    chain: bool = False
    release: bool = False
    savepoint: str | None = None
    prepared_name: str | None = None
    schema: str | None = None
    ddl_object: str | None = None
    tables: tuple[TableRef, ...] = ()
    assignments: tuple[Assignment, ...] = ()
    autocommit: bool | None = None
    system_variables: tuple[SystemVariable, ...] = ()
    inner: Statement | None = None
    multi: bool = False
    parts: tuple[Statement, ...] = ()


# --------------------------------------------------------------------------------------------
# Tokenizer

_W, _Q, _S, _N, _UV, _SV, _OP = range(7)  # word, `quoted`, 'string', number, @user, @@system, operator
_NO_KIND = -1

_Token = tuple[int, str, str]  # (kind, key, raw): key is the ASCII-upper word, else the raw text
# (quotes, @ and digits keep keys of different kinds apart, so a key alone identifies keywords and
# punctuation); raw is the token as written.

# Literals and comments consume runs possessively: a started literal always ends, at its closing
# quote or at the end of the text, so nothing is ever given back, and a 20 MiB string is matched
# in C at memchr-like speed instead of one alternation per character.
_SQ = r"'(?:[^'\\]++|\\[\s\S]|'')*+(?:'|\Z)"
_DQ = r'"(?:[^"\\]++|\\[\s\S]|"")*+(?:"|\Z)'
_BQ = r"`(?:[^`]++|``)*+(?:`|\Z)"
_SKIP = (  # whitespace, comments, optimizer hints
    r"\s+|/\*(?!M?!)(?:[^*]++|\*(?!/))*+(?:\*/|\Z)|--(?=[\x00-\x20]|\Z)[^\n]*|#[^\n]*"
)
_EXEC_OPEN = r"/\*M!(?:\d{5,6})?|/\*!(?:\d{5})?"  # MySQL and MariaDB executable comment openers
# Three groups: a word (not glued to a following quote, so N'…' / X'…' / B'…' stay strings), a
# number, anything else (strings, `identifiers`, @@system and @user variables, words starting
# with a digit or glued to a quote, operators, any other single character).
_TOKEN_ALTERNATIVES = (
    r"((?:[^\W\d]|\$)[\w$]*+(?!'))"
    r"|((?:0[xX][0-9A-Fa-f]+|0[bB][01]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w$]))"
    rf"|((?:[NnXxBb])?{_SQ}|{_DQ}|{_BQ}|@@(?:[\w$]+(?:\.[\w$]+)?|{_BQ})|@(?:[\w$.]+|{_SQ}|{_DQ}|{_BQ})"
    r"|[\w$]+|:=|<=>|<<|>>|<=|>=|<>|!=|\|\||&&|->>|->|[\s\S])"
)
# Fast path (no executable comment in the text): skip possessively, then one token or the end.
_TOKENS_RE = re.compile(rf"(?:{_SKIP})*+(?:{_TOKEN_ALTERNATIVES}|\Z)")
# Executable-comment path: one item at a time, so the lexer can track `/*!` … `*/` depth.
_ITEM_RE = re.compile(rf"({_SKIP})|({_EXEC_OPEN})|{_TOKEN_ALTERNATIVES}")


def _other_token(raw: str) -> _Token:
    c = raw[0]
    if c == "'" or c == '"':
        return (_S, raw, raw)
    if c == "`":
        return (_Q, raw, raw)
    if c == "@" and len(raw) > 1:
        return (_SV, raw, raw) if raw[1] == "@" and len(raw) > 2 else (_UV, raw, raw)
    if len(raw) > 1 and raw[1] == "'" and c in "NnXxBb":
        return (_S, raw, raw)
    if c == "$" or c == "_" or c.isalnum():  # 1abc, or a word glued to a quote: IN'x'
        return (_W, raw.upper() if raw.isascii() else raw, raw)
    return (_OP, raw, raw)


def _tokenize(text: str) -> list[_Token]:
    """Lex `text` into tokens, dropping whitespace and comments, expanding executable comments."""
    if "/*!" in text or "/*M!" in text:
        return _tokenize_exec(text)
    tokens: list[_Token] = []
    append = tokens.append
    for word, number, other in _TOKENS_RE.findall(text):
        if word:
            append((_W, word.upper() if word.isascii() else word, word))
        elif number:
            append((_N, number, number))
        elif other:
            append(_other_token(other))
    return tokens


def _tokenize_exec(text: str) -> list[_Token]:
    """The lexer for texts with executable comments: `*/` closes one only while one is open (a
    `*/` elsewhere is the operator `*` followed by whatever `/` starts)."""
    tokens: list[_Token] = []
    append = tokens.append
    pos, n, depth = 0, len(text), 0
    match = _ITEM_RE.match
    while pos < n:
        if depth and text.startswith("*/", pos):
            depth -= 1
            pos += 2
            continue
        m = match(text, pos)
        if m is None:  # pragma: no cover - the last alternative matches any character
            break
        pos = m.end()
        skip, opener, word, number, other = m.groups()
        if opener:
            depth += 1
        elif word:
            append((_W, word.upper() if word.isascii() else word, word))
        elif number:
            append((_N, number, number))
        elif other:
            append(_other_token(other))
    return tokens


# --------------------------------------------------------------------------------------------
# Words the flag scan reacts to, and the quick path built from them

_LOCKING_FUNCTIONS = frozenset({"GET_LOCK", "RELEASE_LOCK", "RELEASE_ALL_LOCKS", "IS_USED_LOCK", "IS_FREE_LOCK"})
_SESSION_FUNCTIONS = frozenset(
    {"LAST_INSERT_ID", "FOUND_ROWS", "ROW_COUNT", "CONNECTION_ID", "LASTVAL", "PS_CURRENT_THREAD_ID"}
)
_SEQUENCE_WRITE_FUNCTIONS = frozenset({"NEXTVAL", "SETVAL"})
_SCAN_WORDS = (
    frozenset({"FOR", "LOCK", "INTO", "NEXT", "PREVIOUS", "SQL_CALC_FOUND_ROWS"})
    | _LOCKING_FUNCTIONS
    | _SESSION_FUNCTIONS
    | _SEQUENCE_WRITE_FUNCTIONS
)
_SESSION_SYSTEM_VARIABLES = frozenset({"identity", "last_insert_id", "warning_count", "error_count"})

# A SELECT whose text contains none of these spellings cannot set any flag in the full scan:
# every word the scan reacts to is covered (as a substring of the lower-cased text, so an
# executable comment's version digits glued to a word cannot hide it), plus `;` (another
# statement) and `@` (variables). Lower-casing only ever adds ASCII letters (the Kelvin sign
# becomes 'k'), never removes one, so the test errs towards the full path. Words that contain
# another listed word are dropped as redundant (GET_LOCK contains LOCK).
_QUICK_SELECT_RE = re.compile(r"[\s(]*[Ss][Ee][Ll][Ee][Cc][Tt](?![\w$])")
_HAZARD_WORDS = tuple(
    sorted(
        w
        for w in (word.lower() for word in _SCAN_WORDS)
        if not any(other != w and other in w for other in (x.lower() for x in _SCAN_WORDS))
    )
)


def _is_plain_select(text: str) -> bool:
    """True only if `text` is one SELECT that the full path would classify as a plain read."""
    if _QUICK_SELECT_RE.match(text) is None or ";" in text or "@" in text:
        return False
    lowered = text.lower()
    for word in _HAZARD_WORDS:
        if word in lowered:
            return False
    return True


class _Flags:
    """What the flag scan found (mutable while scanning, copied into a Statement)."""

    __slots__ = (
        "locking_read",
        "locking_functions",
        "session",
        "assigns",
        "reads",
        "writes_file",
        "writes_sequence",
        "sysvars",
    )

    def __init__(self) -> None:
        self.locking_read = False
        self.locking_functions = False
        self.session = False
        self.assigns = False
        self.reads = False
        self.writes_file = False
        self.writes_sequence = False
        self.sysvars: list[SystemVariable] = []

    @property
    def writes(self) -> bool:
        """Whether something found makes the statement unfit for a read-only member."""
        return self.locking_read or self.locking_functions or self.writes_file or self.writes_sequence

    def fields(self) -> dict[str, object]:
        return {
            "locking_read": self.locking_read,
            "uses_locking_functions": self.locking_functions,
            "session_functions": self.session,
            "assigns_user_variables": self.assigns,
            "reads_user_variables": self.reads,
            "writes_file": self.writes_file,
            "writes_sequence": self.writes_sequence,
            "system_variables": tuple(self.sysvars),
        }


def _scan(ts: list[_Token], lo: int, hi: int, flags: _Flags) -> None:
    """Find locking clauses, special functions and variables in tokens [lo, hi)."""
    j = lo
    while j < hi:
        kind, key = ts[j][0], ts[j][1]
        if kind == _W:
            if key in _SCAN_WORDS:
                nxt = ts[j + 1][1] if j + 1 < hi else ""
                if key == "FOR":
                    if nxt == "UPDATE" or nxt == "SHARE":
                        flags.locking_read = True
                elif key == "LOCK":
                    if nxt == "IN" and j + 3 < hi and ts[j + 2][1] == "SHARE" and ts[j + 3][1] == "MODE":
                        flags.locking_read = True
                elif key == "INTO":
                    if nxt == "OUTFILE" or nxt == "DUMPFILE":
                        flags.writes_file = True
                    elif j + 1 < hi and ts[j + 1][0] == _UV:
                        # INTO @a, @b: assignments, not reads
                        j += 1
                        while j < hi and (ts[j][0] == _UV or ts[j][1] == ","):
                            if ts[j][0] == _UV:
                                flags.assigns = True
                            j += 1
                        continue
                elif key == "NEXT" or key == "PREVIOUS":
                    if nxt == "VALUE" and j + 2 < hi and ts[j + 2][1] == "FOR":
                        if key == "NEXT":
                            flags.writes_sequence = True
                        else:
                            flags.session = True
                        j += 3
                        continue
                elif key == "SQL_CALC_FOUND_ROWS":
                    flags.session = True
                elif nxt == "(" and (j == lo or ts[j - 1][1] != "."):
                    if key in _LOCKING_FUNCTIONS:
                        flags.locking_functions = True
                    elif key in _SESSION_FUNCTIONS:
                        flags.session = True
                    elif key in _SEQUENCE_WRITE_FUNCTIONS:
                        flags.writes_sequence = True
        elif kind == _UV:
            if j + 1 < hi and ts[j + 1][1] == ":=":
                flags.assigns = True
            else:
                flags.reads = True
        elif kind == _SV:
            var = _system_variable(key)
            flags.sysvars.append(var)
            if var.name in _SESSION_SYSTEM_VARIABLES:
                flags.session = True
        j += 1


_SYSVAR_PREFIX_SCOPE = {
    "global": Scope.GLOBAL,
    "session": Scope.SESSION,
    "local": Scope.SESSION,
    "persist": Scope.PERSIST,
    "persist_only": Scope.PERSIST_ONLY,
}


def _system_variable(raw: str) -> SystemVariable:
    """`@@x`, `@@global.x`, `@@session.x` … → (scope, lower-case name)."""
    body = raw[2:]
    if body.startswith("`"):
        return SystemVariable(Scope.SESSION, _unquote_ident(body).lower())
    head, dot, tail = body.partition(".")
    scope = _SYSVAR_PREFIX_SCOPE.get(head.lower()) if dot else None
    if scope is not None:
        return SystemVariable(scope, tail.lower())
    return SystemVariable(Scope.SESSION, body.lower())


# --------------------------------------------------------------------------------------------
# Small readers over one statement's tokens


class _P:
    """One statement's tokens and the text they come from."""

    __slots__ = ("text", "ts", "n", "nesting")

    def __init__(self, text: str, ts: list[_Token], nesting: int) -> None:
        self.text = text
        self.ts = ts
        self.n = len(ts)
        self.nesting = nesting

    def key(self, j: int) -> str:
        return self.ts[j][1] if 0 <= j < self.n else ""

    def kind(self, j: int) -> int:
        return self.ts[j][0] if 0 <= j < self.n else _NO_KIND

    def raw(self, j: int) -> str:
        return self.ts[j][2]

    def ident(self, j: int) -> str | None:
        """The identifier at j (word or `quoted`), unquoted, case kept; None if not one."""
        kind = self.kind(j)
        if kind == _W:
            return self.raw(j)
        if kind == _Q:
            return _unquote_ident(self.ts[j][1])
        return None

    def name_or_string(self, j: int) -> str | None:
        """An identifier or a quoted string (savepoint, prepared statement, database names)."""
        if self.kind(j) == _S:
            return _unquote_string(self.ts[j][1])
        return self.ident(j)

    def table(self, j: int) -> tuple[TableRef | None, int]:
        """A [schema.]table name at j → (TableRef, index after it), or (None, j)."""
        first = self.ident(j)
        if first is None:
            return None, j
        if self.key(j + 1) == "." and self.kind(j + 1) == _OP:
            second = self.ident(j + 2)
            if second is not None:
                return TableRef(first, second), j + 3
        return TableRef(None, first), j + 1

    def skip_if_exists(self, j: int) -> int:
        if self.key(j) == "IF":
            if self.key(j + 1) == "EXISTS":
                return j + 2
            if self.key(j + 1) == "NOT" and self.key(j + 2) == "EXISTS":
                return j + 3
        return j

    def skip_group(self, j: int) -> int:
        """j is at `(`: the index after its matching `)` (or the end)."""
        depth = 0
        while j < self.n:
            key = self.ts[j][1]
            if key == "(":
                depth += 1
            elif key == ")":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return j

    def skip_user(self, j: int) -> int:
        """Skip an account name: user[@host] in any quoting, or CURRENT_USER[()]."""
        if self.key(j) == "CURRENT_USER":
            j += 1
            if self.key(j) == "(" and self.key(j + 1) == ")":
                j += 2
            return j
        if self.kind(j) in (_W, _Q, _S):
            j += 1
            if self.kind(j) == _UV:  # 'u'@'h' lexes as a string then a user variable
                return j + 1
            if self.key(j) == "@" and self.kind(j + 1) in (_W, _Q, _S):
                return j + 2
        return j

    def render(self, lo: int, hi: int) -> str:
        """Canonical text of tokens [lo, hi): comments gone, one space where one is needed."""
        out: list[str] = []
        prev_kind, prev_key = _NO_KIND, ""
        ts = self.ts
        for j in range(lo, min(hi, self.n)):
            kind, key, raw = ts[j]
            if out and not (
                (kind == _OP and key in (",", ")", "."))
                or (prev_kind == _OP and prev_key in ("(", "."))
                or (kind == _OP and key == "(" and prev_kind in (_W, _Q))
            ):
                out.append(" ")
            out.append(raw)
            prev_kind, prev_key = kind, key
        return "".join(out)


def _unquote_ident(raw: str) -> str:
    body = raw[1:-1] if len(raw) >= 2 and raw.endswith("`") else raw[1:]
    return body.replace("``", "`")


_STRING_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "%": "\\%", "_": "\\_"}
_ESCAPE_RE = re.compile(r"\\([\s\S])")


def _unquote_string(raw: str) -> str:
    """The value of a string literal token (optional N prefix, backslash escapes, doubled quotes)."""
    if raw[:1] in "Nn" and len(raw) > 1 and raw[1] in "'\"":
        raw = raw[1:]
    quote = raw[0]
    body = raw[1:-1] if len(raw) >= 2 and raw.endswith(quote) else raw[1:]
    if "\\" in body:
        body = _ESCAPE_RE.sub(lambda m: _STRING_ESCAPES.get(m.group(1), m.group(1)), body)
    return body.replace(quote + quote, quote)


# --------------------------------------------------------------------------------------------
# Splitting a text into statements

_COMPOUND_OBJECTS = frozenset({"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"})
_COMPOUND_FIRST_WORDS = frozenset({"IF", "WHILE", "LOOP", "REPEAT", "CASE"})
_BLOCK_AFTER_END = frozenset({"IF", "CASE", "LOOP", "WHILE", "REPEAT"})
_STATEMENT_STARTERS = frozenset({"BEGIN", "THEN", "ELSE", "DO", "LOOP", "REPEAT", "ATOMIC", "ROW"})


def _is_compound(p: _P, j: int) -> bool:
    """Whether the statement starting at token j may carry `;` inside BEGIN … END blocks."""
    key = p.key(j)
    if key == "CREATE" or key == "ALTER":
        obj, _, _ = _create_header(p, j + 1)
        return obj in _COMPOUND_OBJECTS
    if key == "BEGIN":
        return p.key(j + 1) == "NOT" and p.key(j + 2) == "ATOMIC"
    if p.kind(j) in (_W, _Q) and p.key(j + 1) == ":" and key not in _HANDLERS:  # label: BEGIN …
        return True
    return key in _COMPOUND_FIRST_WORDS


def _compound_end(ts: list[_Token], lo: int) -> int:
    """The index of the `;` ending the stored-program statement starting at lo (or len(ts))."""
    depth = 0
    at_start = True  # whether the current token begins a statement inside a body
    j, n = lo, len(ts)
    while j < n:
        kind, key = ts[j][0], ts[j][1]
        if kind == _OP:
            if key == ";":
                if depth == 0:
                    return j
                at_start = True
            else:
                at_start = key == ":"  # label:
        elif kind == _W:
            if key == "END":
                depth = max(0, depth - 1)
                if j + 1 < n and ts[j + 1][1] in _BLOCK_AFTER_END:
                    j += 1
            elif key == "BEGIN" or key == "CASE":
                depth += 1
            elif at_start and key in _BLOCK_AFTER_END:
                depth += 1
            at_start = key in _STATEMENT_STARTERS
        else:
            at_start = False
        j += 1
    return n


def _split(text: str, ts: list[_Token]) -> list[list[_Token]]:
    """The statements of a text, each as its token list (empty statements dropped)."""
    if ";" not in text or not any(t[1] == ";" for t in ts):
        return [ts] if ts else []
    parts: list[list[_Token]] = []
    lo, n = 0, len(ts)
    probe = _P(text, ts, 0)
    while lo < n:
        if _is_compound(probe, lo):
            hi = _compound_end(ts, lo)
        else:
            hi = lo
            while hi < n and ts[hi][1] != ";":
                hi += 1
        if hi > lo:
            parts.append(ts[lo:hi])
        lo = hi + 1
    return parts


# --------------------------------------------------------------------------------------------
# Classification


# Shared answers for the commonest fixed outcomes (a Statement costs ~2 us to build).
_PLAIN_SELECT = Statement(Kind.SELECT, "SELECT", True)
_EMPTY = Statement(Kind.EMPTY, "", True)
_BEGIN = Statement(Kind.BEGIN, "BEGIN", False, implicit_commit=True)
_COMMIT = Statement(Kind.COMMIT, "COMMIT", False)
_ROLLBACK = Statement(Kind.ROLLBACK, "ROLLBACK", False)


def _other(verb: str, flags: _Flags | None = None) -> Statement:
    if flags is None:
        return Statement(Kind.OTHER, verb, False)
    return Statement(Kind.OTHER, verb, False, **flags.fields())  # type: ignore[arg-type]


def _classify_text(text: str, nesting: int = 0) -> Statement:
    """Classify a whole text (one statement or several). May raise only on an internal bug."""
    if len(text) >= STATEMENT_BULK_TEXT_CHARS_MIN:
        bulk = _classify_bulk(text, nesting)
        if bulk is not None:
            return bulk
    elif _is_plain_select(text):
        return _PLAIN_SELECT
    return _classify_tokens(text, _tokenize(text), nesting)


# Bulk path. A mysqldump-style extended INSERT of 1 MiB is ~250k tokens: lexing them one by one
# in Python would hold the event loop for a large fraction of a second. Instead, strings,
# quoted identifiers and comments are blanked out by one C-level substitution; if the code left
# has no `;`, no `@` and none of the scan's trigger sequences, the flag scan over all tokens would
# find nothing, so only a prefix needs lexing: enough for the target table of INSERT/REPLACE and
# of single-table UPDATE/DELETE (`WHERE id IN (…100k ids…)`). A plain SELECT needs no lexing.
# Texts with executable comments take the full path (their content would be blanked).
# Case is matched by hand, not with re.IGNORECASE, whose Unicode folding would accept 'ſelect';
# \s and \w are Unicode here as in the tokenizer.
_BULK_VERB_RE = re.compile(
    r"\s*+(?:\(\s*+)*+([Ss][Ee][Ll][Ee][Cc][Tt])(?![\w$])"
    r"|\s*+([Ii][Nn][Ss][Ee][Rr][Tt]|[Rr][Ee][Pp][Ll][Aa][Cc][Ee]|[Uu][Pp][Dd][Aa][Tt][Ee]|[Dd][Ee][Ll][Ee][Tt][Ee])"
    r"(?![\w$])"
)
_BLANK_RE = re.compile(rf"{_SQ}|{_DQ}|{_BQ}|{_SKIP}")
# The scan's triggers as token sequences; in the blanked text, adjacent tokens are separated by
# whitespace only (comments became spaces), so `\s*` between them loses nothing. Unicode \s and
# \w as in the tokenizer; Unicode case folding only widens the match, which is the safe side.
_HAZARD_WORD_RE = re.compile(
    r"(?<![\w$])(?:(?:FOR\s*UPDATE|FOR\s*SHARE|LOCK\s*IN\s*SHARE\s*MODE|INTO\s*(?:OUTFILE|DUMPFILE)"
    r"|(?:NEXT|PREVIOUS)\s*VALUE\s*FOR|SQL_CALC_FOUND_ROWS)(?![\w$])"
    r"|(?:" + "|".join(sorted(_LOCKING_FUNCTIONS | _SESSION_FUNCTIONS | _SEQUENCE_WRITE_FUNCTIONS)) + r")\s*\()",
    re.IGNORECASE,
)
# Every alternative above contains one of these (lower case), and str.lower() never removes an
# ASCII letter: where none occurs, the regex cannot match and its per-position cost is skipped.
# (INTO is left out: every INSERT has one; OUTFILE/DUMPFILE stand for it.)
_BULK_HAZARD_WORDS = tuple(w for w in _HAZARD_WORDS if w != "into") + ("outfile", "dumpfile")


def _bulk_hazard(blanked: str) -> bool:
    """Whether the blanked code may hold something the flag scan reacts to."""
    if ";" in blanked or "@" in blanked:
        return True
    lowered = blanked.lower()
    if not any(word in lowered for word in _BULK_HAZARD_WORDS):
        return False
    return _HAZARD_WORD_RE.search(blanked) is not None


def _classify_bulk(text: str, nesting: int, prefix_chars: int = STATEMENT_BULK_PREFIX_CHARS) -> Statement | None:
    """The classification of a long plain SELECT or INSERT/REPLACE without lexing all of it, or
    None when the full path is needed. Equal to the full path's answer whenever not None."""
    if "/*!" in text or "/*M!" in text:
        return None
    m = _BULK_VERB_RE.match(text)
    if m is None:
        return None
    if _bulk_hazard(_BLANK_RE.sub(" ", text)):
        return None
    if m.group(1):
        return _PLAIN_SELECT
    p = _P(text, _tokenize(text[:prefix_chars]), nesting)
    verb = p.key(0)
    if verb in ("INSERT", "REPLACE"):
        table, decided_at = _insert_table(p, 0)
    elif verb == "UPDATE":
        table, decided_at = _single_update_table(p, 0)
    else:
        table, decided_at = _single_delete_table(p, 0)
    # The prefix may end inside a token: trust only what at least one more whole token follows.
    if table is None or decided_at + 1 >= p.n:
        return None
    return Statement(Kind.DML, verb, False, tables=(table,))


def _classify_tokens(text: str, ts: list[_Token], nesting: int) -> Statement:
    parts = _split(text, ts)
    if not parts:
        return _EMPTY
    if len(parts) == 1:
        return _classify_one(_P(text, parts[0], nesting))
    return _combine(tuple(_classify_one(_P(text, part, nesting)) for part in parts))


def _combine(parts: tuple[Statement, ...]) -> Statement:
    tables: list[TableRef] = []
    for part in parts:
        for table in part.tables:
            if table not in tables:
                tables.append(table)
    autocommit = None
    for part in parts:
        if part.autocommit is not None:
            autocommit = part.autocommit
    return Statement(
        Kind.MULTI,
        "MULTI",
        all(p.is_read_only for p in parts),
        implicit_commit=any(p.implicit_commit for p in parts),
        locking_read=any(p.locking_read for p in parts),
        uses_locking_functions=any(p.uses_locking_functions for p in parts),
        session_functions=any(p.session_functions for p in parts),
        assigns_user_variables=any(p.assigns_user_variables for p in parts),
        reads_user_variables=any(p.reads_user_variables for p in parts),
        writes_file=any(p.writes_file for p in parts),
        writes_sequence=any(p.writes_sequence for p in parts),
        temporary_table=any(p.temporary_table for p in parts),
        tables=tuple(tables),
        assignments=tuple(a for p in parts for a in p.assignments),
        autocommit=autocommit,
        system_variables=tuple(v for p in parts for v in p.system_variables),
        multi=True,
        parts=parts,
    )


_QUERY_STARTERS = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})
_VERB_CHARS_MAX = 64  # an unknown first word is echoed as the verb, cut to this length


def _classify_one(p: _P) -> Statement:
    j = 0
    while p.key(j) == "(":
        j += 1
    if j and p.key(j) not in _QUERY_STARTERS:  # only query expressions may open with parentheses
        return _other("")
    return _dispatch(p, j)


def _dispatch(p: _P, j: int) -> Statement:
    """Classify the statement whose first keyword is at token j."""
    kind, key = p.kind(j), p.key(j)
    handler = _HANDLERS.get(key) if kind == _W else None
    if handler is not None:
        return handler(p, j)
    if kind in (_W, _Q) and p.key(j + 1) == ":":  # label: BEGIN NOT ATOMIC … (MariaDB)
        return _compound(p, j)
    return _other(key[:_VERB_CHARS_MAX] if kind == _W else "")


def _scanned(p: _P, lo: int) -> _Flags:
    flags = _Flags()
    _scan(p.ts, lo, p.n, flags)
    return flags


def _query(p: _P, j: int) -> Statement:
    """SELECT, TABLE, VALUES (and the body of WITH … SELECT)."""
    flags = _scanned(p, j)
    verb = p.key(j) if p.key(j) in ("TABLE", "VALUES") else "SELECT"
    return Statement(Kind.SELECT, verb, not flags.writes, **flags.fields())  # type: ignore[arg-type]


def _with(p: _P, j: int) -> Statement:
    """WITH [RECURSIVE] cte [(cols)] AS (…) [, …] <SELECT | UPDATE | DELETE | INSERT | REPLACE …>."""
    main = _skip_ctes(p, j + 1)
    if main is None:
        return _with_sqlglot(p, j)
    key = p.key(main)
    if key in ("SELECT", "TABLE", "VALUES", "("):
        return _query(p, j)
    if key in ("UPDATE", "DELETE", "INSERT", "REPLACE"):
        return _HANDLERS[key](p, main, j)  # type: ignore[call-arg]
    return _other("WITH", _scanned(p, j))


def _skip_ctes(p: _P, j: int) -> int | None:
    if p.key(j) == "RECURSIVE":
        j += 1
    while True:
        if p.ident(j) is None:
            return None
        j += 1
        if p.key(j) == "(":
            j = p.skip_group(j)
        if p.key(j) != "AS" or p.key(j + 1) != "(":
            return None
        j = p.skip_group(j + 1)
        if p.key(j) != ",":
            return j if j < p.n else None
        j += 1


def _with_sqlglot(p: _P, j: int) -> Statement:
    """A WITH the hand reader could not skip: let sqlglot name the main statement."""
    tree = _sqlglot_parse(p.render(j, p.n))
    flags = _scanned(p, j)
    if tree is not None:
        from sqlglot import exp

        if isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except)):
            return Statement(Kind.SELECT, "SELECT", not flags.writes, **flags.fields())  # type: ignore[arg-type]
        for node_type, verb in ((exp.Update, "UPDATE"), (exp.Delete, "DELETE"), (exp.Insert, "INSERT")):
            if isinstance(tree, node_type):
                return Statement(Kind.DML, verb, False, **flags.fields())  # type: ignore[arg-type]
    return _other("WITH", flags)


# DML ----------------------------------------------------------------------------------------

_INSERT_MODIFIERS = frozenset({"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE"})
_DELETE_MODIFIERS = frozenset({"LOW_PRIORITY", "QUICK", "IGNORE"})
_UPDATE_MODIFIERS = frozenset({"LOW_PRIORITY", "IGNORE"})
_SINGLE_DELETE_FOLLOWERS = frozenset({"WHERE", "ORDER", "LIMIT", "PARTITION", "RETURNING"})


def _dml(verb: str, p: _P, scan_from: int, tables: tuple[TableRef, ...]) -> Statement:
    flags = _scanned(p, scan_from)
    return Statement(Kind.DML, verb, False, tables=tables, **flags.fields())  # type: ignore[arg-type]


def _insert_table(p: _P, j: int) -> tuple[TableRef | None, int]:
    """INSERT/REPLACE [LOW_PRIORITY | DELAYED | HIGH_PRIORITY] [IGNORE] [INTO] tbl → (tbl, index
    of the last token read)."""
    k = j + 1
    while p.key(k) in _INSERT_MODIFIERS:
        k += 1
    if p.key(k) == "INTO":
        k += 1
    table, after = p.table(k)
    return table, after


def _single_update_table(p: _P, j: int) -> tuple[TableRef | None, int]:
    """UPDATE [LOW_PRIORITY] [IGNORE] tbl [[AS] alias] SET → (tbl, index of SET); (None, _) for
    any other form (multi-table, joins, partitions, index hints)."""
    k = j + 1
    while p.key(k) in _UPDATE_MODIFIERS:
        k += 1
    table, after = p.table(k)
    if table is None:
        return None, after
    if p.key(after) == "AS":
        after += 2
    elif p.kind(after) in (_W, _Q) and p.key(after) != "SET":
        after += 1
    return (table, after) if p.key(after) == "SET" else (None, after)


def _single_delete_table(p: _P, j: int) -> tuple[TableRef | None, int]:
    """DELETE [LOW_PRIORITY] [QUICK] [IGNORE] FROM tbl [[AS] alias] {end | WHERE | ORDER | LIMIT |
    PARTITION | RETURNING} → (tbl, index of that follower); (None, _) for the multi-table forms."""
    k = j + 1
    while p.key(k) in _DELETE_MODIFIERS:
        k += 1
    if p.key(k) != "FROM":
        return None, k
    table, after = p.table(k + 1)
    if table is None:
        return None, after
    if p.key(after) == "AS":
        after += 2
    elif p.kind(after) in (_W, _Q) and p.key(after) not in _SINGLE_DELETE_FOLLOWERS:
        after += 1
    if after >= p.n or p.key(after) in _SINGLE_DELETE_FOLLOWERS:
        return table, after
    return None, after


def _insert(p: _P, j: int, scan_from: int | None = None) -> Statement:
    table, _ = _insert_table(p, j)
    return _dml(p.key(j), p, j if scan_from is None else scan_from, (table,) if table else ())


def _update(p: _P, j: int, scan_from: int | None = None) -> Statement:
    """UPDATE, single-table by hand, multi-table through `_multi_table_targets`."""
    lo = j if scan_from is None else scan_from
    table, _ = _single_update_table(p, j)
    if table is not None:
        return _dml("UPDATE", p, lo, (table,))
    return _dml("UPDATE", p, lo, _multi_table_targets(p, lo, j))


def _delete(p: _P, j: int, scan_from: int | None = None) -> Statement:
    """DELETE, single-table by hand, multi-table through `_multi_table_targets`."""
    lo = j if scan_from is None else scan_from
    table, _ = _single_delete_table(p, j)
    if table is not None:
        return _dml("DELETE", p, lo, (table,))
    return _dml("DELETE", p, lo, _multi_table_targets(p, lo, j))



def _multi_table_targets(p: _P, lo: int, verb_at: int) -> tuple[TableRef, ...]:
    """The tables a multi-table UPDATE/DELETE writes, via sqlglot; a superset if it fails."""
    keep: list[int] = []
    # sqlglot does not take DELETE t.* FROM: drop `.*` after a target name.
    j = lo
    while j < p.n:
        if p.key(j) == "." and p.key(j + 1) == "*" and p.ts[verb_at][1] == "DELETE":
            j += 2
            continue
        keep.append(j)
        j += 1
    sub = _P(p.text, [p.ts[i] for i in keep], p.nesting)
    targets = _sqlglot_targets(sub.render(0, sub.n))
    if targets is not None:
        return targets
    return _reference_superset(p, verb_at)


_REF_INTRODUCERS = frozenset({"UPDATE", "DELETE", "FROM", "JOIN", "USING", "STRAIGHT_JOIN", ",", "("})
_REF_SECTION_END = frozenset({"SET", "WHERE", "ORDER", "LIMIT", "RETURNING"})
_REF_NOT_NAMES = frozenset({"LOW_PRIORITY", "QUICK", "IGNORE", "FROM", "USING", "LATERAL"})


def _reference_superset(p: _P, verb_at: int) -> tuple[TableRef, ...]:
    """Every name that may be a table in the references of an UPDATE/DELETE: a hand scan that
    errs towards too many (aliases, odd names), used only when sqlglot cannot parse the text."""
    found: list[TableRef] = []
    depth = 0
    j = verb_at + 1
    while j < p.n:
        key = p.key(j)
        if key == "(" and p.key(j + 1) in _QUERY_STARTERS:  # a derived table is never written
            j = p.skip_group(j)
            continue
        if key == "(":
            depth += 1
        elif key == ")":
            depth -= 1
        elif depth <= 0 and key in _REF_SECTION_END:
            break
        elif p.key(j - 1) in _REF_INTRODUCERS and p.kind(j) in (_W, _Q) and key not in _REF_NOT_NAMES:
            table, after = p.table(j)
            if table is not None and table not in found:
                found.append(table)
            j = after
            continue
        j += 1
    return tuple(found)


def _sqlglot_parse(sql: str) -> object | None:
    """sqlglot's tree for one MySQL statement, or None if it cannot parse it."""
    try:
        import sqlglot

        return sqlglot.parse_one(sql, read="mysql")
    except Exception:  # noqa: BLE001 - sqlglot raises ParseError, TokenError, RecursionError…
        return None


def _sqlglot_targets(sql: str) -> tuple[TableRef, ...] | None:
    """The tables a multi-table UPDATE/DELETE writes, resolved through aliases by sqlglot, or None
    when sqlglot cannot say (the caller then falls back to a superset)."""
    tree = _sqlglot_parse(sql)
    if tree is None:
        return None
    try:
        return _targets_of_tree(tree)
    except Exception:  # noqa: BLE001 - odd trees from odd input: fall back, never raise
        return None


def _targets_of_tree(tree: object) -> tuple[TableRef, ...] | None:
    from sqlglot import exp

    if not isinstance(tree, exp.Expression):
        return None
    cte_names = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}

    def base_tables(node: object, root: exp.Expression) -> list[exp.Table]:
        """Tables of the references themselves: not in subqueries, not CTE names."""
        if not isinstance(node, exp.Expression):
            return []
        found = []
        for table in node.find_all(exp.Table):
            owner = table.find_ancestor(exp.Select, exp.Subquery, exp.Update, exp.Delete)
            if owner is root and table.name and not (not table.db and table.name.lower() in cte_names):
                found.append(table)
        return found

    def ref(table: exp.Table) -> TableRef:
        return TableRef(table.db or None, table.name)

    if isinstance(tree, exp.Update):
        refs = base_tables(tree.this, tree)
        by_alias = {t.alias_or_name.lower(): t for t in refs}
        written: list[TableRef] = []
        for assignment in tree.expressions:
            column = assignment.this if isinstance(assignment, exp.EQ) else None
            qualifier = column.table if isinstance(column, exp.Column) else ""
            targets = [by_alias[qualifier.lower()]] if qualifier and qualifier.lower() in by_alias else refs
            for t in targets:
                if ref(t) not in written:
                    written.append(ref(t))
        return tuple(written) if written else None
    if isinstance(tree, exp.Delete):
        using = tree.args.get("using")
        named = tree.args.get("tables")
        if using:
            refs = [t for u in using for t in base_tables(u, tree)]
            target_names = [t.alias_or_name for t in base_tables(tree.this, tree)]
        elif named:
            refs = base_tables(tree.this, tree)
            target_names = [t.name for t in named]
        else:
            return None
        by_alias = {t.alias_or_name.lower(): t for t in refs}
        written = []
        for name in target_names:
            t = by_alias.get(name.lower())
            if t is None:
                return None
            if ref(t) not in written:
                written.append(ref(t))
        return tuple(written)
    return None


def _load(p: _P, j: int) -> Statement:
    """LOAD DATA / LOAD XML … INTO TABLE tbl; LOAD INDEX INTO CACHE is administration."""
    what = p.key(j + 1)
    if what == "INDEX":
        return Statement(Kind.ADMIN, "LOAD INDEX", False, implicit_commit=True)
    if what not in ("DATA", "XML"):
        return _other("LOAD")
    tables: tuple[TableRef, ...] = ()
    for k in range(j + 2, p.n - 1):
        if p.key(k) == "INTO" and p.key(k + 1) == "TABLE":
            table, _ = p.table(k + 2)
            tables = (table,) if table else ()
            break
    flags = _scanned(p, j)
    fields = flags.fields()
    if flags.reads:  # (@col) … SET c = @col: the column list assigns what SET reads
        fields["assigns_user_variables"] = True
    return Statement(Kind.LOAD_DATA, f"LOAD {what}", False, tables=tables, **fields)  # type: ignore[arg-type]


# Transaction control ----------------------------------------------------------------------------


def _begin(p: _P, j: int) -> Statement:
    """BEGIN [WORK] — strictly: "BEGIN JUNK" is not BEGIN; BEGIN NOT ATOMIC is a compound block."""
    k = j + 1
    if p.key(k) == "WORK":
        k += 1
    if k == p.n:
        return _BEGIN
    if p.key(j + 1) == "NOT" and p.key(j + 2) == "ATOMIC":
        return _compound(p, j)
    return _other("BEGIN")


def _start(p: _P, j: int) -> Statement:
    """START TRANSACTION [WITH CONSISTENT SNAPSHOT | READ ONLY | READ WRITE][, …]; START REPLICA…"""
    what = p.key(j + 1)
    if what != "TRANSACTION":
        if what in ("SLAVE", "REPLICA", "GROUP_REPLICATION", "ALL"):
            return Statement(Kind.ADMIN, f"START {what}", False, implicit_commit=True)
        return _other("START")
    read_only = read_write = snapshot = False
    k = j + 2
    while k < p.n:
        if p.key(k) == "WITH" and p.key(k + 1) == "CONSISTENT" and p.key(k + 2) == "SNAPSHOT":
            snapshot, k = True, k + 3
        elif p.key(k) == "READ" and p.key(k + 1) == "ONLY":
            read_only, k = True, k + 2
        elif p.key(k) == "READ" and p.key(k + 1) == "WRITE":
            read_write, k = True, k + 2
        else:
            return _other("START")
        if k < p.n:
            if p.key(k) != "," or k + 1 == p.n:
                return _other("START")
            k += 1
    if read_only and read_write:
        return _other("START")
    return Statement(
        Kind.BEGIN,
        "START TRANSACTION",
        read_only,
        implicit_commit=True,
        begin_read_only=read_only,
        begin_read_write=read_write,
        begin_consistent_snapshot=snapshot,
    )


def _completion(p: _P, k: int) -> tuple[bool, bool] | None:
    """[AND [NO] CHAIN] [[NO] RELEASE] to the end → (chain, release), or None if something else."""
    chain = release = False
    if p.key(k) == "AND":
        if p.key(k + 1) == "CHAIN":
            chain, k = True, k + 2
        elif p.key(k + 1) == "NO" and p.key(k + 2) == "CHAIN":
            k += 3
        else:
            return None
    if p.key(k) == "RELEASE":
        release, k = True, k + 1
    elif p.key(k) == "NO" and p.key(k + 1) == "RELEASE":
        k += 2
    return (chain, release) if k == p.n else None


def _commit(p: _P, j: int) -> Statement:
    k = j + 1
    if p.key(k) == "WORK":
        k += 1
    done = _completion(p, k)
    if done is None:
        return _other("COMMIT")
    if done == (False, False):
        return _COMMIT
    return Statement(Kind.COMMIT, "COMMIT", False, chain=done[0], release=done[1])


def _rollback(p: _P, j: int) -> Statement:
    k = j + 1
    if p.key(k) == "WORK":
        k += 1
    if p.key(k) == "TO":
        k += 1
        if p.key(k) == "SAVEPOINT":
            k += 1
        name = p.name_or_string(k)
        if name is None or k + 1 != p.n:
            return _other("ROLLBACK")
        return Statement(Kind.ROLLBACK_TO_SAVEPOINT, "ROLLBACK TO SAVEPOINT", False, savepoint=name)
    done = _completion(p, k)
    if done is None:
        return _other("ROLLBACK")
    if done == (False, False):
        return _ROLLBACK
    return Statement(Kind.ROLLBACK, "ROLLBACK", False, chain=done[0], release=done[1])


def _savepoint(p: _P, j: int) -> Statement:
    name = p.name_or_string(j + 1)
    if name is None or j + 2 != p.n:
        return _other("SAVEPOINT")
    return Statement(Kind.SAVEPOINT, "SAVEPOINT", False, savepoint=name)


def _release(p: _P, j: int) -> Statement:
    name = p.name_or_string(j + 2)
    if p.key(j + 1) != "SAVEPOINT" or name is None or j + 3 != p.n:
        return _other("RELEASE")
    return Statement(Kind.RELEASE_SAVEPOINT, "RELEASE SAVEPOINT", False, savepoint=name)


def _xa(p: _P, j: int) -> Statement:
    what = p.key(j + 1)
    if what not in ("START", "BEGIN", "END", "PREPARE", "COMMIT", "ROLLBACK", "RECOVER"):
        return _other("XA")
    return Statement(Kind.XA, f"XA {what}", False)


def _lock(p: _P, j: int) -> Statement:
    """LOCK TABLE[S] t [[AS] alias] lock_type [, …]; LOCK INSTANCE FOR BACKUP."""
    what = p.key(j + 1)
    if what == "INSTANCE":
        return Statement(Kind.ADMIN, "LOCK INSTANCE", False)
    if what not in ("TABLE", "TABLES"):
        return _other("LOCK")

    def past_lock_type(k: int) -> int:  # [[AS] alias] READ [LOCAL] | [LOW_PRIORITY] WRITE, then ","
        while k < p.n and p.key(k) != ",":
            k += 1
        return k + 1

    tables = _distinct_tables(p, j + 2, past_lock_type)
    if not tables:
        return _other("LOCK")
    return Statement(Kind.LOCK_TABLES, "LOCK TABLES", False, implicit_commit=True, tables=tuple(tables))


def _unlock(p: _P, j: int) -> Statement:
    what = p.key(j + 1)
    if what in ("TABLE", "TABLES") and j + 2 == p.n:
        return Statement(Kind.UNLOCK_TABLES, "UNLOCK TABLES", False, implicit_commit=True)
    if what == "INSTANCE":
        return Statement(Kind.ADMIN, "UNLOCK INSTANCE", False)
    return _other("UNLOCK")


# SET and USE ----------------------------------------------------------------------------------

_SCOPE_WORDS = {
    "GLOBAL": Scope.GLOBAL,
    "SESSION": Scope.SESSION,
    "LOCAL": Scope.SESSION,
    "PERSIST": Scope.PERSIST,
    "PERSIST_ONLY": Scope.PERSIST_ONLY,
}
_AUTOCOMMIT_ON = frozenset({1, "ON", "1"})
_AUTOCOMMIT_OFF = frozenset({0, "OFF", "0"})


def _set(p: _P, j: int) -> Statement:
    """SET assignments (incl. NAMES, CHARACTER SET, TRANSACTION); SET PASSWORD / DEFAULT ROLE are
    account management; MariaDB's SET STATEMENT … FOR <stmt> is classified as <stmt>."""
    first = p.key(j + 1)
    if first == "PASSWORD" or (first == "DEFAULT" and p.key(j + 2) == "ROLE"):
        return Statement(Kind.ACCOUNT, "SET PASSWORD" if first == "PASSWORD" else "SET DEFAULT ROLE", False,
                         implicit_commit=first == "PASSWORD")
    if first == "STATEMENT":
        return _set_statement(p, j)
    if first == "ROLE":
        return _set_keyword_form(p, j, "role", j + 2)
    if first == "RESOURCE" and p.key(j + 2) == "GROUP":
        return _set_keyword_form(p, j, "resource group", j + 3)
    if first == "TRANSACTION":
        return _set_transaction(p, j, Scope.NEXT_TRANSACTION, j + 2)
    if first in _SCOPE_WORDS and p.key(j + 2) == "TRANSACTION":
        return _set_transaction(p, j, _SCOPE_WORDS[first], j + 3)
    assignments: list[Assignment] = []
    flags = _Flags()
    scope = Scope.SESSION  # the latest scope keyword applies to the following unscoped items
    for lo, hi in _items(p, j + 1, p.n):
        item = _set_item(p, lo, hi, scope, flags)
        if item is None:
            return _other("SET", _scanned(p, j))
        assignment, scope = item
        assignments.append(assignment)
    if not assignments:
        return _other("SET")
    autocommit: bool | None = None
    implicit_commit = False
    for a in assignments:
        if a.name == "autocommit" and a.scope is Scope.SESSION:
            literal = a.literal.upper() if isinstance(a.literal, str) else a.literal
            autocommit = True if literal in _AUTOCOMMIT_ON else False if literal in _AUTOCOMMIT_OFF else None
            implicit_commit = autocommit is not False
    if any(a.scope is Scope.USER for a in assignments):
        flags.assigns = True
    read_only = not flags.writes and not any(a.scope in _SERVER_WIDE_SCOPES for a in assignments)
    return Statement(
        Kind.SET,
        "SET",
        read_only,
        implicit_commit=implicit_commit,
        assignments=tuple(assignments),
        autocommit=autocommit,
        **flags.fields(),  # type: ignore[arg-type]
    )


def _items(p: _P, lo: int, hi: int) -> list[tuple[int, int]]:
    """Split tokens [lo, hi) at commas outside parentheses."""
    out: list[tuple[int, int]] = []
    depth, start = 0, lo
    for k in range(lo, hi):
        key = p.ts[k][1]
        if key == "(":
            depth += 1
        elif key == ")":
            depth -= 1
        elif key == "," and depth == 0:
            out.append((start, k))
            start = k + 1
    out.append((start, hi))
    return out


def _set_item(p: _P, lo: int, hi: int, scope: Scope, flags: _Flags) -> tuple[Assignment, Scope] | None:
    """One `[scope] name = expr` (or NAMES / CHARACTER SET form) → (Assignment, sticky scope)."""
    k = lo
    if p.key(k) in _SCOPE_WORDS and p.kind(k + 1) in (_W, _Q):
        scope = _SCOPE_WORDS[p.key(k)]
        k += 1
    kind, key = p.kind(k), p.key(k)
    if kind == _W and key in ("NAMES", "CHARSET") or (key == "CHARACTER" and p.key(k + 1) == "SET"):
        start = k + 2 if key == "CHARACTER" else k + 1
        if start >= hi:
            return None
        name = "names" if key == "NAMES" else "character set"
        return Assignment(Scope.SESSION, name, p.render(start, hi), _literal(p, start, hi)), scope
    if kind == _UV:
        var_scope, name = Scope.USER, _user_variable_name(key)
        k += 1
    elif kind == _SV:
        var = _system_variable(key)
        var_scope, name = var.scope, var.name
        k += 1
    elif kind in (_W, _Q):
        name = (p.ident(k) or "").lower()
        k += 1
        if p.key(k) == "." and p.kind(k + 1) in (_W, _Q):  # component.variable
            name = f"{name}.{(p.ident(k + 1) or '').lower()}"
            k += 2
        var_scope = scope
    else:
        return None
    if p.key(k) not in ("=", ":=") or k + 1 >= hi:
        return None
    _scan(p.ts, k + 1, hi, flags)
    return Assignment(var_scope, name, p.render(k + 1, hi), _literal(p, k + 1, hi)), scope


def _user_variable_name(raw: str) -> str:
    body = raw[1:]
    if body[:1] in ("'", '"'):
        return _unquote_string(body).lower()
    if body[:1] == "`":
        return _unquote_ident(body).lower()
    return body.lower()


def _literal(p: _P, lo: int, hi: int) -> str | int | float | None:
    """The constant a value expression denotes, if it is a plain literal (see Assignment)."""
    kinds = [p.kind(k) for k in range(lo, hi)]
    if not kinds:
        return None
    if all(kind == _S for kind in kinds):
        raws = [p.ts[k][1] for k in range(lo, hi)]
        if any(r[:1] in "XxBb" and r[1:2] == "'" for r in raws):
            return None  # hex and bit strings are bytes, not text
        return "".join(_unquote_string(r) for r in raws)
    sign = 1
    if len(kinds) == 2 and p.key(lo) in ("-", "+") and kinds[1] == _N:
        sign, lo, kinds = (-1 if p.key(lo) == "-" else 1), lo + 1, kinds[1:]
    if len(kinds) != 1:
        return None
    key = p.ts[lo][1]
    if kinds[0] == _N:
        try:
            if key[:2] in ("0x", "0X"):
                return sign * int(key, 16)
            if key[:2] in ("0b", "0B"):
                return sign * int(key[2:], 2)
            return sign * int(key) if key.isdigit() else sign * float(key)
        except ValueError:
            return None
    if kinds[0] == _W and sign == 1:
        return {"TRUE": 1, "FALSE": 0}.get(key, key)
    return None


def _set_transaction(p: _P, j: int, scope: Scope, k: int) -> Statement:
    """SET [GLOBAL | SESSION] TRANSACTION ISOLATION LEVEL … | READ ONLY | READ WRITE [, …]."""
    if k >= p.n:
        return _other("SET")
    value = p.render(k, p.n)
    assignment = Assignment(scope, "transaction", value, None)
    return Statement(Kind.SET, "SET", scope not in _SERVER_WIDE_SCOPES, assignments=(assignment,))


def _set_keyword_form(p: _P, j: int, name: str, k: int) -> Statement:
    """SET ROLE …, SET RESOURCE GROUP …: session state whose value is the rest of the clause."""
    if k >= p.n:
        return _other("SET")
    assignment = Assignment(Scope.SESSION, name, p.render(k, p.n), _literal(p, k, p.n))
    return Statement(Kind.SET, "SET", True, assignments=(assignment,))


def _set_statement(p: _P, j: int) -> Statement:
    """MariaDB SET STATEMENT var = value [, …] FOR <statement>: the statement's classification,
    with the SET's assignments appended to its `assignments`."""
    depth = 0
    for k in range(j + 2, p.n):
        key = p.ts[k][1]
        if key == "(":
            depth += 1
        elif key == ")":
            depth -= 1
        elif key == "FOR" and depth == 0 and p.kind(k) == _W:
            if p.nesting >= STATEMENT_NESTING_MAX:
                return _other("SET")
            inner = _classify_one(_P(p.text, p.ts[k + 1 :], p.nesting + 1))
            flags = _Flags()
            _scan(p.ts, j + 2, k, flags)
            if not flags.writes and not flags.session and not flags.assigns:
                # The statement's, with the variables it runs under as its assignments (a
                # member refuses those its capture cannot use: sql_log_bin, binlog_format …).
                settings = _classify_one(_P(p.text, [p.ts[j], *p.ts[j + 2 : k]], p.nesting + 1))
                if settings.kind is not Kind.SET:
                    return _other("SET", _scanned(p, j))
                return replace(inner, assignments=inner.assignments + settings.assignments)
            return _other("SET", _scanned(p, j))
    return _other("SET")


def _use(p: _P, j: int) -> Statement:
    name = p.ident(j + 1)
    if name is None or j + 2 != p.n:
        return _other("USE")
    return Statement(Kind.USE, "USE", True, schema=name)


# DDL ----------------------------------------------------------------------------------------

_HEADER_WORDS = frozenset(
    {"TEMPORARY", "UNIQUE", "FULLTEXT", "SPATIAL", "ONLINE", "OFFLINE", "AGGREGATE", "IGNORE", "UNDO",
     "EXTERNAL", "NONBLOCKING"}
)
_OBJECT_NAMES = {
    "TABLE": "TABLE",
    "TABLES": "TABLE",
    "INDEX": "INDEX",
    "VIEW": "VIEW",
    "DATABASE": "DATABASE",
    "SCHEMA": "DATABASE",
    "PROCEDURE": "PROCEDURE",
    "FUNCTION": "FUNCTION",
    "TRIGGER": "TRIGGER",
    "EVENT": "EVENT",
    "SERVER": "SERVER",
    "TABLESPACE": "TABLESPACE",
    "LOGFILE": "LOGFILE GROUP",
    "SEQUENCE": "SEQUENCE",
    "SPATIAL": "SPATIAL REFERENCE SYSTEM",
    "PACKAGE": "PACKAGE",
    "SYNONYM": "SYNONYM",
}
_DEFINITIONS = frozenset({"VIEW", "PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"})


def _create_header(p: _P, j: int) -> tuple[str, int, bool]:
    """Skip CREATE/ALTER modifiers from j → (object keyword, index after it, TEMPORARY seen)."""
    temporary = False
    while j < p.n:
        key = p.key(j)
        if key == "OR" and p.key(j + 1) == "REPLACE":
            j += 2
        elif key == "ALGORITHM" and p.key(j + 1) == "=":
            j += 3
        elif key == "DEFINER" and p.key(j + 1) == "=":
            j = p.skip_user(j + 2)
        elif key == "SQL" and p.key(j + 1) == "SECURITY":
            j += 3
        elif key == "SPATIAL" and p.key(j + 1) == "REFERENCE":
            return "SPATIAL", j + 4, temporary
        elif key in _HEADER_WORDS and p.key(j + 1) != "":
            temporary = temporary or key == "TEMPORARY"
            j += 1
        else:
            break
    key = p.key(j)
    if key == "LOGFILE" and p.key(j + 1) == "GROUP":
        return "LOGFILE", j + 2, temporary
    if key == "PACKAGE" and p.key(j + 1) == "BODY":
        return "PACKAGE", j + 2, temporary
    return key, j + 1, temporary


def _ddl(
    p: _P,
    verb_word: str,
    obj: str,
    *,
    tables: tuple[TableRef, ...] = (),
    schema: str | None = None,
    temporary: bool = False,
    flags: _Flags | None = None,
) -> Statement:
    obj_name = _OBJECT_NAMES.get(obj, obj)
    fields = flags.fields() if flags is not None else {}
    return Statement(
        Kind.DDL,
        f"{verb_word} {obj_name}",
        False,
        implicit_commit=not temporary,
        temporary_table=temporary,
        ddl_object=obj_name,
        schema=schema,
        tables=tables,
        **fields,  # type: ignore[arg-type]
    )


def _table_list(p: _P, k: int) -> tuple[TableRef, ...]:
    """t1 [, t2 …] from k."""
    tables: list[TableRef] = []
    while True:
        table, k = p.table(k)
        if table is None:
            break
        tables.append(table)
        if p.key(k) != ",":
            break
        k += 1
    return tuple(tables)


def _create(p: _P, j: int) -> Statement:
    obj, k, temporary = _create_header(p, j + 1)
    if obj in ("USER", "ROLE"):
        return Statement(Kind.ACCOUNT, f"CREATE {obj}", False, implicit_commit=True)
    if obj == "RESOURCE" and p.key(k) == "GROUP":
        return Statement(Kind.ADMIN, "CREATE RESOURCE GROUP", False)
    if obj not in _OBJECT_NAMES:
        return _other("CREATE")
    k = p.skip_if_exists(k)
    if obj in ("TABLE", "SEQUENCE"):
        table, _ = p.table(k)
        tables = (table,) if table else ()
        flags = _scanned(p, k) if obj == "TABLE" else None  # CREATE TABLE … SELECT executes its query
        return _ddl(p, "CREATE", obj, tables=tables, temporary=temporary and obj == "TABLE", flags=flags)
    if obj == "INDEX":
        while k < p.n and p.key(k) != "ON":
            k += 1
        table, _ = p.table(k + 1)
        return _ddl(p, "CREATE", obj, tables=(table,) if table else ())
    if obj in ("DATABASE", "SCHEMA"):
        return _ddl(p, "CREATE", obj, schema=p.ident(k))
    if obj == "VIEW":
        table, _ = p.table(k)
        return _ddl(p, "CREATE", obj, tables=(table,) if table else ())
    if obj == "TRIGGER":
        while k < p.n and p.key(k) != "ON":
            k += 1
        table, _ = p.table(k + 1)
        return _ddl(p, "CREATE", obj, tables=(table,) if table else ())
    return _ddl(p, "CREATE", obj)


def _alter(p: _P, j: int) -> Statement:
    obj, k, _ = _create_header(p, j + 1)
    if obj == "USER":
        return Statement(Kind.ACCOUNT, "ALTER USER", False, implicit_commit=True)
    if obj == "INSTANCE":
        return Statement(Kind.ADMIN, "ALTER INSTANCE", False)
    if obj == "RESOURCE" and p.key(k) == "GROUP":
        return Statement(Kind.ADMIN, "ALTER RESOURCE GROUP", False)
    if obj not in _OBJECT_NAMES:
        return _other("ALTER")
    k = p.skip_if_exists(k)
    if obj in ("DATABASE", "SCHEMA"):
        name = p.ident(k)
        return _ddl(p, "ALTER", obj, schema=name if p.key(k) not in ("CHARACTER", "DEFAULT", "COLLATE", "CHARSET",
                                                                       "ENCRYPTION", "READ", "UPGRADE") else None)
    if obj in ("TABLE", "VIEW", "SEQUENCE"):
        table, after = p.table(k)
        tables = [table] if table else []
        if obj == "TABLE":
            depth = 0
            for m in range(after, p.n):
                key = p.key(m)
                depth += key == "("
                depth -= key == ")"
                if key == "RENAME" and depth == 0 and p.key(m + 1) not in ("COLUMN", "INDEX", "KEY"):
                    n = m + 2 if p.key(m + 1) in ("TO", "AS") else m + 1
                    new, _ = p.table(n)
                    if new is not None and new not in tables:
                        tables.append(new)
        return _ddl(p, "ALTER", obj, tables=tuple(tables))
    return _ddl(p, "ALTER", obj)


def _drop(p: _P, j: int) -> Statement:
    if p.key(j + 1) == "PREPARE":
        return _deallocate(p, j)
    obj, k, temporary = _create_header(p, j + 1)
    if obj in ("USER", "ROLE"):
        return Statement(Kind.ACCOUNT, f"DROP {obj}", False, implicit_commit=True)
    if obj == "RESOURCE" and p.key(k) == "GROUP":
        return Statement(Kind.ADMIN, "DROP RESOURCE GROUP", False)
    if obj not in _OBJECT_NAMES:
        return _other("DROP")
    k = p.skip_if_exists(k)
    if obj in ("TABLE", "TABLES", "VIEW", "SEQUENCE"):
        return _ddl(p, "DROP", obj, tables=_table_list(p, k), temporary=temporary and obj in ("TABLE", "TABLES"))
    if obj == "INDEX":
        while k < p.n and p.key(k) != "ON":
            k += 1
        table, _ = p.table(k + 1)
        return _ddl(p, "DROP", obj, tables=(table,) if table else ())
    if obj in ("DATABASE", "SCHEMA"):
        return _ddl(p, "DROP", obj, schema=p.ident(k))
    return _ddl(p, "DROP", obj)


def _rename(p: _P, j: int) -> Statement:
    what = p.key(j + 1)
    if what == "USER":
        return Statement(Kind.ACCOUNT, "RENAME USER", False, implicit_commit=True)
    if what not in ("TABLE", "TABLES"):
        return _other("RENAME")

    def past_separator(k: int) -> int | None:  # a TO b, c TO d
        if p.key(k) in ("TO", ","):
            return k + 1
        return None if k < p.n else k

    tables = _distinct_tables(p, j + 2, past_separator)
    if tables is None:
        return _other("RENAME")
    return _ddl(p, "RENAME", "TABLE", tables=tuple(tables))


def _distinct_tables(p: _P, k: int, advance: Callable[[int], int | None]) -> list[TableRef] | None:
    """The distinct tables of a list starting at token `k` (LOCK TABLES, RENAME TABLE), in
    order; `advance(k)` skips what follows a table name up to the next one (None: malformed).
    None when a table name or separator is not understood."""
    tables: list[TableRef] = []
    while k < p.n:
        table, k = p.table(k)
        if table is None:
            return None
        if table not in tables:
            tables.append(table)
        after = advance(k)
        if after is None:
            return None
        k = after
    return tables


def _truncate(p: _P, j: int) -> Statement:
    k = j + 2 if p.key(j + 1) == "TABLE" else j + 1
    table, _ = p.table(k)
    if table is None:
        return _other("TRUNCATE")
    return _ddl(p, "TRUNCATE", "TABLE", tables=(table,))


def _import(p: _P, j: int) -> Statement:
    if p.key(j + 1) == "TABLE":
        return _ddl(p, "IMPORT", "TABLE")
    return _other("IMPORT")


# The rest -----------------------------------------------------------------------------------

_SESSION_SHOW = frozenset({"WARNINGS", "ERRORS", "COUNT", "PROFILE", "PROFILES"})


def _show(p: _P, j: int) -> Statement:
    what = p.key(j + 1)
    return Statement(Kind.SHOW, "SHOW", True, session_functions=what in _SESSION_SHOW)


def _help(p: _P, j: int) -> Statement:
    return Statement(Kind.SHOW, "HELP", True)


def _get(p: _P, j: int) -> Statement:
    k = j + 1
    if p.key(k) in ("CURRENT", "STACKED"):
        k += 1
    if p.key(k) == "DIAGNOSTICS":  # GET DIAGNOSTICS @n = NUMBER: every @var is a target
        assigns = any(t[0] == _UV for t in p.ts[k:])
        return Statement(Kind.SHOW, "GET DIAGNOSTICS", True, session_functions=True, assigns_user_variables=assigns)
    return _other("GET")


_EXPLAINABLE = frozenset({"SELECT", "TABLE", "VALUES", "WITH", "INSERT", "REPLACE", "UPDATE", "DELETE", "("})


def _explain(p: _P, j: int) -> Statement:
    """EXPLAIN / DESCRIBE / DESC [ANALYZE] [EXTENDED | PARTITIONS] [FORMAT = x] <stmt> | <table>."""
    verb = "DESCRIBE" if p.key(j) in ("DESCRIBE", "DESC") else "EXPLAIN"
    k = j + 1
    analyze = False
    while True:
        key = p.key(k)
        if key == "ANALYZE":
            analyze, k = True, k + 1
        elif key in ("EXTENDED", "PARTITIONS"):
            k += 1
        elif key == "FORMAT" and p.key(k + 1) == "=":
            k += 3
        else:
            break
    if p.key(k) in _EXPLAINABLE:
        if p.nesting >= STATEMENT_NESTING_MAX:
            return _other(verb)
        sub = _P(p.text, p.ts[k:], p.nesting + 1)
        inner = _classify_one(sub)
        if analyze:  # EXPLAIN ANALYZE executes the statement
            return Statement(Kind.SHOW, verb, inner.is_read_only, tables=inner.tables, inner=inner,
                             **_inner_flags(inner))  # type: ignore[arg-type]
        return Statement(Kind.SHOW, verb, True, inner=inner)
    return Statement(Kind.SHOW, verb, True)


def _analyze(p: _P, j: int) -> Statement:
    """ANALYZE [NO_WRITE_TO_BINLOG | LOCAL] TABLE … is administration; MariaDB's ANALYZE <stmt>
    executes <stmt> like EXPLAIN ANALYZE."""
    k = j + 1
    if p.key(k) in ("NO_WRITE_TO_BINLOG", "LOCAL"):
        k += 1
    if p.key(k) in ("TABLE", "TABLES"):
        return Statement(Kind.ADMIN, "ANALYZE TABLE", False, implicit_commit=True)
    if p.key(k) in _EXPLAINABLE or p.key(k) == "FORMAT":
        explained = _explain(p, j)  # reads ANALYZE's own modifiers the same way
        if explained.inner is not None:
            inner = explained.inner
            return Statement(Kind.SHOW, "ANALYZE", inner.is_read_only, tables=inner.tables, inner=inner,
                             **_inner_flags(inner))  # type: ignore[arg-type]
    return _other("ANALYZE")


def _call(p: _P, j: int) -> Statement:
    if p.ident(j + 1) is None:
        return _other("CALL")
    flags = _scanned(p, j)
    if flags.reads:  # an @var argument may be an OUT parameter
        flags.assigns = True
    return Statement(Kind.CALL, "CALL", False, **flags.fields())  # type: ignore[arg-type]


def _do(p: _P, j: int) -> Statement:
    if j + 1 >= p.n:
        return _other("DO")
    flags = _scanned(p, j)
    return Statement(Kind.DO, "DO", not flags.writes, **flags.fields())  # type: ignore[arg-type]


def _prepare(p: _P, j: int) -> Statement:
    """PREPARE name FROM {'text' | @var}: `inner` classifies a literal text."""
    name = p.ident(j + 1)
    if name is None or p.key(j + 2) != "FROM" or j + 4 != p.n:
        return _other("PREPARE")
    source_kind = p.kind(j + 3)
    if source_kind == _S:
        inner = _inner_text(p, _unquote_string(p.ts[j + 3][1]))
        return Statement(Kind.PREPARE, "PREPARE", True, prepared_name=name, inner=inner)
    if source_kind == _UV:
        return Statement(Kind.PREPARE, "PREPARE", True, prepared_name=name, reads_user_variables=True)
    return _other("PREPARE")


def _inner_text(p: _P, text: str) -> Statement:
    if p.nesting >= STATEMENT_NESTING_MAX:
        return _other("")
    return _classify_text(text, p.nesting + 1)


def _execute(p: _P, j: int) -> Statement:
    """EXECUTE name [USING @a, …]; MariaDB's EXECUTE IMMEDIATE 'text' [USING …]."""
    if p.key(j + 1) == "IMMEDIATE":
        if p.kind(j + 2) == _S:
            inner = _inner_text(p, _unquote_string(p.ts[j + 2][1]))
            flags = _scanned(p, j + 3)
            fields = _inner_flags(inner)
            fields["reads_user_variables"] = fields["reads_user_variables"] or flags.reads
            return Statement(Kind.EXECUTE, "EXECUTE IMMEDIATE", inner.is_read_only and not flags.writes, inner=inner,
                             **fields)  # type: ignore[arg-type]
        return Statement(Kind.EXECUTE, "EXECUTE IMMEDIATE", False, **_scanned(p, j + 2).fields())  # type: ignore[arg-type]
    name = p.ident(j + 1)
    if name is None or (j + 2 < p.n and p.key(j + 2) != "USING"):
        return _other("EXECUTE")
    flags = _scanned(p, j + 2)
    return Statement(Kind.EXECUTE, "EXECUTE", False, prepared_name=name, **flags.fields())  # type: ignore[arg-type]


def _inner_flags(inner: Statement) -> dict[str, object]:
    """The flag fields of a statement, to carry over to one that executes it."""
    return {
        "locking_read": inner.locking_read,
        "uses_locking_functions": inner.uses_locking_functions,
        "session_functions": inner.session_functions,
        "assigns_user_variables": inner.assigns_user_variables,
        "reads_user_variables": inner.reads_user_variables,
        "writes_file": inner.writes_file,
        "writes_sequence": inner.writes_sequence,
        "system_variables": inner.system_variables,
    }


def _deallocate(p: _P, j: int) -> Statement:
    name = p.ident(j + 2)
    if p.key(j + 1) != "PREPARE" or name is None or j + 3 != p.n:
        return _other(p.key(j))
    return Statement(Kind.DEALLOCATE, "DEALLOCATE PREPARE", True, prepared_name=name)


def _kill(p: _P, j: int) -> Statement:
    if j + 1 >= p.n:
        return _other("KILL")
    return Statement(Kind.KILL, "KILL", False)


def _handler(p: _P, j: int) -> Statement:
    if p.ident(j + 1) is None:
        return _other("HANDLER")
    return Statement(Kind.HANDLER, "HANDLER", False, session_functions=True)


def _account(p: _P, j: int) -> Statement:
    return Statement(Kind.ACCOUNT, p.key(j), False, implicit_commit=True)


# MySQL's list of statements causing an implicit commit, administration part (RESET PERSIST and
# CHECKSUM TABLE excepted); see `_admin`.
_ADMIN_IMPLICIT_COMMIT = frozenset({"FLUSH", "CACHE", "CHECK", "OPTIMIZE", "REPAIR", "RESET", "STOP", "CHANGE",
                                    "INSTALL", "UNINSTALL"})
_ADMIN_WORDS = _ADMIN_IMPLICIT_COMMIT | frozenset({"CHECKSUM", "PURGE", "SHUTDOWN", "RESTART", "CLONE", "BINLOG",
                                                   "BACKUP"})


def _admin(p: _P, j: int) -> Statement:
    key = p.key(j)
    implicit_commit = key in _ADMIN_IMPLICIT_COMMIT and not (key == "RESET" and p.key(j + 1) == "PERSIST")
    if key == "CHANGE" and p.key(j + 1) not in ("MASTER", "REPLICATION"):
        return _other("CHANGE")
    if key == "RESET" and any(p.kind(k) == _W and p.key(k) in ("MASTER", "BINARY") for k in range(j + 1, p.n)):
        # RESET MASTER wherever it is in the option list (RESET SLAVE, MASTER TO 9); RESET
        # BINARY LOGS AND GTIDS is MySQL 8.4's name for it.
        return Statement(Kind.ADMIN, "RESET MASTER", False, implicit_commit=True)
    return Statement(Kind.ADMIN, key, False, implicit_commit=implicit_commit)


def _compound(p: _P, j: int) -> Statement:
    """A top-level compound statement (MariaDB BEGIN NOT ATOMIC …, IF …, labels): may do anything."""
    return _other(p.key(j) if p.kind(j) == _W else "", _scanned(p, j))


_HANDLERS = {
    "SELECT": _query,
    "TABLE": _query,
    "VALUES": _query,
    "WITH": _with,
    "INSERT": _insert,
    "REPLACE": _insert,
    "UPDATE": _update,
    "DELETE": _delete,
    "LOAD": _load,
    "BEGIN": _begin,
    "START": _start,
    "COMMIT": _commit,
    "ROLLBACK": _rollback,
    "SAVEPOINT": _savepoint,
    "RELEASE": _release,
    "XA": _xa,
    "LOCK": _lock,
    "UNLOCK": _unlock,
    "SET": _set,
    "USE": _use,
    "CREATE": _create,
    "ALTER": _alter,
    "DROP": _drop,
    "RENAME": _rename,
    "TRUNCATE": _truncate,
    "IMPORT": _import,
    "SHOW": _show,
    "HELP": _help,
    "GET": _get,
    "EXPLAIN": _explain,
    "DESCRIBE": _explain,
    "DESC": _explain,
    "ANALYZE": _analyze,
    "CALL": _call,
    "DO": _do,
    "PREPARE": _prepare,
    "EXECUTE": _execute,
    "DEALLOCATE": _deallocate,
    "KILL": _kill,
    "HANDLER": _handler,
    "GRANT": _account,
    "REVOKE": _account,
    "IF": _compound,
    "WHILE": _compound,
    "LOOP": _compound,
    "REPEAT": _compound,
    "CASE": _compound,
    **{word: _admin for word in _ADMIN_WORDS},
}


# --------------------------------------------------------------------------------------------
# Public entry points


def classify_uncached(sql: str | bytes) -> Statement:
    """Classify `sql` without the cache.

    Args: the statement text as the client sent it; bytes are decoded as UTF-8 with
    surrogateescape (lossless; invalid bytes can only sit in strings or identifiers).
    Returns: a Statement; never raises. An internal error yields Kind.OTHER, not read-only.
    """
    try:
        if isinstance(sql, (bytes, bytearray, memoryview)):
            return _classify_text(bytes(sql).decode("utf-8", "surrogateescape"))
        return _classify_text(sql)
    except Exception:  # noqa: BLE001 - the contract is "never raises"; a bug must not kill a session
        return _INTERNAL_ERROR


_INTERNAL_ERROR = Statement(Kind.OTHER, "", False)


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    uncached: int  # texts over the size bound, classified without caching
    internal_errors: int  # classifications that fell back to OTHER because of a bug
    entries: int
    entries_max: int
    chars: int
    chars_max: int


class Classifier:
    """`classify` with a bounded LRU cache keyed by the exact text.

    Bounds: at most `entries_max` entries and `chars_max` summed text length; a text longer than
    `text_chars_max` is classified without being cached. Eviction drops the least recently used
    entries until both bounds hold. Thread-safe: one lock around insertion and eviction; hits and
    classification take none (the hit and miss counters are then only approximate).
    """

    __slots__ = ("_cache", "_chars", "_hits", "_misses", "_uncached", "_errors", "_lock", "entries_max",
                 "chars_max", "text_chars_max")

    def __init__(
        self,
        entries_max: int = STATEMENT_CACHE_ENTRIES_MAX,
        chars_max: int = STATEMENT_CACHE_CHARS_MAX,
        text_chars_max: int = STATEMENT_CACHED_TEXT_CHARS_MAX,
    ) -> None:
        if entries_max < 0 or chars_max < 0 or text_chars_max < 0:
            raise ValueError("cache bounds must be >= 0")
        self._cache: OrderedDict[str | bytes, Statement] = OrderedDict()
        self._chars = 0
        self._hits = self._misses = self._uncached = self._errors = 0
        self._lock = threading.Lock()
        self.entries_max = entries_max
        self.chars_max = chars_max
        self.text_chars_max = text_chars_max

    def __call__(self, sql: str | bytes) -> Statement:
        """Classify `sql` (see `classify_uncached`); never raises for str or bytes input."""
        if isinstance(sql, (bytearray, memoryview)):
            sql = bytes(sql)
        size = len(sql)
        if size > self.text_chars_max or size > self.chars_max:
            self._uncached += 1
            return self._classify(sql)
        # The hit path takes no lock: get and move_to_end are each atomic under the GIL, and an
        # entry evicted in between by another thread only makes move_to_end miss.
        cache = self._cache
        found = cache.get(sql)
        if found is not None:
            try:
                cache.move_to_end(sql)
            except KeyError:
                pass
            self._hits += 1
            return found
        result = self._classify(sql)
        with self._lock:
            self._misses += 1
            if self.entries_max and sql not in self._cache:
                self._cache[sql] = result
                self._chars += size
                while len(self._cache) > self.entries_max or self._chars > self.chars_max:
                    old, _ = self._cache.popitem(last=False)
                    self._chars -= len(old)
        return result

    def _classify(self, sql: str | bytes) -> Statement:
        result = classify_uncached(sql)
        if result is _INTERNAL_ERROR:
            self._errors += 1
        return result

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, self._uncached, self._errors, len(self._cache),
                             self.entries_max, self._chars, self.chars_max)

    def cache_clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._chars = 0
            self._hits = self._misses = self._uncached = self._errors = 0


# The process-wide classifier. A module-level object, against STYLE 3's rule, on purpose: it
# memoises a pure function, so nothing observable depends on it (like re's pattern cache), and
# both the router and the member share its hits. Components that want their own bounds or
# counters construct a Classifier.
classify = Classifier()


_SELECT_ITEM_BEFORE_RE = re.compile(rb"(?:\bSELECT|,)\s*$", re.IGNORECASE)
_SELECT_ITEM_AFTER_RE = re.compile(rb"\s*(?:,|;|$|FROM\b|INTO\b|LIMIT\b)", re.IGNORECASE)


@functools.lru_cache(maxsize=8)
def _call_re(function: str) -> re.Pattern[bytes]:
    return re.compile(rb"\b" + re.escape(function.encode("ascii")) + rb"\s*\(\s*\)", re.IGNORECASE)


def replace_call(sql: bytes, function: str, value: int) -> bytes:
    """`sql` with every argument-less call `function()` (any case) replaced by the literal
    `value`; a select-list item keeps its column name (value AS `function()` quoted).

    A text-level rewrite for session functions whose answer the proxy knows better than the
    server it relays to (CONNECTION_ID() through the router, ROW_COUNT() after a member ended
    an autocommit write with its XA COMMIT). A string literal containing the call is rewritten
    too, so callers rewrite only statements the classifier says call a session function.
    Returns `sql` itself when there is no call.
    """
    pattern = _call_re(function)

    def sub(m: re.Match[bytes]) -> bytes:
        item = (_SELECT_ITEM_BEFORE_RE.search(sql, 0, m.start()) is not None
                and _SELECT_ITEM_AFTER_RE.match(sql, m.end()) is not None)
        literal = str(value).encode("ascii")
        return literal + b" AS `" + m.group(0) + b"`" if item else literal

    return pattern.sub(sub, sql)
