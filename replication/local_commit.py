"""Local write transactions on the binary log: XA on the member's backend, the group decides.

Theory of operation (DESIGN §4, §5). A session on a member runs each write transaction as an
XA transaction on its backend connection (`XA START` at the transaction's start; the client's
statements are relayed as they are). At COMMIT, `LocalCommits.commit` takes over in a task of
its own, which the session's disconnect or cancellation does not stop:

1. `XA END; XA PREPARE` — the server logs the transaction's row events and keeps it prepared:
   it survives the client, the session and a crash;
2. the row events are read back from the binlog (`binlog.BinlogReader.prepared`), and turned
   into row changes and a write set (`writeset.derive`);
3. broadcast through the group with the events themselves as logged (`rowevents.ship`: the
   other members apply them with BINLOG statements), certified at delivery by every member
   alike;
4. positive: the position (seq, xid) is recorded (`LocalPositionWriter`), then `XA COMMIT`;
   negative: `XA ROLLBACK`, and the client gets 3101. The transaction ends exactly as the
   group decided, whoever is still connected.

Crash safety: at start (and at every rejoin) `resolve_prepared` ends the member's prepared XA
transactions left by an earlier incarnation before anything is served: those whose position
was recorded are committed (the group certified them); the others are rolled back — if the
group certified one, distributed recovery brings its row images from a donor, since the
position is missing.

A transaction whose prepared events hold no rows outside the `grproxy` schema (a write that
matched nothing, or temporary tables only) is committed locally without the group.

Stray writes: every transaction the binlog shows with rows, other than a prepared XA of ours,
must be the applier's (it carries a `grproxy.applied` row) or the member's own bookkeeping;
anything else is a write the group never saw, and the member goes to ERROR (DESIGN §5: nothing
slips through).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.errors import (
    BackendError,
    BackendLost,
    BeforeDmlValidation,
    CertificationConflict,
    HookError,
    MySQLError,
)

from .binlog import BinlogError, BinlogPosition, BinlogReader, BinlogTransaction, XaId
from .certifier import Seq
from .positions import LocalPositionWriter
from .rowevents import RowEventsError, check_binlog_replay, ship
from .schema import SchemaCatalog
from .writeset import OWN_SCHEMA, derive

if TYPE_CHECKING:
    from .member import LocalTxn, Member

log = structlog.get_logger("grproxy.local_commit")

XA_FORMAT_ID = 0x67727078  # 'grpx': the formatID of every XA transaction a member opens
BINLOG_WAIT_S = 30.0  # for a prepared transaction's events to come back from the binlog
ER_XAER_NOTA = 1397  # XA COMMIT/ROLLBACK of an xid the server does not know (already ended)
ER_XA_RBROLLBACK = 1614  # the XA transaction was rolled back (deadlock) and is only ROLLBACK ONLY
XA_DETACH_WAIT_S = 30.0  # for the server to detach a prepared XA from a dead connection
XA_DETACH_POLL_S = 0.1
METADATA_CONNECTIONS_IDLE_MAX = 8  # idle connections kept for catalog / WEIGHT_STRING reads
REQUIRED_SETTINGS = (
    ("log_bin", ("1", "ON")),
    ("binlog_format", ("ROW",)),
    ("binlog_row_image", ("FULL",)),
)
# MariaDB only: applied row events must not run the tables' triggers (their writes are row events
# of the transaction already; see replication/rowevents.py).
REQUIRED_SETTINGS_MARIADB = (("slave_run_triggers_for_rbr", ("NO",)),)


class BackendUnfit(Exception):
    """The backend does not log what a member needs (binlog ROW with full images)."""


def xa_literal(xid: XaId) -> str:
    """The xid as XA statements take it: X'gtrid',X'bqual',formatID."""
    return f"X'{xid.gtrid.hex()}',X'{xid.bqual.hex()}',{xid.format_id}"


@dataclass(slots=True)
class Committed:
    """How a local commit ended: `seq` when the group certified it (None: nothing to replicate)."""

    seq: Seq | None


def _outcome_read(task: "asyncio.Task[object]") -> None:
    if not task.cancelled():
        task.exception()  # marks it read; a caller still waiting gets it through its shield


class LocalCommits:
    """The member's binlog write path (see the module docstring). One per member."""

    def __init__(self, member: "Member") -> None:
        self.member = member
        self.reader: BinlogReader | None = None
        self.catalog = SchemaCatalog()
        self.positions = LocalPositionWriter(member.connect)
        self.committing: set[int] = set()  # seqs between their position and their XA COMMIT
        self._boot = int.from_bytes(os.urandom(4), "little")
        self._next = 0
        self.stats_stray = 0
        self._meta_idle: list[BackendConnection] = []
        self._log = log.bind(member_id=member.config.uuid)

    # --- start / stop ----------------------------------------------------------------------------

    async def check_backend(self, conn: BackendConnection) -> None:
        """Raise BackendUnfit unless the backend logs full row images (GR's requirements), applies
        row events without running triggers (MariaDB), and the account may run BINLOG
        statements (the applier's; BINLOG REPLAY privilege)."""
        required = REQUIRED_SETTINGS
        if conn.handshake is not None and conn.handshake.is_mariadb:
            required += REQUIRED_SETTINGS_MARIADB
        r = await conn.execute("SELECT " + ", ".join(f"@@GLOBAL.{n}" for n, _ in required))
        row = r.rows[0]
        wrong = []
        for (name, allowed), value in zip(required, row):
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text.upper() not in allowed:
                wrong.append(f"{name}={text} (needs {allowed[-1]})")
        refused = await check_binlog_replay(conn)
        if refused is not None:
            wrong.append(f"the account cannot run BINLOG statements ({refused}): grant it BINLOG REPLAY")
        if wrong:
            raise BackendUnfit(
                f"backend {self.member.config.backend} is not fit for group replication: {', '.join(wrong)}; "
                "run it with log_bin, binlog_format=ROW, binlog_row_image=FULL, slave_run_triggers_for_rbr=NO "
                "(and binlog_row_metadata=FULL)")

    async def open(self) -> None:
        """Open the binlog reader at the end of the binlog (before any write is served)."""
        if self.reader is not None:
            return
        b = self.member.config.backend
        self.reader = await BinlogReader.open(
            BackendAddress(b.host, b.port, b.user, b.password, b.name),
            replica_server_id=self._replica_server_id(), on_outside_xa=self._outside_xa,
        )

    async def reopen_if_broken(self) -> None:
        """A reader whose stream broke (the backend restarted) is replaced by a new one at the
        binlog's end (rejoin: nothing is being committed meanwhile)."""
        if self.reader is not None and self.reader.error is not None:
            self._log.warning("binlog_reader_reopened", error=str(self.reader.error))
            await self.reader.close()
            self.reader = None
        await self.open()

    def _replica_server_id(self) -> int:
        """A server_id for our binlog dump connection, stable per member, unlike any backend's."""
        return 0x40000000 | (zlib.crc32(self.member.config.uuid.encode()) & 0x3FFFFFFF)

    async def close_reader(self) -> None:
        if self.reader is not None:
            await self.reader.close()
            self.reader = None

    async def close(self) -> None:
        await self.close_reader()
        self.positions.close()
        for conn in self._meta_idle:
            conn.close()
        self._meta_idle.clear()

    async def resolve_prepared(self, conn: BackendConnection) -> tuple[int, int]:
        """End the prepared XA transactions an earlier incarnation of this member left: commit
        those whose position was recorded, roll back the others. Returns (committed, rolled back)."""
        r = await conn.execute("XA RECOVER")
        mine = self.member.config.uuid.encode()
        recorded = await self.member.store.local_xids(conn)
        committed = rolled_back = 0
        for row in r.rows:
            fmt, glen, blen, data = int(row[0]), int(row[1]), int(row[2]), bytes(row[3])  # type: ignore[arg-type]
            gtrid, bqual = data[:glen], data[glen:glen + blen]
            if fmt != XA_FORMAT_ID or bqual != mine:
                continue
            xid = XaId(fmt, gtrid, bqual)
            if gtrid in recorded:
                await conn.execute(f"XA COMMIT {xa_literal(xid)}")
                committed += 1
                self._log.warning("prepared_transaction_committed", xid=gtrid.decode(errors="replace"),
                                  seq=recorded[gtrid])
            else:
                await conn.execute(f"XA ROLLBACK {xa_literal(xid)}")
                rolled_back += 1
                self._log.warning("prepared_transaction_rolled_back", xid=gtrid.decode(errors="replace"))
        return committed, rolled_back

    # --- sessions --------------------------------------------------------------------------------

    def new_xid(self) -> XaId:
        """A fresh xid: unique per member and process start."""
        self._next += 1
        return XaId(XA_FORMAT_ID, f"gx{self._boot:08x}.{self._next:x}".encode(), self.member.config.uuid.encode())

    async def commit(self, conn: BackendConnection, xid: XaId, txn: "LocalTxn", *, ack: bool) -> Committed:
        """End the session's open XA transaction `xid` as the group decides (see the module
        docstring). Runs in a task of its own: the caller may leave, the transaction still ends
        as decided. Raises CertificationConflict (3101), HookError (3100), BeforeDmlValidation
        (3098), NotSupported (1235), ReadOnly (1290), or the backend's error from XA END / XA
        PREPARE (the transaction is then rolled back)."""
        task = asyncio.get_running_loop().create_task(self._commit(conn, xid, txn, ack))
        # A caller that left (the client disconnected) no longer reads the outcome, and shield
        # then drops its interest: a failure would end as "Task exception was never retrieved".
        task.add_done_callback(_outcome_read)
        return await asyncio.shield(task)

    async def _commit(self, conn: BackendConnection, xid: XaId, txn: "LocalTxn", ack: bool) -> Committed:
        lit = xa_literal(xid)
        txn.preparing = True  # from here its verdict ends it: the applier's lock watch waits for it
        try:
            # The binlog's end right after the prepare: a transaction that changed no row logs
            # nothing, and the reader says so once it has read up to there.
            # The session's binlog settings with it: neither can change inside a transaction,
            # so they are the ones its writes were logged under.
            results = await conn.execute_all(f"{_LOGGING_SETTINGS};XA END {lit};XA PREPARE {lit};SHOW MASTER STATUS")
            status = results[-1].rows[0] if results and results[-1].rows else None
            logged_before = (BinlogPosition(_text(status[0]), int(_text(status[1])))  # type: ignore[index]
                             if status is not None else None)
            _check_logging(results[0].rows[0] if results and results[0].rows else None)
        except BeforeDmlValidation:
            await self._end(conn, f"XA ROLLBACK {lit}", xid, quiet=True)
            raise
        except BackendError:
            await self._end(conn, f"XA ROLLBACK {lit}", xid, quiet=True)
            raise
        except MySQLError:
            await self._end(conn, f"XA ROLLBACK {lit}", xid, quiet=True)  # unknown: ours to end
            raise
        try:
            bt = await self._prepared_events(xid, logged_before)
            async with self._metadata() as meta_conn:
                derived = await derive(bt, meta_conn, self.catalog, self.member.config.transaction_size_limit)
            try:
                shipped = ship(bt, OWN_SCHEMA) if derived.changes else b""
            except RowEventsError as exc:
                raise HookError(f"Error on observer while running replication hook 'before_commit'. ({exc})") from None
        except BaseException as exc:
            self._log.info("local_commit_refused", xid=xid.gtrid.decode(), error=repr(exc))
            await self._end(conn, f"XA ROLLBACK {lit}", xid)
            raise
        if not shipped:
            await self._end(conn, f"XA COMMIT {lit}", xid)  # nothing the group needs (no user rows)
            return Committed(None)
        member = self.member
        try:
            future = member.broadcast_local(txn, tuple(derived.keys), shipped, ack, tuple(sorted(derived.tables)))
        except BaseException:
            await self._end(conn, f"XA ROLLBACK {lit}", xid)
            raise
        try:
            outcome = await future  # no timeout: the transaction is the group's now
        except MySQLError as exc:
            # The member failed (ERROR) before the verdict: the transaction stays prepared and
            # is resolved when the member starts or rejoins (resolve_prepared), as the group
            # decided — which may be a commit on every other member. So not "rolled back"
            # (3100): the outcome is unknown to the client, as when a server dies mid-commit.
            raise BackendLost(f"Lost connection to backend {member.config.backend} while committing: this member "
                              f"left the group before the group's verdict ({exc}); the transaction ends as the "
                              "group decided (committed on the other members, or not)") from exc
        finally:
            member.broadcast_done(txn)
        try:
            seq = member.verdict(txn, outcome)
        except (CertificationConflict, HookError):
            await self._end(conn, f"XA ROLLBACK {lit}", xid)
            raise
        self.committing.add(seq)
        try:
            await self.positions.record(seq, xid.gtrid)
            await self._end(conn, f"XA COMMIT {lit}", xid)
        except BaseException as exc:
            member.commit_failed(seq, exc)
            # The group certified it: the other members commit it. Not "rolled back" (3100):
            # the client must treat it as unknown, as when a server dies mid-commit.
            raise BackendLost(f"Lost connection to backend {member.config.backend} while committing: the group "
                              f"certified transaction {seq}, which this member could not commit on its backend "
                              "(it stays committed on the other members)") from exc
        finally:
            self.committing.discard(seq)
        member.committed(seq)
        return Committed(seq)

    @contextlib.asynccontextmanager
    async def _metadata(self) -> AsyncIterator[BackendConnection]:
        """A connection of the member's for catalog and WEIGHT_STRING reads (a session's own
        cannot run every query while its XA transaction is prepared), from a small idle pool."""
        conn = self._meta_idle.pop() if self._meta_idle else await self.member.connect()
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        if len(self._meta_idle) < METADATA_CONNECTIONS_IDLE_MAX and not conn.closed:
            self._meta_idle.append(conn)
        else:
            conn.close()

    async def rollback(self, conn: BackendConnection, xid: XaId) -> None:
        """The client rolled back (or the session ended): end the open XA transaction."""
        lit = xa_literal(xid)
        try:
            await conn.execute(f"XA END {lit}")
        except BackendError:
            pass  # after a deadlock XA END reports the rollback (XA_RBDEADLOCK) or is refused
        await conn.execute(f"XA ROLLBACK {lit}")

    async def _prepared_events(self, xid: XaId, logged_before: BinlogPosition | None) -> BinlogTransaction:
        if self.reader is None:
            raise HookError("Error on observer while running replication hook 'before_commit'. (no binlog reader)")
        try:
            return await self.reader.prepared(xid, BINLOG_WAIT_S, logged_before=logged_before)
        except TimeoutError:
            raise HookError("Error on observer while running replication hook 'before_commit'. "
                            "(the prepared transaction did not appear in the binary log)") from None
        except BinlogError as exc:
            raise HookError(f"Error on observer while running replication hook 'before_commit'. ({exc})") from None

    async def _end(self, conn: BackendConnection, sql: str, xid: XaId, *, quiet: bool = False) -> None:
        """Run XA COMMIT / XA ROLLBACK of `xid` on the session's connection, or, when that one is
        gone, on a fresh one once the server has detached the prepared transaction from the
        dead connection (a prepared XA survives its connection; until the server noticed the
        disconnect, other connections get XAER_NOTA while XA RECOVER still lists it).
        `quiet`: failures are logged, not raised (the transaction was never broadcast, and a
        restart rolls back what is left)."""
        try:
            await conn.execute(sql)
            return
        except BackendError as exc:
            if exc.backend_errno == ER_XAER_NOTA:
                return  # its own connection does not know it: it ended (a deadlock rolls it back)
            if quiet:
                self._log.warning("xa_end_failed", sql=sql[:40], error=str(exc))
                return
            raise
        except (MySQLError, OSError):
            pass  # the session's connection is gone: end it from another one
        deadline = asyncio.get_running_loop().time() + XA_DETACH_WAIT_S
        while True:
            try:
                fresh = await self.member.connect()
                try:
                    try:
                        await fresh.execute(sql)
                        return
                    except BackendError as exc:
                        if exc.backend_errno != ER_XAER_NOTA:
                            raise
                    r = await fresh.execute("XA RECOVER")
                    listed = any(bytes(row[3]) == xid.gtrid + xid.bqual for row in r.rows)  # type: ignore[arg-type]
                    if not listed:
                        return  # ended already (by us, before the connection broke)
                finally:
                    fresh.close()
            except (MySQLError, OSError) as exc:
                if quiet:
                    self._log.warning("xa_end_failed", sql=sql[:40], error=str(exc))
                    return
                raise
            if asyncio.get_running_loop().time() > deadline:
                if quiet:
                    return
                raise HookError("Error on observer while running replication hook 'after_commit'. "
                                "(the prepared transaction stayed attached to a dead connection)")
            await asyncio.sleep(XA_DETACH_POLL_S)

    # --- the binlog's other transactions ---------------------------------------------------------

    def _outside_xa(self, txn: BinlogTransaction) -> None:
        """A transaction with rows or statements that is not a prepared XA of a session (reader
        callback). Statements are fine (DDL, account statements) unless one is DML logged as
        text (statement-based logging: its rows never reach the group)."""
        if not txn.has_rows:
            dml = [q for q in txn.queries if _is_dml(q)]
            if dml:
                self.stats_stray += 1
                self.member.stray_write("a write the group never saw committed on the backend, logged as a statement "
                                        f"(binlog_format other than ROW): {dml[0].decode('utf-8', 'replace')[:200]}")
            return
        tables = {(t.schema, t.table) for t in txn.tables}
        if all(schema == OWN_SCHEMA for schema, _ in tables):
            return  # positions, compaction, the member's own bookkeeping
        if (OWN_SCHEMA, "applied") in tables:
            return  # the applier: a certified transaction with its position
        if txn.queries and any(_is_ddl(q) for q in txn.queries):
            return  # DDL the group ordered (CREATE TABLE … SELECT logs rows)
        self.stats_stray += 1
        names = ", ".join(sorted(f"{s}.{t}" for s, t in tables))
        statements = "; ".join(s.decode("utf-8", "replace")[:200] for s in txn.statements[:3])
        self.member.stray_write(f"a write the group never saw committed on the backend: rows of {names}"
                                + (f" ({statements})" if statements else ""))



#: What the member reads at prepare time: the session's settings its writes were logged under.
_LOGGING_SETTINGS = "SELECT @@session.sql_log_bin, @@session.binlog_format"


def _check_logging(row: object) -> None:
    """A transaction logged without its rows (sql_log_bin=0) or as statements (binlog_format
    other than ROW) cannot be captured: committed, it would exist on this member only. Raises
    BeforeDmlValidation (3098, as GR's before-DML check for binlog_format) — the caller rolls
    it back."""
    if not isinstance(row, (tuple, list)) or len(row) < 2:
        raise BeforeDmlValidation("The table does not comply with the requirements by an external plugin. "
                                  "(the session's binary log settings could not be read)")
    log_bin, fmt = _text(row[0]), _text(row[1]).upper()
    if log_bin not in ("1", "ON"):
        raise BeforeDmlValidation("The table does not comply with the requirements by an external plugin. "
                                  "(sql_log_bin is 0 in this session: its writes would not reach the binary log "
                                  "the group replicates from; the transaction was rolled back)")
    if fmt != "ROW":
        raise BeforeDmlValidation("The table does not comply with the requirements by an external plugin. "
                                  f"(Binlog format should be ROW for Group Replication; this session's is {fmt}: the "
                                  "transaction was rolled back)")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _is_dml(query: bytes) -> bool:
    """A row-changing statement as logged in statement format (comments skipped)."""
    text = query.lstrip()
    while text.startswith(b"/*") and b"*/" in text:
        text = text[text.index(b"*/") + 2:].lstrip()
    head = text[:8].upper()
    return head.startswith((b"INSERT", b"UPDATE", b"DELETE", b"REPLACE", b"LOAD"))


def _is_ddl(query: bytes) -> bool:
    head = query.lstrip()[:16].upper()
    return head.startswith((b"CREATE", b"ALTER", b"DROP", b"RENAME", b"TRUNCATE"))
