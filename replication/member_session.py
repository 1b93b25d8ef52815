"""A client session on a member port: statements run on this member, as on a GR member.

Reads, SHOW, SET and everything that cannot change replicated data are relayed exactly as in
`replication.protocol.relay.RelaySession` (same hot path). What a GR member would treat specially takes
the slow path here:

* DML: refused with 1290 unless the member may write; otherwise run with capture inside the
  session's backend transaction (opened implicitly under autocommit), collecting row changes
  and write-set keys;
* COMMIT (and every implicit commit) of a transaction with changes: certification through the
  group (`Member.certify_local`), then the backend COMMIT with the position row; a conflict
  rolls back and answers 3101; a transaction that was doomed by a remote winner answers 3101
  at its next statement;
* ROLLBACK / ROLLBACK TO SAVEPOINT drop the changes captured since;
* DDL: implicit commit, then ordered through the group and run by every member's applier;
  temporary tables stay session-local;
* writes through server-side prepared statements are executed as the equivalent text with
  exact literals (replication.protocol.params), then captured like any DML;
* CALL, LOAD DATA and multi-statement writes are refused with 1235 (their effects cannot be
  captured faithfully yet), never replicated wrongly;
* GR's own vocabulary (performance_schema's group tables, group_replication_* variables and
  functions, START/STOP GROUP_REPLICATION) is answered by `replication.admin`: one hook in
  `on_command` hands it every text that mentions it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from replication.protocol.backend import BackendConnection
from replication.protocol.constants import Cap, Command, Status
from replication.gcs.interface import ViewId
from replication.protocol.errors import (
    BackendError,
    CertificationConflict,
    HookError,
    MalformedPacket,
    MySQLError,
    NotSupported,
    ParseError,
    ServerOffline,
    SpecificAccessDenied,
)
from replication.protocol.packets import frame, ok_payload
from replication.protocol.params import PreparedWrite, bind_execute
from replication.protocol.results import TYPE_LONGLONG, Column, text_resultset
from replication.protocol.scanner import Expect, ResponseScanner
from replication.protocol.relay import ClientLink, Processes, RelaySession

from .capture import Captured
from .admin import Admin, mentions, router_members
from .consistency import Level
from .certifier import KeyHash, Seq
from .member import LocalTxn, Member, StartRefused
from .statements import Kind, Statement, classify, replace_call

log = structlog.get_logger("grproxy.member_session")

IN_TRANS = int(Status.IN_TRANS)
AUTOCOMMIT = int(Status.AUTOCOMMIT)
RECOVERY_PREFIX = b"/* grproxy */ "
PREPARED_WRITES_MAX = 10_000
TEMPORARY_TABLES_MAX = 10_000  # tracked per session (writes to them are not replicated)  # prepared write statements per session
LONG_DATA_BYTES_MAX = 1 << 30  # COM_STMT_SEND_LONG_DATA kept per prepared write
RECOVERY_SEQS_PER_REQUEST_MAX = 10_000
AUTO_INCREMENT_INCREMENT = 7
ER_LOCK_DEADLOCK = 1213  # InnoDB rolls the whole transaction back  # group_replication_auto_increment_increment's default
TXN_CHANGES_MAX = 1_000_000  # row changes in one transaction; more → 3100 (size limit)
_ROW_COUNT_RE = re.compile(rb"ROW_COUNT\s*\(", re.IGNORECASE)
ROW_COUNT_SCAN_BYTES = 16_384  # how much of a statement is searched for ROW_COUNT() after a captured write
def member_auto_increment_sql(member: Member) -> str:
    """Multi-primary: members' auto-increment values never collide (GR's default step 7)."""
    return (f"SET SESSION auto_increment_increment = {AUTO_INCREMENT_INCREMENT}, "
            f"auto_increment_offset = {member.auto_increment_offset()}")


class Capturer(Protocol):
    """Capture of one DML statement on the session's connection (replication.capture)."""

    async def capture(self, conn: BackendConnection, sql: str, default_schema: str | None, *,
                      temporary_tables: Collection[tuple[str, str]] = frozenset(), sql_mode: str | None = None,
                      encoding: str = "utf-8") -> Captured: ...

    def encode(self, changes: Sequence[object]) -> bytes: ...


@dataclass(slots=True)
class _Txn:
    local: LocalTxn
    changes: list[object] = field(default_factory=list)
    keys: set[KeyHash] = field(default_factory=set)
    savepoints: dict[str, tuple[int, frozenset[KeyHash]]] = field(default_factory=dict)


class MemberSessionFactory:
    def __init__(self, member: Member, capturer: Capturer, connect_timeout_s: float = 5.0) -> None:
        self.member = member
        self.capturer = capturer
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
        # Capture sends multi-statements of its own: the backend connection always allows
        # them; the client's own multi-statements are refused unless it negotiated them.
        # CLIENT_NO_SCHEMA would make the backend ignore "db." qualifiers: capture refuses it.
        caps = (capabilities | Cap.MULTI_STATEMENTS | Cap.MULTI_RESULTS) & ~Cap.NO_SCHEMA
        backend = await BackendConnection.open(
            self.member.config.backend, capabilities=int(caps), collation=collation, database=database,
            connect_attrs=attrs, timeout_s=self.connect_timeout_s, mariadb_capabilities=mariadb_capabilities,
        )
        if not self.member.engine.single_primary:
            # Multi-primary: members' auto-increment values never collide (GR's default step 7).
            await backend.execute(member_auto_increment_sql(self.member))
        session = MemberSession(link, backend, processes, self.member, self.capturer,
                                client_multi=bool(capabilities & Cap.MULTI_STATEMENTS), admin=self.admin)
        session._auto_increment_set = not self.member.engine.single_primary
        return session


class MemberSession(RelaySession):
    def __init__(self, link: ClientLink, backend: BackendConnection, processes: Processes, member: Member,
                 capturer: Capturer, client_multi: bool, admin: Admin | None = None) -> None:
        super().__init__(link, backend, processes)
        self.member = member
        self.admin = admin if admin is not None else Admin(member)
        # Multi-primary auto-increment settings are on this session's backend connection (the
        # group may switch modes while the session lives: set before its first write then).
        self._auto_increment_set = False
        self.capturer = capturer
        self.client_multi = client_multi
        self.txn: _Txn | None = None
        self._prepared_writes: dict[int, PreparedWrite] = {}
        self._prepared_refused: set[int] = set()
        # Prepared statements a consistency level need not hold (SET, …); every other one is held,
        # so at this set's bound a statement is held rather than let through.
        self._prepared_unheld: set[int] = set()
        self._pending_prepare: tuple[Statement, str] | None = None
        self._charset: str | None = None  # character_set_client, for prepared writes
        self._sql_mode: str | None = None  # cached; forgotten after any SET
        self._temporary: set[tuple[str, str]] = set()  # (schema, table) of this session's temp tables
        self._wait_timeout: float | None = None  # cached @@SESSION.wait_timeout (consistency waits)
        self.consistency: Level = member.consistency
        self._schema_known = False
        self._schema_value: str | None = None
        self._row_count: int | None = None  # ROW_COUNT() of the client's previous statement, when captured

    # --- dispatch -------------------------------------------------------------------------------

    def on_command(self, raw: bytes, last_seq: int = 0) -> None:
        cmd = raw[4] if len(raw) > 4 else -1
        row_count, self._row_count = self._row_count, None
        if row_count is not None and cmd == Command.QUERY and _ROW_COUNT_RE.search(raw, 5, 5 + ROW_COUNT_SCAN_BYTES):
            # The backend's ROW_COUNT() now describes capture's last statement: answer the
            # client's own (its write's affected rows).
            raw = frame(b"\x03" + replace_call(raw[5:], "ROW_COUNT", row_count), 0)
        if cmd in (Command.INIT_DB, Command.RESET_CONNECTION):
            self._schema_known = False
            self._sql_mode = self._charset = self._wait_timeout = None
            if cmd == Command.RESET_CONNECTION:  # the backend rolls back: so do we
                self._auto_increment_set = False
                self._drop_txn()
                self._temporary.clear()
                self.consistency = self.member.consistency
                for ids in (self._prepared_writes, self._prepared_refused, self._prepared_unheld):
                    ids.clear()  # the backend deallocated them
                if not self.member.engine.single_primary:
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
            if stmt.kind is Kind.USE or stmt.kind is Kind.MULTI or (stmt.kind is Kind.DDL and stmt.ddl_object in
                                                                   ("DATABASE", "SCHEMA")):
                self._schema_known = False
            if stmt.kind is Kind.SET:
                self._charset = None  # SET NAMES / character_set_client may change it
                self._sql_mode = None
                self._wait_timeout = None
            if mentions(raw):  # GR's vocabulary: replication.admin answers it, or hands it back
                answer = self.admin.plan(stmt, sql.decode("utf-8", "surrogateescape"), self)
                if answer is not None:
                    self._cmd_seq = last_seq
                    self._spawn(answer)
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
        elif cmd in (Command.STMT_EXECUTE, Command.STMT_SEND_LONG_DATA, Command.STMT_RESET, Command.STMT_CLOSE) \
                and len(raw) >= 9:
            stmt_id = int.from_bytes(raw[5:9], "little")
            if stmt_id in self._prepared_refused and cmd == Command.STMT_EXECUTE:
                self._cmd_seq = last_seq
                self._spawn(self._refuse(NotSupported(
                    "This prepared statement cannot be replicated (CALL, DDL, LOAD DATA or several statements); "
                    "send it as a text statement")))
                return
            write = self._prepared_writes.get(stmt_id)
            if (cmd == Command.STMT_EXECUTE and self.consistency is not Level.EVENTUAL
                    and stmt_id not in self._prepared_unheld and not self.status & IN_TRANS and self.txn is None):
                # A prepared statement starts a transaction as a text one does: held first.
                self._cmd_seq = last_seq
                self._spawn(self._hold_then_execute(raw, write))
                return
            if write is not None:
                if cmd == Command.STMT_EXECUTE:
                    self._cmd_seq = last_seq
                    self._spawn(self._prepared_write(write, raw[5:]))
                    return
                if cmd == Command.STMT_SEND_LONG_DATA:
                    self._long_data(write, raw[9:])
                    self.link.command_done()  # no answer, as on a server
                    return
                if cmd == Command.STMT_RESET:
                    write.long_data.clear()
            if cmd == Command.STMT_CLOSE:
                self._prepared_writes.pop(stmt_id, None)
                self._prepared_unheld.discard(stmt_id)
                self._prepared_refused.discard(stmt_id)
        if self.txn is not None and self.txn.local.doomed_by is not None and cmd in (Command.QUERY, Command.STMT_EXECUTE):
            self._cmd_seq = last_seq
            self._spawn(self._doomed())
            return
        super().on_command(raw, last_seq)

    async def _after_statement_error(self, errno: int) -> None:
        """A statement failed inside our transaction: did the backend roll the whole
        transaction back (deadlock always does; a lock wait timeout may)? Then the changes
        captured so far never happened: forget them."""
        if self.txn is None:
            return
        if errno == ER_LOCK_DEADLOCK:
            self._drop_txn()
            self.status &= ~IN_TRANS
            return
        r = await self.backend.execute("SELECT @@in_transaction")
        if r.rows and r.rows[0][0] in (b"0", 0):
            self._drop_txn()
            self.status &= ~IN_TRANS

    def _transaction_ended_under_us(self, scanner: ResponseScanner) -> None:
        """After a relayed statement: the backend's answer says whether our transaction is
        still open. If it is gone (deadlock, or a statement that committed or rolled back
        implicitly), its captured changes are dropped — never certified."""
        if self.txn is None:
            return
        if scanner.error is not None:
            if scanner.error[0] == ER_LOCK_DEADLOCK:
                self._drop_txn()
            return
        if not scanner.status & IN_TRANS:
            if self.txn.changes:
                log.warning("transaction_ended_outside_grproxy", conn_id=self.link.conn_id,
                            changes=len(self.txn.changes))
            self._drop_txn()

    def _on_done(self, scanner: ResponseScanner) -> None:
        self._transaction_ended_under_us(scanner)
        if scanner.expect == Expect.PREPARE and scanner.prepared is not None and self._pending_prepare is not None:
            stmt, sql = self._pending_prepare
            stmt_id, _, nparams = scanner.prepared
            if stmt.kind is Kind.DML and not stmt.temporary_table:
                if len(self._prepared_writes) < PREPARED_WRITES_MAX:
                    self._prepared_writes[stmt_id] = PreparedWrite(sql, nparams)
                else:
                    self._prepared_refused.add(stmt_id)
            elif stmt.kind in (Kind.DDL, Kind.CALL, Kind.MULTI, Kind.LOAD_DATA):
                self._prepared_refused.add(stmt_id)
            elif stmt.kind not in _HELD_KINDS and len(self._prepared_unheld) < PREPARED_WRITES_MAX:
                self._prepared_unheld.add(stmt_id)
            self._pending_prepare = None
        super()._on_done(scanner)

    def _needs_member(self, stmt: Statement) -> bool:
        kind = stmt.kind
        if kind in (Kind.DML, Kind.DDL, Kind.CALL, Kind.MULTI, Kind.LOAD_DATA, Kind.ROLLBACK,
                    Kind.ROLLBACK_TO_SAVEPOINT, Kind.SAVEPOINT, Kind.COMMIT):
            return True
        if self.txn is not None and (stmt.implicit_commit or self.txn.local.doomed_by is not None):
            return True
        return False

    async def _refuse(self, error: MySQLError) -> None:
        raise error

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

    async def _hold_then_execute(self, raw: bytes, write: PreparedWrite | None) -> bool:
        """COM_STMT_EXECUTE of a prepared statement its level holds: hold, then run it (a write
        with capture; a read relayed, whose answer then finishes the command)."""
        await self._hold()
        if write is not None:
            await self._prepared_write(write, raw[5:])
            return False
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

    def _long_data(self, write: PreparedWrite, body: bytes) -> None:
        if len(body) < 2:
            return
        param = int.from_bytes(body[:2], "little")
        buf = write.long_data.setdefault(param, bytearray())
        if sum(map(len, write.long_data.values())) + len(body) - 2 > LONG_DATA_BYTES_MAX:
            write.long_data.clear()  # the EXECUTE then fails cleanly: parameters incomplete
            write.long_data[param] = bytearray()
            return
        buf += body[2:]

    async def _prepared_write(self, write: PreparedWrite, body: bytes) -> None:
        """EXECUTE of a prepared DML: the same statement as text with exact literals, captured."""
        if self._charset is None:
            r = await self.backend.execute("SELECT @@character_set_client")
            self._charset = (r.rows[0][0] or b"utf8mb4").decode("ascii")
        try:
            sql = bind_execute(write, body, self._charset)
        except MalformedPacket as exc:
            raise MalformedPacket(f"Malformed COM_STMT_EXECUTE: {exc.message}") from None
        await self._statement(classify(sql), sql)

    # --- statements -----------------------------------------------------------------------------

    async def _statement(self, stmt: Statement, sql: str) -> None:
        kind = stmt.kind
        if self.txn is not None and self.txn.local.doomed_by is not None and kind not in (Kind.ROLLBACK,):
            await self._doomed()
            return
        if kind is Kind.MULTI:
            parts = stmt.parts
            if not self.client_multi:
                raise _syntax_error(sql)
            if any(p.kind not in (Kind.SELECT, Kind.SHOW, Kind.SET, Kind.USE, Kind.DO) for p in parts):
                raise NotSupported("Multi-statement texts that write are not replicated by grproxy; send the statements one by one")
            await self._relay_packet_mode(sql)
            return
        if kind is Kind.DML:
            await self._dml(sql)
            return
        if kind is Kind.DDL:
            await self._ddl(stmt, sql)
            return
        if kind is Kind.COMMIT:
            await self._commit()
            self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)
            return
        if kind is Kind.ROLLBACK:
            self._drop_txn()
            await self._relay_packet_mode(sql)
            return
        if kind is Kind.SAVEPOINT and self.txn is not None and stmt.savepoint:
            self.txn.savepoints[stmt.savepoint.lower()] = (len(self.txn.changes), frozenset(self.txn.keys))
        elif kind is Kind.ROLLBACK_TO_SAVEPOINT and self.txn is not None and stmt.savepoint:
            mark = self.txn.savepoints.get(stmt.savepoint.lower())
            if mark is not None:
                del self.txn.changes[mark[0]:]
                self.txn.keys = set(mark[1])
        elif kind is Kind.CALL:
            raise NotSupported("CALL is not replicated by grproxy: writes inside stored procedures cannot be captured")
        elif kind is Kind.LOAD_DATA:
            raise NotSupported("LOAD DATA is not replicated by grproxy yet; use INSERT statements")
        elif stmt.implicit_commit and self.txn is not None:
            await self._commit()
        await self._relay_packet_mode(sql)

    async def _relay_packet_mode(self, sql: str) -> None:
        """Run a statement the client sent and relay its answer (slow path, after our own work)."""
        done: asyncio.Future[ResponseScanner] = asyncio.get_running_loop().create_future()
        lost: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        raw = _frame_query(sql)
        self.backend.relay(raw, Expect.QUERY, self.link.transport,
                           lambda sc: done.done() or done.set_result(sc),
                           lambda relayed: lost.done() or lost.set_result(relayed))
        finished, _ = await asyncio.wait({done, lost}, return_when=asyncio.FIRST_COMPLETED)
        if lost in finished:
            self._on_lost(lost.result())
            return
        scanner = done.result()
        self.status = scanner.status
        self._transaction_ended_under_us(scanner)
        if scanner.infile:
            raise NotSupported("LOAD DATA LOCAL is not replicated by grproxy yet")

    async def _dml(self, sql: str) -> None:
        self.member.check_writable()
        if not self._auto_increment_set and not self.member.engine.single_primary:
            await self._member_auto_increment()  # the group switched to multi-primary since we set it
        autocommit = not (self.status & IN_TRANS) and bool(self.status & AUTOCOMMIT)
        if self.txn is None:
            if not self.status & IN_TRANS:
                r = await self.backend.execute("BEGIN")
                self.status = r.status
            self.txn = _Txn(self.member.open_txn(on_doom=self._on_doom))
        if self._sql_mode is None:
            r = await self.backend.execute("SELECT @@SESSION.sql_mode")
            self._sql_mode = (r.rows[0][0] or b"").decode("ascii", "replace")
        try:
            captured = await self.capturer.capture(self.backend, sql, await self._schema(),
                                                   temporary_tables=self._temporary, sql_mode=self._sql_mode)
        except BackendError as exc:
            if autocommit:
                await self._rollback_quietly()
            else:
                await self._after_statement_error(exc.backend_errno)
            raise
        except BaseException:
            if autocommit:
                await self._rollback_quietly()
            raise
        txn = self.txn
        txn.changes.extend(captured.changes)
        txn.keys |= captured.keys
        if len(txn.changes) > TXN_CHANGES_MAX:
            await self._rollback_quietly()
            raise HookError("Error on observer while running replication hook 'before_commit'. "
                            f"(transaction over {TXN_CHANGES_MAX} row changes)")
        if autocommit:
            await self._commit()
        r = captured.result
        self._row_count = r.affected_rows
        self.link.send_packet(ok_payload(self.status, r.affected_rows, r.last_insert_id, r.warnings), self._cmd_seq + 1)

    async def _commit(self) -> None:
        """Commit the backend transaction; through certification when it changed rows."""
        txn = self.txn
        if txn is None or not txn.changes:
            self._drop_txn()
            r = await self.backend.execute("COMMIT")
            self.status = r.status
            return
        after = self.consistency.waits_after
        try:
            seq = await self.member.certify_local(txn.local, tuple(txn.keys), self.capturer.encode(txn.changes),
                                                  ack=after)
        except (CertificationConflict, HookError, MySQLError):
            await self._rollback_quietly()
            raise
        try:
            # The position row and COMMIT in one round trip.
            r = (await self.backend.execute_all(f"{self.member.store.record_sql(seq)};COMMIT"))[-1]
        except BaseException as exc:
            self.member.commit_failed(Seq(seq), exc)
            self._drop_txn()
            raise HookError("Error on observer while running replication hook 'after_commit'. "
                            "(the certified transaction failed to commit on this member's backend)") from exc
        self.status = r.status
        self.member.committed(seq)
        self._drop_txn()
        if after:
            await self.member.wait_all_applied(seq, await self._timeout_s())

    async def _ddl(self, stmt: Statement, sql: str) -> None:
        if stmt.temporary_table:
            await self._relay_packet_mode(sql)
            schema = await self._schema() or ""
            names = {(ref.schema or schema, ref.name) for ref in stmt.tables}
            if stmt.verb.startswith("CREATE"):
                if len(self._temporary) + len(names) <= TEMPORARY_TABLES_MAX:
                    self._temporary |= names
            else:
                self._temporary -= names
            return
        self.member.check_writable()
        if self.txn is not None or self.status & IN_TRANS:
            await self._commit()  # DDL commits implicitly, as in MySQL
        schema = await self._schema()
        outcome = await self.member.run_ddl(schema or "", sql)  # the applier invalidates metadata
        if outcome.error is not None:
            raise outcome.error
        self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)

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
        """A remote transaction won keys this transaction wrote: it will fail certification, so
        release its row locks now (the applier is waiting on them) if the session is idle."""
        if self._task is None and not self.backend.busy and not self.closed:
            self._spawn_internal(self._rollback_quietly())

    def _spawn_internal(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:  # noqa: BLE001 - best effort; the next statement reports 3101
                pass
        asyncio.get_running_loop().create_task(run())

    async def _rollback_quietly(self) -> None:
        self._drop_txn()
        try:
            r = await self.backend.execute("ROLLBACK")
            self.status = r.status
        except BackendError:
            pass

    def _drop_txn(self) -> None:
        if self.txn is not None:
            self.member.close_txn(self.txn.local)
            self.txn = None

    async def _recovery_command(self, text: str) -> None:
        """grproxy's own commands (admin logins only). `ROUTER ENDPOINT` → this member's id, its
        backend's host and port, its default consistency level and its state. `MEMBER STATS` →
        BEFORE sync points asked for and broadcast (their ratio is the batching). Donor side of
        distributed recovery:
        `RECOVERY STATE <epoch> <number>` → one row with the engine state taken at that view;
        `RECOVERY TRANSACTIONS <seq>,<seq>,…` → (seq, kind, payload) of each cached seq."""
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
            cols = [Column("SYNC_POINT_REQUESTS", TYPE_LONGLONG, 20), Column("SYNC_POINT_BROADCASTS", TYPE_LONGLONG, 20)]
            row = (m.stats_sync_requests, m.stats_sync_broadcasts)
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
        if len(words) == 4 and words[:2] == ["RECOVERY", "STATE"] and words[2].isdigit() and words[3].isdigit():
            state = self.member.recovery_state(ViewId(int(words[2]), int(words[3])))
            if state is None:
                raise NotSupported(f"this member kept no recovery state for view {words[2]}:{words[3]}")
            self.link.transport.write(text_resultset([Column("state", length=1 << 24)], [(state,)], self.status,
                                                     seq=self._cmd_seq + 1))
            return
        if len(words) == 3 and words[:2] == ["RECOVERY", "TRANSACTIONS"]:
            seqs = [int(x) for x in words[2].split(",") if x.isdigit()][:RECOVERY_SEQS_PER_REQUEST_MAX]
            rows = []
            for seq in seqs:
                item = self.member.cache.get(seq)
                if item is not None:
                    rows.append((seq, item[0], item[1]))
            cols = [Column("seq", TYPE_LONGLONG, 20), Column("kind", length=1), Column("payload", length=1 << 24)]
            self.link.transport.write(text_resultset(cols, rows, self.status, seq=self._cmd_seq + 1))
            return
        if words and words[0] == "GROUP":
            await self._group_command(words[1:])
            return
        raise ParseError(f"Unknown grproxy recovery command: {text[:80]}")

    async def _group_command(self, words: list[str]) -> None:
        """`GROUP STATUS` → this member's id, state, group uuid, GTID set, error;
        `GROUP REBOOT` → bootstrap the group again from this member (whole-group reboot);
        `GROUP REJOIN` → join the group again as a new incarnation (used by `grproxy reboot`)."""
        m = self.member
        if words == ["STATUS"]:
            cols = [Column("MEMBER_ID", length=64), Column("MEMBER_STATE", length=32), Column("GROUP_UUID", length=64),
                    Column("GTID_EXECUTED", length=1 << 20), Column("ERROR", length=4096),
                    Column("IN_GROUP", TYPE_LONGLONG, 1)]
            row = (m.config.uuid, m.state.value, m.group_uuid, m.gtid_executed(), m.error, int(m.in_group))
            self.link.transport.write(text_resultset(cols, [row], self.status, seq=self._cmd_seq + 1))
            return
        if words in (["REBOOT"], ["REJOIN"]):
            if words == ["REJOIN"] and m.in_group:
                self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)  # already back in
                return
            try:
                await (m.reboot() if words == ["REBOOT"] else m.rejoin())
            except StartRefused as exc:
                raise NotSupported(str(exc)) from None
            self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)
            return
        raise ParseError(f"Unknown grproxy group command: GROUP {' '.join(words)[:60]}")

    async def _reset_connection(self) -> None:
        """COM_RESET_CONNECTION in multi-primary mode: the reset puts auto_increment_increment /
        offset back to the server's globals, so the member's own are set again (else members
        would hand out colliding auto-increment values)."""
        await self.backend.command(Command.RESET_CONNECTION)
        await self._member_auto_increment()
        self.status = AUTOCOMMIT
        self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)

    async def _member_auto_increment(self) -> None:
        await self.backend.execute(member_auto_increment_sql(self.member))
        self._auto_increment_set = True

    async def reset_for_user(self, database: str | None) -> None:
        """COM_CHANGE_USER: a fresh session — no open transaction, nothing cached."""
        if self.txn is not None:
            self._drop_txn()
        await super().reset_for_user(database)
        self._auto_increment_set = False
        if not self.member.engine.single_primary:
            await self._member_auto_increment()
        self._schema_known = False
        self._sql_mode = self._charset = self._wait_timeout = None
        self._temporary.clear()
        self.consistency = self.member.consistency

    def close(self) -> None:
        self._drop_txn()
        super().close()


_HELD_KINDS = frozenset({Kind.SELECT, Kind.DML, Kind.BEGIN, Kind.CALL, Kind.DO, Kind.SHOW})


def _frame_query(sql: str) -> bytes:
    return frame(b"\x03" + sql.encode("utf-8", "surrogateescape"), 0)


def _syntax_error(sql: str) -> MySQLError:
    """What a server says to a multi-statement text from a client that did not ask for them."""
    near = sql.split(";", 1)[1].strip()[:80] if ";" in sql else ""
    return ParseError("You have an error in your SQL syntax; check the manual that corresponds to your MariaDB "
                      f"server version for the right syntax to use near '{near}'")
