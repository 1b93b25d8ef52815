"""TCP transport on loopback: delivery, batching, compression/fragmentation interop, handshake
refusals, allowlist, TLS modes, invalid frames, non-members, bounds, restarts, backpressure."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from grproxy.mysqld import free_port
from replication.gcs.xcom.allowlist import IpAllowlist
from replication.gcs.xcom.frames import (
    ENVELOPE_VERSION,
    MAGIC,
    FrameDecoder,
    FrameKind,
    Hello,
    MessageEncoder,
    NodeId,
    Reject,
    RejectReason,
    Welcome,
    encode_control,
)
from replication.gcs.xcom.transport import (
    Inbound,
    Inbox,
    PeerConnected,
    PeerEvent,
    PeerInvalidFrame,
    PeerRefused,
    PeerRestarted,
    PeerUnreachable,
    TcpTransport,
    TransportConfig,
)
from replication.gcs.xcom.tls import (
    CertificateFiles,
    SslMode,
    TlsConfig,
    certificate_names_host,
    generate_certificates,
)

GROUP = "g-test"




def run(fn: Callable[[], Awaitable[None]], timeout_s: float = 30, loop: str = "asyncio") -> None:
    """Run one async test under a hard deadline (a bound on the test, not a timing claim), on
    the default loop or on uvloop (what the member processes use)."""

    async def main() -> None:
        async with asyncio.timeout(timeout_s):
            await fn()

    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


class Node:
    def __init__(self, name: str, port: int | None = None, incarnation: int = 1, **overrides: Any) -> None:
        self.port = port or free_port()
        self.config = TransportConfig(group_name=overrides.pop("group_name", GROUP), **overrides)
        self.id = NodeId(name, f"127.0.0.1:{self.port}", incarnation)
        self.wakeup = asyncio.Event()
        self.inbox = Inbox(self.config.inbox_messages_max, self.config.inbox_bytes_max, self.wakeup)
        self.events: list[PeerEvent] = []
        self.t = TcpTransport(self.id, self.config, self.inbox, observer=self.events.append)

    async def __aenter__(self) -> Node:
        await self.t.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.t.close()

    def send(self, dest: Node | NodeId, body: bytes) -> bool:
        node = dest.id if isinstance(dest, Node) else dest
        return self.t.send(node, self.t.encode(body))

    async def recv(self, n: int) -> list[Inbound]:
        out: list[Inbound] = []
        while len(out) < n:
            got = self.inbox.take(n - len(out))
            if not got:
                self.wakeup.clear()
                await self.wakeup.wait()
            out.extend(got)
        return out

    async def until(self, cond: Callable[[], bool]) -> None:
        while not cond():
            await asyncio.sleep(0.01)


def test_messages_arrive_in_order_with_sender_identity() -> None:
    async def body() -> None:
        async with Node("a") as a, Node("b") as b:
            msgs = [f"m{i}".encode() * (i % 7 + 1) for i in range(2000)]
            for m in msgs:
                assert a.send(b, m)
            got = await b.recv(len(msgs))
            assert [g.body for g in got] == msgs
            assert {g.sender for g in got} == {a.id}
            await a.t.drain()
            s = a.t.stats()
            assert s.messages_sent == 2000
            assert s.frames_sent == 2000
            assert b.t.stats().messages_received == 2000
            assert any(isinstance(e, PeerConnected) and e.node == b.id and e.outbound for e in a.events)
            assert any(isinstance(e, PeerConnected) and e.node == a.id and not e.outbound for e in b.events)

    run(body)


def test_three_members_full_mesh_both_directions() -> None:
    async def body() -> None:
        async with Node("a") as a, Node("b") as b, Node("c") as c:
            nodes = [a, b, c]
            for src in nodes:
                msg = src.t.encode(f"from {src.id.name}".encode())  # encoded once, sent twice
                for dst in nodes:
                    if dst is not src:
                        assert src.t.send(dst.id, msg)
            for dst in nodes:
                got = await dst.recv(2)
                assert sorted(g.body for g in got) == sorted(
                    f"from {n.id.name}".encode() for n in nodes if n is not dst
                )

    run(body)


def test_different_compression_thresholds_interoperate() -> None:
    async def body() -> None:
        async with Node("a", compression_threshold=10) as a, Node("b", compression_threshold=0) as b:
            payload = b"SELECT * FROM t WHERE id = 1; " * 400
            assert a.send(b, payload) and b.send(a, payload)
            assert [g.body for g in await b.recv(1)] == [payload]
            assert [g.body for g in await a.recv(1)] == [payload]
            await a.t.drain()
            await b.t.drain()
            assert a.t.stats().messages_compressed == 1
            assert a.t.stats().bytes_sent < len(payload) // 10
            assert b.t.stats().messages_compressed == 0
            assert b.t.stats().bytes_sent > len(payload)

    run(body)


def test_fragmented_message_interleaves_with_small_ones() -> None:
    async def body() -> None:
        async with Node("a", communication_max_message_size=1000, compression_threshold=0) as a, Node("b") as b:
            big = bytes(range(256)) * 400  # 102400 bytes -> 103 fragments
            assert a.send(b, big)
            for i in range(5):
                assert a.send(b, b"small %d" % i)
            got = [g.body for g in await b.recv(6)]
            assert sorted(got) == sorted([big] + [b"small %d" % i for i in range(5)])
            # small messages are not stuck behind the fragmented one
            assert got.index(big) > 0
            await a.t.drain()
            s = a.t.stats()
            assert s.messages_fragmented == 1 and s.frames_sent == 103 + 5

    run(body)


def test_wrong_group_is_refused_and_counted() -> None:
    async def body() -> None:
        async with Node("a", group_name="other-group") as a, Node("b") as b:
            assert a.send(b, b"let me in")
            await a.until(lambda: a.t.stats().connect_failures >= 1)
            await b.until(lambda: b.t.stats().handshakes_rejected >= 1)
            assert a.t.stats().handshakes_failed >= 1
            assert a.t.stats().messages_dropped_unreachable >= 1
            assert len(b.inbox) == 0
            assert any(isinstance(e, PeerRefused) and "GROUP_MISMATCH" in e.reason for e in b.events)

    run(body)


def test_identity_mismatch_is_refused() -> None:
    async def body() -> None:
        async with Node("a") as a, Node("b") as b:
            impostor = NodeId("not-b", b.id.address, 1)
            assert a.send(impostor, b"hello")
            await b.until(lambda: b.t.stats().handshakes_rejected >= 1)
            assert any(isinstance(e, PeerRefused) and "IDENTITY_MISMATCH" in e.reason for e in b.events)
            assert len(b.inbox) == 0

    run(body)


@LOOPS
def test_allowlist_refuses_and_counts(loop: str) -> None:
    async def body() -> None:
        allow = IpAllowlist.parse("10.0.0.0/8, 127.0.0.2")
        async with Node("a") as a, Node("b", ip_allowlist=allow) as b:
            assert a.send(b, b"from 127.0.0.1")
            await b.until(lambda: b.t.stats().connections_refused_allowlist >= 1)
            assert len(b.inbox) == 0
            assert any(isinstance(e, PeerRefused) and e.reason == "ip_allowlist" for e in b.events)
            # 127.0.0.2 is on the list: a raw client bound to it gets as far as the handshake
            reader, writer = await asyncio.open_connection(b.id.address.split(":")[0], b.port, local_addr=("127.0.0.2", 0))
            hello = Hello(GROUP, 1, 1, NodeId("z", "127.0.0.2:9", 1), NodeId("", b.id.address, 0))
            writer.write(encode_control(hello))
            frame = await read_frame(reader)
            assert isinstance(frame, Welcome) and frame.sender == b.id
            writer.close()

    run(body, loop=loop)


async def read_frame(reader: asyncio.StreamReader) -> object:
    decoder = FrameDecoder()
    while True:
        data = await reader.read(4096)
        assert data, "closed before a frame"
        frames = decoder.feed(data)
        if frames:
            return frames[0]


async def raw_member(b: Node, name: str = "raw") -> tuple[asyncio.StreamReader, asyncio.StreamWriter, NodeId]:
    me = NodeId(name, f"127.0.0.1:{free_port()}", 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
    writer.write(encode_control(Hello(GROUP, 1, 1, me, b.id)))
    assert isinstance(await read_frame(reader), Welcome)
    return reader, writer, me


def envelope(kind: int, flags: int, body: bytes, raw_len: int | None = None) -> bytes:
    raw = len(body) if raw_len is None else raw_len
    return struct.pack("!2sBBBBII", MAGIC, ENVELOPE_VERSION, kind, flags, 0, len(body), raw) + body


@LOOPS
def test_invalid_frames_are_dropped_counted_and_reported(loop: str) -> None:
    async def body() -> None:
        async with Node("b") as b:
            reader, writer, me = await raw_member(b)
            good = b.t.encode(b"good").frames[0][0]
            writer.write(envelope(FrameKind.DATA, 0x01, b"\xff" * 20, 500))  # LZ4 garbage
            writer.write(envelope(77, 0, b"?"))  # unknown kind
            writer.write(encode_control(Welcome(1, me)))  # handshake frame after handshake
            writer.write(bytes(good))
            got = await b.recv(1)
            assert got == [Inbound(me, b"good")]  # the stream survived the bad frames
            assert b.t.stats().frames_invalid == 3
            reports = [e for e in b.events if isinstance(e, PeerInvalidFrame)]
            assert len(reports) == 3 and all(e.node == me and not e.fatal for e in reports)
            # a broken envelope costs the connection, and only that
            writer.write(b"NOT A FRAME AT ALL")
            assert await reader.read() == b""
            await b.until(lambda: b.t.stats().streams_broken == 1)
            assert any(isinstance(e, PeerInvalidFrame) and e.fatal for e in b.events)
            writer.close()
            # the member is unharmed
            _, writer2, me2 = await raw_member(b, "raw2")
            writer2.write(bytes(good))
            assert await b.recv(1) == [Inbound(me2, b"good")]
            writer2.close()

    run(body, loop=loop)


def test_garbage_instead_of_hello_is_refused() -> None:
    async def body() -> None:
        async with Node("b") as b:
            for junk in (b"GET / HTTP/1.1\r\n\r\n", envelope(FrameKind.DATA, 0, b"data first")):
                reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
                writer.write(junk)
                rest = await reader.read()
                frames = FrameDecoder().feed(rest) if rest else []
                assert all(isinstance(f, Reject) for f in frames)
                writer.close()
            await b.until(lambda: b.t.stats().handshakes_rejected == 2)

    run(body)


def test_version_and_self_connection_refused() -> None:
    async def body() -> None:
        async with Node("b") as b:
            cases = [
                (Hello(GROUP, 7, 9, NodeId("x", "127.0.0.1:9", 1), b.id), RejectReason.VERSION_UNSUPPORTED),
                (Hello(GROUP, 1, 1, b.id, b.id), RejectReason.SELF_CONNECTION),
                (Hello(GROUP, 1, 1, replace(b.id, incarnation=9), b.id), RejectReason.IDENTITY_MISMATCH),
            ]
            for hello, reason in cases:
                reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
                writer.write(encode_control(hello))
                frame = await read_frame(reader)
                assert isinstance(frame, Reject) and frame.reason == reason
                writer.close()

    run(body)


def test_non_members_are_dropped_and_counted_fragments_too() -> None:
    async def body() -> None:
        async with Node("a", communication_max_message_size=100) as a, Node("b") as b, Node("c") as c:
            b.t.set_admission(lambda n: n.name == "c")
            assert a.send(b, b"x" * 1000)  # fragmented, from a non-member
            assert a.send(b, b"short")
            assert c.send(b, b"member")
            assert [g.body for g in await b.recv(1)] == [b"member"]
            await b.until(lambda: b.t.stats().messages_dropped_non_member == 11)
            assert len(b.inbox) == 0

    run(body)


def test_partial_message_of_a_member_that_leaves_is_dropped() -> None:
    async def body() -> None:
        async with Node("b") as b:
            _, writer, me = await raw_member(b)
            enc = replace(b.t.encoder, max_message_size=10, compression_threshold=0)
            frames = enc.encode(b"y" * 50).frames
            for f in frames[:3]:
                writer.write(b"".join(bytes(p) for p in f))
            await b.until(lambda: b.t._reassembler.buffered_bytes == 30)
            b.t.set_admission(lambda n: n != me)  # view change without "raw"
            assert b.t._reassembler.buffered_bytes == 0
            assert b.t.stats().reassembly_abandoned == 1
            writer.close()

    run(body)


def test_queue_bound_refuses_newest_and_unreachable_peer_is_purged() -> None:
    async def body() -> None:
        async with Node("a", peer_queue_messages_max=10, reconnect_backoff_ms_min=200, reconnect_backoff_ms_max=400) as a:
            nobody = NodeId("ghost", f"127.0.0.1:{free_port()}", 1)
            results = [a.send(nobody, b"m%d" % i) for i in range(15)]
            assert results == [True] * 10 + [False] * 5
            assert a.t.stats().messages_dropped_queue_full == 5
            await a.until(lambda: a.t.stats().connect_failures >= 1)
            assert a.t.stats().messages_dropped_unreachable == 10
            assert a.t.peer_queues()[nobody.address] == (0, 0)
            async with asyncio.timeout(5):
                await a.t.drain()  # nothing left to write: returns

    run(body)


def test_byte_bound_admits_a_single_large_message() -> None:
    async def body() -> None:
        async with Node("a", peer_queue_bytes_max=1000) as a, Node("b") as b:
            assert a.send(b, b"z" * 5000)  # alone in the queue: accepted despite the bound
            assert not a.send(b, b"z" * 10)  # behind it: refused
            assert [len(g.body) for g in await b.recv(1)] == [5000]

    run(body)


@LOOPS
def test_restarted_peer_is_a_new_incarnation(loop: str) -> None:
    async def body() -> None:
        async with Node("a", reconnect_backoff_ms_min=20, reconnect_backoff_ms_max=100) as a:
            port = free_port()
            async with Node("b", port=port, incarnation=1) as b1:
                assert a.send(b1, b"to b1")
                assert [g.body for g in await b1.recv(1)] == [b"to b1"]
                old = b1.id
                # b1 also dials a, then dies
                assert b1.send(a, b"from b1")
                assert (await a.recv(1))[0].sender == old
            async with Node("b", port=port, incarnation=2) as b2:
                # traffic for the dead incarnation must not reach the new one
                for _ in range(50):
                    a.send(old, b"stale")
                    await asyncio.sleep(0.01)
                    if a.t.stats().messages_dropped_stale:
                        break
                assert a.t.stats().messages_dropped_stale >= 1
                assert a.send(b2, b"to b2")
                got = await b2.recv(1)
                assert [g.body for g in got] == [b"to b2"]
                assert any(isinstance(e, PeerRestarted) and e.old == old and e.new == b2.id for e in a.events)
                assert b2.send(a, b"from b2")
                assert (await a.recv(1))[0].sender == b2.id
                assert any(isinstance(e, PeerRestarted) and e.new == b2.id for e in a.events)

    run(body, loop=loop)


def test_full_inbox_pauses_reading_and_loses_nothing() -> None:
    async def body() -> None:
        async with Node("a") as a, Node("b", inbox_messages_max=50, read_chunk_bytes=4096) as b:
            n = 3000
            for i in range(n):
                assert a.send(b, b"%06d" % i + b"." * 200)
            await asyncio.sleep(0.3)  # give the reader time to hit the bound
            # the reader stopped: at most one read chunk of messages past the bound
            assert len(b.inbox) <= 50 + 4096 // 214 + 1
            got = await b.recv(n)
            assert [int(g.body[:6]) for g in got] == list(range(n))

    run(body)


def test_drain_waits_until_written() -> None:
    async def body() -> None:
        async with Node("a") as a, Node("b") as b:
            for i in range(500):
                a.send(b, b"q" * 2000)
            assert a.t.peer_queues()[b.id.address][0] > 0
            await a.t.drain()
            assert a.t.peer_queues()[b.id.address] == (0, 0)
            assert a.t.stats().messages_sent == 500
            await b.recv(500)

    run(body)


def test_compression_and_fragments_on_uvloop() -> None:
    async def body() -> None:
        async with Node("a", compression_threshold=100, communication_max_message_size=4096) as a, Node("b") as b:
            msgs = [b"u" * 10, b"v" * 10_000, bytes(range(256)) * 100]
            for m in msgs:
                assert a.send(b, m)
            assert sorted(g.body for g in await b.recv(3)) == sorted(msgs)

    run(body, loop="uvloop")


# --------------------------------------------------------------------------- TLS, allowlist


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertificateFiles]:
    base = tmp_path_factory.mktemp("certs")
    # one CA for a, b and x; x's certificate names another host than the one it runs on
    good = generate_certificates(
        str(base / "ca1"), ["a", "b", "x"], ["127.0.0.1", "localhost"], hosts_by_name={"x": ["10.9.9.9"]}
    )
    other_ca = generate_certificates(str(base / "ca2"), ["rogue"], ["127.0.0.1"], ca_name="other CA")
    return {**good, **other_ca}


def tls(mode: SslMode, files: CertificateFiles, ca: str | None = None) -> TlsConfig:
    return TlsConfig(mode, ca or files.ssl_ca, files.ssl_cert, files.ssl_key)


@LOOPS
@pytest.mark.parametrize("mode", [SslMode.REQUIRED, SslMode.VERIFY_CA, SslMode.VERIFY_IDENTITY])
def test_tls_modes_deliver(mode: SslMode, certs: dict[str, CertificateFiles], loop: str) -> None:
    async def body() -> None:
        async with Node("a", tls=tls(mode, certs["a"])) as a, Node("b", tls=tls(mode, certs["b"])) as b:
            msgs = [b"secret %d" % i for i in range(100)] + [b"big" * 50_000]
            for m in msgs:
                assert a.send(b, m)
            assert [g.body for g in await b.recv(len(msgs))] == msgs
            assert b.send(a, b"back")
            assert [g.body for g in await a.recv(1)] == [b"back"]

    run(body, loop=loop)


def test_plain_member_cannot_talk_to_tls_member(certs: dict[str, CertificateFiles]) -> None:
    async def body() -> None:
        async with Node("a") as a, Node("b", tls=tls(SslMode.REQUIRED, certs["b"])) as b:
            assert a.send(b, b"plain")
            await b.until(lambda: b.t.stats().handshakes_rejected >= 1)
            await a.until(lambda: a.t.stats().connect_failures >= 1)
            assert len(b.inbox) == 0

    run(body)


@LOOPS
def test_verify_ca_refuses_certificate_from_another_ca(certs: dict[str, CertificateFiles], loop: str) -> None:
    async def body() -> None:
        ca1 = certs["a"].ssl_ca
        rogue = tls(SslMode.VERIFY_CA, certs["rogue"], ca=ca1)  # trusts us, but we do not trust it
        async with Node("r", tls=rogue) as r, Node("b", tls=tls(SslMode.VERIFY_CA, certs["b"])) as b:
            assert r.send(b, b"let me in")
            await r.until(lambda: r.t.stats().connect_failures >= 1)
            await b.until(lambda: b.t.stats().handshakes_rejected >= 1)
            assert len(b.inbox) == 0

    run(body, loop=loop)


@LOOPS
def test_verify_identity_listener_checks_dialer_host(certs: dict[str, CertificateFiles], loop: str) -> None:
    async def body() -> None:
        # x's certificate is from the group's CA (VERIFY_CA would pass) but names 10.9.9.9
        # while x claims 127.0.0.1 in its HELLO. x itself only verifies the CA, so the refusal
        # can only come from b's identity check.
        async with Node("b", tls=tls(SslMode.VERIFY_IDENTITY, certs["b"])) as b:
            async with Node("x", tls=tls(SslMode.VERIFY_CA, certs["x"])) as x:
                assert x.send(b, b"hello")
                await b.until(lambda: b.t.stats().handshakes_rejected >= 1)
                await x.until(lambda: x.t.stats().connect_failures >= 1)
                assert any(isinstance(e, PeerRefused) and "TLS_IDENTITY_MISMATCH" in e.reason for e in b.events)
                assert len(b.inbox) == 0

    run(body, loop=loop)


@LOOPS
def test_verify_identity_dialer_checks_listener_host(certs: dict[str, CertificateFiles], loop: str) -> None:
    async def body() -> None:
        # the listener x presents a certificate for 10.9.9.9; the dialer dialed 127.0.0.1
        async with Node("x", tls=tls(SslMode.VERIFY_CA, certs["x"])) as x:
            async with Node("a", tls=tls(SslMode.VERIFY_IDENTITY, certs["a"])) as a:
                assert a.send(x, b"hello")
                await a.until(lambda: a.t.stats().connect_failures >= 1)
                failures = [e for e in a.events if isinstance(e, PeerUnreachable)]
                assert failures and "IP address mismatch" in failures[0].reason
                assert len(x.inbox) == 0

    run(body, loop=loop)


def test_certificate_names_host() -> None:
    cert = {"subjectAltName": (("DNS", "*.example.com"), ("IP Address", "10.0.0.5"), ("DNS", "db1"))}
    assert certificate_names_host(cert, "10.0.0.5")
    assert not certificate_names_host(cert, "10.0.0.6")
    assert certificate_names_host(cert, "a.example.com")
    assert not certificate_names_host(cert, "a.b.example.com")
    assert not certificate_names_host(cert, "example.com")
    assert certificate_names_host(cert, "DB1")
    assert not certificate_names_host(None, "db1")
    assert not certificate_names_host({}, "db1")


def test_tls_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ssl_cert"):
        TlsConfig(SslMode.REQUIRED)
    with pytest.raises(ValueError, match="ssl_ca"):
        TlsConfig(SslMode.VERIFY_CA, None, "c", "k")
    assert SslMode.parse("verify_identity") is SslMode.VERIFY_IDENTITY
    with pytest.raises(ValueError, match="not one of"):
        SslMode.parse("PREFERRED")


def test_allowlist_parsing_and_matching() -> None:
    auto = IpAllowlist.parse("AUTOMATIC")
    for ok in ("127.0.0.1", "127.9.9.9", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "::ffff:127.0.0.1", "fe80::1%eth0"):
        assert auto.allows(ok), ok
    for bad in ("8.8.8.8", "172.32.0.1", "2001:db8::1", "garbage", ""):
        assert not auto.allows(bad), bad
    custom = IpAllowlist.parse(" 192.0.2.0/24 , 2001:db8::5 ")
    assert custom.allows("192.0.2.77") and custom.allows("2001:db8::5")
    assert not custom.allows("127.0.0.1")
    both = IpAllowlist.parse("AUTOMATIC,192.0.2.1")
    assert both.allows("192.0.2.1") and both.allows("127.0.0.1")
    for spec in ("", " , ", "db.example.com", "10.0.0.0/33"):
        with pytest.raises(ValueError):
            IpAllowlist.parse(spec)


def test_connections_refused_by_allowlist_are_logged(capsys: pytest.CaptureFixture[str]) -> None:
    async def body() -> None:
        async with Node("a") as a, Node("b", ip_allowlist=IpAllowlist.parse("192.0.2.0/24")) as b:
            a.send(b, b"x")
            await b.until(lambda: b.t.stats().connections_refused_allowlist >= 1)
        await asyncio.sleep(0)

    run(body)
    assert "ip_allowlist" in capsys.readouterr().out


def test_peers_max_bounds_the_writers() -> None:
    async def body() -> None:
        async with Node("a", peers_max=2) as a:
            dests = [NodeId(f"p{i}", f"127.0.0.1:{free_port()}", 1) for i in range(3)]
            results = [a.t.send(d, a.t.encode(b"x")) for d in dests]
            assert results == [True, True, False]
            assert a.t.stats().messages_dropped_peers_max == 1
            a.t.forget_peer(dests[0].address)  # a departed member frees its slot
            assert a.t.send(dests[2], a.t.encode(b"x"))

    run(body)


def test_a_garbage_flood_is_counted_but_logged_sparingly(capsys: pytest.CaptureFixture[str]) -> None:
    async def body() -> None:
        async with Node("b") as b:
            _, writer, me = await raw_member(b)
            writer.write(envelope(77, 0, b"?") * 50)
            good = b.t.encode(b"good").frames[0][0]
            writer.write(bytes(good))
            assert await b.recv(1) == [Inbound(me, b"good")]
            assert b.t.stats().frames_invalid == 50
            writer.close()

    run(body)
    logged = capsys.readouterr().out.count("gcs invalid frame from peer")
    assert 1 <= logged <= 10


def test_message_for_a_newer_incarnation_forces_one_reconnect_not_a_loop() -> None:
    """The core may learn of a restart before our connection notices (it may be half-open):
    a message for a newer incarnation queued after the handshake makes the writer reconnect.
    If the old process really is still there, the handshake says so, the message is dropped
    as stale, and the writer does not reconnect again and again."""

    async def body() -> None:
        async with Node("a") as a, Node("b", incarnation=1) as b:
            assert a.send(b, b"one")
            assert [g.body for g in await b.recv(1)] == [b"one"]
            newer = NodeId("b", b.id.address, 2)
            assert a.send(newer, b"for b#2")
            await b.until(lambda: b.t.stats().connections_accepted == 2)
            await a.until(lambda: a.t.stats().messages_dropped_stale == 1)
            assert a.send(b, b"two")
            assert [g.body for g in await b.recv(1)] == [b"two"]
            assert b.t.stats().connections_accepted == 2

    run(body)


def test_a_peer_that_drops_us_after_the_handshake_does_not_cause_a_reconnect_storm() -> None:
    """Links that die young are retried with growing backoff. (Without it this loop would
    reconnect hundreds of times in the window below; a slow machine only lowers the count.)"""

    async def body() -> None:
        accepted = 0
        port = free_port()
        peer = NodeId("flaky", f"127.0.0.1:{port}", 1)

        async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            await read_frame(reader)
            writer.write(encode_control(Welcome(1, peer)))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(flaky, "127.0.0.1", port)
        async with Node("a", reconnect_backoff_ms_min=50, reconnect_backoff_ms_max=2000) as a:
            for _ in range(150):  # keep something queued for the peer for ~1.5 s
                a.send(peer, b"x")
                await asyncio.sleep(0.01)
            assert 1 <= accepted <= 20
        server.close()

    run(body)


def test_fuzzed_peers_never_hurt_the_member() -> None:
    """Seeded garbage, before and after a valid handshake, over many connections: every one is
    refused or closed or survives, the counters move, and a well-behaved peer still gets its
    messages through at the end."""
    import random

    async def body() -> None:
        rng = random.Random(20240601)
        good = MessageEncoder().encode(b"still fine").frames[0][0]
        async with Node("b") as b:
            for i in range(60):
                if i % 2:
                    _, writer, _ = await raw_member(b, f"fuzz{i}")
                else:
                    _, writer = await asyncio.open_connection("127.0.0.1", b.port)
                blob = bytearray(rng.randbytes(rng.randint(1, 600)))
                if rng.random() < 0.5:  # a plausible envelope with a garbage body
                    blob[:6] = MAGIC + bytes([ENVELOPE_VERSION, rng.randint(0, 6), rng.randint(0, 3), 0])
                writer.write(bytes(blob))
                await writer.drain()
                writer.close()
            _, writer, me = await raw_member(b, "honest")
            writer.write(bytes(good))
            while (await b.recv(1))[0] != Inbound(me, b"still fine"):
                pass  # a fuzz blob may, by chance, have been a valid frame
            s = b.t.stats()
            assert s.handshakes_rejected + s.frames_invalid + s.streams_broken > 0

    run(body)


def test_a_dialer_claiming_a_newer_incarnation_does_not_cut_the_member_off() -> None:
    """A dialer that names itself a newer incarnation of member a (found fuzzing the group
    port with forged identities) made b cancel a's live inbound connection and refuse a's
    reconnects while it stayed connected: a silent for that long is suspected, then expelled.
    The group's view says which incarnation is superseded, not whoever dialed last."""

    async def body() -> None:
        async with Node("a", reconnect_backoff_ms_min=20, reconnect_backoff_ms_max=100) as a, Node("b") as b:
            assert a.send(b, b"before")
            assert [m.body for m in await b.recv(1)] == [b"before"]
            forged = NodeId(a.id.name, a.id.address, a.id.incarnation + 1)
            reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
            writer.write(encode_control(Hello(GROUP, 1, 1, forged, b.id)))
            assert isinstance(await read_frame(reader), Welcome)
            for i in range(20):  # a's messages still arrive, on its own connection or a new one
                assert a.send(b, b"during %d" % i)
                got = await asyncio.wait_for(b.recv(1), 5)
                assert got[0].sender == a.id and got[0].body == b"during %d" % i
            writer.close()

    run(body)
