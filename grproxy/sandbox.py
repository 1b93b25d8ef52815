"""`grproxy sandbox`: a local group — backends, one grproxy member process each, a router.

Starts N MariaDB/MySQL servers (datadirs under --base-dir, or a temporary directory removed at
exit; free ports; loopback only), then one `grproxy serve` process per server hosting the
member that owns it (the first bootstraps the group, the others join through it), waits until
every member is ONLINE, then serves the router's client port in this process (router/: reads
to secondaries, writes to the primary, the session's consistency level carried to each
member). Prints a line with `ready` and the command to connect, and writes --status-file
(JSON, rewritten whenever it changes).
SIGINT or SIGTERM stops everything; no process or port is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from .app import App
from .config import Config, FrontendConfig, LogConfig, RouterSection, UserConfig
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.protocol.errors import MySQLError

from .mysqld import (
    ServerHandle,
    ServerNotFound,
    ServerStartError,
    find_client_binary,
    find_server_binary,
    free_port,
    start_server,
)

log = structlog.get_logger("grproxy.sandbox")

SANDBOX_USER = "root"
BACKEND_USER = "grproxy"
BACKEND_PASSWORD = "grproxy"
MEMBER_START_TIMEOUT_S = 60.0  # a member process until it shows ONLINE


@dataclass(slots=True)
class MemberProcess:
    """One member: a `grproxy serve` child process beside its own backend."""

    index: int
    backend: ServerHandle
    member_port: int
    group_port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    settings: tuple[tuple[str, str], ...] = ()  # (key, TOML value) added to [member] (--member-setting)

    @property
    def id(self) -> str:
        return f"member{self.index}"

    def config_text(self, seeds: list[str], single_primary: bool) -> str:
        b = self.backend
        lines = [
            "[frontend]", "enabled = false",
            "", "[[users]]", f'name = "{SANDBOX_USER}"', 'password = ""', "admin = true",
            "", "[[backends]]", f'name = "{self.id}"', f'host = "{b.host}"', f"port = {b.port}",
            f'user = "{b.user}"', f'password = "{b.password}"',
            "", "[member]", f'backend = "{self.id}"', 'host = "127.0.0.1"', f"port = {self.member_port}",
            'group_name = "grproxy-sandbox"', f'group_address = "127.0.0.1:{self.group_port}"',
            f"group_seeds = [{', '.join(json.dumps(x) for x in seeds)}]",
            # Never true in a file: the first start bootstraps with `serve --bootstrap`, so this
            # file restarts the member into the running group (GR's bootstrap_group is unset
            # after the bootstrap for the same reason).
            "bootstrap_group = false",
            f"single_primary_mode = {'true' if single_primary else 'false'}",
            *(f"{key} = {value}" for key, value in self.settings),
            "", "[log]", 'format = "json"',
        ]
        return "\n".join(lines) + "\n"

    def start(self, seeds: list[str], single_primary: bool, *, bootstrap: bool = False) -> None:
        """Write this member's config (every other member a seed) and start its process;
        `bootstrap` for the group's very first start only."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "grproxy.toml"
        config.write_text(self.config_text(seeds, single_primary))
        with open(self.workdir / "grproxy.log", "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "grproxy", "serve", "--config", str(config), *(["--bootstrap"] if bootstrap else [])],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )

    def stop(self, timeout_s: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)


def _die_with_parent() -> None:  # in the child between fork and exec (Linux)
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def status_document(app: App | None, servers: list[ServerHandle], members: list[MemberProcess]) -> dict[str, Any]:
    """The --status-file contents: the router and every member with its backend."""
    router = None
    if app is not None and app.frontend is not None:
        router = {"host": app.config.frontend.host, "port": app.frontend.port,
                  "user": SANDBOX_USER, "password": "", "pid": os.getpid()}
    by_backend = {m.backend.pid: m for m in members}
    out = []
    for i, s in enumerate(servers, start=1):
        m = by_backend.get(s.pid)
        out.append({
            "id": f"member{i}",
            "member_port": m.member_port if m else None,
            "group_port": m.group_port if m else None,
            "http_port": None,  # the HTTP endpoint (/metrics, /health) is not built yet
            "pid": m.process.pid if m and m.process else None,
            "backend": {"host": s.host, "port": s.port, "pid": s.pid, "datadir": str(s.datadir),
                        "user": s.user, "password": s.password},
        })
    return {"router": router, "members": out}


def write_status(path: str | None, doc: dict[str, Any]) -> None:
    if not path:
        return
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)  # readers never see a half-written file


async def wait_members_online(port: int, count: int, members: list[MemberProcess], timeout_s: float) -> None:
    """Until `count` members show ONLINE in replication_group_members on `port`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    address = BackendAddress("127.0.0.1", port, SANDBOX_USER, "")
    last = "no answer"
    while asyncio.get_running_loop().time() < deadline:
        for m in members:
            if m.process is not None and m.process.poll() is not None:
                tail = (m.workdir / "grproxy.log").read_text(errors="replace").splitlines()[-20:]
                raise SandboxError(f"{m.id} exited with code {m.process.returncode}:\n" + "\n".join(tail))
        try:
            conn = await BackendConnection.open(address, capabilities=int(OWN_CAPABILITIES), collation=UTF8MB4_GENERAL_CI,
                                                timeout_s=2)
            try:
                r = await conn.execute("SELECT MEMBER_STATE FROM performance_schema.replication_group_members")
            finally:
                conn.close()
            states = [row[0] for row in r.rows]
            last = f"states {states}"
            if states.count(b"ONLINE") >= count:
                return
        except MySQLError as exc:
            last = exc.message
        await asyncio.sleep(0.2)
    raise SandboxError(f"the group did not reach {count} ONLINE members in {timeout_s:.0f}s ({last})")


class SandboxError(Exception):
    pass


async def run_sandbox(args: argparse.Namespace) -> int:
    try:
        binary = find_server_binary()
    except ServerNotFound as exc:
        print(f"grproxy sandbox: {exc}", file=sys.stderr)
        return 1
    temporary = args.base_dir is None
    base = Path(tempfile.mkdtemp(prefix="grproxy-sandbox-")) if temporary else Path(args.base_dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    servers: list[ServerHandle] = []
    members: list[MemberProcess] = []
    app: App | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    single_primary = args.mode == "single-primary"
    try:
        for i in range(1, args.members + 1):
            log.info("starting_backend", member=i, server=str(binary.path), version=binary.version)
            # Started from the main thread with die_with_parent: a killed sandbox takes its
            # servers with it.
            handle = start_server(base / f"member{i}" / "data", server_id=i, user=BACKEND_USER,
                                  password=BACKEND_PASSWORD, die_with_parent=True, binary=binary)
            servers.append(handle)
            write_status(args.status_file, status_document(None, servers, members))
            if stop.is_set():
                return 130
        planned = [MemberProcess(i, handle, free_port(), free_port(), base / f"member{i}",
                                 settings=tuple(args.member_setting or ()))
                   for i, handle in enumerate(servers, start=1)]
        for m in planned:
            # Every member lists every other as a seed: any of them brings it back in.
            seeds = [f"127.0.0.1:{o.group_port}" for o in planned if o is not m]
            m.start(seeds, single_primary, bootstrap=m is planned[0])
            members.append(m)
            write_status(args.status_file, status_document(None, servers, members))
            await wait_members_online(planned[0].member_port, m.index, members, MEMBER_START_TIMEOUT_S)
            log.info("member_online", member=m.id, member_port=m.member_port, group_port=m.group_port)
            if stop.is_set():
                return 130
        config = Config(
            frontend=FrontendConfig(host="127.0.0.1", port=args.port),
            users=(UserConfig(name=SANDBOX_USER, password_hash="", admin=True),),
            log=LogConfig(format=args.log_format),
            router=RouterSection(members=tuple(f"127.0.0.1:{m.member_port}" for m in members), user=SANDBOX_USER,
                                 password="", read_user=BACKEND_USER, read_password=BACKEND_PASSWORD),
        )
        app = App(config)
        try:
            await app.start()
        except OSError as exc:
            print(f"grproxy sandbox: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        assert app.frontend is not None
        write_status(args.status_file, status_document(app, servers, members))
        client = _client_name()
        mode = "single-primary" if single_primary else "multi-primary"
        print(
            f"grproxy sandbox ready: {len(members)} member(s), {mode}, grproxy on 127.0.0.1:{app.frontend.port}\n"
            f"  connect with: {client} -h127.0.0.1 -P{app.frontend.port} -u{SANDBOX_USER}\n"
            f"  member ports: {', '.join(str(m.member_port) for m in members)}\n"
            f"  stop with Ctrl-C",
            flush=True,
        )
        await stop.wait()
        return 0
    except (ServerStartError, ServerNotFound, SandboxError) as exc:
        print(f"grproxy sandbox: {exc}", file=sys.stderr)
        return 1
    finally:
        log.info("sandbox_stopping")
        if app is not None:
            await app.stop()
        for m in reversed(members):
            m.stop()
        for s in servers:
            s.stop()
        if args.status_file:
            Path(args.status_file).unlink(missing_ok=True)
        if temporary:
            shutil.rmtree(base, ignore_errors=True)


def _client_name() -> str:
    try:
        return find_client_binary().name
    except Exception:  # noqa: BLE001 - only for the hint we print
        return "mariadb"


def member_setting(text: str) -> tuple[str, str]:
    """`KEY=VALUE` of --member-setting: a [member] key of the config file and its value, written
    as TOML (numbers and true/false as they are, anything else quoted). Raises ValueError."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
        raise ValueError(f"expected KEY=VALUE with a [member] key, got {text!r}")
    if not (re.fullmatch(r"-?\d+(\.\d+)?", value) or value in ("true", "false")):
        value = json.dumps(value)
    return key, value
