"""GR's SQL vocabulary (replication/admin.py) on member ports and through the router.

Three members and a router run in this test's event loop (real TCP group communication, one
real MariaDB backend each); clients are PyMySQL connections in threads. Users: `root` (admin)
and `app` (not admin). Waits poll a condition up to a generous bound; nothing asserts a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from grproxy.config import Config, FrontendConfig, UserConfig
from grproxy.frontend import FrontendServer
from grproxy.mysqld import ServerHandle, free_port
from replication.gcs.interface import MemberId, MemberState
from replication.gcs.xcom.binding import XcomGroup, new_incarnation
from replication.gcs.xcom.core import CoreConfig
from replication.gcs.xcom.transport import TransportConfig
from replication.member import Member, MemberConfig
from replication.member_session import MemberSessionFactory
from replication.protocol.backend import BackendAddress
from replication.rowevents import RowEventApplier
from router.service import Router, RouterSettings
from router.session import RouterFactory

WAIT_S = 60.0  # bound on every wait for the group to converge (a bound, not an expectation)
USERS = (UserConfig("root", "", admin=True), UserConfig("app", "", admin=False))
VERSION = "10.11.0-MariaDB-grproxy"


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout_s: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Group:
    """Three members (m0 bootstraps, single-primary) with member ports, and a router port."""

    def __init__(self, backends: list[ServerHandle]) -> None:
        self.backends = backends
        self.uuids = [str(uuidlib.uuid4()) for _ in backends]
        self.members: list[Member] = []
        self.servers: list[FrontendServer] = []
        self.router: Router | None = None
        self.router_server: FrontendServer | None = None

    async def start(self) -> None:
        core = CoreConfig(heartbeat_interval_ms=200, suspicion_timeout_ms=1000, member_expel_timeout_ms=1000)
        addresses = [f"127.0.0.1:{free_port()}" for _ in self.backends]
        for i, (uuid, b) in enumerate(zip(self.uuids, self.backends)):
            def factory(uuid: str = uuid, address: str = addresses[i]) -> Callable[[], Any]:
                async def new_gcs() -> XcomGroup:
                    gcs = XcomGroup(MemberId(uuid, address, new_incarnation()), core,
                                    TransportConfig(group_name="grproxy-admin"))
                    await gcs.start()
                    return gcs
                return new_gcs
            new_gcs = factory()
            gcs = await new_gcs()
            port = free_port()
            member = Member(MemberConfig(uuid=uuid, backend=BackendAddress(b.host, b.port, b.user, b.password),
                                         member_address=f"127.0.0.1:{port}", stable_report_interval_s=0.2),
                            gcs, RowEventApplier(), gcs_factory=new_gcs)
            config = Config(frontend=FrontendConfig(host="127.0.0.1", port=port), users=USERS, backends=())
            server = FrontendServer(config, VERSION, 0xFFFFFFFF, MemberSessionFactory(member))
            await server.start()
            self.members.append(member)
            self.servers.append(server)
            seeds = (MemberId(self.uuids[0], addresses[0], 0),)
            await member.start(bootstrap=i == 0, seeds=seeds)
            await self.wait(lambda: all(len(m.engine.members) == i + 1 for m in self.members))
        await self.wait(self.all_online)
        self.router = Router(RouterSettings(seeds=tuple(("127.0.0.1", s.port) for s in self.servers),
                                            refresh_s=0.2, down_hold_s=0.5))
        await self.router.start()
        self.router_server = FrontendServer(Config(frontend=FrontendConfig(host="127.0.0.1", port=free_port()),
                                                   users=USERS, backends=()),
                                            VERSION, 0xFFFFFFFF, RouterFactory(self.router))
        await self.router_server.start()

    def all_online(self) -> bool:
        return all(len(m.engine.members) == len(self.members)
                   and all(r.state is MemberState.ONLINE for r in m.engine.members.values()) for m in self.members)

    async def wait(self, cond: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not cond():
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.router_server is not None:
            await self.router_server.stop()
        if self.router is not None:
            await self.router.stop()
        for s in self.servers:
            with contextlib.suppress(Exception):  # a test may have stopped it already
                await s.stop()
        for m in self.members:
            await m.stop()
            close = getattr(m.gcs, "close", None)
            if close is not None:
                await close()

    def connect(self, i: int, user: str = "root", **kw: Any) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.servers[i].port, user=user, password="",
                               autocommit=True, **kw)

    def connect_router(self, user: str = "root", **kw: Any) -> pymysql.connections.Connection:
        assert self.router_server is not None
        return pymysql.connect(host="127.0.0.1", port=self.router_server.port, user=user, password="",
                               autocommit=True, **kw)

    def index_of(self, uuid: str) -> int:
        return self.uuids.index(uuid)


def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.05)


def query(conn: pymysql.connections.Connection, sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def error_of(conn: pymysql.connections.Connection, sql: str) -> tuple[int, str]:
    with pytest.raises(pymysql.MySQLError) as info:
        query(conn, sql)
    return info.value.args[0], info.value.args[1]


def backend_query(b: ServerHandle, sql: str) -> list[tuple[Any, ...]]:
    c = pymysql.connect(host=b.host, port=b.port, user=b.user, password=b.password, autocommit=True)
    try:
        return query(c, sql)
    finally:
        c.close()


@pytest.fixture(scope="module")
def group(backend_factory: Callable[..., ServerHandle]) -> Iterator[tuple[Group, LoopThread]]:
    backends = [backend_factory(f"admin-member{i}") for i in range(3)]
    for b in backends:
        backend_query(b, "DROP DATABASE IF EXISTS app")
        backend_query(b, "DROP DATABASE IF EXISTS grproxy")
    lt = LoopThread()
    g = Group(backends)
    try:
        lt.run(g.start())
        c = g.connect(0)
        query(c, "CREATE DATABASE app")
        query(c, "CREATE TABLE app.t (id INT PRIMARY KEY, v INT NOT NULL)")
        c.close()
        yield g, lt
    finally:
        lt.run(g.stop())
        lt.stop()


def primary_index(g: Group) -> int:
    [p] = [i for i, m in enumerate(g.members) if m.engine.single_primary and m.engine.primary == m.config.uuid]
    return p


def converge(g: Group, lt: LoopThread) -> None:
    async def run() -> None:
        target = max(m.positions.applied.lwm for m in g.members)
        for m in g.members:
            await m.positions.wait_applied(target, timeout_s=WAIT_S)
    lt.run(run())


def back_to_single_primary_on(g: Group, i: int) -> None:
    c = g.connect(i)
    try:
        if not g.members[i].engine.single_primary:
            query(c, f"SELECT group_replication_switch_to_single_primary_mode('{g.uuids[i]}')")
        elif g.members[i].engine.primary != g.uuids[i]:
            query(c, f"SELECT group_replication_set_as_primary('{g.uuids[i]}')")
    finally:
        c.close()
    wait_until(lambda: all(m.engine.single_primary and m.engine.primary == g.uuids[i] for m in g.members),
               f"m{i} primary on every member")


# --- variables ------------------------------------------------------------------------------------


def test_show_and_read_variables(group: tuple[Group, LoopThread]) -> None:
    g, _ = group
    c = g.connect(1, user="app")
    rows = dict(query(c, "SHOW VARIABLES LIKE 'group_replication%'"))
    assert rows["group_replication_consistency"] == "EVENTUAL"
    assert rows["group_replication_member_weight"] == "50"
    assert rows["group_replication_single_primary_mode"] == "ON"
    assert rows["group_replication_exit_state_action"] == "READ_ONLY"
    assert rows["group_replication_flow_control_mode"] == "QUOTA"
    assert rows["group_replication_local_address"] == g.members[1].gcs.me.address
    assert rows["group_replication_ip_allowlist"] == "AUTOMATIC"
    assert rows["group_replication_ssl_mode"] == "DISABLED"
    assert rows["group_replication_member_expel_timeout"] == "1"  # the group binding's setting
    assert rows["group_replication_group_name"] == g.members[1].group_uuid
    assert "version" not in rows and all(k.startswith("group_replication_") for k in rows)
    everything = dict(query(c, "SHOW GLOBAL VARIABLES"))
    assert "version" in everything and everything["group_replication_member_weight"] == "50"
    where = query(c, "SHOW SESSION VARIABLES WHERE Variable_name IN ('group_replication_member_weight', "
                     "'max_connections')")
    assert [r[0] for r in where] == ["group_replication_member_weight", "max_connections"]
    with c.cursor() as cur:
        cur.execute("SELECT @@group_replication_member_weight, @@GLOBAL.group_replication_single_primary_mode, "
                    "@@group_replication_consistency")
        assert cur.fetchall() == ((50, 1, "EVENTUAL"),)
        assert [d[0] for d in cur.description] == ["@@group_replication_member_weight",
                                                   "@@GLOBAL.group_replication_single_primary_mode",
                                                   "@@group_replication_consistency"]
    assert error_of(c, "SELECT @@SESSION.group_replication_member_weight")[0] == 1238
    # Not an admin: reads yes, SET GLOBAL no.
    errno, message = error_of(c, "SET GLOBAL group_replication_member_weight = 70")
    assert errno == 1227 and "Access denied" in message
    c.close()


def test_set_global_dynamic_and_read_only(group: tuple[Group, LoopThread]) -> None:
    g, _ = group
    c = g.connect(1)
    try:
        query(c, "SET GLOBAL group_replication_member_weight = 70, @after = 1")
        assert query(c, "SELECT @@group_replication_member_weight, @after") == [(70, 1)]
        # The new weight is announced: every member's table has it (it counts at the next election).
        wait_until(lambda: all(m.engine.members[g.uuids[1]].weight == 70 for m in g.members), "weight 70 announced")
        query(c, "SET GLOBAL group_replication_flow_control_period = 5")
        assert dict(query(c, "SHOW VARIABLES LIKE 'group_replication_flow_control_period'")) == {
            "group_replication_flow_control_period": "5"}
        query(c, "SET GLOBAL group_replication_exit_state_action = 'OFFLINE_MODE'")
        assert query(c, "SELECT @@group_replication_exit_state_action") == [("OFFLINE_MODE",)]
        # The expel timeout reaches the member's group binding at once (and its later incarnations).
        query(c, "SET GLOBAL group_replication_member_expel_timeout = 3")
        assert query(c, "SELECT @@group_replication_member_expel_timeout") == [(3,)]
        assert g.members[1].gcs.core.cfg.member_expel_timeout_ms == 3000
        # The compression threshold is the transport's from the next message: a 4 KB row is
        # sent compressed once the threshold is below it.
        query(c, "SET GLOBAL group_replication_compression_threshold = 1000")
        assert query(c, "SELECT @@group_replication_compression_threshold") == [(1000,)]
        p = primary_index(g)
        before = g.members[p].gcs.transport_statistics().messages_compressed
        w = g.connect(p)
        try:
            if p != 1:
                query(w, "SET GLOBAL group_replication_compression_threshold = 1000")
            query(w, "CREATE TABLE app.blob_t (id INT PRIMARY KEY, b TEXT)")
            query(w, "INSERT INTO app.blob_t VALUES (1, REPEAT('x', 4000))")
            assert g.members[p].gcs.transport_statistics().messages_compressed > before
            query(w, "DROP TABLE app.blob_t")
        finally:
            query(w, "SET GLOBAL group_replication_compression_threshold = DEFAULT")
            w.close()
        errno, message = error_of(c, "SET GLOBAL group_replication_group_name = 'x'")
        assert (errno, message) == (1238, "Variable 'group_replication_group_name' is a read only variable")
        assert error_of(c, "SET GLOBAL group_replication_single_primary_mode = OFF")[0] == 1238
        assert error_of(c, "SET SESSION group_replication_member_weight = 1")[0] == 1229
        assert error_of(c, "SET GLOBAL group_replication_member_weight = 101")[0] == 1231
        assert error_of(c, "SET GLOBAL group_replication_exit_state_action = 'SLEEP'")[0] == 1231
        assert query(c, "SELECT @@group_replication_member_weight") == [(70,)]  # refused SETs changed nothing
        # consistency keeps its session/global behaviour
        query(c, "SET SESSION group_replication_consistency = 'BEFORE'")
        assert query(c, "SELECT @@group_replication_consistency, @@GLOBAL.group_replication_consistency") == [
            ("BEFORE", "EVENTUAL")]
    finally:
        query(c, "SET GLOBAL group_replication_member_weight = DEFAULT")
        query(c, "SET GLOBAL group_replication_exit_state_action = DEFAULT")
        query(c, "SET GLOBAL group_replication_flow_control_period = DEFAULT")
        query(c, "SET GLOBAL group_replication_member_expel_timeout = 1")  # the fixture's, not GR's default
        query(c, "SET GLOBAL group_replication_compression_threshold = DEFAULT")
        c.close()
    assert g.members[1].config.member_weight == 50


def test_variables_through_the_router(group: tuple[Group, LoopThread]) -> None:
    g, _ = group
    c = g.connect_router()
    app = g.connect_router(user="app")
    try:
        assert dict(query(app, "SHOW VARIABLES LIKE 'group_replication_member_weight'")) == {
            "group_replication_member_weight": "50"}
        assert "group_replication_consistency" in dict(query(app, "SHOW GLOBAL VARIABLES"))
        assert query(app, "SELECT @@group_replication_single_primary_mode") == [(1,)]
        assert error_of(app, "SET GLOBAL group_replication_member_weight = 60")[0] == 1227
        assert error_of(app, "SET GLOBAL group_replication_consistency = 'AFTER'")[0] == 1227
        query(c, "SET GLOBAL group_replication_member_weight = 60")  # on every ONLINE member
        assert [m.config.member_weight for m in g.members] == [60, 60, 60]
        assert error_of(c, "SET GLOBAL group_replication_local_address = 'x:1'")[0] == 1238
    finally:
        query(c, "SET GLOBAL group_replication_member_weight = 50")
        c.close()
        app.close()


# --- group actions --------------------------------------------------------------------------------


class Writer:
    """A light write load through the router: one INSERT at a time, retried on what a client
    retries across a primary change (1290 read-only, 3101 conflict, 3100, 2013)."""

    RETRIED = {1290, 3101, 3100, 2013, 3783}

    def __init__(self, g: Group, first_id: int) -> None:
        self.g = g
        self.next_id = first_id
        self.acked: list[int] = []
        self.errors: dict[int, int] = {}
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        conn = None
        try:
            while not self.stop.is_set():
                if conn is None:
                    conn = self.g.connect_router()
                try:
                    query(conn, f"INSERT INTO app.t VALUES ({self.next_id}, {self.next_id})")
                except pymysql.err.IntegrityError as exc:
                    if exc.args[0] != 1062:  # 1062: an earlier try committed after all
                        raise
                except pymysql.MySQLError as exc:
                    if exc.args[0] not in self.RETRIED:
                        raise
                    self.errors[exc.args[0]] = self.errors.get(exc.args[0], 0) + 1
                    if exc.args[0] == 2013:
                        conn.close()
                        conn = None
                    time.sleep(0.05)
                    continue
                self.acked.append(self.next_id)
                self.next_id += 1
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc
        finally:
            if conn is not None:
                conn.close()

    def progressed(self, by: int = 5) -> None:
        start = len(self.acked)
        wait_until(lambda: len(self.acked) >= start + by or self.failure is not None, f"{by} more writes")
        assert self.failure is None, self.failure

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(WAIT_S)
        assert self.failure is None, self.failure


def test_primary_switch_and_mode_switches_under_load(group: tuple[Group, LoopThread]) -> None:
    g, lt = group
    back_to_single_primary_on(g, 0)
    writer = Writer(g, first_id=1_000)
    try:
        writer.progressed()
        # set_as_primary, asked on a secondary
        c2 = g.connect(2)
        [(answer,)] = query(c2, f"SELECT group_replication_set_as_primary('{g.uuids[1]}')")
        assert answer == f"Primary server switched to: {g.uuids[1]}"
        assert g.members[2].engine.primary == g.uuids[1]  # applied where it was asked before the answer
        wait_until(lambda: all(m.engine.primary == g.uuids[1] for m in g.members), "m1 primary everywhere")
        assert g.members[1].may_write() and not g.members[0].may_write()
        [(again,)] = query(c2, f"SELECT group_replication_set_as_primary('{g.uuids[1]}') AS r")
        assert again == "The requested member is already the current group primary."
        writer.progressed()
        # to multi-primary, through the router
        r = g.connect_router()
        with r.cursor() as cur:
            cur.execute("SELECT group_replication_switch_to_multi_primary_mode()")
            assert cur.fetchall() == (("Mode switched to multi-primary successfully.",),)
            assert cur.description[0][0] == "group_replication_switch_to_multi_primary_mode()"
        wait_until(lambda: all(not m.engine.single_primary and m.may_write() for m in g.members),
                   "multi-primary everywhere")
        assert query(r, "SELECT group_replication_switch_to_multi_primary_mode()") == [
            ("The group is already on multi-primary mode.",)]
        code, message = error_of(c2, f"SELECT group_replication_set_as_primary('{g.uuids[0]}')")
        assert code == 1123 and "In multi-primary mode" in message
        wait_until(lambda: g.router is not None and g.router.topology.mode.value == "MULTI-PRIMARY",
                   "router sees multi-primary")
        writer.progressed()
        # back to single-primary with m0 appointed, on m0's own port
        c0 = g.connect(0)
        assert query(c0, f"SELECT group_replication_switch_to_single_primary_mode('{g.uuids[0]}')") == [
            ("Mode switched to single-primary successfully.",)]
        wait_until(lambda: all(m.engine.single_primary and m.engine.primary == g.uuids[0] for m in g.members),
                   "single-primary with m0 everywhere")
        assert query(c0, "SELECT group_replication_switch_to_single_primary_mode()") == [
            ("The group is already on single-primary mode.",)]
        writer.progressed()
        # refusals
        code, message = error_of(c0, f"SELECT group_replication_set_as_primary('{uuidlib.uuid4()}')")
        assert code == 1123 and "The requested uuid is not a member of the group." in message
        code, message = error_of(c0, "SELECT group_replication_set_as_primary('not-a-uuid')")
        assert code == 1123 and "not valid" in message
        app = g.connect(2, user="app")
        assert error_of(app, f"SELECT group_replication_set_as_primary('{g.uuids[2]}')")[0] == 1227
        app.close()
        app_router = g.connect_router(user="app")
        assert error_of(app_router, "SELECT group_replication_switch_to_multi_primary_mode()")[0] == 1227
        app_router.close()
        for conn in (c0, c2, r):
            conn.close()
    finally:
        writer.finish()
    converge(g, lt)
    sums = [backend_query(b, "CHECKSUM TABLE app.t")[0][1] for b in g.backends]
    assert len(set(sums)) == 1, sums
    ids = {row[0] for row in backend_query(g.backends[2], "SELECT id FROM app.t WHERE id >= 1000")}
    assert set(writer.acked) <= ids


# --- member stats ---------------------------------------------------------------------------------


STATS = "SELECT * FROM performance_schema.replication_group_member_stats"


def stats_by_member(conn: pymysql.connections.Connection) -> dict[str, dict[str, Any]]:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(STATS)
        return {row["MEMBER_ID"]: row for row in cur.fetchall()}


def test_member_stats(group: tuple[Group, LoopThread]) -> None:
    g, lt = group
    back_to_single_primary_on(g, 0)
    c0 = g.connect(0, user="app")  # the table is readable without admin, as performance_schema is
    with c0.cursor() as cur:
        cur.execute(STATS)
        assert [d[0] for d in cur.description] == [
            "CHANNEL_NAME", "VIEW_ID", "MEMBER_ID", "COUNT_TRANSACTIONS_IN_QUEUE", "COUNT_TRANSACTIONS_CHECKED",
            "COUNT_CONFLICTS_DETECTED", "COUNT_TRANSACTIONS_ROWS_VALIDATING", "TRANSACTIONS_COMMITTED_ALL_MEMBERS",
            "LAST_CONFLICT_FREE_TRANSACTION", "COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE",
            "COUNT_TRANSACTIONS_REMOTE_APPLIED", "COUNT_TRANSACTIONS_LOCAL_PROPOSED",
            "COUNT_TRANSACTIONS_LOCAL_ROLLBACK"]
        assert len(cur.fetchall()) == 3
    before = stats_by_member(c0)
    assert set(before) == set(g.uuids)
    writer = g.connect(0)
    for i in range(5):
        query(writer, f"INSERT INTO app.t VALUES ({2_000 + i}, 0)")
    m0, m1, m2 = g.uuids

    def moved() -> bool:
        now = stats_by_member(c0)
        return (now[m0]["COUNT_TRANSACTIONS_LOCAL_PROPOSED"] >= before[m0]["COUNT_TRANSACTIONS_LOCAL_PROPOSED"] + 5
                and all(now[u]["COUNT_TRANSACTIONS_CHECKED"] >= before[u]["COUNT_TRANSACTIONS_CHECKED"] + 5
                        for u in g.uuids)
                and all(now[u]["COUNT_TRANSACTIONS_REMOTE_APPLIED"] >= before[u]["COUNT_TRANSACTIONS_REMOTE_APPLIED"] + 5
                        for u in (m1, m2)))
    wait_until(moved, "stats of every member reflect 5 writes on m0")
    now = stats_by_member(c0)
    assert now[m0]["COUNT_TRANSACTIONS_REMOTE_APPLIED"] == before[m0]["COUNT_TRANSACTIONS_REMOTE_APPLIED"]
    assert now[m0]["LAST_CONFLICT_FREE_TRANSACTION"].endswith(f":{g.members[0].engine.last_conflict_free}")
    assert now[m0]["VIEW_ID"] == str(g.members[0].engine.view.view_id)  # type: ignore[union-attr]
    # WHERE, ORDER BY and an alias work as on a server.
    rows = query(c0, "SELECT s.MEMBER_ID, s.COUNT_TRANSACTIONS_LOCAL_PROPOSED FROM "
                     "performance_schema.replication_group_member_stats AS s "
                     f"WHERE s.MEMBER_ID <> '{m0}' ORDER BY s.MEMBER_ID DESC")
    assert [r[0] for r in rows] == sorted([m1, m2], reverse=True)
    # A conflict (multi-primary): m1's open transaction loses to m2's commit of the same row.
    admin = g.connect(0)
    query(admin, "SELECT group_replication_switch_to_multi_primary_mode()")
    loser, winner = g.connect(1), g.connect(2)
    query(loser, "BEGIN")
    query(loser, "UPDATE app.t SET v = 1 WHERE id = 2000")
    query(winner, "UPDATE app.t SET v = 2 WHERE id = 2000")
    wait_until(lambda: stats_by_member(c0)[m2]["COUNT_TRANSACTIONS_LOCAL_PROPOSED"]
               >= before[m2]["COUNT_TRANSACTIONS_LOCAL_PROPOSED"] + 1, "m2's commit reported")
    assert error_of(loser, "COMMIT")[0] == 3101
    wait_until(lambda: stats_by_member(c0)[m1]["COUNT_TRANSACTIONS_LOCAL_ROLLBACK"]
               >= before[m1]["COUNT_TRANSACTIONS_LOCAL_ROLLBACK"] + 1, "m1's rollback reported")
    after = stats_by_member(g.connect(1))
    assert after[m1]["COUNT_CONFLICTS_DETECTED"] >= before[m1]["COUNT_CONFLICTS_DETECTED"] + 1
    for conn in (loser, winner, admin, writer, c0):
        conn.close()
    back_to_single_primary_on(g, 0)
    converge(g, lt)
    # Through the router too.
    r = g.connect_router(user="app")
    assert set(stats_by_member(r)) == set(g.uuids)
    assert len(query(r, "SELECT MEMBER_ID FROM performance_schema.replication_group_members")) == 3
    r.close()


# --- STOP / START GROUP_REPLICATION, the router's poll ---------------------------------------------


def test_stop_and_start_group_replication(group: tuple[Group, LoopThread]) -> None:
    g, lt = group
    back_to_single_primary_on(g, 0)
    app = g.connect(2, user="app")
    assert error_of(app, "STOP GROUP_REPLICATION")[0] == 1227
    app.close()
    c2 = g.connect(2)
    query(c2, "SET GLOBAL group_replication_compression_threshold = 2000")
    query(c2, "STOP GROUP_REPLICATION")
    assert g.members[2].state is MemberState.OFFLINE
    wait_until(lambda: g.uuids[2] not in g.members[0].engine.members, "m2 left m0's view")
    assert error_of(c2, "INSERT INTO app.t VALUES (3000, 0)")[0] == 1290
    # Outside the group a member's tables show only itself, as GR's do.
    assert query(c2, "SELECT MEMBER_ID, MEMBER_STATE, MEMBER_ROLE FROM performance_schema.replication_group_members"
                     ) == [(g.uuids[2], "OFFLINE", "")]
    assert [r[2] for r in query(c2, STATS)] == [g.uuids[2]]
    code, message = error_of(c2, "SELECT group_replication_switch_to_multi_primary_mode()")
    assert code == 1123 and "ONLINE and in the majority" in message
    c0 = g.connect(0)
    query(c0, "INSERT INTO app.t VALUES (3001, 0)")  # the group goes on without m2
    query(c2, "START GROUP_REPLICATION")
    wait_until(g.all_online, "m2 back ONLINE everywhere")
    assert error_of(c2, "START GROUP_REPLICATION")[0] == 3093
    # SET GLOBAL outlives the incarnation it was made in.
    assert g.members[2].gcs.transport.config.compression_threshold == 2000
    query(c2, "SET GLOBAL group_replication_compression_threshold = DEFAULT")
    assert g.members[2].gcs.transport.config.compression_threshold == 1_000_000
    converge(g, lt)
    assert backend_query(g.backends[2], "SELECT id FROM app.t WHERE id = 3001") == [(3001,)]
    c0.close()
    c2.close()


def test_a_joiner_is_listed_with_its_address_while_it_recovers(group: tuple[Group, LoopThread]) -> None:
    """As GR shows a joiner: RECOVERING, with its host and port, on every member (its
    recovery is held until the others' tables show it)."""
    g, lt = group
    back_to_single_primary_on(g, 0)
    c2 = g.connect(2)
    m2 = g.members[2]
    held: list[object] = []
    try:
        query(c2, "STOP GROUP_REPLICATION")
        wait_until(lambda: g.uuids[2] not in g.members[0].engine.members, "m2 left m0's view")
        m2.recovery_done = held.append  # type: ignore[method-assign]
        query(c2, "START GROUP_REPLICATION")
        host, _, port = m2.config.member_address.rpartition(":")
        c0 = g.connect(0)
        try:
            wait_until(lambda: (g.uuids[2], host, int(port), "RECOVERING") in query(
                c0, "SELECT MEMBER_ID, MEMBER_HOST, MEMBER_PORT, MEMBER_STATE "
                    "FROM performance_schema.replication_group_members"), "m2 RECOVERING with its address on m0")
        finally:
            c0.close()
        wait_until(lambda: bool(held), "m2's recovery done (held)")
    finally:
        del m2.recovery_done  # the method again
        if held:
            lt.run(_call(m2.recovery_done, held[0]))
        c2.close()
    wait_until(g.all_online, "m2 back ONLINE everywhere")


async def _call(fn: Any, arg: object) -> None:
    fn(arg)


def test_router_poll_answer(group: tuple[Group, LoopThread]) -> None:
    g, _ = group
    back_to_single_primary_on(g, 0)
    app = g.connect(1, user="app")
    rows = query(app, "/* grproxy */ ROUTER MEMBERS")
    assert len(rows) == 3
    assert {r[0] for r in rows if r[5] == 1} == {g.uuids[1]}
    assert all(r[6] == 1 and r[7] == 1 for r in rows)  # quorum, single-primary
    assert [r[0] for r in rows if r[4] == "PRIMARY"] == [g.uuids[0]]
    app.close()
    # The router polls every 0.2 s; the previous test's rejoin may have left its last poll
    # failing for a moment (a member not ONLINE yet): it must recover by itself.
    wait_until(lambda: g.router is not None and g.router.last_poll_error is None, "the router's polls succeed")


# --- last: it takes two members out of the group for good -----------------------------------------


def test_force_members_after_losing_the_majority(group: tuple[Group, LoopThread]) -> None:
    g, lt = group
    back_to_single_primary_on(g, 0)
    c0 = g.connect(0)
    me = g.members[0].gcs.me.address
    # With a majority reachable GR refuses it.
    code, message = error_of(c0, f"SET GLOBAL group_replication_force_members = '{me}'")
    assert code == 1231 and "majority" in message
    app = g.connect(0, user="app")
    assert error_of(app, f"SET GLOBAL group_replication_force_members = '{me}'")[0] == 1227
    app.close()
    # Two members vanish without leaving (group connections and member ports closed): m0 alone
    # cannot commit, and the router, which reaches only m0, stops trusting its table.
    for i in (1, 2):
        lt.run(g.members[i].gcs.close())
        lt.run(g.servers[i].stop())
    wait_until(lambda: not g.members[0].has_quorum(), "m0 sees it has lost the majority")
    assert query(c0, "/* grproxy */ ROUTER MEMBERS")[0][6] == 0
    wait_until(lambda: g.router is not None and not g.router.topology.online(), "the router routes nothing")
    # Routing nothing, the router refuses a new client at once (2003) or answers its statements
    # with 3783, depending on whether the session found a member to open before the poll.
    try:
        r0 = g.connect_router()
    except pymysql.err.OperationalError as exc:
        assert exc.args[0] == 2003, exc
    else:
        assert error_of(r0, "SELECT 1")[0] == 3783
        r0.close()
    code, message = error_of(c0, "SET GLOBAL group_replication_force_members = '127.0.0.1:1'")
    assert code == 1231 and "not the local_address" in message
    query(c0, f"SET GLOBAL group_replication_force_members = '{me}'")
    wait_until(lambda: g.members[0].has_quorum() and list(g.members[0].engine.members) == [g.uuids[0]],
               "m0 alone in a group of its own")
    assert query(c0, "SELECT @@group_replication_force_members") == [(me,)]
    query(c0, "INSERT INTO app.t VALUES (4000, 0)")  # commits again
    wait_until(lambda: g.router is not None and len(g.router.topology.online()) == 1, "the router trusts m0 again")
    r = g.connect_router()

    def routed_insert() -> bool:
        # A router session that found no member a moment ago may be refused once more (2003,
        # 3783) while the router's view settles: a client tries again, within a bound.
        try:
            query(r, "INSERT INTO app.t VALUES (4001, 0)")
        except pymysql.err.OperationalError as exc:
            if exc.args[0] not in (2003, 3783):
                raise
            return False
        return True

    wait_until(routed_insert, "a write through the router")
    assert backend_query(g.backends[0], "SELECT COUNT(*) FROM app.t WHERE id IN (4000, 4001)") == [(2,)]
    r.close()
    c0.close()


# --- server administration through the shared backend account -------------------------------------

SERVER_ADMIN = ["SHUTDOWN", "SET GLOBAL max_connections = 5", "SET @@GLOBAL.read_only = 1",
                "CREATE USER intruder@'%'", "GRANT ALL ON *.* TO app_user", "SET PASSWORD = PASSWORD('x')",
                "FLUSH TABLES", "RESET QUERY CACHE", "PURGE BINARY LOGS BEFORE NOW()", "STOP SLAVE",
                "INSTALL SONAME 'ha_example'", "SELECT 1; SHUTDOWN", "PREPARE s FROM 'SHUTDOWN'"]


@pytest.mark.parametrize("sql", SERVER_ADMIN)
def test_server_administration_needs_an_admin_user(group: tuple[Group, LoopThread], sql: str) -> None:
    """grproxy's users reach a backend through one account with every privilege: what a server
    would ask of the client's own account (SHUTDOWN, SET GLOBAL, accounts, FLUSH, replication
    control, plugins) needs an admin user — 1227 on a member port and through the router, and
    nothing happened (the backend still answers, max_connections unchanged)."""
    g, _ = group
    for conn in (g.connect(0, user="app", client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS),
                 g.connect_router(user="app", client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)):
        try:
            code, message = error_of(conn, sql)
            assert code == 1227 and "privilege" in message, (code, message)
            assert query(conn, "SELECT @@GLOBAL.read_only") == [(0,)]
            # Table maintenance stays open to applications.
            query(conn, "ANALYZE TABLE mysql.user")
        finally:
            conn.close()
    assert backend_query(g.backends[0], "SELECT COUNT(*) FROM mysql.user WHERE user = 'intruder'") == [(0,)]


def test_binlog_statements_are_refused_even_to_admins(group: tuple[Group, LoopThread]) -> None:
    g, _ = group
    conn = g.connect(0)
    try:
        assert error_of(conn, "BINLOG 'AAAA'")[0] == 1235
    finally:
        conn.close()
