"""A client session relayed onto one backend connection (the raw-packet relay).

Shared machinery: the router's sessions (router/) and member sessions (replication/) both
build on it, so it lives at the wire-protocol level.


The hot path is callbacks only: a complete client command arrives (`on_command`), its raw
packet goes to the backend, and the backend connection streams the answer straight into the
client's transport until the scanner marks it complete (`_on_done`), which frees the session
for the next command. Commands the proxy must act on itself (KILL, COM_CHANGE_USER, refused
commands) leave the hot path for a coroutine.

Contract with the front end (`ClientLink`): the front end hands over one command at a time and
waits for `link.command_done()` before handing over the next; packets sent while a LOCAL INFILE
is being relayed go to `on_infile_packet` instead.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Protocol

import structlog

from .backend import BackendAddress, BackendConnection
from .constants import Command
from .errors import (
    BackendGone,
    BackendLost,
    MySQLError,
    NotSupported,
    ParseError,
    UnknownCommand,
)
from .packets import ok_payload
from .scanner import Expect, ResponseScanner

log = structlog.get_logger("grproxy.session")

# How each relayed command is answered. Commands absent here are refused or handled locally.
EXPECT_BY_COMMAND: dict[int, Expect] = {  # keys as plain ints for the hot lookup
    Command.QUERY: Expect.QUERY,
    Command.STMT_PREPARE: Expect.PREPARE,
    Command.STMT_EXECUTE: Expect.EXECUTE,
    Command.STMT_FETCH: Expect.FETCH,
    Command.STMT_CLOSE: Expect.NONE,
    Command.STMT_SEND_LONG_DATA: Expect.NONE,
    Command.STMT_RESET: Expect.SIMPLE,
    Command.PING: Expect.SIMPLE,
    Command.INIT_DB: Expect.SIMPLE,
    Command.RESET_CONNECTION: Expect.SIMPLE,
    Command.SET_OPTION: Expect.SIMPLE,
    Command.DEBUG: Expect.SIMPLE,
    Command.REFRESH: Expect.SIMPLE,
    Command.CREATE_DB: Expect.SIMPLE,
    Command.DROP_DB: Expect.SIMPLE,
    Command.STATISTICS: Expect.SINGLE,
    Command.FIELD_LIST: Expect.FIELD_LIST,
    Command.PROCESS_INFO: Expect.QUERY,
}
EXPECT_BY_COMMAND = {int(k): v for k, v in EXPECT_BY_COMMAND.items()}

# Commands that would hand the backend over to the client (replication streams, shutdown).
REFUSED_COMMANDS = frozenset(
    {Command.SHUTDOWN, Command.BINLOG_DUMP, Command.BINLOG_DUMP_GTID, Command.REGISTER_SLAVE,
     Command.TABLE_DUMP, Command.CONNECT_OUT, Command.DAEMON}
)

_KILL_RE = re.compile(
    rb"^\s*(?:/\*(?!!).*?\*/\s*)*KILL\s+(?:(?P<force>HARD|SOFT)\s+)?(?:(?P<kind>CONNECTION|QUERY)\s+)?"
    rb"(?:(?P<id>ID)\s+)?(?P<target>\S+)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_MAYBE_KILL = frozenset(b"kK/ \t\r\n")


def kill_statement(raw: bytes) -> re.Match[bytes] | None:
    """The KILL statement in a COM_QUERY packet `raw` (header included), or None: grproxy
    answers KILL itself, with the client-visible connection ids."""
    if len(raw) > 5 and raw[5] in _MAYBE_KILL:
        return _KILL_RE.match(raw[5:4096])
    return None
_COM_QUERY = int(Command.QUERY)


class ClientLink(Protocol):
    """What a session needs from the client connection (implemented by grproxy's front end)."""

    conn_id: int
    username: str

    @property
    def transport(self) -> asyncio.Transport: ...

    def send_packet(self, payload: bytes, seq: int) -> None: ...
    def send_error(self, error: MySQLError, seq: int) -> None: ...
    def command_done(self) -> None: ...
    def begin_infile(self) -> None: ...
    def pause_reading(self, reason: str) -> None: ...
    def unpause_reading(self, reason: str) -> None: ...
    def close(self) -> None: ...


class Processes(Protocol):
    """The process list: KILL of other sessions (implemented by grproxy's front end)."""

    async def kill(self, conn_id: int, *, query_only: bool, by: ClientLink) -> None: ...


class Session(Protocol):
    """What the front end drives: one per logged-in client (see module docstring)."""

    status: int
    backend: BackendConnection  # the connection the session's current command runs on

    def on_command(self, raw: bytes, last_seq: int = 0) -> None: ...
    def on_infile_packet(self, raw: bytes, last: bool) -> None: ...
    async def reset_for_user(self, database: str | None) -> None: ...
    def close(self) -> None: ...


class SessionFactory(Protocol):
    """Opens the session for a client that has just authenticated.

    Raises MySQLError (sent to the client instead of the login OK), e.g. a backend's own
    error such as 1049 unknown database, or 2003 when no backend can be reached.
    """

    async def open_session(
        self, link: ClientLink, processes: Processes, *, capabilities: int, collation: int,
        database: str | None, attrs: dict[str, str], mariadb_capabilities: int = 0,
    ) -> Session: ...


class RelayFactory:
    """Every session relays onto its own connection to one backend (issue [A])."""

    def __init__(self, address: BackendAddress, connect_timeout_s: float) -> None:
        self.address = address
        self.connect_timeout_s = connect_timeout_s

    async def open_session(
        self, link: ClientLink, processes: Processes, *, capabilities: int, collation: int,
        database: str | None, attrs: dict[str, str], mariadb_capabilities: int = 0,
    ) -> "RelaySession":
        backend = await BackendConnection.open(
            self.address, capabilities=capabilities, collation=collation, database=database,
            connect_attrs=attrs, timeout_s=self.connect_timeout_s, mariadb_capabilities=mariadb_capabilities,
        )
        return RelaySession(link, backend, processes)


class RelaySession:
    """One client session on one backend connection (DESIGN §4, issue [A])."""

    def __init__(self, link: ClientLink, backend: BackendConnection, processes: Processes) -> None:
        self.link = link
        self.backend = backend
        self.processes = processes
        self.status = backend.handshake.status if backend.handshake else 0
        self.closed = False
        self._task: asyncio.Task[None] | None = None
        self._cmd_seq = 0
        self._log = log.bind(conn_id=link.conn_id)
        # Flow control both ways: a slow client pauses the backend (front end), and a backend
        # that does not take our writes pauses the client (here).
        backend.on_pause_writing = lambda: link.pause_reading("backend")
        backend.on_resume_writing = lambda: link.unpause_reading("backend")

    # --- hot path -------------------------------------------------------------------------------

    def on_command(self, raw: bytes, last_seq: int = 0) -> None:
        """A complete command from the client: raw packet(s) with headers, sequence id 0 first;
        `last_seq` is the sequence id of its last packet (0 unless it was over 16 MiB)."""
        cmd = raw[4] if len(raw) > 4 else -1
        self._cmd_seq = last_seq
        if cmd == _COM_QUERY:
            m = kill_statement(raw)
            if m is not None:
                self._spawn(self._kill_statement(m))
                return
        expect = EXPECT_BY_COMMAND.get(cmd)
        if expect is None:
            self._spawn(self._local_command(cmd, raw))
            return
        backend = self.backend
        if backend.closed:
            self.link.send_error(BackendGone(f"MySQL server has gone away (backend {backend.address} closed the connection)"), self._cmd_seq + 1)
            self.close()
            return
        backend.relay(raw, expect, self.link.transport, self._on_done, self._on_lost)

    def _on_done(self, scanner: ResponseScanner) -> None:
        if scanner.status_seen:  # else the session's status is what it was (an ERR, a bare prepare)
            self.status = scanner.status
        if scanner.infile:
            self.link.begin_infile()
            return
        if scanner.error is not None and scanner.error[0] in (1927, 1053):
            # The backend connection was killed or is shutting down: the session cannot go on.
            self.close()
            return
        self.link.command_done()

    def _on_lost(self, relayed_any: bool) -> None:
        if not relayed_any:
            self.link.send_error(
                BackendLost(f"Lost connection to backend {self.backend.address} during query"), self._cmd_seq + 1
            )
        self._log.warning("backend_lost", backend=str(self.backend.address), mid_result=relayed_any)
        self.close()

    def on_infile_packet(self, raw: bytes, last: bool) -> None:
        """A packet of LOCAL INFILE data from the client; `last` for the empty closing packet."""
        self.backend.relay_more(raw)
        if last:
            self.backend.resume_after_infile(self.link.transport, self._on_done, self._on_lost)

    # --- slow path ------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[bool | None]) -> None:
        """Run a slow-path command. The coroutine answers the client itself and the command is
        then done — unless it returns True: it has started a relay, whose callbacks finish the
        command. A MySQLError it raises is the answer; any other exception is a bug: the client
        gets an internal error and the session is closed."""

        async def run() -> None:
            try:
                relaying = await coro
            except MySQLError as exc:
                self.link.send_error(exc, self._cmd_seq + 1)
                relaying = False
            except Exception:  # noqa: BLE001 - a bug must not take the process down
                self._log.exception("session_error")
                self.link.send_error(MySQLError("grproxy internal error; see the proxy log"), self._cmd_seq + 1)
                self.close()
                return
            finally:
                self._task = None
            if relaying is not True and not self.closed:
                self.link.command_done()

        self._task = task = asyncio.get_running_loop().create_task(run())
        # A session closed before the task ran cancels it unstarted: close the coroutine then,
        # or Python warns that it was never awaited.
        task.add_done_callback(lambda _t: coro.close() if hasattr(coro, "close") else None)

    async def _local_command(self, cmd: int, raw: bytes) -> None:
        if cmd == Command.PROCESS_KILL and len(raw) >= 9:
            target = int.from_bytes(raw[5:9], "little")
            await self.processes.kill(target, query_only=False, by=self.link)
            if not self.closed:
                self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)
            return
        if cmd in REFUSED_COMMANDS:
            raise NotSupported(f"grproxy does not relay {Command(cmd).name} (command 0x{cmd:02x})")
        name = Command(cmd).name if cmd in Command._value2member_map_ else f"0x{cmd:02x}"
        raise UnknownCommand(f"Unknown command {name}")

    async def _kill_statement(self, m: re.Match[bytes]) -> None:
        target = m.group("target").decode("utf-8", "replace").rstrip(";")
        if m.group("id") is not None:
            raise NotSupported("KILL QUERY ID (by query id) is not supported through grproxy; use KILL QUERY <connection id>")
        if not target.isdigit():
            if target.upper() == "USER":
                raise NotSupported("KILL USER is not supported through grproxy (it would reach every session)")
            raise ParseError(f"You have an error in your SQL syntax near '{target}'")
        query_only = (m.group("kind") or b"").upper() == b"QUERY"
        await self.processes.kill(int(target), query_only=query_only, by=self.link)
        if not self.closed:
            self.link.send_packet(ok_payload(self.status), self._cmd_seq + 1)

    # --- lifecycle ------------------------------------------------------------------------------

    async def reset_for_user(self, database: str | None) -> None:
        """After COM_CHANGE_USER: a fresh backend session state, then the new default schema."""
        await self.backend.command(Command.RESET_CONNECTION)
        if database:
            await self.backend.command(Command.INIT_DB, database.encode("utf-8"))
        self.status = 0x0002

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._close_backend()
        self.link.close()

    def _close_backend(self) -> None:
        """Close the session's backend connection (when the session closes)."""
        self.backend.close()

