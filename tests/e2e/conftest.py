"""Sandboxes for end-to-end tests: `python -m grproxy sandbox` started as a user starts it.

- `sandbox`: one sandbox per test module (3 members, single-primary unless the module
  parametrizes it indirectly: `@pytest.mark.parametrize("sandbox", [{"members": 2, "mode":
  "multi-primary"}], indirect=True)`). Starting 3 members takes several seconds, so tests of a
  module share it and must leave it as they found it (locks released, members alive).
- `sandbox_factory`: `sandbox_factory(members=3, mode="single-primary")` for a test of its own,
  e.g. one that kills members; everything it started is stopped when the test ends.
  `module_sandbox_factory` is the same for module-scoped fixtures (stopped with the module).
- `running_sandbox(base_dir, ...)`: the context manager both use.

A `Sandbox` reads the status file once the sandbox prints its ready line and exposes the router
port, every member's member port, process id and backend (port and credentials), and helpers to
connect to each of them. Which member served a statement: `SELECT @@port` returns the backend's
port; `Sandbox.member_of_port` maps it back to the member.

Stopping: SIGTERM to the sandbox's process group (it runs in its own session, with its member
processes), then SIGKILL to that group after a grace period. The group is only signalled while
its leader, our child, is unreaped (a zombie still holds the id), so a recycled process id
(pid_max is small on some machines) is never hit. Members are only killed by `kill_member`
after checking that the process is the sandbox's child running from this sandbox's directory.
A failing test gets the tail of the logs of the sandboxes it used in its report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from grproxy.mysqld import free_port

READY_TIMEOUT_S = 180  # the whole start-up: backends, members joining one by one, the router
STOP_GRACE_S = 30  # SIGTERM → SIGKILL
MEMBER_EXIT_TIMEOUT_S = 10
LOG_TAIL_LINES = 15
USER = "root"
PASSWORD = ""


@dataclasses.dataclass(frozen=True, slots=True)
class BackendInfo:
    """A member's own MariaDB server, as the status file describes it."""

    host: str
    port: int
    user: str
    password: str
    pid: int
    datadir: str


@dataclasses.dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member: the `grproxy serve` process (`pid`) beside its backend."""

    id: str
    member_port: int
    group_port: int
    pid: int
    backend: BackendInfo


@dataclasses.dataclass(frozen=True, slots=True)
class GroupMember:
    """A row of performance_schema.replication_group_members as a member port answers it."""

    member: MemberInfo
    state: str
    role: str


class Sandbox:
    """A running `grproxy sandbox`. Create it with `running_sandbox`."""

    def __init__(self, base_dir: Path, members: int, mode: str, settings: dict[str, object] | None = None) -> None:
        self.base_dir = base_dir
        self.members_count = members
        self.mode = mode
        self.settings = dict(settings or {})  # --member-setting KEY=VALUE for every member
        self.status_file = base_dir / "status.json"
        self.log = base_dir / "sandbox.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.router_host = "127.0.0.1"
        self.router_port = 0
        self.members: tuple[MemberInfo, ...] = ()
        self._killed: set[str] = set()
        self._restarted: dict[str, subprocess.Popen[bytes]] = {}  # member id → its restarted process

    # --- life cycle ------------------------------------------------------------------------------

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the sandbox and return once it printed its ready line and wrote its status file.

        Raises AssertionError with the sandbox's output if it exits or is not ready in time (it
        is stopped first).
        """
        self.base_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own arguments
                [sys.executable, "-m", "grproxy", "sandbox", "--members", str(self.members_count),
                 "--mode", self.mode, "--port", str(port), "--base-dir", str(self.base_dir / "sb"),
                 "--status-file", str(self.status_file),
                 *(a for k, v in self.settings.items() for a in ("--member-setting", f"{k}={v}"))],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                # Its own process group, so stop() can signal it and its member processes; a
                # pytest killed outright takes the sandbox with it.
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready(timeout_s)
            doc = json.loads(self.status_file.read_text())
        except BaseException:
            self.stop()
            raise
        self.router_host = doc["router"]["host"]
        self.router_port = int(doc["router"]["port"])
        assert self.router_port == port, doc
        self.members = tuple(
            MemberInfo(
                id=m["id"], member_port=int(m["member_port"]), group_port=int(m["group_port"]), pid=int(m["pid"]),
                backend=BackendInfo(host=m["backend"]["host"], port=int(m["backend"]["port"]),
                                    user=m["backend"]["user"], password=m["backend"]["password"],
                                    pid=int(m["backend"]["pid"]), datadir=m["backend"]["datadir"]),
            )
            for m in doc["members"]
        )
        assert len(self.members) == self.members_count, doc

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if any(line.startswith("grproxy sandbox ready") for line in text.splitlines()) and self.status_file.exists():
                doc = json.loads(self.status_file.read_text())
                if doc.get("router"):
                    return
            if self.process.poll() is not None:
                raise AssertionError(f"the sandbox exited with code {self.process.returncode} before it was ready:\n"
                                     + self.log_tail())
            time.sleep(0.1)
        raise AssertionError(f"the sandbox was not ready within {timeout_s:.0f}s:\n" + self.log_tail())

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None and not _exited(self.process.pid)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM to the sandbox's group, SIGKILL to it after `grace_s`; returns the exit code.

        Idempotent. The group is signalled only while its leader is not reaped (its id is ours
        until then), and the leader is reaped last.
        """
        for restarted in self._restarted.values():  # our own children, outside the sandbox's group
            if restarted.poll() is None:
                restarted.terminate()
        for restarted in self._restarted.values():
            try:
                restarted.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                restarted.kill()
                restarted.wait(timeout=60)
        proc = self.process
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        pgid = proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while not _exited(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The leader is a zombie (or still running): the id is still ours. Members that did not
        # stop with it, or a leader that hangs, get SIGKILL.
        while _group_has_live_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _exited(pgid) or _group_has_live_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        return proc.wait(timeout=60)

    # --- who is who ------------------------------------------------------------------------------

    def member(self, member_id: str) -> MemberInfo:
        return next(m for m in self.members if m.id == member_id)

    def member_of_port(self, backend_port: int) -> MemberInfo:
        """The member whose backend listens on `backend_port` (what `SELECT @@port` returns)."""
        for m in self.members:
            if m.backend.port == int(backend_port):
                return m
        raise AssertionError(f"port {backend_port} is no backend of this sandbox "
                             f"({[m.backend.port for m in self.members]})")

    def live_members(self) -> list[MemberInfo]:
        return [m for m in self.members if m.id not in self._killed]

    def group_members(self, via: MemberInfo | None = None) -> list[GroupMember]:
        """replication_group_members as `via` (default: the first live member that answers) sees it."""
        candidates = [via] if via is not None else self.live_members()
        last: object = None
        for m in candidates:
            try:
                conn = self.connect_member(m, connect_timeout=3, read_timeout=10)
            except pymysql.err.MySQLError as exc:
                last = exc
                continue
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT MEMBER_PORT, MEMBER_STATE, MEMBER_ROLE "
                                "FROM performance_schema.replication_group_members")
                    rows = cur.fetchall()
            except pymysql.err.MySQLError as exc:
                last = exc
                continue
            finally:
                conn.close()
            if any(p is None for p, _, _ in rows):
                # A member that joined a moment ago has not announced its address yet.
                last = f"a member without its address yet: {rows}"
                continue
            by_port = {m.member_port: m for m in self.members}
            return [GroupMember(by_port[int(p)], str(s), str(r)) for p, s, r in rows]
        raise AssertionError(f"no member answered replication_group_members: {last!r}")

    def primary(self) -> MemberInfo:
        """The ONLINE PRIMARY (single-primary mode)."""
        rows = [g for g in self.group_members() if g.role == "PRIMARY" and g.state == "ONLINE"]
        assert len(rows) == 1, f"expected one ONLINE primary: {self.group_members()}"
        return rows[0].member

    def secondaries(self) -> list[MemberInfo]:
        """The ONLINE SECONDARY members."""
        return [g.member for g in self.group_members() if g.role == "SECONDARY" and g.state == "ONLINE"]

    def wait_group(self, predicate: Callable[[list[GroupMember]], bool], timeout_s: float, what: str) -> list[GroupMember]:
        """Poll replication_group_members until `predicate` holds; AssertionError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        seen: object = None
        while True:
            try:
                seen = rows = self.group_members()
                if predicate(rows):
                    return rows
            except AssertionError as exc:
                seen = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout_s:.0f}s (last: {seen})")
            time.sleep(0.2)

    # --- connections ------------------------------------------------------------------------------

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection:
        """A PyMySQL connection to the router (autocommit on unless told otherwise)."""
        return _pymysql(self.router_host, self.router_port, USER, PASSWORD, **kwargs)

    def connect_connector(self, **kwargs: Any) -> Any:
        """A mysql-connector-python connection to the router."""
        import mysql.connector

        options: dict[str, Any] = dict(host=self.router_host, port=self.router_port, user=USER, password=PASSWORD,
                                       collation="utf8mb4_general_ci", autocommit=True, connection_timeout=10)
        options.update(kwargs)
        return mysql.connector.connect(**options)

    def connect_member(self, member: MemberInfo, **kwargs: Any) -> pymysql.connections.Connection:
        """A PyMySQL connection to a member's member port (a GR member, as a client sees it)."""
        return _pymysql("127.0.0.1", member.member_port, USER, PASSWORD, **kwargs)

    def connect_backend(self, member: MemberInfo, **kwargs: Any) -> pymysql.connections.Connection:
        """A PyMySQL connection straight to a member's backend server (bypasses grproxy)."""
        b = member.backend
        return _pymysql(b.host, b.port, b.user, b.password, **kwargs)

    # --- faults ----------------------------------------------------------------------------------

    def kill_member(self, member: MemberInfo, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to a member's grproxy process (not its backend) and wait until it is gone.

        Refuses (AssertionError) unless the process is this sandbox's child running from this
        sandbox's directory: a recycled process id is never signalled.
        """
        pid = self.signal_member(member, sig)
        self._killed.add(member.id)
        deadline = time.monotonic() + MEMBER_EXIT_TIMEOUT_S
        while not _exited(pid):  # a zombie until the sandbox reaps it: the id stays its own
            assert time.monotonic() < deadline, f"{member.id} (pid {pid}) survived signal {sig}"
            time.sleep(0.02)

    def signal_member(self, member: MemberInfo, sig: int) -> int:
        """Send `sig` (e.g. SIGSTOP / SIGCONT) to a member's grproxy process; returns its pid.

        Refuses (AssertionError) unless the process is this sandbox's child running from this
        sandbox's directory: a recycled process id is never signalled.
        """
        assert self.alive(), "the sandbox is not running"
        assert self.process is not None
        pid = member.pid
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except FileNotFoundError:
            raise AssertionError(f"{member.id} (pid {pid}) is not running") from None
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        restarted = self._restarted.get(member.id)
        parent = os.getpid() if restarted is not None and restarted.pid == pid else self.process.pid
        assert ppid == parent and str(self.base_dir) in cmdline and "grproxy" in cmdline, (
            f"pid {pid} is not {member.id} of this sandbox (ppid {ppid}, cmdline {cmdline!r})")
        os.kill(pid, sig)
        return pid

    def checksums(self, member: MemberInfo, tables: list[str]) -> tuple[object, ...]:
        """CHECKSUM TABLE of `tables` on the member's backend, in order."""
        c = self.connect_backend(member)
        try:
            with c.cursor() as cur:
                cur.execute(f"CHECKSUM TABLE {', '.join(tables)}")
                return tuple(r[1] for r in cur.fetchall())
        finally:
            c.close()

    def member_config(self, member: MemberInfo) -> Path:
        """The member's config file, as the sandbox wrote it (what the README restarts it with)."""
        return self.base_dir / "sb" / member.id / "grproxy.toml"

    def restart_member(self, member: MemberInfo, *extra: str) -> MemberInfo:
        """Start a killed member again exactly as the README says: `grproxy serve --config
        <base-dir>/memberN/grproxy.toml` (plus `extra` arguments). Stopping the sandbox stops
        it too (and it dies with the test process). Returns the member with its new pid."""
        assert self.process is not None and self.alive(), "the sandbox is not running"
        log = self.base_dir / "sb" / member.id / "grproxy.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own arguments
                [sys.executable, "-m", "grproxy", "serve", "--config", str(self.member_config(member)), *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True, preexec_fn=_die_with_parent,
            )
        self._restarted[member.id] = proc
        self._killed.discard(member.id)
        updated = dataclasses.replace(member, pid=proc.pid)
        self.members = tuple(updated if m.id == member.id else m for m in self.members)
        return updated

    def restarted_process(self, member: MemberInfo) -> subprocess.Popen[bytes] | None:
        return self._restarted.get(member.id)

    # --- diagnostics -----------------------------------------------------------------------------

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the sandbox's output and of every member's log."""
        parts = [f"--- sandbox ({self.log})\n" + _tail(self.log, lines)]
        for d in sorted((self.base_dir / "sb").glob("member*")):
            log = d / "grproxy.log"
            if log.exists():
                parts.append(f"--- {d.name} ({log})\n" + _tail(log, lines))
        return "\n".join(parts)


def _pymysql(host: str, port: int, user: str, password: str, **kwargs: Any) -> pymysql.connections.Connection:
    options: dict[str, Any] = dict(autocommit=True, connect_timeout=10, read_timeout=60, write_timeout=60)
    options.update(kwargs)
    return pymysql.connect(host=host, port=port, user=user, password=password, **options)


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200 * lines))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read: {exc})"


def _exited(pid: int) -> bool:
    """Whether our child `pid` has exited (zombie or gone), without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _group_has_live_members(pgid: int) -> bool:
    """Whether a running (not zombie) process other than the leader is in process group `pgid`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pgid:
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _die_with_parent() -> None:  # in the child between fork and exec (Linux)
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# Sandboxes running now, so a failing test's report can show what they logged.
_RUNNING: list[Sandbox] = []


@contextlib.contextmanager
def running_sandbox(base_dir: Path, *, members: int = 3, mode: str = "single-primary",
                    settings: dict[str, object] | None = None) -> Iterator[Sandbox]:
    """A started sandbox, stopped on exit (see Sandbox.stop); `settings` go into every
    member's config ([member] keys, `grproxy sandbox --member-setting`)."""
    sb = Sandbox(base_dir, members, mode, settings)
    sb.start()
    _RUNNING.append(sb)
    try:
        yield sb
    finally:
        _RUNNING.remove(sb)
        sb.stop()


@pytest.fixture(scope="module")
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox for the module; `request.param` (indirect parametrization) may set
    `members` and `mode`."""
    params = dict(getattr(request, "param", None) or {})
    with running_sandbox(tmp_path_factory.mktemp("sandbox"), **params) as sb:
        yield sb


def _factory(stack: contextlib.ExitStack, base: Callable[[], Path]) -> Callable[..., Sandbox]:
    def start(members: int = 3, mode: str = "single-primary", settings: dict[str, object] | None = None) -> Sandbox:
        return stack.enter_context(running_sandbox(base(), members=members, mode=mode, settings=settings))

    return start


@pytest.fixture
def sandbox_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Sandbox]]:
    """start(members=3, mode="single-primary") -> Sandbox, stopped when the test ends."""
    with contextlib.ExitStack() as stack:
        yield _factory(stack, lambda: tmp_path_factory.mktemp("sandbox"))


@pytest.fixture(scope="module")
def module_sandbox_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Sandbox]]:
    """Like sandbox_factory, for module-scoped fixtures: stopped when the module's tests end."""
    with contextlib.ExitStack() as stack:
        yield _factory(stack, lambda: tmp_path_factory.mktemp("sandbox"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for sb in _RUNNING:
            report.sections.append((f"sandbox {sb.base_dir} logs ({call.when})", sb.log_tail()))
