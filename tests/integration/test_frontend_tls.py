"""Client TLS on the front end, and require_secure_transport."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pymysql
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import socket
import subprocess
import sys
import time

from grproxy.mysqld import free_port
from tests.conftest import render_proxy_config, start_proxy


def make_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_proxy(backend, tmp_path_factory):  # type: ignore[no-untyped-def]
    work = tmp_path_factory.mktemp("tls-proxy")
    cert, key = make_cert(work)
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    proxy = start_proxy(work, [backend], frontend={"tls_cert": str(cert), "tls_key": str(key)})
    yield proxy, cert
    proxy.stop()


def test_tls_client_gets_encrypted_session(tls_proxy) -> None:  # type: ignore[no-untyped-def]
    proxy, cert = tls_proxy
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    conn = pymysql.connect(host=proxy.host, port=proxy.port, user="root", password="", ssl=ctx)
    try:
        assert isinstance(conn._sock, ssl.SSLSocket)  # noqa: SLF001 - what the client negotiated
        assert conn._sock.version() in ("TLSv1.2", "TLSv1.3")  # noqa: SLF001
        with conn.cursor() as cur:
            cur.execute("SELECT 40 + 2")
            assert cur.fetchone() == (42,)
    finally:
        conn.close()


def test_plain_client_allowed_when_tls_optional(tls_proxy) -> None:  # type: ignore[no-untyped-def]
    proxy, _ = tls_proxy
    conn = pymysql.connect(host=proxy.host, port=proxy.port, user="root", password="", ssl_disabled=True)
    try:
        assert not isinstance(conn._sock, ssl.SSLSocket)  # noqa: SLF001
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_require_secure_transport(backend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert, key = make_cert(tmp_path)
    port = free_port()
    config = tmp_path / "grproxy.toml"
    config.write_text(render_proxy_config(port=port, backends=[backend], frontend={
        "tls_cert": str(cert), "tls_key": str(key), "require_secure_transport": True}))
    proc = subprocess.Popen([sys.executable, "-m", "grproxy", "serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "grproxy did not start"
                time.sleep(0.1)
        with pytest.raises(pymysql.err.OperationalError) as info:
            pymysql.connect(host="127.0.0.1", port=port, user="root", password="", ssl_disabled=True)
        assert info.value.args[0] == 3159
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", ssl=ctx)
        with conn.cursor() as cur:
            cur.execute("SELECT 7")
            assert cur.fetchone() == (7,)
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_client_hello_in_the_same_segment_as_the_ssl_request(tls_proxy) -> None:  # type: ignore[no-untyped-def]
    """Clients send the TLS ClientHello right after the SSL request; both may arrive in one
    read. Send them in one write on purpose and complete a login and a query over TLS."""
    import struct

    from replication.protocol.packets import frame

    proxy, cert = tls_proxy
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=False)
    sock = socket.create_connection((proxy.host, proxy.port), timeout=10)

    def recv_packet_plain() -> bytes:
        head = b""
        while len(head) < 4:
            head += sock.recv(4 - len(head))
        n = int.from_bytes(head[:3], "little")
        body = b""
        while len(body) < n:
            body += sock.recv(n - len(body))
        return body

    try:
        recv_packet_plain()  # greeting
        caps = 0x0200 | 0x8000 | 0x80000 | 0x0800  # protocol 41, secure conn, plugin auth, SSL
        ssl_request = frame(struct.pack("<IIB23x", caps, 1 << 24, 45), 1)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        sock.sendall(ssl_request + outgoing.read())  # one segment: request + ClientHello
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    sock.sendall(pending)
                data = sock.recv(65536)
                assert data, "proxy closed the connection during the TLS handshake"
                incoming.write(data)
        sock.sendall(outgoing.read())

        def send(payload: bytes, seq: int) -> None:
            tls.write(frame(payload, seq))
            sock.sendall(outgoing.read())

        def recv() -> bytes:
            buf = b""
            while True:
                try:
                    buf += tls.read(65536)
                except ssl.SSLWantReadError:
                    pass
                if len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:3], "little"):
                    return buf[4 : 4 + int.from_bytes(buf[:3], "little")]
                incoming.write(sock.recv(65536))

        send(struct.pack("<IIB23x", caps, 1 << 24, 45) + b"root\x00\x00mysql_native_password\x00", 2)
        assert recv()[0] == 0x00  # OK: logged in over TLS
    finally:
        sock.close()
