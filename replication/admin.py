"""GR's SQL vocabulary on a member port (DESIGN §10), in one place.

Theory of operation
-------------------

A member session hands a statement here when its text mentions `group_replication`,
`replication_group` or `VARIABLES` (`mentions`, a cheap byte search; everything else never
reaches this module). `Admin.plan(stmt, sql, session)` then either returns the coroutine that
answers the statement, or None: not ours, the session runs it as usual.

What is answered here, and how:

* **Group actions** — `SELECT group_replication_set_as_primary('uuid'[, timeout])`,
  `group_replication_switch_to_single_primary_mode(['uuid'])`,
  `group_replication_switch_to_multi_primary_mode()`. GR's preconditions are checked on the
  member that was asked (admin user, member ONLINE with a majority, nobody joining or
  unreachable, a valid uuid of the group: error 1123 with GR's message otherwise); then the
  action is broadcast (`Member.group_action`) and applied by every member's engine at its
  delivery, checked again there against the same state, so every member decides the same
  (`replication.engine.Engine._on_admin`). The session gets GR's answer ("Primary server
  switched to: …"), or 3910 when the group refused it at delivery.
* **Tables** — `performance_schema.replication_group_members` and
  `replication_group_member_stats`: each reference is replaced by a derived table of this
  member's rows and the backend runs the client's own query on it (projection, WHERE, ORDER
  BY, aliases, joins behave as on a server). Member stats: this member's own counters live,
  the others' from their last `MemberStats` report through the group (member.py broadcasts
  one when its counters changed, with the stable-position report).
* **Variables** — GR's settings under their GR names (`VARIABLES`, DESIGN §10b):
  `SHOW [GLOBAL|SESSION] VARIABLES [LIKE …|WHERE …]` is the backend's variables plus ours
  (one derived table, so LIKE and WHERE are the server's); `@@[GLOBAL.|SESSION.]group_replication_x`
  reads become literals; `SET [GLOBAL|SESSION] group_replication_x = …` sets the dynamic ones
  (admin users; 1238 for read-only ones, 1229 for SESSION on a global-only one, 1231 for a bad
  value), the rest of a mixed SET runs on the backend. `group_replication_force_members` is
  GR's way out of a lost majority (the group binding's force_members).
* **STOP / START GROUP_REPLICATION** (admin): leave the group (OFFLINE, read-only) / join it
  again through the seeds as a new incarnation.

Admin-only statements get 1227 for users that are not `admin` in `[[users]]` (`admin_only`,
shared with the router, which checks its own client's user: it reaches members as its own
admin account).
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from replication.gcs.interface import GcsError, MemberState
from replication.gcs.xcom.allowlist import IpAllowlist
from replication.protocol.errors import MySQLError, NotSupported, SpecificAccessDenied
from replication.protocol.results import TYPE_LONGLONG, Column

from .consistency import InvalidLevel, Level, parse_level
from .engine import MemberRecord, Role
from .lifecycle import ExitStateAction
from .member import Member, StartRefused
from .messages import AdminAction, MemberStats
from .statements import Assignment, Kind, Scope, Statement

__all__ = ["Admin", "AdminSession", "mentions", "admin_only", "server_privilege", "server_access_denied",
           "unlogged_setting", "GROUP_ACTION_RE", "VARIABLES", "ADMIN_SCAN_BYTES",
           "rewrite_table", "GROUP_MEMBERS", "MEMBER_STATS", "ROUTER_MEMBERS_COLUMNS", "router_members"]

ADMIN_SCAN_BYTES = 4096  # how much of a statement is searched for what this module answers
PREFIX = "group_replication_"
_MENTIONS_RE = re.compile(rb"group_replication|replication_group|VARIABLES", re.IGNORECASE)
# One-literal searches run much faster than the alternation: they screen every statement, the
# alternation confirms the few that contain "group" (GROUP BY …).
_GROUP_RE = re.compile(rb"group", re.IGNORECASE)
_VARIABLES_RE = re.compile(rb"variables", re.IGNORECASE)
GROUP_ACTION_RE = re.compile(
    r"group_replication_(?P<fn>set_as_primary|switch_to_single_primary_mode|switch_to_multi_primary_mode)\s*\(",
    re.IGNORECASE)
_GROUP_ACTION_CALL_RE = re.compile(
    r"^\s*SELECT\s+(?P<expr>group_replication_(?P<fn>set_as_primary|switch_to_single_primary_mode"
    r"|switch_to_multi_primary_mode)\s*\((?P<args>[^()]*)\))\s*(?:AS\s+(?P<alias>`[^`]+`|\w+|'[^']*'))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL)
_ARG_RE = re.compile(r"\s*(?:'(?P<s>(?:[^'\\]|\\.|'')*)'|\"(?P<d>(?:[^\"\\]|\\.)*)\"|(?P<n>\d+))\s*(?:,|$)")
_SHOW_VARIABLES_RE = re.compile(
    r"^\s*SHOW\s+(?:(?P<scope>GLOBAL|SESSION|LOCAL)\s+)?VARIABLES\b(?P<rest>.*?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_LIKE_RE = re.compile(r"^\s*LIKE\s+(?P<pattern>'(?:[^'\\]|\\.|'')*')\s*$", re.IGNORECASE | re.DOTALL)
_WHERE_RE = re.compile(r"^\s*WHERE\s+(?P<expr>.+)$", re.IGNORECASE | re.DOTALL)
_VARIABLE_READ_RE = re.compile(r"@@(?:(?P<scope>SESSION|LOCAL|GLOBAL)\.)?(?P<name>group_replication_\w+)\b",
                               re.IGNORECASE)
_GROUP_REPLICATION_CONTROL_RE = re.compile(r"^\s*(?P<verb>START|STOP)\s+GROUP_REPLICATION\s*;?\s*$", re.IGNORECASE)
# The grproxy admin privilege stands for GR's (SUPER / GROUP_REPLICATION_ADMIN / SYSTEM_VARIABLES_ADMIN).
_ACCESS_DENIED = "Access denied; you need (at least one of) the SUPER or GROUP_REPLICATION_ADMIN privilege(s) for this operation"
_ACCESS_DENIED_VARIABLES = ("Access denied; you need (at least one of) the SUPER, SYSTEM_VARIABLES_ADMIN "
                            "privilege(s) for this operation")


# --- errors (GR's codes) -----------------------------------------------------------------------


class IncorrectGlobalLocalVar(MySQLError):
    errno = 1238  # ER_INCORRECT_GLOBAL_LOCAL_VAR: "Variable '%s' is a read only variable" / "… a GLOBAL variable"
    sqlstate = "HY000"


class GlobalVariable(MySQLError):
    errno = 1229  # ER_GLOBAL_VARIABLE: SET SESSION of a global-only variable
    sqlstate = "HY000"


class WrongValueForVariable(MySQLError):
    errno = 1231  # ER_WRONG_VALUE_FOR_VAR
    sqlstate = "42000"


class CantInitializeUdf(MySQLError):
    errno = 1123  # ER_CANT_INITIALIZE_UDF: GR's function preconditions
    sqlstate = "HY000"


class GroupActionFailed(MySQLError):
    errno = 3910  # ER_GRP_RPL_UDF_ERROR: "The function '%s' failed. %s"
    sqlstate = "HY000"


class GroupReplicationConfiguration(MySQLError):
    errno = 3092  # ER_GROUP_REPLICATION_CONFIGURATION
    sqlstate = "HY000"


class GroupReplicationRunning(MySQLError):
    errno = 3093  # ER_GROUP_REPLICATION_RUNNING
    sqlstate = "HY000"


# --- what the session offers -----------------------------------------------------------------


class AdminSession(Protocol):
    """What this module needs from the member session that received the statement."""

    consistency: Level  # the session's group_replication_consistency

    @property
    def is_admin(self) -> bool: ...

    async def relay(self, sql: str) -> None:
        """Run `sql` on the session's backend connection and relay the answer to the client."""

    async def relay_held(self, stmt: Statement, sql: str) -> None:
        """As `relay`, after what the session's consistency level holds a statement for."""

    def send_rows(self, columns: Sequence[Column], rows: Sequence[Sequence[object]]) -> None: ...

    def send_ok(self) -> None: ...


def mentions(raw: bytes, start: int = 5, scan_bytes: int = ADMIN_SCAN_BYTES) -> bool:
    """The session's hook: may this COM_QUERY (`raw[start:]`) be answered by this module? (It
    names group_replication_*, replication_group_* or VARIABLES in its first `scan_bytes`.)
    On every statement's path: two one-literal searches for most texts."""
    end = start + scan_bytes
    if _GROUP_RE.search(raw, start, end) is not None:
        return _MENTIONS_RE.search(raw, start, end) is not None
    return _VARIABLES_RE.search(raw, start, end) is not None


def admin_only(stmt: Statement, sql: str) -> bool:
    """Whether a statement needs an admin user: group actions, STOP/START GROUP_REPLICATION,
    SET GLOBAL/PERSIST of a group_replication_ variable. Pure (the router uses it too)."""
    if stmt.kind is Kind.SET:
        return any(a.name.startswith(PREFIX) and a.scope in _GLOBAL_SCOPES for a in stmt.assignments)
    if stmt.kind is Kind.ADMIN:
        return _GROUP_REPLICATION_CONTROL_RE.match(sql) is not None
    return GROUP_ACTION_RE.search(sql) is not None


_GLOBAL_SCOPES = frozenset({Scope.GLOBAL, Scope.PERSIST, Scope.PERSIST_ONLY})

# Server administration a backend account with every privilege could run for any client:
# grproxy's users reach the backend through one account, so these need an `admin` user (what a
# server would ask of the client's own account). Table maintenance (ANALYZE, CHECK, OPTIMIZE,
# REPAIR, CHECKSUM, CACHE INDEX, LOAD INDEX) is an application's and stays open.
_SERVER_ADMIN_VERBS: Mapping[str, str] = {
    "SHUTDOWN": "SHUTDOWN", "RESTART": "SHUTDOWN", "RESET": "RELOAD", "RESET MASTER": "RELOAD", "FLUSH": "RELOAD",
    "PURGE": "BINLOG ADMIN", "CHANGE": "REPLICATION SLAVE ADMIN", "STOP": "REPLICATION SLAVE ADMIN",
    "INSTALL": "SUPER", "UNINSTALL": "SUPER", "CLONE": "SUPER", "BACKUP": "RELOAD", "LOCK INSTANCE": "RELOAD",
    "UNLOCK INSTANCE": "RELOAD", "ALTER INSTANCE": "SUPER", "CREATE RESOURCE GROUP": "SUPER",
    "ALTER RESOURCE GROUP": "SUPER", "DROP RESOURCE GROUP": "SUPER",
}


def server_privilege(stmt: Statement) -> str | None:
    """The privilege a statement needs that only `admin` users of grproxy hold, or None: server
    administration (SHUTDOWN, FLUSH, RESET, replication control, plugins …), accounts
    (CREATE USER, GRANT …) and SET GLOBAL / PERSIST of server variables. Looks inside
    multi-statements and PREPARE / EXECUTE IMMEDIATE with a literal. Pure (the router uses
    it with its client's user)."""
    if stmt.kind is Kind.ADMIN:
        if stmt.verb in _SERVER_ADMIN_VERBS:
            return _SERVER_ADMIN_VERBS[stmt.verb]
        if stmt.verb.startswith("START ") and stmt.verb != "START GROUP_REPLICATION":
            return "REPLICATION SLAVE ADMIN"
    elif stmt.kind is Kind.ACCOUNT:
        return "CREATE USER"
    elif stmt.kind is Kind.SET:
        if any(a.scope in _GLOBAL_SCOPES and not a.name.startswith(PREFIX) for a in stmt.assignments):
            return "SUPER"
    for part in (*stmt.parts, *((stmt.inner,) if stmt.inner is not None else ())):
        needed = server_privilege(part)
        if needed is not None:
            return needed
    return None


#: Binary log settings a member's capture relies on (DESIGN §5), with the values it accepts: a
#: session (or, for new sessions, the server) that logged writes otherwise would commit them on
#: this member only. `None` in a value set: DEFAULT (the server's value, checked at start).
_LOGGING_VARIABLES: dict[str, frozenset[object]] = {
    "sql_log_bin": frozenset({1, "ON", "TRUE", "DEFAULT"}),
    "binlog_format": frozenset({"ROW", "DEFAULT"}),
    "binlog_row_image": frozenset({"FULL", "DEFAULT"}),
    "binlog_row_metadata": frozenset({"FULL", "DEFAULT"}),
    "log_bin": frozenset(),  # read-only on the server; named so the refusal says why
    # A member's sessions write in grproxy's GTID domain (replication.outside_writes).
    "gtid_domain_id": frozenset(),
    "server_id": frozenset(),
    "gtid_seq_no": frozenset(),
}


def unlogged_setting(stmt: Statement) -> WrongValueForVariable | None:
    """A SET or SET STATEMENT … FOR (alone, in a multi-statement, or inside PREPARE / EXECUTE
    IMMEDIATE with a literal) that would make a member's writes bypass the binary log, or log
    them in a form the capture cannot read: refused with 1231 before it runs, by member
    sessions and by the router (whose EVENTUAL reads go straight to a backend). A value that is
    not a literal cannot be checked and is refused too. (A transaction that gets past this — a
    procedure that sets them — is refused at COMMIT, local_commit's prepare-time check.)"""
    for a in stmt.assignments:
        allowed = _LOGGING_VARIABLES.get(a.name)
        if allowed is None or a.scope is Scope.USER:
            continue
        literal = a.literal.upper() if isinstance(a.literal, str) else a.literal
        if literal not in allowed:
            return WrongValueForVariable(f"Variable '{a.name}' can't be set to the value of '{a.value}' (grproxy "
                                         "replicates from the binary log: on a group member every write is logged in "
                                         "full, as rows, in grproxy's GTID domain)")
    for part in (*stmt.parts, *((stmt.inner,) if stmt.inner is not None else ())):
        refused = unlogged_setting(part)
        if refused is not None:
            return refused
    return None


def server_access_denied(privilege: str) -> SpecificAccessDenied:
    return SpecificAccessDenied(f"Access denied; you need (at least one of) the {privilege} privilege(s) for this "
                                "operation (an admin user of grproxy)")


# --- tables ------------------------------------------------------------------------------------


def _sql_literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class VirtualTable:
    """A performance_schema table answered by grproxy: its name and (column, is_number) list."""

    name: str
    columns: tuple[tuple[str, bool], ...]

    def pattern(self) -> re.Pattern[str]:
        return re.compile(
            r"(?:`?performance_schema`?\s*\.\s*)?`?" + self.name + r"\b`?"
            r"(?P<alias>\s+(?:AS\s+)?(?!(?:WHERE|ORDER|GROUP|LIMIT|JOIN|LEFT|RIGHT|INNER|CROSS|STRAIGHT_JOIN|NATURAL"
            r"|UNION|HAVING|WINDOW|FOR|LOCK|INTO|ON|USING|PROCEDURE)\b)`?\w+`?)?",
            re.IGNORECASE)


GROUP_MEMBERS = VirtualTable("replication_group_members", (
    ("CHANNEL_NAME", False), ("MEMBER_ID", False), ("MEMBER_HOST", False), ("MEMBER_PORT", True),
    ("MEMBER_STATE", False), ("MEMBER_ROLE", False), ("MEMBER_VERSION", False), ("MEMBER_COMMUNICATION_STACK", False)))
MEMBER_STATS = VirtualTable("replication_group_member_stats", (
    ("CHANNEL_NAME", False), ("VIEW_ID", False), ("MEMBER_ID", False), ("COUNT_TRANSACTIONS_IN_QUEUE", True),
    ("COUNT_TRANSACTIONS_CHECKED", True), ("COUNT_CONFLICTS_DETECTED", True),
    ("COUNT_TRANSACTIONS_ROWS_VALIDATING", True), ("TRANSACTIONS_COMMITTED_ALL_MEMBERS", False),
    ("LAST_CONFLICT_FREE_TRANSACTION", False), ("COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE", True),
    ("COUNT_TRANSACTIONS_REMOTE_APPLIED", True), ("COUNT_TRANSACTIONS_LOCAL_PROPOSED", True),
    ("COUNT_TRANSACTIONS_LOCAL_ROLLBACK", True)))
_TABLES = (GROUP_MEMBERS, MEMBER_STATS)
_TABLE_PATTERNS = {t.name: t.pattern() for t in _TABLES}
CHANNEL = "group_replication_applier"


def _derived(table: VirtualTable, rows: Sequence[Sequence[object]]) -> str:
    def column(value: object, name: str, number: bool) -> str:
        v = _sql_literal(value)
        return f"CAST({v} AS UNSIGNED) AS {name}" if number else f"{v} AS {name}"

    if rows:
        return " UNION ALL ".join(
            "SELECT " + ", ".join(column(v, n, num) for v, (n, num) in zip(row, table.columns, strict=True))
            for row in rows)
    return ("SELECT " + ", ".join(column(0 if num else "", n, num) for n, num in table.columns)
            + " FROM DUAL WHERE FALSE")


def rewrite_table(sql: str, table: VirtualTable, rows: Sequence[Sequence[object]]) -> str:
    """Replace every reference to `table` (optionally schema-qualified, keeping an alias) with a
    derived table of `rows`, so the backend runs the client's query on them."""
    selects = _derived(table, rows)

    def sub(m: re.Match[str]) -> str:
        alias = m.group("alias")
        name = alias.strip().split()[-1] if alias else table.name
        return f"({selects}) AS {name}"

    return _TABLE_PATTERNS[table.name].sub(sub, sql)


def _table_members(member: Member) -> list[MemberRecord]:
    """The members a member's tables list: the group as it sees it while it is in the group;
    only itself (OFFLINE, ERROR, or still asking its seeds) otherwise, as GR shows it — the
    view it left is history."""
    records = member.members()
    if member.in_group:
        return records
    me = member.config.uuid
    own = [r for r in records if r.uuid == me]
    if own:
        return own
    return [MemberRecord(me, member.state, Role.SECONDARY, member.config.member_weight, member.config.member_address,
                         member.config.version)]


def group_member_rows(member: Member) -> list[tuple[object, ...]]:
    """replication_group_members as this member sees it."""
    rows: list[tuple[object, ...]] = []
    for m in _table_members(member):
        host, _, port = m.member_address.rpartition(":")
        role = m.role.value if m.state is MemberState.ONLINE else ""
        rows.append((CHANNEL, m.uuid, host or None, int(port) if port.isdigit() else None, m.state.value, role,
                     m.version, "XCom"))
    return rows


def member_stats_rows(member: Member) -> list[tuple[object, ...]]:
    """replication_group_member_stats: one row per member of the table; this member's counters
    now, the others' as they last reported them (zeros before their first report)."""
    engine = member.engine
    view = engine.view
    view_id = str(view.view_id) if view is not None else ""
    group = getattr(member, "group_uuid", None) or ""
    stable = engine.certifier.stable
    committed_all = f"{group}:1-{stable}" if stable > 0 else ""
    rows: list[tuple[object, ...]] = []
    for m in _table_members(member):
        stats = member.local_stats() if m.uuid == member.config.uuid else engine.member_stats.get(m.uuid)
        stats = stats or MemberStats(m.uuid)
        last = f"{group}:{stats.last_conflict_free}" if stats.last_conflict_free else ""
        rows.append((CHANNEL, view_id, m.uuid, stats.in_queue, stats.checked, stats.conflicts,
                     stats.rows_validating, committed_all, last, stats.remote_in_applier_queue,
                     stats.remote_applied, stats.local_proposed, stats.local_rollback))
    return rows


# The router's poll (router.service): the member table plus what the router needs to trust it.
ROUTER_MEMBERS_COLUMNS = ("MEMBER_ID", "MEMBER_HOST", "MEMBER_PORT", "MEMBER_STATE", "MEMBER_ROLE", "IS_SELF",
                          "VIEW_HAS_QUORUM", "SINGLE_PRIMARY_MODE")


def router_members(member: Member) -> tuple[list[Column], list[tuple[object, ...]]]:
    """`/* grproxy */ ROUTER MEMBERS`: replication_group_members' first columns, then IS_SELF
    (1 on the answering member's row), VIEW_HAS_QUORUM (the answering member is ONLINE in a view
    it can reach a majority of) and SINGLE_PRIMARY_MODE (the group's mode as this member
    applies it), repeated on every row."""
    quorum = int(member.has_quorum())
    single = int(member.engine.single_primary)
    rows = []
    for r in group_member_rows(member):
        rows.append((r[1], r[2], r[3], r[4], r[5], int(r[1] == member.config.uuid), quorum, single))
    cols = [Column(n, TYPE_LONGLONG, 20) if n in ("MEMBER_PORT", "IS_SELF", "VIEW_HAS_QUORUM", "SINGLE_PRIMARY_MODE")
            else Column(n, length=255) for n in ROUTER_MEMBERS_COLUMNS]
    return cols, rows


# --- variables ---------------------------------------------------------------------------------


def _on_off(value: bool) -> str:
    return "ON" if value else "OFF"


def _gcs_config(member: Member, part: str, field: str, default: object) -> object:
    """A setting the group binding was built with (xcom: `gcs.core.cfg`,
    `gcs.transport.config`); GR's default for a binding that does not say (the simulator)."""
    holder = getattr(member.gcs, part, None)
    config = getattr(holder, "config", None) or getattr(holder, "cfg", None)
    return getattr(config, field, default)


class BadValue(Exception):
    """A value a variable does not take (the message is GR's/MySQL's wording)."""


@dataclass(frozen=True, slots=True)
class Variable:
    """One of GR's settings as SQL sees it (`group_replication_<name>`).

    `read(admin)` gives its value in SHOW VARIABLES' form (text); `number` says whether
    `@@` reads give a number. `parse` turns an assignment's literal into a value, raising
    BadValue; `write(admin, value)` applies it (None: read-only). `session`: it also has a
    session value (consistency only)."""

    name: str
    read: Callable[["Admin"], str]
    number: bool = False
    parse: Callable[[object], object] | None = None
    write: Callable[["Admin", object], None] | None = None
    session: bool = False

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


def _int_range(lo: int, hi: int, default: int) -> Callable[[object], object]:
    def parse(literal: object) -> object:
        if literal == "DEFAULT":
            return default
        if isinstance(literal, bool) or not isinstance(literal, int):
            raise BadValue("Incorrect argument type")
        if not lo <= literal <= hi:
            raise BadValue(f"must be between {lo} and {hi}")
        return literal
    return parse


def _choice(*names: str, default: str) -> Callable[[object], object]:
    def parse(literal: object) -> object:
        if literal == "DEFAULT":
            return default
        if isinstance(literal, int) and not isinstance(literal, bool) and 0 <= literal < len(names):
            return names[literal]
        if isinstance(literal, str) and literal.upper() in names:
            return literal.upper()
        raise BadValue("")
    return parse


def _parse_level(literal: object) -> object:
    if literal == "DEFAULT":
        return Level.EVENTUAL
    try:
        return parse_level(literal)
    except InvalidLevel as exc:
        raise BadValue(str(exc)) from None


def _set_config(config_field: str) -> Callable[["Admin", object], None]:
    """A setting kept in MemberConfig (field `config_field`), read by the member where it is used."""
    def write(admin: Admin, value: object) -> None:
        admin.member.reconfigure(**{config_field: value})
    return write


def _exit_state_action_write(admin: Admin, value: object) -> None:
    admin.member.exit_state_action = ExitStateAction.parse(str(value))
    admin.member.reconfigure(exit_state_action=str(value))


def _consistency_write(admin: Admin, value: object) -> None:
    assert isinstance(value, Level)
    admin.member.consistency = value


def _variables() -> dict[str, Variable]:
    def expel(a: Admin) -> int:
        if a.member.config.member_expel_timeout_s is not None:
            return a.member.config.member_expel_timeout_s
        return int(_gcs_config(a.member, "core", "member_expel_timeout_ms", 5000)) // 1000  # type: ignore[call-overload]
    def compression(a: Admin) -> object:
        if a.member.config.compression_threshold is not None:
            return a.member.config.compression_threshold
        return _gcs_config(a.member, "transport", "compression_threshold", 1_000_000)
    tls = lambda a: getattr(getattr(_gcs_config(a.member, "transport", "tls", None), "ssl_mode", None),  # noqa: E731
                            "value", "DISABLED")
    vs = [
        Variable("group_name", lambda a: getattr(a.member, "group_uuid", None) or ""),
        Variable("local_address", lambda a: a.member.gcs.me.address),
        Variable("group_seeds", lambda a: ",".join(s.address for s in getattr(a.member, "_seeds", ()))),
        Variable("single_primary_mode", lambda a: _on_off(a.member.engine.single_primary), number=True),
        Variable("paxos_single_leader",
                 lambda a: _on_off(bool(_gcs_config(a.member, "core", "paxos_single_leader", False))), number=True),
        Variable("communication_max_message_size",
                 lambda a: str(_gcs_config(a.member, "transport", "communication_max_message_size", 10_485_760)),
                 number=True),
        Variable("auto_increment_increment", lambda a: "7", number=True),
        Variable("ip_allowlist", _ip_allowlist),
        Variable("ssl_mode", tls),
        Variable("communication_stack", lambda a: "XCOM"),
        Variable("consistency", lambda a: a.member.consistency.name, parse=_parse_level, write=_consistency_write,
                 session=True),
        Variable("member_weight", lambda a: str(a.member.config.member_weight), number=True,
                 parse=_int_range(0, 100, 50), write=_set_config("member_weight")),
        Variable("transaction_size_limit", lambda a: str(a.member.config.transaction_size_limit), number=True,
                 parse=_int_range(0, 2147483647, 150_000_000),
                 write=_set_config("transaction_size_limit")),
        Variable("autorejoin_tries", lambda a: str(a.member.config.autorejoin_tries), number=True,
                 parse=_int_range(0, 2016, 3), write=_set_config("autorejoin_tries")),
        Variable("exit_state_action", lambda a: a.member.exit_state_action.value,
                 parse=_choice("READ_ONLY", "ABORT_SERVER", "OFFLINE_MODE", default="READ_ONLY"),
                 write=_exit_state_action_write),
        Variable("unreachable_majority_timeout", lambda a: f"{a.member.config.unreachable_majority_timeout_s:g}",
                 number=True, parse=_int_range(0, 31_536_000, 0),
                 write=_set_config("unreachable_majority_timeout_s")),
        Variable("member_expel_timeout", lambda a: str(expel(a)), number=True, parse=_int_range(0, 3600, 5),
                 write=_set_config("member_expel_timeout_s")),
        Variable("compression_threshold", lambda a: str(compression(a)), number=True,
                 parse=_int_range(0, 4294967295, 1_000_000), write=_compression_threshold_write),
        Variable("message_cache_size", lambda a: str(a.member.cache.bytes_max), number=True,
                 parse=_int_range(134_217_728, 2**63 - 1, 1 << 30), write=_message_cache_size_write),
        Variable("force_members", lambda a: str(a.stored.get("force_members", "")), parse=_text,
                 write=_force_members_write),
        Variable("flow_control_mode", lambda a: a.member.config.flow_control_mode,
                 parse=_choice("DISABLED", "QUOTA", default="QUOTA"), write=_set_config("flow_control_mode")),
        Variable("flow_control_certifier_threshold", lambda a: str(a.member.config.flow_control_certifier_threshold),
                 number=True, parse=_int_range(0, 2147483647, 25000),
                 write=_set_config("flow_control_certifier_threshold")),
        Variable("flow_control_applier_threshold", lambda a: str(a.member.config.flow_control_applier_threshold),
                 number=True, parse=_int_range(0, 2147483647, 25000),
                 write=_set_config("flow_control_applier_threshold")),
        Variable("flow_control_period", lambda a: str(a.member.config.flow_control_period_s), number=True,
                 parse=_int_range(1, 60, 1), write=_set_config("flow_control_period_s")),
    ]
    return {v.full_name: v for v in vs}


def _ip_allowlist(admin: Admin) -> str:
    allowlist = _gcs_config(admin.member, "transport", "ip_allowlist", None)
    networks = getattr(allowlist, "networks", None)
    if networks is None or allowlist == IpAllowlist.parse("AUTOMATIC"):
        return "AUTOMATIC"
    return ",".join(str(n) for n in networks)


def _text(literal: object) -> object:
    if literal == "DEFAULT":
        return ""
    if not isinstance(literal, str):
        raise BadValue("Incorrect argument type")
    return literal


def _force_members_write(admin: Admin, value: object) -> None:
    """GR's way out of a lost majority (seed "Gone missing"): install the listed members
    (their local_address values) as the group without consensus. Refused while a majority of
    the view is reachable, as GR refuses it. '' does nothing."""
    assert isinstance(value, str)
    member = admin.member
    addresses = [a.strip() for a in value.split(",") if a.strip()]
    if not addresses:
        admin.stored["force_members"] = ""
        return

    def refused(why: str) -> WrongValueForVariable:
        return WrongValueForVariable(f"Variable 'group_replication_force_members' can't be set to the value of "
                                     f"'{value}' ({why})")

    view = member.gcs.current_view()
    if view is None or member.state is not MemberState.ONLINE:
        raise refused("Group Replication is not running on this member")
    by_address = {m.address: m for m in view.members}
    unknown = [a for a in addresses if a not in by_address]
    if unknown:
        raise refused(f"{', '.join(unknown)}: not the local_address of a member of the group")
    if member.gcs.me.address not in addresses:
        raise refused("the list must include this member")
    try:
        member.gcs.force_members(tuple(by_address[a] for a in addresses))
    except GcsError as exc:
        raise refused("it can only be set when a majority of the group is unreachable: "
                      f"{exc.detail or exc.code.value}") from None
    admin.stored["force_members"] = value


def _message_cache_size_write(admin: Admin, value: object) -> None:
    assert isinstance(value, int)
    admin.member.cache.bytes_max = value
    admin.member.reconfigure(message_cache_size=value)


def _compression_threshold_write(admin: Admin, value: object) -> None:
    """From the next message this member sends; later incarnations (rejoins) keep it."""
    assert isinstance(value, int)
    admin.member.reconfigure(compression_threshold=value)


VARIABLES: Mapping[str, Variable] = _variables()


# --- the module's entry point ---------------------------------------------------------------------


class Admin:
    """GR's vocabulary for one member (one per member port, shared by its sessions)."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.stored: dict[str, object] = {}  # force_members: what the last SET GLOBAL gave

    def plan(self, stmt: Statement, sql: str, session: AdminSession) -> Awaitable[None] | None:
        """The coroutine that answers `stmt` (text `sql`), or None when it is not ours. Never
        raises: an error found while planning is what the coroutine answers."""
        try:
            return self._plan(stmt, sql, session)
        except MySQLError as exc:
            return _refuse(exc)

    def _plan(self, stmt: Statement, sql: str, session: AdminSession) -> Awaitable[None] | None:
        kind = stmt.kind
        if kind is Kind.SET:
            if any(a.name.startswith(PREFIX) and a.name in VARIABLES for a in stmt.assignments):
                return self._set(stmt, session)
            return None
        if kind is Kind.ADMIN:
            m = _GROUP_REPLICATION_CONTROL_RE.match(sql)
            if m is not None:
                return self._start_stop(m.group("verb").upper(), session)
            return None
        if kind is Kind.SHOW:
            m = _SHOW_VARIABLES_RE.match(sql)
            if m is not None:
                rewritten = self._show_variables(m, session)
                if rewritten is not None:
                    return session.relay(rewritten)
            return None
        m = _GROUP_ACTION_CALL_RE.match(sql)
        if m is not None:
            return self._group_action(m, session)
        if GROUP_ACTION_RE.search(sql):
            return _refuse(NotSupported(
                "grproxy answers group_replication_set_as_primary() and the mode switches only as a statement "
                "of their own: SELECT group_replication_…(…)"))
        rewritten = sql
        for table, rows in ((GROUP_MEMBERS, group_member_rows), (MEMBER_STATS, member_stats_rows)):
            if _TABLE_PATTERNS[table.name].search(rewritten):
                rewritten = rewrite_table(rewritten, table, rows(self.member))
        tables = rewritten != sql
        rewritten = self._rewrite_reads(rewritten, session)
        if rewritten == sql:
            return None
        if tables:
            # GR never holds reads of performance_schema (they must work on a member that is
            # not ONLINE, at any consistency level).
            return session.relay(rewritten)
        return session.relay_held(stmt, rewritten)

    # variables ---------------------------------------------------------------------------------

    def value(self, name: str) -> str:
        return VARIABLES[name].read(self)

    def _rewrite_reads(self, sql: str, session: AdminSession) -> str:
        """@@[SESSION.|GLOBAL.]group_replication_x → its value as a literal, named as the server
        names the column when it stands alone in the select list. Unknown names are left to the
        backend (which answers 1193)."""
        def sub(m: re.Match[str]) -> str:
            var = VARIABLES.get(m.group("name").lower())
            if var is None:
                return m.group(0)
            scope = (m.group("scope") or "").upper()
            if scope in ("SESSION", "LOCAL") and not var.session:
                raise IncorrectGlobalLocalVar(f"Variable '{var.full_name}' is a GLOBAL variable")
            if var.session and scope != "GLOBAL":
                text = session.consistency.name
            else:
                text = var.read(self)
            if var.number:
                literal = {"ON": "1", "OFF": "0"}.get(text, text)
            else:
                literal = _sql_literal(text)
            after = sql[m.end():].lstrip()
            if not after or after[0] in ",;" or after[:4].upper() == "FROM":
                return f"{literal} AS `{m.group(0)}`"
            return literal

        return _VARIABLE_READ_RE.sub(sub, sql)

    def _show_variables(self, m: re.Match[str], session: AdminSession) -> str | None:
        """SHOW [GLOBAL|SESSION] VARIABLES [LIKE …|WHERE …] → one query over the backend's
        variables and ours (None: a form we do not know; the backend answers it)."""
        scope = (m.group("scope") or "SESSION").upper()
        rest = m.group("rest").strip()
        where = ""
        if rest:
            like = _LIKE_RE.match(rest)
            cond = _WHERE_RE.match(rest)
            if like is not None:
                where = f" WHERE Variable_name LIKE {like.group('pattern')}"
            elif cond is not None:
                where = f" WHERE {cond.group('expr')}"
            else:
                return None
        table = "GLOBAL_VARIABLES" if scope == "GLOBAL" else "SESSION_VARIABLES"
        ours = []
        for var in VARIABLES.values():
            value = session.consistency.name if var.session and scope != "GLOBAL" else var.read(self)
            ours.append(f"SELECT {_sql_literal(var.full_name)}, {_sql_literal(value)}")
        return (f"SELECT Variable_name, Value FROM (SELECT LOWER(VARIABLE_NAME) AS Variable_name, "
                f"VARIABLE_VALUE AS Value FROM information_schema.{table} UNION ALL {' UNION ALL '.join(ours)}) "
                f"AS variables{where} ORDER BY Variable_name")

    async def _set(self, stmt: Statement, session: AdminSession) -> None:
        """SET of GR variables (checked all first, then applied), the rest on the backend."""
        changes: list[tuple[Variable, object, bool]] = []  # (variable, value, global)
        rest: list[Assignment] = []
        for a in stmt.assignments:
            var = VARIABLES.get(a.name)
            if var is None:
                rest.append(a)
                continue
            is_global = a.scope in _GLOBAL_SCOPES
            if not is_global and a.scope is not Scope.SESSION:
                raise WrongValueForVariable(f"Variable '{var.full_name}' cannot be set this way")
            if is_global and not session.is_admin:
                raise SpecificAccessDenied(_ACCESS_DENIED_VARIABLES)
            if var.write is None:
                raise IncorrectGlobalLocalVar(f"Variable '{var.full_name}' is a read only variable")
            if not is_global and not var.session:
                raise GlobalVariable(f"Variable '{var.full_name}' is a GLOBAL variable and should be set with SET GLOBAL")
            assert var.parse is not None
            literal = a.literal if a.literal is not None else a.value
            try:
                value = var.parse(literal)
            except BadValue as exc:
                shown = a.value if a.literal is None else str(literal)
                detail = f" ({exc})" if str(exc) else ""
                raise WrongValueForVariable(f"Variable '{var.full_name}' can't be set to the value of "
                                            f"'{shown}'{detail}") from None
            changes.append((var, value, is_global))
        for var, value, is_global in changes:
            if is_global:
                assert var.write is not None
                var.write(self, value)
            else:
                assert isinstance(value, Level)
                session.consistency = value
        if rest:
            await session.relay("SET " + ", ".join(_replay(a) for a in rest))
        else:
            session.send_ok()

    # group actions ------------------------------------------------------------------------------

    async def _group_action(self, m: re.Match[str], session: AdminSession) -> None:
        fn = m.group("fn").lower()
        name = PREFIX + fn
        expr = m.group("alias") or m.group("expr")
        if expr.startswith(("`", "'")):
            expr = expr[1:-1]
        try:
            args = _parse_args(m.group("args"))
        except ValueError:
            raise CantInitializeUdf(f"Can't initialize function '{name}'; Wrong arguments: the arguments must be "
                                    "literals") from None
        if not session.is_admin:
            raise SpecificAccessDenied(_ACCESS_DENIED)
        action, target = self._action_of(fn, name, args)
        self._check_group(name, target)
        timeout_s = args[1] if fn == "set_as_primary" and len(args) == 2 and isinstance(args[1], int) else None
        outcome = await self.member.group_action(action, target, timeout_s)
        if not outcome.ok:
            raise GroupActionFailed(f"The function '{name}' failed. {outcome.message}")
        session.send_rows([Column(expr, length=255)], [(outcome.message,)])

    def _action_of(self, fn: str, name: str, args: list[str | int]) -> tuple[AdminAction, str]:
        def fail(why: str) -> CantInitializeUdf:
            return CantInitializeUdf(f"Can't initialize function '{name}'; {why}")

        if fn == "set_as_primary":
            if not args or len(args) > 2 or not isinstance(args[0], str) or not args[0]:
                raise fail("Wrong arguments: You need to specify a server uuid.")
            if len(args) == 2 and not (isinstance(args[1], int) and 0 <= args[1] <= 3600):
                raise fail("Wrong arguments: The timeout must be a number between 0 and 3600.")
            return AdminAction.SET_PRIMARY, self._valid_uuid(name, args[0])
        if fn == "switch_to_single_primary_mode":
            if len(args) > 1 or (args and (not isinstance(args[0], str) or not args[0])):
                raise fail("Wrong arguments: This function either takes no arguments or a single server uuid.")
            return AdminAction.SINGLE_PRIMARY, self._valid_uuid(name, args[0]) if args else ""
        if args:
            raise fail("Wrong arguments: This function takes no arguments.")
        return AdminAction.MULTI_PRIMARY, ""

    def _valid_uuid(self, name: str, text: str) -> str:
        """GR checks the uuid's form; grproxy members may be named otherwise in tests, so a
        member of the group is accepted whatever its form."""
        if text in self.member.engine.members:
            return text
        try:
            uuidlib.UUID(text)
        except ValueError:
            raise CantInitializeUdf(f"Can't initialize function '{name}'; Wrong arguments: The server uuid is not "
                                    "valid.") from None
        raise CantInitializeUdf(f"Can't initialize function '{name}'; The requested uuid is not a member of the group.")

    def _check_group(self, name: str, target: str) -> None:
        """GR's preconditions on the member asked (udf_utils: member_online_with_majority …)."""
        def fail(why: str) -> CantInitializeUdf:
            return CantInitializeUdf(f"Can't initialize function '{name}'; {why}")

        member = self.member
        if member.state is not MemberState.ONLINE or not member.has_quorum():
            raise fail("Member must be ONLINE and in the majority partition.")
        records: list[MemberRecord] = member.members()
        if any(r.state is MemberState.RECOVERING for r in records):
            raise fail("A member is joining the group, wait for it to be ONLINE.")
        if any(r.state is MemberState.UNREACHABLE for r in records):
            raise fail("All members in the group must be reachable.")
        if name.endswith("set_as_primary") and not member.engine.single_primary:
            raise fail("In multi-primary mode. Use group_replication_switch_to_single_primary_mode.")
        if target and not any(r.uuid == target and r.state is MemberState.ONLINE for r in records):
            raise fail("A member is joining the group, wait for it to be ONLINE.")

    # START / STOP GROUP_REPLICATION ----------------------------------------------------------------

    async def _start_stop(self, verb: str, session: AdminSession) -> None:
        if not session.is_admin:
            raise SpecificAccessDenied(_ACCESS_DENIED)
        member = self.member
        if verb == "STOP":
            if member.state is not MemberState.OFFLINE:
                await member.stop_group()
            session.send_ok()
            return
        try:
            await member.rejoin()
        except StartRefused as exc:
            if member.in_group:
                raise GroupReplicationRunning("The START GROUP_REPLICATION command failed since the group is "
                                              "already running.") from None
            raise GroupReplicationConfiguration(f"The server is not configured properly to be an active member "
                                                f"of the group. ({exc})") from None
        session.send_ok()


async def _refuse(error: MySQLError) -> None:
    raise error


def _parse_args(text: str) -> list[str | int]:
    """The literal arguments of a function call: 'quoted' strings and integers."""
    text = text.strip()
    if not text:
        return []
    out: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _ARG_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(text)
        if m.group("n") is not None:
            out.append(int(m.group("n")))
        else:
            raw = m.group("s") if m.group("s") is not None else m.group("d")
            out.append(raw.replace("''", "'").replace("\\'", "'").replace("\\\\", "\\"))
        pos = m.end()
    return out


def _replay(a: Assignment) -> str:
    """An assignment written back as SQL (for SETs that mix our variables with others)."""
    scope, name, value = a.scope, a.name, a.value
    if scope is Scope.USER:
        return f"@{name} = {value}"
    if name in ("names", "character set", "transaction"):
        return f"{'' if scope is Scope.SESSION else scope.value + ' '}{name.upper()} {value}"
    return f"{scope.value} {name} = {value}"

