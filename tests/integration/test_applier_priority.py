"""Applier priority (DESIGN §5): a certified remote transaction never waits behind a local open one.

Two members in multi-primary mode run in this test's event loop (real MariaDB backends, real
TCP group communication); clients are PyMySQL connections on their member ports. A session on
member 0 holds an uncommitted write of a row; member 1 commits a conflicting write of it. The
applier of member 0 must get past the local transaction's locks (its lock watch dooms it), the
remote write must be applied there within a liveness bound, the local client gets 3101 at its
next statement, and every backend ends identical. A local transaction that is already prepared
(broadcast, waiting for the group's verdict) is never doomed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pymysql
import pytest

from grproxy.mysqld import ServerHandle
from replication.protocol.backend import BackendConnection
from test_member_ports import LoopThread, PortGroup, backend_rows, reset_backends

LIVENESS_S = 30  # the remote write must be applied on member 0 within this (no speed assertion)
DOOMED = {3101, 1213}  # what a transaction that lost to the group's order answers


@pytest.fixture(scope="module")
def backends(backend_factory) -> list[ServerHandle]:  # type: ignore[no-untyped-def]
    return [backend_factory(f"priority-member{i}") for i in range(2)]


@pytest.fixture
def loop() -> Any:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture
def group(backends: list[ServerHandle], loop: LoopThread) -> Any:
    reset_backends(backends)
    g = PortGroup(backends, single_primary=False)
    loop.run(g.start())
    c = g.connect(0)
    with c.cursor() as cur:
        cur.execute("CREATE DATABASE app")
        cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
        cur.execute("INSERT INTO app.t VALUES (1, 0), (2, 0)")
    c.close()
    loop.run(g.wait_converged())
    yield g
    loop.run(g.stop())


def converged_and_identical(group: PortGroup, loop: LoopThread, backends: list[ServerHandle]) -> None:
    loop.run(group.wait_converged(), timeout_s=LIVENESS_S + 5)
    sums = {backend_rows(b, "CHECKSUM TABLE app.t")[0][1] for b in backends}
    assert len(sums) == 1, sums


def errno_of(cur: Any, sql: str) -> int | None:
    try:
        cur.execute(sql)
    except pymysql.err.MySQLError as exc:
        return int(exc.args[0])
    return None


def test_remote_write_aborts_idle_local_transaction(group: PortGroup, loop: LoopThread,
                                                    backends: list[ServerHandle]) -> None:
    local, remote = group.connect(0), group.connect(1)
    m0 = group.members[0]
    doomed_before = m0.stats_doomed
    with local.cursor() as a, remote.cursor() as b:
        a.execute("BEGIN")
        a.execute("UPDATE app.t SET v = 1 WHERE id = 1")  # then idle, holding the row lock
        b.execute("UPDATE app.t SET v = 10 WHERE id = 1")  # certified: a was never broadcast
        converged_and_identical(group, loop, backends)  # member 0 applied it past a's lock
        assert errno_of(a, "COMMIT") in DOOMED
        a.execute("SELECT v FROM app.t WHERE id = 1")  # the session goes on, outside a transaction
        assert a.fetchone() == (10,)
        a.execute("UPDATE app.t SET v = 2 WHERE id = 2")  # and writes again
    converged_and_identical(group, loop, backends)
    assert {backend_rows(b, "SELECT v FROM app.t ORDER BY id")[0][0] for b in backends} == {10}
    assert m0.stats_doomed == doomed_before + 1
    assert m0.applier.stats_blockers_doomed >= 1
    assert m0.local_stats().local_rollback >= 1
    local.close()
    remote.close()


def test_remote_write_kills_busy_local_statement(group: PortGroup, loop: LoopThread,
                                                 backends: list[ServerHandle]) -> None:
    local, remote = group.connect(0), group.connect(1)
    busy: list[int | None] = []
    with local.cursor() as a, remote.cursor() as b:
        a.execute("BEGIN")
        a.execute("UPDATE app.t SET v = 1 WHERE id = 1")
        # The local session is busy with a long statement of its own while it holds the lock.
        t = threading.Thread(target=lambda: busy.append(errno_of(a, "SELECT SLEEP(60)")))
        t.start()
        try:
            wait_for_lock_holder(backends[0], "SLEEP(60)")
            b.execute("UPDATE app.t SET v = 20 WHERE id = 1")
            converged_and_identical(group, loop, backends)
        finally:
            t.join(LIVENESS_S + 35)
        # Its statement was interrupted (KILL QUERY): the client hears what a doomed transaction
        # gets, 3101, not the kill's 1317, and the transaction is over (rolled back).
        assert busy and busy[0] in DOOMED, busy
        assert errno_of(a, "SELECT 1") is None  # a new transaction
        a.execute("SELECT v FROM app.t WHERE id = 1")
        assert a.fetchone() == (20,)
    converged_and_identical(group, loop, backends)
    assert group.members[0].applier.stats_blockers_killed >= 1
    local.close()
    remote.close()


def test_remote_write_interrupts_busy_autocommit_statement(group: PortGroup, loop: LoopThread,
                                                           backends: list[ServerHandle]) -> None:
    local, remote = group.connect(0), group.connect(1)
    busy: list[int | None] = []
    with local.cursor() as a, remote.cursor() as b:
        # An autocommit write that holds its row lock for a long time (SLEEP after the lock).
        t = threading.Thread(target=lambda: busy.append(
            errno_of(a, "UPDATE app.t SET v = 1 + SLEEP(60) WHERE id = 1")))
        t.start()
        try:
            wait_for_lock_holder(backends[0], "SLEEP(60)")
            b.execute("UPDATE app.t SET v = 30 WHERE id = 1")
            converged_and_identical(group, loop, backends)
        finally:
            t.join(LIVENESS_S + 35)
        assert busy and busy[0] in DOOMED  # the statement is its transaction: it answers as one that lost
        a.execute("SELECT v FROM app.t WHERE id = 1")
        assert a.fetchone() == (30,)
    local.close()
    remote.close()


def wait_for_lock_holder(backend: ServerHandle, text: str) -> None:
    """Until a transaction running a statement containing `text` holds locks on `backend`."""
    deadline = time.monotonic() + LIVENESS_S
    while time.monotonic() < deadline:
        found = backend_rows(backend, "SELECT COUNT(*) FROM information_schema.INNODB_TRX "
                                      f"WHERE trx_query LIKE '%{text}%' AND trx_rows_locked > 0")
        if found[0][0]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no transaction running {text!r} took a lock")


def test_remote_ddl_waiting_on_metadata_lock_aborts_local_transaction(group: PortGroup, loop: LoopThread,
                                                                      backends: list[ServerHandle]) -> None:
    local, remote = group.connect(0), group.connect(1)
    with local.cursor() as a, remote.cursor() as b:
        a.execute("BEGIN")
        a.execute("UPDATE app.t SET v = 3 WHERE id = 2")  # holds app.t's metadata lock until it ends
        b.execute("ALTER TABLE app.t ADD COLUMN w INT DEFAULT 7")
        converged_and_identical(group, loop, backends)
        assert errno_of(a, "COMMIT") in DOOMED
    for backend in backends:
        assert backend_rows(backend, "SELECT id, v, w FROM app.t ORDER BY id") == [(1, 0, 7), (2, 0, 7)]
    local.close()
    remote.close()


def test_prepared_local_transaction_is_not_doomed(group: PortGroup, loop: LoopThread) -> None:
    """A prepared XA transaction registered as preparing blocks an applier-like transaction:
    the lock watch sees it and leaves it alone; the same one not yet preparing is doomed."""
    m0 = group.members[0]

    async def scenario() -> tuple[int, int | None, int, int | None]:
        holder = await m0.connect()
        waiter = await m0.connect()
        doomed: list[int] = []
        txn = m0.open_txn(on_doom=lambda: doomed.append(1), thread_id=holder.thread_id)
        try:
            await holder.execute_all("XA START 'prio';UPDATE app.t SET v = 5 WHERE id = 1;"
                                     "XA END 'prio';XA PREPARE 'prio'")
            txn.preparing = True
            await waiter.execute("BEGIN")
            waiting = waiter.execute("UPDATE app.t SET v = 6 WHERE id = 1")
            task = asyncio.ensure_future(waiting)
            await asyncio.sleep(0.3)  # InnoDB's lock-wait tables lag up to 0.1 s
            assert not task.done()
            prepared_locals = await m0.applier.check_lock_waits({waiter.thread_id: 10**9})
            prepared_doomed = txn.doomed_by
            txn.preparing = False  # the same blocker, were it still ACTIVE
            active_locals = await m0.applier.check_lock_waits({waiter.thread_id: 10**9})
            active_doomed = txn.doomed_by
            await holder.execute("XA ROLLBACK 'prio'")
            await task
            await waiter.execute("ROLLBACK")
            return prepared_locals, prepared_doomed, active_locals, active_doomed
        finally:
            m0.close_txn(txn)
            _close(holder, waiter)

    prepared_locals, prepared_doomed, active_locals, active_doomed = loop.run(scenario())
    assert (prepared_locals, prepared_doomed) == (0, None)
    assert (active_locals, active_doomed) == (1, 10**9)


def _close(*conns: BackendConnection) -> None:
    for conn in conns:
        conn.close()
