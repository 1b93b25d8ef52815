"""Front-end robustness the fuzzer (tests/chaos/fuzz.py) found wanting, pinned down in process.

The session behind the front end is a fake here: what is tested is the front end's own
contract (a session's bug costs that client only; a closed connection's coroutines stop; a
failed TLS handshake leaves nothing behind), not a database.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import warnings
from pathlib import Path
from typing import Any

import pytest

from grproxy.config import parse_config
from grproxy.frontend import ClientConnection, FrontendServer, Phase
from grproxy.tls import TlsTransport
from replication.protocol.constants import Cap
from replication.protocol.packets import handshake_response, parse_server_handshake
from replication.protocol.relay import RelaySession

CAPS = int(Cap.PROTOCOL_41 | Cap.SECURE_CONNECTION | Cap.PLUGIN_AUTH | Cap.TRANSACTIONS | Cap.LONG_PASSWORD)


class Wire(asyncio.Transport):
    """An in-memory transport: what the server wrote, whether it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.protocol: asyncio.Protocol | None = None

    def write(self, data: Any) -> None:
        if not self.closed:
            self.out += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            assert self.protocol is not None
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else default

    def packets(self) -> list[tuple[int, bytes]]:
        out, pos, data = [], 0, bytes(self.out)
        while pos + 4 <= len(data):
            n = int.from_bytes(data[pos:pos + 3], "little")
            out.append((data[pos + 3], data[pos + 4:pos + 4 + n]))
            pos += 4 + n
        return out


class FakeSession:
    """A session whose on_command raises (a bug) and whose reset_for_user waits forever."""

    status = 2

    def __init__(self) -> None:
        self.backend = type("B", (), {"thread_id": 1, "transport": None})()
        self.closed = False
        self.reset_cancelled = asyncio.Event()
        self.reset_started = asyncio.Event()

    def on_command(self, raw: bytes, last_seq: int = 0) -> None:
        raise IndexError("a bug in the session")

    def on_infile_packet(self, raw: bytes, last: bool) -> None:
        pass

    async def reset_for_user(self, database: str | None) -> None:
        self.reset_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.reset_cancelled.set()
            raise

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    def __init__(self) -> None:
        self.session = FakeSession()

    async def open_session(self, link: Any, processes: Any, **kwargs: Any) -> FakeSession:
        return self.session


async def _logged_in() -> tuple[ClientConnection, Wire, FakeFactory]:
    factory = FakeFactory()
    config = parse_config({"users": [{"name": "u", "password": ""}], "backends": [{"port": 3306}]})
    server = FrontendServer(config, "10.11-fake", CAPS, factory)  # type: ignore[arg-type]
    wire = Wire()
    conn = ClientConnection(server)
    wire.protocol = conn
    conn.connection_made(wire)
    await asyncio.sleep(0)
    greeting = wire.packets()[0][1]
    parse_server_handshake(greeting)
    login = handshake_response(capabilities=CAPS, collation=45, user="u", auth_response=b"", database=None,
                               plugin="mysql_native_password")
    wire.out.clear()
    conn.data_received(len(login).to_bytes(3, "little") + b"\x01" + login)
    for _ in range(20):
        await asyncio.sleep(0)
    assert wire.packets() and wire.packets()[0][1][:1] == b"\x00", wire.packets()
    assert conn.phase is Phase.COMMAND
    wire.out.clear()
    return conn, wire, factory


def test_a_session_bug_costs_its_client_an_error_and_a_close_not_the_caller() -> None:
    """An exception out of on_command used to escape into whoever delivered the bytes: the
    client's transport, or — for a command buffered behind another — the member connection
    whose answer completed the previous command (asyncio then closed that one)."""

    async def run() -> None:
        conn, wire, _ = await _logged_in()
        conn.data_received(b"\x01\x00\x00\x00\x0e")  # COM_PING: the fake session raises
        errors = [p for _, p in wire.packets() if p[:1] == b"\xff"]
        assert errors and int.from_bytes(errors[0][1:3], "little") == 1105
        assert wire.closed

    asyncio.run(run())


def test_closing_the_connection_stops_its_change_user() -> None:
    """A connection closed (KILL, the client gone) while COM_CHANGE_USER reset its session
    went on resetting connections the session had given back to their pools ("[BUG] command
    on a backend connection with a command in flight")."""

    async def run() -> None:
        conn, wire, factory = await _logged_in()
        body = b"\x11u\x00\x00"  # COM_CHANGE_USER u, empty auth
        conn.data_received(len(body).to_bytes(3, "little") + b"\x00" + body)
        await asyncio.wait_for(factory.session.reset_started.wait(), 5)
        conn.close()
        await asyncio.wait_for(factory.session.reset_cancelled.wait(), 5)

    asyncio.run(run())


def test_a_failed_tls_handshake_leaves_no_unretrieved_exception() -> None:
    found: list[str] = []

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: found.append(ctx["message"]))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*_cert())
        wire = Wire()
        tls = TlsTransport(wire, ctx)  # type: ignore[arg-type]
        with pytest.raises(ssl.SSLError):
            tls.feed(b"GET / HTTP/1.0\r\n\r\n")  # not TLS: the handshake fails at once
        del tls
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(run())
    assert found == []


def test_a_slow_path_command_cancelled_before_it_ran_warns_nothing() -> None:
    """A session closed right after a command took the slow path cancelled the task before it
    ran: "coroutine ... was never awaited" on stderr."""

    class Link:
        conn_id = 1
        username = "u"

        def close(self) -> None:
            pass

    class Backend:
        handshake = None
        on_pause_writing = on_resume_writing = None

        def close(self) -> None:
            pass

    async def run() -> None:
        session = RelaySession(Link(), Backend(), None)  # type: ignore[arg-type]
        session._spawn(session._local_command(0x99, b"\x01\x00\x00\x00\x99"))
        session.close()
        await asyncio.sleep(0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(run())
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


def _cert() -> tuple[str, str]:
    """A throwaway self-signed certificate in a temp dir."""
    import datetime
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    out = Path(tempfile.mkdtemp())
    (out / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return str(out / "c.pem"), str(out / "k.pem")
