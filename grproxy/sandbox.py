"""`grproxy sandbox`: local backends and grproxy in front of them, in the foreground.

Starts N MariaDB/MySQL servers (datadirs under --base-dir, or a temporary directory removed at
exit; free ports; loopback only), then grproxy in front of them, prints a line with `ready` and
the command to connect, and writes --status-file (JSON, rewritten whenever it changes). SIGINT
or SIGTERM stops everything; no process or port is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import structlog

from .app import App
from .config import BackendConfig, Config, FrontendConfig, LogConfig, UserConfig
from .mysqld import ServerHandle, ServerNotFound, ServerStartError, find_client_binary, find_server_binary, start_server

log = structlog.get_logger("grproxy.sandbox")

SANDBOX_USER = "root"
BACKEND_USER = "grproxy"
BACKEND_PASSWORD = "grproxy"


def status_document(app: App | None, servers: list[ServerHandle]) -> dict[str, Any]:
    """The --status-file contents: the router and every member with its backend."""
    router = None
    if app is not None and app.frontend is not None:
        router = {"host": app.config.frontend.host, "port": app.frontend.port,
                  "user": SANDBOX_USER, "password": "", "pid": os.getpid()}
    members = []
    for i, s in enumerate(servers, start=1):
        members.append({
            "id": f"member{i}",
            "member_port": None,  # members arrive with the replication engine
            "group_port": None,
            "http_port": None,
            "pid": os.getpid(),
            "backend": {"host": s.host, "port": s.port, "pid": s.pid, "datadir": str(s.datadir),
                        "user": s.user, "password": s.password},
        })
    return {"router": router, "members": members}


def write_status(path: str | None, doc: dict[str, Any]) -> None:
    if not path:
        return
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)  # readers never see a half-written file


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
    app: App | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for i in range(1, args.members + 1):
            log.info("starting_backend", member=i, server=str(binary.path), version=binary.version)
            # Started from the main thread with die_with_parent: a killed sandbox takes its
            # servers with it.
            handle = start_server(base / f"member{i}" / "data", server_id=i, user=BACKEND_USER,
                                  password=BACKEND_PASSWORD, die_with_parent=True, binary=binary)
            servers.append(handle)
            write_status(args.status_file, status_document(None, servers))
            if stop.is_set():
                return 130
        config = Config(
            frontend=FrontendConfig(host="127.0.0.1", port=args.port),
            users=(UserConfig(name=SANDBOX_USER, password_hash="", admin=True),),
            backends=tuple(
                BackendConfig(name=f"member{i}", host=s.host, port=s.port, user=s.user, password=s.password)
                for i, s in enumerate(servers, start=1)
            ),
            log=LogConfig(format=args.log_format),
        )
        app = App(config)
        try:
            await app.start()
        except OSError as exc:
            print(f"grproxy sandbox: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        assert app.frontend is not None
        write_status(args.status_file, status_document(app, servers))
        client = _client_name()
        print(
            f"grproxy sandbox ready: {len(servers)} backend(s), grproxy on 127.0.0.1:{app.frontend.port}\n"
            f"  connect with: {client} -h127.0.0.1 -P{app.frontend.port} -u{SANDBOX_USER}\n"
            f"  stop with Ctrl-C",
            flush=True,
        )
        await stop.wait()
        return 0
    except (ServerStartError, ServerNotFound) as exc:
        print(f"grproxy sandbox: {exc}", file=sys.stderr)
        return 1
    finally:
        log.info("sandbox_stopping")
        if app is not None:
            await app.stop()
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
