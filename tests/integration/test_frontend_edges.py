"""Front-end behaviour at the edges: LOCAL INFILE, pipelining, limits, hostile clients."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import pymysql
import pytest

from replication.protocol.packets import frame, scramble_native


def connect(proxy, **kwargs):  # type: ignore[no-untyped-def]
    return pymysql.connect(host=proxy.host, port=proxy.port, user="root", password="", **kwargs)


def raw_login(proxy, database: str | None = None) -> socket.socket:  # type: ignore[no-untyped-def]
    """Log in as root over a raw socket (protocol 4.1, no TLS); returns the socket after OK."""
    sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
    greeting = read_packet(sock)[1]
    assert greeting[0] == 10
    caps = 0x0200 | 0x8000 | 0x80000 | 0x10000 | 0x20000  # 41, secure conn, plugin auth, multi stmt/results
    body = struct.pack("<IIB23x", caps, 1 << 24, 45) + b"root\x00" + b"\x00" + b"mysql_native_password\x00"
    sock.sendall(frame(body, 1))
    seq, ok = read_packet(sock)
    assert ok[0] == 0, ok
    return sock


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    head = recv_exact(sock, 4)
    length = int.from_bytes(head[:3], "little")
    return head[3], recv_exact(sock, length)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def test_load_data_local_infile(proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "rows.csv"
    data.write_text("".join(f"{i},v{i}\n" for i in range(1, 2001)))
    conn = connect(proxy, local_infile=True, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS edges")
            cur.execute("CREATE TABLE IF NOT EXISTS edges.li (id INT PRIMARY KEY, v VARCHAR(10))")
            cur.execute("DELETE FROM edges.li")
            n = cur.execute(f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE edges.li FIELDS TERMINATED BY ','")
            assert n == 2000
            cur.execute("SELECT COUNT(*), SUM(id) FROM edges.li")
            assert cur.fetchone() == (2000, 2001000)
            with pytest.raises(pymysql.err.OperationalError):
                cur.execute(f"LOAD DATA LOCAL INFILE '{tmp_path / 'missing.csv'}' INTO TABLE edges.li")
            cur.execute("SELECT 1")  # the session survives the failed load
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_a_backend_lost_during_a_local_infile_upload_ends_the_command(proxy, backend) -> None:  # type: ignore[no-untyped-def]
    """The backend's connection dies while the client uploads its file (the server asked for
    it, so no answer is being relayed then): once the upload ends the client gets an error
    or a closed connection, never a command that hangs."""
    setup = connect(proxy, autocommit=True)
    with setup.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS edges")
        cur.execute("CREATE TABLE IF NOT EXISTS edges.upload (id INT PRIMARY KEY)")
    setup.close()
    sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
    try:
        assert read_packet(sock)[1][0] == 10
        caps = 0x0080 | 0x0200 | 0x8000 | 0x80000  # LOCAL_FILES, 41, secure connection, plugin auth
        body = struct.pack("<IIB23x", caps, 1 << 24, 45) + b"root\x00" + b"\x00" + b"mysql_native_password\x00"
        sock.sendall(frame(body, 1))
        assert read_packet(sock)[1][0] == 0
        sock.sendall(frame(b"\x03LOAD DATA LOCAL INFILE 'ids.txt' INTO TABLE edges.upload", 0))
        seq, request = read_packet(sock)
        assert request[:1] == b"\xfb" and request[1:] == b"ids.txt", request
        direct = pymysql.connect(host=backend.host, port=backend.port, user=backend.user, password=backend.password,
                                 autocommit=True)
        with direct.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'LOAD DATA LOCAL%'")
            (thread,) = cur.fetchone()
            cur.execute(f"KILL {thread}")
        direct.close()
        time.sleep(0.5)  # the server closes that connection
        sock.sendall(frame(b"1\n2\n3\n", seq + 1) + frame(b"", seq + 2))
        try:
            answer = read_packet(sock)[1]
        except ConnectionError:
            answer = b""  # closed: the client sees the connection lost
        assert answer[:1] in (b"\xff", b""), answer
    finally:
        sock.close()


def test_pipelined_commands_answered_in_order(proxy) -> None:  # type: ignore[no-untyped-def]
    sock = raw_login(proxy)
    try:
        queries = [f"SELECT {i}".encode() for i in range(50)]
        sock.sendall(b"".join(frame(b"\x03" + q, 0) for q in queries))
        for i in range(50):
            _, count = read_packet(sock)
            assert count == b"\x01"
            read_packet(sock)  # column definition
            read_packet(sock)  # EOF
            _, row = read_packet(sock)
            assert row[1:] == str(i).encode()
            _, eof = read_packet(sock)
            assert eof[0] == 0xFE
    finally:
        sock.close()


def test_garbage_during_handshake_then_still_serving(proxy) -> None:  # type: ignore[no-untyped-def]
    for payload in (b"\xff" * 40, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x00\x00\x01", b"\x05\x00\x00\x01abcde"):
        sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
        read_packet(sock)  # greeting
        sock.sendall(payload)
        sock.settimeout(10)
        try:
            rest = sock.recv(4096)  # an ERR packet or a close, never a hang
        except (ConnectionResetError, TimeoutError):
            rest = b""
        if rest:
            assert rest[4] == 0xFF, rest
        sock.close()
    conn = connect(proxy)
    with conn.cursor() as cur:
        cur.execute("SELECT 'still here'")
        assert cur.fetchone() == ("still here",)
    conn.close()


def test_client_vanishing_mid_result_does_not_hurt_others(proxy) -> None:  # type: ignore[no-untyped-def]
    sock = raw_login(proxy)
    big = b"SELECT REPEAT('x', 1000) FROM information_schema.columns a, information_schema.columns b LIMIT 200000"
    sock.sendall(frame(b"\x03" + big, 0))
    sock.recv(1000)
    sock.close()  # gone while the backend is still streaming
    conn = connect(proxy)
    with conn.cursor() as cur:
        cur.execute("SELECT 2 + 2")
        assert cur.fetchone() == (4,)
    conn.close()


def test_wrong_sequence_id_is_refused_with_1156(proxy) -> None:  # type: ignore[no-untyped-def]
    sock = raw_login(proxy)
    try:
        sock.sendall(frame(b"\x03SELECT 1", 5))
        _, err = read_packet(sock)
        assert err[0] == 0xFF and struct.unpack("<H", err[1:3])[0] == 1156
        assert sock.recv(10) == b""  # closed
    finally:
        sock.close()


def test_native_scramble_helper_matches_server(proxy) -> None:  # type: ignore[no-untyped-def]
    """Our own scramble (used for backend logins) agrees with what the front end verifies."""
    sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
    _, greeting = read_packet(sock)
    nonce = greeting[greeting.index(b"\x00", 1) + 5 : greeting.index(b"\x00", 1) + 13]
    tail_start = greeting.index(b"\x00", 1) + 1 + 4 + 9 + 2 + 1 + 2 + 2 + 1 + 10
    nonce += greeting[tail_start : tail_start + 12]
    caps = 0x0200 | 0x8000 | 0x80000
    body = struct.pack("<IIB23x", caps, 1 << 24, 45) + b"app\x00"
    auth = scramble_native("apppw", nonce)
    body += bytes((len(auth),)) + auth + b"mysql_native_password\x00"
    sock.sendall(frame(body, 1))
    _, ok = read_packet(sock)
    assert ok[0] == 0, ok
    sock.close()


def test_max_connections(backend, proxy_factory) -> None:  # type: ignore[no-untyped-def]
    small = proxy_factory([backend], name="small", frontend={"max_connections": 3})
    held = [pymysql.connect(host=small.host, port=small.port, user="root", password="") for _ in range(2)]
    # The readiness probe's connection may still be closing; allow it a moment.
    time.sleep(0.5)
    held.append(pymysql.connect(host=small.host, port=small.port, user="root", password=""))
    try:
        with pytest.raises(pymysql.err.OperationalError) as info:
            pymysql.connect(host=small.host, port=small.port, user="root", password="")
        assert info.value.args[0] == 1040
    finally:
        for c in held:
            c.close()
    deadline = time.monotonic() + 10
    while True:  # slots come back once the clients are gone
        try:
            pymysql.connect(host=small.host, port=small.port, user="root", password="").close()
            break
        except pymysql.err.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_many_concurrent_sessions(proxy) -> None:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            conn = connect(proxy)
            with conn.cursor() as cur:
                for i in range(50):
                    cur.execute("SELECT %s + %s", (n, i))
                    assert cur.fetchone() == (n + i,)
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
