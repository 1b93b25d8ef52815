"""Members with member ports in this test's event loop (no tests here).

`PortGroup` runs members in a `LoopThread` (real TCP group communication, one real MariaDB
backend each, row events applied with `rowevents.RowEventApplier` as `grproxy serve` does); clients
are PyMySQL connections in the test's thread, as an application would use.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pymysql

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


class LoopThread:
    """An asyncio loop in a thread, hosting the members while the test talks SQL to them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout_s: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class PortGroup:
    def __init__(self, backends: list[ServerHandle], single_primary: bool) -> None:
        self.backends = backends
        self.single_primary = single_primary
        self.members: list[Member] = []
        self.servers: list[FrontendServer] = []
        self.gcs: list[XcomGroup] = []

    async def start(self) -> None:
        ids = [MemberId(f"m{i}", f"127.0.0.1:{free_port()}", new_incarnation()) for i in range(len(self.backends))]
        core = CoreConfig(heartbeat_interval_ms=200, suspicion_timeout_ms=1000, member_expel_timeout_ms=1000)
        for i, (mid, b) in enumerate(zip(ids, self.backends)):
            gcs = XcomGroup(mid, core, TransportConfig(group_name="grproxy-ports"))
            await gcs.start()
            port = free_port()
            member = Member(MemberConfig(uuid=mid.uuid, backend=BackendAddress(b.host, b.port, b.user, b.password),
                                         single_primary=self.single_primary, member_address=f"127.0.0.1:{port}",
                                         stable_report_interval_s=0.2), gcs, RowEventApplier())
            config = Config(frontend=FrontendConfig(host="127.0.0.1", port=port),
                            users=(UserConfig("root", "", admin=True),),
                            backends=())
            server = FrontendServer(config, "10.11.0-MariaDB-grproxy", 0xFFFFFFFF, MemberSessionFactory(member))
            await server.start()
            self.gcs.append(gcs)
            self.members.append(member)
            self.servers.append(server)
            await member.start(bootstrap=i == 0, seeds=(ids[0],))
            await self.wait(lambda: all(len(m.engine.members) == i + 1 for m in self.members))
        await self.wait(lambda: all(all(r.state is MemberState.ONLINE for r in m.engine.members.values())
                                    for m in self.members))

    async def wait(self, cond: Callable[[], bool], timeout_s: float = 30) -> None:
        async with asyncio.timeout(timeout_s):
            while not cond():
                await asyncio.sleep(0.02)

    async def wait_converged(self) -> None:
        target = max(m.positions.applied.lwm for m in self.members)
        for m in self.members:
            await m.positions.wait_applied(target, timeout_s=30)

    async def stop(self) -> None:
        for s in self.servers:
            await s.stop()
        for m in self.members:
            await m.stop()
        for g in self.gcs:
            await g.close()

    def connect(self, i: int, **kw: Any) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.servers[i].port, user="root", password="",
                               autocommit=True, **kw)


def backend_rows(b: ServerHandle, sql: str) -> list[tuple[Any, ...]]:
    c = pymysql.connect(host=b.host, port=b.port, user=b.user, password=b.password)
    try:
        with c.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        c.close()


def reset_backends(backends: list[ServerHandle]) -> None:
    for b in backends:
        c = pymysql.connect(host=b.host, port=b.port, user=b.user, password=b.password, autocommit=True)
        with c.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS app")
            cur.execute("DROP DATABASE IF EXISTS grproxy")
        c.close()
