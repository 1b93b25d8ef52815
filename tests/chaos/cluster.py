"""Launch a group for chaos runs: backends, one member process each, a router, every
member↔member and router↔member link through a fault-injecting relay.

Theory of operation
-------------------
Like `grproxy sandbox` (grproxy/sandbox.py), but the launcher owns every piece so a test can
fault each one:

- N MariaDB servers via grproxy/mysqld.py's ``start_server`` (durable: flush log and binlog at
  each commit; ``innodb_snapshot_isolation=ON`` where the server has it, see
  checkers/list_append.py for why);
- per member two relays, both in one asyncio loop on a background thread: one in front of its
  group port (sources identified from the dialer's HELLO) and one in front of its member port
  (source: the router). The member advertises the relays' addresses and binds elsewhere
  (tests/chaos/member_main.py);
- one ``grproxy serve`` process per member (the first bootstraps, the others join through the
  first one's relay), then a router-only ``grproxy serve`` whose ``[router] members`` are the
  member-port relays (no ``read_user``: every read goes through a member port, hence a relay).

Node names in the :class:`~tests.chaos.netfault.Network`: ``m1`` … ``mN`` and ``router``.
Recovery connections of a joiner to a donor's member port also go through the donor's
member-port relay, where they count as ``router`` traffic (a MySQL handshake does not say which
member dials).

Process faults: :meth:`Cluster.signal_member` / :meth:`Cluster.signal_backend` /
:meth:`Cluster.signal_router` (SIGKILL, SIGSTOP, SIGCONT), :meth:`Cluster.restart_member` (same
config, every other member as a seed: a new incarnation that must rejoin),
:meth:`Cluster.restart_backend`, :meth:`Cluster.restart_router` (same client port).

What a DBA does after a disaster, as the README documents it: :meth:`Cluster.reboot` (``grproxy
reboot --config …`` once every member was restarted after a complete outage) and
:meth:`Cluster.force_members` (``SET GLOBAL group_replication_force_members`` on a survivor of a
lost majority). Both talk to the members' real ports (the relays may be faulted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pymysql

from grproxy.mysqld import ServerBinary, ServerHandle, find_server_binary, free_port, start_server

from .netfault import Network, Relay, group_hello_identifier

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
GROUP_NAME = "grproxy-chaos"
MEMBER_ONLINE_TIMEOUT_S = 90.0
ROUTER_START_TIMEOUT_S = 30.0
REBOOT_TIMEOUT_S = 150.0  # `grproxy reboot --timeout`: until every member is ONLINE
REBOOT_PROCESS_TIMEOUT_S = REBOOT_TIMEOUT_S + 30.0
ADMIN_TIMEOUT_S = 10.0  # one admin statement on a member port


def _die_with_parent() -> None:  # in the child between fork and exec (Linux)
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _server_options(binary: ServerBinary) -> dict[str, str | None]:
    """Snapshot isolation for REPEATABLE READ where the server has it (MariaDB 10.6.18+,
    10.11.8+, 11.x): see checkers/list_append.py for what it changes in what we may check."""
    has = binary.is_mariadb and (binary.version >= (10, 11, 8) or (10, 6, 18) <= binary.version < (10, 7, 0))
    return {"innodb_snapshot_isolation": "ON"} if has else {}


def connect(port: int, *, user: str = "root", password: str = "", database: str | None = None,
            timeout_s: float = 5, autocommit: bool = True) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, database=database,
                           connect_timeout=timeout_s, read_timeout=timeout_s, write_timeout=timeout_s,
                           autocommit=autocommit)


@dataclass
class MemberNode:
    index: int
    backend: ServerHandle
    workdir: Path
    member_port: int  # where the process binds its member port
    group_port: int  # where it binds its group port
    member_relay: Relay | None = None
    group_relay: Relay | None = None
    process: subprocess.Popen[bytes] | None = None
    stopped: bool = False  # SIGSTOPped

    @property
    def name(self) -> str:
        return f"m{self.index}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "grproxy.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def config_text(self, seeds: list[str], bootstrap: bool, single_primary: bool = True) -> str:
        assert self.member_relay is not None and self.group_relay is not None
        b = self.backend
        lines = [
            "[frontend]", "enabled = false",
            "", "[[users]]", 'name = "root"', 'password = ""', "admin = true",
            "", "[[backends]]", f'name = "{self.name}"', f'host = "{b.host}"', f"port = {b.port}",
            f'user = "{b.user}"', f'password = "{b.password}"',
            "", "[member]", f'backend = "{self.name}"', 'host = "127.0.0.1"', f"port = {self.member_relay.port}",
            f'group_name = "{GROUP_NAME}"', f'group_address = "{self.group_relay.address}"',
            f"group_seeds = [{', '.join(json.dumps(s) for s in seeds)}]",
            f"bootstrap_group = {'true' if bootstrap else 'false'}",
            f"single_primary_mode = {'true' if single_primary else 'false'}",
            "", "[log]", 'format = "json"',
        ]
        return "\n".join(lines) + "\n"


class Cluster:
    """A chaos group. Use as a context manager; ``start()`` returns once every member is ONLINE
    and the router serves a login."""

    def __init__(self, base_dir: Path, members: int = 3, *, binary: ServerBinary | None = None,
                 single_primary: bool = True) -> None:
        self.base = Path(base_dir)
        self.count = members
        self.single_primary = single_primary
        self.snapshot_isolation = True  # decided in start() from the server's version
        self.binary = binary
        self.net = Network([f"m{i}" for i in range(1, members + 1)] + ["router"])
        self.members: list[MemberNode] = []
        self.router_process: subprocess.Popen[bytes] | None = None
        self.router_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.events: list[tuple[float, str]] = []  # (monotonic time, what happened)

    # ----------------------------------------------------------------- relay loop

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="chaos-relays", daemon=True)
        self._thread.start()

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the relays' loop (rules are changed there) and return its result."""
        assert self._loop is not None

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(30)

    def _await(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    # ----------------------------------------------------------------- start / stop

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        binary = self.binary = self.binary or find_server_binary()
        self.snapshot_isolation = bool(_server_options(binary))
        self._start_loop()
        for i in range(1, self.count + 1):
            handle = start_server(self.base / f"m{i}" / "data", server_id=i, durable=True, die_with_parent=True,
                                  binary=binary, extra_options=_server_options(binary))
            self.members.append(MemberNode(i, handle, self.base / f"m{i}", free_port(), free_port()))
        addresses: dict[str, str] = {}
        for m in self.members:
            m.group_relay = Relay(self.net, m.name, ("127.0.0.1", m.group_port), identify=group_hello_identifier(addresses))
            m.member_relay = Relay(self.net, m.name, ("127.0.0.1", m.member_port), source="router")
            self._await(m.group_relay.start())
            self._await(m.member_relay.start())
            addresses[m.group_relay.address] = m.name
        for m in self.members:
            self._spawn(m, bootstrap=m.index == 1)
            self.wait_online({x.name for x in self.members[: m.index]}, MEMBER_ONLINE_TIMEOUT_S)
        self._start_router()
        self.note("started")

    def _listen_map(self, m: MemberNode) -> str:
        assert m.member_relay is not None and m.group_relay is not None
        return json.dumps({m.group_relay.address: f"127.0.0.1:{m.group_port}",
                           m.member_relay.address: f"127.0.0.1:{m.member_port}"})

    def _spawn(self, m: MemberNode, *, bootstrap: bool, all_seeds: bool = False) -> None:
        """Start ``m``'s process. Seeds: the first member's group address for the initial join
        (the others are not up yet); every other member's for the bootstrapping member (as
        `grproxy sandbox` writes it: once expelled, it rejoins through them), for the first member
        and when ``all_seeds`` (a restart: whoever is in the group now must be reachable)."""
        m.workdir.mkdir(parents=True, exist_ok=True)
        first = self.members[0]
        assert first.group_relay is not None
        seeds = [first.group_relay.address]
        if bootstrap or m is first or all_seeds:
            seeds = [x.group_relay.address for x in self.members if x is not m and x.group_relay is not None]
        config = self.member_config(m.name)
        config.write_text(m.config_text(seeds, bootstrap, self.single_primary))
        env = dict(os.environ, PYTHONUNBUFFERED="1", GRPROXY_CHAOS_LISTEN=self._listen_map(m))
        with open(m.log_path, "ab") as out:
            m.process = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.member_main", "serve", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                preexec_fn=_die_with_parent,
            )
        m.stopped = False

    def member_config(self, name: str) -> Path:
        return self.member(name).workdir / "grproxy.toml"

    def _start_router(self, port: int = 0, *, until_login: bool = True) -> None:
        """Start the router process; wait until it serves a login (``until_login``) or only
        until its client port accepts connections (a restart while the group is down: no
        login can succeed before the group is back)."""
        self.router_port = port or free_port()
        workdir = self.base / "router"
        workdir.mkdir(parents=True, exist_ok=True)
        members = ", ".join(json.dumps(m.member_relay.address) for m in self.members if m.member_relay)
        config = workdir / "grproxy.toml"
        config.write_text("\n".join([
            "[frontend]", 'host = "127.0.0.1"', f"port = {self.router_port}",
            "", "[[users]]", 'name = "root"', 'password = ""', "admin = true",
            "", "[router]", f"members = [{members}]", 'user = "root"', 'password = ""',
            "", "[log]", 'format = "json"',
        ]) + "\n")
        with open(workdir / "grproxy.log", "ab") as out:
            # Through member_main (no listen mapping: plain `grproxy serve`), so every process of
            # the run is started the same way.
            self.router_process = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.member_main", "serve", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + ROUTER_START_TIMEOUT_S
        last: object = None
        while time.monotonic() < deadline:
            if self.router_process.poll() is not None:
                raise RuntimeError(f"router exited: {self.tail(workdir / 'grproxy.log')}")
            try:
                if not until_login:
                    socket.create_connection(("127.0.0.1", self.router_port), timeout=2).close()
                    return
                conn = connect(self.router_port, timeout_s=2)
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.close()
                return
            except (pymysql.MySQLError, OSError) as exc:
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"router did not serve a login in {ROUTER_START_TIMEOUT_S}s: {last!r}")

    def stop(self) -> None:
        procs = [self.router_process] + [m.process for m in self.members]
        for m in self.members:
            if m.stopped and m.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    m.process.send_signal(signal.SIGCONT)
            if not m.backend.alive():
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(m.backend.pid, signal.SIGCONT)
        for p in procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in procs:
            if p is not None:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        for m in self.members:
            m.backend.stop(timeout_s=30)
        if self._loop is not None:
            for m in self.members:
                for r in (m.group_relay, m.member_relay):
                    if r is not None:
                        with contextlib.suppress(Exception):
                            self._await(r.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(10)

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- observation

    @staticmethod
    def tail(path: Path, lines: int = 30) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(cannot read {path}: {exc})"

    def member_states(self, m: MemberNode, timeout_s: float = 3) -> dict[str, str]:
        """MEMBER_HOST:PORT → state, as member ``m`` sees the group (asked on its real port)."""
        conn = connect(m.member_port, timeout_s=timeout_s)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT MEMBER_HOST, MEMBER_PORT, MEMBER_STATE FROM performance_schema.replication_group_members")
                return {f"{h}:{p}": s for h, p, s in cur.fetchall()}
        finally:
            conn.close()

    def name_of_member_address(self, address: str) -> str:
        for m in self.members:
            if m.member_relay is not None and m.member_relay.address == address:
                return m.name
        return address

    def online_view(self, m: MemberNode) -> set[str]:
        return {self.name_of_member_address(a) for a, s in self.member_states(m).items() if s == "ONLINE"}

    def wait_online(self, names: set[str], timeout_s: float) -> None:
        """Until every member in ``names`` sees exactly ``names`` ONLINE (a liveness bound)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            views = {}
            for m in self.members:
                if m.name not in names:
                    continue
                if m.process is not None and m.process.poll() is not None:
                    last = f"{m.name} exited with {m.process.returncode}: {self.tail(m.log_path, 15)}"
                    continue
                try:
                    views[m.name] = self.online_view(m)
                except pymysql.MySQLError as exc:
                    views[m.name] = {f"error {exc}"}
            if views and all(v >= names and not any(x.startswith("error") for x in v) for v in views.values()) \
                    and set(views) == names:
                return
            last = f"views {views}" if views else last
            time.sleep(0.5)
        raise TimeoutError(f"members {sorted(names)} not all ONLINE within {timeout_s:.0f}s ({last})")

    def unexpected_exits(self) -> list[str]:
        """Processes not running once every fault was healed (healing restarts what a fault
        killed): a crash, an exit the member chose, or a signal from outside the run."""
        out = []
        if self.router_process is not None and self.router_process.poll() is not None:
            out.append(f"router exited with code {self.router_process.returncode}")
        for m in self.members:
            if m.process is not None and m.process.poll() is not None:
                out.append(f"{m.name} exited with code {m.process.returncode}")
        return out

    # ----------------------------------------------------------------- faults

    def member(self, name: str) -> MemberNode:
        return next(m for m in self.members if m.name == name)

    def signal_member(self, name: str, sig: signal.Signals) -> None:
        m = self.member(name)
        if m.process is not None and m.process.poll() is None:
            m.process.send_signal(sig)
            if sig == signal.SIGKILL:
                m.process.wait(10)
            m.stopped = sig == signal.SIGSTOP
        self.note(f"{sig.name} member {name}")

    def signal_backend(self, name: str, sig: signal.Signals) -> None:
        m = self.member(name)
        if m.backend.alive():
            os.kill(m.backend.pid, sig)
        self.note(f"{sig.name} backend {name}")

    def restart_member(self, name: str) -> None:
        """Start the member process again with its config (after SIGKILL), every other member
        as a seed: it must rejoin (or wait, in ERROR, for a reboot when there is no group)."""
        m = self.member(name)
        if m.alive():
            return
        self._spawn(m, bootstrap=False, all_seeds=True)
        self.note(f"restart member {name}")

    def signal_router(self, sig: signal.Signals) -> None:
        p = self.router_process
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            if sig == signal.SIGKILL:
                p.wait(10)
        self.note(f"{sig.name} router")

    def router_alive(self) -> bool:
        return self.router_process is not None and self.router_process.poll() is None

    def restart_router(self) -> None:
        """The router again, on the same client port (clients reconnect to where it was)."""
        if self.router_alive():
            return
        self._start_router(self.router_port, until_login=False)
        self.note("restart router")

    def admin(self, name: str, sql: str, timeout_s: float = ADMIN_TIMEOUT_S) -> list[tuple[Any, ...]]:
        """One statement on member ``name``'s real member port as the admin user."""
        conn = connect(self.member(name).member_port, timeout_s=timeout_s)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def group_status(self, name: str) -> dict[str, Any]:
        """``/* grproxy */ GROUP STATUS`` of member ``name``: MEMBER_STATE, GROUP_UUID, IN_GROUP …"""
        conn = connect(self.member(name).member_port, timeout_s=ADMIN_TIMEOUT_S)
        try:
            with conn.cursor() as cur:
                cur.execute("/* grproxy */ GROUP STATUS")
                names = [d[0] for d in cur.description]
                row = cur.fetchone()
                return dict(zip(names, row, strict=True)) if row else {}
        finally:
            conn.close()

    def group_address(self, name: str) -> str:
        """The group address member ``name`` advertises (its relay): its local_address."""
        relay = self.member(name).group_relay
        assert relay is not None
        return relay.address

    def force_members(self, survivors: list[str]) -> None:
        """``SET GLOBAL group_replication_force_members`` with the survivors' local_address
        values, on the first of them. Raises pymysql.MySQLError when the member refuses (a
        majority is still reachable, or it is not ONLINE)."""
        value = ",".join(self.group_address(n) for n in survivors)
        self.admin(survivors[0], f"SET GLOBAL group_replication_force_members = '{value}'")
        self.note(f"force_members {','.join(survivors)} on {survivors[0]}")

    def reboot(self, timeout_s: float = REBOOT_TIMEOUT_S) -> tuple[int, str]:
        """``grproxy reboot --config <each member's config>``, as the README documents it after a
        complete outage (every member restarted first). Returns (exit code, its output)."""
        args = [sys.executable, "-m", "grproxy", "reboot", "--timeout", str(timeout_s)]
        for m in self.members:
            args += ["--config", str(self.member_config(m.name))]
        try:
            done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT,
                                  timeout=REBOOT_PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            self.note("reboot timed out")
            return -1, f"grproxy reboot did not end in {REBOOT_PROCESS_TIMEOUT_S:.0f}s: {exc.stdout!r} {exc.stderr!r}"
        output = (done.stdout + done.stderr).strip()
        self.note(f"reboot exit {done.returncode}: {output.splitlines()[0] if output else ''}")
        return done.returncode, output

    def restart_backend(self, name: str) -> None:
        m = self.member(name)
        if m.backend.alive():
            return
        b = m.backend
        binary = self.binary or find_server_binary()
        m.backend = start_server(b.datadir, port=b.port, server_id=m.index, durable=True, die_with_parent=True,
                                 binary=binary, extra_options=_server_options(binary))
        self.note(f"restart backend {name}")
