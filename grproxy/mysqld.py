"""Start and stop real MariaDB/MySQL servers on temporary datadirs.

Used by the test fixtures (tests/conftest.py) and by `grproxy sandbox`, so both run the
backends the same way.

Theory of operation. `find_server_binary()` locates `mariadbd` or `mysqld` and asks it for its
version, so the rest knows which flavour it drives (the two initialise datadirs and name
authentication plugins differently). `start_server()` initialises the datadir when it holds
no server files, starts the server bound to 127.0.0.1 only with its unix socket inside the
datadir and settings sized for many servers sharing two cores, waits until it accepts a
login, then makes the accounts tests and the sandbox rely on:

- `user`@`127.0.0.1`, `user`@`localhost`, `user`@`%` with `password`, ALL PRIVILEGES WITH GRANT
  OPTION (what grproxy connects with);
- root@localhost and root@127.0.0.1 without a password, with mysql_native_password where the
  server still has it, reachable over TCP (the sandbox's documented login).

Nothing started here outlives a failure: any exception during start kills the server process
before it propagates. A started server is owned by its `ServerHandle`; call `stop()` (or use it
as a context manager).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import pymysql

__all__ = [
    "ServerBinary",
    "ServerHandle",
    "ServerNotFound",
    "ServerStartError",
    "find_client_binary",
    "find_server_binary",
    "free_port",
    "start_server",
]

# Searched after $PATH. /usr/sbin is where Debian/Ubuntu put mariadbd/mysqld, and it is often
# not on a non-root user's PATH.
_EXTRA_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin", "/usr/local/mariadb/bin")

_INSTALL_HINT = (
    "Install a MariaDB or MySQL server: `make run` (or `make test`) installs it for you, "
    "or run `sudo apt-get install mariadb-server`. "
    "Set GRPROXY_MYSQLD=/path/to/mariadbd to use a server outside the usual places."
)

# A unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux, with the NUL).
_SOCKET_PATH_BYTES_MAX = 100

_ERROR_LOG_TAIL_LINES = 40


class ServerNotFound(RuntimeError):
    """No MariaDB/MySQL server binary could be found; the message says how to install one."""


class ServerStartError(RuntimeError):
    """The server could not be initialised or started; the message ends with its log's tail."""


@dataclasses.dataclass(frozen=True, slots=True)
class ServerBinary:
    """A server executable and what it is.

    `flavor` decides how a datadir is initialised and which SQL creates the accounts;
    `version` is the numeric (major, minor, patch) of the server.
    """

    path: Path
    flavor: Literal["mariadb", "mysql"]
    version: tuple[int, int, int]
    version_text: str
    # mariadb-install-db (MariaDB only; MySQL initialises with `mysqld --initialize-insecure`).
    install_db: Path | None

    @property
    def is_mariadb(self) -> bool:
        return self.flavor == "mariadb"


def _which(name: str) -> Path | None:
    found = shutil.which(name)
    if found:
        return Path(found)
    for directory in _EXTRA_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_server_binary() -> ServerBinary:
    """Locate the server to run: $GRPROXY_MYSQLD, else mariadbd, else mysqld.

    Raises ServerNotFound (with install instructions) when there is none or it cannot report
    its version.
    """
    override = os.environ.get("GRPROXY_MYSQLD")
    if override:
        path: Path | None = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ServerNotFound(f"GRPROXY_MYSQLD={override} is not an executable file. {_INSTALL_HINT}")
    else:
        path = _which("mariadbd") or _which("mysqld")
    if path is None:
        raise ServerNotFound(f"No mariadbd or mysqld found on PATH or in {', '.join(_EXTRA_DIRS)}. {_INSTALL_HINT}")
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerNotFound(f"{path} --version failed: {exc}. {_INSTALL_HINT}") from exc
    # "mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)"
    # "mysqld  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)"
    match = re.search(r"Ver\s+(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise ServerNotFound(f"{path} --version printed {out!r}, not a MariaDB/MySQL version. {_INSTALL_HINT}")
    version = (int(match[1]), int(match[2]), int(match[3]))
    flavor: Literal["mariadb", "mysql"] = "mariadb" if "mariadb" in out.lower() else "mysql"
    install_db = None
    if flavor == "mariadb":
        install_db = _which("mariadb-install-db") or _which("mysql_install_db")
        if install_db is None:
            raise ServerNotFound(f"{path} is MariaDB but mariadb-install-db was not found. {_INSTALL_HINT}")
    return ServerBinary(path=path, flavor=flavor, version=version, version_text=out, install_db=install_db)


def find_client_binary() -> Path:
    """The `mariadb` (or `mysql`) command-line client. Raises ServerNotFound if missing."""
    path = _which("mariadb") or _which("mysql")
    if path is None:
        raise ServerNotFound(
            "No mariadb or mysql command-line client found. Install it: `make test` does, "
            "or `sudo apt-get install mariadb-client`."
        )
    return path


#: Where the kernel's ephemeral (outbound) ports are, when /proc does not say.
_EPHEMERAL_DEFAULT = (32768, 60999)
#: Lowest port `free_port` hands out (below it live well-known and registered services).
FREE_PORT_FLOOR = 10000
#: Candidates tried before `free_port` falls back to a kernel-chosen port.
FREE_PORT_ATTEMPTS = 200
#: Ports this process handed out recently and will not hand out again (oldest forgotten first).
FREE_PORT_MEMORY = 4096
_handed_out: dict[int, None] = {}
_port_random = random.Random(os.urandom(16))


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return _EPHEMERAL_DEFAULT


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago, for a listener the caller binds later.

    The port lies outside the kernel's ephemeral range, so the outbound connections made between
    now and the caller's bind (a group's links, client connections) cannot take it: a port the
    kernel chose with bind(0) could. It is never one this process handed out among its last
    FREE_PORT_MEMORY. Another process can still bind it first; the caller must tolerate that.
    If FREE_PORT_ATTEMPTS candidates are all taken, a kernel-chosen port is returned.
    """
    lo, hi = _ephemeral_range()
    spans = [(a, b) for a, b in ((FREE_PORT_FLOOR, lo - 1), (hi + 1, 65535)) if b - a >= 1000]
    for _ in range(FREE_PORT_ATTEMPTS if spans else 0):
        a, b = _port_random.choice(spans)
        port = _port_random.randint(a, b)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return _remember(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return _remember(int(sock.getsockname()[1]))


def _remember(port: int) -> int:
    _handed_out[port] = None
    while len(_handed_out) > FREE_PORT_MEMORY:
        del _handed_out[next(iter(_handed_out))]
    return port


@dataclasses.dataclass(slots=True)
class ServerHandle:
    """A running server started by `start_server`. Owns the process.

    `user`/`password` is the account created with ALL PRIVILEGES; root@127.0.0.1 has no password.
    """

    host: str
    port: int
    pid: int
    datadir: Path
    socket: Path
    user: str
    password: str
    binary: ServerBinary
    server_id: int
    error_log: Path
    _process: subprocess.Popen[bytes] = dataclasses.field(repr=False)
    # A short directory holding the socket when the datadir's path is too long for one.
    _socket_dir: Path | None = dataclasses.field(default=None, repr=False)

    def alive(self) -> bool:
        """True while the server process has not exited."""
        return self._process.poll() is None

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it has not exited after `timeout_s`.

        Idempotent. Returns once the process is reaped.
        """
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL, like a crash; returns once the process is reaped. Idempotent."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        # SIGKILL cannot be ignored; the bound only guards against a D-state process.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=30)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._socket_dir is not None and not self.alive():
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def connect_kwargs(self, *, database: str | None = None) -> dict[str, object]:
        """Keyword arguments for pymysql.connect() as `user` over TCP."""
        kwargs: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        if database is not None:
            kwargs["database"] = database
        return kwargs

    def error_log_tail(self, lines: int = _ERROR_LOG_TAIL_LINES) -> str:
        return _tail(self.error_log, lines)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _default_options(
    binary: ServerBinary, *, server_id: int, durable: bool
) -> dict[str, str | None]:
    """Settings for many small servers sharing two cores. Keys are server option names."""
    options: dict[str, str | None] = {
        "skip-name-resolve": "",
        "innodb_buffer_pool_size": "64M",
        "innodb_log_file_size": "32M",
        "key_buffer_size": "8M",
        "performance_schema": "OFF",
        "max_allowed_packet": "1G",
        "max_connections": "500",
        "table_open_cache": "400",
        "character-set-server": "utf8mb4",
        "log-bin": "binlog",
        "binlog_format": "ROW",
        # What the member's write path reads from the binary log (DESIGN §5): full before/after images, and the
        # table map carrying column names, signedness, charsets and the primary key.
        "binlog_row_image": "FULL",
        "binlog_row_metadata": "FULL",
        "server_id": str(server_id),
        "log_slave_updates": "ON",
        # Tests and the sandbox trade durability for speed; a crash test that needs every
        # acknowledged commit on disk passes durable=True.
        "innodb_flush_log_at_trx_commit": "1" if durable else "2",
        "sync_binlog": "1" if durable else "0",
    }
    if binary.is_mariadb:
        options["collation-server"] = "utf8mb4_general_ci"
    else:
        options["collation-server"] = "utf8mb4_0900_ai_ci"
        # The X plugin listens on 33060 by default: two servers on one host would collide.
        options["mysqlx"] = "OFF"
        # What MySQL Group Replication requires of its members.
        options["gtid_mode"] = "ON"
        options["enforce_gtid_consistency"] = "ON"
        if binary.version >= (8, 4, 0) and binary.version < (9, 0, 0):
            options["mysql_native_password"] = "ON"
    return options


def _render(options: Mapping[str, str | None]) -> list[str]:
    args = []
    for key, value in options.items():
        if value is None:
            continue
        args.append(f"--{key}" if value == "" else f"--{key}={value}")
    return args


def _tmpdir(datadir: Path) -> Path:
    """The server's own temporary directory, beside its datadir (not inside: a directory there
    would show as a database). Servers sharing /tmp have collided on temporary file names while
    mariadb-install-db ran ("Could not remove temporary table '/tmp/#sql-temptable-…'")."""
    path = datadir.parent / f"{datadir.name}.tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_initialised(datadir: Path) -> bool:
    return (datadir / "mysql").is_dir()


def _initialise(binary: ServerBinary, datadir: Path, timeout_s: float) -> None:
    datadir.mkdir(parents=True, exist_ok=True)
    as_root = os.geteuid() == 0
    if binary.is_mariadb:
        assert binary.install_db is not None
        cmd = [
            str(binary.install_db),
            "--no-defaults",
            f"--datadir={datadir}",
            f"--tmpdir={_tmpdir(datadir)}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]
        # mariadb-install-db finds the server next to it; point it at ours when they differ.
        if binary.path.parent != binary.install_db.parent:
            cmd.append(f"--basedir={binary.path.parent.parent}")
    else:
        if any(datadir.iterdir()):
            raise ServerStartError(
                f"{datadir} is neither empty nor a MySQL datadir; MySQL only initialises an empty one."
            )
        cmd = [str(binary.path), "--no-defaults", "--initialize-insecure", f"--datadir={datadir}"]
    if as_root:
        cmd.append("--user=root")
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServerStartError(f"initialising {datadir} took more than {timeout_s:.0f}s: {cmd}") from exc
    if result.returncode != 0 or not _is_initialised(datadir):
        output = "\n".join((result.stdout + result.stderr).splitlines()[-_ERROR_LOG_TAIL_LINES:])
        raise ServerStartError(
            f"initialising {datadir} failed (exit code {result.returncode}): {' '.join(cmd)}\n{output}"
        )


def _account_sql(binary: ServerBinary, user: str, password: str) -> list[str]:
    def quote(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    statements = [
        # Anonymous accounts shadow named ones for some hosts (mysql_secure_installation drops
        # them for the same reason).
        "DELETE FROM mysql.global_priv WHERE User = ''" if binary.is_mariadb else "DROP USER IF EXISTS ''@'localhost'",
    ]
    if binary.is_mariadb:
        root_auth = "IDENTIFIED VIA mysql_native_password USING PASSWORD('')"
    elif binary.version >= (9, 0, 0):
        # MySQL 9 has no mysql_native_password; an empty password needs no RSA exchange.
        root_auth = "IDENTIFIED WITH caching_sha2_password BY ''"
    else:
        root_auth = "IDENTIFIED WITH mysql_native_password BY ''"
    for host in ("localhost", "127.0.0.1"):
        statements += [
            f"CREATE USER IF NOT EXISTS 'root'@'{host}'",
            f"ALTER USER 'root'@'{host}' {root_auth}",
            f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' WITH GRANT OPTION",
        ]
    if user != "root":
        for host in ("127.0.0.1", "localhost", "%"):
            account = f"{quote(user)}@'{host}'"
            statements += [
                f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {quote(password)}",
                f"ALTER USER {account} IDENTIFIED BY {quote(password)}",
                f"GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION",
            ]
    statements.append("FLUSH PRIVILEGES")
    return statements


def start_server(
    datadir: Path,
    *,
    port: int | None = None,
    server_id: int | None = None,
    user: str = "grproxy",
    password: str = "grproxy",
    extra_options: Mapping[str, str | None] | None = None,
    startup_timeout_s: float = 60,
    durable: bool = False,
    die_with_parent: bool = False,
    binary: ServerBinary | None = None,
) -> ServerHandle:
    """Start a server on `datadir` (initialised first if it holds no server files).

    Args:
        datadir: created if missing; holds the socket, the error log and the binlogs too.
        port: TCP port on 127.0.0.1; None picks a free one (retried if another process takes
            it between the pick and the bind).
        server_id: the server's server_id (binlog origin); None takes the port, unique among
            the servers of one host (a binlog reader tells servers apart by it).
        user, password: the account created with ALL PRIVILEGES WITH GRANT OPTION.
        extra_options: server options that override the defaults, e.g.
            {"innodb_buffer_pool_size": "128M"}; a value of "" passes `--key` alone, None removes
            a default option.
        startup_timeout_s: bound on start-up up to the first successful login (initialising a
            datadir has its own bound of the same length).
        durable: flush InnoDB's log and the binlog at each commit (default: not, for speed).
        die_with_parent: the kernel kills the server when the thread that started it exits
            (Linux PR_SET_PDEATHSIG), so a killed test run leaves no server behind. Only for
            callers that start servers from a long-lived thread (the main thread).
        binary: the server to run; default find_server_binary().

    Returns a ServerHandle once the server accepts logins and the accounts exist.
    Raises ServerNotFound, or ServerStartError with the tail of the server's error log; on any
    failure no server process is left running.
    """
    binary = binary or find_server_binary()
    datadir = Path(datadir).resolve()
    if not _is_initialised(datadir):
        _initialise(binary, datadir, startup_timeout_s)
    attempts = 3 if port is None else 1
    last_error: ServerStartError | None = None
    for _ in range(attempts):
        chosen_port = port if port is not None else free_port()
        try:
            return _start_once(
                binary,
                datadir,
                port=chosen_port,
                server_id=server_id if server_id is not None else chosen_port,
                user=user,
                password=password,
                extra_options=extra_options or {},
                startup_timeout_s=startup_timeout_s,
                durable=durable,
                die_with_parent=die_with_parent,
            )
        except _PortTaken as exc:
            last_error = ServerStartError(str(exc))
    assert last_error is not None
    raise last_error


class _PortTaken(ServerStartError):
    pass


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _start_once(
    binary: ServerBinary,
    datadir: Path,
    *,
    port: int,
    server_id: int,
    user: str,
    password: str,
    extra_options: Mapping[str, str | None],
    startup_timeout_s: float,
    durable: bool,
    die_with_parent: bool,
) -> ServerHandle:
    socket_dir: Path | None = None
    sock = datadir / "mysqld.sock"
    if len(os.fsencode(sock)) > _SOCKET_PATH_BYTES_MAX:
        socket_dir = Path(tempfile.mkdtemp(prefix="grproxy-sock-"))
        sock = socket_dir / "mysqld.sock"
    error_log = datadir / "mysqld.err"
    # The error log is appended to across restarts; remember where this start begins.
    log_offset = error_log.stat().st_size if error_log.exists() else 0

    options = _default_options(binary, server_id=server_id, durable=durable)
    options.update(
        {
            "datadir": str(datadir),
            "tmpdir": str(_tmpdir(datadir)),
            "port": str(port),
            "bind-address": "127.0.0.1",
            "socket": str(sock),
            "pid-file": str(datadir / "mysqld.pid"),
            "log-error": str(error_log),
        }
    )
    options.update(extra_options)
    cmd = [str(binary.path), "--no-defaults", *_render(options)]
    if os.geteuid() == 0:
        cmd.append("--user=root")

    stdio_path = datadir / "mysqld.stdout"
    deadline = time.monotonic() + startup_timeout_s
    with open(stdio_path, "ab") as stdio:
        process = subprocess.Popen(  # noqa: S603 - our own arguments
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=stdio,
            stderr=subprocess.STDOUT,
            # Own process group: a Ctrl-C aimed at the caller's terminal does not stop the
            # servers behind its back; the caller's cleanup does.
            start_new_session=True,
            preexec_fn=_set_pdeathsig if die_with_parent else None,
        )
    handle = ServerHandle(
        host="127.0.0.1",
        port=port,
        pid=process.pid,
        datadir=datadir,
        socket=sock,
        user=user,
        password=password,
        binary=binary,
        server_id=server_id,
        error_log=error_log,
        _process=process,
        _socket_dir=socket_dir,
    )
    try:
        _wait_ready(handle, deadline, log_offset, stdio_path)
        _create_accounts(handle, deadline)
    except BaseException:
        handle.kill()
        raise
    return handle


def _startup_failure(handle: ServerHandle, what: str, log_offset: int, stdio_path: Path) -> ServerStartError:
    try:
        with open(handle.error_log, "rb") as f:
            f.seek(log_offset)
            log = f.read().decode(errors="replace")
    except OSError:
        log = ""
    log_tail = "\n".join(log.splitlines()[-_ERROR_LOG_TAIL_LINES:])
    stdio_tail = _tail(stdio_path, 10)
    text = (
        f"{handle.binary.path} on port {handle.port} (datadir {handle.datadir}) {what}.\n"
        f"--- {handle.error_log} (tail) ---\n{log_tail}\n--- {stdio_path} (tail) ---\n{stdio_tail}"
    )
    if re.search(r"Bind on TCP/IP port|Address already in use", log):
        return _PortTaken(text)
    return ServerStartError(text)


def _wait_ready(handle: ServerHandle, deadline: float, log_offset: int, stdio_path: Path) -> None:
    """Poll until root logs in over the unix socket (it has no password at this point)."""
    last_exc: Exception | None = None
    while True:
        if not handle.alive():
            handle.kill()  # reap, clean up
            raise _startup_failure(
                handle, f"exited during start-up with code {handle._process.returncode}", log_offset, stdio_path
            )
        if handle.socket.exists():
            try:
                conn = _root_connect(handle, timeout_s=max(1.0, min(5.0, deadline - time.monotonic())))
            except pymysql.err.OperationalError as exc:
                last_exc = exc
            else:
                conn.close()
                return
        if time.monotonic() >= deadline:
            raise _startup_failure(
                handle, f"did not accept a login in time (last attempt: {last_exc!r})", log_offset, stdio_path
            )
        time.sleep(0.1)


def _root_connect(handle: ServerHandle, *, timeout_s: float) -> pymysql.connections.Connection:
    try:
        return pymysql.connect(
            unix_socket=str(handle.socket), user="root", password="", connect_timeout=timeout_s
        )
    except pymysql.err.OperationalError as exc:
        # A datadir reused from an earlier start already has `user`; root may have been changed.
        if exc.args and exc.args[0] == 1045:
            return pymysql.connect(
                unix_socket=str(handle.socket),
                user=handle.user,
                password=handle.password,
                connect_timeout=timeout_s,
            )
        raise


def _create_accounts(handle: ServerHandle, deadline: float) -> None:
    conn = _root_connect(handle, timeout_s=max(1.0, deadline - time.monotonic()))
    try:
        with conn.cursor() as cur:
            # Local accounts, not data: unlogged, as GR asks of local changes on a member (a
            # logged one is a transaction the group does not have: replication.outside_writes).
            cur.execute("SET SESSION sql_log_bin = 0")
            for statement in _account_sql(handle.binary, handle.user, handle.password):
                cur.execute(statement)
        conn.commit()
    finally:
        conn.close()
    # Prove the promised logins work over TCP before handing the server out.
    for user, password in ((handle.user, handle.password), ("root", "")):
        probe = pymysql.connect(
            host=handle.host,
            port=handle.port,
            user=user,
            password=password,
            connect_timeout=max(1.0, deadline - time.monotonic()),
        )
        probe.close()
