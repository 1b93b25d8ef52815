"""A client session on a member port: statements run on this member, as on a GR member.

Reads, SHOW, SET and everything that cannot change replicated data are relayed exactly as in
`replication.protocol.relay.RelaySession` (same hot path). What a GR member would treat specially takes
the slow path here:

* a statement that may write: refused with 1290 unless the member may write; otherwise
  relayed as it is inside the session's XA transaction on the backend (opened implicitly under
  autocommit, and committed when the statement ends) — CALL, triggers, LOAD DATA LOCAL,
  multi-statements and server-side prepared writes alike: what they changed is read back from
  the binary log at COMMIT (DESIGN §5);
* COMMIT (and every implicit commit): `LocalCommits.commit` (replication/local_commit.py)
  prepares the XA transaction, derives its row changes and write set from the binlog
  (writeset.derive, which refuses GR's unfit tables with 3098), has the group certify it and
  ends it as the group decided; a conflict answers 3101; a transaction that was doomed by a
  remote winner answers 3101 at its next statement;
* ROLLBACK ends the XA transaction (XA ROLLBACK); ROLLBACK TO SAVEPOINT is the server's own
  (the binlog holds only what survived it);
* DDL: implicit commit, then ordered through the group and run in this session at its place
  in the order (`_ddl`, `Member.run_ddl`), then by every other member's applier;
  temporary tables stay session-local (the binlog logs no rows of them);
* refused before they run, because their effect escapes the transaction: a write naming a
  table that is not InnoDB (3098, GR's rule) and MariaDB sequence functions (1235);
* GR's own vocabulary (performance_schema's group tables, group_replication_* variables and
  functions, START/STOP GROUP_REPLICATION) is answered by `replication.admin`: one hook in
  `on_command` hands it every text that mentions it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from replication.protocol.backend import BackendConnection, Sink
from replication.protocol.constants import Cap, Command, Status
from replication.protocol.errors import (
    BackendError,
    CantResetMaster,
    BeforeDmlValidation,
    BackendLost,
    CertificationConflict,
    MySQLError,
    NotSupported,
    ReadOnly,
    ParseError,
    ServerOffline,
    SpecificAccessDenied,
    UnknownStatementHandler,
)
from replication.protocol.packets import frame, ok_payload, read_lenenc_int
from replication.protocol.results import TYPE_LONGLONG, Column, text_resultset
from replication.protocol.scanner import Expect, ResponseScanner
from replication.protocol.relay import ClientLink, Processes, RelaySession

from . import outside_writes
from .admin import Admin, mentions, router_members, server_access_denied, server_privilege, unlogged_setting
from .consistency import Level
from .binlog import XaId
from .local_commit import xa_literal
from .member import DdlNotRun, LocalTxn, Member, StartRefused
from .messages import DDL_CONTEXT_VARIABLES
from .writeset import ddl_tables
from .statements import Kind, Statement, classify, replace_call

log = structlog.get_logger("grproxy.member_session")

IN_TRANS = int(Status.IN_TRANS)
AUTOCOMMIT = int(Status.AUTOCOMMIT)
RECOVERY_PREFIX = b"/* grproxy */ "
PREPARED_WRITES_MAX = 10_000  # prepared write statements tracked per session
AUTO_INCREMENT_INCREMENT = 7  # group_replication_auto_increment_increment's default
ER_LOCK_DEADLOCK = 1213  # InnoDB rolls the whole transaction back
ER_QUERY_INTERRUPTED = 1317  # a statement ended by KILL QUERY
DOOM_TAIL_BYTES = 4_096  # answer bytes held back while a doomed transaction's statement runs (> any ERR packet)
_DOOMED_MESSAGE = "Plugin instructed the server to rollback the current transaction."
REFRESH_MASTER = 0x80  # COM_REFRESH flag: RESET MASTER
LAST_PREPARED = 0xFFFFFFFF  # MariaDB's statement id for "the statement prepared last"
# As a GR member answers: RESET MASTER would delete the binary log the member reads its own
# transactions from (the binlog dump ends with 1236 and every later commit fails).
_RESET_MASTER_REFUSED = "RESET MASTER is not allowed because Group Replication is running."
_ROW_COUNT_RE = re.compile(rb"ROW_COUNT\s*\(", re.IGNORECASE)
ROW_COUNT_SCAN_BYTES = 16_384  # how much of a statement is searched for ROW_COUNT() after an autocommit write
RECOVERY_STATS_COLUMNS = ("RECOVERY_PHASE", "RECOVERY_DONOR", "CLONE_TABLES_DONE", "CLONE_TABLES", "CLONE_ROWS",
                          "CLONE_BYTES", "CLONE_MIB_PER_S", "RECOVERY_TRANSACTIONS_LEFT", "RECOVERY_FETCHED",
                          "RECOVERY_FETCH_TXNS_PER_S", "RECOVERY_CLONES", "CLONES_SERVED")


def recovery_stats(member: Member) -> tuple[object, ...]:
    """MEMBER STATS' recovery columns (RECOVERY_STATS_COLUMNS): the latest joiner's progress."""
    j = member.recovery
    served = member.donor.stats_clones_served
    if j is None:
        return (None, None, 0, 0, 0, 0, "0", 0, 0, "0", 0, served)
    c = j.clone
    now = asyncio.get_running_loop().time()
    return (j.phase.value, j.donor[0] if j.donor else None, c.tables_done, c.tables, c.rows, c.bytes,
            f"{c.mib_per_s(now):.2f}", j.transactions_left, j.fetched, f"{j.fetch_txns_per_s():.1f}", j.clones, served)


def _resets_master(stmt: Statement) -> bool:
    """RESET MASTER (or RESET BINARY LOGS AND GTIDS), alone, in a multi-statement or inside
    PREPARE / EXECUTE IMMEDIATE with a literal."""
    if stmt.verb == "RESET MASTER":
        return True
    return any(_resets_master(p) for p in stmt.parts) or (stmt.inner is not None and _resets_master(stmt.inner))


def _session_setup_sql(member: Member, backend: BackendConnection) -> str:
    """What a client session's backend connection runs first (and after a reset): grproxy's
    GTID domain on MariaDB (replication.outside_writes) and, in multi-primary mode, the
    member's auto-increment settings — one round trip."""
    parts = []
    if backend.handshake is not None and backend.handshake.is_mariadb:
        parts.append(outside_writes.session_sql())
    if not member.engine.single_primary:
        parts.append(member_auto_increment_sql(member))
    return ";".join(parts)


def member_auto_increment_sql(member: Member) -> str:
    """Multi-primary: members' auto-increment values never collide (GR's default step 7)."""
    return (f"SET SESSION auto_increment_increment = {AUTO_INCREMENT_INCREMENT}, "
            f"auto_increment_offset = {member.auto_increment_offset()}")


@dataclass(slots=True)
class _Txn:
    """The session's open XA transaction, which the member controls (replication.local_commit).

    `autocommit`: opened for one statement of an autocommit session (it commits when the
    statement ends, before the client hears the answer). `wrote`: a statement that may write
    ran in it (else it ends with XA COMMIT … ONE PHASE, without the group)."""

    local: LocalTxn
    xid: XaId
    autocommit: bool = False
    wrote: bool = False
    released: bool = False  # doomed and already rolled back on the backend (`_release_doomed`)


class MemberSessionFactory:
    def __init__(self, member: Member, connect_timeout_s: float = 5.0) -> None:
        self.member = member
        self.connect_timeout_s = connect_timeout_s
        self.admin = Admin(member)  # GR's SQL vocabulary, shared by this member's sessions

    async def open_session(
        self, link: ClientLink, processes: Processes, *, capabilities: int, collation: int,
        database: str | None, attrs: dict[str, str], mariadb_capabilities: int = 0,
    ) -> "MemberSession":
        if self.member.offline_mode:
            user = getattr(processes, "users", {}).get(link.username)
            if user is None or not getattr(user, "admin", False):
                raise ServerOffline("The server is currently in offline mode (the group member is in ERROR: "
                                    f"{self.member.error})")
        # The member sends multi-statements of its own (XA END; XA PREPARE; …): the backend
        # connection always allows them; the client's own are refused unless it negotiated them.
        # CLIENT_NO_SCHEMA would make the backend ignore "db." qualifiers: never asked for (the
        # router's sessions drop it too).
        caps = (capabilities | Cap.MULTI_STATEMENTS | Cap.MULTI_RESULTS) & ~Cap.NO_SCHEMA
        backend = await BackendConnection.open(
            self.member.config.backend, capabilities=int(caps), collation=collation, database=database,
            connect_attrs=attrs, timeout_s=self.connect_timeout_s, mariadb_capabilities=mariadb_capabilities,
        )
        try:
            setup = _session_setup_sql(self.member, backend)
            if setup:
                await backend.execute_all(setup)
        except BaseException:
            backend.close()
            raise
        session = MemberSession(link, backend, processes, self.member,
                                client_multi=bool(capabilities & Cap.MULTI_STATEMENTS), admin=self.admin)
        session._auto_increment_set = not self.member.engine.single_primary
        return session


class MemberSession(RelaySession):
    def __init__(self, link: ClientLink, backend: BackendConnection, processes: Processes, member: Member,
                 client_multi: bool, admin: Admin | None = None) -> None:
        super().__init__(link, backend, processes)
        self.member = member
        self.admin = admin if admin is not None else Admin(member)
        # Multi-primary auto-increment settings are on this session's backend connection (the
        # group may switch modes while the session lives: set before its first write then).
        self._auto_increment_set = False
        self.client_multi = client_multi
        self.txn: _Txn | None = None
        # A LOCAL INFILE inside _relay_raw: where the rest of the answer goes once the file is sent.
        self._infile: tuple[Sink, Callable[[ResponseScanner], None], Callable[[bool], None]] | None = None
        self._prepared_writes: set[int] = set()  # prepared statements that may write (run inside XA)
        self._prepared_refused: set[int] = set()
        # Prepared statements a consistency level need not hold (SET, …); every other one is held,
        # so at this set's bound a statement is held rather than let through.
        self._prepared_unheld: set[int] = set()
        # The statement a COM_STMT_EXECUTE with id 0xFFFFFFFF means (MariaDB: the one prepared
        # last); None when unknown (none yet, or the last prepare failed).
        self._last_prepared: int | None = None
        self._pending_prepare: tuple[Statement, str] | None = None
        self._wait_timeout: float | None = None  # cached @@SESSION.wait_timeout (consistency waits)
        self.consistency: Level = member.consistency
        self._schema_known = False
        self._schema_value: str | None = None
        self._row_count: int | None = None  # ROW_COUNT() of the client's previous autocommit write
        # The holder of the tail of the answer being relayed to the client once its transaction
        # is doomed mid-statement (_on_doom, _DoomTail).
        self._doom_tail: _DoomTail | None = None
        self._table_locks = False  # LOCK TABLES held (see _track_table_locks)
        # A DDL running on this session's connection (at its place in the group's order): the
        # connection outlives a client that leaves meanwhile, until the server answered it.
        self._ddl_running = False
        self._close_after_ddl = False

    # --- dispatch -------------------------------------------------------------------------------

    def on_command(self, raw: bytes, last_seq: int = 0) -> None:
        cmd = raw[4] if len(raw) > 4 else -1
        row_count, self._row_count = self._row_count, None
        if row_count is not None and cmd == Command.QUERY and _ROW_COUNT_RE.search(raw, 5, 5 + ROW_COUNT_SCAN_BYTES):
            # The backend's ROW_COUNT() now describes the member's XA COMMIT: answer the
            # client's own (its write's affected rows).
            raw = frame(b"\x03" + replace_call(raw[5:], "ROW_COUNT", row_count), 0)
        if cmd == Command.REFRESH and len(raw) > 5 and raw[5] & REFRESH_MASTER:
            # COM_REFRESH(REFRESH_MASTER) is RESET MASTER: refused as the statement is.
            self._cmd_seq = last_seq
            self._spawn(self._refuse(CantResetMaster(_RESET_MASTER_REFUSED)))
            return
        if cmd in (Command.REFRESH, Command.DEBUG) and not self.is_admin:  # FLUSH … / debug dump
            self._cmd_seq = last_seq
            self._spawn(self._refuse(server_access_denied("RELOAD")))
            return
        if cmd in (Command.INIT_DB, Command.RESET_CONNECTION):
            self._schema_known = False
            self._wait_timeout = None
            if cmd == Command.RESET_CONNECTION:  # the backend rolls back: so do we
                self._table_locks = False
                self._auto_increment_set = False
                self._drop_txn()
                self.backend.drop_deferred()  # an XA START not sent yet: nothing to start now
                self.consistency = self.member.consistency
                self._forget_prepared()  # the backend deallocated them
                self._infile = None
                if _session_setup_sql(self.member, self.backend):  # the reset undoes it: done again
                    self._cmd_seq = last_seq
                    self._spawn(self._reset_connection())
                    return
        if cmd == Command.QUERY:
            sql = raw[5:]
            if sql.startswith(RECOVERY_PREFIX):
                self._cmd_seq = last_seq
                self._spawn(self._recovery_command(sql[len(RECOVERY_PREFIX):].decode("ascii", "replace")))
                return
            stmt = classify(sql)
            if _resets_master(stmt):
                self._cmd_seq = last_seq
                self._spawn(self._refuse(CantResetMaster(_RESET_MASTER_REFUSED)))
                return
            if stmt.kind is Kind.USE or stmt.kind is Kind.MULTI or (stmt.kind is Kind.DDL and stmt.ddl_object in
                                                                   ("DATABASE", "SCHEMA")):
                self._schema_known = False
            if stmt.kind is Kind.SET:
                self._wait_timeout = None
            self._track_table_locks(stmt)
            if stmt.assignments or stmt.kind in (Kind.MULTI, Kind.PREPARE, Kind.EXECUTE):  # SET, SET STATEMENT
                refused = unlogged_setting(stmt)
                if refused is not None:
                    self._cmd_seq = last_seq
                    self._spawn(self._refuse(refused))
                    return
            if mentions(raw):  # GR's vocabulary: replication.admin answers it, or hands it back
                answer = self.admin.plan(stmt, sql.decode("utf-8", "surrogateescape"), self)
                if answer is not None:
                    self._cmd_seq = last_seq
                    self._spawn(answer)
                    return
            refused = self._server_admin_refusal(stmt)
            if refused is not None:
                self._cmd_seq = last_seq
                self._spawn(self._refuse(refused))
                return
            if (self.consistency is not Level.EVENTUAL and stmt.kind in _HELD_KINDS and not self.status & IN_TRANS
                    and self.txn is None):
                self._cmd_seq = last_seq
                self._spawn(self._hold_then(stmt, sql.decode("utf-8", "surrogateescape")))
                return
            if self._needs_member(stmt):
                self._cmd_seq = last_seq
                self._spawn(self._statement(stmt, sql.decode("utf-8", "surrogateescape")))
                return
        elif cmd == Command.STMT_PREPARE:
            self._pending_prepare = (classify(raw[5:]), raw[5:].decode("utf-8", "surrogateescape"))
            if _resets_master(self._pending_prepare[0]):
                self._pending_prepare = None
                self._cmd_seq = last_seq
                self._spawn(self._refuse(CantResetMaster(_RESET_MASTER_REFUSED)))
                return
            refused = unlogged_setting(self._pending_prepare[0]) or self._server_admin_refusal(self._pending_prepare[0])
            if refused is not None:
                self._pending_prepare = None
                self._cmd_seq = last_seq
                self._spawn(self._refuse(refused))
                return
        elif cmd in (Command.STMT_EXECUTE, Command.STMT_CLOSE) and len(raw) >= 9:
            stmt_id = int.from_bytes(raw[5:9], "little")
            if stmt_id == LAST_PREPARED:
                # MariaDB's "the statement prepared last": named by its id from here on, so that
                # what runs is what was classified (a write relayed as a read committed outside
                # the group: fuzzing found it).
                if self._last_prepared is None:
                    self._cmd_seq = last_seq
                    self._spawn(self._refuse(UnknownStatementHandler(
                        "Unknown prepared statement handler (4294967295) given to mysqld_stmt_execute")))
                    return
                stmt_id = self._last_prepared
                raw = raw[:5] + stmt_id.to_bytes(4, "little") + raw[9:]
            if stmt_id in self._prepared_refused and cmd == Command.STMT_EXECUTE:
                self._cmd_seq = last_seq
                self._spawn(self._refuse(NotSupported(
                    "A prepared DDL statement cannot be replicated (DDL is ordered through the group); "
                    "send it as a text statement")))
                return
            write = stmt_id in self._prepared_writes
            if (cmd == Command.STMT_EXECUTE and self.consistency is not Level.EVENTUAL
                    and stmt_id not in self._prepared_unheld and not self.status & IN_TRANS and self.txn is None):
                # A prepared statement starts a transaction as a text one does: held first.
                self._cmd_seq = last_seq
                self._spawn(self._hold_then_execute(raw, write))
                return
            if cmd == Command.STMT_EXECUTE and (write or (self.txn is None and not self.status & (AUTOCOMMIT | IN_TRANS)
                                                          and self.member.may_write())):
                self._cmd_seq = last_seq
                self._spawn(self._prepared_write(raw))
                return
            if cmd == Command.STMT_CLOSE:
                self._prepared_writes.discard(stmt_id)
                self._prepared_unheld.discard(stmt_id)
                self._prepared_refused.discard(stmt_id)
                if self._last_prepared == stmt_id:
                    self._last_prepared = None
        if self.txn is not None and self.txn.local.doomed_by is not None and cmd in (Command.QUERY, Command.STMT_EXECUTE):
            self._cmd_seq = last_seq
            self._spawn(self._doomed())
            return
        super().on_command(raw, last_seq)

    def _transaction_ended_under_us(self, scanner: ResponseScanner) -> None:
        """After a relayed statement. Nothing a client sends ends the member's XA transaction
        behind its back: statements that would end it implicitly are intercepted first, a
        statement's error leaves it open (a deadlock leaves it ROLLBACK ONLY, handled by
        `_deadlocked`), and the server refuses the rest inside XA. So the transaction is never
        dropped on a status flag (a prepare's answer carries none)."""
        if self.txn is not None and not self.status & IN_TRANS and scanner.expect in (Expect.QUERY, Expect.EXECUTE):
            self.status |= IN_TRANS

    def _on_done(self, scanner: ResponseScanner) -> None:
        if self._doom_tail is not None:
            if scanner.infile:
                self._finish_doom_tail(None)  # what was held back goes before the file request
            elif self._finish_doom_tail(scanner):
                # The client heard 3101 for its doomed transaction's killed statement: the
                # command is done once that transaction is rolled back here too.
                if scanner.status_seen:
                    self.status = scanner.status
                self._spawn(self._rollback_quietly())
                return
        self._transaction_ended_under_us(scanner)
        if self.txn is not None and scanner.error is not None and scanner.error[0] == ER_LOCK_DEADLOCK:
            # The client heard 1213; the command is done once our XA transaction is ended too.
            self._spawn(self._deadlocked())
            return
        if scanner.expect == Expect.PREPARE and scanner.prepared is None:
            self._last_prepared = None  # a failed prepare: what 0xFFFFFFFF names is unknown
        if scanner.expect == Expect.PREPARE and scanner.prepared is not None and self._pending_prepare is not None:
            stmt, sql = self._pending_prepare
            stmt_id, _, nparams = scanner.prepared
            self._last_prepared = stmt_id
            for ids in (self._prepared_writes, self._prepared_refused, self._prepared_unheld):
                ids.discard(stmt_id)  # an id the server gives again (after a reset) is a new statement
            if stmt.kind is Kind.DDL:
                self._prepared_refused.add(stmt_id)
            elif (stmt.kind in _WRITE_KINDS or (stmt.kind is Kind.MULTI and not stmt.is_read_only)) \
                    and not stmt.temporary_table:
                if len(self._prepared_writes) < PREPARED_WRITES_MAX:
                    self._prepared_writes.add(stmt_id)
                else:
                    self._prepared_refused.add(stmt_id)
            elif stmt.kind not in _HELD_KINDS and len(self._prepared_unheld) < PREPARED_WRITES_MAX:
                self._prepared_unheld.add(stmt_id)
            self._pending_prepare = None
        super()._on_done(scanner)

    def _on_lost(self, relayed_any: bool) -> None:
        self._finish_doom_tail(None)
        super()._on_lost(relayed_any)

    def _needs_member(self, stmt: Statement) -> bool:
        kind = stmt.kind
        if kind in (Kind.DDL, Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK, Kind.XA) or stmt.writes_sequence:
            return True
        if self._may_write(stmt):
            return True
        if kind is Kind.MULTI and not self.client_multi:
            return True
        if self.txn is not None and (stmt.implicit_commit or self.txn.local.doomed_by is not None):
            return True
        return False

    async def _refuse(self, error: MySQLError) -> None:
        raise error

    def _server_admin_refusal(self, stmt: Statement) -> MySQLError | None:
        """Server administration through the member's all-privileges backend account needs an
        admin user (replication.admin.server_privilege: 1227). BINLOG statements are refused
        for everyone: the row events they replay would commit outside the group (1235)."""
        if stmt.verb == "BINLOG" or any(p.verb == "BINLOG" for p in stmt.parts):
            return NotSupported("This version of grproxy doesn't yet support BINLOG statements from clients (the row "
                                "events they replay would bypass the group)")
        needed = server_privilege(stmt)
        if needed is not None and not self.is_admin:
            return server_access_denied(needed)
        return None

    # --- what replication.admin uses (AdminSession) -----------------------------------------------

    @property
    def is_admin(self) -> bool:
        """Whether the session's user is an `admin` of [[users]] (GR's admin privileges)."""
        user = getattr(self.processes, "users", {}).get(self.link.username)
        return user is not None and bool(getattr(user, "admin", False))

    async def relay(self, sql: str) -> None:
        await self._relay_packet_mode(sql)

    async def relay_held(self, stmt: Statement, sql: str) -> None:
        await self._hold_then(stmt, sql)

    def send_rows(self, columns: Sequence[Column], rows: Sequence[Sequence[object]]) -> None:
        self.link.transport.write(text_resultset(columns, rows, self.status, seq=self._cmd_seq + 1))

    def send_ok(self) -> None:
        self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)

    # --- consistency (replication.consistency) --------------------------------------------------------

    async def _timeout_s(self) -> float:
        """GR bounds consistency waits by the session's wait_timeout."""
        if self._wait_timeout is None:
            r = await self.backend.execute("SELECT @@SESSION.wait_timeout")
            self._wait_timeout = float(r.rows[0][0] or 28800)
        return self._wait_timeout

    async def _hold_then(self, stmt: Statement, sql: str) -> None:
        """Hold a statement that starts a transaction as its level requires, then run it."""
        await self._hold()
        if self._needs_member(stmt):
            await self._statement(stmt, sql)
        else:
            await self._relay_packet_mode(sql)

    async def _hold_then_execute(self, raw: bytes, write: bool) -> bool:
        """COM_STMT_EXECUTE of a prepared statement its level holds: hold, then run it (a write
        inside the session's XA transaction; a read relayed, whose answer then finishes the
        command)."""
        await self._hold()
        if write or (self.txn is None and not self.status & (AUTOCOMMIT | IN_TRANS) and self.member.may_write()):
            return await self._prepared_write(raw)
        self.backend.relay(raw, Expect.EXECUTE, self.link.transport, self._on_done, self._on_lost)
        return True

    async def _hold(self) -> None:
        """What the session's level waits for before a transaction starts (nothing inside one)."""
        if not self.status & IN_TRANS and self.txn is None:
            timeout_s = await self._timeout_s()
            # The backend connection is idle while we hold, and the same wait_timeout is its
            # idle limit: keep it alive meanwhile.
            stop = asyncio.Event()
            keepalive = asyncio.get_running_loop().create_task(self._keep_backend_alive(timeout_s / 3, stop))
            try:
                await self.member.hold_before(self.consistency, timeout_s)
            finally:
                stop.set()  # never cancel it mid-PING: that would poison the connection
                try:
                    await keepalive
                except MySQLError:
                    pass

    async def _keep_backend_alive(self, interval_s: float, stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), max(0.1, interval_s))
                return
            except TimeoutError:
                await self.backend.command(Command.PING)

    async def _prepared_write(self, raw: bytes) -> bool:
        """COM_STMT_EXECUTE of a prepared statement that may write: executed as prepared,
        inside the session's XA transaction."""
        return await self._write(raw, Expect.EXECUTE)

    # --- statements -----------------------------------------------------------------------------

    async def _statement(self, stmt: Statement, sql: str) -> None:
        kind = stmt.kind
        if self.txn is not None and self.txn.local.doomed_by is not None and kind not in (Kind.ROLLBACK,):
            await self._doomed()
            return
        if kind is Kind.XA:
            raise NotSupported("XA statements are not available on a group member: grproxy runs every write "
                               "transaction as an XA transaction of its own")
        if stmt.writes_sequence:
            # A sequence's next value is taken outside the transaction (and logged outside it):
            # it would be a write the group never saw. MySQL has no sequences; GR no rule.
            raise NotSupported("NEXTVAL, SETVAL and NEXT VALUE FOR change a sequence outside the transaction: "
                               "grproxy cannot replicate them")
        if kind is Kind.MULTI and not self.client_multi:
            raise _syntax_error(sql)
        if kind is Kind.DDL:
            await self._ddl(stmt, sql)
            return
        if kind is Kind.BEGIN:
            await self._begin(stmt, sql)
            return
        if kind is Kind.COMMIT:
            if self.txn is None:
                await self._relay_packet_mode(sql)
                return
            await self._commit()
            self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)
            return
        if kind is Kind.ROLLBACK:
            if self.txn is None:
                await self._relay_packet_mode(sql)
                return
            await self._rollback()
            self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)
            return
        if stmt.implicit_commit and self.txn is not None:
            await self._commit()
        if self._may_write(stmt):
            if stmt.tables:
                await self._refuse_non_transactional_targets(stmt)
            await self._write(_frame_query(sql), Expect.QUERY)
            return
        await self._relay_packet_mode(sql)

    async def _refuse_non_transactional_targets(self, stmt: Statement) -> None:
        """GR's before-DML check, for the one unfit table a COMMIT cannot refuse: a write to a
        table whose engine is not InnoDB (MyISAM, …) takes effect at once, outside the XA
        transaction the group decides on, and would be a write the group never saw (the
        member would go to ERROR). The statement's target tables are looked up in the member's
        catalog (on a miss through a connection of the member's own, so that the session's
        diagnostics stay the client's), and such a write is refused with 3098 before it runs.
        Every other unfit table is refused at COMMIT (writeset.derive). Not seen here: a
        trigger or routine writing such a table — the binlog then shows a write outside the
        transaction, and the member goes to ERROR (DESIGN §5: nothing slips through)."""
        schema = await self._schema() if any(ref.schema is None for ref in stmt.tables) else None
        names = [(ref.schema or schema or "", ref.name) for ref in stmt.tables]
        catalog = self.member.local.catalog
        if any(catalog.get(*name) is None for name in names):
            conn = await self.member.connect()
            try:
                await catalog.snapshot(conn, names)
            finally:
                conn.close()
        for name in names:
            meta = catalog.get(*name)
            if meta is not None and meta.table_type == "BASE TABLE" and (meta.engine or "").lower() != "innodb":
                raise BeforeDmlValidation("The table does not comply with the requirements by an external plugin: "
                                          f"{meta.unfit_reason()}")

    def _may_write(self, stmt: Statement) -> bool:
        """Whether the statement must run inside a member-controlled XA transaction: anything
        that may write rows, and — under autocommit=0 on a member that takes writes — any
        statement that starts the implicit transaction (a later write joins it)."""
        if stmt.kind in _WRITE_KINDS and not stmt.temporary_table:
            return True
        if stmt.kind is Kind.MULTI and not stmt.is_read_only:
            return True
        return (self.txn is None and not self.status & (AUTOCOMMIT | IN_TRANS) and stmt.kind in _IMPLICIT_START_KINDS
                and self.member.may_write())

    async def _begin(self, stmt: Statement, sql: str) -> None:
        """BEGIN / START TRANSACTION: an XA transaction of the member's on a member that takes
        writes (READ ONLY ones, and any on a member that does not, run as they are)."""
        if self.txn is not None:
            await self._commit()  # BEGIN commits the open transaction, as in MySQL
        if stmt.begin_read_only or not self.member.may_begin() or self.status & IN_TRANS:
            await self._relay_packet_mode(sql)
            self._table_locks = False  # the server's BEGIN released them
            return
        if self._table_locks:
            # BEGIN releases LOCK TABLES; it becomes XA START here, which would fail under them.
            await self.backend.execute("UNLOCK TABLES")
            self._table_locks = False
        await self._xa_start(autocommit=False)
        self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)

    def _track_table_locks(self, stmt: Statement) -> None:
        """LOCK TABLES held by the session (taken as held once asked for: a failed one keeps
        writes refused until UNLOCK TABLES, never lets one through). BEGIN / START TRANSACTION
        release them too, as on the server (_begin)."""
        for part in stmt.parts or (stmt,):
            if part.kind is Kind.LOCK_TABLES:
                self._table_locks = True
            elif part.kind is Kind.UNLOCK_TABLES or (part.kind is Kind.BEGIN and part is not stmt):
                self._table_locks = False

    async def _xa_start(self, *, autocommit: bool) -> None:
        self.member.check_may_begin()
        if self._table_locks:
            # XA START would fail under LOCK TABLES, and the statement sent behind it would run
            # outside any transaction: committed here only (a write the group never saw).
            raise NotSupported("This version of grproxy doesn't yet support writes under LOCK TABLES on a group "
                               "member (every write transaction runs as XA there, which LOCK TABLES excludes): "
                               "UNLOCK TABLES first, or use a transaction")
        if not self._auto_increment_set and not self.member.engine.single_primary:
            await self._member_auto_increment()  # the group switched to multi-primary since we set it
        xid = self.member.local.new_xid()
        # Sent with the transaction's first statement, whichever path relays it (one round trip
        # less); a transaction that ends before any statement never reaches the backend.
        self.backend.defer(b"\x03" + f"XA START {xa_literal(xid)}".encode())
        self.status |= IN_TRANS
        self.txn = _Txn(self.member.open_txn(on_doom=self._on_doom, thread_id=self.backend.thread_id), xid,
                        autocommit=autocommit)

    async def _write(self, raw: bytes, expect: Expect) -> bool:
        """Run a statement that may write (text `raw` or a COM_STMT_EXECUTE) inside the
        session's XA transaction, opening one if needed. In an autocommit session the
        transaction is committed through the group before the client hears the statement's
        answer (held meanwhile); otherwise the answer is relayed as it comes. Returns True when
        a relay straight to the client finishes the command (its callbacks do)."""
        self.member.check_writable()
        if self.txn is None:
            if self.status & IN_TRANS:
                raise ReadOnly("The MySQL server is running with the --super-read-only option so it cannot execute "
                               "this statement (the transaction began while this member could not take writes: "
                               "ROLLBACK and start it again)")
            await self._xa_start(autocommit=bool(self.status & AUTOCOMMIT))
        txn = self.txn
        assert txn is not None
        txn.wrote = True
        if not txn.autocommit:
            await self._relay_raw(raw, expect, self.link.transport)
            return False
        held = _Held()
        scanner = await self._relay_raw(raw, expect, held)
        if scanner is None:
            return False  # the backend connection was lost: the session is closed
        failed = scanner.error is not None
        try:
            if failed or self.txn is None:
                await self._rollback()
            else:
                await self._commit()
        except MySQLError as exc:
            if not failed:
                raise
            # The statement's own error (held) is the answer; the rollback's only in the log.
            log.warning("autocommit_rollback_failed", conn_id=self.link.conn_id, error=str(exc))
        if failed and txn.local.doomed_by is not None:  # interrupted: it blocked the group's order
            raise CertificationConflict("Plugin instructed the server to rollback the current transaction.")
        held.flush(self.link.transport, self.status)
        if not failed and scanner.ok_prefix:
            # The backend's ROW_COUNT() now describes our XA COMMIT: answer the client's own.
            self._row_count = read_lenenc_int(scanner.ok_prefix, 1)[0]
        return False

    async def _relay_raw(self, raw: bytes, expect: Expect, sink: "Sink") -> ResponseScanner | None:
        """Relay one command to the backend and its answer to `sink`; None if the connection
        broke. LOCAL INFILE: the file request goes to the client, its data to the backend."""
        done: asyncio.Future[ResponseScanner] = asyncio.get_running_loop().create_future()
        lost: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def on_done(sc: ResponseScanner) -> None:
            if not done.done():
                done.set_result(sc)

        def on_lost(relayed: bool) -> None:
            if not lost.done():
                lost.set_result(relayed)

        self.backend.relay(raw, expect, sink, on_done, on_lost)
        while True:
            finished, _ = await asyncio.wait({done, lost}, return_when=asyncio.FIRST_COMPLETED)
            if lost in finished:
                self._finish_doom_tail(None)
                self._on_lost(lost.result())
                return None
            scanner = done.result()
            if not scanner.infile:
                break
            # The server asked for the client's file: pass the request on, then relay the
            # file's packets (on_infile_packet) and resume into the same sink.
            self._finish_doom_tail(None)  # what was held back goes before the request
            if isinstance(sink, _Held):
                sink.flush_request(self.link.transport)
            done = asyncio.get_running_loop().create_future()
            self._infile = (sink, _setter(done), on_lost)
            self.link.begin_infile()
        interrupted = self._finish_doom_tail(scanner)
        if scanner.status_seen:  # else (an ERR) the session's status is what it was
            self.status = scanner.status
        self._transaction_ended_under_us(scanner)
        if interrupted:
            await self._rollback_quietly()  # the client heard 3101: its transaction is over
        elif self.txn is not None and scanner.error is not None and scanner.error[0] == ER_LOCK_DEADLOCK:
            await self._deadlocked()
        return scanner

    def _finish_doom_tail(self, scanner: ResponseScanner | None) -> bool:
        """Send what the doomed-statement sink held back (see _on_doom). A statement of a
        doomed transaction that ended with ERR 1317 — killed by the applier's lock watch —
        answers 3101 instead, as the doom promises. Returns whether it did."""
        tail, self._doom_tail = self._doom_tail, None
        if tail is None:
            return False
        if (scanner is not None and scanner.error is not None and scanner.error[0] == ER_QUERY_INTERRUPTED
                and self.txn is not None and self.txn.local.doomed_by is not None
                and tail.finish(scanner.error_len, b"\xff" + CertificationConflict.errno.to_bytes(2, "little")
                                + b"#" + CertificationConflict.sqlstate.encode() + _DOOMED_MESSAGE.encode())):
            return True
        tail.finish()
        return False

    def on_infile_packet(self, raw: bytes, last: bool) -> None:
        if self._infile is None:
            super().on_infile_packet(raw, last)
            return
        self.backend.relay_more(raw)
        if last:
            sink, on_done, on_lost = self._infile
            self._infile = None
            self.backend.resume_after_infile(sink, on_done, on_lost)

    async def _relay_packet_mode(self, sql: str) -> None:
        """Run a statement the client sent and relay its answer (slow path, after our own work)."""
        await self._relay_raw(_frame_query(sql), Expect.QUERY, self.link.transport)

    async def _commit(self) -> None:
        """End the session's XA transaction: without the group when nothing may have been
        written; otherwise as the group decides (replication.local_commit). Raises 3101, 3100,
        3098, 1235 or the backend's error; the transaction is over either way."""
        txn = self.txn
        if txn is None:
            r = await self.backend.execute("COMMIT")
            self.status = r.status
            return
        if txn.wrote and not self.backend.deferred:
            # Flow control's quota, waited for while the transaction is still open: the
            # applier's lock watch or a remote conflict can doom it meanwhile (then 3101).
            try:
                await self.member.flow_admit(txn.local)
            except MySQLError:  # held past its bound (3100): it ends here
                await self._rollback_quietly()
                raise
            if txn.local.doomed_by is not None:
                await self._doomed()
        self._drop_txn()
        if self._unsent():
            self.status &= ~IN_TRANS
            return
        lit = xa_literal(txn.xid)
        if not txn.wrote:
            results = await self.backend.execute_all(f"XA END {lit};XA COMMIT {lit} ONE PHASE")
            self.status = results[-1].status & ~IN_TRANS
            return
        after = self.consistency.waits_after
        try:
            done = await self.member.local.commit(self.backend, txn.xid, txn.local, ack=after)
        finally:
            self.status &= ~IN_TRANS
        if done.seq is not None and after:
            await self.member.wait_all_applied(done.seq, await self._timeout_s())

    async def _deadlocked(self) -> None:
        """InnoDB chose this transaction as a deadlock victim: a server ends a plain transaction
        there, so end ours (an XA transaction is left ROLLBACK ONLY until XA ROLLBACK)."""
        await self._rollback_quietly()

    async def _rollback(self) -> None:
        txn = self.txn
        if txn is None:
            return
        self._drop_txn()
        try:
            if not txn.released and not self._unsent():
                await self.member.local.rollback(self.backend, txn.xid)
        except BackendError as exc:
            if exc.backend_errno != 1397:  # XAER_NOTA: the server ended it already
                raise
        finally:
            self.status &= ~IN_TRANS

    async def _ddl(self, stmt: Statement, sql: str) -> None:
        """DDL (DESIGN §5). A temporary table's stays in the session. Any other commits the open
        transaction, then runs in this session — its sql_mode, character set, time zone, default
        schema — at its place in the group's order (`Member.run_ddl`); the server's own answer
        (affected rows, info, warnings for SHOW WARNINGS, or its error) reaches the client once
        the DDL settled: recorded here, or its failure told to the group (nobody runs it)."""
        if stmt.temporary_table:
            await self._relay_packet_mode(sql)  # session-local; its rows are not in the binlog
            return
        self.member.check_may_begin()
        if self.txn is not None or self.status & IN_TRANS:
            await self._commit()  # DDL commits implicitly, as in MySQL
        schema = await self._schema() or ""
        r = await self.backend.execute("SHOW SESSION VARIABLES WHERE Variable_name IN ("
                                       + ", ".join(f"'{name}'" for name in (*DDL_CONTEXT_VARIABLES, LAST_GTID))
                                       + ")")
        values = {bytes(row[0]).decode().lower(): bytes(row[1] or b"").decode("utf-8", "replace")  # type: ignore[arg-type]
                  for row in r.rows}
        # MariaDB's: what this session last wrote to the binary log. A DDL that fails after
        # changing something is logged all the same (with its error), and this moves.
        last_gtid = values.get(LAST_GTID)
        context = tuple((name, values[name]) for name in DDL_CONTEXT_VARIABLES
                        if name in values and values[name].isprintable() and not set(values[name]) & {"'", "\\"})
        held = _Held()
        backend = self.backend
        lost_at: list[bool] = []

        async def execute() -> tuple[int, bool]:
            """Run on this session's connection (called by the member at the DDL's seq): the
            server's errno (0: OK), and whether it logged the DDL although it failed. The
            server's answer decides what the group does with the DDL, so a client that leaves
            while it runs does not cut it short (`close` waits for it)."""
            if self.closed or backend.closed:
                raise DdlNotRun("the session is closed")
            loop = asyncio.get_running_loop()
            done: asyncio.Future[ResponseScanner] = loop.create_future()
            lost: asyncio.Future[bool] = loop.create_future()
            self._ddl_running = True  # until its outcome is known: a client leaving waits for it
            try:
                backend.relay(_frame_query(sql), Expect.QUERY, held, _setter(done),
                              lambda relayed: lost.done() or lost.set_result(relayed))
                await asyncio.wait({done, lost}, return_when=asyncio.FIRST_COMPLETED)
                if not done.done():
                    lost_at.append(lost.result())
                    raise BackendLost(f"Lost connection to backend {backend.address} during query")
                scanner = done.result()
                self.status = (scanner.status if scanner.status_seen else self.status) & ~IN_TRANS
                if scanner.error is None:
                    return 0, False
                if last_gtid is None:
                    return scanner.error[0], False  # not MariaDB: its DDL is atomic
                try:
                    r = await backend.execute(f"SELECT @@{LAST_GTID}")
                except (MySQLError, OSError) as exc:
                    lost_at.append(True)
                    raise BackendLost(f"Lost connection to backend {backend.address} after a failed DDL "
                                      f"(whether it changed anything is unknown): {exc}") from exc
                now = r.rows[0][0] if r.rows else None
                return scanner.error[0], bytes(now or b"").decode("ascii", "replace") != last_gtid
            finally:
                self._ddl_running = False
                if self._close_after_ddl:
                    backend.close()

        try:
            await self.member.run_ddl(backend, schema, sql.encode("utf-8", "surrogateescape"), context,
                                      ddl_tables(stmt, schema), execute)
        finally:
            if lost_at:
                self._on_lost(False)
        held.flush(self.link.transport, self.status)

    async def _schema(self) -> str | None:
        """The session's default schema: asked once, and again after anything that may change
        it (USE, COM_INIT_DB, DROP DATABASE, COM_CHANGE_USER, COM_RESET_CONNECTION)."""
        if self._schema_known:
            return self._schema_value
        r = await self.backend.execute("SELECT DATABASE()")
        value = r.rows[0][0] if r.rows else None
        self._schema_value = value.decode("utf-8") if value is not None else None
        self._schema_known = True
        return self._schema_value

    async def _doomed(self) -> None:
        await self._rollback_quietly()
        raise CertificationConflict("Plugin instructed the server to rollback the current transaction.")

    def _on_doom(self) -> None:
        """A remote transaction won keys this transaction wrote, or waits for its locks (the
        applier's lock watch): release its row locks now if the session is idle. The session
        keeps the doomed transaction, so the client's next statement or COMMIT answers 3101.
        A statement of it relaying its answer to the client now may be killed by the lock
        watch: the rest of its answer goes through a _DoomTail, so that the kill's ERR 1317
        reaches the client as 3101 (see _finish_doom_tail)."""
        wake = self.txn.local.flow_wake if self.txn is not None else None
        if wake is not None and not wake.done():
            wake.set_result(None)  # its COMMIT waits for flow control: it ends now, with 3101
        if self._task is None and not self.backend.busy and not self.closed and self.txn is not None:
            self._spawn_internal(self._release_doomed(self.txn))
        elif self._doom_tail is None and not self.closed:
            client = self.link.transport  # only an answer going straight to the client (not a held one)
            wrapped = self.backend.wrap_sink(lambda sink: _DoomTail(sink) if sink is client else sink)
            if isinstance(wrapped, _DoomTail):
                self._doom_tail = wrapped

    async def _release_doomed(self, txn: _Txn) -> None:
        if not self._unsent():
            await self.member.local.rollback(self.backend, txn.xid)
        txn.released = True
        self.member.close_txn(txn.local)  # rolled back on the backend: nothing left to doom

    def _spawn_internal(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:  # noqa: BLE001 - best effort; the next statement reports 3101
                pass
        asyncio.get_running_loop().create_task(run())

    async def _rollback_quietly(self) -> None:
        try:
            await self._rollback()
        except MySQLError:
            pass

    def _drop_txn(self) -> None:
        if self.txn is not None:
            self.member.close_txn(self.txn.local)
            self.txn = None

    def _unsent(self) -> bool:
        """Whether the session's XA START is still deferred (no statement ran in the
        transaction): then it is dropped, and there is nothing to end on the backend."""
        if self.backend.deferred:
            self.backend.drop_deferred()
            return True
        return False

    async def _recovery_command(self, text: str) -> None:
        """grproxy's own commands (admin logins only). `ROUTER ENDPOINT` → this member's id, its
        backend's host and port, its default consistency level and its state. `MEMBER STATS` →
        BEFORE sync points asked for and broadcast (their ratio is the batching). Donor side of
        distributed recovery:
        `RECOVERY …` and `CLONE …` are answered by the member's `Donor` (replication/recovery).
        `MEMBER STATS` also shows the latest recovery's phase and progress (clone rows, bytes,
        tables, MiB/s; transactions left to fetch; transactions/s fetched from a cache)."""
        words = text.split()
        if words == ["ROUTER", "MEMBERS"]:
            # The router's poll (any user: it shows what replication_group_members shows, and
            # whether this member's view has a majority).
            self.send_rows(*router_members(self.member))
            return
        if not self.is_admin:
            raise SpecificAccessDenied("Access denied; you need (at least one of) the grproxy admin privilege(s) for this operation")
        if words == ["MEMBER", "STATS"]:
            m = self.member
            cols = [Column("SYNC_POINT_REQUESTS", TYPE_LONGLONG, 20), Column("SYNC_POINT_BROADCASTS", TYPE_LONGLONG, 20),
                    *(Column(name, length=64) for name in RECOVERY_STATS_COLUMNS)]
            row = (m.stats_sync_requests, m.stats_sync_broadcasts, *recovery_stats(m))
            self.link.transport.write(text_resultset(cols, [row], self.status, seq=self._cmd_seq + 1))
            return
        if words == ["ROUTER", "ENDPOINT"]:
            # For routers: where this member's backend can be read directly (EVENTUAL reads
            # need no member-side enforcement), and the level new sessions here start with.
            b = self.member.config.backend
            cols = [Column("MEMBER_ID", length=255), Column("BACKEND_HOST", length=255),
                    Column("BACKEND_PORT", TYPE_LONGLONG, 20), Column("CONSISTENCY", length=64),
                    Column("MEMBER_STATE", length=64)]
            row = (self.member.config.uuid, b.host, b.port, self.member.consistency.name, self.member.state.value)
            self.link.transport.write(text_resultset(cols, [row], self.status, seq=self._cmd_seq + 1))
            return
        if words and words[0] in ("RECOVERY", "CLONE"):
            columns, rows = await self.member.donor.answer(words, owner=self)  # replication/recovery/donor.py
            self.send_rows(columns, rows)
            return
        if words and words[0] == "GROUP":
            await self._group_command(words[1:])
            return
        raise ParseError(f"Unknown grproxy recovery command: {text[:80]}")

    async def _group_command(self, words: list[str]) -> None:
        """`GROUP STATUS` → this member's id, state, group uuid, GTID set, error;
        `GROUP REBOOT` → bootstrap the group again from this member (whole-group reboot);
        `GROUP REJOIN` → join the group again as a new incarnation (used by `grproxy reboot`);
        `GROUP REJOIN CLONE` → the same, recovering by a clone of a donor's data whatever this
        backend holds (the way back for a backend that took writes the group never saw)."""
        m = self.member
        if words == ["STATUS"]:
            cols = [Column("MEMBER_ID", length=64), Column("MEMBER_STATE", length=32), Column("GROUP_UUID", length=64),
                    Column("GTID_EXECUTED", length=1 << 20), Column("ERROR", length=4096),
                    Column("IN_GROUP", TYPE_LONGLONG, 1)]
            row = (m.config.uuid, m.state.value, m.group_uuid, m.gtid_executed(), m.error, int(m.in_group))
            self.link.transport.write(text_resultset(cols, [row], self.status, seq=self._cmd_seq + 1))
            return
        if words in (["REBOOT"], ["REJOIN"], ["REJOIN", "CLONE"]):
            if words[0] == "REJOIN" and m.in_group:
                self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)  # already back in
                return
            try:
                await (m.reboot() if words == ["REBOOT"] else m.rejoin(clone=words == ["REJOIN", "CLONE"]))
            except StartRefused as exc:
                raise NotSupported(str(exc)) from None
            self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)
            return
        raise ParseError(f"Unknown grproxy group command: GROUP {' '.join(words)[:60]}")

    async def _reset_connection(self) -> None:
        """COM_RESET_CONNECTION: the reset puts the session's gtid_domain_id (and in multi-primary
        mode auto_increment_increment / offset) back to the server's globals, so the member's own
        are set again (else its writes would look written around grproxy, and members would hand
        out colliding auto-increment values)."""
        await self.backend.command(Command.RESET_CONNECTION)
        setup = _session_setup_sql(self.member, self.backend)
        if setup:
            await self.backend.execute_all(setup)
        self._auto_increment_set = not self.member.engine.single_primary
        self.status = AUTOCOMMIT
        self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)

    async def _member_auto_increment(self) -> None:
        await self.backend.execute(member_auto_increment_sql(self.member))
        self._auto_increment_set = True

    async def reset_for_user(self, database: str | None) -> None:
        """COM_CHANGE_USER: a fresh session — no open transaction, nothing cached."""
        self._table_locks = False
        if self.txn is not None:
            self._drop_txn()
        self.backend.drop_deferred()
        await super().reset_for_user(database)
        setup = _session_setup_sql(self.member, self.backend)
        if setup:
            await self.backend.execute_all(setup)
        self._auto_increment_set = not self.member.engine.single_primary
        self._schema_known = False
        self._wait_timeout = None
        self.consistency = self.member.consistency
        self._forget_prepared()  # the reset deallocated them

    def _forget_prepared(self) -> None:
        for ids in (self._prepared_writes, self._prepared_refused, self._prepared_unheld):
            ids.clear()
        self._last_prepared = None

    def close(self) -> None:
        self._drop_txn()
        self.member.donor.release(self)  # a clone this session began (a joiner gone) ends now
        super().close()

    def _close_backend(self) -> None:
        if self._ddl_running:
            # Cut short, the DDL's outcome here would be unknown and the member would have to
            # leave the group (Member.run_local_ddl): it is closed once the server answered.
            self._close_after_ddl = True
            return
        super()._close_backend()


LAST_GTID = "last_gtid"

_HELD_KINDS = frozenset({Kind.SELECT, Kind.DML, Kind.BEGIN, Kind.CALL, Kind.DO, Kind.SHOW})


# Statements that may write rows: they run inside a member-controlled XA transaction. OTHER is
# what the classifier does not understand (never taken for read-only).
_WRITE_KINDS = frozenset({Kind.DML, Kind.CALL, Kind.LOAD_DATA, Kind.EXECUTE, Kind.DO, Kind.HANDLER, Kind.OTHER})
# Under autocommit=0 these start the implicit transaction: it is opened as XA first.
_IMPLICIT_START_KINDS = frozenset({Kind.SELECT, Kind.DML, Kind.CALL, Kind.LOAD_DATA, Kind.EXECUTE, Kind.DO,
                                   Kind.MULTI, Kind.OTHER})


class _DoomTail:
    """The sink of a statement whose transaction was doomed while it ran: passes the answer
    on as it comes except its last DOOM_TAIL_BYTES, so that a terminating ERR packet can still
    be replaced (`finish`). Bounded: never holds more than DOOM_TAIL_BYTES."""

    __slots__ = ("sink", "tail")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.tail = bytearray()

    def write(self, data: bytes) -> None:
        self.tail += data
        over = len(self.tail) - DOOM_TAIL_BYTES
        if over > 0:
            self.sink.write(bytes(self.tail[:over]))
            del self.tail[:over]

    def finish(self, err_len: int = 0, err_payload: bytes = b"") -> bool:
        """Send what is held; with `err_len`, its last err_len bytes (the answer's ERR packet)
        are replaced by `err_payload` framed with the same sequence id. Returns whether the
        replacement was made (not when the ERR packet had already gone out)."""
        data, self.tail = self.tail, bytearray()
        replaced = False
        if 4 <= err_len <= len(data) and data[len(data) - err_len + 4] == 0xFF:
            seq = data[len(data) - err_len + 3]
            data = data[:len(data) - err_len] + frame(err_payload, seq)
            replaced = True
        if data:
            self.sink.write(bytes(data))
        return replaced


class _Held:
    """A sink holding a statement's answer while its autocommit transaction is decided (the
    client must not hear OK before the group certified the write)."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def flush_request(self, transport: Sink) -> None:
        """A LOCAL INFILE request: the client must see it now."""
        transport.write(bytes(self.data))
        self.data.clear()

    def flush(self, transport: Sink, status: int) -> None:
        """Send the held answer, its final OK/EOF showing `status`'s IN_TRANS bit (the
        statement ran inside our XA transaction; the client's session is autocommit)."""
        _patch_final_status(self.data, status)
        transport.write(bytes(self.data))
        self.data.clear()


def _patch_final_status(buf: bytearray, status: int) -> None:
    start = last = 0
    while start + 4 <= len(buf):
        last = start
        start += 4 + int.from_bytes(buf[start:start + 3], "little")
    payload_at = last + 4
    if payload_at >= len(buf):
        return
    head = buf[payload_at]
    at: int | None = None
    if head == 0xFE and int.from_bytes(buf[last:last + 3], "little") < 9:
        at = payload_at + 3  # EOF: 0xFE, warnings(2), status(2)
    elif head in (0x00, 0xFE):
        p = payload_at + 1
        for _ in range(2):  # affected rows, last insert id (length-encoded)
            first = buf[p]
            p += 1 if first < 0xFB else {0xFC: 3, 0xFD: 4, 0xFE: 9}.get(first, 1)
        at = p
    if at is not None and at + 2 <= len(buf):
        old = int.from_bytes(buf[at:at + 2], "little")
        new = (old & ~IN_TRANS) | (status & IN_TRANS)
        buf[at:at + 2] = new.to_bytes(2, "little")


def _setter(fut: "asyncio.Future[ResponseScanner]") -> "Callable[[ResponseScanner], None]":
    def set_result(sc: ResponseScanner) -> None:
        if not fut.done():
            fut.set_result(sc)
    return set_result


def _frame_query(sql: str) -> bytes:
    return frame(b"\x03" + sql.encode("utf-8", "surrogateescape"), 0)


def _syntax_error(sql: str) -> MySQLError:
    """What a server says to a multi-statement text from a client that did not ask for them."""
    near = sql.split(";", 1)[1].strip()[:80] if ";" in sql else ""
    return ParseError("You have an error in your SQL syntax; check the manual that corresponds to your MariaDB "
                      f"server version for the right syntax to use near '{near}'")
