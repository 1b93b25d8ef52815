"""Composition root: builds the process from a Config and runs it until stopped.

Nothing else in the tree creates servers, listeners or connections on its own; no module-level
singletons (STYLE §3).
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

import structlog

from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.protocol.errors import MySQLError

from replication.protocol.relay import RelayFactory

from .config import Config
from .frontend import FrontendServer

log = structlog.get_logger("grproxy")

BACKEND_PROBE_ATTEMPTS_MAX = 30  # at start-up, one second apart


@dataclass(frozen=True, slots=True)
class BackendInfo:
    version: str
    capabilities: int


async def probe_backend(address: BackendAddress, timeout_s: float) -> BackendInfo:
    """Connect once to learn the server's version and capabilities. Raises MySQLError."""
    conn = await BackendConnection.open(
        address, capabilities=int(OWN_CAPABILITIES), collation=UTF8MB4_GENERAL_CI, timeout_s=timeout_s
    )
    try:
        assert conn.handshake is not None
        return BackendInfo(conn.handshake.server_version, conn.handshake.capabilities)
    finally:
        await conn.quit()


class App:
    """A running grproxy: the front end in front of the configured backend."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.frontend: FrontendServer | None = None

    async def start(self) -> None:
        b = self.config.backends[0]
        address = BackendAddress(b.host, b.port, b.user, b.password, b.name)
        info: BackendInfo | None = None
        for attempt in range(BACKEND_PROBE_ATTEMPTS_MAX):
            try:
                info = await probe_backend(address, b.connect_timeout_s)
                break
            except MySQLError as exc:
                log.warning("backend_probe_failed", backend=str(address), attempt=attempt + 1, error=exc.message)
                await asyncio.sleep(1.0)
        if info is None:
            raise SystemExit(f"grproxy: backend {address} did not answer; giving up")
        version = self.config.frontend.server_version or f"{info.version}-grproxy"
        factory = RelayFactory(address, b.connect_timeout_s)
        self.frontend = FrontendServer(self.config, version, info.capabilities, factory)
        await self.frontend.start()
        log.info("listening", host=self.config.frontend.host, port=self.frontend.port,
                 backend=str(address), backend_version=info.version)

    async def stop(self) -> None:
        if self.frontend is not None:
            await self.frontend.stop()


def install_loop_policy() -> None:
    """uvloop when available: twice the relayed queries per second of the default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(config: Config) -> None:
    """Run until SIGINT/SIGTERM."""
    app = App(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await app.stop()
