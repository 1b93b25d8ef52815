"""The router of issue [D] end to end: a `grproxy sandbox` (real MariaDB backends, one grproxy
member process each, the router on the client port) driven by real clients (PyMySQL and
mysql-connector-python) as an application would drive it.

Which member served a statement is told by `SELECT @@port` (the backend's port, mapped back to
the member through the status file). Appliers are held back as MySQL's own
gr_consistent_reads_before test does: `LOCK TABLES t READ` on a secondary's backend.

The shared sandbox (3 members, single-primary) serves every test that leaves it as it found
it; tests that kill members, and the multi-primary one, start their own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import mysql.connector
import pymysql
import pytest

if TYPE_CHECKING:  # the fixtures hand these out; `conftest` is no importable module at run time
    from conftest import MemberInfo, Sandbox

pytestmark = pytest.mark.e2e

ER_QUERY_INTERRUPTED = 1317
ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792
ER_GR_HOLD_WAIT_TIMEOUT = 3781
CR_SERVER_GONE_ERROR = 2006
CR_SERVER_LOST = 2013
BLOCKED_CHECK_S = 1.0  # how long a held statement must still be waiting
JOIN_TIMEOUT_S = 30.0  # bound on anything that should return once the hold is released
RYW_WORKERS = 8
UPDATES_PER_SESSION = 300  # successive writes of one row per session (multi-primary self-conflict test)
RYW_PAIRS = 4_000  # write→read pairs over RYW_WORKERS sessions (~20 s on a quiet 2-core machine)
FAILOVER_DEADLINE_S = 30.0


# --- helpers -------------------------------------------------------------------------------------


def rows(conn: Any, sql: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def one(conn: Any, sql: str, args: Sequence[Any] | None = None) -> tuple[Any, ...]:
    result = rows(conn, sql, args)
    assert len(result) == 1, f"{sql}: {result}"
    return result[0]


def port_of(conn: Any) -> int:
    return int(one(conn, "SELECT @@port")[0])


def errno_of(exc: BaseException) -> int | None:
    if isinstance(exc, mysql.connector.Error):
        return exc.errno
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def backend_ports(members: Sequence[MemberInfo]) -> set[int]:
    return {m.backend.port for m in members}


class Background:
    """Runs `fn` in a thread; `.result` / `.error` once it returned, `.returned` to check."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as exc:  # noqa: BLE001 - reported by join()
                self.error = exc
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    @property
    def returned(self) -> bool:
        return self.done.is_set()

    def join(self, timeout_s: float = JOIN_TIMEOUT_S) -> Any:
        assert self.done.wait(timeout_s), f"still running after {timeout_s:.0f}s"
        if self.error is not None:
            raise self.error
        return self.result


class HeldAppliers:
    """`LOCK TABLES <table> READ` on the backends of `members`: their appliers cannot apply a
    change to that table until release()."""

    def __init__(self, sandbox: Sandbox, members: Sequence[MemberInfo], table: str) -> None:
        self.sandbox = sandbox
        self.members = list(members)
        self.table = table
        self.conns: list[pymysql.connections.Connection] = []

    def lock(self) -> None:
        for m in self.members:
            c = self.sandbox.connect_backend(m)
            self.conns.append(c)
            with c.cursor() as cur:
                cur.execute(f"LOCK TABLES {self.table} READ")

    def release(self) -> None:
        for c in self.conns:
            with c.cursor() as cur:
                cur.execute("UNLOCK TABLES")
            c.close()
        self.conns.clear()

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(Exception):
                c.close()
        self.conns.clear()


@contextlib.contextmanager
def held(sandbox: Sandbox, members: Sequence[MemberInfo], table: str = "rt.t") -> Iterator[HeldAppliers]:
    h = HeldAppliers(sandbox, members, table)
    try:
        h.lock()
        yield h
    finally:
        h.close()  # closing the connections releases whatever is still locked


def wait_backends(sandbox: Sandbox, sql: str, expected: Any, timeout_s: float = 30,
                  members: Sequence[MemberInfo] | None = None) -> None:
    """Until `sql` returns `expected` (first column of the first row) on every backend."""
    deadline = time.monotonic() + timeout_s
    for m in members if members is not None else sandbox.members:
        seen: Any = None
        while True:
            try:
                with contextlib.closing(sandbox.connect_backend(m)) as c:
                    r = rows(c, sql)
                    seen = r[0][0] if r else None
            except pymysql.err.MySQLError as exc:
                seen = exc
            if seen == expected:
                break
            assert time.monotonic() < deadline, f"{sql} on {m.id}'s backend: {seen!r}, expected {expected!r}"
            time.sleep(0.1)


def create_schema(sandbox: Sandbox) -> None:
    """The tables the tests use, created through the router and present on every backend."""
    with contextlib.closing(sandbox.connect()) as c, c.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS rt")
        cur.execute("CREATE TABLE rt.t (id INT PRIMARY KEY, v INT NOT NULL)")
        cur.execute("INSERT INTO rt.t VALUES (1, 0)")
        cur.execute("CREATE TABLE rt.writes (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(40) NOT NULL, "
                    "port INT NOT NULL)")
        cur.execute("CREATE TABLE rt.ids (id INT AUTO_INCREMENT PRIMARY KEY, worker INT NOT NULL, n INT NOT NULL)")
        cur.execute("CREATE TABLE rt.counter (id INT PRIMARY KEY, n BIGINT NOT NULL)")
        cur.execute("INSERT INTO rt.counter VALUES " + ",".join(f"({w}, 0)" for w in range(RYW_WORKERS)))
        cur.execute("CREATE TABLE rt.ps (k INT PRIMARY KEY, port INT NOT NULL)")
        cur.execute("CREATE TABLE rt.state (id INT AUTO_INCREMENT PRIMARY KEY, port INT, x INT, "
                    "coll VARCHAR(64), tz VARCHAR(16), mode VARCHAR(200), db VARCHAR(64))")
    wait_backends(sandbox, "SELECT COUNT(*) FROM rt.counter", RYW_WORKERS)
    wait_backends(sandbox, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'rt'", 6)


@pytest.fixture(scope="module")
def sp(sandbox: Sandbox) -> Sandbox:
    """The module's 3-member single-primary sandbox with the schema in place; member1 (the
    bootstrapping member) is the primary."""
    assert sandbox.mode == "single-primary" and len(sandbox.members) == 3
    group = sandbox.group_members()
    assert sorted((g.state, g.role) for g in group) == [("ONLINE", "PRIMARY"), ("ONLINE", "SECONDARY"),
                                                         ("ONLINE", "SECONDARY")], group
    create_schema(sandbox)
    return sandbox


# --- read/write split ----------------------------------------------------------------------------


def test_autocommit_reads_go_to_secondaries(sp: Sandbox) -> None:
    secondaries = backend_ports(sp.secondaries())
    primary = sp.primary().backend.port

    c = sp.connect()
    ports = [port_of(c) for _ in range(100)]
    assert set(ports) <= secondaries, f"autocommit reads ran on {Counter(ports)}; primary {primary}, " \
                                      f"secondaries {secondaries}"
    c.close()

    # Across connections: new sessions spread over both secondaries.
    across: list[int] = []
    for _ in range(8):
        with contextlib.closing(sp.connect()) as c:
            across.append(port_of(c))
    assert set(across) == secondaries, f"reads of 8 new connections ran on {Counter(across)}; secondaries " \
                                       f"{secondaries}"

    # Concurrent sessions: both secondaries serve, never the primary.
    seen: list[int] = []
    lock = threading.Lock()

    def reader() -> None:
        with contextlib.closing(sp.connect()) as conn:
            mine = [int(one(conn, "SELECT @@port, SLEEP(0.005)")[0]) for _ in range(40)]
        with lock:
            seen.extend(mine)

    workers = [Background(reader) for _ in range(6)]
    for w in workers:
        w.join()
    assert set(seen) == secondaries, f"concurrent reads ran on {Counter(seen)}; secondaries {secondaries}"


def test_writes_and_locking_reads_go_to_the_primary(sp: Sandbox) -> None:
    primary = sp.primary()
    c = sp.connect()
    with c.cursor() as cur:
        cur.execute("INSERT INTO rt.writes (tag, port) SELECT 'insert-select', @@port")
        assert cur.rowcount == 1
        cur.execute("INSERT INTO rt.writes (tag, port) VALUES ('update', 0)")
        cur.execute("UPDATE rt.writes SET port = @@port WHERE tag = 'update'")
        assert cur.rowcount == 1
        cur.execute("SELECT @@port, v FROM rt.t WHERE id = 1 FOR UPDATE")
        assert cur.fetchone()[0] == primary.backend.port, "SELECT … FOR UPDATE did not run on the primary"
        cur.execute("SELECT @@port, v FROM rt.t WHERE id = 1 LOCK IN SHARE MODE")
        assert cur.fetchone()[0] == primary.backend.port, "SELECT … LOCK IN SHARE MODE did not run on the primary"
    c.close()
    with contextlib.closing(sp.connect_backend(primary)) as b:
        written = dict(rows(b, "SELECT tag, port FROM rt.writes WHERE tag IN ('insert-select', 'update')"))
    assert written == {"insert-select": primary.backend.port, "update": primary.backend.port}, \
        f"writes ran on {written}; the primary's backend is {primary.backend.port}"


def test_read_write_transaction_stays_on_the_primary(sp: Sandbox) -> None:
    primary = sp.primary().backend.port
    c = sp.connect()
    with c.cursor() as cur:
        cur.execute("BEGIN")
        ports = [port_of(c)]  # a read first: the transaction still belongs to the primary
        cur.execute("SELECT COUNT(*) FROM rt.writes")
        cur.execute("INSERT INTO rt.writes (tag, port) SELECT 'in-txn', @@port")
        ports.append(port_of(c))
        # Its own uncommitted row is visible: the same member, the same transaction.
        cur.execute("SELECT port FROM rt.writes WHERE tag = 'in-txn'")
        own = cur.fetchall()
        ports.append(port_of(c))
        cur.execute("COMMIT")
    assert ports == [primary] * 3, f"transaction statements ran on {ports}; primary {primary}"
    assert own == ((primary,),), own
    c.close()


def test_read_only_transaction_stays_on_one_secondary(sp: Sandbox) -> None:
    secondaries = backend_ports(sp.secondaries())
    c = sp.connect()
    with c.cursor() as cur:
        cur.execute("START TRANSACTION READ ONLY")
        ports = [port_of(c) for _ in range(10)]
        cur.execute("SELECT v FROM rt.t WHERE id = 1")
        ports.append(port_of(c))
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("UPDATE rt.t SET v = v WHERE id = 1")
        assert errno_of(info.value) == ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION, info.value
        ports.append(port_of(c))
        cur.execute("COMMIT")
    assert len(set(ports)) == 1 and ports[0] in secondaries, \
        f"a read-only transaction ran on {Counter(ports)}; secondaries {secondaries}"
    c.close()


def test_autocommit_off_opens_a_transaction_on_the_primary(sp: Sandbox) -> None:
    primary = sp.primary().backend.port
    secondaries = backend_ports(sp.secondaries())
    c = sp.connect(autocommit=False)
    with c.cursor() as cur:
        ports = [port_of(c)]  # the first statement opens the transaction, on the primary
        cur.execute("SELECT v FROM rt.t WHERE id = 1")
        cur.execute("INSERT INTO rt.writes (tag, port) SELECT 'autocommit-0', @@port")
        ports.append(port_of(c))
        cur.execute("SELECT port FROM rt.writes WHERE tag = 'autocommit-0'")
        own = cur.fetchall()
        c.commit()
        ports.append(port_of(c))  # the next transaction, again on the primary
        c.rollback()
    assert ports == [primary] * 3, f"statements under autocommit=0 ran on {ports}; primary {primary}"
    assert own == ((primary,),), f"the transaction did not see its own insert: {own}"
    c.autocommit(True)
    back = [port_of(c) for _ in range(5)]
    assert set(back) <= secondaries, f"reads after SET autocommit=1 ran on {back}"
    c.close()
    with contextlib.closing(sp.connect_backend(sp.primary())) as b:
        assert rows(b, "SELECT port FROM rt.writes WHERE tag = 'autocommit-0'") == [(primary,)]


# --- session state -------------------------------------------------------------------------------


STATE_SQL = ("SELECT @@port, @x, @@collation_connection, @@time_zone, @@sql_mode, DATABASE(), @@tx_isolation, "
             "TIMESTAMPDIFF(MINUTE, UTC_TIMESTAMP(), NOW())")
EXPECTED_STATE = (42, "utf8mb4_bin", "+05:00", "ANSI_QUOTES", "rt", "READ-COMMITTED", 300)


class Load:
    """Makes the secondaries busy in turn, so that a session reading meanwhile finds one of them
    clearly busier than the other and its reads move (the router keeps a session's reads on its
    previous member unless that one has more than one statement more in flight).

    `per_member` sessions per secondary hold a read-only transaction there (which keeps them on
    it); in turns, all of one secondary's run SELECT SLEEP(0.3) at once."""

    def __init__(self, sandbox: Sandbox, per_member: int = 3) -> None:
        self.by_port: dict[int, list[pymysql.connections.Connection]] = {
            p: [] for p in backend_ports(sandbox.secondaries())}
        for _ in range(100):
            if all(len(v) >= per_member for v in self.by_port.values()):
                break
            conn = sandbox.connect()
            rows(conn, "START TRANSACTION READ ONLY")
            port = one(conn, "SELECT @@port")[0]
            if len(self.by_port[port]) < per_member:
                self.by_port[port].append(conn)
            else:
                conn.rollback()
                conn.close()
        assert all(len(v) >= per_member for v in self.by_port.values()), \
            f"read-only transactions did not spread over the secondaries: { {p: len(v) for p, v in self.by_port.items()} }"
        self.stop = threading.Event()
        self.turns = 0
        self.worker = Background(self._run)

    def _run(self) -> None:
        while not self.stop.is_set():
            for conns in self.by_port.values():
                sleepers = [Background(lambda c=c: one(c, "SELECT SLEEP(0.3)")) for c in conns]
                for b in sleepers:
                    b.join()
                self.turns += 1

    def close(self) -> None:
        self.stop.set()
        self.worker.join()
        for conns in self.by_port.values():
            for conn in conns:
                conn.rollback()
                conn.close()


def test_session_state_follows_the_session_over_members(sp: Sandbox) -> None:
    primary = sp.primary().backend.port
    secondaries = backend_ports(sp.secondaries())
    c = sp.connect()
    with c.cursor() as cur:
        cur.execute("SET @x = 42")
        cur.execute("SET NAMES utf8mb4 COLLATE utf8mb4_bin")
        cur.execute("SET time_zone = '+05:00'")
        cur.execute("SET sql_mode = 'ANSI_QUOTES'")
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cur.execute("USE rt")

    load = Load(sp)
    seen: list[tuple[Any, ...]] = []
    try:
        while len(seen) < 50 or (len({r[0] for r in seen}) < 2 and len(seen) < 400):
            seen.append(one(c, STATE_SQL))
            time.sleep(0.005)
    finally:
        load.close()
    used = Counter(r[0] for r in seen)
    wrong = [r for r in seen if tuple(r[1:]) != EXPECTED_STATE]
    assert not wrong, f"{len(wrong)} of {len(seen)} reads lost the session's state, e.g. {wrong[:3]}"
    assert set(used) == secondaries, f"the session's reads ran on {dict(used)}; secondaries {secondaries} " \
                                     "(both should serve it while other sessions load them)"

    # A write (and a read in its transaction) on the primary sees the same state.
    with c.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO state (port, x, coll, tz, mode, db) "
                    "SELECT @@port, @x, @@collation_connection, @@time_zone, @@sql_mode, DATABASE()")
        in_txn = one(c, STATE_SQL)
        cur.execute("COMMIT")
    assert in_txn == (primary, *EXPECTED_STATE), in_txn
    with contextlib.closing(sp.connect_backend(sp.primary())) as b:
        written = rows(b, "SELECT port, x, coll, tz, mode, db FROM rt.state")
    assert written == [(primary, 42, "utf8mb4_bin", "+05:00", "ANSI_QUOTES", "rt")], written
    # ANSI_QUOTES is in force everywhere: "v" is a column name, not a string.
    assert one(c, 'SELECT "v" FROM t WHERE id = 1')[0] == one(c, "SELECT v FROM t WHERE id = 1")[0]
    c.close()


def test_session_state_with_mysql_connector(sp: Sandbox) -> None:
    """The same with mysql-connector-python: its own handshake collation and COM_INIT_DB."""
    secondaries = backend_ports(sp.secondaries())
    conns = [sp.connect_connector() for _ in range(4)]
    used: set[int] = set()
    for i, conn in enumerate(conns):
        conn.database = "rt"  # COM_INIT_DB
        cur = conn.cursor()
        cur.execute(f"SET @x = {100 + i}")
        cur.execute("SET time_zone = '-03:00'")
        for _ in range(10):
            cur.execute("SELECT @@port, @x, @@time_zone, DATABASE(), @@collation_connection")
            port, x, tz, db, coll = cur.fetchone()
            used.add(port)
            assert (x, tz, db, coll) == (100 + i, "-03:00", "rt", "utf8mb4_general_ci"), (port, x, tz, db, coll)
        cur.close()
    for conn in conns:
        conn.close()
    assert used == secondaries, f"4 sessions read on {used}; secondaries {secondaries}"


# --- connection-scoped functions and temporary tables --------------------------------------------


def test_last_insert_id_is_the_sessions_own(sp: Sandbox) -> None:
    per_worker = 40
    records: list[tuple[int, int, int]] = []  # (id, worker, n)
    problems: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        with contextlib.closing(sp.connect()) as c, c.cursor() as cur:
            for n in range(per_worker):
                cur.execute("INSERT INTO rt.ids (worker, n) VALUES (%s, %s)", (w, n))
                new_id = cur.lastrowid
                cur.execute("SELECT LAST_INSERT_ID()")
                asked = cur.fetchone()[0]
                cur.execute("SELECT worker, n FROM rt.ids WHERE id = LAST_INSERT_ID()")
                row = cur.fetchone()
                with lock:
                    if asked != new_id or row != (w, n) or not new_id:
                        problems.append(f"worker {w} insert {n}: lastrowid {new_id}, LAST_INSERT_ID() {asked}, "
                                        f"row {row}")
                    records.append((new_id, w, n))

    workers = [Background(lambda w=w: worker(w)) for w in range(4)]
    for b in workers:
        b.join(120)
    assert not problems, f"{len(problems)} wrong ids, e.g. {problems[:5]}"
    assert len(records) == 4 * per_worker and len({r[0] for r in records}) == len(records)
    with contextlib.closing(sp.connect_backend(sp.primary())) as b:
        stored = {r[0]: (r[1], r[2]) for r in rows(b, "SELECT id, worker, n FROM rt.ids")}
    wrong = [r for r in records if stored.get(r[0]) != r[1:]]
    assert not wrong, f"ids that do not hold the inserted row: {wrong[:5]}"

    # A multi-row insert: LAST_INSERT_ID() is the first generated id.
    with contextlib.closing(sp.connect()) as c, c.cursor() as cur:
        cur.execute("INSERT INTO rt.ids (worker, n) VALUES (99, 1), (99, 2), (99, 3)")
        first = cur.lastrowid
        assert one(c, "SELECT LAST_INSERT_ID()")[0] == first
        assert rows(c, "SELECT n FROM rt.ids WHERE id >= LAST_INSERT_ID() AND worker = 99 ORDER BY id") == \
            [(1,), (2,), (3,)]


def test_found_rows_and_row_count(sp: Sandbox) -> None:
    """FOUND_ROWS() and ROW_COUNT() answer about this session's previous statement."""
    with contextlib.closing(sp.connect()) as c, c.cursor() as cur:
        cur.execute("INSERT INTO rt.ids (worker, n) VALUES (98, 1), (98, 2), (98, 3)")
        cur.execute("SELECT SQL_CALC_FOUND_ROWS id FROM rt.ids WHERE worker = 98 LIMIT 1")
        assert one(c, "SELECT FOUND_ROWS()")[0] == 3
        cur.execute("UPDATE rt.ids SET n = n + 10 WHERE worker = 98")
        assert cur.rowcount == 3
        assert one(c, "SELECT ROW_COUNT()")[0] == 3, "ROW_COUNT() after an UPDATE of 3 rows"


def test_mysql_connector_lastrowid(sp: Sandbox) -> None:
    conn = sp.connect_connector()
    cur = conn.cursor()
    for n in range(5):
        cur.execute("INSERT INTO rt.ids (worker, n) VALUES (%s, %s)", (77, n))
        new_id = cur.lastrowid
        cur.execute("SELECT LAST_INSERT_ID()")
        assert cur.fetchone()[0] == new_id
        cur.execute("SELECT n FROM rt.ids WHERE id = %s", (new_id,))
        assert cur.fetchone() == (n,)
    cur.close()
    conn.close()


def test_temporary_table_pins_the_session(sp: Sandbox) -> None:
    c = sp.connect()
    with c.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE rt.tmp (id INT PRIMARY KEY, v VARCHAR(10))")
        cur.execute("INSERT INTO rt.tmp VALUES (1, 'one'), (2, 'two')")
        results = []
        for _ in range(20):
            cur.execute("SELECT @@port, GROUP_CONCAT(v ORDER BY id) FROM rt.tmp")
            results.append(cur.fetchone())
    ports = {r[0] for r in results}
    assert {r[1] for r in results} == {"one,two"}, results
    assert len(ports) == 1, f"reads of a temporary table ran on {ports}"
    # Another session has no such table.
    with contextlib.closing(sp.connect()) as other, pytest.raises(pymysql.err.ProgrammingError) as info:
        rows(other, "SELECT * FROM rt.tmp")
    assert errno_of(info.value) == 1146
    with c.cursor() as cur:
        cur.execute("DROP TEMPORARY TABLE rt.tmp")
    c.close()


# --- consistency levels --------------------------------------------------------------------------


def _v(conn: Any) -> int:
    return int(one(conn, "SELECT v FROM rt.t WHERE id = 1")[0])


def test_consistency_levels_through_the_router(sp: Sandbox) -> None:
    secondaries = sp.secondaries()
    assert len(secondaries) == 2
    writer = sp.connect()
    with writer.cursor() as cur:
        cur.execute("UPDATE rt.t SET v = 0 WHERE id = 1")
    wait_backends(sp, "SELECT v FROM rt.t WHERE id = 1", 0)

    # The variable as a user sees it through the router.
    c = sp.connect()
    assert one(c, "SELECT @@group_replication_consistency") == ("EVENTUAL",)
    with c.cursor() as cur:
        cur.execute("SET group_replication_consistency = 'BEFORE'")
        # On every member connection the session uses (reads spread while others load them).
        load = Load(sp)
        try:
            levels: list[tuple[Any, ...]] = []
            while len(levels) < 20 or (len({p for p, _ in levels}) < 2 and len(levels) < 300):
                levels.append(one(c, "SELECT @@port, @@group_replication_consistency"))
                time.sleep(0.005)
        finally:
            load.close()
        assert {v for _, v in levels} == {"BEFORE"}, Counter(levels)
        assert {p for p, _ in levels} == backend_ports(secondaries), Counter(levels)
        cur.execute("SET @@SESSION.group_replication_consistency = 4")
        assert one(c, "SELECT @@SESSION.group_replication_consistency, @@GLOBAL.group_replication_consistency") == \
            ("BEFORE_AND_AFTER", "EVENTUAL")
        cur.execute("SET SESSION group_replication_consistency = 3")
        assert one(c, "SELECT @@group_replication_consistency") == ("AFTER",)
        cur.execute("SET @@group_replication_consistency = EVENTUAL")
        assert one(c, "SELECT @@group_replication_consistency") == ("EVENTUAL",)
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("SET group_replication_consistency = 'SOMETIMES'")
        assert errno_of(info.value) == 1231
    c.close()
    with contextlib.closing(sp.connect()) as fresh:  # another session keeps the global default
        assert one(fresh, "SELECT @@group_replication_consistency") == ("EVENTUAL",)

    with held(sp, secondaries) as hold:
        with writer.cursor() as cur:
            cur.execute("UPDATE rt.t SET v = 1 WHERE id = 1")  # EVENTUAL: returns after the local commit
        # EVENTUAL reads on the held secondaries still see the old value: the test is sensitive.
        stale = []
        for _ in range(6):
            with contextlib.closing(sp.connect()) as r:
                stale.append((port_of(r), _v(r)))
        assert {v for _, v in stale} == {0}, f"EVENTUAL reads with both appliers held: {stale}"
        assert {p for p, _ in stale} == backend_ports(secondaries), stale

        # BEFORE, with a short wait_timeout bounding the wait: 3781.
        with contextlib.closing(sp.connect()) as r, r.cursor() as cur:
            cur.execute("SET SESSION wait_timeout = 2")
            cur.execute("SET @@SESSION.group_replication_consistency = 2")  # BEFORE
            started = time.monotonic()
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute("SELECT v FROM rt.t WHERE id = 1")
            waited = time.monotonic() - started
            assert errno_of(info.value) == ER_GR_HOLD_WAIT_TIMEOUT, info.value
            assert waited < 30, f"the BEFORE wait was not bounded by wait_timeout=2 ({waited:.1f}s)"

        # BEFORE waits until the appliers are released, then reads the new value.
        r = sp.connect()
        with r.cursor() as cur:
            cur.execute("SET group_replication_consistency = 'BEFORE'")
        read = Background(lambda: _v(r))
        time.sleep(BLOCKED_CHECK_S)
        assert not read.returned, f"a BEFORE read returned while both appliers were held: {read.result!r} " \
                                  f"{read.error!r}"
        hold.release()
        assert read.join() == 1, "a BEFORE read after the release did not see the write"
        r.close()

    # AFTER: COMMIT returns only once every ONLINE member applied the transaction.
    with held(sp, secondaries) as hold:
        a = sp.connect()
        with a.cursor() as cur:
            cur.execute("SET SESSION group_replication_consistency = 'AFTER'")
            cur.execute("BEGIN")
            cur.execute("UPDATE rt.t SET v = 2 WHERE id = 1")
        commit = Background(lambda: a.commit())
        time.sleep(BLOCKED_CHECK_S)
        assert not commit.returned, f"an AFTER COMMIT returned while a secondary had not applied it " \
                                    f"({commit.error!r})"
        hold.release()
        commit.join()
        a.close()
    # Having returned, the write is visible on every secondary, even to EVENTUAL reads.
    after = []
    for _ in range(6):
        with contextlib.closing(sp.connect()) as r:
            after.append((port_of(r), _v(r)))
    assert {v for _, v in after} == {2}, f"EVENTUAL reads after an AFTER commit: {after}"

    # BEFORE_AND_AFTER: its reads wait like BEFORE ...
    baa = sp.connect()
    with baa.cursor() as cur:
        cur.execute("SET group_replication_consistency = 'BEFORE_AND_AFTER'")
    with held(sp, secondaries) as hold:
        with writer.cursor() as cur:
            cur.execute("UPDATE rt.t SET v = 3 WHERE id = 1")
        read = Background(lambda: _v(baa))
        time.sleep(BLOCKED_CHECK_S)
        assert not read.returned, "a BEFORE_AND_AFTER read returned while both appliers were held"
        hold.release()
        assert read.join() == 3
    # ... and its commits wait like AFTER.
    with held(sp, secondaries) as hold:
        write = Background(lambda: rows(baa, "UPDATE rt.t SET v = 4 WHERE id = 1"))
        time.sleep(BLOCKED_CHECK_S)
        assert not write.returned, f"a BEFORE_AND_AFTER write returned while a secondary had not applied it " \
                                   f"({write.error!r})"
        hold.release()
        write.join()
    with contextlib.closing(sp.connect()) as r:
        assert _v(r) == 4
    baa.close()
    writer.close()


def test_read_your_writes_under_before(sp: Sandbox) -> None:
    """RYW_PAIRS write→read pairs: a write through the router, then a read through another router
    connection at BEFORE, which must see it (or something newer) on whatever member serves it."""
    per_worker = RYW_PAIRS // RYW_WORKERS
    stale: list[tuple[int, int, int]] = []
    pairs = Counter[str]()
    read_ports = Counter[int]()
    lock = threading.Lock()

    def worker(w: int) -> None:
        with contextlib.closing(sp.connect()) as wc, contextlib.closing(sp.connect()) as rc, \
                wc.cursor() as wcur, rc.cursor() as rcur:
            rcur.execute("SET group_replication_consistency = 'BEFORE'")
            mine = Counter[int]()
            for i in range(1, per_worker + 1):
                wcur.execute("UPDATE rt.counter SET n = %s WHERE id = %s", (i, w))
                rcur.execute("SELECT n, @@port FROM rt.counter WHERE id = %s", (w,))
                n, port = rcur.fetchone()
                mine[port] += 1
                with lock:
                    pairs["done"] += 1
                    if n < i:
                        stale.append((w, i, n))
            with lock:
                read_ports.update(mine)

    started = time.monotonic()
    workers = [Background(lambda w=w: worker(w)) for w in range(RYW_WORKERS)]
    for b in workers:
        b.join(600)
    elapsed = time.monotonic() - started
    print(f"read-your-writes: {pairs['done']} pairs in {elapsed:.1f}s, reads on {dict(read_ports)}")
    assert pairs["done"] == RYW_PAIRS
    assert not stale, f"{len(stale)} stale reads of {RYW_PAIRS} (worker, wrote, read): {stale[:10]}"
    assert set(read_ports) == backend_ports(sp.secondaries()), \
        f"BEFORE reads ran on {dict(read_ports)}: not spread over the secondaries"


# --- prepared statements and KILL ----------------------------------------------------------------


def test_prepared_statements_across_members(sp: Sandbox) -> None:
    primary = sp.primary().backend.port
    secondaries = backend_ports(sp.secondaries())
    per_session: list[Counter[int]] = []
    problems: list[str] = []
    lock = threading.Lock()

    def session(s: int) -> None:
        conn = sp.connect_connector()
        try:
            cur = conn.cursor(prepared=True)
            mine = Counter[int]()
            for i in range(60):
                cur.execute("SELECT ? + 1, @@port, ?", (i, f"s{s}"))
                got = cur.fetchone()
                mine[got[1]] += 1
                if (got[0], got[2]) != (i + 1, f"s{s}"):
                    with lock:
                        problems.append(f"session {s}: SELECT {i} + 1 gave {got}")
                if i % 20 == 10:
                    # The same statement inside a read-write transaction: on the primary.
                    conn.start_transaction()
                    cur.execute("SELECT ? + 1, @@port, ?", (i, f"s{s}"))
                    got = cur.fetchone()
                    conn.commit()
                    if got != (i + 1, primary, f"s{s}"):
                        with lock:
                            problems.append(f"session {s}: in a transaction got {got}, primary {primary}")
            ins = conn.cursor(prepared=True)
            for k in range(3):
                ins.execute("INSERT INTO rt.ps (k, port) VALUES (?, @@port)", (s * 100 + k,))
                if ins.rowcount != 1:
                    with lock:
                        problems.append(f"session {s}: prepared INSERT affected {ins.rowcount}")
            cur.execute("SELECT ? * 2, @@port, ?", (21, "after"))  # a new statement on the same cursor
            got = cur.fetchone()
            if got[0] != 42 or got[1] not in secondaries:
                with lock:
                    problems.append(f"session {s}: after the inserts got {got}")
            with lock:
                per_session.append(mine)
        finally:
            conn.close()

    workers = [Background(lambda s=s: session(s)) for s in range(4)]
    for b in workers:
        b.join(120)
    assert not problems, problems[:5]
    used = sum(per_session, Counter[int]())
    assert set(used) == secondaries, f"prepared reads ran on {dict(used)}; secondaries {secondaries}"
    with contextlib.closing(sp.connect_backend(sp.primary())) as b:
        inserted = rows(b, "SELECT k, port FROM rt.ps ORDER BY k")
    assert inserted == [(s * 100 + k, primary) for s in range(4) for k in range(3)], inserted


def test_kill_query_from_another_connection(sp: Sandbox) -> None:
    victim = sp.connect()
    victim_id = victim.thread_id()  # the id of the handshake
    sleeper = Background(lambda: rows(victim, "SELECT SLEEP(30)"))
    time.sleep(0.5)
    assert not sleeper.returned
    with contextlib.closing(sp.connect()) as killer:
        rows(killer, f"KILL QUERY {victim_id}")
    assert sleeper.done.wait(15), "KILL QUERY did not stop SELECT SLEEP(30)"
    assert sleeper.error is not None and errno_of(sleeper.error) == ER_QUERY_INTERRUPTED, \
        f"the victim got {sleeper.result!r} / {sleeper.error!r}, expected error 1317"
    assert one(victim, "SELECT v FROM rt.t WHERE id = 1") is not None  # still usable
    assert one(victim, "SELECT 1") == (1,)

    # KILL <id> ends the victim's connection; others go on.
    sleeper = Background(lambda: rows(victim, "SELECT SLEEP(30)"))
    time.sleep(0.5)
    with contextlib.closing(sp.connect()) as killer:
        rows(killer, f"KILL {victim_id}")
        assert one(killer, "SELECT 1") == (1,)
    assert sleeper.done.wait(15), "KILL did not stop SELECT SLEEP(30)"
    assert sleeper.error is not None, f"the killed connection's statement returned {sleeper.result!r}"
    with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
        rows(victim, "SELECT 1")
    victim.close()


def test_kill_query_with_the_id_connection_id_returns(sp: Sandbox) -> None:
    """A user takes the id from CONNECTION_ID() and kills with it (README: through the router it
    is the handshake's id, which KILL takes)."""
    victim = sp.connect()
    from_sql = one(victim, "SELECT CONNECTION_ID()")[0]
    assert from_sql == victim.thread_id(), "CONNECTION_ID() through the router is not the handshake's id"
    sleeper = Background(lambda: rows(victim, "SELECT SLEEP(30)"))
    time.sleep(0.5)
    with contextlib.closing(sp.connect()) as killer:
        try:
            rows(killer, f"KILL QUERY {int(from_sql)}")
        except pymysql.err.MySQLError as exc:
            raise AssertionError(f"KILL QUERY <CONNECTION_ID() of the victim = {from_sql}> through the router "
                                 f"failed: {exc!r}") from None
    assert sleeper.done.wait(15), "KILL QUERY <CONNECTION_ID()> did not stop SELECT SLEEP(30)"
    assert sleeper.error is not None and errno_of(sleeper.error) == ER_QUERY_INTERRUPTED, \
        f"the victim got {sleeper.result!r} / {sleeper.error!r}, expected error 1317"
    assert one(victim, "SELECT 1") == (1,)
    victim.close()


# --- membership changes (sandboxes of their own) ---------------------------------------------------


def _retry_until(deadline_s: float, fn: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + deadline_s
    errors: list[str] = []
    while True:
        try:
            return fn()
        except (pymysql.err.MySQLError, OSError) as exc:
            errors.append(repr(exc))
        assert time.monotonic() < deadline, f"{what}: no success within {deadline_s:.0f}s; last errors " \
                                             f"{errors[-3:]} ({len(errors)} tries)"
        time.sleep(0.2)


def test_reads_go_on_when_a_secondary_dies(sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory(members=3)
    create_schema(sb)
    victim = sb.secondaries()[-1]
    survivors = {m.backend.port for m in sb.members if m is not victim}
    old = sb.connect()
    seen_before = {port_of(old) for _ in range(5)}
    assert seen_before <= backend_ports(sb.secondaries())

    sb.kill_member(victim)

    def read(conn_factory: Callable[[], Any]) -> int:
        with contextlib.closing(conn_factory()) as c:
            port = port_of(c)
            _v(c)
            return port

    # Within a few seconds of retries, reads succeed again and never on the dead member.
    killed_at = time.monotonic()
    _retry_until(15, lambda: read(sb.connect), "a read after a secondary died")
    print(f"first read after the secondary died: {time.monotonic() - killed_at:.1f}s")
    ports = [read(sb.connect) for _ in range(20)]
    assert set(ports) <= survivors, f"reads ran on {Counter(ports)} after {victim.id} died"
    # The session opened before the loss goes on too (at most one error while it learns).
    _retry_until(15, lambda: port_of(old), "the old session's read after a secondary died")
    assert all(port_of(old) in survivors for _ in range(20))
    print(f"old session reads again: {time.monotonic() - killed_at:.1f}s")
    # Writes still go to the primary.
    with contextlib.closing(sb.connect()) as c:
        rows(c, "INSERT INTO rt.writes (tag, port) SELECT 'after-loss', @@port")
    old.close()


def _leave_group(sb: Sandbox, leaver: MemberInfo, primary: MemberInfo) -> None:
    """STOP GROUP_REPLICATION on `leaver`, then wait until the primary's own member table no
    longer lists it ONLINE (bounded)."""
    with contextlib.closing(sb.connect_member(leaver)) as c:
        rows(c, "STOP GROUP_REPLICATION")
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        with contextlib.closing(sb.connect_member(primary)) as c:
            states = dict(rows(c, "SELECT MEMBER_PORT, MEMBER_STATE FROM performance_schema.replication_group_members"))
        if states.get(leaver.member_port) != "ONLINE":
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.2)


def test_after_commit_check_stops_reads_from_a_member_that_left(sandbox_factory: Callable[..., Sandbox]) -> None:
    """Chaos seed 20261208 run 6: a secondary left the group, the primary committed at AFTER
    without it (it waits only for ONLINE members), and the router's last poll still listed the
    secondary, so a read made after the commit was answered could be served there, stale. The
    router a session asks after an AFTER commit reads the committing member's table and routes
    around every member not ONLINE in it. A router that polls once an hour shows both halves."""
    import asyncio

    from router.service import Router, RouterSettings

    sb = sandbox_factory(members=3)
    primary = sb.primary()
    leaver = sb.secondaries()[0]

    async def go() -> None:
        router = Router(RouterSettings(seeds=(("127.0.0.1", primary.member_port),), refresh_s=3600))
        await router.start()
        try:
            by_port = {m.port: m.member_id for m in router.topology.members}
            assert len(router.topology.online()) == 3
            await asyncio.to_thread(_leave_group, sb, leaver, primary)
            routed = {m.member_id for m in router.topology.online()}
            assert by_port[leaver.member_port] in routed  # the router has not polled since
            await router.confirm_after_commit(by_port[primary.member_port])
            routed = {m.member_id for m in router.topology.online()}
            assert by_port[leaver.member_port] not in routed and len(routed) == 2, routed
        finally:
            await router.stop()

    asyncio.run(go())


class _ThreadRouter:
    """grproxy's router (App with [router]) on an event loop in a thread of this process, so a
    test reads its routing table while real clients use its port."""

    def __init__(self, sb: Sandbox, **router: object) -> None:
        import asyncio

        from grproxy.app import App
        from grproxy.config import parse_config

        self.loop = asyncio.new_event_loop()
        self.app = App(parse_config({
            "frontend": {"host": "127.0.0.1", "port": 0},
            "users": [{"name": "root", "password": "", "admin": True}],
            "router": {"members": [f"127.0.0.1:{m.member_port}" for m in sb.members], **router},
        }))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.app.start())
        self.port: int = self.app.frontend.port

    def call(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(JOIN_TIMEOUT_S)

    def online_ports(self) -> set[int]:
        async def ports() -> set[int]:
            return {m.port for m in self.app.router.topology.online()}
        return self.call(ports())

    def close(self) -> None:
        try:
            self.call(self.app.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def test_commits_at_after_that_end_a_transaction_implicitly_are_held_for_the_check(
        sandbox_factory: Callable[..., Sandbox], tmp_path: Any) -> None:
    """The router's AFTER check (above) through a client session, for the commits that are not
    a COMMIT: SET autocommit = 1 with a transaction open, and LOAD DATA LOCAL. Each time a
    secondary has just left the group and the router (polling hourly) still routes to it: when
    the client gets the answer, the router must already route around it."""
    sb = sandbox_factory(members=3)
    create_schema(sb)
    primary = sb.primary()
    leaver = sb.secondaries()[0]
    data = tmp_path / "rows.tsv"
    data.write_text("".join(f"{9000 + i}\tinfile\t0\n" for i in range(3)))
    router = _ThreadRouter(sb, refresh_s=3600, down_hold_s=0.5)
    try:
        def leave_then(commit: Callable[[Any], None], what: str) -> None:
            if leaver.member_port not in router.online_ports():  # back in the group and the table
                with contextlib.closing(sb.connect_member(leaver)) as c:
                    rows(c, "START GROUP_REPLICATION")
                deadline = time.monotonic() + JOIN_TIMEOUT_S
                while leaver.member_port not in router.online_ports():
                    assert time.monotonic() < deadline, f"{what}: {leaver.id} did not come back"
                    time.sleep(0.5)  # past down_hold_s, then a poll
                    router.call(router.app.router.refresh())
            client = pymysql.connect(host="127.0.0.1", port=router.port, user="root", password="",
                                     autocommit=True, local_infile=True, read_timeout=60)
            with contextlib.closing(client):
                rows(client, "SET SESSION group_replication_consistency = 'AFTER'")
                _leave_group(sb, leaver, primary)
                assert leaver.member_port in router.online_ports(), "the router polled meanwhile"
                commit(client)
                assert leaver.member_port not in router.online_ports(), \
                    f"{what}: answered while the router still routed to a member that left"

        def autocommit_on(client: Any) -> None:
            rows(client, "SET autocommit = 0")
            rows(client, "INSERT INTO rt.t (id, v) VALUES (8001, 1)")
            rows(client, "SET autocommit = 1")  # commits the open transaction
            assert one(client, "SELECT v FROM rt.t WHERE id = 8001") == (1,)

        def load_data(client: Any) -> None:
            rows(client, f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE rt.writes (id, tag, port)")

        leave_then(autocommit_on, "SET autocommit = 1")
        leave_then(load_data, "LOAD DATA LOCAL")
    finally:
        router.close()


def test_primary_death_fails_its_transaction_and_a_new_primary_takes_writes(
        sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory(members=3)
    create_schema(sb)
    primary = sb.primary()
    s = sb.connect()
    with s.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("UPDATE rt.t SET v = 100 WHERE id = 1")
        assert port_of(s) == primary.backend.port

    sb.kill_member(primary)

    failure: BaseException | None = None
    try:
        with s.cursor() as cur:
            cur.execute("UPDATE rt.t SET v = 101 WHERE id = 1")
            cur.execute("COMMIT")
    except (pymysql.err.MySQLError, OSError) as exc:
        failure = exc
    assert failure is not None, "a transaction whose primary died went on and committed without an error"
    print(f"the open transaction's next statement failed with {failure!r}")
    assert errno_of(failure) in (CR_SERVER_LOST, CR_SERVER_GONE_ERROR, 3783, 1290, 3100, 3101) or \
        isinstance(failure, (pymysql.err.InterfaceError, OSError)), failure

    rows_ = sb.wait_group(lambda g: sum(x.role == "PRIMARY" and x.state == "ONLINE" for x in g) == 1
                          and all(x.member.id != primary.id for x in g if x.state == "ONLINE"),
                          FAILOVER_DEADLINE_S, "a new primary elected")
    new_primary = next(x.member for x in rows_ if x.role == "PRIMARY")

    def write() -> int:
        with contextlib.closing(sb.connect()) as c, c.cursor() as cur:
            cur.execute("INSERT INTO rt.writes (tag, port) SELECT 'after-failover', @@port")
            cur.execute("SELECT port FROM rt.writes WHERE tag = 'after-failover' FOR UPDATE")
            return int(cur.fetchone()[0])

    where = _retry_until(FAILOVER_DEADLINE_S, write, "a write after the primary died")
    assert where == new_primary.backend.port, f"the write ran on {where}; new primary {new_primary.id}"

    # The session whose transaction was lost goes on with new statements: the router answered
    # with an error and kept the client connection.
    assert not isinstance(failure, pymysql.err.InterfaceError), f"the router closed the session: {failure!r}"
    assert _retry_until(FAILOVER_DEADLINE_S, lambda: _v(s), "the failed session's next read") == 0
    with s.cursor() as cur:
        cur.execute("SET group_replication_consistency = 'BEFORE'")
    assert _v(s) == 0, "the lost transaction's UPDATE committed"
    with s.cursor() as cur:
        cur.execute("UPDATE rt.t SET v = 7 WHERE id = 1")
    assert _v(s) == 7
    s.close()


# --- multi-primary ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mp(module_sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """A 3-member multi-primary sandbox with the schema in place."""
    sb = module_sandbox_factory(members=3, mode="multi-primary")
    group = sb.group_members()
    assert sorted((g.state, g.role) for g in group) == [("ONLINE", "PRIMARY")] * 3, group
    create_schema(sb)
    return sb


def test_multi_primary_writes_and_before_reads(mp: Sandbox) -> None:
    """Inserts through the router succeed and a BEFORE read from another connection sees each."""
    written_on = Counter[int]()
    problems: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        with contextlib.closing(mp.connect()) as wc, contextlib.closing(mp.connect()) as rc, \
                wc.cursor() as wcur, rc.cursor() as rcur:
            rcur.execute("SET group_replication_consistency = 'BEFORE'")
            for i in range(1, 101):
                try:
                    wcur.execute("INSERT INTO rt.writes (tag, port) SELECT %s, @@port", (f"mp{w}-{i}",))
                except pymysql.err.MySQLError as exc:
                    with lock:
                        problems.append(f"worker {w} insert {i}: {exc!r}")
                    continue
                new_id = wcur.lastrowid
                rcur.execute("SELECT tag, port FROM rt.writes WHERE id = %s", (new_id,))
                row = rcur.fetchone()
                with lock:
                    if row is None or row[0] != f"mp{w}-{i}":
                        problems.append(f"worker {w} insert {i}: a BEFORE read of id {new_id} found {row}")
                    else:
                        written_on[row[1]] += 1

    workers = [Background(lambda w=w: worker(w)) for w in range(4)]
    for b in workers:
        b.join(300)
    print(f"multi-primary: inserts ran on {dict(written_on)}")
    assert not problems, f"{len(problems)} problems, e.g. {problems[:5]}"
    assert sum(written_on.values()) == 400
    assert set(written_on) <= backend_ports(mp.members)
    # Every backend ends with the same rows.
    wait_backends(mp, "SELECT COUNT(*) FROM rt.writes WHERE tag LIKE 'mp%'", 400)


def test_multi_primary_session_does_not_conflict_with_itself(mp: Sandbox) -> None:
    """Two sessions each update their own row again and again while other sessions insert
    elsewhere: nobody else touches those rows, so they must never get a certification conflict
    (3101). On a GR member (or through a router that keeps a session's writes on one member, or
    makes the next member wait for them) they never do."""
    stop = threading.Event()
    failures: list[str] = []

    def loader() -> None:
        with contextlib.closing(mp.connect()) as conn:
            while not stop.is_set():
                rows(conn, "INSERT INTO rt.ids (worker, n) VALUES (1000, 0)")

    def updater(row: int) -> None:
        with contextlib.closing(mp.connect()) as conn, conn.cursor() as cur:
            for i in range(1, UPDATES_PER_SESSION + 1):
                if stop.is_set():
                    return
                try:
                    cur.execute("UPDATE rt.counter SET n = %s WHERE id = %s", (i, row))
                except pymysql.err.MySQLError as exc:
                    failures.append(f"UPDATE number {i} of row {row} failed with {exc!r}")
                    stop.set()

    loaders = [Background(loader) for _ in range(4)]
    updaters = [Background(lambda r=r: updater(r)) for r in (0, 1)]
    try:
        for b in updaters:
            b.join(300)
    finally:
        stop.set()
        for b in loaders:
            b.join()
    assert not failures, (
        f"{failures[0]}: a session's own successive writes of one row conflicted with each other. The router "
        "sent consecutive writes of the session to different members, the second before that member had "
        "applied the first (its snapshot misses it, so certification rejects it)")
