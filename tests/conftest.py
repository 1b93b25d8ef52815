"""Session fixtures that start real servers: MariaDB/MySQL backends and grproxy processes.

- `backend`: one real server on a temporary datadir and a free port, for the whole session.
  Accounts: root@127.0.0.1 without password, `grproxy`/`grproxy` (what grproxy connects with)
  and `app`/`apppw` (a second login, also configured as a grproxy frontend user).
- `proxy`: `grproxy serve --config FILE` in front of `backend`, ready once its port accepts
  connections and root can log in through it. Frontend users: root/"" and app/apppw.
- `backend_factory` / `proxy_factory`: start more of either (throwaway backends for crash tests,
  proxies with other settings); everything started is stopped at the end of the session.

Servers are started once per session so the suite stays fast (a start is about a second).
A failing test that used a proxy gets that proxy's log lines from its run in the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pymysql
import pytest

from grproxy.mysqld import ServerBinary, ServerHandle, find_server_binary, free_port, start_server

PROXY_START_TIMEOUT_S = 30
PROXY_STOP_TIMEOUT_S = 5
APP_USER = "app"
APP_PASSWORD = "apppw"
FRONTEND_USERS: tuple[tuple[str, str], ...] = (("root", ""), (APP_USER, APP_PASSWORD))


# ---------------------------------------------------------------------------------------------
# Simulator seeds chosen fresh for each run (tests/sim/test_sim.py): the first seed is random,
# or SIM_START_SEED when set, and is shown in the report header so a failure replays.

SIM_FRESH_SEEDS = 300
_SIM_START_SEED = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    fixed = os.environ.get("SIM_START_SEED")
    config.stash[_SIM_START_SEED] = int(fixed) if fixed else random.SystemRandom().randrange(10**6, 10**9)


def pytest_report_header(config: pytest.Config) -> str:
    start = config.stash[_SIM_START_SEED]
    return (
        f"sim fresh seeds: {SIM_FRESH_SEEDS} from {start} (SIM_START_SEED={start} reruns them; "
        f"python -m replication.gcs.sim --seeds {SIM_FRESH_SEEDS} --start-seed {start})"
    )


@pytest.fixture(scope="session")
def sim_fresh_seeds(pytestconfig: pytest.Config) -> range:
    start = pytestconfig.stash[_SIM_START_SEED]
    return range(start, start + SIM_FRESH_SEEDS)


@pytest.fixture(scope="session")
def server_binary() -> ServerBinary:
    # No skip: DESIGN §12 says the project installs the server (`make test`); a missing one
    # is a broken setup, and find_server_binary() says how to fix it.
    return find_server_binary()


@pytest.fixture(scope="session")
def backend_factory(
    tmp_path_factory: pytest.TempPathFactory, server_binary: ServerBinary
) -> Iterator[Callable[..., ServerHandle]]:
    """start(name="backend", **start_server_kwargs) -> ServerHandle, stopped at session end."""
    handles: list[ServerHandle] = []

    def start(name: str = "backend", **kwargs: Any) -> ServerHandle:
        kwargs.setdefault("die_with_parent", True)
        kwargs.setdefault("binary", server_binary)
        handle = start_server(tmp_path_factory.mktemp(name) / "data", **kwargs)
        handles.append(handle)
        _create_app_user(handle)
        return handle

    yield start
    for handle in reversed(handles):
        handle.stop(timeout_s=30)


def _create_app_user(handle: ServerHandle) -> None:
    """`app`/`apppw`: the second account, so COM_CHANGE_USER can be compared direct vs proxy."""
    conn = pymysql.connect(host=handle.host, port=handle.port, user="root", password="")
    try:
        with conn.cursor() as cur:
            for host in ("127.0.0.1", "localhost", "%"):
                cur.execute(f"CREATE USER IF NOT EXISTS '{APP_USER}'@'{host}' IDENTIFIED BY '{APP_PASSWORD}'")
                cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'{host}'")
    finally:
        conn.close()


@pytest.fixture(scope="session")
def backend(backend_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return backend_factory("backend")


# ---------------------------------------------------------------------------------------------
# grproxy processes


@dataclasses.dataclass
class ProxyHandle:
    """A `grproxy serve` subprocess. `log` holds its stdout and stderr."""

    host: str
    port: int
    config_path: Path
    log: Path
    process: subprocess.Popen[bytes]
    backends: tuple[ServerHandle, ...]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = PROXY_STOP_TIMEOUT_S) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int, lines: int = 80) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError as exc:
            return f"(cannot read {self.log}: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the characters we use
    raise TypeError(f"cannot write {value!r} to TOML")


def render_proxy_config(
    *,
    port: int,
    backends: Sequence[ServerHandle],
    users: Sequence[tuple[str, str]] = FRONTEND_USERS,
    frontend: Mapping[str, object] | None = None,
    extra_sections: Mapping[str, Mapping[str, object]] | None = None,
) -> str:
    lines = ["[frontend]", 'host = "127.0.0.1"', f"port = {port}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (frontend or {}).items()]
    for name, password in users:
        lines += ["", "[[users]]", f"name = {_toml_value(name)}", f"password = {_toml_value(password)}"]
    for index, handle in enumerate(backends, start=1):
        lines += [
            "",
            "[[backends]]",
            f'name = "db{index}"',
            f"host = {_toml_value(handle.host)}",
            f"port = {handle.port}",
            f"user = {_toml_value(handle.user)}",
            f"password = {_toml_value(handle.password)}",
        ]
    lines += ["", "[log]", 'format = "json"', 'level = "info"']
    for section, values in (extra_sections or {}).items():
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _grproxy_command() -> list[str]:
    script = Path(sys.executable).parent / "grproxy"
    if script.exists():
        return [str(script)]
    found = shutil.which("grproxy")
    if found:
        return [found]
    # Not installed as a console script (no `pip install -e .` yet): call the entry point.
    return [sys.executable, "-c", "import sys; from grproxy.cli import main; sys.exit(main())"]


def _set_pdeathsig() -> None:  # in the child between fork and exec
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_proxy(
    workdir: Path,
    backends: Sequence[ServerHandle],
    *,
    users: Sequence[tuple[str, str]] = FRONTEND_USERS,
    frontend: Mapping[str, object] | None = None,
    extra_sections: Mapping[str, Mapping[str, object]] | None = None,
    timeout_s: float = PROXY_START_TIMEOUT_S,
) -> ProxyHandle:
    """Start `grproxy serve` and wait until a login through it succeeds.

    Raises pytest.fail-style AssertionError with the proxy's output if it exits or does not
    serve a login within timeout_s; the process is killed first.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = workdir / "grproxy.toml"
    config_path.write_text(
        render_proxy_config(port=port, backends=backends, users=users, frontend=frontend, extra_sections=extra_sections)
    )
    log = workdir / "grproxy.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        process = subprocess.Popen(  # noqa: S603
            [*_grproxy_command(), "serve", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            start_new_session=True,
            preexec_fn=_set_pdeathsig,
        )
    handle = ProxyHandle("127.0.0.1", port, config_path, log, process, tuple(backends))
    try:
        _wait_proxy_ready(handle, users[0], timeout_s)
    except BaseException:
        handle.kill()
        raise
    return handle


def _wait_proxy_ready(handle: ProxyHandle, login: tuple[str, str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: object = "port never accepted a connection"
    while time.monotonic() < deadline:
        if not handle.alive():
            raise AssertionError(
                f"grproxy exited with code {handle.process.returncode} during start-up "
                f"(config {handle.config_path}):\n{handle.log_since(0)}"
            )
        try:
            conn = pymysql.connect(
                host=handle.host,
                port=handle.port,
                user=login[0],
                password=login[1],
                connect_timeout=2,
                read_timeout=5,
                write_timeout=5,
            )
        except pymysql.err.MySQLError as exc:
            last_error = exc
            time.sleep(0.1)
            continue
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                if cur.fetchall() == ((1,),):
                    return
                last_error = "SELECT 1 returned something else"
        except pymysql.err.MySQLError as exc:
            last_error = exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        time.sleep(0.1)
    raise AssertionError(
        f"grproxy on port {handle.port} did not serve a login within {timeout_s}s "
        f"(last: {last_error!r}; config {handle.config_path}):\n{handle.log_since(0)}"
    )


@pytest.fixture(scope="session")
def proxy_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ProxyHandle]]:
    """start(backends, name="proxy", **start_proxy_kwargs) -> ProxyHandle, stopped at session end."""
    handles: list[ProxyHandle] = []

    def start(backends: Sequence[ServerHandle], name: str = "proxy", **kwargs: Any) -> ProxyHandle:
        handle = start_proxy(tmp_path_factory.mktemp(name), backends, **kwargs)
        handles.append(handle)
        _PROXIES.append(handle)
        return handle

    yield start
    for handle in reversed(handles):
        handle.stop()
        _PROXIES.remove(handle)


@pytest.fixture(scope="session")
def proxy(proxy_factory: Callable[..., ProxyHandle], backend: ServerHandle) -> ProxyHandle:
    return proxy_factory([backend], name="proxy")


# Proxies running now, so a failing test's report can show what they logged meanwhile.
_PROXIES: list[ProxyHandle] = []
_LOG_OFFSETS = pytest.StashKey[dict[int, int]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    # Proxies already stopped (or dead) before this test have nothing to say about it.
    item.stash[_LOG_OFFSETS] = {id(p): p.log_size() if p.alive() else -1 for p in _PROXIES}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    if "proxy" not in item.nodeid and "proxy" not in getattr(item, "fixturenames", ()):
        return
    offsets = item.stash.get(_LOG_OFFSETS, {})
    for handle in _PROXIES:
        offset = offsets.get(id(handle), 0)  # started during this test: its whole log
        if offset < 0:
            continue
        state = "running" if handle.alive() else f"EXITED with code {handle.process.returncode}"
        text = handle.log_since(offset, lines=60)
        report.sections.append((f"grproxy :{handle.port} ({state}) log during {call.when}", text or "(nothing)"))
