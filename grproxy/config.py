"""grproxy's configuration file (TOML), validated once at start-up.

Every key has a default (see conf/grproxy.example.toml, which documents them all). A bad file
raises `ConfigError` naming the offending key; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from replication.gcs.xcom.allowlist import IpAllowlist
from replication.gcs.xcom.tls import SslMode, TlsConfig
from replication.protocol.packets import native_password_hash
from replication.lifecycle import ExitStateAction


class ConfigError(Exception):
    """A configuration problem; the message starts with the key it concerns."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key


@dataclass(frozen=True, slots=True)
class FrontendConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 6446
    max_allowed_packet: int = 64 * 1024 * 1024
    max_connections: int = 1024
    server_version: str = ""
    connect_timeout_s: float = 10.0
    tls_cert: str = ""
    tls_key: str = ""
    require_secure_transport: bool = False


@dataclass(frozen=True, slots=True)
class UserConfig:
    name: str
    password_hash: str = ""  # "*" + 40 upper-case hex digits, or "" for no password
    admin: bool = False


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "grproxy"
    password: str = ""
    connect_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class MemberSection:
    """[member]: this process hosts a group member owning one backend (GR's names/defaults)."""

    backend: str = ""  # name of the [[backends]] entry this member owns (default: the first)
    uuid: str = ""  # default: generated once and kept in the backend (grproxy.meta)
    host: str = "127.0.0.1"  # member port: MySQL protocol, executes on this member
    port: int = 3310
    group_name: str = "grproxy"
    group_address: str = "127.0.0.1:33061"
    group_seeds: tuple[str, ...] = ()
    bootstrap_group: bool = False
    single_primary_mode: bool = True
    member_weight: int = 50
    member_expel_timeout_s: float = 5.0
    autorejoin_tries: int = 3  # after an expulsion or a failed join (0 = never)
    autorejoin_interval_s: float = 5.0
    exit_state_action: str = "READ_ONLY"  # on ERROR: READ_ONLY, OFFLINE_MODE or ABORT_SERVER
    unreachable_majority_timeout_s: float = 0.0  # 0 = wait for a majority forever
    transaction_size_limit: int = 150_000_000
    message_cache_size: int = 1 << 30  # bytes of certified transactions kept for joiners (GR's default)
    recovery_donor_timeout_s: float = 30.0  # one command on a donor during recovery; then the next donor
    compression_threshold: int = 1_000_000
    communication_max_message_size: int = 10_485_760
    paxos_single_leader: bool = False
    flow_control_mode: str = "QUOTA"  # QUOTA or DISABLED
    flow_control_certifier_threshold: int = 25_000
    flow_control_applier_threshold: int = 25_000
    flow_control_period_s: int = 1  # 1..60
    ip_allowlist: str = "AUTOMATIC"  # who may connect to the group port: AUTOMATIC or "cidr, addr, …"
    ssl_mode: str = "DISABLED"  # group connections: DISABLED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY
    ssl_ca: str = ""
    ssl_cert: str = ""
    ssl_key: str = ""


@dataclass(frozen=True, slots=True)
class RouterSection:
    """[router]: the client port routes over a group's members (read/write split, consistency).

    members: member ports ("host:port") to ask for the member table; the rest is discovered.
    user / password: the account the router logs in with on member ports.
    """

    members: tuple[str, ...] = ()
    user: str = "root"
    password: str = ""
    local_member: str = ""  # uuid of the member beside this router (multi-primary writes prefer it)
    refresh_s: float = 0.5
    down_hold_s: float = 2.0
    connect_timeout_s: float = 5.0
    max_connections_per_member: int = 512
    idle_connections_per_member: int = 64
    read_user: str = ""  # account on the members' backends for direct EVENTUAL reads ("" = never)
    read_password: str = ""


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str = "console"
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    users: tuple[UserConfig, ...] = ()
    backends: tuple[BackendConfig, ...] = ()
    log: LogConfig = field(default_factory=LogConfig)
    member: MemberSection | None = None
    router: RouterSection | None = None


_HASH_RE = re.compile(r"^\*[0-9A-Fa-f]{40}$")


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--config", f"no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc}") from None
    return parse_config(raw)


def parse_config(raw: dict[str, Any]) -> Config:
    known = {"frontend", "users", "backends", "log", "member", "router"}
    for key in raw:
        if key not in known:
            raise ConfigError(key, f"unknown section (known: {', '.join(sorted(known))})")
    frontend = _section(FrontendConfig, raw.get("frontend", {}), "frontend")
    _check_port(frontend.port, "frontend.port", allow_zero=True)
    _check_positive(frontend.max_allowed_packet, "frontend.max_allowed_packet", minimum=1024, maximum=1 << 30)
    _check_positive(frontend.max_connections, "frontend.max_connections")
    _check_positive(frontend.connect_timeout_s, "frontend.connect_timeout_s")
    if bool(frontend.tls_cert) != bool(frontend.tls_key):
        raise ConfigError("frontend.tls_cert", "tls_cert and tls_key must be given together")
    for key in ("tls_cert", "tls_key"):
        value = getattr(frontend, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"frontend.{key}", f"no such file: {value}")
    if frontend.require_secure_transport and not frontend.tls_cert:
        raise ConfigError("frontend.require_secure_transport", "needs tls_cert and tls_key")

    users = []
    for i, item in enumerate(_table_list(raw.get("users", []), "users")):
        where = f"users[{i}]"
        item = dict(item)
        password = item.pop("password", None)
        if password is not None:
            if "password_hash" in item:
                raise ConfigError(f"{where}.password", "give either password or password_hash, not both")
            if not isinstance(password, str):
                raise ConfigError(f"{where}.password", "must be a string")
            item["password_hash"] = native_password_hash(password)
        user = _section(UserConfig, item, where)
        if not user.name:
            raise ConfigError(f"{where}.name", "must not be empty")
        if user.password_hash and not _HASH_RE.match(user.password_hash):
            raise ConfigError(f"{where}.password_hash", "must be '*' followed by 40 hex digits (as in mysql.user)")
        users.append(user)
    names = [u.name for u in users]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("users", f"user {name!r} is defined twice")

    backends = []
    for i, item in enumerate(_table_list(raw.get("backends", []), "backends")):
        where = f"backends[{i}]"
        item = dict(item)
        item.setdefault("name", f"db{i + 1}")
        backend = _section(BackendConfig, item, where)
        _check_port(backend.port, f"{where}.port")
        _check_positive(backend.connect_timeout_s, f"{where}.connect_timeout_s")
        backends.append(backend)
    router = _router_section(raw["router"]) if "router" in raw else None
    if not backends and router is None:
        raise ConfigError("backends", "at least one [[backends]] entry is needed (or a [router] section)")

    log = _section(LogConfig, raw.get("log", {}), "log")
    if log.format not in ("console", "json"):
        raise ConfigError("log.format", f"must be 'console' or 'json', not {log.format!r}")
    if log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level", f"must be debug, info, warning or error, not {log.level!r}")
    member = None
    if "member" in raw:
        member = _section(MemberSection, _with_address_list(raw["member"], "group_seeds", "member"), "member")
        names = [b.name for b in backends]
        if member.backend and member.backend not in names:
            raise ConfigError("member.backend", f"no [[backends]] entry named {member.backend!r} (have {names})")
        _check_port(member.port, "member.port", allow_zero=True)
        _check_address(member.group_address, "member.group_address")
        for i, value in enumerate(member.group_seeds):
            _check_address(value, f"member.group_seeds[{i}]")
        if not 0 <= member.member_weight <= 100:
            raise ConfigError("member.member_weight", "must be between 0 and 100")
        _check_positive(member.member_expel_timeout_s, "member.member_expel_timeout_s")
        if not 0 <= member.autorejoin_tries <= 2016:
            raise ConfigError("member.autorejoin_tries", "must be between 0 and 2016")
        _check_positive(member.autorejoin_interval_s, "member.autorejoin_interval_s")
        if member.unreachable_majority_timeout_s < 0:
            raise ConfigError("member.unreachable_majority_timeout_s", "must be 0 (forever) or more")
        if member.flow_control_mode not in ("QUOTA", "DISABLED"):
            raise ConfigError("member.flow_control_mode", "must be 'QUOTA' or 'DISABLED'")
        for key in ("flow_control_certifier_threshold", "flow_control_applier_threshold"):
            if not 0 <= getattr(member, key) <= 2147483647:
                raise ConfigError(f"member.{key}", "must be between 0 and 2147483647")
        if not 1 <= member.flow_control_period_s <= 60:
            raise ConfigError("member.flow_control_period_s", "must be between 1 and 60")
        try:
            ExitStateAction.parse(member.exit_state_action)
        except ValueError as exc:
            raise ConfigError("member.exit_state_action", str(exc)) from None
        try:
            IpAllowlist.parse(member.ip_allowlist)
        except ValueError as exc:
            raise ConfigError("member.ip_allowlist", str(exc)) from None
        try:
            mode = SslMode.parse(member.ssl_mode)
        except ValueError as exc:
            raise ConfigError("member.ssl_mode", str(exc)) from None
        for key in ("ssl_ca", "ssl_cert", "ssl_key"):
            value = getattr(member, key)
            if value and not Path(value).is_file():
                raise ConfigError(f"member.{key}", f"no such file: {value}")
        try:
            TlsConfig(mode, member.ssl_ca or None, member.ssl_cert or None, member.ssl_key or None)
        except ValueError as exc:
            key = "member.ssl_ca" if "ssl_ca" in str(exc) else "member.ssl_cert"
            raise ConfigError(key, str(exc)) from None
        _check_positive(member.transaction_size_limit, "member.transaction_size_limit")
        # Below GR's 128 MiB minimum on purpose: a small cache makes joiners clone (tests, demos).
        _check_positive(member.message_cache_size, "member.message_cache_size")
        _check_positive(member.recovery_donor_timeout_s, "member.recovery_donor_timeout_s")
    if member is not None and router is not None:
        raise ConfigError("router", "a process hosts a [member] or a [router], not both (run two processes)")
    return Config(frontend=frontend, users=tuple(users), backends=tuple(backends), log=log, member=member,
                  router=router)


def _router_section(value: Any) -> RouterSection:
    router = _section(RouterSection, _with_address_list(value, "members", "router"), "router")
    if not 1 <= len(router.members) <= 9:
        raise ConfigError("router.members", "must list 1 to 9 member ports (\"host:port\")")
    for i, address in enumerate(router.members):
        _check_address(address, f"router.members[{i}]")
    for key in ("refresh_s", "down_hold_s", "connect_timeout_s", "max_connections_per_member",
                "idle_connections_per_member"):
        _check_positive(getattr(router, key), f"router.{key}")
    return router


def _with_address_list(section: Any, key: str, where: str) -> Any:
    """`section` with its list of "host:port" strings under `key` as a tuple (checked: a list
    of strings)."""
    if not isinstance(section, dict) or key not in section:
        return section
    values = section[key]
    if not isinstance(values, list) or not all(isinstance(x, str) for x in values):
        raise ConfigError(f"{where}.{key}", "must be a list of \"host:port\" strings")
    return {**section, key: tuple(values)}


def _check_address(value: str, key: str) -> None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, f"must be \"host:port\", not {value!r}")


def _table_list(value: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(key, "must be a list of tables ([[%s]])" % key)
    return value


def _section(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(where, "must be a table")
    spec = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        f = spec.get(key)
        if f is None:
            raise ConfigError(f"{where}.{key}", f"unknown key (known: {', '.join(spec)})")
        expected = f.type if isinstance(f.type, str) else f.type.__name__
        ok = {
            "tuple[str, ...]": isinstance(value, tuple),
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }.get(expected, True)
        if not ok:
            raise ConfigError(f"{where}.{key}", f"must be of type {expected}, not {type(value).__name__}")
        kwargs[key] = float(value) if expected == "float" else value
    missing = [n for n, f in spec.items() if n not in kwargs and f.default is f.default_factory is _MISSING]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}", "is required")
    return cls(**kwargs)


def _check_port(value: int, key: str, allow_zero: bool = False) -> None:
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise ConfigError(key, f"must be a TCP port (1-65535), not {value}")


def _check_positive(value: float, key: str, minimum: float = 0, maximum: float | None = None) -> None:
    if value <= 0 or value < minimum or (maximum is not None and value > maximum):
        bound = f" between {minimum} and {maximum}" if maximum is not None else ""
        raise ConfigError(key, f"must be positive{bound}, not {value}")


from dataclasses import MISSING as _MISSING  # noqa: E402
