"""Bounded pools of connections from the router to one member's member port (DESIGN §6).

Theory of operation
-------------------

A router session holds at most one connection per member it has used, for as long as the client
stays connected (statements then go out without a pool round trip: the hot path is a relay on a
connection the session already holds). Pools make connections outlive sessions: when a client
leaves, each of its member connections is *released*, and the rule is

    a connection in a transaction, pinned, or poisoned never returns to a pool;

every other one is reset (COM_RESET_CONNECTION: the member rolls back, forgets session variables,
temporary tables, prepared statements and locks, and puts the session's consistency level back
to the member's default) before it is idle again. The next session that needs a connection to
that member with the same wire settings takes it instead of opening one.

Wire settings (`PoolKey`) are what a connection cannot change after the handshake and what shapes
the bytes relayed to the client: the client's capability flags, its character-set collation and
MariaDB's extended capabilities. A connection is only handed to a session with the same key.

Bounds:
* `max_connections` per member: open connections, idle or in use. At the bound `acquire` waits
  for a release up to `acquire_timeout_s`, then raises TooManyConnections (1040), as a server
  does at max_connections.
* `idle_max` per member: idle connections kept; a release beyond it closes the connection.
* `idle_timeout_s`: an idle connection older than this is closed rather than handed out (the
  member may have dropped it on wait_timeout).

A connection that cannot be opened raises BackendUnavailable (2003) or the member's own error.
The pool never retries on its own: what to do when a member cannot be reached is the router's
decision (it marks the member down and routes elsewhere when nothing was sent).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import structlog

from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import Command
from replication.protocol.errors import MySQLError, TooManyConnections

__all__ = ["POOL_CONNECTIONS_MAX", "POOL_IDLE_MAX", "POOL_IDLE_TIMEOUT_S", "PoolKey", "MemberPool"]

POOL_CONNECTIONS_MAX = 512  # open connections to one member (idle + in use)
POOL_IDLE_MAX = 64  # idle connections kept per member
POOL_IDLE_TIMEOUT_S = 300.0  # an idle connection older than this is closed, not reused
RESET_TIMEOUT_S = 5.0  # COM_RESET_CONNECTION on release; slower → the connection is closed

log = structlog.get_logger("grproxy.router.pool")


@dataclass(frozen=True, slots=True)
class PoolKey:
    """The handshake settings a pooled connection was opened with."""

    capabilities: int
    collation: int
    mariadb_capabilities: int = 0


class MemberPool:
    """Connections to one member (see the module docstring for the rules and bounds)."""

    def __init__(self, address: BackendAddress, *, max_connections: int = POOL_CONNECTIONS_MAX,
                 idle_max: int = POOL_IDLE_MAX, idle_timeout_s: float = POOL_IDLE_TIMEOUT_S,
                 connect_timeout_s: float = 5.0, acquire_timeout_s: float = 5.0) -> None:
        self.address = address
        self.max_connections = max_connections
        self.idle_max = idle_max
        self.idle_timeout_s = idle_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.acquire_timeout_s = acquire_timeout_s
        self._idle: dict[PoolKey, deque[tuple[float, BackendConnection]]] = {}
        self._idle_count = 0
        self._open = 0  # idle + in use + being opened
        self._released = asyncio.Event()
        self._closed = False
        self._resets: set[asyncio.Task[None]] = set()
        # Counters for tests and the status output.
        self.opened = 0
        self.reused = 0

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return self._idle_count

    async def acquire(self, key: PoolKey) -> BackendConnection:
        """An idle connection with `key`, or a new one. Raises TooManyConnections (1040) after
        waiting `acquire_timeout_s` at the bound, BackendUnavailable (2003) or the member's own
        error when a new connection fails."""
        if self._closed:
            raise TooManyConnections(f"grproxy's pool for member {self.address} is closed")
        conn = self._take_idle(key)
        if conn is not None:
            self.reused += 1
            return conn
        deadline = time.monotonic() + self.acquire_timeout_s
        while self._open >= self.max_connections:
            if not self._evict_one_idle():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TooManyConnections(
                        f"Too many connections (grproxy's pool to member {self.address} is at its bound of "
                        f"{self.max_connections})")
                self._released.clear()
                try:
                    await asyncio.wait_for(self._released.wait(), remaining)
                except TimeoutError:
                    pass
                conn = self._take_idle(key)
                if conn is not None:
                    self.reused += 1
                    return conn
        self._open += 1
        try:
            conn = await BackendConnection.open(
                self.address, capabilities=key.capabilities, collation=key.collation,
                timeout_s=self.connect_timeout_s, mariadb_capabilities=key.mariadb_capabilities,
            )
        except BaseException:
            self._open -= 1
            self._released.set()
            raise
        self.opened += 1
        return conn

    def release(self, conn: BackendConnection, key: PoolKey, *, reusable: bool) -> None:
        """Give back a connection taken with `acquire`. `reusable` False (a transaction or pinned
        state on it, or any doubt) closes it; otherwise it is reset and kept idle, within
        `idle_max`."""
        if conn.closed or conn.poisoned or conn.busy or not reusable or self._closed:
            self._discard(conn)
            return
        task = asyncio.get_running_loop().create_task(self._reset_and_keep(conn, key))
        self._resets.add(task)
        task.add_done_callback(self._resets.discard)

    async def _reset_and_keep(self, conn: BackendConnection, key: PoolKey) -> None:
        try:
            async with asyncio.timeout(RESET_TIMEOUT_S):
                await conn.command(Command.RESET_CONNECTION)
        except (MySQLError, TimeoutError, OSError) as exc:
            log.debug("pool_reset_failed", member=str(self.address), error=repr(exc))
            self._discard(conn)
            return
        except asyncio.CancelledError:
            self._discard(conn)
            raise
        if self._closed or self._idle_count >= self.idle_max or conn.closed:
            self._discard(conn)
            return
        self._idle.setdefault(key, deque()).append((time.monotonic(), conn))
        self._idle_count += 1
        self._released.set()

    def _take_idle(self, key: PoolKey) -> BackendConnection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            since, conn = idle.pop()  # most recently used first: warmest, least likely timed out
            self._idle_count -= 1
            if conn.closed or now - since > self.idle_timeout_s:
                self._discard(conn)
                continue
            return conn
        return None

    def _evict_one_idle(self) -> bool:
        """Close the oldest idle connection of any key, to make room for another key."""
        oldest: tuple[float, PoolKey] | None = None
        for key, idle in self._idle.items():
            if idle and (oldest is None or idle[0][0] < oldest[0]):
                oldest = (idle[0][0], key)
        if oldest is None:
            return False
        _, conn = self._idle[oldest[1]].popleft()
        self._idle_count -= 1
        self._discard(conn)
        return True

    def _discard(self, conn: BackendConnection) -> None:
        conn.close()
        self._open -= 1
        self._released.set()

    def drop_idle(self) -> int:
        """Close every idle connection (their session defaults are stale, e.g. after a change of
        the member's global consistency level); returns how many."""
        dropped = 0
        for idle in self._idle.values():
            while idle:
                _, conn = idle.popleft()
                self._idle_count -= 1
                self._discard(conn)
                dropped += 1
        return dropped

    def close(self) -> None:
        """Close every idle connection; connections in use are closed when released."""
        self._closed = True
        self.drop_idle()
        for task in list(self._resets):
            task.cancel()
