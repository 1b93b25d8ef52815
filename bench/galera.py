"""A throw-away MariaDB Galera cluster on this machine, for benchmarks that compare against it.

    with start_galera_cluster(Path(tmp), nodes=3) as cluster:
        cluster.nodes[0].port   # client port of node 1 (root, empty password, 127.0.0.1)

Theory of operation. Every node is a `mariadbd` on its own datadir under `base`, 127.0.0.1 only,
with free ports for the client port, the Galera group port (gmcast.listen_addr) and the IST
receiver (ist.recv_addr). The server settings are grproxy's own backend defaults
(`grproxy.mysqld._default_options(durable=False)`, what `grproxy sandbox` runs its backends
with: innodb_flush_log_at_trx_commit=2, sync_binlog=0, ROW binlog, 64M buffer pool …) plus what
Galera requires (wsrep_on, innodb_autoinc_lock_mode=2, default_storage_engine=InnoDB), so the
comparison with a grproxy group is like for like.

How the nodes get the same state without copying data through an SST. All nodes start from
copies of one datadir that already belongs to the cluster's history:

1. a "seed" datadir is initialised and started once as a one-node cluster
   (`--wsrep-new-cluster`, gcomm://) by `grproxy.mysqld.start_server`, which also makes the
   same accounts as for grproxy's backends (root@127.0.0.1 without a password …), then shut
   down cleanly: its grastate.dat now names a cluster UUID and seqno;
2. the stopped seed is copied to node1..nodeN (a consistent copy: no server has it open);
3. node1 bootstraps the cluster again from its copy (`--wsrep-new-cluster`; Galera keeps the
   saved UUID and seqno), the others join with the same UUID and data. The only gap is the few
   seqnos of node1's configuration changes; the donor sees that an IST covers it and runs the
   SST script in "bypass" mode only, which for wsrep_sst_method=mysqldump is one
   `SET GLOBAL wsrep_start_position` sent to the joiner as root over TCP. No data is dumped.

Why not rsync: its joiner side is an rsync daemon which, started as root, drops to `nobody` and
cannot write into the root-owned datadir ("mkstemp .rsync_sst_complete failed: Permission
denied"), so even the bypass handshake fails and the joiner aborts. Why not `skip`: a Galera-4
joiner still prepares an IST receiver that the donor never serves, and waits forever (the same
bug as Percona's PXC-4200).

A node is ready when root logs in over its unix socket and it reports wsrep_ready=ON,
wsrep_local_state_comment=Synced and wsrep_cluster_size=N. Each server runs in its own process
group and dies with this process (PR_SET_PDEATHSIG); `stop()` (or leaving the `with` block)
shuts every node down, SIGKILL after a bound. Any failure while starting stops what was started
before raising GaleraStartError with the tail of the failing node's error log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pymysql

from grproxy.mysqld import ServerBinary, _default_options, find_server_binary, free_port, start_server

__all__ = ["GaleraCluster", "GaleraNode", "GaleraStartError", "find_provider", "start_galera_cluster"]

PROVIDER_CANDIDATES = (
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib/libgalera_smm.so",
    "/usr/lib/galera-4/libgalera_smm.so",
    "/usr/lib64/galera-4/libgalera_smm.so",
    "/usr/lib64/galera/libgalera_smm.so",
    "/usr/lib/x86_64-linux-gnu/galera/libgalera_smm.so",
)
CLUSTER_NAME = "grproxy-bench"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0


class GaleraStartError(RuntimeError):
    pass


def find_provider() -> Path:
    """libgalera_smm.so: $GALERA_PROVIDER, else the usual package locations."""
    override = os.environ.get("GALERA_PROVIDER")
    candidates = (override,) if override else PROVIDER_CANDIDATES
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise GaleraStartError(
        "libgalera_smm.so not found (looked in " + ", ".join(candidates) + "). Install the galera-4 package: "
        "`make bench-deps` or `sudo apt-get install galera-4`; or set GALERA_PROVIDER=/path/to/libgalera_smm.so."
    )


def _set_pdeathsig() -> None:  # in the child between fork and exec (Linux)
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclasses.dataclass(slots=True)
class GaleraNode:
    index: int
    datadir: Path
    port: int  # client port
    group_port: int
    ist_port: int
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    user: str = "root"
    password: str = ""

    @property
    def socket(self) -> Path:
        return self.datadir / "mysqld.sock"

    @property
    def error_log(self) -> Path:
        return self.datadir / "mysqld.err"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(cannot read {self.error_log}: {exc})"

    def connect(self, timeout_s: float = 5) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=str(self.socket), user="root", password="", connect_timeout=timeout_s,
                               autocommit=True)

    def status(self, conn: pymysql.connections.Connection) -> dict[str, str]:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep%'")
            return {k: v for k, v in cur.fetchall()}

    def terminate(self) -> None:
        if self.alive():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout_s: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)


@dataclasses.dataclass(slots=True)
class GaleraCluster:
    nodes: list[GaleraNode]
    provider: Path
    binary: ServerBinary
    options: dict[str, str | None]  # the settings common to every node (for printing)

    def stop(self) -> None:
        """Shut every node down (in parallel), SIGKILL after a bound. Idempotent."""
        for n in self.nodes:
            n.terminate()
        for n in self.nodes:
            n.wait_stopped(STOP_TIMEOUT_S)

    def __enter__(self) -> GaleraCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def galera_options(binary: ServerBinary, *, slave_threads: int | None) -> dict[str, str | None]:
    """Settings shared by every node: grproxy's backend defaults + what Galera needs."""
    options = _default_options(binary, server_id=1, durable=False)
    options.update({
        "bind-address": "127.0.0.1",
        "binlog_format": "ROW",
        "default_storage_engine": "InnoDB",
        "innodb_autoinc_lock_mode": "2",
        "innodb_buffer_pool_size": "64M",
        "innodb_flush_log_at_trx_commit": options.get("innodb_flush_log_at_trx_commit") or "2",
        "sync_binlog": options.get("sync_binlog") or "0",
        "wsrep_on": "ON",
        "wsrep_cluster_name": CLUSTER_NAME,
        "wsrep_sst_method": "mysqldump",  # only ever "bypassed": see the module docstring
        "wsrep_sst_auth": "root:",
    })
    if slave_threads is not None:
        options["wsrep_slave_threads"] = str(slave_threads)
    return options


def _render(options: dict[str, str | None]) -> list[str]:
    return [f"--{k}" if v == "" else f"--{k}={v}" for k, v in options.items() if v is not None]


def _node_options(common: dict[str, str | None], node: GaleraNode, provider: Path, cluster_address: str,
                  server_id: int) -> dict[str, str | None]:
    options = dict(common)
    options.update({
        "server_id": str(server_id),
        "datadir": str(node.datadir),
        "port": str(node.port),
        "socket": str(node.socket),
        "pid-file": str(node.datadir / "mysqld.pid"),
        "log-error": str(node.error_log),
        "wsrep_provider": str(provider),
        "wsrep_cluster_address": cluster_address,
        "wsrep_node_name": f"node{node.index}",
        "wsrep_node_address": "127.0.0.1",
        "wsrep_node_incoming_address": f"127.0.0.1:{node.port}",
        "wsrep_sst_receive_address": f"127.0.0.1:{node.port}",  # mysqldump: the joiner's client port
        "wsrep_provider_options": (
            f"gmcast.listen_addr=tcp://127.0.0.1:{node.group_port};base_host=127.0.0.1;"
            f"base_port={node.group_port};ist.recv_addr=127.0.0.1:{node.ist_port};gcache.size=64M"
        ),
    })
    return options


def _launch(binary: ServerBinary, node: GaleraNode, options: dict[str, str | None], *, new_cluster: bool) -> None:
    cmd = [str(binary.path), "--no-defaults", *_render(options)]
    if new_cluster:
        cmd.append("--wsrep-new-cluster")
    if os.geteuid() == 0:
        cmd.append("--user=root")
    with open(node.datadir / "mysqld.stdout", "ab") as out:
        node.process = subprocess.Popen(  # noqa: S603 - our own arguments
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_set_pdeathsig,
        )


def _wait_synced(node: GaleraNode, size: int, deadline: float) -> None:
    last = "no login yet"
    while True:
        if not node.alive():
            raise GaleraStartError(f"galera node{node.index} (port {node.port}) exited during start-up "
                                   f"(code {node.process.returncode if node.process else None}):\n{node.log_tail()}")
        if node.socket.exists():
            try:
                conn = node.connect(timeout_s=2)
                try:
                    st = node.status(conn)
                finally:
                    conn.close()
                last = (f"wsrep_ready={st.get('wsrep_ready')} state={st.get('wsrep_local_state_comment')} "
                        f"cluster_size={st.get('wsrep_cluster_size')}")
                if (st.get("wsrep_ready") == "ON" and st.get("wsrep_local_state_comment") == "Synced"
                        and int(st.get("wsrep_cluster_size") or 0) >= size):
                    return
            except pymysql.err.MySQLError as exc:
                last = repr(exc)
        if time.monotonic() >= deadline:
            raise GaleraStartError(f"galera node{node.index} (port {node.port}) not ready in time ({last}):\n"
                                   f"{node.log_tail()}")
        time.sleep(0.2)


def start_galera_cluster(base: Path, nodes: int = 3, *, slave_threads: int | None = None,
                         binary: ServerBinary | None = None) -> GaleraCluster:
    """Start an N-node Galera cluster under `base` (which must not hold one yet); returns once
    every node is Synced in a cluster of N. Raises GaleraStartError (nothing left running)."""
    provider = find_provider()
    binary = binary or find_server_binary()
    if not binary.is_mariadb:
        raise GaleraStartError(f"{binary.path} is MySQL; Galera here needs MariaDB's mariadbd")
    base = Path(base).resolve()
    common = galera_options(binary, slave_threads=slave_threads)

    def new_node(i: int, datadir: Path) -> GaleraNode:
        return GaleraNode(i, datadir, free_port(), free_port(), free_port())

    seed = new_node(0, base / "seed")
    members = [new_node(i, base / f"node{i}") for i in range(1, nodes + 1)]
    cluster = GaleraCluster(members, provider, binary, common)
    # A unix socket path must fit in 108 bytes.
    if len(os.fsencode(members[0].socket)) > 100:
        raise GaleraStartError(f"{base} is too long a path for the servers' unix sockets")
    seed_handle = None
    try:
        # 1. The seed: a one-node cluster with grproxy's accounts, stopped cleanly.
        seed_options = _node_options(common, seed, provider, "gcomm://", 100)
        seed_options["wsrep-new-cluster"] = ""
        for key in ("datadir", "port", "socket", "pid-file", "log-error"):  # start_server sets these itself
            seed_options.pop(key)
        seed_handle = start_server(seed.datadir, port=seed.port, server_id=100, binary=binary, die_with_parent=True,
                                   extra_options=seed_options)
        seed_handle.stop()
        grastate = (seed.datadir / "grastate.dat").read_text()
        if "seqno:   -1" in grastate:
            raise GaleraStartError(f"the seed node did not save its Galera position:\n{grastate}")
        # 2. Consistent copies of the stopped seed.
        for m in members:
            shutil.copytree(seed.datadir, m.datadir,
                            ignore=shutil.ignore_patterns("mysqld.err", "mysqld.stdout", "mysqld.pid", "*.sock",
                                                          "gvwstate.dat"))
            if m.index != 1:
                state = m.datadir / "grastate.dat"
                state.write_text(state.read_text().replace("safe_to_bootstrap: 1", "safe_to_bootstrap: 0"))
        shutil.rmtree(seed.datadir, ignore_errors=True)
        # 3. node1 bootstraps from the saved position; the others join it (IST, SST bypassed).
        address = "gcomm://" + ",".join(f"127.0.0.1:{m.group_port}" for m in members)
        deadline = time.monotonic() + START_TIMEOUT_S
        _launch(binary, members[0], _node_options(common, members[0], provider, address, 1), new_cluster=True)
        _wait_synced(members[0], 1, deadline)
        for m in members[1:]:
            _launch(binary, m, _node_options(common, m, provider, address, m.index), new_cluster=False)
        for m in members:
            _wait_synced(m, nodes, deadline)
    except BaseException:
        if seed_handle is not None:
            seed_handle.stop()
        cluster.stop()
        raise
    return cluster


if __name__ == "__main__":  # a quick manual check: start, print, stop
    import tempfile

    with tempfile.TemporaryDirectory(prefix="galera-") as tmp:
        t0 = time.monotonic()
        with start_galera_cluster(Path(tmp)) as c:
            print(f"galera cluster ready in {time.monotonic() - t0:.1f}s: ports", [n.port for n in c.nodes])
            for n in c.nodes:
                conn = n.connect()
                st = n.status(conn)
                conn.close()
                print(n.index, st.get("wsrep_cluster_size"), st.get("wsrep_local_state_comment"),
                      st.get("wsrep_cluster_state_uuid"))
        print(f"stopped after {time.monotonic() - t0:.1f}s")
