"""Composition root: builds the process from a Config and runs it until stopped.

Nothing else in the tree creates servers, listeners or connections on its own; no module-level
singletons (STYLE §3).
"""

from __future__ import annotations

import asyncio
import signal
import uuid as uuidlib
from dataclasses import dataclass

import structlog

from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.protocol.errors import MySQLError

from replication.gcs.interface import MemberId
from replication.gcs.xcom.binding import XcomGroup, new_incarnation
from replication.gcs.xcom.allowlist import IpAllowlist
from replication.gcs.xcom.core import CoreConfig
from replication.gcs.xcom.tls import SslMode, TlsConfig
from replication.gcs.xcom.transport import TransportConfig
from replication.lifecycle import ExitStateAction
from replication.member import Member, MemberConfig, StartRefused
from replication.member_session import MemberSessionFactory
from replication import outside_writes
from replication.positions import PositionStore
from replication.rowevents import RowEventApplier
from replication.protocol.relay import RelayFactory, SessionFactory
from router.service import Router, RouterSettings
from router.session import RouterFactory

from .config import BackendConfig, Config, MemberSection, RouterSection
from .frontend import FrontendServer

log = structlog.get_logger("grproxy")

BACKEND_PROBE_ATTEMPTS_MAX = 30  # at start-up, one second apart
LEAVE_GRACE_S = 0.5  # on stop: time for the leave to be ordered before the transport closes


@dataclass(frozen=True, slots=True)
class BackendInfo:
    version: str
    capabilities: int
    mariadb_capabilities: int = 0


async def probe_backend(address: BackendAddress, timeout_s: float) -> BackendInfo:
    """Connect once to learn the server's version and capabilities. Raises MySQLError."""
    conn = await BackendConnection.open(
        address, capabilities=int(OWN_CAPABILITIES), collation=UTF8MB4_GENERAL_CI, timeout_s=timeout_s
    )
    try:
        assert conn.handshake is not None
        return BackendInfo(conn.handshake.server_version, conn.handshake.capabilities,
                           conn.handshake.mariadb_capabilities)
    finally:
        await conn.quit()


class App:
    """A running grproxy: a client port relaying to the first backend, or — with [member] —
    a group member owning its backend, its member port, and a client port on that member."""

    def __init__(self, config: Config, *, bootstrap: bool = False, clone: bool = False) -> None:
        self.config = config
        self.bootstrap = bootstrap  # `serve --bootstrap`: bootstrap_group for this start only
        self.clone = clone  # `serve --clone`: recover by a clone, whatever the backend holds
        self.exit_requested = asyncio.Event()  # exit_state_action = ABORT_SERVER
        self.frontend: FrontendServer | None = None
        self.member_port: FrontendServer | None = None
        self.member: Member | None = None
        self.gcs: XcomGroup | None = None
        self.router: Router | None = None

    def _backend_config(self) -> BackendConfig:
        name = self.config.member.backend if self.config.member else ""
        return next((b for b in self.config.backends if b.name == name), self.config.backends[0])

    async def start(self) -> None:
        r = self.config.router
        settings = router_settings(r) if r is not None else None
        if settings is not None:
            addresses = [BackendAddress(h, p, settings.user, settings.password, f"member {h}:{p}")
                         for h, p in settings.seeds]
            timeout_s = settings.connect_timeout_s
        else:
            b = self._backend_config()
            addresses = [BackendAddress(b.host, b.port, b.user, b.password, b.name)]
            timeout_s = b.connect_timeout_s
        info: BackendInfo | None = None
        address = addresses[0]
        for attempt in range(BACKEND_PROBE_ATTEMPTS_MAX):
            address = addresses[attempt % len(addresses)]
            try:
                info = await probe_backend(address, timeout_s)
                break
            except MySQLError as exc:
                log.warning("backend_probe_failed", backend=str(address), attempt=attempt + 1, error=exc.message)
                await asyncio.sleep(1.0)
        if info is None:
            raise SystemExit(f"grproxy: backend {address} did not answer; giving up")
        version = self.config.frontend.server_version or (
            info.version if info.version.endswith("-grproxy") else f"{info.version}-grproxy")
        factory: SessionFactory
        if settings is not None:
            self.router = Router(settings)
            await self.router.start()
            factory = RouterFactory(self.router)
        elif self.config.member is not None:
            factory = await self._start_member(address, version, info)
        else:
            factory = RelayFactory(address, timeout_s)
        if self.config.frontend.enabled:
            self.frontend = FrontendServer(self.config, version, info.capabilities, factory,
                                           backend_mariadb_caps=info.mariadb_capabilities)
            await self.frontend.start()
            log.info("listening", host=self.config.frontend.host, port=self.frontend.port,
                     backend=str(address), backend_version=info.version)

    async def _start_member(self, address: BackendAddress, version: str, info: BackendInfo) -> SessionFactory:
        m = self.config.member
        assert m is not None
        uuid = m.uuid or await _member_uuid(address)
        core = CoreConfig(member_expel_timeout_ms=int(m.member_expel_timeout_s * 1000),
                          paxos_single_leader=m.paxos_single_leader)
        transport = transport_config(m)

        async def new_gcs() -> XcomGroup:
            """A new incarnation of this member in the group, listening on its group port."""
            gcs = XcomGroup(MemberId(uuid, m.group_address, new_incarnation()), core, transport)
            await gcs.start()
            self.gcs = gcs
            return gcs

        await new_gcs()
        assert self.gcs is not None
        self.member = Member(
            MemberConfig(uuid=uuid, backend=address, single_primary=m.single_primary_mode,
                         member_weight=m.member_weight, member_address=f"{m.host}:{m.port}",
                         transaction_size_limit=m.transaction_size_limit, autorejoin_tries=m.autorejoin_tries,
                         autorejoin_interval_s=m.autorejoin_interval_s, exit_state_action=m.exit_state_action,
                         unreachable_majority_timeout_s=m.unreachable_majority_timeout_s,
                         message_cache_size=m.message_cache_size,
                         recovery_donor_timeout_s=m.recovery_donor_timeout_s,
                         flow_control_mode=m.flow_control_mode,
                         flow_control_certifier_threshold=m.flow_control_certifier_threshold,
                         flow_control_applier_threshold=m.flow_control_applier_threshold,
                         flow_control_period_s=m.flow_control_period_s),
            self.gcs, RowEventApplier(), gcs_factory=new_gcs,
        )
        self.member.on_error.append(self._member_failed)
        factory = MemberSessionFactory(self.member)
        self.member_port = FrontendServer(self.config, version, info.capabilities, factory, listen=(m.host, m.port),
                                          backend_mariadb_caps=info.mariadb_capabilities)
        await self.member_port.start()
        seeds = tuple(MemberId("seed", addr, 0) for addr in m.group_seeds if addr != m.group_address)
        bootstrap = m.bootstrap_group or self.bootstrap
        self.member.clone_requested = self.clone
        try:
            await self.member.start(bootstrap=bootstrap, seeds=seeds)
        except StartRefused as exc:
            log.error("member_start_refused", member_id=uuid, reason=str(exc))
            raise SystemExit(f"grproxy: {exc}") from None
        log.info("member_started", member_id=uuid, member_port=self.member_port.port, group_address=m.group_address,
                 bootstrap=bootstrap, seeds=list(m.group_seeds))
        return factory

    def _member_failed(self, why: str) -> None:
        """The member entered ERROR for good: act on exit_state_action (READ_ONLY: nothing
        more; the member refuses writes itself)."""
        assert self.member is not None
        action = self.member.exit_state_action
        if action is ExitStateAction.ABORT_SERVER:
            log.error("exit_state_action_abort", reason=why)
            self.exit_requested.set()
        elif action is ExitStateAction.OFFLINE_MODE:
            log.error("exit_state_action_offline_mode", reason=why)

    async def stop(self) -> None:
        for server in (self.frontend, self.member_port):
            if server is not None:
                await server.stop()
        if self.router is not None:
            await self.router.stop()
        if self.gcs is not None and self.member is not None:
            try:
                self.gcs.leave()  # others install a view without us at once, no expel wait
                await asyncio.sleep(LEAVE_GRACE_S)
            except Exception:  # noqa: BLE001 - leaving is best effort on the way out
                pass
        if self.member is not None:
            await self.member.stop()
        if self.gcs is not None:
            await self.gcs.close()


def router_settings(r: RouterSection) -> RouterSettings:
    """The router's settings from [router] (validated by the config loader)."""
    return RouterSettings(
        seeds=tuple((h, int(p)) for h, _, p in (m.rpartition(":") for m in r.members)),
        user=r.user, password=r.password, local_member=r.local_member or None, refresh_s=r.refresh_s,
        down_hold_s=r.down_hold_s, connect_timeout_s=r.connect_timeout_s,
        max_connections_per_member=r.max_connections_per_member,
        idle_connections_per_member=r.idle_connections_per_member,
        read_user=r.read_user, read_password=r.read_password,
    )


def transport_config(m: MemberSection) -> TransportConfig:
    """The group transport's settings from [member] (validated by the config loader)."""
    return TransportConfig(
        group_name=m.group_name,
        compression_threshold=m.compression_threshold,
        communication_max_message_size=m.communication_max_message_size,
        ip_allowlist=IpAllowlist.parse(m.ip_allowlist),
        tls=TlsConfig(SslMode.parse(m.ssl_mode), m.ssl_ca or None, m.ssl_cert or None, m.ssl_key or None),
    )


async def _member_uuid(address: BackendAddress) -> str:
    """The member's uuid: kept in its backend (grproxy.meta), made once."""
    conn = await BackendConnection.open(address, capabilities=int(OWN_CAPABILITIES), collation=UTF8MB4_GENERAL_CI)
    try:
        if conn.handshake is not None and conn.handshake.is_mariadb:
            await conn.execute(outside_writes.session_sql())  # the member's own writes
        store = PositionStore()
        await store.setup(conn)
        uuid = await store.get_meta(conn, "member_uuid")
        if uuid is None:
            uuid = str(uuidlib.uuid4())
            await store.set_meta(conn, "member_uuid", uuid)
        return uuid
    finally:
        await conn.quit()


def install_loop_policy() -> None:
    """uvloop when available: twice the relayed queries per second of the default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(config: Config, *, bootstrap: bool = False, clone: bool = False) -> int:
    """Run until SIGINT/SIGTERM (exit code 0), or until the member's exit_state_action is
    ABORT_SERVER and it entered ERROR (exit code 1). `clone`: the member recovers by a clone of
    a donor's data whatever its backend holds (its user schemas are replaced)."""
    app = App(config, bootstrap=bootstrap, clone=clone)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    aborted = loop.create_task(app.exit_requested.wait())
    stopped = loop.create_task(stop.wait())
    try:
        await asyncio.wait({aborted, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (aborted, stopped):
            task.cancel()
        log.info("stopping")
        await app.stop()
    return 1 if app.exit_requested.is_set() else 0
