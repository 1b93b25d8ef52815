"""A fault-injecting TCP relay and a controller that expresses partitions over named nodes.

Theory of operation
-------------------
Every link of the system under test goes through a :class:`Relay`: it listens on its own port
and forwards each accepted connection to one target (a member's group port, a member port, a
backend). The relay knows the *destination* node (whose port it fronts) and learns the
*source* node of each connection: fixed for a relay that only one node dials (the router in
front of a member port), or read from the first bytes for group links: the dialer's HELLO frame
(replication/gcs/xcom/frames.py) names the sender, and only that much is parsed (the 14-byte
envelope, the group name, the version range and the sender's name and address); the bytes read
are then forwarded unchanged, and everything after is relayed as opaque bytes.

Rules are per *directed* pair (source → destination of the bytes) and live in the
:class:`Network` controller, which the test changes at run time:

- ``PASS``: forward;
- ``DROP``: blackhole: the connection stays open and the bytes are discarded (new connections
  are accepted and their bytes discarded too);
- ``Rule.delay(ms)``: forward each chunk ``ms`` after it was read (order kept);
- ``RESET``: close the pair's connections at once and close new ones as soon as they are
  accepted (a crashed host / a firewall's reject).

A connection carries both directions: bytes client → server obey rule(client, server), bytes
server → client obey rule(server, client). So "one-way" is a DROP on one directed pair.
A byte stream that lost bytes cannot be resumed (the receiver would read garbage where frames
were), so a connection that had bytes dropped is closed when its rule stops dropping: what a
real link does when TCP gives up on a connection during a long partition.

The controller's patterns (:meth:`Network.isolate`, :meth:`Network.partition`,
:meth:`Network.split_majority`, :meth:`Network.bridge`, :meth:`Network.one_way`,
:meth:`Network.heal`) set these rules for every pair they concern.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final

import structlog

log = structlog.get_logger("chaos.netfault")

READ_CHUNK_BYTES: Final = 64 * 1024
# Chunks queued per direction before the relay stops reading (TCP backpressure to the sender).
QUEUE_CHUNKS_MAX: Final = 256
HANDSHAKE_BYTES_MAX: Final = 8192
HANDSHAKE_TIMEOUT_S: Final = 10.0
# After one direction ends, how long the other may go on before the connection is cut.
LINGER_S: Final = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """What a directed link does to bytes: mode pass / drop / delay / reset."""

    mode: str = "pass"
    delay_ms: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("pass", "drop", "delay", "reset"):
            raise ValueError(f"unknown rule mode {self.mode!r}")
        if self.delay_ms < 0 or (self.mode == "delay") != (self.delay_ms > 0):
            raise ValueError("delay_ms must be > 0 exactly for mode 'delay'")

    @staticmethod
    def delay(ms: int) -> Rule:
        return Rule("delay", ms)

    def __str__(self) -> str:
        return f"delay {self.delay_ms}ms" if self.mode == "delay" else self.mode


PASS: Final = Rule("pass")
DROP: Final = Rule("drop")
RESET: Final = Rule("reset")


class Network:
    """Rules per directed (source, destination) pair over named nodes, and the relays that obey
    them. Unknown sources (a connection the relay could not identify) always pass."""

    def __init__(self, nodes: Iterable[str] = ()) -> None:
        self.nodes: list[str] = list(nodes)
        self._rules: dict[tuple[str, str], Rule] = {}
        self._relays: list[Relay] = []

    def add_node(self, name: str) -> None:
        if name not in self.nodes:
            self.nodes.append(name)

    def rule(self, src: str | None, dst: str) -> Rule:
        if src is None:
            return PASS
        return self._rules.get((src, dst), PASS)

    def set(self, src: str, dst: str, rule: Rule) -> None:
        self.set_many({(src, dst): rule})

    def set_many(self, rules: Mapping[tuple[str, str], Rule]) -> None:
        for (src, dst), rule in rules.items():
            if rule == PASS:
                self._rules.pop((src, dst), None)
            else:
                self._rules[(src, dst)] = rule
        for relay in self._relays:
            relay.rules_changed()

    # ----------------------------------------------------------------- patterns

    def heal(self) -> None:
        """Every link passes again."""
        self._rules.clear()
        for relay in self._relays:
            relay.rules_changed()

    def _both_ways(self, pairs: Iterable[tuple[str, str]], rule: Rule) -> dict[tuple[str, str], Rule]:
        out: dict[tuple[str, str], Rule] = {}
        for a, b in pairs:
            out[(a, b)] = rule
            out[(b, a)] = rule
        return out

    def isolate(self, node: str, rule: Rule = DROP) -> None:
        """Cut ``node`` from every other node (both directions)."""
        self.set_many(self._both_ways(((node, o) for o in self.nodes if o != node), rule))

    def partition(self, *sides: Iterable[str], rule: Rule = DROP) -> None:
        """Cut every link between different sides (both directions); links inside a side and
        of nodes in no side are unchanged."""
        groups = [set(s) for s in sides]
        pairs = [(a, b) for i, g in enumerate(groups) for h in groups[i + 1:] for a in g for b in h]
        self.set_many(self._both_ways(pairs, rule))

    def split_majority(self, rng: random.Random, nodes: Sequence[str] | None = None,
                       rule: Rule = DROP) -> tuple[list[str], list[str]]:
        """A random majority / minority split of ``nodes`` (default: the member nodes, every
        node). Returns (majority, minority)."""
        pool = list(nodes if nodes is not None else self.nodes)
        rng.shuffle(pool)
        minority = sorted(pool[: (len(pool) - 1) // 2 or 1])
        majority = sorted(set(pool) - set(minority))
        self.partition(majority, minority, rule=rule)
        return majority, minority

    def bridge(self, bridge: str, side_a: Iterable[str], side_b: Iterable[str], rule: Rule = DROP) -> None:
        """``side_a`` and ``side_b`` cannot reach each other; ``bridge`` reaches both."""
        a = [n for n in side_a if n != bridge]
        b = [n for n in side_b if n != bridge]
        self.partition(a, b, rule=rule)

    def one_way(self, src: str, dst: str, rule: Rule = DROP) -> None:
        """Bytes from ``src`` to ``dst`` are dropped; ``dst`` still reaches ``src``."""
        self.set(src, dst, rule)

    def delay_all(self, ms: int) -> None:
        self.set_many({(a, b): Rule.delay(ms) for a in self.nodes for b in self.nodes if a != b})

    def describe(self) -> str:
        if not self._rules:
            return "all links pass"
        return ", ".join(f"{a}->{b}: {r}" for (a, b), r in sorted(self._rules.items()))

    def _register(self, relay: Relay) -> None:
        self._relays.append(relay)

    def _unregister(self, relay: Relay) -> None:
        with contextlib.suppress(ValueError):
            self._relays.remove(relay)


# --------------------------------------------------------------------------- identification

# An identify function reads the first bytes of a new connection and returns the source node
# (None when unknown) and every byte it consumed (forwarded unchanged afterwards).
Identify = Callable[[asyncio.StreamReader], Awaitable[tuple[str | None, bytes]]]

# The group protocol's envelope (frames.py): magic, version, kind, flags, reserved, body length,
# raw length. A HELLO body begins: group name (u16 length + UTF-8), version min/max (u16 each),
# then the sender: name (u16 + UTF-8), address (u16 + UTF-8), incarnation (u64).
_ENVELOPE: Final = struct.Struct("!2sBBBBII")
_GROUP_MAGIC: Final = b"GX"
_KIND_HELLO: Final = 1


def parse_hello_sender(data: bytes) -> tuple[str, str] | None:
    """(sender name, sender address) of a group HELLO frame at the start of ``data``, or None
    when ``data`` does not start with a whole HELLO."""
    if len(data) < _ENVELOPE.size:
        return None
    magic, _version, kind, _flags, _reserved, body_len, _raw = _ENVELOPE.unpack_from(data)
    if magic != _GROUP_MAGIC or kind != _KIND_HELLO or len(data) < _ENVELOPE.size + body_len:
        return None
    body = data[_ENVELOPE.size: _ENVELOPE.size + body_len]
    pos = 0

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("!H", body, pos)
        pos += 2
        s = body[pos: pos + n].decode("utf-8")
        if len(s.encode()) != n:
            raise ValueError("truncated")
        pos += n
        return s

    try:
        string()  # group name
        pos += 4  # version min, max
        name = string()
        address = string()
    except (struct.error, ValueError, UnicodeDecodeError):
        return None
    return name, address


def group_hello_identifier(names: Mapping[str, str]) -> Identify:
    """Identify the source of a group connection from its HELLO: ``names`` maps a member's name
    (uuid) or its advertised group address to the node name used in rules."""

    async def identify(reader: asyncio.StreamReader) -> tuple[str | None, bytes]:
        head = await reader.readexactly(_ENVELOPE.size)
        magic, _v, kind, _f, _r, body_len, _raw = _ENVELOPE.unpack(head)
        if magic != _GROUP_MAGIC or kind != _KIND_HELLO or body_len > HANDSHAKE_BYTES_MAX:
            return None, head
        data = head + await reader.readexactly(body_len)
        sender = parse_hello_sender(data)
        if sender is None:
            return None, data
        name, address = sender
        return names.get(name) or names.get(address), data

    return identify


# --------------------------------------------------------------------------- relay

class _Link:
    """One relayed connection: two directions, each a reader → queue → writer pipe."""

    def __init__(self, relay: Relay, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.relay = relay
        self.c_reader, self.c_writer = client
        self.s_writer: asyncio.StreamWriter | None = None
        self.source: str | None = None
        self.tainted = {"up": False, "down": False}  # bytes were dropped in that direction
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    def direction(self, which: str) -> tuple[str | None, str]:
        dest = self.relay.dest
        return (self.source, dest) if which == "up" else (dest, self.source)  # type: ignore[return-value]

    def rule(self, which: str) -> Rule:
        src, dst = self.direction(which)
        if src is None or dst is None:
            return PASS
        return self.relay.net.rule(src, dst)

    def rules_changed(self) -> None:
        for which in ("up", "down"):
            r = self.rule(which)
            if r.mode == "reset" or (self.tainted[which] and r.mode != "drop"):
                self.abort()
                return

    def abort(self) -> None:
        """Cut both sides with a TCP RST (SO_LINGER 0), as a crashed or rejecting host does."""
        for w in (self.c_writer, self.s_writer):
            if w is not None:
                with contextlib.suppress(Exception):
                    sock = w.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                with contextlib.suppress(Exception):
                    w.transport.abort()
        for t in self.tasks:
            t.cancel()
        self.closed.set()

    async def run(self) -> None:
        relay = self.relay
        graceful = False
        try:
            if relay.identify is not None:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                    self.source, first = await relay.identify(self.c_reader)
            else:
                self.source, first = relay.source, b""
            if self.rule("up").mode == "reset" or self.rule("down").mode == "reset":
                self.abort()
                return
            s_reader, self.s_writer = await asyncio.open_connection(*relay.target)
            up = asyncio.create_task(self._pipe("up", self.c_reader, self.s_writer, first))
            down = asyncio.create_task(self._pipe("down", s_reader, self.c_writer, b""))
            self.tasks |= {up, down}
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            # One side finished (EOF passed on as a half-close): the other usually follows at
            # once; give it a bounded moment so the last answer before a close is delivered.
            if pending:
                await asyncio.wait(pending, timeout=LINGER_S)
            for w in (self.s_writer, self.c_writer):
                with contextlib.suppress(Exception):
                    w.close()  # flushes what is buffered, unlike abort()
            graceful = True
        except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.CancelledError):
            graceful = False
        finally:
            if not graceful:
                self.abort()
            for t in self.tasks:
                t.cancel()
            self.closed.set()

    async def _pipe(self, which: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    first: bytes) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS_MAX)

        async def read() -> None:
            data = first
            while True:
                if data:
                    r = self.rule(which)
                    if r.mode == "drop":
                        self.tainted[which] = True
                        self.relay.bytes_dropped += len(data)
                    elif r.mode == "reset":
                        self.abort()
                        return
                    else:
                        await queue.put((loop.time() + r.delay_ms / 1000, data))
                data = await reader.read(READ_CHUNK_BYTES)
                if not data:
                    await queue.put(None)
                    return

        async def write() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                due, data = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                self.relay.bytes_relayed += len(data)
                await writer.drain()

        reader_task = asyncio.create_task(read())
        writer_task = asyncio.create_task(write())
        self.tasks |= {reader_task, writer_task}
        try:
            await writer_task
            await reader_task
        finally:
            reader_task.cancel()
            writer_task.cancel()


class Relay:
    """Listens on (host, port) and relays every connection to ``target`` under the rules of
    ``net`` for links into node ``dest``.

    The source of a connection is ``source`` when given (a relay only one node dials), else what
    ``identify`` reads from its first bytes (None: unknown, always passes).
    """

    def __init__(self, net: Network, dest: str, target: tuple[str, int], *, source: str | None = None,
                 identify: Identify | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.net = net
        self.dest = dest
        self.target = target
        self.source = source
        self.identify = identify
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_accepted = 0
        self.bytes_relayed = 0
        self.bytes_dropped = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self.host}:{self._port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        self.net._register(self)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        link = _Link(self, (reader, writer))
        self._links.add(link)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await link.run()
        finally:
            self._links.discard(link)
            self._tasks.discard(task)

    def rules_changed(self) -> None:
        for link in list(self._links):
            link.rules_changed()

    def links(self) -> list[tuple[str | None, str]]:
        """(source, dest) of the open connections."""
        return [(link.source, self.dest) for link in self._links]

    async def close(self) -> None:
        self.net._unregister(self)
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
