"""Faults, compared between grproxy and the backend directly: packets over max_allowed_packet,
a backend killed mid-statement, malformed packets. In every case the client gets a MySQL error
or a clean close within a bound, and the server (or proxy) keeps serving other clients."""

from __future__ import annotations

import random
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from compat_support import (
    COM_QUERY,
    COM_STMT_EXECUTE,
    RawClient,
    ResultSet,
    Target,
    parse_err,
    read_until_closed,
    split_packets,
    tcp_accepts,
    wait_until,
)
from grproxy.mysqld import ServerHandle, find_client_binary, start_server

pytestmark = pytest.mark.timeout(180)

SMALL_PACKET_BYTES = 1048576
# How long a client may wait for the error after its server died or refused a packet.
ERROR_LATENCY_S_MAX = 5.0


@pytest.fixture(scope="module")
def faults_proxy(proxy_factory: Callable[..., Any], backend: ServerHandle) -> Any:
    """A grproxy of this module's own: a fault that wedges it fails these tests, not the rest
    of the suite."""
    return proxy_factory([backend], name="proxy-faults")


@pytest.fixture(params=["direct", "proxy"])
def target(request: pytest.FixtureRequest, direct: Target, database: str) -> Target:
    if request.param == "direct":
        return direct
    proxy = request.getfixturevalue("faults_proxy")
    return Target("proxy", proxy.host, proxy.port, "root", "", database)


@pytest.fixture(params=["direct", "proxy"])
def fresh_target(request: pytest.FixtureRequest, direct: Target, database: str, backend: ServerHandle) -> Iterator[Target]:
    """Like `target`, but "proxy" is a grproxy started for this test alone (hostile-client tests:
    one that wedges grproxy is reported on its own, not through the tests after it)."""
    if request.param == "direct":
        yield direct
        return
    proxy = request.getfixturevalue("proxy_factory")([backend], name="proxy-fresh")
    yield Target("proxy", proxy.host, proxy.port, "root", "", database)
    proxy.stop(timeout_s=2)


# ---------------------------------------------------------------------------------------------
# max_allowed_packet


@pytest.fixture(scope="module")
def small_packet_backend(backend_factory: Callable[..., ServerHandle]) -> ServerHandle:
    """The reference: a server whose own max_allowed_packet is 1 MiB."""
    return backend_factory("smallpacket", extra_options={"max_allowed_packet": str(SMALL_PACKET_BYTES)})


@pytest.fixture(scope="module")
def small_packet_proxy(proxy_factory: Callable[..., Any], backend: ServerHandle) -> Any:
    """grproxy with [frontend] max_allowed_packet = 1 MiB, in front of the usual backend (1 GiB)."""
    return proxy_factory([backend], name="proxy-smallpacket", frontend={"max_allowed_packet": SMALL_PACKET_BYTES})


@pytest.fixture(params=["direct", "proxy"])
def small_packet_target(request: pytest.FixtureRequest, database: str) -> Target:
    if request.param == "direct":
        server = request.getfixturevalue("small_packet_backend")
        with pymysql.connect(host=server.host, port=server.port, user="root", password="", autocommit=True) as conn:
            conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        return Target("direct", server.host, server.port, "root", "", database)
    proxy = request.getfixturevalue("small_packet_proxy")
    return Target("proxy", proxy.host, proxy.port, "root", "", database)


def test_packet_over_max_allowed_packet(small_packet_target: Target) -> None:
    """A 2 MiB query gets ERR 1153 and the connection is closed; other clients carry on."""
    t = small_packet_target
    bystander = t.pymysql()
    big = t.pymysql()
    try:
        with big.cursor() as cur:
            cur.execute("SELECT LENGTH(%s)", ("x" * (SMALL_PACKET_BYTES - 1024),))  # just under: fine
            assert cur.fetchall() == ((SMALL_PACKET_BYTES - 1024,),)
        started = time.monotonic()
        with pytest.raises(pymysql.err.MySQLError) as info, big.cursor() as cur:
            cur.execute("SELECT LENGTH(%s)", ("y" * (2 * SMALL_PACKET_BYTES),))
        assert time.monotonic() - started < ERROR_LATENCY_S_MAX
        # The server answers ERR 1153 after the header and closes. A client still writing the
        # rest of its 2 MiB may see the reset first and report "gone away" (2006; MariaDB
        # direct does this with PyMySQL) or "lost connection" (2013) instead: all mean refused.
        # test_packet_header_over_max_allowed_packet_raw checks the ERR packet itself.
        assert info.value.args[0] in (1153, 2006, 2013), info.value.args
        if info.value.args[0] == 1153:
            assert "max_allowed_packet" in info.value.args[1]
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)), big.cursor() as cur:
            cur.execute("SELECT 'closed?'")
        with bystander.cursor() as cur:
            cur.execute("SELECT 'bystander'")
            assert cur.fetchall() == (("bystander",),)
        fresh = t.pymysql()
        with fresh.cursor() as cur:
            cur.execute("SELECT 'fresh'")
            assert cur.fetchall() == (("fresh",),)
        fresh.close()
    finally:
        bystander.close()
        try:
            big.close()
        except pymysql.err.Error:
            pass


def test_packet_header_over_max_allowed_packet_raw(small_packet_target: Target) -> None:
    """Only the header of an oversized packet is sent: the answer (ERR 1153, then close) comes
    without waiting for the payload, so nothing past the header need be buffered."""
    t = small_packet_target
    with t.raw() as client:
        length = 2 * SMALL_PACKET_BYTES
        client.send_raw(length.to_bytes(3, "little") + b"\x00" + bytes([COM_QUERY]) + b"SELECT '")
        data, how = read_until_closed(client.sock, timeout_s=ERROR_LATENCY_S_MAX)
    packets = list(split_packets(data))
    assert how in ("eof", "reset"), f"connection still open after {ERROR_LATENCY_S_MAX}s, received {data!r}"
    assert len(packets) == 1 and packets[0][:1] == b"\xff", data
    err = parse_err(packets[0])
    assert (err.errno, err.sqlstate) == (1153, "08S01")
    assert "max_allowed_packet" in err.message


# ---------------------------------------------------------------------------------------------
# A backend killed mid-statement


@pytest.fixture
def doomed(backend_factory: Callable[..., ServerHandle], database: str) -> ServerHandle:
    """A throwaway server for this test only."""
    server = backend_factory("doomed")
    with pymysql.connect(host=server.host, port=server.port, user="root", password="", autocommit=True) as conn:
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    return server


@pytest.mark.parametrize("via", ["direct", "proxy"])
def test_backend_killed_mid_statement(
    via: str, doomed: ServerHandle, proxy_factory: Callable[..., Any], database: str
) -> None:
    """SIGKILL the backend during SELECT SLEEP(30): the client gets 2013 at once; grproxy stays up
    and serves new clients once the backend is back."""
    proxy = proxy_factory([doomed], name="proxy-doomed") if via == "proxy" else None
    host, port = (proxy.host, proxy.port) if proxy else (doomed.host, doomed.port)
    t = Target(via, host, port, "root", "", database)
    victim = t.pymysql()
    restarted: ServerHandle | None = None
    try:
        result: dict[str, Any] = {}

        def sleep() -> None:
            started = time.monotonic()
            try:
                with victim.cursor() as cur:
                    cur.execute("SELECT SLEEP(30) AS doomed_sleep")
                    result["value"] = ("ok", cur.fetchall())
            except pymysql.err.MySQLError as exc:
                result["value"] = (type(exc).__name__, exc.args)
            result["elapsed_s"] = time.monotonic() - started

        thread = threading.Thread(target=sleep, daemon=True)
        thread.start()
        with pymysql.connect(host=doomed.host, port=doomed.port, user="root", password="") as watcher:
            assert wait_until(lambda: _running(watcher, "doomed_sleep"), timeout_s=10), "SLEEP never started"
        killed_at = time.monotonic()
        doomed.kill()
        thread.join(timeout=ERROR_LATENCY_S_MAX + 30)
        assert not thread.is_alive()
        assert result["value"][0] == "OperationalError" and result["value"][1][0] == 2013, result["value"]
        assert time.monotonic() - killed_at < ERROR_LATENCY_S_MAX + 1

        if proxy is None:
            return
        assert proxy.alive(), "grproxy exited when its backend died"
        # While the backend is down: a prompt MySQL error, not a hang.
        started = time.monotonic()
        try:
            probe = t.pymysql(connect_timeout=ERROR_LATENCY_S_MAX, read_timeout=ERROR_LATENCY_S_MAX)
            with probe.cursor() as cur:
                cur.execute("SELECT 1")
            probe.close()
            down: Any = "served with the backend down"
        except pymysql.err.MySQLError as exc:
            down = exc.args
        assert down != "served with the backend down"
        assert time.monotonic() - started < 2 * ERROR_LATENCY_S_MAX + 1
        # The mariadb client too. MariaDB Connector/C calls an ERR packet with a client-side code
        # (2003) "malformed": it gets a server-side code with the original in the message.
        cli = subprocess.run([str(find_client_binary()), f"-h{host}", f"-P{port}", "-uroot", "-e", "SELECT 1"],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode != 0 and "(2003) Can't connect" in cli.stderr, cli.stderr
        assert "malformed" not in cli.stderr, cli.stderr
        # Backend back on the same port: grproxy serves new clients again.
        restarted = start_server(doomed.datadir, port=doomed.port, die_with_parent=True, binary=doomed.binary)
        assert wait_until(lambda: _serves(t), timeout_s=20, interval_s=0.2), "grproxy did not recover"
        assert proxy.alive()
    finally:
        try:
            victim.close()
        except pymysql.err.Error:
            pass
        if restarted is not None:
            restarted.stop()


def _running(conn: Any, marker: str) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE %s AND id <> CONNECTION_ID()",
            (f"%{marker}%",),
        )
        return bool(cur.fetchone()[0])


def _serves(t: Target) -> bool:
    try:
        conn = t.pymysql(connect_timeout=2, read_timeout=5)
    except pymysql.err.MySQLError:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 'back'")
            return cur.fetchall() == (("back",),)
    except pymysql.err.MySQLError:
        return False
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Malformed packets


def _outcome(client: RawClient, timeout_s: float = ERROR_LATENCY_S_MAX) -> Any:
    """What the server did next: ("err", errno, sqlstate) then "closed"/"open", or "closed"."""
    client.sock.settimeout(timeout_s)
    try:
        packet = client.read_packet()
    except TimeoutError:
        return ("no answer",)
    except (ConnectionError, OSError, Exception) as exc:  # ConnectionClosed, reset
        if type(exc).__name__ in ("ConnectionClosed", "ConnectionResetError", "BrokenPipeError"):
            return ("closed",)
        raise
    if packet[:1] != b"\xff":
        return ("answer", packet[:1])
    err = parse_err(packet)
    # Is the connection still usable?
    try:
        result = client.query_one("SELECT 'still here'")
    except Exception as exc:  # noqa: BLE001 - any failure to answer means closed
        return ("err", err.errno, err.sqlstate, f"then closed ({type(exc).__name__})")
    assert isinstance(result, ResultSet) and result.rows == [b"\x0astill here"], result
    return ("err", err.errno, err.sqlstate, "then usable")


def _normalise(outcome: Any) -> Any:
    if outcome[0] == "err" and outcome[3].startswith("then closed"):
        return outcome[:3] + ("then closed",)
    return outcome


def test_unknown_command(target: Target, direct: Target) -> None:
    """A command byte no server knows: ERR 1047 "Unknown command", as from the server itself."""

    def observe(t: Target) -> Any:
        with t.raw() as client:
            client.command(0xEE, b"garbage")
            return _normalise(_outcome(client))

    observed, reference = observe(target), observe(direct)
    assert observed == reference
    assert observed[:3] == ("err", 1047, "08S01")


MALFORMED: dict[str, Callable[[RawClient], None]] = {
    # COM_STMT_EXECUTE with a body too short to hold a statement id.
    "truncated stmt execute": lambda c: c.command(COM_STMT_EXECUTE, b"\x01\x00"),
    # COM_STMT_EXECUTE for a statement that was never prepared.
    "unknown statement": lambda c: c.command(COM_STMT_EXECUTE, struct.pack("<IBI", 987654, 0, 1)),
    # A packet with no command byte at all.
    "empty packet": lambda c: c.send_raw(b"\x00\x00\x00\x00"),
    # A command whose sequence id is not 0.
    "out of order": lambda c: c.send_raw(b"\x09\x00\x00\x07" + bytes([COM_QUERY]) + b"SELECT 1"),
    # The header promises more than is sent, then the client half-closes.
    "truncated then eof": lambda c: (c.send_raw(b"\x64\x00\x00\x00" + bytes([COM_QUERY]) + b"SEL"), c.sock.shutdown(socket.SHUT_WR)),
    # Random bytes framed as a packet.
    "random payload": lambda c: c.send_packet(random.Random(1).randbytes(300), seq=0),
    # Random bytes, no framing at all.
    "random stream": lambda c: c.send_raw(b"\x17" + random.Random(2).randbytes(2000)),
    # COM_QUERY with bytes that are not valid in the connection's character set.
    "invalid utf8": lambda c: c.command(COM_QUERY, b"SELECT '\xff\xfe\xc3'"),
    # COM_CHANGE_USER whose user name has no terminating NUL.
    "change user unterminated": lambda c: c.command(0x11, b"app"),
    # COM_CHANGE_USER with an auth-response length past the end.
    "change user overrun": lambda c: c.command(0x11, b"app\0\xf0ab"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_packet_after_handshake(fresh_target: Target, direct: Target, case: str) -> None:
    """After a good login, a malformed packet gets an ERR or a clean close, promptly; a new
    client is served afterwards."""

    def observe(t: Target) -> Any:
        with t.raw() as client:
            MALFORMED[case](client)
            return _outcome(client)

    observed = observe(fresh_target)
    reference = observe(direct)
    serves_after = _serves(fresh_target)
    assert reference[0] in ("err", "closed", "answer"), reference  # the server's own behaviour
    assert (observed[0] in ("err", "closed", "answer"), serves_after) == (True, True), (
        f"{case}: {observed} (the server itself: {reference}); new clients served: {serves_after}"
    )


_RNG = random.Random(20240229)  # fixed: a failing case replays byte for byte

BAD_HANDSHAKES: dict[str, bytes] = {
    # Protocol 4.1 flags, then a user name with no terminating NUL.
    "unterminated user": struct.pack("<IIB", 0x200 | 0x8000, 0xFFFFFF, 45) + b"\0" * 23 + b"a" * 32,
    # CLIENT_SSL on a server that offered no TLS.
    "ssl request": struct.pack("<IIB", 0x200 | 0x800 | 0x8000, 0xFFFFFF, 45) + b"\0" * 23,
    # A pre-4.1 handshake response.
    "protocol 4.0": struct.pack("<H", 0x0001) + b"\xff\xff\xff" + b"root\0" + b"12345678",
    # Shorter than the fixed part.
    "too short": b"\x05\x82",
    # Protocol 4.1 flags and an auth-response length running past the end.
    "auth length overrun": struct.pack("<IIB", 0x200 | 0x8000 | 0x80000, 0xFFFFFF, 45) + b"\0" * 23 + b"root\0" + b"\xf0",
    "random 64 bytes": bytes(_RNG.randrange(256) for _ in range(64)),
    "random 64 bytes, protocol 4.1": struct.pack("<I", 0x16F00FFA) + bytes(_RNG.randrange(256) for _ in range(60)),
}


@pytest.mark.parametrize("case", list(BAD_HANDSHAKES))
def test_garbage_instead_of_handshake(fresh_target: Target, direct: Target, case: str) -> None:
    """A malformed handshake response: ERR or close within a bound, and new clients are served."""

    def observe(t: Target) -> Any:
        client = RawClient.open(t.host, t.port)
        try:
            client.read_greeting()
            payload = BAD_HANDSHAKES[case]
            client.send_raw(len(payload).to_bytes(3, "little") + b"\x01" + payload)
            data, how = read_until_closed(client.sock, timeout_s=ERROR_LATENCY_S_MAX)
        finally:
            client.close()
        packets = list(split_packets(data))
        errors = [parse_err(p).errno for p in packets if p[:1] == b"\xff"]
        return how, errors, len(packets)

    observed, reference = observe(fresh_target), observe(direct)
    serves_after = _serves(fresh_target)
    assert reference[0] in ("eof", "reset") and reference[2] == len(reference[1]) <= 1, reference  # the server's own
    assert (observed[0] in ("eof", "reset"), serves_after) == (True, True), (
        f"after the bad handshake: connection {observed[0]} after {ERROR_LATENCY_S_MAX}s "
        f"(packets {observed[1:]}), new clients served: {serves_after}"
    )
    assert observed[2] == len(observed[1]) <= 1, observed  # at most one packet, an ERR


def test_connection_storm_of_garbage(fresh_target: Target) -> None:
    """Many clients that connect and misbehave at once (close mid-handshake, garbage, silence
    then close) leave the server serving."""
    sockets = []
    try:
        for i in range(40):
            sock = socket.create_connection((fresh_target.host, fresh_target.port), timeout=5)
            sockets.append(sock)
            if i % 3 == 0:
                sock.recv(4096)
                sock.sendall(bytes(_RNG.randrange(256) for _ in range(50)))
            elif i % 3 == 1:
                sock.close()
        for sock in sockets:
            try:
                sock.close()
            except OSError:
                pass
    finally:
        for sock in sockets:
            try:
                sock.close()
            except OSError:
                pass
    assert wait_until(lambda: _serves(fresh_target), timeout_s=10)
    assert tcp_accepts(fresh_target.host, fresh_target.port)
