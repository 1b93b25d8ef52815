"""The fault-injecting relay against plain asyncio echo servers: pass, drop, delay, reset,
one-way, and partition patterns over nodes identified from the group HELLO frame."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable

from replication.gcs.xcom.frames import Hello, NodeId, encode_control
from tests.chaos.netfault import DROP, PASS, RESET, Network, Relay, Rule, group_hello_identifier, parse_hello_sender

QUIET_S = 0.3  # how long we listen for bytes that must not come


class EchoServer:
    """Echoes every byte; remembers everything it received (to tell which direction works)."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.received = bytearray()
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return "127.0.0.1", self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.greeting:
                writer.write(self.greeting)
            while data := await reader.read(4096):
                self.received += data
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def _read_or_none(reader: asyncio.StreamReader, n: int, timeout_s: float = QUIET_S) -> bytes | None:
    try:
        return await asyncio.wait_for(reader.readexactly(n), timeout_s)
    except TimeoutError:
        return None


async def _closed(reader: asyncio.StreamReader, timeout_s: float = 5) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), timeout_s) == b""
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False


def run(coro_fn: Callable[..., object]) -> Callable[..., object]:
    """Run an async test body on a fresh loop (no asyncio plugin in this project)."""
    import functools

    @functools.wraps(coro_fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        return asyncio.run(coro_fn(*args, **kwargs))  # type: ignore[arg-type]

    return wrapper


async def _pair() -> tuple[Network, EchoServer, Relay]:
    net = Network(["c", "s"])
    server = EchoServer()
    relay = Relay(net, "s", await server.start(), source="c")
    await relay.start()
    return net, server, relay


@run
async def test_pass_drop_heal() -> None:
    net, server, relay = await _pair()
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    w.write(b"hello")
    assert await _read_or_none(r, 5, 5) == b"hello"
    net.set("c", "s", DROP)
    w.write(b"lost")
    assert await _read_or_none(r, 1) is None
    assert bytes(server.received) == b"hello"
    assert not r.at_eof()  # a blackhole keeps the connection
    # New connections are accepted and blackholed too.
    r2, w2 = await asyncio.open_connection("127.0.0.1", relay.port)
    w2.write(b"x")
    assert await _read_or_none(r2, 1) is None
    net.heal()
    # The stream lost bytes: it cannot go on, so the relay closes it on heal.
    assert await _closed(r) and await _closed(r2)
    r3, w3 = await asyncio.open_connection("127.0.0.1", relay.port)
    w3.write(b"again")
    assert await _read_or_none(r3, 5, 5) == b"again"
    assert relay.bytes_dropped == 5
    for x in (w, w2, w3):
        x.close()
    await relay.close()
    await server.close()


@run
async def test_delay_keeps_order_and_delays() -> None:
    net, _server, relay = await _pair()
    net.set("c", "s", Rule.delay(200))
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    start = time.monotonic()
    for i in range(10):
        w.write(b"%d," % i)
    got = await asyncio.wait_for(r.readexactly(20), 10)
    assert got == b"".join(b"%d," % i for i in range(10))
    assert time.monotonic() - start >= 0.2  # a lower bound: bytes cannot arrive before the delay
    w.close()
    await relay.close()


@run
async def test_reset_closes_and_refuses_until_healed() -> None:
    net, _server, relay = await _pair()
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    w.write(b"a")
    assert await _read_or_none(r, 1, 5) == b"a"
    net.set("s", "c", RESET)  # either direction's reset cuts the connection
    assert await _closed(r)
    r2, _w2 = await asyncio.open_connection("127.0.0.1", relay.port)
    assert await _closed(r2)
    net.heal()
    r3, w3 = await asyncio.open_connection("127.0.0.1", relay.port)
    w3.write(b"b")
    assert await _read_or_none(r3, 1, 5) == b"b"
    w3.close()
    await relay.close()


@run
async def test_one_way() -> None:
    net = Network(["c", "s"])
    server = EchoServer(greeting=b"HI")
    relay = Relay(net, "s", await server.start(), source="c")
    await relay.start()
    # Server → client dropped: the client's bytes arrive, nothing comes back.
    net.one_way("s", "c")
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    w.write(b"ping")
    assert await _read_or_none(r, 1) is None
    assert bytes(server.received) == b"ping"
    net.heal()
    assert await _closed(r)
    # Client → server dropped: the greeting arrives, the client's bytes do not.
    server.received.clear()
    net.one_way("c", "s")
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    assert await _read_or_none(r, 2, 5) == b"HI"
    w.write(b"ping")
    assert await _read_or_none(r, 1) is None
    assert bytes(server.received) == b""
    w.close()
    await relay.close()
    await server.close()


def _hello(sender_name: str, sender_address: str, target_address: str) -> bytes:
    return encode_control(Hello("chaos", 1, 1, NodeId(sender_name, sender_address, 7), NodeId("", target_address, 0)))


def test_hello_parser_reads_the_real_codec() -> None:
    frame = _hello("uuid-1", "127.0.0.1:4000", "127.0.0.1:5000")
    assert parse_hello_sender(frame + b"trailing") == ("uuid-1", "127.0.0.1:4000")
    assert parse_hello_sender(frame[:-1]) is None
    assert parse_hello_sender(b"GX" + bytes(20)) is None


class Cluster:
    """Three echo 'members', each behind a relay that identifies dialers by HELLO."""

    def __init__(self) -> None:
        self.nodes = ["n1", "n2", "n3"]
        self.net = Network(self.nodes)
        self.servers: dict[str, EchoServer] = {}
        self.relays: dict[str, Relay] = {}
        self.tokens = itertools.count()

    async def start(self) -> None:
        names = {f"uuid-{n}": n for n in self.nodes}
        for n in self.nodes:
            self.servers[n] = EchoServer()
            self.relays[n] = Relay(self.net, n, await self.servers[n].start(), identify=group_hello_identifier(names))
            await self.relays[n].start()

    async def probe(self, src: str, dst: str) -> tuple[bool, bool]:
        """(bytes src → dst arrive, the echo dst → src arrives) on a fresh connection."""
        relay = self.relays[dst]
        hello = _hello(f"uuid-{src}", self.relays[src].address, relay.address)
        token = b"<%d>" % next(self.tokens)
        r, w = await asyncio.open_connection("127.0.0.1", relay.port)
        w.write(hello + token)
        echoed = await _read_or_none(r, len(hello) + len(token)) is not None
        w.close()
        return token in self.servers[dst].received, echoed

    async def matrix(self) -> dict[tuple[str, str], bool]:
        pairs = [(a, b) for a in self.nodes for b in self.nodes if a != b]
        results = await asyncio.gather(*(self.probe(a, b) for a, b in pairs))
        for (a, b), (arrived, echoed) in zip(pairs, results):
            # Each direction is reported separately: src → dst bytes, and dst → src bytes.
            assert not echoed or arrived
        return {(a, b): arrived for (a, b), (arrived, _) in zip(pairs, results)}

    async def close(self) -> None:
        for n in self.nodes:
            await self.relays[n].close()
            await self.servers[n].close()


def _expect(nodes: list[str], cut: set[tuple[str, str]]) -> dict[tuple[str, str], bool]:
    return {(a, b): (a, b) not in cut for a in nodes for b in nodes if a != b}


@run
async def test_partition_patterns_over_hello_identified_nodes() -> None:
    c = Cluster()
    await c.start()
    nodes, net = c.nodes, c.net
    assert await c.matrix() == _expect(nodes, set())
    net.isolate("n2")
    assert await c.matrix() == _expect(nodes, {("n1", "n2"), ("n2", "n1"), ("n3", "n2"), ("n2", "n3")})
    net.heal()
    majority, minority = net.split_majority(random.Random(3))
    assert len(majority) == 2 and len(minority) == 1
    cut = {(a, b) for a in majority for b in minority} | {(b, a) for a in majority for b in minority}
    assert await c.matrix() == _expect(nodes, cut)
    net.heal()
    net.bridge("n2", ["n1", "n2"], ["n2", "n3"])
    assert await c.matrix() == _expect(nodes, {("n1", "n3"), ("n3", "n1")})
    net.heal()
    net.one_way("n1", "n3")
    assert await c.matrix() == _expect(nodes, {("n1", "n3")})
    assert "n1->n3: drop" in net.describe()
    net.heal()
    assert net.describe() == "all links pass"
    assert await c.matrix() == _expect(nodes, set())
    # An unidentifiable dialer (no HELLO) is not subject to the rules.
    net.isolate("n1")
    r, w = await asyncio.open_connection("127.0.0.1", c.relays["n1"].port)
    w.write(b"GX" + bytes(12) + b"plain bytes")
    assert await _read_or_none(r, 25, 5) is not None
    w.close()
    assert net.rule(None, "n1") == PASS
    await c.close()
