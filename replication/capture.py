"""Capture: run a client's write on the member's backend and learn exactly which rows it changed.

Theory of operation (DESIGN §5). A write transaction runs on the member's own backend; every
DML statement in it goes through `capture_statement`, which returns what the client must see
(affected rows, insert id, warnings) and the `RowChange`s the statement made: the after-image of
every row it inserted or updated, the key of every row it deleted. Those travel with the
transaction through the group; other members apply them by primary key (rowimage.py).

Exactness comes from three rules:

1. *Images are read, never computed.* After the statement, the touched rows are read back
   (the post-read) in an exact form (rowimage.Form): whatever the statement evaluated —
   UUID(), RAND(), NOW(6), defaults, ON UPDATE CURRENT_TIMESTAMP, triggers excepted — is in the
   image. Non-deterministic functions replicate identically for free.
2. *Every read that defines an image is a locking read* (`FOR UPDATE`), so it sees the latest
   committed version and the row stays ours until commit: the snapshot argument of
   certification holds (DESIGN §5), and a row read but not changed cannot be stale.
3. *The set of touched rows is proven, not assumed.* Either the statement names its keys as
   literals (then a probe by those keys, before and after, brackets every row it can touch:
   the difference is the change), or a locking pre-read fixes the rows and the statement is
   rewritten to touch exactly those primary keys. Either way the server's own affected-rows
   count must agree with the captured changes; if it does not, the statement is undone (a
   SAVEPOINT taken in the same round trip) and refused with 1235 — never replicated wrongly.

Planning is pure (`parse_statement`, `plan`): the statement is tokenised with sqlglot's MySQL
tokenizer (the session's ANSI_QUOTES / NO_BACKSLASH_ESCAPES respected) and its clauses located
by position, so every piece of the client's SQL that is re-sent is re-sent *as the client
wrote it* — expressions are spliced, never regenerated. The executor then runs the plan in as
few round trips as the plan allows, with statements batched as one multi-statement:

    kind                                   round trips added to the statement's own
    INSERT/REPLACE/IGNORE … VALUES|SET     0   (keys literal or AUTO_INCREMENT; IGNORE: 1 for
                                                AUTO_INCREMENT rows without a literal unique key)
    … ON DUPLICATE KEY UPDATE              0   (1 if it assigns a unique-key column, or for
                                                AUTO_INCREMENT rows without a literal unique key)
    INSERT … VALUES with computed keys     1   (the key expressions are evaluated first)
    INSERT … SELECT                        1   (the SELECT is materialised first)
    UPDATE / DELETE by literal keys        0
    UPDATE / DELETE other, multi-table     1   (locking pre-read, then the restricted statement)

What cannot be captured exactly is refused before anything runs: 3098 for tables unfit for
replication (no primary key, not InnoDB, a write that would fire a foreign key's cascading
action on another table), 1235 for statements (tables with triggers, stored procedures and
functions, sequences, LOAD DATA, CREATE … SELECT, views and system-versioned tables,
multi-statements, RETURNING, explicit and generated AUTO_INCREMENT values mixed in one INSERT,
connections with CLIENT_NO_SCHEMA, what the planner cannot analyse). What only the server's
answer can disprove is undone to the savepoint and refused with 1235. Writes to the session's
temporary tables are run as they are and not replicated. `add_changes` turns a transaction
over transaction_size_limit into 3100.

`write_set` hashes a statement's changes into certification keys; `RowCapturer` packages all of
this for the member session (replication.member_session.Capturer).

Preconditions the caller guarantees: the connection is the member session's backend
connection, inside an open transaction (the member begins one for autocommit statements),
negotiated with CLIENT_MULTI_STATEMENTS (without it statements are sent one per round trip).
Side effects not captured: the statement's ROW_COUNT(), FOUND_ROWS() and SHOW WARNINGS
diagnostics on the backend are those of capture's last read; `ClientResult` carries the
statement's own values for the session to report.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import ParseError as SqlglotParseError
from sqlglot.errors import TokenError

from .protocol.constants import Cap, Command
from .protocol.errors import BackendError, BackendLost, BeforeDmlValidation, HookError, MalformedPacket, NotSupported
from .protocol.packets import parse_err, parse_ok, read_lenenc_int, text_row_values
from .rowimage import (
    Form,
    RowChange,
    RowShape,
    TransactionChanges,
    TransactionTooLarge,
    Value,
    apply_changes,
    canonical_bytes,
    decode_changes,
    encode_changes,
    pk_predicate,
    qualified_name,
    quote_identifier,
    write_set_keys,
)
from .certifier import KeyHash
from .schema import CatalogSnapshot, Column, SchemaCatalog, TableMeta, TableName

if TYPE_CHECKING:
    from .protocol.backend import BackendConnection

# --- bounds -----------------------------------------------------------------------------------------

CAPTURE_ROWS_MAX = 100_000  # rows one statement may touch (pre-read / post-read / materialised)
CAPTURE_SQL_BYTES_MAX = 64 << 20  # text of one generated multi-statement
CAPTURE_STATEMENT_CHARS_MAX = 16 << 20  # client statements longer than this are not analysed
SAVEPOINT = "`__grproxy_capture`"

# --- errors ------------------------------------------------------------------------------------------


class CaptureRefused(NotSupported):
    """1235: the statement cannot be captured exactly; it did not run (or was undone)."""


class TableUnfit(BeforeDmlValidation):
    """3098: a written table does not meet replication's requirements (no primary key, …)."""


class TransactionOverLimit(HookError):
    """3100: the transaction's changes passed transaction_size_limit; roll it back."""


def _refuse(sql: str, why: str) -> CaptureRefused:
    shown = " ".join(sql.split())
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    return CaptureRefused(f"grproxy cannot replicate this statement: {why} (statement: {shown})")


def _unfit(sql: str, why: str) -> TableUnfit:
    shown = " ".join(sql.split())[:200]
    return TableUnfit(
        f"The table does not comply with the requirements by an external plugin: {why} (statement: {shown})"
    )


def add_changes(tx: TransactionChanges, changes: Iterable[RowChange]) -> None:
    """Append a statement's changes to its transaction; 3100 when over transaction_size_limit."""
    try:
        tx.add(changes)
    except TransactionTooLarge as exc:
        raise TransactionOverLimit(
            f"Error on observer while running replication hook 'before_commit'. ({exc})"
        ) from exc


# --- tokens ---------------------------------------------------------------------------------------


class _Escapes(MySQL):
    """MySQL lexing with backslash escapes (the default sql_mode)."""


class _NoBackslash(MySQL):
    class Tokenizer(MySQL.Tokenizer):
        STRING_ESCAPES = ["'", '"']


class _AnsiQuotes(MySQL):
    class Tokenizer(MySQL.Tokenizer):
        QUOTES = ["'"]
        IDENTIFIERS = ["`", '"']


class _AnsiNoBackslash(MySQL):
    class Tokenizer(MySQL.Tokenizer):
        QUOTES = ["'"]
        IDENTIFIERS = ["`", '"']
        STRING_ESCAPES = ["'"]


@dataclass(frozen=True, slots=True)
class SqlMode:
    """The parts of the session's sql_mode that change how a statement reads or behaves."""

    ansi_quotes: bool = False
    no_backslash_escapes: bool = False
    no_auto_value_on_zero: bool = False
    oracle: bool = False  # MariaDB's Oracle-compatible grammar: not analysed, refused

    @classmethod
    def parse(cls, sql_mode: str) -> "SqlMode":
        flags = {f.strip().upper() for f in sql_mode.split(",")}
        ansi = "ANSI_QUOTES" in flags or "ANSI" in flags
        return cls(ansi, "NO_BACKSLASH_ESCAPES" in flags, "NO_AUTO_VALUE_ON_ZERO" in flags, "ORACLE" in flags)


@dataclass(frozen=True, slots=True)
class Tok:
    kind: str  # sqlglot TokenType name
    text: str
    upper: str
    start: int  # character offsets into the statement, end exclusive
    end: int
    depth: int  # parenthesis depth the token sits at ("(" and ")" at the outer depth)


_NAME_RE = re.compile(r"[A-Za-z0-9_$\u0080-\U0010ffff]+\Z")
_PUNCT = frozenset(
    {"L_PAREN", "R_PAREN", "COMMA", "DOT", "SEMICOLON", "EQ", "STRING", "NUMBER", "HEX_STRING", "BIT_STRING",
     "NATIONAL_STRING", "PARAMETER", "SESSION_PARAMETER", "STAR", "DASH", "PLUS", "SLASH", "COLON_EQ"}
)


def _dialect(mode: SqlMode) -> type[MySQL]:
    if mode.ansi_quotes:
        return _AnsiNoBackslash if mode.no_backslash_escapes else _AnsiQuotes
    return _NoBackslash if mode.no_backslash_escapes else _Escapes


def _tokenize(sql: str, mode: SqlMode) -> list[Tok]:
    dialect = _dialect(mode)
    lexed = sql
    m = re.match(r"\s*REPLACE\b", sql, re.IGNORECASE)
    if m:
        # sqlglot lexes REPLACE as a command and the rest as one string: lex it as INSERT
        # (same length, so every offset stays right) and restore the keyword below.
        at = m.end() - 7
        lexed = sql[:at] + "INSERT " + sql[at + 7 :]
    try:
        raw = dialect().tokenize(lexed)
    except (TokenError, SqlglotParseError) as exc:
        raise _refuse(sql, f"it cannot be tokenised ({exc})") from exc
    toks: list[Tok] = []
    depth = 0
    for t in raw:
        for comment in t.comments or ():
            c = comment.lstrip()
            if c.startswith("!") or c.startswith("M!"):
                raise _refuse(sql, "it contains an executable comment (/*! … */)")
        kind = t.token_type.name
        if kind == "R_PAREN":
            depth -= 1
        if m and not toks:
            toks.append(Tok("REPLACE", sql[t.start : t.start + 7], "REPLACE", t.start, t.start + 7, depth))
            continue
        toks.append(Tok(kind, t.text, t.text.upper(), t.start, t.end + 1, depth))
        if kind == "L_PAREN":
            depth += 1
    return toks


def _is_name(t: Tok) -> bool:
    return t.kind == "IDENTIFIER" or (t.kind not in _PUNCT and bool(_NAME_RE.match(t.text)))


# --- statement structure --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """Token range [lo, hi) of the statement."""

    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class TableRef:
    schema: str | None
    table: str
    alias: str | None

    def resolved(self, default_schema: str | None) -> TableName | None:
        schema = self.schema or default_schema
        return (schema, self.table) if schema is not None else None

    @property
    def qualifier(self) -> str:
        if self.alias:
            return quote_identifier(self.alias)
        if self.schema:
            return qualified_name(self.schema, self.table)
        return quote_identifier(self.table)


@dataclass(frozen=True, slots=True)
class Assignment:
    qualifier: str | None  # the table (or alias) the column is qualified with
    column: str
    expr: Span


class StatementKind(enum.Enum):
    OTHER = "other"  # not a write capture handles (SELECT, SET, DDL, transaction control, …)
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Parsed:
    """A statement located clause by clause (token spans into `tokens`)."""

    sql: str
    tokens: tuple[Tok, ...]
    kind: StatementKind
    default_schema: str | None
    mode: SqlMode
    # INSERT / REPLACE
    replace: bool = False
    ignore: bool = False
    target: TableRef | None = None
    columns: tuple[str, ...] | None = None
    rows: tuple[tuple[Span, ...], ...] = ()
    set_form: bool = False  # INSERT … SET
    source: Span | None = None  # INSERT … SELECT
    odku: tuple[Assignment, ...] = ()
    # UPDATE / DELETE
    refs: Span | None = None
    assignments: tuple[Assignment, ...] = ()
    set_span: Span | None = None
    where: Span | None = None
    where_kw: int | None = None  # token index of WHERE (or where it would go)
    order: Span | None = None
    limit: Span | None = None
    delete_targets: tuple[str, ...] = ()  # multi-table DELETE: names or aliases
    multi: bool = False
    ref_tables: tuple[TableRef, ...] = ()
    function_calls: tuple[tuple[str | None, str], ...] = ()  # (schema or None, name)
    has_assignment_op: bool = False  # := somewhere

    def text(self, span: Span) -> str:
        if span.lo >= span.hi:
            return ""
        return self.sql[self.tokens[span.lo].start : self.tokens[span.hi - 1].end]

    def offset(self, i: int) -> int:
        """Character offset where token i starts (end of the statement past the last token)."""
        return self.tokens[i].start if i < len(self.tokens) else self.tokens[-1].end

    @property
    def tables_needed(self) -> tuple[TableName, ...]:
        out: list[TableName] = []
        refs = [self.target] if self.target else []
        refs += list(self.ref_tables)
        for ref in refs:
            if ref is not None:
                name = ref.resolved(self.default_schema)
                if name is not None and name not in out:
                    out.append(name)
        return tuple(out)

    @property
    def function_schemas(self) -> tuple[str, ...]:
        out: list[str] = []
        for schema, _ in self.function_calls:
            s = schema or self.default_schema
            if s is not None and s not in out:
                out.append(s)
        return tuple(out)


_DML_MODIFIERS = frozenset({"LOW_PRIORITY", "HIGH_PRIORITY", "DELAYED", "IGNORE", "QUICK"})
_SEQUENCE_FUNCTIONS = frozenset({"NEXTVAL", "SETVAL"})
_TABLE_LEADS = frozenset({"INTO", "INSERT", "REPLACE", "IGNORE", "LOW_PRIORITY", "HIGH_PRIORITY", "DELAYED"})
_NONDETERMINISTIC = frozenset(
    {"RAND", "UUID", "UUID_SHORT", "SYS_GUID", "NOW", "SYSDATE", "CURRENT_TIMESTAMP", "LOCALTIME",
     "LOCALTIMESTAMP", "CURTIME", "CURRENT_TIME", "CURDATE", "CURRENT_DATE", "UTC_TIMESTAMP", "UTC_TIME",
     "UTC_DATE", "UNIX_TIMESTAMP", "LAST_INSERT_ID", "ROW_COUNT", "FOUND_ROWS", "CONNECTION_ID", "USER",
     "CURRENT_USER", "SESSION_USER", "SYSTEM_USER", "RANDOM_BYTES", "NEXTVAL", "LASTVAL", "SLEEP", "GET_LOCK",
     "SELECT", "BENCHMARK", "LOAD_FILE", "VALUES"}
)


def parse_statement(sql: str, default_schema: str | None, *, sql_mode: str = "") -> Parsed:
    """Locate the clauses of one statement. Pure.

    Returns a Parsed of kind OTHER for anything that is not INSERT/REPLACE/UPDATE/DELETE.
    Raises CaptureRefused for what capture refuses on sight (multi-statements, LOAD DATA, CALL,
    CREATE … SELECT, executable comments, DML forms it cannot analyse).
    """
    if len(sql) > CAPTURE_STATEMENT_CHARS_MAX:
        raise _refuse(sql[:200], f"it is longer than {CAPTURE_STATEMENT_CHARS_MAX} characters")
    mode = SqlMode.parse(sql_mode)
    if mode.oracle:
        raise _refuse(sql, "sql_mode=ORACLE changes the SQL grammar capture analyses")
    toks = _tokenize(sql, mode)
    while toks and toks[-1].kind == "SEMICOLON":
        toks.pop()
    if not toks:
        return Parsed(sql, (), StatementKind.OTHER, default_schema, mode)
    if any(t.kind == "SEMICOLON" for t in toks):
        raise _refuse(sql, "it holds several statements; send them one at a time")
    calls, assigns = _function_calls(sql, toks)
    first = toks[0].upper
    common = dict(function_calls=calls, has_assignment_op=assigns)
    if first in ("INSERT", "REPLACE"):
        return _parse_insert(sql, toks, default_schema, mode, common)
    if first == "UPDATE":
        return _parse_update(sql, toks, default_schema, mode, common)
    if first == "DELETE":
        return _parse_delete(sql, toks, default_schema, mode, common)
    if first == "LOAD":
        raise _refuse(sql, "LOAD DATA / LOAD XML writes rows capture cannot see")
    if first == "CALL":
        raise _refuse(sql, "writes through stored procedures cannot be captured")
    if first == "WITH" and any(t.depth == 0 and t.upper in ("UPDATE", "DELETE", "INSERT", "REPLACE") for t in toks):
        raise _refuse(sql, "WITH … UPDATE/DELETE is not supported")
    if first == "CREATE" and any(t.depth == 0 and t.upper == "SELECT" for t in toks) and any(
        t.depth == 0 and t.upper == "TABLE" for t in toks[:6]
    ):
        raise _refuse(sql, "CREATE TABLE … SELECT is not supported")
    return Parsed(sql, tuple(toks), StatementKind.OTHER, default_schema, mode, **common)  # type: ignore[arg-type]


def _function_calls(sql: str, toks: list[Tok]) -> tuple[tuple[tuple[str | None, str], ...], bool]:
    calls: list[tuple[str | None, str]] = []
    assigns = False
    for i, t in enumerate(toks):
        if t.kind == "COLON_EQ":
            assigns = True
        if t.upper == "NEXT" and i + 2 < len(toks) and toks[i + 1].upper == "VALUE" and toks[i + 2].upper == "FOR":
            raise _refuse(sql, "sequences (NEXT VALUE FOR) are not replicated")
        if i + 1 < len(toks) and toks[i + 1].kind == "L_PAREN" and (t.kind in ("VAR", "IDENTIFIER")):
            if t.upper in _SEQUENCE_FUNCTIONS:
                raise _refuse(sql, f"sequences ({t.upper}()) are not replicated")
            lead = i - 2 if i >= 2 and toks[i - 1].kind == "DOT" else i
            if lead >= 1 and toks[lead - 1].upper in _TABLE_LEADS and toks[lead - 1].kind != "IDENTIFIER":
                continue  # INSERT INTO t (columns): a table, not a call
            if t.upper == "PARTITION":
                continue
            if i >= 2 and toks[i - 1].kind == "DOT" and _is_name(toks[i - 2]):
                calls.append((toks[i - 2].text, t.text))
            elif i >= 1 and toks[i - 1].kind in ("PARAMETER", "SESSION_PARAMETER"):
                continue
            else:
                calls.append((None, t.text))
    return tuple(dict.fromkeys(calls)), assigns


def _find(toks: Sequence[Tok], lo: int, hi: int, depth: int, *words: str) -> int | None:
    for i in range(lo, hi):
        if toks[i].depth == depth and toks[i].upper in words and toks[i].kind not in ("STRING", "IDENTIFIER"):
            return i
    return None


def _find_seq(toks: Sequence[Tok], lo: int, hi: int, depth: int, words: Sequence[str]) -> int | None:
    for i in range(lo, hi - len(words) + 1):
        if all(toks[i + k].depth == depth and toks[i + k].upper == w and toks[i + k].kind != "IDENTIFIER" for k, w in enumerate(words)):
            return i
    return None


def _matching(toks: Sequence[Tok], i: int) -> int:
    """Index of the R_PAREN closing the L_PAREN at i."""
    depth = toks[i].depth
    for j in range(i + 1, len(toks)):
        if toks[j].kind == "R_PAREN" and toks[j].depth == depth:
            return j
    raise IndexError("unbalanced parentheses")


def _split(toks: Sequence[Tok], lo: int, hi: int, depth: int) -> list[Span]:
    """Comma-separated items of [lo, hi) at `depth`."""
    out = []
    start = lo
    for i in range(lo, hi):
        if toks[i].kind == "COMMA" and toks[i].depth == depth:
            out.append(Span(start, i))
            start = i + 1
    out.append(Span(start, hi))
    return out


def _table_name(sql: str, toks: Sequence[Tok], i: int) -> tuple[TableRef, int]:
    """A [schema.]table name at i; returns it (no alias) and the index after it."""
    if i >= len(toks) or not _is_name(toks[i]):
        raise _refuse(sql, "the table name could not be found")
    if i + 2 < len(toks) and toks[i + 1].kind == "DOT" and _is_name(toks[i + 2]):
        return TableRef(toks[i].text, toks[i + 2].text, None), i + 3
    return TableRef(None, toks[i].text, None), i + 1


def _modifiers(toks: Sequence[Tok], i: int) -> tuple[set[str], int]:
    mods = set()
    while i < len(toks) and toks[i].upper in _DML_MODIFIERS and toks[i].kind != "IDENTIFIER":
        mods.add(toks[i].upper)
        i += 1
    return mods, i


def _assignments(sql: str, toks: Sequence[Tok], span: Span) -> tuple[Assignment, ...]:
    out = []
    for item in _split(toks, span.lo, span.hi, toks[span.lo].depth if span.lo < span.hi else 0):
        i = item.lo
        names = []
        while i < item.hi and _is_name(toks[i]):
            names.append(toks[i].text)
            if i + 1 < item.hi and toks[i + 1].kind == "DOT":
                i += 2
                continue
            i += 1
            break
        if not names or i >= item.hi or toks[i].kind not in ("EQ", "COLON_EQ") or i + 1 >= item.hi:
            raise _refuse(sql, "an assignment could not be analysed")
        qualifier = names[-2] if len(names) >= 2 else None
        out.append(Assignment(qualifier, names[-1], Span(i + 1, item.hi)))
    return tuple(out)


def _parse_insert(sql: str, toks: list[Tok], default_schema: str | None, mode: SqlMode, common: dict) -> Parsed:
    replace = toks[0].upper == "REPLACE"
    mods, i = _modifiers(toks, 1)
    if "DELAYED" in mods:
        raise _refuse(sql, "INSERT DELAYED is not supported")
    if i < len(toks) and toks[i].upper == "INTO":
        i += 1
    target, i = _table_name(sql, toks, i)
    n = len(toks)
    if i < n and toks[i].upper == "PARTITION" and i + 1 < n and toks[i + 1].kind == "L_PAREN":
        i = _matching(toks, i + 1) + 1
    columns: tuple[str, ...] | None = None
    if i < n and toks[i].kind == "L_PAREN" and not (i + 1 < n and toks[i + 1].upper in ("SELECT", "WITH", "(", "VALUES", "TABLE")):
        close = _matching(toks, i)
        names = []
        for item in _split(toks, i + 1, close, 1):
            if item.lo == item.hi:
                continue
            last = toks[item.hi - 1]
            if not _is_name(last):
                raise _refuse(sql, "the column list could not be analysed")
            names.append(last.text)
        columns = tuple(names)
        i = close + 1
    odku_at = _find_seq(toks, i, n, 0, ("ON", "DUPLICATE", "KEY", "UPDATE"))
    end = odku_at if odku_at is not None else n
    if _find(toks, i, n, 0, "RETURNING") is not None:
        raise _refuse(sql, "RETURNING is not supported")
    odku: tuple[Assignment, ...] = ()
    if odku_at is not None:
        if replace:
            raise _refuse(sql, "REPLACE … ON DUPLICATE KEY UPDATE could not be analysed")
        odku = _assignments(sql, toks, Span(odku_at + 4, n))
    base = dict(
        replace=replace, ignore="IGNORE" in mods, target=target, odku=odku,
        ref_tables=(target,), **common,
    )
    if i >= n:
        raise _refuse(sql, "the INSERT has no values")
    word = toks[i].upper
    if word in ("VALUES", "VALUE") and toks[i].kind != "IDENTIFIER":
        rows = []
        j = i + 1
        while j < end:
            if toks[j].kind != "L_PAREN":
                if toks[j].upper == "AS":
                    raise _refuse(sql, "INSERT … AS alias is not supported")
                raise _refuse(sql, "the VALUES list could not be analysed")
            close = _matching(toks, j)
            items = _split(toks, j + 1, close, 1)
            rows.append(tuple(s for s in items) if not (len(items) == 1 and items[0].lo == items[0].hi) else ())
            j = close + 1
            if j < end:
                if toks[j].kind != "COMMA":
                    if toks[j].upper == "AS":
                        raise _refuse(sql, "INSERT … AS alias is not supported")
                    raise _refuse(sql, "the VALUES list could not be analysed")
                j += 1
        if not rows:
            raise _refuse(sql, "the VALUES list is empty")
        return Parsed(sql, tuple(toks), StatementKind.INSERT, default_schema, mode, columns=columns, rows=tuple(rows), **base)  # type: ignore[arg-type]
    if word == "SET" and toks[i].kind != "IDENTIFIER":
        if columns is not None:
            raise _refuse(sql, "INSERT … (columns) SET could not be analysed")
        assigns = _assignments(sql, toks, Span(i + 1, end))
        return Parsed(
            sql, tuple(toks), StatementKind.INSERT, default_schema, mode,
            columns=tuple(a.column for a in assigns), rows=(tuple(a.expr for a in assigns),), set_form=True, **base,  # type: ignore[arg-type]
        )
    if word in ("SELECT", "WITH", "TABLE") or toks[i].kind == "L_PAREN":
        return Parsed(sql, tuple(toks), StatementKind.INSERT, default_schema, mode, columns=columns, source=Span(i, end), **base)  # type: ignore[arg-type]
    raise _refuse(sql, "the INSERT form could not be analysed")


def _parse_update(sql: str, toks: list[Tok], default_schema: str | None, mode: SqlMode, common: dict) -> Parsed:
    mods, i = _modifiers(toks, 1)
    n = len(toks)
    set_at = _find(toks, i, n, 0, "SET")
    if set_at is None or set_at == i:
        raise _refuse(sql, "the UPDATE could not be analysed")
    where_at = _find(toks, set_at + 1, n, 0, "WHERE")
    order_at = _find(toks, set_at + 1, n, 0, "ORDER BY")
    limit_at = _find(toks, set_at + 1, n, 0, "LIMIT")
    ends = [x for x in (where_at, order_at, limit_at) if x is not None]
    set_end = min(ends) if ends else n
    refs = Span(i, set_at)
    ref_tables, multi = _parse_refs(sql, toks, refs, mode)
    assigns = _assignments(sql, toks, Span(set_at + 1, set_end))
    where, order, limit = _tail(toks, where_at, order_at, limit_at, n)
    return Parsed(
        sql, tuple(toks), StatementKind.UPDATE, default_schema, mode,
        ignore="IGNORE" in mods, refs=refs, assignments=assigns, set_span=Span(set_at + 1, set_end),
        where=where, where_kw=where_at if where_at is not None else set_end, order=order, limit=limit,
        multi=multi, ref_tables=ref_tables, **common,
    )


def _tail(toks: Sequence[Tok], where_at: int | None, order_at: int | None, limit_at: int | None, n: int) -> tuple[Span | None, Span | None, Span | None]:
    marks = sorted(x for x in (where_at, order_at, limit_at) if x is not None)

    def upto(start: int) -> int:
        later = [m for m in marks if m > start]
        return later[0] if later else n

    where = Span(where_at + 1, upto(where_at)) if where_at is not None else None
    order = Span(order_at + 1, upto(order_at)) if order_at is not None else None
    limit = Span(limit_at + 1, upto(limit_at)) if limit_at is not None else None
    return where, order, limit


def _parse_delete(sql: str, toks: list[Tok], default_schema: str | None, mode: SqlMode, common: dict) -> Parsed:
    mods, i = _modifiers(toks, 1)
    n = len(toks)
    if _find(toks, i, n, 0, "RETURNING") is not None:
        raise _refuse(sql, "RETURNING is not supported")
    where_at = _find(toks, i, n, 0, "WHERE")
    order_at = _find(toks, i, n, 0, "ORDER BY")
    limit_at = _find(toks, i, n, 0, "LIMIT")
    head_end = min([x for x in (where_at, order_at, limit_at) if x is not None] or [n])
    targets: list[str] = []
    if i < n and toks[i].upper == "FROM":
        using_at = _find(toks, i + 1, head_end, 0, "USING")
        if using_at is None:
            refs = Span(i + 1, head_end)
            ref_tables, multi = _parse_refs(sql, toks, refs, mode)
            if multi:
                raise _refuse(sql, "the DELETE could not be analysed")
        else:
            targets = _delete_targets(sql, toks, Span(i + 1, using_at))
            refs = Span(using_at + 1, head_end)
            ref_tables, _ = _parse_refs(sql, toks, refs, mode)
            multi = True
    else:
        from_at = _find(toks, i, head_end, 0, "FROM")
        if from_at is None:
            raise _refuse(sql, "the DELETE could not be analysed")
        targets = _delete_targets(sql, toks, Span(i, from_at))
        refs = Span(from_at + 1, head_end)
        ref_tables, _ = _parse_refs(sql, toks, refs, mode)
        multi = True
    where, order, limit = _tail(toks, where_at, order_at, limit_at, n)
    return Parsed(
        sql, tuple(toks), StatementKind.DELETE, default_schema, mode,
        ignore="IGNORE" in mods, refs=refs, where=where, where_kw=where_at if where_at is not None else head_end,
        order=order, limit=limit, delete_targets=tuple(targets), multi=multi, ref_tables=ref_tables, **common,
    )


def _delete_targets(sql: str, toks: Sequence[Tok], span: Span) -> list[str]:
    out = []
    for item in _split(toks, span.lo, span.hi, 0):
        names = [t for t in toks[item.lo : item.hi] if t.kind not in ("DOT", "STAR")]
        if not names or not all(_is_name(t) for t in names) or len(names) > 2:
            raise _refuse(sql, "the tables of a multi-table DELETE could not be analysed")
        out.append(".".join(t.text for t in names))
    return out


def _parse_refs(sql: str, toks: Sequence[Tok], refs: Span, mode: SqlMode) -> tuple[tuple[TableRef, ...], bool]:
    """Base tables of a FROM-like clause (derived tables excluded) and whether it joins several."""
    text = sql[toks[refs.lo].start : toks[refs.hi - 1].end] if refs.lo < refs.hi else ""
    if not text:
        raise _refuse(sql, "the table reference could not be found")
    simple = _simple_ref(toks, refs)
    if simple is not None:
        return (simple,), False
    try:
        tree = _dialect(mode)().parse(f"SELECT 1 FROM {text}")[0]
    except (SqlglotParseError, TokenError, ValueError, IndexError) as exc:
        raise _refuse(sql, f"its table references could not be analysed ({exc.__class__.__name__})") from exc
    if not isinstance(tree, exp.Select):
        raise _refuse(sql, "its table references could not be analysed")
    sources: list[exp.Expression] = []
    from_ = tree.args.get("from") or tree.args.get("from_")
    if from_ is not None:
        sources.append(from_.this)
    for join in tree.args.get("joins") or ():
        sources.append(join.this)
    tables: list[TableRef] = []
    derived = False
    for src in sources:
        for node in _base_tables(src):
            if node is None:
                derived = True
                continue
            tables.append(TableRef(node.db or None, node.name, node.alias or None))
    multi = len(tables) > 1 or derived
    return tuple(tables), multi


def _simple_ref(toks: Sequence[Tok], refs: Span) -> TableRef | None:
    """`[schema.]table [[AS] alias]` read from the tokens (the common case, without sqlglot)."""
    part = list(toks[refs.lo : refs.hi])
    if part and part[0].kind != "IDENTIFIER" and part[0].upper in _REF_KEYWORDS:
        return None
    if len(part) >= 3 and part[1].kind == "DOT":
        if not (_is_name(part[0]) and _is_name(part[2])):
            return None
        ref, rest = TableRef(part[0].text, part[2].text, None), part[3:]
    elif part and _is_name(part[0]):
        ref, rest = TableRef(None, part[0].text, None), part[1:]
    else:
        return None
    if rest and rest[0].upper == "AS" and rest[0].kind != "IDENTIFIER":
        rest = rest[1:]
        if len(rest) != 1:
            return None
    if not rest:
        return ref
    if len(rest) == 1 and _is_name(rest[0]) and (rest[0].kind == "IDENTIFIER" or rest[0].upper not in _REF_KEYWORDS):
        return TableRef(ref.schema, ref.table, rest[0].text)
    return None


_REF_KEYWORDS = frozenset({"JOIN", "INNER", "LEFT", "RIGHT", "CROSS", "STRAIGHT_JOIN", "NATURAL", "ON", "USING",
                           "PARTITION", "USE", "FORCE", "IGNORE", "AS", "LATERAL", "SELECT", "WITH"})


def _base_tables(node: exp.Expression) -> Iterable[exp.Table | None]:
    """Tables joined at this level (None for a derived table, whose tables are only read)."""
    if isinstance(node, exp.Table):
        if isinstance(node.this, exp.Identifier):
            yield node
        else:
            yield None
    elif isinstance(node, exp.Subquery):
        inner = node.this
        if isinstance(inner, (exp.Table, exp.Subquery, exp.Join)):
            yield from _base_tables(inner)  # a parenthesised join
        else:
            yield None
            return
    elif isinstance(node, exp.Join):
        yield from _base_tables(node.this)
    else:
        yield None
        return
    for join in node.args.get("joins") or ():
        yield from _base_tables(join.this)


# --- literals -------------------------------------------------------------------------------------


_LITERAL_KINDS = frozenset({"NUMBER", "STRING", "NATIONAL_STRING", "HEX_STRING", "BIT_STRING", "NULL", "TRUE", "FALSE"})
_TYPED_LITERAL = frozenset({"DATE", "TIME", "TIMESTAMP", "DATETIME"})


def _literal_end(toks: Sequence[Tok], i: int, hi: int) -> int | None:
    """Index after the literal starting at token i (within hi), or None if none starts there."""
    if i >= hi:
        return None
    t = toks[i]
    if t.kind in _LITERAL_KINDS:
        j = i + 1
        if t.kind == "STRING":
            while j < hi and toks[j].kind == "STRING":  # 'a' 'b' is one literal in MySQL
                j += 1
        return j
    if t.kind in ("DASH", "PLUS") and i + 1 < hi and toks[i + 1].kind == "NUMBER":
        return i + 2
    if t.kind == "INTRODUCER" and i + 1 < hi and toks[i + 1].kind in ("STRING", "HEX_STRING", "BIT_STRING"):
        return i + 2
    if t.upper in _TYPED_LITERAL and i + 1 < hi and toks[i + 1].kind == "STRING":
        return i + 2
    return None


def _is_literal(toks: Sequence[Tok], span: Span) -> bool:
    return _literal_end(toks, span.lo, span.hi) == span.hi


def _literal_is(toks: Sequence[Tok], span: Span, *kinds: str) -> bool:
    return span.hi - span.lo == 1 and toks[span.lo].kind in kinds


# --- plans ------------------------------------------------------------------------------------------


class PlanKind(enum.Enum):
    NOT_DML = "not-dml"  # not a write capture handles: the caller runs it as it is
    TEMPORARY = "temporary"  # writes only session temporary tables: runs as is, not replicated
    FAILS = "fails"  # the server will refuse it (unknown table, no database, malformed)
    INSERT = "insert"  # INSERT / REPLACE / INSERT IGNORE / … ON DUPLICATE KEY UPDATE
    UPDATE_BY_KEYS = "update-by-keys"
    UPDATE = "update"
    DELETE_BY_KEYS = "delete-by-keys"
    DELETE = "delete"
    MULTI_UPDATE = "multi-update"
    MULTI_DELETE = "multi-delete"


@dataclass(frozen=True, slots=True)
class InsertRow:
    """One row of an INSERT: per column of `InsertPlan.columns`, its SQL text or None (omitted)."""

    values: tuple[str | None, ...]
    auto: bool  # the AUTO_INCREMENT column takes a generated value in this row


@dataclass(frozen=True, slots=True)
class InsertPlan:
    columns: tuple[str, ...]  # table columns, as named by the statement (or all of them)
    rows: tuple[InsertRow, ...]  # empty until materialised when `materialise` / `source`
    materialise: tuple[tuple[int, int], ...]  # (row, column) whose expression is evaluated first
    probe_unique: bool  # REPLACE / ODKU: conflicts through unique keys change rows too
    prefetch: bool  # a pre-read is needed (REPLACE, IGNORE, ODKU)
    two_phase: bool  # ODKU assigns a key column: the pre-read is its own round trip
    auto_after: bool  # AUTO_INCREMENT rows without a literal unique key: read by LAST_INSERT_ID


@dataclass(frozen=True, slots=True)
class Plan:
    """What capture will do for one statement.

    `extra_round_trips` counts round trips beyond the statement's own on the success path
    (catalog loads excluded). `pre_read` / `post_read` hold the SQL of the reads when it is
    known before execution (it depends on captured keys otherwise).
    """

    kind: PlanKind
    parsed: Parsed
    tables: tuple[TableMeta, ...] = ()  # written tables, in the order changes are emitted
    qualifiers: tuple[str, ...] = ()  # how each written table is qualified in the statement
    extra_round_trips: int = 0
    pre_read: str | None = None
    post_read: str | None = None
    probe: str | None = None  # WHERE text bracketing every row the statement can touch
    insert: InsertPlan | None = None
    pk_change: tuple[tuple[str, str], ...] = ()  # UPDATE assigning primary-key columns: (column, expression)
    why: str = ""

    @property
    def sql(self) -> str:
        return self.parsed.sql


def plan(
    statement: str | Parsed,
    default_schema: str | None,
    catalog: CatalogSnapshot,
    *,
    temporary_tables: Collection[TableName] = frozenset(),
    sql_mode: str = "",
) -> Plan:
    """Decide how to capture one statement. Pure.

    `catalog` must hold the metadata of `parsed.tables_needed` (unknown tables are absent) and
    the stored functions of `parsed.function_schemas`. Raises CaptureRefused (1235) or
    TableUnfit (3098) for what cannot be captured; nothing has run then.
    """
    parsed = statement if isinstance(statement, Parsed) else parse_statement(statement, default_schema, sql_mode=sql_mode)
    _check_functions(parsed, catalog)
    if parsed.kind is StatementKind.OTHER:
        return Plan(PlanKind.NOT_DML, parsed)
    temps = set(temporary_tables)
    if parsed.kind is StatementKind.INSERT:
        return _plan_insert(parsed, catalog, temps)
    return _plan_update_delete(parsed, catalog, temps)


def _check_functions(parsed: Parsed, catalog: CatalogSnapshot) -> None:
    for schema, name in parsed.function_calls:
        s = schema or parsed.default_schema
        if s is None:
            continue
        functions = catalog.stored_functions(s)
        if functions is not None and name.lower() in functions:
            raise _refuse(parsed.sql, f"it calls the stored function {s}.{name}, whose writes cannot be captured")


def _check_table(sql: str, meta: TableMeta) -> None:
    why = meta.unfit_reason()
    if why:
        raise _unfit(sql, why)
    why = meta.unsupported_reason()
    if why:
        raise _refuse(sql, why)
    if meta.shape is None:
        raise _refuse(sql, f"table {meta.schema}.{meta.table} cannot be captured")


def _check_cascades(sql: str, meta: TableMeta, what: str, *, deletes: bool, assigned: Iterable[str] = ()) -> None:
    """3098 when the statement would fire a foreign key's cascading action on another table.

    The cascaded changes happen inside the server and capture cannot see them (GR refuses such
    tables in multi-primary mode for the same reason).
    """
    c = meta.cascade_on_delete() if deletes else None
    if c is None:
        c = meta.cascade_on_update(assigned)
    if c is not None:
        raise _unfit(
            sql,
            f"{what} {meta.schema}.{meta.table} would fire the cascading action of foreign key {c.name} of "
            f"{c.schema}.{c.table} (ON UPDATE {c.update_rule} / ON DELETE {c.delete_rule})",
        )


def _image_sql(meta: TableMeta, qualifier: str, from_text: str, where: str, *, order: str | None = None, limit: str | None = None) -> str:
    parts = [f"SELECT {', '.join(meta.image_select(qualifier))} FROM {from_text}"]
    if where:
        parts.append(f"WHERE {where}")
    if order:
        parts.append(f"ORDER BY {order}")
    if limit:
        parts.append(f"LIMIT {limit}")
    parts.append("FOR UPDATE")
    return " ".join(parts)


def _pk_list(meta: TableMeta, qualifier: str) -> str:
    return ", ".join(f"{qualifier}.{quote_identifier(c)}" for c in meta.primary_key)


# --- INSERT ---------------------------------------------------------------------------------------


def _plan_insert(parsed: Parsed, catalog: CatalogSnapshot, temps: set[TableName]) -> Plan:
    sql = parsed.sql
    assert parsed.target is not None
    name = parsed.target.resolved(parsed.default_schema)
    if name is None:
        return Plan(PlanKind.FAILS, parsed, why="no database selected")
    if name in temps:
        return Plan(PlanKind.TEMPORARY, parsed)
    meta = catalog.table(*name)
    if meta is None:
        return Plan(PlanKind.FAILS, parsed, why=f"table {name[0]}.{name[1]} is unknown")
    _check_table(sql, meta)
    if parsed.replace:
        _check_cascades(sql, meta, "REPLACE into", deletes=True)
    if parsed.odku:
        _check_cascades(sql, meta, "ON DUPLICATE KEY UPDATE of", deletes=False, assigned=[a.column for a in parsed.odku])
    columns: list[str] = []
    if parsed.columns is None:
        columns = [c.name for c in meta.insertable_columns]
    else:
        for c in parsed.columns:
            col = meta.column(c)
            if col is None:
                return Plan(PlanKind.FAILS, parsed, why=f"unknown column {c}")
            columns.append(col.name)
        if len(set(columns)) != len(columns):
            return Plan(PlanKind.FAILS, parsed, why="a column is named twice")
    for a in parsed.odku:
        if a.qualifier is not None and a.qualifier not in (meta.table, parsed.target.table):
            raise _refuse(sql, "ON DUPLICATE KEY UPDATE refers to another table")
        if meta.column(a.column) is None:
            return Plan(PlanKind.FAILS, parsed, why=f"unknown column {a.column}")
    key_cols = {c.lower() for c in meta.primary_key}
    unique_cols = {p[0].lower() for k in meta.unique_keys for p in k.parts}
    odku_cols = {a.column.lower() for a in parsed.odku}
    if odku_cols & key_cols:
        raise _refuse(sql, "ON DUPLICATE KEY UPDATE assigns a primary-key column")
    # REPLACE and ODKU change rows that conflict through any unique key; INSERT IGNORE leaves
    # them alone but finding its new rows by a unique key spares a LAST_INSERT_ID() read.
    probe_unique = parsed.replace or bool(parsed.odku) or parsed.ignore
    two_phase = bool(odku_cols & unique_cols)
    prefetch = parsed.replace or parsed.ignore or bool(parsed.odku)
    if parsed.source is not None:
        ip = InsertPlan(tuple(columns), (), (), probe_unique, prefetch, two_phase, True)
        return Plan(
            PlanKind.INSERT, parsed, (meta,), (qualified_name(meta.schema, meta.table),),
            extra_round_trips=1 + (1 if two_phase else 0), insert=ip,
        )
    if two_phase and len(parsed.rows) > 1:
        raise _refuse(sql, _MOVING_UNIQUE)
    rows: list[InsertRow] = []
    materialise: list[tuple[int, int]] = []
    auto = meta.auto_increment_column
    for r, row in enumerate(parsed.rows):
        if row and len(row) != len(columns) or (not row and parsed.columns):
            return Plan(PlanKind.FAILS, parsed, why="column count does not match value count")
        values: list[str | None] = [parsed.text(s) for s in row] if row else [None] * len(columns)
        is_auto = False
        for c, col_name in enumerate(columns):
            col = meta.column(col_name)
            assert col is not None
            if col.name.lower() not in key_cols and (not probe_unique or col.name.lower() not in unique_cols):
                continue
            span = row[c] if row else None
            if span is None or _literal_is(parsed.tokens, span, "DEFAULT"):
                if col.auto_increment:
                    is_auto = True
                elif _literal_default(col.default) is None and col.name.lower() in key_cols:
                    raise _refuse(sql, f"the key column {col.name} takes a default that is not a constant")
                continue
            if col.auto_increment and (
                _literal_is(parsed.tokens, span, "NULL")
                or (not parsed.mode.no_auto_value_on_zero and parsed.text(span) in ("0", "-0", "+0"))
            ):
                is_auto = True
                continue
            if not _is_literal(parsed.tokens, span):
                materialise.append((r, c))
        if auto is not None and auto.name not in columns:
            is_auto = True
        rows.append(InsertRow(tuple(values), is_auto))
    if any(r.auto for r in rows) and not all(r.auto for r in rows):
        # After an explicit value at or above the counter, the server continues from that value
        # with a fresh reservation another session may interleave with: the generated values
        # of the rows after it cannot be derived from the first one.
        raise _refuse(sql, "it mixes explicit and generated AUTO_INCREMENT values in one INSERT")
    if materialise and parsed.has_assignment_op:
        raise _refuse(sql, "computed key values cannot be evaluated ahead of an INSERT that assigns variables (:=)")
    # LAST_INSERT_ID() moves for sure only when every row is inserted (plain INSERT, REPLACE);
    # otherwise AUTO_INCREMENT rows are found by a unique key, or read after the statement
    # from the insert id its OK packet reports.
    conditional = parsed.ignore or bool(parsed.odku)
    auto_after = any(r.auto for r in rows) and conditional and _auto_rows_unprobed(meta, columns, rows, parsed)
    ip = InsertPlan(tuple(columns), tuple(rows), tuple(materialise), probe_unique, prefetch, two_phase, auto_after)
    extra = (1 if materialise else 0) + (1 if two_phase else 0) + (1 if auto_after else 0)
    p = Plan(PlanKind.INSERT, parsed, (meta,), (qualified_name(meta.schema, meta.table),), extra_round_trips=extra, insert=ip)
    if not materialise:
        probe = _insert_probe(meta, ip, parsed.mode)
        from_text = qualified_name(meta.schema, meta.table)
        q = from_text
        auto_pred = _auto_range(meta, ip, "LAST_INSERT_ID()") if not conditional and any(r.auto for r in rows) else None
        post = " OR ".join(x for x in (probe, auto_pred) if x)
        pre = _image_sql(meta, q, from_text, probe) if prefetch and probe else None
        return Plan(
            PlanKind.INSERT, parsed, (meta,), (q,), extra_round_trips=extra, insert=ip,
            pre_read=pre, post_read=_image_sql(meta, q, from_text, post) if post else None, probe=probe or None,
        )
    return p


def _auto_rows_unprobed(meta: TableMeta, columns: Sequence[str], rows: Sequence[InsertRow], parsed: Parsed) -> bool:
    """Some AUTO_INCREMENT row has no literal non-NULL unique key to find it by."""
    index = {c.lower(): i for i, c in enumerate(columns)}
    for row in rows:
        if not row.auto:
            continue
        found = False
        for key in meta.unique_keys[1:]:
            texts = [row.values[index[p[0].lower()]] if p[0].lower() in index else None for p in key.parts]
            if all(t is not None and t.upper() != "NULL" and t.upper() != "DEFAULT" for t in texts):
                found = True
                break
        if not found:
            return True
    return False


# Rows of one statement can pass a unique value from one to another (row 1 gives up 'x', row 2
# takes it); replayed in another order, an upsert would meet the value still held and update
# the wrong row through that unique key. A single row cannot.
_MOVING_UNIQUE = "ON DUPLICATE KEY UPDATE assigns a unique-key column for several rows at once"

_DEFAULT_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\Z")
_DEFAULT_STRING = re.compile(r"'(?:[^'\\]|'')*'\Z")


def _literal_default(default: str | None) -> str | None:
    """A column default as a SQL literal, when it is a constant (None otherwise)."""
    if default is None or default.upper() == "NULL":
        return "NULL"
    if _DEFAULT_NUMBER.match(default) or _DEFAULT_STRING.match(default):
        return default
    return None


def _insert_probe(meta: TableMeta, ip: InsertPlan, mode: SqlMode) -> str:
    """OR of per-row key predicates: the primary key, and (REPLACE / ODKU) each unique key."""
    index = {c.lower(): i for i, c in enumerate(ip.columns)}
    q = qualified_name(meta.schema, meta.table)
    keys = [meta.unique_keys[0]] + (list(meta.unique_keys[1:]) if ip.probe_unique else [])
    terms: list[str] = []
    for row in ip.rows:
        for key in keys:
            texts = []
            for col_name, _ in key.parts:
                i = index.get(col_name.lower())
                text = row.values[i] if i is not None else None
                if text is None or text.upper() == "DEFAULT":
                    col = meta.column(col_name)
                    text = _literal_default(col.default) if col is not None and not col.auto_increment else None
                if text is None or text.upper() == "NULL":
                    texts = []
                    break
                col = meta.column(col_name)
                assert col is not None
                if col.auto_increment and not mode.no_auto_value_on_zero and text.strip() in ("0", "-0", "+0"):
                    texts = []
                    break
                texts.append(f"{q}.{quote_identifier(col.name)} = {text}")
            if texts:
                terms.append("(" + " AND ".join(texts) + ")")
    return " OR ".join(dict.fromkeys(terms))


def _values_order(meta: TableMeta, ip: InsertPlan) -> str:
    """ORDER BY text putting rows in the order of the VALUES rows that name their primary key."""
    index = {c.lower(): i for i, c in enumerate(ip.columns)}
    q = qualified_name(meta.schema, meta.table)
    whens = []
    for n, row in enumerate(ip.rows):
        texts = []
        for col_name, _ in meta.unique_keys[0].parts:
            i = index.get(col_name.lower())
            text = row.values[i] if i is not None else None
            if text is None or text.upper() in ("NULL", "DEFAULT"):
                texts = []
                break
            texts.append(f"{q}.{quote_identifier(col_name)} = {text}")
        if texts:
            whens.append(f"WHEN {' AND '.join(texts)} THEN {n}")
    if not whens:
        return ""
    return f"CASE {' '.join(whens)} ELSE {len(ip.rows)} END, {_pk_list(meta, q)}"


def _auto_range(meta: TableMeta, ip: InsertPlan, first: str) -> str | None:
    auto = meta.auto_increment_column
    n = sum(1 for r in ip.rows if r.auto)
    if auto is None or n == 0:
        return None
    col = f"{qualified_name(meta.schema, meta.table)}.{quote_identifier(auto.name)}"
    if n == 1:
        return f"({col} = {first})"
    return f"({col} BETWEEN {first} AND {first} + {n - 1} * @@SESSION.auto_increment_increment)"


# --- UPDATE / DELETE --------------------------------------------------------------------------------


def _plan_update_delete(parsed: Parsed, catalog: CatalogSnapshot, temps: set[TableName]) -> Plan:
    sql = parsed.sql
    is_update = parsed.kind is StatementKind.UPDATE
    # Which tables are written?
    refs = parsed.ref_tables
    resolved = [r.resolved(parsed.default_schema) for r in refs]
    if any(n is None for n in resolved):
        return Plan(PlanKind.FAILS, parsed, why="no database selected")
    targets: list[TableRef] = []
    if not parsed.multi:
        if len(refs) != 1:
            return Plan(PlanKind.FAILS, parsed, why="no table to write")
        targets = [refs[0]]
    elif is_update:
        for a in parsed.assignments:
            ref = _resolve_column(parsed, a, catalog)
            if ref is None:
                raise _refuse(sql, f"the table of column {a.column} could not be determined")
            if ref not in targets:
                targets.append(ref)
    else:
        for name in parsed.delete_targets:
            ref = _resolve_delete_target(parsed, name)
            if ref is None:
                return Plan(PlanKind.FAILS, parsed, why=f"unknown table {name} in multi-table DELETE")
            if ref not in targets:
                targets.append(ref)
    names = [t.resolved(parsed.default_schema) for t in targets]
    temp_flags = [n in temps for n in names]
    if all(temp_flags):
        return Plan(PlanKind.TEMPORARY, parsed)
    if any(temp_flags):
        raise _refuse(sql, "it writes both temporary and regular tables")
    if len(set(names)) != len(names):
        raise _refuse(sql, "it writes the same table through two aliases")
    metas: list[TableMeta] = []
    for ref, name in zip(targets, names):
        assert name is not None
        meta = catalog.table(*name)
        if meta is None:
            return Plan(PlanKind.FAILS, parsed, why=f"table {name[0]}.{name[1]} is unknown")
        _check_table(sql, meta)
        metas.append(meta)
    for ref in refs:
        name = ref.resolved(parsed.default_schema)
        assert name is not None
        if name not in temps and catalog.table(*name) is None:
            return Plan(PlanKind.FAILS, parsed, why=f"table {name[0]}.{name[1]} is unknown")
    if not is_update:
        for meta in metas:
            _check_cascades(sql, meta, "DELETE from", deletes=True)
    quals = [t.qualifier for t in targets]
    if parsed.multi:
        if parsed.order is not None or parsed.limit is not None:
            return Plan(PlanKind.FAILS, parsed, why="multi-table statements take no ORDER BY / LIMIT")
        if is_update:
            for meta, ref in zip(metas, targets):
                for a in parsed.assignments:
                    if _resolve_column(parsed, a, catalog) == ref and a.column.lower() in {c.lower() for c in meta.primary_key}:
                        raise _refuse(sql, "a multi-table UPDATE assigns a primary-key column")
                _check_update_cascades(parsed, meta, ref, catalog)
        ordered = _fk_order(list(zip(metas, quals)), parents_first=is_update)
        return Plan(
            PlanKind.MULTI_UPDATE if is_update else PlanKind.MULTI_DELETE, parsed,
            tuple(m for m, _ in ordered), tuple(q for _, q in ordered), extra_round_trips=1,
        )
    meta, ref, q = metas[0], targets[0], quals[0]
    pk_lower = {c.lower() for c in meta.primary_key}
    pk_change: list[tuple[str, str]] = []
    unique_assigned = False
    if is_update:
        _check_update_cascades(parsed, meta, ref, catalog)
        assigned: set[str] = set()
        for a in parsed.assignments:
            if a.qualifier is not None and a.qualifier not in (ref.alias or ref.table,):
                raise _refuse(sql, f"column {a.qualifier}.{a.column} is not of the updated table")
            col = meta.column(a.column)
            if col is None:
                return Plan(PlanKind.FAILS, parsed, why=f"unknown column {a.column}")
            if col.generated:
                return Plan(PlanKind.FAILS, parsed, why=f"generated column {a.column} assigned")
            if col.name.lower() in pk_lower:
                _check_pk_expression(parsed, a, assigned, meta)
                pk_change.append((col.name, _new_key_expr(parsed, col, parsed.text(a.expr))))
            if any(col.name == p[0] for k in meta.unique_keys[1:] for p in k.parts):
                unique_assigned = True
            assigned.add(col.name.lower())
    from_text = parsed.text(parsed.refs) if parsed.refs else q
    probe, many = _key_conjuncts(parsed, meta, ref)
    by_keys = probe is not None and not pk_change and (not is_update or not (many and unique_assigned))
    if by_keys:
        assert probe is not None
        # Primary-key order: the order the server visits the keys in, so deletes in a
        # self-referencing table replay in an order its foreign key accepted.
        read = _image_sql(meta, q, from_text, probe, order=_pk_list(meta, q))
        return Plan(
            PlanKind.UPDATE_BY_KEYS if is_update else PlanKind.DELETE_BY_KEYS, parsed, (meta,), (q,),
            extra_round_trips=0, pre_read=read, post_read=read, probe=probe,
        )
    order = (parsed.text(parsed.order) + ", " if parsed.order else "") + _pk_list(meta, q)
    select = meta.image_select(q) + [expr for _, expr in pk_change]
    pre = f"SELECT {', '.join(select)} FROM {from_text}"
    if parsed.where:
        pre += f" WHERE {parsed.text(parsed.where)}"
    pre += f" ORDER BY {order}"
    if parsed.limit:
        pre += f" LIMIT {parsed.text(parsed.limit)}"
    pre += " FOR UPDATE"
    return Plan(
        PlanKind.UPDATE if is_update else PlanKind.DELETE, parsed, (meta,), (q,), extra_round_trips=1,
        pre_read=pre, pk_change=tuple(pk_change),
    )


def _check_update_cascades(parsed: Parsed, meta: TableMeta, ref: TableRef, catalog: CatalogSnapshot) -> None:
    if not meta.cascading_children():
        return
    assigned = [a.column for a in parsed.assignments if not parsed.multi or _resolve_column(parsed, a, catalog) == ref]
    _check_cascades(parsed.sql, meta, "UPDATE of", deletes=False, assigned=assigned)


def _check_pk_expression(parsed: Parsed, a: Assignment, assigned: set[str], meta: TableMeta) -> None:
    """A primary-key assignment whose new value the pre-read can compute exactly."""
    toks = parsed.tokens
    for i in range(a.expr.lo, a.expr.hi):
        t = toks[i]
        if t.kind in ("PARAMETER", "SESSION_PARAMETER", "COLON_EQ") or t.upper in _NONDETERMINISTIC:
            raise _refuse(parsed.sql, f"the new primary key of {meta.table} is not a deterministic expression")
        if _is_name(t) and t.kind != "STRING" and t.text.lower() in assigned:
            raise _refuse(parsed.sql, f"the new primary key of {meta.table} depends on a column assigned before it")


def _new_key_expr(parsed: Parsed, col: "Column", expr: str) -> str:
    """The pre-read expression of a new primary-key value, in the form the image reads it."""
    form = col.form
    if form is Form.TEXT:
        return f"CAST(CONVERT(({expr}) USING {col.text_charset}) AS BINARY)"
    if form is Form.BYTES:
        return f"CAST(({expr}) AS BINARY)"
    if form in (Form.INT, Form.DECIMAL, Form.TEMPORAL):
        return f"({expr})"
    raise _refuse(parsed.sql, f"a primary key of type {col.column_type} cannot be reassigned")


def _resolve_column(parsed: Parsed, a: Assignment, catalog: CatalogSnapshot) -> TableRef | None:
    candidates = []
    for ref in parsed.ref_tables:
        if a.qualifier is not None:
            if a.qualifier == (ref.alias or ref.table):
                candidates.append(ref)
            continue
        name = ref.resolved(parsed.default_schema)
        meta = catalog.table(*name) if name else None
        if meta is not None and meta.column(a.column) is not None:
            candidates.append(ref)
    return candidates[0] if len(candidates) == 1 else None


def _resolve_delete_target(parsed: Parsed, name: str) -> TableRef | None:
    schema, _, table = name.rpartition(".")
    for ref in parsed.ref_tables:
        if not schema and ref.alias == table:
            return ref
    for ref in parsed.ref_tables:
        if ref.alias is None and ref.table == table and (not schema or ref.schema == schema or (ref.schema is None and schema == parsed.default_schema)):
            return ref
    return None


def _fk_order(items: list[tuple[TableMeta, str]], *, parents_first: bool) -> list[tuple[TableMeta, str]]:
    names = {(m.schema, m.table) for m, _ in items}

    def depth(meta: TableMeta, seen: frozenset[tuple[str, str]] = frozenset()) -> int:
        d = 0
        for ref in meta.parents:
            key = (ref.parent_schema, ref.parent_table)
            if key in names and key != (meta.schema, meta.table) and key not in seen:
                parent = next(m for m, _ in items if (m.schema, m.table) == key)
                d = max(d, 1 + depth(parent, seen | {(meta.schema, meta.table)}))
        return d

    return sorted(items, key=lambda it: depth(it[0]) if parents_first else -depth(it[0]))


def _key_conjuncts(parsed: Parsed, meta: TableMeta, ref: TableRef) -> tuple[str | None, bool]:
    """The WHERE's top-level conjuncts that pin every primary-key column to literals.

    Returns (their text joined with AND, whether they name several keys) or (None, False).
    """
    if parsed.where is None:
        return None, False
    toks = parsed.tokens
    lo, hi = parsed.where.lo, parsed.where.hi
    if lo >= hi:
        return None, False
    depth = toks[lo].depth
    conjuncts: list[Span] = []
    start = lo
    pending_between = False
    for i in range(lo, hi):
        t = toks[i]
        if t.depth != depth:
            continue
        if t.kind in ("OR", "XOR", "DPIPE") or t.upper in ("OR", "XOR"):
            return None, False
        if t.upper == "BETWEEN":
            pending_between = True
        elif t.kind in ("AND", "DAMP") or t.upper == "AND":
            if pending_between:
                pending_between = False
                continue
            conjuncts.append(Span(start, i))
            start = i + 1
    conjuncts.append(Span(start, hi))
    pk = [c.lower() for c in meta.primary_key]
    pinned: dict[str, str] = {}
    many = False
    for span in conjuncts:
        got = _key_conjunct(parsed, span, ref)
        if got is None:
            continue
        cols, count = got
        if all(c in pk for c in cols):
            text = parsed.text(span)
            for c in cols:
                pinned.setdefault(c, text)
            many = many or count > 1
    if set(pk) <= set(pinned):
        return " AND ".join(dict.fromkeys(pinned[c] for c in pk)), many
    return None, False


def _column_at(parsed: Parsed, i: int, hi: int, ref: TableRef) -> tuple[str, int] | None:
    """A column reference of `ref` starting at token i: (lower-case name, index after)."""
    toks = parsed.tokens
    names = []
    j = i
    while j < hi and _is_name(toks[j]) and toks[j].kind not in _LITERAL_KINDS:
        names.append(toks[j].text)
        if j + 1 < hi and toks[j + 1].kind == "DOT":
            j += 2
            continue
        j += 1
        break
    if not names or len(names) > 3:
        return None
    if len(names) >= 2:
        qual = names[-2]
        if qual != (ref.alias or ref.table):
            return None
        if len(names) == 3 and (ref.alias or names[0] != (ref.schema or parsed.default_schema)):
            return None
    if j < hi and toks[j].kind == "L_PAREN":
        return None  # a function call
    return names[-1].lower(), j


def _key_conjunct(parsed: Parsed, span: Span, ref: TableRef) -> tuple[list[str], int] | None:
    """`col = lit`, `lit = col`, `col IN (lits)`, `(c1, c2) IN ((lits), …)`, `(c1, c2) = (lits)`."""
    toks = parsed.tokens
    lo, hi = span.lo, span.hi
    while lo < hi and toks[lo].kind == "L_PAREN" and _matching(toks, lo) == hi - 1:
        lo, hi = lo + 1, hi - 1
    if lo >= hi:
        return None
    col = _column_at(parsed, lo, hi, ref)
    if col is not None:
        name, j = col
        if j < hi and toks[j].kind == "EQ" and _is_literal(toks, Span(j + 1, hi)) and toks[j + 1].kind != "NULL":
            return [name], 1
        if j < hi and toks[j].upper == "IN" and j + 1 < hi and toks[j + 1].kind == "L_PAREN" and _matching(toks, j + 1) == hi - 1:
            items = _split(toks, j + 2, hi - 1, toks[j + 1].depth + 1)
            if items and all(_is_literal(toks, s) for s in items):
                return [name], len(items)
        return None
    end = _literal_end(toks, lo, hi)
    if end is not None and end < hi and toks[end].kind == "EQ" and toks[lo].kind != "NULL":
        col = _column_at(parsed, end + 1, hi, ref)
        if col is not None and col[1] == hi:
            return [col[0]], 1
        return None
    if toks[lo].kind == "L_PAREN":
        close = _matching(toks, lo)
        cols = []
        for item in _split(toks, lo + 1, close, toks[lo].depth + 1):
            c = _column_at(parsed, item.lo, item.hi, ref)
            if c is None or c[1] != item.hi:
                return None
            cols.append(c[0])
        j = close + 1
        if j >= hi:
            return None

        def tuple_ok(a: int, b: int) -> bool:
            if toks[a].kind != "L_PAREN" or _matching(toks, a) != b - 1:
                return False
            vals = _split(toks, a + 1, b - 1, toks[a].depth + 1)
            return len(vals) == len(cols) and all(_is_literal(toks, v) for v in vals)

        if toks[j].kind == "EQ" and tuple_ok(j + 1, hi):
            return cols, 1
        if toks[j].upper == "IN" and j + 1 < hi and toks[j + 1].kind == "L_PAREN" and _matching(toks, j + 1) == hi - 1:
            items = _split(toks, j + 2, hi - 1, toks[j + 1].depth + 1)
            if items and all(tuple_ok(s.lo, s.hi) for s in items):
                return cols, len(items)
    return None


# --- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerWarning:
    level: str
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class ClientResult:
    """What the client sees of its statement (the OK packet, and SHOW WARNINGS after it)."""

    affected_rows: int
    last_insert_id: int
    warnings: int
    status: int
    warning_list: tuple[ServerWarning, ...] = ()
    round_trips: int = 0  # round trips this capture used (catalog loads included)


@dataclass(frozen=True, slots=True)
class ColumnDef:
    name: str
    type: int
    charset: int
    flags: int


@dataclass(slots=True)
class Answer:
    """One statement's answer within a batch: an OK, or a result set with its column types."""

    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = 0
    warnings: int = 0
    columns: list[ColumnDef] | None = None
    rows: list[tuple[bytes | None, ...]] = field(default_factory=list)


class _BatchError(Exception):
    def __init__(self, done: int, error: BackendError) -> None:
        super().__init__(str(error))
        self.done = done
        self.error = error


class _Runner:
    """Sends statements as multi-statement batches and decodes every answer with column types."""

    def __init__(self, conn: "BackendConnection", encoding: str) -> None:
        self.conn = conn
        self.encoding = encoding
        self.round_trips = 0

    def _encode(self, sql: str) -> bytes:
        try:
            return sql.encode(self.encoding, "surrogateescape")
        except (UnicodeEncodeError, LookupError):
            return sql.encode(self.encoding)

    async def run(self, statements: Sequence[str]) -> list[Answer]:
        """Every answer, in order. Raises _BatchError(done, BackendError) at the first error."""
        conn = self.conn
        if conn.capabilities & Cap.MULTI_STATEMENTS:
            payload = self._encode(";\n".join(statements))
            if len(payload) > CAPTURE_SQL_BYTES_MAX:
                raise CaptureRefused("grproxy cannot replicate this statement: it touches too many rows to capture in one batch")
            return await self._command(payload, 0)
        answers: list[Answer] = []
        for sql in statements:
            answers += await self._command(self._encode(sql), len(answers))
        return answers

    async def _command(self, payload: bytes, done_before: int) -> list[Answer]:
        conn = self.conn
        if conn.busy:
            raise RuntimeError("[BUG] capture on a backend connection with a command in flight")
        self.round_trips += 1
        try:
            conn.write_packet(bytes((Command.QUERY,)) + payload, 0)
            return await self._read(done_before)
        except (asyncio.CancelledError, BackendLost, MalformedPacket, IndexError):
            conn.poisoned = True  # STYLE §14: a command cut off mid-answer poisons the connection
            conn.close()
            raise

    async def _read(self, done_before: int) -> list[Answer]:
        conn = self.conn
        answers: list[Answer] = []
        while True:
            _, payload = await conn.read_packet()
            first = payload[0] if payload else -1
            if first == 0xFF:
                raise _BatchError(done_before + len(answers), BackendError(*parse_err(payload)))
            answer = Answer()
            if first == 0x00:
                ok = parse_ok(payload)
                answer.affected_rows, answer.last_insert_id = ok.affected_rows, ok.last_insert_id
                answer.status, answer.warnings = ok.status, ok.warnings
            else:
                ncols, _ = read_lenenc_int(payload, 0)
                answer.columns = []
                for _ in range(ncols):
                    _, coldef = await conn.read_packet()
                    answer.columns.append(_column_def(coldef))
                await conn.read_packet()  # EOF after the column definitions
                while True:
                    _, row = await conn.read_packet()
                    if row[:1] == b"\xfe" and len(row) < 9:
                        answer.warnings = row[1] | (row[2] << 8)
                        answer.status = row[3] | (row[4] << 8)
                        break
                    if row[:1] == b"\xff":
                        raise _BatchError(done_before + len(answers), BackendError(*parse_err(row)))
                    if len(answer.rows) >= CAPTURE_ROWS_MAX:
                        # Drain the rest so the connection stays usable, then refuse.
                        answer.rows.append(())
                        continue
                    answer.rows.append(text_row_values(row, ncols))
            answers.append(answer)
            if not answer.status & 0x0008:  # SERVER_MORE_RESULTS_EXISTS
                return answers


def _column_def(coldef: bytes) -> ColumnDef:
    pos = 0
    values = []
    for _ in range(6):  # catalog, schema, table, org_table, name, org_name
        n, pos = read_lenenc_int(coldef, pos)
        values.append(coldef[pos : pos + n])
        pos += n
    _, pos = read_lenenc_int(coldef, pos)  # length of the fixed fields (0x0c)
    charset = coldef[pos] | (coldef[pos + 1] << 8)
    col_type = coldef[pos + 6]
    flags = coldef[pos + 7] | (coldef[pos + 8] << 8)
    return ColumnDef(values[4].decode("utf-8", "replace"), col_type, charset, flags)


def _warnings(answer: Answer) -> tuple[ServerWarning, ...]:
    return tuple(
        ServerWarning((r[0] or b"").decode("utf-8", "replace"), int(r[1] or 0), (r[2] or b"").decode("utf-8", "replace"))
        for r in answer.rows
        if len(r) >= 3
    )


# --- images -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Image:
    """One row as read: its image values, key material and primary-key identity."""

    values: tuple[Value, ...]
    material: tuple[bytes | None, ...]
    identity: tuple[bytes | None, ...]  # material of the primary-key parts (collation-aware)
    extra: tuple[bytes | None, ...] = ()  # columns selected after the image (new keys)


def _parse_value(form: Form, raw: bytes | None) -> Value:
    if raw is None:
        return None
    if form is Form.INT or form is Form.ENUM:
        return int(raw)
    if form is Form.DOUBLE:
        return float(raw)
    if form in (Form.DECIMAL, Form.TEMPORAL, Form.TIMESTAMP):
        return raw.decode("ascii")
    return bytes(raw)


def _images(meta: TableMeta, answer: Answer, offset: int = 0) -> list[_Image]:
    """Decode rows selected with `meta.image_select` (from column `offset`), in order."""
    shape = meta.shape
    assert shape is not None
    ncols = len(shape.columns)
    extra_parts = [(i, p) for i, p in enumerate(meta.key_parts) if meta.by_name[p[0]].key_expr("", p[1]) is not None]
    width = ncols + len(extra_parts)
    pk_parts = [meta.key_parts.index(p) for p in meta.unique_keys[0].parts]
    out = []
    for row in answer.rows:
        if len(row) < offset + width:
            raise CaptureRefused("grproxy cannot replicate this statement: a read returned more rows than capture keeps")
        raw = row[offset : offset + ncols]
        if all(v is None for v in (raw[i] for i in shape.primary_key)):
            continue  # the NULL-extended side of an outer join
        values = tuple(_parse_value(f, v) for f, v in zip(shape.forms, raw))
        material: list[bytes | None] = []
        extras = iter(row[offset + ncols : offset + width])
        extra_at = {i for i, _ in extra_parts}
        for i, (name, _) in enumerate(meta.key_parts):
            if i in extra_at:
                material.append(next(extras))
            else:
                k = shape.columns.index(name)
                material.append(canonical_bytes(shape.forms[k], values[k]))
        out.append(_Image(values, tuple(material), tuple(material[i] for i in pk_parts), tuple(row[offset + width :])))
    return out


def _upsert(shape: RowShape, image: _Image, before: _Image | None) -> RowChange:
    return RowChange(
        shape, "upsert", tuple(image.values[i] for i in shape.primary_key), image.values, image.material,
        before.material if before is not None else None,
    )


def _delete(shape: RowShape, before: _Image) -> RowChange:
    return RowChange(shape, "delete", tuple(before.values[i] for i in shape.primary_key), None, None, before.material)


def _pk_values(shape: RowShape, images: Iterable[_Image]) -> list[tuple[Value, ...]]:
    return [tuple(im.values[i] for i in shape.primary_key) for im in images]


def _by_identity(images: Iterable[_Image]) -> dict[tuple[bytes | None, ...], _Image]:
    out: dict[tuple[bytes | None, ...], _Image] = {}
    for im in images:
        out.setdefault(im.identity, im)
    return out


# --- the executor --------------------------------------------------------------------------------------


async def capture_statement(
    conn: "BackendConnection",
    sql: str,
    default_schema: str | None,
    catalog: SchemaCatalog,
    *,
    temporary_tables: Collection[TableName] = frozenset(),
    sql_mode: str | None = None,
    encoding: str = "utf-8",
) -> tuple[ClientResult, list[RowChange]]:
    """Run one client write inside the open transaction on `conn` and capture its row changes.

    `sql_mode` is the session's sql_mode as the session tracks it (None: read it first, one
    more round trip); `encoding` is the Python codec of the session's character_set_client
    (the statement is sent in it, byte for byte as the client sent it if the caller decoded
    the client's bytes with the same codec). `temporary_tables` are the session's temporary
    tables: writes to them run as they are and are not replicated.

    Returns the client-visible result and the changes, in the order they must be applied.
    Raises BackendError for a server error (the statement had no effect, as on the server
    itself), CaptureRefused (1235) / TableUnfit (3098) when it cannot be captured exactly (it
    did not run, or was undone to the savepoint taken before it), ValueError for a statement
    that is not a write (NOT_DML: the caller relays it instead).
    """
    if conn.capabilities & Cap.NO_SCHEMA:
        # The server then ignores database qualifiers: `db`.`t` silently means `t` of the current
        # database, for the client's statement and for capture's own reads alike.
        raise _refuse(sql, "the connection negotiated CLIENT_NO_SCHEMA, under which table names cannot be resolved")
    result, changes, _ = await _capture(
        conn, sql, default_schema, catalog, temporary_tables=temporary_tables, sql_mode=sql_mode, encoding=encoding
    )
    return result, changes


async def _capture(
    conn: "BackendConnection",
    sql: str,
    default_schema: str | None,
    catalog: SchemaCatalog,
    *,
    temporary_tables: Collection[TableName],
    sql_mode: str | None,
    encoding: str,
) -> tuple[ClientResult, list[RowChange], Plan]:
    runner = _Runner(conn, encoding)
    if sql_mode is None:
        answers = await _run(runner, ["SELECT @@SESSION.sql_mode"])
        sql_mode = (answers[0].rows[0][0] or b"").decode("ascii", "replace")
    parsed = parse_statement(sql, default_schema, sql_mode=sql_mode)
    if parsed.kind is StatementKind.OTHER:
        raise ValueError("[BUG] capture_statement on a statement that is not a write; relay it instead")
    loads = catalog.loads
    snapshot = await catalog.snapshot(conn, parsed.tables_needed, parsed.function_schemas)
    runner.round_trips += catalog.loads - loads
    p = plan(parsed, default_schema, snapshot, temporary_tables=temporary_tables)
    execution = _Execution(runner, p, sql_mode, catalog)
    result, changes = await execution.run()
    return result, changes, p


def write_set(changes: Iterable[RowChange], tables: Iterable[TableMeta]) -> frozenset[KeyHash]:
    """The write set of `changes` (rowimage.write_set_keys over each), given their tables' metadata."""
    metas = {(m.schema, m.table): m for m in tables}
    keys: set[KeyHash] = set()
    for change in changes:
        meta = metas.get((change.schema, change.table))
        if meta is None:
            raise ValueError(f"[BUG] no metadata for {change.schema}.{change.table} to compute its write set")
        keys |= write_set_keys(change, meta)
    return frozenset(keys)


@dataclass(frozen=True, slots=True)
class StatementResult:
    """What the client sees of a captured DML statement (its OK packet)."""

    affected_rows: int
    last_insert_id: int
    warnings: int


@dataclass(frozen=True, slots=True)
class Captured:
    """One captured statement: its client result, row changes and write-set keys."""

    result: StatementResult
    changes: tuple[RowChange, ...]
    keys: frozenset[KeyHash]


class RowCapturer:
    """Capture as a member session uses it (replication.member_session.Capturer).

    Owns the member's SchemaCatalog; `invalidate` is what DDL calls. One per member (it holds no
    per-session state: sessions pass their own connection, schema and session facts).
    """

    def __init__(self, catalog: SchemaCatalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else SchemaCatalog()

    async def capture(
        self,
        conn: "BackendConnection",
        sql: str,
        default_schema: str | None,
        *,
        temporary_tables: Collection[TableName] = frozenset(),
        sql_mode: str | None = None,
        encoding: str = "utf-8",
    ) -> "Captured":
        """capture_statement, plus the statement's write set, as the member session wants them."""
        result, changes, p = await _capture(
            conn, sql, default_schema, self.catalog,
            temporary_tables=temporary_tables, sql_mode=sql_mode, encoding=encoding,
        )
        keys = write_set(changes, p.tables)
        return Captured(StatementResult(result.affected_rows, result.last_insert_id, result.warnings), tuple(changes), keys)

    def encode(self, changes: Sequence[object]) -> bytes:
        """The transaction's changes for the group (rowimage.encode_changes)."""
        for change in changes:
            if not isinstance(change, RowChange):
                raise TypeError(f"[BUG] not a RowChange: {type(change).__name__}")
        return encode_changes(changes)  # type: ignore[arg-type]

    async def apply(self, conn: "BackendConnection", payload: bytes) -> None:
        """The applier's ApplyChanges: decode one transaction's changes and apply them."""
        await apply_changes(conn, decode_changes(payload))

    def on_ddl(self, schema: str, sql: str) -> None:
        """DDL ran on this member's backend: forget the metadata of what it names."""
        self.catalog.forget_for_ddl(schema, sql)

    def invalidate(self, schema: str | None = None, table: str | None = None) -> None:
        """Forget cached metadata: one table, one schema, or everything (the default)."""
        if schema is not None and table is not None:
            self.catalog.invalidate(schema, table)
        elif schema is not None:
            self.catalog.invalidate_schema(schema)
        else:
            self.catalog.invalidate_all()


async def _run(runner: _Runner, statements: Sequence[str]) -> list[Answer]:
    try:
        return await runner.run(statements)
    except _BatchError as exc:
        raise exc.error from None


class _Execution:
    """Runs one plan (see the module docstring for the round trips of each kind)."""

    def __init__(self, runner: _Runner, p: Plan, sql_mode: str, catalog: SchemaCatalog) -> None:
        self.runner = runner
        self.plan = p
        self.sql = p.sql
        self.sql_mode = sql_mode
        self.catalog = catalog
        self.savepoint_taken = False
        self.found_rows = bool(runner.conn.capabilities & Cap.FOUND_ROWS)
        self.mode_mismatch = False

    # --- helpers ---------------------------------------------------------------------------------

    def _prologue(self) -> list[str]:
        """SAVEPOINT and the sql_mode check, sent ahead of the first statement that writes."""
        self.savepoint_taken = True
        return [f"SAVEPOINT {SAVEPOINT}", "SELECT @@SESSION.sql_mode"]

    async def _batch(self, statements: Sequence[str], dml_index: int | None) -> list[Answer]:
        """Run a batch; an error after the DML ran undoes it (to the savepoint) and propagates."""
        try:
            answers = await self.runner.run(statements)
        except _BatchError as exc:
            if dml_index is not None and exc.done > dml_index:
                await self._undo()
            raise exc.error from None
        except CaptureRefused:
            await self._undo()
            raise
        if statements and statements[0].startswith("SAVEPOINT"):
            self._check_mode(answers[1])
        return answers

    def _check_mode(self, answer: Answer) -> None:
        actual = SqlMode.parse((answer.rows[0][0] or b"").decode("ascii", "replace")) if answer.rows else SqlMode()
        self.mode_mismatch = actual != SqlMode.parse(self.sql_mode)

    async def _undo(self) -> None:
        """Back to the savepoint taken before the statement (idempotent; the savepoint stays)."""
        if not self.savepoint_taken or self.runner.conn.closed:
            return
        try:
            await self.runner.run([f"ROLLBACK TO SAVEPOINT {SAVEPOINT}"])
        except _BatchError:
            pass  # the transaction is already gone (deadlock): nothing left to undo

    async def _refuse_after(self, why: str) -> CaptureRefused:
        await self._undo()
        return _refuse(self.sql, why)

    async def _verify_mode(self) -> None:
        if self.mode_mismatch:
            raise await self._refuse_after("the session's sql_mode is not the one the statement was analysed with")

    def _check_rows(self, *answers: Answer) -> None:
        for a in answers:
            if len(a.rows) > CAPTURE_ROWS_MAX:
                raise CaptureRefused(
                    f"grproxy cannot replicate this statement: it touches more than {CAPTURE_ROWS_MAX} rows"
                )

    def _result(self, dml: Answer, warned: Sequence[Answer], warning_lists: Sequence[Answer], status_from: Answer) -> ClientResult:
        warnings = sum(a.warnings for a in warned)
        wl: tuple[ServerWarning, ...] = ()
        for a in warning_lists:
            wl += _warnings(a)
        return ClientResult(dml.affected_rows, dml.last_insert_id, warnings, status_from.status & ~0x0008, wl, self.runner.round_trips)

    # --- dispatch ----------------------------------------------------------------------------------

    async def run(self) -> tuple[ClientResult, list[RowChange]]:
        """Run the plan. Whatever goes wrong once the statement may have run is undone first."""
        try:
            return await self._run()
        except BackendError:
            raise  # undone where it was caught, or the statement itself failed
        except (BackendLost, asyncio.CancelledError):
            raise  # the connection is gone or poisoned: the transaction dies with it
        except CaptureRefused:
            await self._undo()
            raise
        except Exception as exc:  # a bug (a value that does not parse, an invariant)
            await self._undo()
            raise _refuse(self.sql, f"capture failed internally ({exc.__class__.__name__}: {exc})") from exc

    async def _run(self) -> tuple[ClientResult, list[RowChange]]:
        kind = self.plan.kind
        if kind is PlanKind.NOT_DML:
            raise ValueError("[BUG] capture_statement on a statement that is not a write")
        if kind is PlanKind.TEMPORARY:
            answers = await _run(self.runner, [self.sql, "SHOW WARNINGS"])
            return self._result(answers[0], [answers[0]], [answers[1]], answers[0]), []
        if kind is PlanKind.FAILS:
            answers = await self._batch(self._prologue() + [self.sql], dml_index=2)
            raise await self._refuse_after(f"{self.plan.why}, yet the server accepted it")
        if kind is PlanKind.INSERT:
            return await self._insert()
        if kind in (PlanKind.UPDATE_BY_KEYS, PlanKind.DELETE_BY_KEYS):
            return await self._by_keys()
        if kind in (PlanKind.UPDATE, PlanKind.DELETE):
            return await self._single()
        return await self._multi()

    # --- UPDATE / DELETE by literal keys: one round trip --------------------------------------------

    async def _by_keys(self) -> tuple[ClientResult, list[RowChange]]:
        p = self.plan
        meta = p.tables[0]
        shape = meta.shape
        assert shape is not None and p.pre_read and p.post_read
        stmts = self._prologue() + [p.pre_read, self.sql, "SHOW WARNINGS", p.post_read]
        a = await self._batch(stmts, dml_index=3)
        await self._verify_mode()
        pre, dml, warn, post = a[2], a[3], a[4], a[5]
        self._check_rows(pre, post)
        before = _by_identity(_images(meta, pre))
        after = _by_identity(_images(meta, post))
        changes: list[RowChange] = []
        if p.kind is PlanKind.DELETE_BY_KEYS:
            gone = [im for k, im in before.items() if k not in after]
            if dml.affected_rows != len(gone) or any(k not in before for k in after):
                raise await self._refuse_after(
                    f"it deleted {dml.affected_rows} rows but capture saw {len(gone)} go"
                )
            changes = [_delete(shape, im) for im in gone]
        else:
            changed = [im for k, im in after.items() if k not in before or before[k].values != im.values]
            if any(k not in before for k in after) or len(after) != len(before):
                raise await self._refuse_after("rows appeared or vanished under an UPDATE")
            if not self._update_count_ok(dml.affected_rows, len(changed), len(before)):
                raise await self._refuse_after(
                    f"it reported {dml.affected_rows} affected rows but capture saw {len(changed)} change"
                )
            changes = [_upsert(shape, im, before[im.identity]) for im in changed]
        return self._result(dml, [dml], [warn], post), changes

    def _update_count_ok(self, affected: int, changed: int, candidates: int) -> bool:
        if self.found_rows:
            return changed <= affected <= candidates
        return affected == changed

    # --- UPDATE / DELETE: locking pre-read, then the statement restricted to those keys -------------

    async def _single(self) -> tuple[ClientResult, list[RowChange]]:
        p = self.plan
        parsed = p.parsed
        meta, q = p.tables[0], p.qualifiers[0]
        shape = meta.shape
        assert shape is not None and p.pre_read is not None
        a = await self._batch(self._prologue() + [p.pre_read, "SHOW WARNINGS"], dml_index=None)
        await self._verify_mode()
        pre, pre_warn = a[2], a[3]
        self._check_rows(pre)
        before = _images(meta, pre)
        if not before:
            empty = Answer(status=pre.status)
            return self._result(empty, [pre], [pre_warn], pre), []
        keys = _pk_values(shape, before)
        where = pk_predicate(shape, keys, q)
        head = parsed.sql[: parsed.offset(parsed.where_kw)] if parsed.where_kw is not None else parsed.sql
        order = (parsed.text(parsed.order) + ", " if parsed.order else "") + _pk_list(meta, q)
        rewritten = f"{head.rstrip()} WHERE {where} ORDER BY {order}"
        from_text = parsed.text(parsed.refs) if parsed.refs else q
        if p.kind is PlanKind.DELETE:
            stmts = [rewritten, "SHOW WARNINGS"]
            if parsed.ignore:
                stmts.append(_image_sql(meta, q, from_text, where))
            a = await self._batch(stmts, dml_index=0)
            dml, warn = a[0], a[1]
            remaining = _by_identity(_images(meta, a[2])) if parsed.ignore else {}
            gone = [im for im in before if im.identity not in remaining]
            if dml.affected_rows != len(gone):
                raise await self._refuse_after(f"it deleted {dml.affected_rows} rows but capture saw {len(gone)} go")
            changes = [_delete(shape, im) for im in gone]
            return self._result(dml, [pre, dml], [pre_warn, warn], dml), changes
        # UPDATE: after-images by the new keys when the primary key is assigned.
        new_keys = keys
        if p.pk_change:
            new_keys = self._new_keys(meta, before, keys)
        post_sql = _image_sql(meta, q, from_text, pk_predicate(shape, new_keys, q))
        a = await self._batch([rewritten, "SHOW WARNINGS", post_sql], dml_index=0)
        dml, warn, post = a[0], a[1], a[2]
        self._check_rows(post)
        after = _images(meta, post)
        changes = self._update_changes(meta, before, keys, new_keys, after)
        changed_rows = sum(1 for c in changes if c.op == "upsert")
        if not self._update_count_ok(dml.affected_rows, changed_rows, len(before)):
            raise await self._refuse_after(
                f"it reported {dml.affected_rows} affected rows but capture saw {changed_rows} change"
            )
        return self._result(dml, [pre, dml], [pre_warn, warn], post), changes

    def _new_keys(self, meta: TableMeta, before: Sequence[_Image], keys: Sequence[tuple[Value, ...]]) -> list[tuple[Value, ...]]:
        shape = meta.shape
        assert shape is not None
        assigned = {name.lower(): k for k, (name, _) in enumerate(self.plan.pk_change)}
        out = []
        for im, key in zip(before, keys):
            new = list(key)
            for j, i in enumerate(shape.primary_key):
                k = assigned.get(shape.columns[i].lower())
                if k is None:
                    continue
                raw = im.extra[k] if k < len(im.extra) else None
                try:
                    new[j] = _parse_value(shape.forms[i], raw)
                except (ValueError, UnicodeDecodeError):
                    new[j] = None
                if new[j] is None:
                    raise CaptureRefused(
                        f"grproxy cannot replicate this statement: the new primary key of a row could not be computed "
                        f"(statement: {self.sql[:200]})"
                    )
            out.append(tuple(new))
        return out

    def _update_changes(
        self,
        meta: TableMeta,
        before: Sequence[_Image],
        keys: Sequence[tuple[Value, ...]],
        new_keys: Sequence[tuple[Value, ...]],
        after: Sequence[_Image],
    ) -> list[RowChange]:
        shape = meta.shape
        assert shape is not None
        by_pk: dict[tuple[Value, ...], _Image] = {}
        for im in after:
            by_pk[tuple(_normal(shape.forms[i], im.values[i]) for i in shape.primary_key)] = im
        changes: list[RowChange] = []
        if not self.plan.pk_change:
            for im, key in zip(before, keys):
                new = by_pk.get(tuple(_normal(shape.forms[i], v) for i, v in zip(shape.primary_key, key)))
                if new is None:
                    raise CaptureRefused(f"grproxy cannot replicate this statement: an updated row vanished (statement: {self.sql[:200]})")
                if new.values != im.values:
                    changes.append(_upsert(shape, new, im))
            return changes
        for im, key, nk in zip(before, keys, new_keys):
            new = by_pk.get(tuple(_normal(shape.forms[i], v) for i, v in zip(shape.primary_key, nk)))
            if new is None:
                raise CaptureRefused(
                    f"grproxy cannot replicate this statement: a row whose primary key changed could not be found again "
                    f"(statement: {self.sql[:200]})"
                )
            if new.values == im.values:
                continue
            if new.identity != im.identity:
                changes.append(_delete(shape, im))
                changes.append(_upsert(shape, new, None))
            else:
                changes.append(_upsert(shape, new, im))
        return changes

    # --- multi-table UPDATE / DELETE ---------------------------------------------------------------

    async def _multi(self) -> tuple[ClientResult, list[RowChange]]:
        p = self.plan
        parsed = p.parsed
        metas, quals = p.tables, p.qualifiers
        select: list[str] = []
        offsets = []
        for meta, q in zip(metas, quals):
            offsets.append(len(select))
            select += meta.image_select(q)
        pre_sql = f"SELECT {', '.join(select)} FROM {parsed.text(parsed.refs) if parsed.refs else ''}"
        if parsed.where:
            pre_sql += f" WHERE {parsed.text(parsed.where)}"
        pre_sql += " FOR UPDATE"
        a = await self._batch(self._prologue() + [pre_sql, "SHOW WARNINGS"], dml_index=None)
        await self._verify_mode()
        pre, pre_warn = a[2], a[3]
        self._check_rows(pre)
        befores = []
        for meta, off in zip(metas, offsets):
            befores.append(list(_by_identity(_images(meta, pre, off)).values()))
        if not any(befores):
            return self._result(Answer(status=pre.status), [pre], [pre_warn], pre), []
        conj = " AND ".join(
            pk_predicate(meta.shape, _pk_values(meta.shape, b), q)  # type: ignore[arg-type]
            for meta, q, b in zip(metas, quals, befores)
        )
        head = parsed.sql[: parsed.offset(parsed.where_kw)] if parsed.where_kw is not None else parsed.sql
        if parsed.where:
            rewritten = f"{head.rstrip()} WHERE ({parsed.text(parsed.where)}) AND {conj}"
        else:
            rewritten = f"{head.rstrip()} WHERE {conj}"
        posts = [
            _image_sql(meta, qualified_name(meta.schema, meta.table), qualified_name(meta.schema, meta.table),
                       pk_predicate(meta.shape, _pk_values(meta.shape, b), qualified_name(meta.schema, meta.table)))  # type: ignore[arg-type]
            for meta, b in zip(metas, befores)
        ]
        a = await self._batch([rewritten, "SHOW WARNINGS"] + posts, dml_index=0)
        dml, warn = a[0], a[1]
        changes: list[RowChange] = []
        changed = 0
        candidates = sum(len(b) for b in befores)
        for meta, b, post in zip(metas, befores, a[2:]):
            shape = meta.shape
            assert shape is not None
            after = _by_identity(_images(meta, post))
            for im in b:
                new = after.get(im.identity)
                if p.kind is PlanKind.MULTI_DELETE:
                    if new is None:
                        changes.append(_delete(shape, im))
                        changed += 1
                elif new is None:
                    raise await self._refuse_after("a row vanished under a multi-table UPDATE")
                elif new.values != im.values:
                    changes.append(_upsert(shape, new, im))
                    changed += 1
        ok = dml.affected_rows == changed if p.kind is PlanKind.MULTI_DELETE else self._update_count_ok(dml.affected_rows, changed, candidates)
        if not ok:
            raise await self._refuse_after(f"it reported {dml.affected_rows} affected rows but capture saw {changed} change")
        return self._result(dml, [pre, dml], [pre_warn, warn], a[-1]), changes

    # --- INSERT / REPLACE / ON DUPLICATE KEY UPDATE ------------------------------------------------

    async def _insert(self) -> tuple[ClientResult, list[RowChange]]:
        p = self.plan
        ip = p.insert
        assert ip is not None
        meta = p.tables[0]
        shape = meta.shape
        assert shape is not None
        parsed = p.parsed
        prologue = self._prologue()
        warned: list[Answer] = []
        warning_lists: list[Answer] = []
        statement = self.sql
        rows = ip.rows
        if parsed.source is not None or ip.materialise:
            statement, rows, mat, mat_warn = await self._materialise(prologue)
            prologue = []
            warned.append(mat)
            warning_lists.append(mat_warn)
            if not rows:
                return self._result(Answer(status=mat.status), warned, warning_lists, mat), []
        if ip.two_phase and len(rows) > 1:
            raise await self._refuse_after(_MOVING_UNIQUE)
        ip2 = InsertPlan(ip.columns, tuple(rows), (), ip.probe_unique, ip.prefetch, ip.two_phase, ip.auto_after)
        probe = _insert_probe(meta, ip2, parsed.mode)
        q = qualified_name(meta.schema, meta.table)
        before: dict[tuple[bytes | None, ...], _Image] = {}
        pre_sql = _image_sql(meta, q, q, probe) if ip.prefetch and probe else None
        stmts = list(prologue)
        if ip2.two_phase and pre_sql:
            a = await self._batch(stmts + [pre_sql], dml_index=None)
            await self._verify_mode()
            self._check_rows(a[-1])
            before = _by_identity(_images(meta, a[-1]))
            stmts, pre_sql = [], None
        auto_in_sql = any(r.auto for r in rows) and not (parsed.ignore or parsed.odku)
        post_terms = [t for t in (
            probe,
            _auto_range(meta, ip2, "LAST_INSERT_ID()") if auto_in_sql else None,
            pk_predicate(shape, _pk_values(shape, before.values()), q) if before else None,
        ) if t]
        order = None
        if shape.self_referencing and not all(r.auto for r in rows):
            # A row may reference one inserted before it in the same statement: keep the
            # statement's row order (generated ids already follow it) so the apply can.
            order = _values_order(meta, ip2) or None
        post_sql = _image_sql(meta, q, q, " OR ".join(post_terms), order=order) if post_terms else None
        if pre_sql:
            stmts.append(pre_sql)
        dml_index = len(stmts)
        stmts += [statement, "SHOW WARNINGS"]
        if post_sql:
            stmts.append(post_sql)
        a = await self._batch(stmts, dml_index=dml_index)
        if prologue:
            await self._verify_mode()
        if pre_sql:
            self._check_rows(a[dml_index - 1])
            before = _by_identity(_images(meta, a[dml_index - 1]))
        dml, warn = a[dml_index], a[dml_index + 1]
        warned.append(dml)
        warning_lists.append(warn)
        after_list = _images(meta, a[dml_index + 2]) if post_sql else []
        if ip2.auto_after and dml.last_insert_id:
            extra_sql = _image_sql(meta, q, q, _auto_range(meta, ip2, str(dml.last_insert_id)) or "FALSE")
            b = await self._batch([extra_sql], dml_index=-1)
            after_list += _images(meta, b[0])
        if len(after_list) > CAPTURE_ROWS_MAX:
            raise await self._refuse_after(f"it touches more than {CAPTURE_ROWS_MAX} rows")
        after = _by_identity(after_list)
        changes, inserted, updated, unchanged, deleted = self._insert_changes(shape, before, after)
        n_rows = len(rows)
        if parsed.replace:
            # Every row is inserted, and every row the probe found conflicted and was deleted.
            expected = n_rows + len(before)
            ok = dml.affected_rows == expected
        elif parsed.odku:
            expected = inserted + 2 * updated + (unchanged if self.found_rows else 0)
            ok = dml.affected_rows == expected and deleted == 0
        else:
            expected = inserted
            ok = dml.affected_rows == inserted and updated == 0 and deleted == 0
        if not ok:
            raise await self._refuse_after(
                f"capture could not prove which rows it wrote (the server reported {dml.affected_rows} affected rows, "
                f"capture expected {expected})"
            )
        result = self._result(dml, warned, warning_lists, a[-1])
        if parsed.source is not None:
            result = _with_insert_id(result, _select_insert_id(parsed, rows, result))
        return result, changes

    def _insert_changes(
        self, shape: RowShape, before: dict[tuple[bytes | None, ...], _Image], after: dict[tuple[bytes | None, ...], _Image]
    ) -> tuple[list[RowChange], int, int, int, int]:
        changes: list[RowChange] = []
        deleted = 0
        for key, im in before.items():
            if key not in after:
                changes.append(_delete(shape, im))
                deleted += 1
        inserted = updated = unchanged = 0
        for key, im in after.items():
            old = before.get(key)
            if old is None:
                inserted += 1
                changes.append(_upsert(shape, im, None))
            elif old.values != im.values:
                updated += 1
                changes.append(_upsert(shape, im, old))
            else:
                unchanged += 1
        return changes, inserted, updated, unchanged, deleted

    async def _materialise(self, prologue: list[str]) -> tuple[str, list[InsertRow], Answer, Answer]:
        """Evaluate INSERT … SELECT rows (or computed key expressions) first, as typed literals.

        Returns the rewritten INSERT (literal VALUES), its rows, and the evaluating SELECT's
        answer and warnings. One round trip (with the savepoint and sql_mode check).
        """
        p = self.plan
        parsed = p.parsed
        ip = p.insert
        assert ip is not None
        mariadb = bool(self.runner.conn.handshake and self.runner.conn.handshake.is_mariadb)
        meta = p.tables[0]
        if parsed.source is not None:
            select = parsed.text(parsed.source)
            if _simple_select(parsed):
                select += " LOCK IN SHARE MODE"
            # FLOAT results print with 6 digits: where the target column is FLOAT or DOUBLE the
            # server converts through a double anyway, so read those values as doubles (exact).
            # Only then is the SELECT wrapped: unwrapped, the server picks the plan (and so the
            # row order, which decides the insert id reported) it picks for INSERT … SELECT.
            names = [f"c{i}" for i in range(len(ip.columns))]
            outer = []
            for name, column in zip(names, ip.columns):
                col = meta.column(column)
                outer.append(f"({name} + 0E0)" if col is not None and col.form is Form.DOUBLE else name)
            if outer != names:
                select = (
                    f"WITH `__grproxy_rows` ({', '.join(names)}) AS ({select}) "
                    f"SELECT {', '.join(outer)} FROM `__grproxy_rows`"
                )
        else:
            exprs = [parsed.text(parsed.rows[r][c]) for r, c in ip.materialise]
            select = "SELECT " + ", ".join(exprs)
        if mariadb:
            select = f"SET STATEMENT character_set_results = NULL FOR {select}"
        try:
            a = await self.runner.run(prologue + [select, "SHOW WARNINGS"])
        except _BatchError as exc:
            if parsed.source is not None:
                raise exc.error from None
            raise _refuse(self.sql, f"a computed key could not be evaluated ahead of the INSERT ({exc.error.message})") from None
        self._check_mode(a[1])
        await self._verify_mode()
        mat, mat_warn = a[2], a[3]
        self._check_rows(mat)
        cols = mat.columns or []
        literals: list[list[str]] = []
        for row in mat.rows:
            out = []
            for cdef, raw in zip(cols, row):
                out.append(await self._typed_literal(cdef, raw))
            literals.append(out)
        auto = meta.auto_increment_column
        if parsed.source is not None:
            if cols and len(cols) != len(ip.columns):
                raise _refuse(self.sql, "the SELECT does not return one value per column")
            rows = []
            for lits in literals:
                is_auto = auto is not None and (
                    auto.name not in ip.columns
                    or lits[ip.columns.index(auto.name)] == "NULL"
                    or (not parsed.mode.no_auto_value_on_zero and lits[ip.columns.index(auto.name)] == "0")
                )
                rows.append(InsertRow(tuple(lits), is_auto))
            if any(r.auto for r in rows) and not all(r.auto for r in rows):
                raise await self._refuse_after("it mixes explicit and generated AUTO_INCREMENT values in one INSERT")
            head = parsed.sql[: parsed.tokens[parsed.source.lo].start]
            tail = parsed.sql[parsed.tokens[parsed.source.hi].start :] if parsed.source.hi < len(parsed.tokens) else ""
            statement = head + "VALUES " + ", ".join("(" + ", ".join(lits) + ")" for lits in literals) + (" " + tail if tail else "")
            return statement, rows, mat, mat_warn
        values = literals[0] if literals else []
        replaced = dict(zip(ip.materialise, values))
        rows = []
        for r, row in enumerate(ip.rows):
            vals = list(row.values)
            is_auto = row.auto
            for c in range(len(vals)):
                if (r, c) in replaced:
                    vals[c] = replaced[(r, c)]
                    col = meta.column(ip.columns[c])
                    if col is not None and col.auto_increment and (
                        vals[c] == "NULL" or (not parsed.mode.no_auto_value_on_zero and vals[c] == "0")
                    ):
                        is_auto = True
            rows.append(InsertRow(tuple(vals), is_auto))
        if any(r.auto for r in rows) and not all(r.auto for r in rows):
            raise await self._refuse_after("it mixes explicit and generated AUTO_INCREMENT values in one INSERT")
        statement = parsed.sql
        for (r, c), lit in sorted(replaced.items(), key=lambda kv: -parsed.tokens[parsed.rows[kv[0][0]][kv[0][1]].lo].start):
            span = parsed.rows[r][c]
            start, end = parsed.tokens[span.lo].start, parsed.tokens[span.hi - 1].end
            statement = statement[:start] + lit + statement[end:]
        return statement, rows, mat, mat_warn

    async def _typed_literal(self, cdef: ColumnDef, raw: bytes | None) -> str:
        """A literal of the same SQL type and value as a SELECT result column value."""
        if raw is None:
            return "NULL"
        t = cdef.type
        text = raw.decode("latin-1")
        if t in (1, 2, 3, 8, 9, 13):  # TINY SHORT LONG LONGLONG INT24 YEAR
            if not re.fullmatch(r"-?[0-9]+", text):
                raise _refuse(self.sql, f"an integer value {text!r} could not be carried")
            return text
        if t in (0, 246):  # DECIMAL, NEWDECIMAL
            if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
                raise _refuse(self.sql, f"a decimal value {text!r} could not be carried")
            return text
        if t == 5:  # DOUBLE
            try:
                float(text)
            except ValueError:
                raise _refuse(self.sql, f"a double value {text!r} could not be carried") from None
            return text if ("e" in text or "E" in text) else text + "E0"
        if t == 4:
            raise _refuse(self.sql, "a FLOAT-typed value cannot be carried exactly")
        if t in (7, 12, 10, 11, 14):  # TIMESTAMP DATETIME DATE TIME NEWDATE
            if not re.fullmatch(r"-?[0-9][0-9:. -]*", text) or text.startswith("0000"):
                raise _refuse(self.sql, f"a temporal value {text!r} could not be carried")
            kind = {10: "DATE", 14: "DATE", 11: "TIME"}.get(t, "TIMESTAMP")
            return f"{kind}'{text}'"
        if t == 16:  # BIT
            return "b'" + (bin(int.from_bytes(raw, "big"))[2:] if raw else "0") + "'"
        if t == 245:  # JSON (MySQL)
            return f"CAST(_utf8mb4 X'{raw.hex()}' AS JSON)"
        if t == 255:  # GEOMETRY
            return f"X'{raw.hex()}'"
        if t in (15, 253, 254, 247, 248, 249, 250, 251, 252):
            if cdef.charset == 63:
                return f"_binary X'{raw.hex()}'"
            charset = await self.catalog.charset_of_collation(self.runner.conn, cdef.charset)
            if not charset or not re.fullmatch(r"[a-z0-9_]+", charset):
                raise _refuse(self.sql, f"a string in collation {cdef.charset} could not be carried")
            return f"_{charset} X'{raw.hex()}'"
        if t == 6:
            return "NULL"
        raise _refuse(self.sql, f"a value of column type {t} could not be carried")


def _select_insert_id(parsed: Parsed, rows: Sequence[InsertRow], result: ClientResult) -> int:
    """The insert id the server reports for INSERT … SELECT, given what the VALUES form reported.

    With a generated value both forms report the first one generated, and otherwise both report
    the AUTO_INCREMENT value of the last row processed — except under ON DUPLICATE KEY UPDATE,
    where INSERT … SELECT reports 0 (MariaDB's select_insert keeps no such value then).
    """
    if parsed.odku and not any(r.auto for r in rows):
        return 0
    return result.last_insert_id


def _with_insert_id(result: ClientResult, insert_id: int) -> ClientResult:
    return ClientResult(result.affected_rows, insert_id, result.warnings, result.status, result.warning_list, result.round_trips)


def _simple_select(parsed: Parsed) -> bool:
    """The INSERT's SELECT can take LOCK IN SHARE MODE (no set operation, no locking clause)."""
    assert parsed.source is not None
    toks = parsed.tokens[parsed.source.lo : parsed.source.hi]
    if not toks or toks[0].upper != "SELECT":
        return False
    for t in toks:
        if t.depth == 0 and t.upper in ("UNION", "EXCEPT", "INTERSECT", "LOCK", "INTO", "FOR"):
            return False
    return True


def _normal(form: Form, v: Value) -> Value:
    """A primary-key value normalised for matching computed keys against read ones."""
    if v is None:
        return None
    if form is Form.DECIMAL:
        try:
            return Decimal(str(v)).normalize()
        except InvalidOperation:
            return v
    return v
