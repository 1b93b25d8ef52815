"""A client session spread over the group's members: the router's I/O shell (DESIGN §6, §7).

Theory of operation
-------------------

Every client command is classified (`replication.statements.classify`, cached) and routed by the
pure policy `router.routing.route(statement, state, topology)`. The decision names a member; the
session sends the client's raw packet to its connection to that member and relays the answer back
byte for byte (`BackendConnection.relay`), then feeds the outcome (ok or not, the server's status
flags) to `SessionState.apply`. The hot path — a connection the session already holds, already in
the session's state — is callbacks only, as in the plain relay.

The slow path (a coroutine) runs when the member connection must first be made or brought up to
date: a connection is taken from the member's pool (`router.pool`) and the session's settings are
replayed on it (`SessionState.replay_sql(since=…)`, one statement at a time: the member sees each
as the client would have sent it, so `SET group_replication_consistency` is enforced there). Each
member connection remembers the state it was last brought to, so only what changed is replayed.

Consistency levels are enforced by the members: the router only carries the session's level to
every member connection it uses (DESIGN §7). A BEFORE read on a secondary therefore waits on that
secondary for the group's sync point; AFTER makes the primary's COMMIT wait for every member.

Failures:
* a refusal of the policy (no primary, nothing ONLINE, the member holding the session's
  transaction or pinned state has gone) is answered with its MySQL error; a refusal naming a lost
  member also drops the session's connection there (`SessionState.member_gone`).
* a member connection that cannot be opened marks the member down in the router for a short
  while and, when nothing had been sent and the session has no state there, the statement is
  routed again (at most `REROUTES_MAX` times). Nothing that was sent is ever re-sent: a statement
  whose connection breaks before any answer gets 2013 and the session goes on; one whose answer
  was partly relayed closes the client connection (its protocol state is unknown). A broken
  connection alone does not mark its member down (that session's own statement may have ended
  it); the next connection the member refuses does.

GR's vocabulary (replication.admin) is answered by members, so texts naming it go to a member
port: never read from a backend directly. The router checks the client's own user for the
statements that need an admin (group actions, SET GLOBAL group_replication_*, START/STOP
GROUP_REPLICATION: 1227 otherwise) — members see the router's account, not the client's. A
group action (`SELECT group_replication_set_as_primary(…)`, the mode switches) runs on the
member the policy picks, like any read, and the router polls the group at once afterwards.
`SET GLOBAL group_replication_*` sets the value on every ONLINE member (through a router a
member's setting is the group's). `START/STOP GROUP_REPLICATION` act on the member they are
routed to (the write member, as through MySQL Router's read-write port).

Direct reads: a plain read (`Rule.READ`) whose effective consistency level needs nothing from
the member (EVENTUAL, AFTER; BEFORE_ON_PRIMARY_FAILOVER on a secondary) and that does not name
what members answer themselves (replication_group_*, group_replication_*, VARIABLES) is
read straight from the chosen member's backend when the router knows its read endpoint
(`Router.endpoints`): one hop instead of two. The member owns every write to its backend; a
read changes nothing, so it may bypass the member. Such connections replay the session's
settings except the consistency level (a plain server has no such variable). If the backend
cannot be reached the read goes through the member port.

Server-side prepared statements are virtualised: the client sees ids the router hands out; each
connection gets the statement prepared lazily the first time it runs there, and its own id is
substituted in COM_STMT_EXECUTE / FETCH / CLOSE / RESET / SEND_LONG_DATA. Parameter types, sent by
the client once, are re-sent to a connection that has not seen them; long data is buffered
(bounded) and sent before the execute to whichever connection runs it.
"""

from __future__ import annotations

import asyncio
import re
import struct
from dataclasses import dataclass, field

import structlog

from replication.admin import GROUP_ACTION_RE, admin_only, mentions, server_access_denied, server_privilege, unlogged_setting
from replication.consistency import VARIABLE as CONSISTENCY
from replication.consistency import Level
from replication.protocol.backend import BackendConnection, Sink
from replication.protocol.constants import MAX_PAYLOAD, Cap, Command, Status
from replication.protocol.errors import (
    BackendError,
    BackendLost,
    BackendUnavailable,
    HoldMemberStatus,
    MalformedPacket,
    MySQLError,
    NotSupported,
    PacketTooLarge,
    SpecificAccessDenied,
    TooManyConnections,
    UnknownStatementHandler,
)
from replication.protocol.packets import eof_payload, frame, ok_payload, parse_err
from replication.protocol.relay import EXPECT_BY_COMMAND, ClientLink, Processes, RelaySession, kill_statement
from replication.protocol.scanner import Expect, ResponseScanner
from replication.statements import Kind, Scope, Statement, classify, replace_call

from router.pool import MemberPool, PoolKey
from router.routing import Decision, Rule, route
from router.service import Router
from router.state import RouterBug, SessionState
from router.topology import MemberId, MemberRole

__all__ = ["RouterFactory", "RouterSession", "PREPARED_STATEMENTS_MAX", "LONG_DATA_BYTES_MAX", "REROUTES_MAX"]

PREPARED_STATEMENTS_MAX = 16_382  # per session, MySQL's max_prepared_stmt_count default
LONG_DATA_BYTES_MAX = 64 << 20  # COM_STMT_SEND_LONG_DATA buffered per statement
REROUTES_MAX = 2  # new routes for one statement after members refused a connection

log = structlog.get_logger("grproxy.router.session")

_COM_QUERY = int(Command.QUERY)
_COM_STMT_EXECUTE = int(Command.STMT_EXECUTE)
_CURSOR_TYPE_READ_ONLY = 0x01
_EXECUTE_HEADER_BYTES = 14  # COM_STMT_EXECUTE with its header: command, id, flags, iteration count
_LAST_PREPARED = 0xFFFFFFFF  # MariaDB: "the statement prepared last" (execute-direct)
_IN_TRANS = int(Status.IN_TRANS)
# An answer that may end a commit at AFTER is held until Router.confirm_after_commit returns; a
# longer one (a large INSERT … RETURNING) goes out as it comes, its check done after it.
HELD_ANSWER_BYTES_MAX = 1 << 16
_AFTER_LEVELS = (Level.AFTER, Level.BEFORE_AND_AFTER)
_READ = classify("SELECT 1")
_COMMIT = classify("COMMIT")
_u32 = struct.Struct("<I")
# Texts members answer themselves (replication_group_*, group_replication_*, VARIABLES: see
# replication.admin.mentions) are never read from a backend directly.
_TEXT_SCAN_BYTES = 16_384  # how much of a statement is searched for them; longer → via the member


@dataclass(slots=True)
class _MemberConn:
    """The session's connection to one member and the session state it was last brought to
    (None: a connection fresh from the pool, at the server's defaults)."""

    conn: BackendConnection
    pool: MemberPool
    synced: SessionState | None = None
    direct: bool = False  # a member's backend, read directly (no consistency variable there)
    prepared: dict[int, int] = field(default_factory=dict)  # client statement id → this connection's
    typed: set[int] = field(default_factory=set)  # client statement ids whose types were sent here


@dataclass(slots=True)
class _Prepared:
    """A client's prepared statement: its text and classification (each connection keeps its
    own id for it in `_MemberConn.prepared`)."""

    sql: bytes
    stmt: Statement
    params: int
    columns: int
    types: bytes | None = None  # the parameter-type block of the last execute that bound types
    long_data: list[bytes] = field(default_factory=list)  # param id (2 bytes) + data, in order
    long_bytes: int = 0
    cursor: tuple[MemberId, _MemberConn] | None = None  # where the open cursor (COM_STMT_FETCH) lives


_CONNECTION_ID_RE = re.compile(rb"\bCONNECTION_ID\s*\(", re.IGNORECASE)


def _sets_group_setting(stmt: Statement) -> bool:
    return any(a.name.startswith("group_replication_") and a.scope in (Scope.GLOBAL, Scope.PERSIST)
               for a in stmt.assignments)


def _direct_text(sql: bytes, start: int = 0) -> bool:
    return len(sql) - start <= _TEXT_SCAN_BYTES and not mentions(sql, start, _TEXT_SCAN_BYTES)


class RouterFactory:
    """Opens a `RouterSession` for each client that logs in on the router's client port."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def open_session(
        self, link: ClientLink, processes: Processes, *, capabilities: int, collation: int,
        database: str | None, attrs: dict[str, str], mariadb_capabilities: int = 0,
    ) -> "RouterSession":
        # Member connections carry the client's own wire settings (answers are relayed as they
        # are); the schema is set by replay, so pooled connections serve any schema.
        caps = (capabilities | Cap.MULTI_RESULTS) & ~(Cap.NO_SCHEMA | Cap.CONNECT_WITH_DB)
        key = PoolKey(int(caps), collation, mariadb_capabilities)
        return await RouterSession.open(link, processes, self.router, key, database)


class RouterSession(RelaySession):
    """One client session over the group (see the module docstring)."""

    @classmethod
    async def open(cls, link: ClientLink, processes: Processes, router: Router, key: PoolKey,
                   database: str | None) -> "RouterSession":
        """Log in: one member connection (a read member's) is made at once, so that an unknown
        database or an unreachable group fails the login. Raises MySQLError."""
        self = cls.__new__(cls)
        self._setup(link, processes, router, key, database)
        for _ in range(REROUTES_MAX + 1):
            d = route(_READ, self.state, router.topology, local=router.local, load=router.load,
                      spread=link.conn_id)
            if d.refusal is not None:
                break
            assert d.target is not None
            try:
                mc = await self._ready(d.target)
            except BackendUnavailable:
                continue
            except BaseException:
                self._release_all()
                raise
            self.backend = mc.conn
            return self
        self._release_all()
        if router.topology.members:
            raise BackendUnavailable("Can't connect to any ONLINE member of the group through grproxy")
        raise BackendUnavailable(f"Can't connect to the group: grproxy has no member table yet "
                                 f"({router.last_poll_error or 'no poll answered'})")

    def _setup(self, link: ClientLink, processes: Processes, router: Router, key: PoolKey,
               database: str | None) -> None:
        self.link = link
        self.processes = processes
        self.router = router
        self.key = key
        self.status = int(Status.AUTOCOMMIT)
        self.closed = False
        self._task: asyncio.Task[None] | None = None
        self._cmd_seq = 0
        self._log = log.bind(conn_id=link.conn_id)
        self.state = SessionState().with_schema(database)
        self.conns: dict[MemberId, _MemberConn] = {}  # member ports
        self.direct: dict[MemberId, _MemberConn] = {}  # members' backends, for direct reads
        self.prepared: dict[int, _Prepared] = {}
        self._next_stmt_id = 1
        self._last_prepared = 0
        self._set_option: bytes | None = None  # COM_SET_OPTION body, for connections made later
        self._current: tuple[Statement | None, MemberId, _MemberConn] | None = None
        self._retry: tuple[bytes, Expect] | None = None  # the current text, while a retry is allowed
        self._retries = 0  # retries of the current command
        self._last_direct = False  # the previous statement ran on a direct (backend) connection
        self._group_action = False  # the current statement is a group action (poll afterwards)
        self._text_checked: tuple[bytes, bool] | None = None  # (COM_QUERY packet, may be read directly)
        # A LOAD DATA LOCAL held at AFTER while the client sends its file: (target, statement,
        # whether a transaction was open); its final answer is held like any other.
        self._infile_after: tuple[MemberId, Statement, bool] | None = None
        self.backend: BackendConnection = None  # type: ignore[assignment]  # set by open()

    # --- dispatch -------------------------------------------------------------------------------

    def on_command(self, raw: bytes, last_seq: int = 0) -> None:
        self._cmd_seq = last_seq
        self._retries = 0
        self._group_action = False
        cmd = raw[4] if len(raw) > 4 else -1
        try:
            if cmd == _COM_QUERY:
                m = kill_statement(raw)
                if m is not None:
                    self._spawn(self._kill_statement(m))
                    return
                stmt = classify(raw[5:])
                member_answered = mentions(raw, 5, _TEXT_SCAN_BYTES)
                self._text_checked = (raw, not member_answered)  # _wants_direct need not search again
                if member_answered:
                    text = raw[5:].decode("utf-8", "surrogateescape")
                    if admin_only(stmt, text) and not self._is_admin():
                        self._spawn(self._refuse_error(SpecificAccessDenied(
                            "Access denied; you need (at least one of) the SUPER or GROUP_REPLICATION_ADMIN "
                            "privilege(s) for this operation")))
                        return
                    if stmt.kind is Kind.SET and _sets_group_setting(stmt):
                        self._spawn(self._set_group_setting(stmt, raw[5:]))
                        return
                    if GROUP_ACTION_RE.search(text):
                        self._group_action = True  # poll the group once it is answered
                needed = server_privilege(stmt)
                if needed is not None and not self._is_admin():
                    # Members take the router's own (admin) account: the client's user is checked here.
                    self._spawn(self._refuse_error(server_access_denied(needed)))
                    return
                unlogged = unlogged_setting(stmt) if stmt.assignments or stmt.parts or stmt.inner else None
                if unlogged is not None:  # EVENTUAL reads reach a backend directly: checked here too
                    self._spawn(self._refuse_error(unlogged))
                    return
                if stmt.session_functions and len(raw) < _TEXT_SCAN_BYTES and _CONNECTION_ID_RE.search(raw, 5):
                    # CONNECTION_ID() is the id the client saw in the handshake: what KILL takes here.
                    raw = frame(b"\x03" + replace_call(raw[5:], "CONNECTION_ID", self.link.conn_id), 0)
                self._statement(stmt, raw, Expect.QUERY)
            elif cmd == _COM_STMT_EXECUTE:
                self._execute(raw)
            elif cmd == Command.STMT_PREPARE:
                self._spawn(self._prepare(raw))
            elif cmd == Command.STMT_FETCH:
                self._fetch(raw)
            elif cmd == Command.STMT_CLOSE:
                self._close_statement(raw)
            elif cmd == Command.STMT_SEND_LONG_DATA:
                self._long_data(raw)
            elif cmd == Command.STMT_RESET:
                self._spawn(self._reset_statement(raw))
            elif cmd == Command.INIT_DB:
                name = raw[5:].decode("utf-8", "surrogateescape")
                self._statement(classify("USE `" + name.replace("`", "``") + "`"), raw, Expect.SIMPLE)
            elif cmd == Command.PING:
                self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)
                self.link.command_done()
            elif cmd == Command.RESET_CONNECTION:
                self._spawn(self._reset_connection())
            elif cmd == Command.SET_OPTION:
                self._spawn(self._set_option_command(raw))
            elif cmd in (Command.CREATE_DB, Command.DROP_DB):
                self._spawn(self._refuse_command(cmd))
            elif cmd in (Command.REFRESH, Command.DEBUG) and not self._is_admin():
                self._spawn(self._refuse_error(server_access_denied("RELOAD")))
            elif cmd in EXPECT_BY_COMMAND:  # FIELD_LIST, STATISTICS, PROCESS_INFO, DEBUG, REFRESH
                self._statement(_READ, raw, EXPECT_BY_COMMAND[cmd])
            else:
                self._spawn(self._local_command(cmd, raw))
        except RouterBug as exc:
            self._bug(exc)

    def _statement(self, stmt: Statement, raw: bytes, expect: Expect) -> None:
        """Route and run one client statement (hot path when its member connection is ready)."""
        router = self.router
        d = route(stmt, self.state, router.topology, local=router.local, load=router.load, spread=self.link.conn_id)
        target = d.target
        if target is None:
            self._refuse(d)
            return
        mc = (self.direct if self._wants_direct(d, raw, 5) else self.conns).get(target)
        if mc is not None and d.finish_on is None and not mc.conn.closed and self._in_sync(mc):
            self._relay(stmt, raw, expect, target, mc)
            return
        self._spawn(self._statement_slow(stmt, raw, expect, d))

    def _wants_direct(self, d: Decision, text: bytes, start: int) -> bool:
        """Whether decision `d` runs on the target's backend directly (see the module
        docstring). `text[start:]` is the statement's SQL, checked for what only members answer."""
        if d.rule is Rule.DIAGNOSTICS:  # SHOW WARNINGS & co: the very connection of the previous statement
            return self._last_direct and d.target == self.state.last_member
        if not (d.rule is Rule.READ and self.router.direct_reads and d.target is not None
                and self._direct_ok(d.target)):
            return False
        checked = self._text_checked
        if checked is not None and checked[0] is text and start == 5:
            return checked[1] and len(text) - start <= _TEXT_SCAN_BYTES
        return _direct_text(text, start)

    def _direct_ok(self, target: MemberId) -> bool:
        """Whether the session's level lets a plain read on `target` skip the member."""
        endpoint = self.router.endpoints.get(target)
        if endpoint is None:
            return False
        level = self.state.consistency if self.state.consistency is not None else endpoint.level
        if level is Level.EVENTUAL or level is Level.AFTER:  # nothing to wait for before a read
            return True
        if level is Level.BEFORE_ON_PRIMARY_FAILOVER:  # only a new primary holds anything
            info = self.router.topology.member(target)
            return info is not None and info.role is MemberRole.SECONDARY
        return False

    def _in_sync(self, mc: _MemberConn) -> bool:
        synced = mc.synced
        state = self.state
        if synced is state:
            return True
        if synced is not None and synced.same_settings(state, consistency=not mc.direct):
            mc.synced = state
            return True
        if synced is None and not state.replay_sql(consistency=not mc.direct):
            mc.synced = state
            return True
        return False

    def _relay(self, stmt: Statement | None, raw: bytes, expect: Expect, target: MemberId, mc: _MemberConn) -> None:
        self._current = (stmt, target, mc)
        self._last_direct = mc.direct
        # A group action is never run again elsewhere after a lost connection (it changes the group).
        self._retry = (raw, expect) if expect is Expect.QUERY and not self._group_action else None
        self.backend = mc.conn
        load = self.router.load
        load[target] = load.get(target, 0) + 1
        was_in_trans = bool(self.status & _IN_TRANS)
        if (stmt is not None and not mc.direct and self._may_commit(stmt, was_in_trans)
                and self._at_after(target)):
            held = _HeldAnswer(self.link.transport)
            mc.conn.relay(raw, expect, held, lambda scanner: self._on_held_done(scanner, held, target, stmt, was_in_trans),
                          self._on_lost)
            return
        mc.conn.relay(raw, expect, self.link.transport, self._on_done, self._on_lost)

    @staticmethod
    def _may_commit(stmt: Statement, in_trans: bool) -> bool:
        """Whether `stmt` may commit a write: a write itself (ROLLBACK aside), or a read-only
        statement that commits the open transaction implicitly (SET autocommit = 1)."""
        if not stmt.is_read_only:
            return stmt.kind is not Kind.ROLLBACK
        return in_trans and stmt.implicit_commit

    def _at_after(self, target: MemberId) -> bool:
        """Whether a commit on `target` would be at AFTER / BEFORE_AND_AFTER: the session's level,
        else the member's default as its read endpoint reports it (unknown without one: not held)."""
        level = self.state.consistency
        if level is None:
            endpoint = self.router.endpoints.get(target)
            level = endpoint.level if endpoint is not None else None
        return level in _AFTER_LEVELS

    def _on_held_done(self, scanner: ResponseScanner, held: "_HeldAnswer", target: MemberId, stmt: Statement,
                      was_in_trans: bool) -> None:
        """The answer to a write at AFTER is complete. If it committed something (no error, and
        no transaction open any more, or a BEGIN that committed the open one), the router stops
        reading from members that did not apply it before the client sees the answer
        (Router.confirm_after_commit)."""
        if scanner.infile:  # the final answer comes after the client's file: held then
            held.release()
            self._infile_after = (target, stmt, was_in_trans)
            self._on_done(scanner)
            return
        committed = scanner.error is None and scanner.status_seen and (
            not scanner.status & _IN_TRANS or (was_in_trans and stmt.kind is Kind.BEGIN))
        overflowed = held.passing
        if not committed or overflowed:
            held.release()
            self._on_done(scanner)
            if committed and overflowed:
                self.router.confirm_after_commit_later(target)  # the answer is out: the next reads at least
            return
        self._spawn(self._confirm_then_done(scanner, held, target))

    async def _confirm_then_done(self, scanner: ResponseScanner, held: "_HeldAnswer", target: MemberId) -> bool:
        """Returns True: `_on_done` finishes the command (see `_spawn`)."""
        try:
            await self.router.confirm_after_commit(target)
        finally:
            held.release()
            self._on_done(scanner)
        return True

    def _on_done(self, scanner: ResponseScanner) -> None:
        if scanner.infile:
            self.link.begin_infile()
            return
        if self._group_action:
            self._group_action = False
            self.router.request_refresh()
        current = self._current
        self._current = None
        if current is None:
            return
        stmt, target, mc = current
        self._unload(target)
        if scanner.status_seen:  # else (an ERR) the session's status is what it was
            self.status = scanner.status
        error = scanner.error
        if stmt is not None:
            try:
                before = self.state
                self.state = before.apply(stmt, error is None, self.status, target)
            except RouterBug as exc:
                self._bug(exc)
                return
            if mc.synced is before or mc.synced is None:
                mc.synced = self.state
        if error is not None and error[0] in (1927, 1053):
            # The connection was killed or its server is shutting down.
            if mc.direct:
                self._forget(target, direct=True, why=f"error {error[0]}")
            else:
                self._drop(target, why=f"error {error[0]}")
        self.link.command_done()

    def _on_lost(self, relayed_any: bool) -> None:
        self._infile_after = None
        if self._group_action:
            self._group_action = False
            self.router.request_refresh()
        current = self._current
        self._current = None
        if current is None:
            return
        stmt, target, mc = current
        retry = self._retry
        self._retry = None
        self._unload(target)
        if mc.direct:
            had_state = False
            self._forget(target, direct=True, why="backend connection lost during a read")
        else:
            had_state = self._has_state_on(target)
            # Not marked down: one session's connection may end for that session's own reasons
            # (its statement, a KILL), and every other client would be routed around a healthy
            # member (fuzzing found a 2 s write outage). A member that is really gone refuses
            # the next connection, which marks it down (_acquire), as MySQL Router quarantines
            # a destination on failed connects.
            self._drop(target, why="connection lost during a statement")
        self._log.warning("member_lost", member=target, mid_result=relayed_any)
        if relayed_any:
            self.close()  # part of an answer reached the client: its protocol state is unknown
            return
        if retry is not None and stmt is not None and stmt.is_read_only and not had_state and self._retries < REROUTES_MAX:
            # A read with no answer yet, outside any transaction or pinned state: running it
            # again elsewhere cannot change anything (a write is never retried).
            self._retries += 1
            try:
                self._statement(stmt, *retry)
            except RouterBug as exc:
                self._bug(exc)
            return
        self.link.send_error(BackendLost(
            f"Lost connection to member {target} during query; the statement may or may not have run there "
            "and was not retried (an open transaction there is rolled back)"), self._cmd_seq + 1)
        self.link.command_done()

    def _unload(self, target: MemberId) -> None:
        load = self.router.load
        n = load.get(target, 0)
        if n > 1:
            load[target] = n - 1
        else:
            load.pop(target, None)

    def _refuse(self, d: Decision) -> None:
        self._refuse_packet(d)
        self.link.command_done()

    # --- slow path ------------------------------------------------------------------------------

    async def _statement_slow(self, stmt: Statement, raw: bytes, expect: Expect, d: Decision) -> bool:
        got = await self._connect_routed(stmt, d, raw, 5)
        if got is None:
            return False
        self._relay(stmt, raw, expect, *got)
        return True

    async def _connect_routed(self, stmt: Statement, d: Decision, text: bytes,
                              start: int) -> tuple[MemberId, _MemberConn] | None:
        """The connection decision `d` runs on, made ready (`_ready`); a member that refuses a
        new connection has the statement routed again, at most REROUTES_MAX times (nothing was
        sent). None when the decision (or a new one) is a refusal: the ERR is sent. `text` and
        `start` as for `_wants_direct`."""
        for attempt in range(REROUTES_MAX + 1):
            if d.refusal is not None:
                self._refuse_packet(d)
                return None
            if d.finish_on is not None:
                await self._finish_on(d.finish_on)
            assert d.target is not None
            try:
                return d.target, await self._ready(d.target, direct=self._wants_direct(d, text, start))
            except BackendUnavailable:
                if attempt == REROUTES_MAX:
                    raise
                d = self._route(stmt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _route(self, stmt: Statement) -> Decision:
        r = self.router
        return route(stmt, self.state, r.topology, local=r.local, load=r.load, spread=self.link.conn_id)

    async def _finish_on(self, member: MemberId) -> None:
        """Commit the session's read-only transaction on `member` (Decision.finish_on)."""
        mc = self.conns.get(member)
        if mc is None or mc.conn.closed:
            self._drop(member, why="connection gone")
            return
        result = await mc.conn.execute("COMMIT")
        before = self.state
        self.state = before.apply(_COMMIT, True, result.status, member)
        if mc.synced is before:
            mc.synced = self.state

    async def _ready(self, target: MemberId, *, direct: bool = False) -> _MemberConn:
        """The session's connection to `target` (`direct`: to its backend, falling back to the
        member port when that cannot be had), made if needed and brought to the session's
        state. Raises BackendUnavailable (the member is marked down) when a new connection
        cannot be made, BackendLost when the connection holding the session's transaction or
        pinned state there is gone, or the member's error for a replayed setting."""
        if direct:
            try:
                return await self._connection(target, direct=True)
            except (BackendUnavailable, TooManyConnections, BackendError) as exc:
                self._log.info("direct_read_unavailable", member=target, error=exc.message)
        return await self._connection(target, direct=False)

    async def _connection(self, target: MemberId, *, direct: bool) -> _MemberConn:
        conns = self.direct if direct else self.conns
        mc = conns.get(target)
        if mc is not None and mc.conn.closed:
            had_state = not direct and self._has_state_on(target)
            self._forget(target, direct=direct, why="connection closed while idle")
            if had_state:
                raise BackendLost(f"Lost connection to member {target}: the session's transaction or "
                                  "connection-local state there is gone; the session must start over")
            mc = None
        if mc is None:
            mc = await self._acquire(target, direct)
            conns[target] = mc
            if self.closed:  # the client left while we waited
                self._release_all()
                raise BackendLost("client gone")
            if self._set_option is not None:
                await mc.conn.command(Command.SET_OPTION, self._set_option)
        if mc.synced is not self.state:
            state = self.state
            for sql in state.replay_sql(since=mc.synced, consistency=not direct):
                try:
                    await mc.conn.execute(sql)
                except BackendError:
                    self._forget(target, direct=direct, why="replay failed")
                    raise
            mc.synced = state
        return mc

    async def _acquire(self, target: MemberId, direct: bool) -> _MemberConn:
        """A connection from the pool: to `target`'s member port, or to its backend (`direct`)."""
        if direct:
            pool = self.router.direct_pool(target)
            if pool is None:
                raise BackendUnavailable(f"no read endpoint known for member {target}")
            conn = await pool.acquire(self.key)
        else:
            info = self.router.topology.member(target)
            if info is None:
                raise BackendUnavailable(f"member {target} is not in the group")
            pool = self.router.pool(info)
            try:
                conn = await pool.acquire(self.key)
            except BackendUnavailable as exc:
                self.router.mark_down(target, exc.message)
                raise
        conn.on_pause_writing = lambda: self.link.pause_reading("backend")
        conn.on_resume_writing = lambda: self.link.unpause_reading("backend")
        return _MemberConn(conn, pool, direct=direct)

    def _forget(self, member: MemberId, *, direct: bool, why: str) -> None:
        """Close the session's connection to `member` (member port or backend)."""
        mc = (self.direct if direct else self.conns).pop(member, None)
        if mc is None:
            return
        mc.pool.release(mc.conn, self.key, reusable=False)
        self._log.info("backend_connection_dropped" if direct else "member_connection_dropped", member=member,
                       why=why)
        for p in self.prepared.values():
            if p.cursor is not None and p.cursor[1] is mc:
                p.cursor = None

    def _has_state_on(self, member: MemberId) -> bool:
        s = self.state
        return ((s.transaction is not None and s.transaction.member == member)
                or (s.pin is not None and s.pin.member == member)
                or (s.next_transaction is not None and s.next_transaction.member == member))

    def _drop(self, member: MemberId, *, why: str) -> None:
        """Close the session's connection to `member`; what lived there is gone."""
        self._forget(member, direct=False, why=why)
        self._forget(member, direct=True, why=why)
        self.state = self.state.member_gone(member)

    def _bug(self, exc: RouterBug) -> None:
        self._log.error("router_bug", error=str(exc))
        self.link.send_error(MySQLError(f"grproxy internal error: {exc}"), self._cmd_seq + 1)
        self.close()

    # --- prepared statements --------------------------------------------------------------------

    async def _prepare(self, raw: bytes) -> bool:
        if len(raw) - 4 >= MAX_PAYLOAD:
            raise PacketTooLarge("grproxy does not prepare statements of 16 MiB or more")
        if len(self.prepared) >= PREPARED_STATEMENTS_MAX:
            raise MySQLError(f"Can't create more than max_prepared_stmt_count statements (current value: "
                             f"{PREPARED_STATEMENTS_MAX})")
        sql = raw[5:]
        stmt = classify(sql)
        needed = server_privilege(stmt)
        if needed is not None and not self._is_admin():
            raise server_access_denied(needed)
        unlogged = unlogged_setting(stmt)
        if unlogged is not None:
            raise unlogged
        d = self._route(stmt)
        if d.target is None:  # preparing changes nothing: any member that can run it will do
            d = self._route(_READ)
        if d.refusal is not None:
            self._refuse_packet(d)
            return False
        assert d.target is not None
        mc = await self._ready(d.target)
        payloads = await _prepare_on(mc.conn, sql)
        first = payloads[0]
        if first[:1] == b"\xff":
            for i, p in enumerate(payloads):
                self.link.send_packet(p, self._cmd_seq + 1 + i)
            return False
        real = _u32.unpack_from(first, 1)[0]
        columns, params = struct.unpack_from("<HH", first, 5)
        vid = self._next_stmt_id
        self._next_stmt_id = vid + 1 if vid < 0xFFFFFFFE else 1
        self.prepared[vid] = _Prepared(bytes(sql), stmt, params, columns)
        mc.prepared[vid] = real
        self._last_prepared = vid
        payloads[0] = first[:1] + _u32.pack(vid) + first[5:]
        for i, p in enumerate(payloads):
            self.link.send_packet(p, self._cmd_seq + 1 + i)
        return False

    def _refuse_packet(self, d: Decision) -> None:
        assert d.refusal is not None
        if d.lost is not None:
            self._drop(d.lost, why="member left the group")
        self.link.send_packet(d.refusal.to_payload(), self._cmd_seq + 1)

    def _statement_of(self, raw: bytes, command: str) -> tuple[int, _Prepared]:
        if len(raw) < 9:
            raise UnknownStatementHandler(f"Unknown prepared statement handler given to {command}")
        vid = _u32.unpack_from(raw, 5)[0]
        if vid == _LAST_PREPARED:
            vid = self._last_prepared
        p = self.prepared.get(vid)
        if p is None:
            raise UnknownStatementHandler(f"Unknown prepared statement handler ({vid}) given to {command}")
        return vid, p

    def _all_conns(self) -> list[_MemberConn]:
        return [*self.conns.values(), *self.direct.values()]

    def _execute(self, raw: bytes) -> None:
        try:
            vid, p = self._statement_of(raw, "mysqld_stmt_execute")
            if len(raw) < _EXECUTE_HEADER_BYTES:  # no flags / iteration count: as a server answers
                raise MalformedPacket("Malformed communication packet")
        except MySQLError as exc:
            self.link.send_error(exc, self._cmd_seq + 1)
            self.link.command_done()
            return
        bound_at = 14 + (p.params + 7) // 8  # the new-params-bound flag's offset in `raw`
        binds = p.params > 0 and len(raw) > bound_at and raw[bound_at] == 1
        if binds and len(raw) >= bound_at + 1 + 2 * p.params:  # a cut-off type block is not kept
            p.types = raw[bound_at + 1:bound_at + 1 + 2 * p.params]
        router = self.router
        d = route(p.stmt, self.state, router.topology, local=router.local, load=router.load, spread=self.link.conn_id)
        target = d.target
        if target is None:
            self._refuse(d)
            return
        mc = (self.direct if self._wants_direct(d, p.sql, 0) else self.conns).get(target)
        if mc is not None and d.finish_on is None and not p.long_data and not mc.conn.closed:
            real = mc.prepared.get(vid)
            if (real is not None and (binds or p.params == 0 or vid in mc.typed) and self._in_sync(mc)):
                self._run_execute(vid, p, raw, real, target, mc, binds)
                return
        self._spawn(self._execute_slow(vid, p, raw, d, binds))

    def _run_execute(self, vid: int, p: _Prepared, raw: bytes, real: int, target: MemberId, mc: _MemberConn,
                     binds: bool) -> None:
        if binds:
            mc.typed.add(vid)
        if raw[9] & _CURSOR_TYPE_READ_ONLY:
            p.cursor = (target, mc)
        self._relay(p.stmt, raw[:5] + _u32.pack(real) + raw[9:], Expect.EXECUTE, target, mc)

    async def _execute_slow(self, vid: int, p: _Prepared, raw: bytes, d: Decision, binds: bool) -> bool:
        got = await self._connect_routed(p.stmt, d, p.sql, 0)
        if got is None:
            return False
        target, mc = got
        real = mc.prepared.get(vid)
        if real is None:
            payloads = await _prepare_on(mc.conn, p.sql)
            if payloads[0][:1] == b"\xff":
                errno, sqlstate, message = parse_err(payloads[0])
                raise BackendError(errno, sqlstate, message)
            real = _u32.unpack_from(payloads[0], 1)[0]
            mc.prepared[vid] = real
        if p.long_data:
            if p.long_bytes > LONG_DATA_BYTES_MAX:
                p.long_data.clear()
                p.long_bytes = 0
                raise PacketTooLarge(f"grproxy buffers at most {LONG_DATA_BYTES_MAX} bytes of long data per statement")
            for chunk in p.long_data:
                mc.conn.write_packet(bytes((Command.STMT_SEND_LONG_DATA,)) + _u32.pack(real) + chunk, 0)
            p.long_data.clear()
            p.long_bytes = 0
        if p.params and not binds and vid not in mc.typed:
            raw = self._with_types(p, raw)
            binds = True
        self._run_execute(vid, p, raw, real, target, mc, binds)
        return True

    def _with_types(self, p: _Prepared, raw: bytes) -> bytes:
        """The execute packet with the statement's parameter types bound (for a connection whose
        copy of the statement has not received them)."""
        if p.types is None or len(raw) - 4 >= MAX_PAYLOAD:
            raise MySQLError("grproxy cannot send this statement's parameter types to another member "
                             "(re-execute it with its types bound)")
        bound_at = 14 + (p.params + 7) // 8
        payload = raw[4:bound_at] + b"\x01" + p.types + raw[bound_at + 1:]
        return frame(payload, 0)

    def _fetch(self, raw: bytes) -> None:
        try:
            vid, p = self._statement_of(raw, "mysqld_stmt_fetch")
            cursor = p.cursor
            real = cursor[1].prepared.get(vid) if cursor is not None else None
            if cursor is None or real is None or cursor[1].conn.closed:
                raise MySQLError("The statement has no open cursor (or the member holding it is gone)")
        except MySQLError as exc:
            self.link.send_error(exc, self._cmd_seq + 1)
            self.link.command_done()
            return
        self._relay(None, raw[:5] + _u32.pack(real) + raw[9:], Expect.FETCH, cursor[0], cursor[1])

    def _close_statement(self, raw: bytes) -> None:
        vid = _u32.unpack_from(raw, 5)[0] if len(raw) >= 9 else 0
        if self.prepared.pop(vid, None) is not None:
            for mc in self._all_conns():
                real = mc.prepared.pop(vid, None)
                mc.typed.discard(vid)
                if real is not None and not mc.conn.closed and not mc.conn.busy:
                    mc.conn.write_packet(bytes((Command.STMT_CLOSE,)) + _u32.pack(real), 0)
        self.link.command_done()  # COM_STMT_CLOSE has no answer

    def _long_data(self, raw: bytes) -> None:
        vid = _u32.unpack_from(raw, 5)[0] if len(raw) >= 9 else 0
        p = self.prepared.get(vid)
        if p is not None:  # no answer either way; an unknown statement fails at execute
            p.long_bytes += len(raw) - 9
            if p.long_bytes <= LONG_DATA_BYTES_MAX:
                p.long_data.append(raw[9:])
        self.link.command_done()

    async def _reset_statement(self, raw: bytes) -> None:
        vid, p = self._statement_of(raw, "mysqld_stmt_reset")
        p.long_data.clear()
        p.long_bytes = 0
        for mc in self._all_conns():
            real = mc.prepared.get(vid)
            if real is not None and not mc.conn.closed:
                await mc.conn.command(Command.STMT_RESET, _u32.pack(real))
        p.cursor = None
        self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)

    # --- session commands -----------------------------------------------------------------------

    async def _reset_connection(self) -> None:
        """COM_RESET_CONNECTION: every member connection is reset; the schema stays."""
        await self._reset_all()
        self.state = SessionState().with_schema(self.state.schema)
        self.status = int(Status.AUTOCOMMIT)
        self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)

    async def reset_for_user(self, database: str | None) -> None:
        """COM_CHANGE_USER: a fresh session state on every member connection, then `database`."""
        await self._reset_all()
        self.state = SessionState().with_schema(database)
        self.status = int(Status.AUTOCOMMIT)
        if database and self.conns:
            member = next(iter(self.conns))
            await self._ready(member)  # an unknown database fails here, as on a server

    async def _reset_all(self) -> None:
        """Reset every member connection; direct connections go back to their pools (which
        reset them) and are taken afresh when needed."""
        self.prepared.clear()
        for member, mc in list(self.direct.items()):
            del self.direct[member]
            mc.pool.release(mc.conn, self.key, reusable=True)
        for member, mc in list(self.conns.items()):
            if self.closed:  # the client left: its connections went back to their pools
                raise BackendLost("client gone")
            mc.prepared.clear()
            mc.typed.clear()
            try:
                await mc.conn.command(Command.RESET_CONNECTION)
            except (MySQLError, OSError):
                self._drop(member, why="reset failed")
                continue
            schema = mc.synced.schema if mc.synced is not None else None
            mc.synced = SessionState().with_schema(schema)
        self.state = SessionState().with_schema(self.state.schema)

    async def _set_option_command(self, raw: bytes) -> None:
        """COM_SET_OPTION (multi-statements on/off) applies to every member connection."""
        body = raw[5:]
        for mc in self._all_conns():
            if not mc.conn.closed:
                await mc.conn.command(Command.SET_OPTION, body)
        self._set_option = body
        self.link.send_packet(eof_payload(self.status), self._cmd_seq + 1)

    def _is_admin(self) -> bool:
        user = getattr(self.processes, "users", {}).get(self.link.username)
        return user is not None and bool(getattr(user, "admin", False))

    async def _refuse_error(self, error: MySQLError) -> None:
        raise error

    async def _set_group_setting(self, stmt: Statement, sql: bytes) -> None:
        """`SET GLOBAL group_replication_… = …` through the router sets the value on every
        ONLINE member (in GR it is per member; through a router it is the group's). The router
        checked the client's privilege; a member's refusal (read-only variable, bad value) is
        the answer, naming the members it was already set on."""
        if len(stmt.assignments) != 1:
            raise NotSupported("Set a global group_replication_ variable in a SET statement of its own")
        text = sql.decode("utf-8", "surrogateescape")
        done: list[str] = []
        for info in self.router.topology.online():
            mc = await self._ready(info.member_id)
            try:
                result = await mc.conn.execute(text)
            except BackendError as exc:
                if done:
                    exc.message += f" (already set on member(s) {', '.join(done)})"
                raise
            done.append(info.member_id)
            self.status = result.status
            if stmt.assignments[0].name == CONSISTENCY:
                self.router.default_level_set(info.member_id, stmt.assignments[0].literal)
        if not done:
            raise HoldMemberStatus("No member of the group is ONLINE: the setting was not changed")
        self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)

    async def _refuse_command(self, cmd: int) -> None:
        raise NotSupported(f"grproxy does not route {Command(cmd).name}; use CREATE DATABASE / DROP DATABASE")

    def on_infile_packet(self, raw: bytes, last: bool) -> None:
        current = self._current
        if current is None:
            return
        conn = current[2].conn
        conn.relay_more(raw)
        if last:
            after, self._infile_after = self._infile_after, None
            if after is None:
                conn.resume_after_infile(self.link.transport, self._on_done, self._on_lost)
                return
            target, stmt, was_in_trans = after
            held = _HeldAnswer(self.link.transport)
            conn.resume_after_infile(held, lambda scanner: self._on_held_done(scanner, held, target, stmt, was_in_trans),
                                     self._on_lost)

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        if self._current is not None:
            self._unload(self._current[1])
            self._current = None
        self._release_all()
        self.link.close()

    def _release_all(self) -> None:
        """Member connections go back to their pools, except those holding a transaction or
        pinned state (closed: the rule of router.pool). Direct connections only ever read."""
        for member, mc in list(self.conns.items()):
            reusable = not self._has_state_on(member) and not mc.conn.busy
            mc.pool.release(mc.conn, self.key, reusable=reusable)
        for mc in self.direct.values():
            mc.pool.release(mc.conn, self.key, reusable=not mc.conn.busy)
        self.conns.clear()
        self.direct.clear()


class _HeldAnswer:
    """A relay sink that keeps an answer until `release` (see RouterSession._on_held_done); past
    HELD_ANSWER_BYTES_MAX bytes it lets everything through (`passing`)."""

    __slots__ = ("sink", "parts", "size", "passing")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.parts: list[bytes] = []
        self.size = 0
        self.passing = False

    def write(self, data: bytes) -> None:
        if self.passing:
            self.sink.write(data)
            return
        self.parts.append(bytes(data))
        self.size += len(data)
        if self.size > HELD_ANSWER_BYTES_MAX:
            self.release()

    def release(self) -> None:
        if self.parts:
            self.sink.write(b"".join(self.parts))
            self.parts = []
        self.passing = True


async def _prepare_on(conn: BackendConnection, sql: bytes) -> list[bytes]:
    """COM_STMT_PREPARE in packet mode: every payload of the answer (an ERR, or the prepare OK
    followed by parameter and column definitions, each list ended by an EOF)."""
    if conn.busy:
        raise RouterBug("[BUG] prepare on a member connection with a command in flight")
    try:
        conn.write_packet(bytes((Command.STMT_PREPARE,)) + sql, 0)
        _, first = await conn.read_packet()
        payloads = [first]
        if first[:1] != b"\x00":
            return payloads
        columns, params = struct.unpack_from("<HH", first, 5)
        for count in (params, columns):
            if count:
                for _ in range(count + 1):  # definitions, then EOF
                    _, p = await conn.read_packet()
                    payloads.append(p)
        return payloads
    except BaseException:
        conn.close()
        raise

