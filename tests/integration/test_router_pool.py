"""router.pool.MemberPool against a real server: reuse after reset, the never-return rule, bounds.

The pool is protocol-level (it does not care whether the port is a member port or a server), so a
plain MariaDB backend stands in for a member port here; the router's end-to-end tests use member
ports.
"""

from __future__ import annotations

import asyncio

import pytest

from grproxy.mysqld import ServerHandle, free_port
from replication.protocol.backend import BackendAddress
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.protocol.errors import BackendUnavailable, TooManyConnections
from router.pool import MemberPool, PoolKey

KEY = PoolKey(int(OWN_CAPABILITIES), UTF8MB4_GENERAL_CI)
LATIN1_KEY = PoolKey(int(OWN_CAPABILITIES), 8)  # latin1_swedish_ci


def _address(backend: ServerHandle) -> BackendAddress:
    return BackendAddress(backend.host, backend.port, "grproxy", "grproxy", name="pool test")


async def _settle() -> None:
    for _ in range(50):  # the reset on release runs in a task: let it finish
        await asyncio.sleep(0.01)


def test_released_connection_is_reset_and_reused(backend: ServerHandle) -> None:
    async def run() -> None:
        pool = MemberPool(_address(backend))
        conn = await pool.acquire(KEY)
        await conn.execute("SET @leftover = 42")
        await conn.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
        thread = conn.thread_id
        pool.release(conn, KEY, reusable=True)
        await _settle()
        assert pool.idle_connections == 1
        again = await pool.acquire(KEY)
        assert again.thread_id == thread and pool.reused == 1 and pool.opened == 1
        r = await again.execute("SELECT @leftover, @@SESSION.sql_mode = @@GLOBAL.sql_mode")
        assert r.rows == [(None, b"1")]  # the reset forgot the previous session's state
        pool.release(again, KEY, reusable=False)
        pool.close()

    asyncio.run(run())


def test_connection_with_state_is_never_pooled(backend: ServerHandle) -> None:
    async def run() -> None:
        pool = MemberPool(_address(backend))
        conn = await pool.acquire(KEY)
        await conn.execute("BEGIN")
        pool.release(conn, KEY, reusable=False)  # in a transaction: the session says so
        await _settle()
        assert conn.closed and pool.idle_connections == 0 and pool.open_connections == 0
        fresh = await pool.acquire(KEY)
        assert fresh.thread_id != conn.thread_id
        fresh.close()  # broken while in use: released afterwards, it is not kept
        pool.release(fresh, KEY, reusable=True)
        assert pool.open_connections == 0 and pool.idle_connections == 0
        pool.close()

    asyncio.run(run())


def test_connections_are_handed_out_only_to_the_same_wire_settings(backend: ServerHandle) -> None:
    async def run() -> None:
        pool = MemberPool(_address(backend))
        conn = await pool.acquire(KEY)
        pool.release(conn, KEY, reusable=True)
        await _settle()
        other = await pool.acquire(LATIN1_KEY)
        assert other.thread_id != conn.thread_id
        r = await other.execute("SELECT @@character_set_client")
        assert r.rows == [(b"latin1",)]
        assert pool.idle_connections == 1  # the utf8mb4 one is still there for its kind
        pool.release(other, LATIN1_KEY, reusable=False)
        pool.close()

    asyncio.run(run())


def test_bound_waits_then_refuses_with_1040(backend: ServerHandle) -> None:
    async def run() -> None:
        pool = MemberPool(_address(backend), max_connections=2, acquire_timeout_s=0.3)
        a = await pool.acquire(KEY)
        b = await pool.acquire(KEY)
        with pytest.raises(TooManyConnections) as exc:
            await pool.acquire(KEY)
        assert exc.value.errno == 1040 and "bound of 2" in exc.value.message
        # A waiter gets the connection released while it waits.
        pool.acquire_timeout_s = 5.0
        waiter = asyncio.create_task(pool.acquire(KEY))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        pool.release(a, KEY, reusable=True)
        c = await waiter
        assert c.thread_id == a.thread_id and pool.open_connections == 2
        for conn in (b, c):
            pool.release(conn, KEY, reusable=False)
        assert pool.open_connections == 0
        pool.close()

    asyncio.run(run())


def test_idle_bound_closes_the_surplus(backend: ServerHandle) -> None:
    async def run() -> None:
        pool = MemberPool(_address(backend), idle_max=1)
        conns = [await pool.acquire(KEY) for _ in range(3)]
        for conn in conns:
            pool.release(conn, KEY, reusable=True)
        await _settle()
        assert pool.idle_connections == 1 and pool.open_connections == 1
        assert sum(c.closed for c in conns) == 2
        pool.close()
        assert pool.open_connections == 0

    asyncio.run(run())


def test_unreachable_member_is_2003() -> None:
    async def run() -> None:
        pool = MemberPool(BackendAddress("127.0.0.1", free_port(), "x", "y"), connect_timeout_s=1.0)
        with pytest.raises(BackendUnavailable) as exc:
            await pool.acquire(KEY)
        assert exc.value.errno == 2003 and pool.open_connections == 0

    asyncio.run(run())


def test_drop_idle_closes_only_idle_connections(backend: ServerHandle) -> None:
    async def run() -> None:
        pool = MemberPool(_address(backend))
        idle, in_use = await pool.acquire(KEY), await pool.acquire(KEY)
        pool.release(idle, KEY, reusable=True)
        await _settle()
        assert pool.drop_idle() == 1 and idle.closed and not in_use.closed
        assert pool.open_connections == 1 and pool.idle_connections == 0
        fresh = await pool.acquire(KEY)
        assert fresh.thread_id not in (idle.thread_id, in_use.thread_id)
        for conn in (in_use, fresh):
            pool.release(conn, KEY, reusable=False)
        pool.close()

    asyncio.run(run())
