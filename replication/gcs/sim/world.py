"""The deterministic world the simulator drives the xcom core in: clock, network, nodes.

One `random.Random(seed)` (owned by the caller) decides everything: delays, loss, duplication,
partitions, crashes, restarts, clock jumps and the workload. Nothing here reads the real
clock, and nothing iterates a hash-ordered set, so a seed replays exactly, in any process.

The network is a message-passing model, not TCP: it may drop, duplicate, delay and reorder
any message; a partition drops what crosses it at send and at delivery time, and so does a
one-way cut (`World.blocked`: A's messages do not reach B, B's still reach A). Messages are
routed by address, as the real transport does: a message for an old incarnation reaches
whatever incarnation now listens there.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

from replication.gcs.interface import MemberId
from replication.gcs.xcom.core import (
    Bootstrap,
    Broadcast,
    Core,
    CoreConfig,
    Event,
    Join,
    Leave,
    Phase,
    Ready,
    Received,
    Tick,
)
from replication.gcs.xcom.messages import Message, decode_message, encode_message

__all__ = ["NetConfig", "SimNode", "World", "Observer"]


@dataclass(slots=True)
class NetConfig:
    """Network fault rates; the simulator changes them between phases."""

    loss: float = 0.0
    duplicate: float = 0.0
    delay_ms_min: int = 1
    delay_ms_max: int = 10
    # With this probability a message takes up to slow_ms_max (reordering, long queues).
    slow: float = 0.0
    slow_ms_max: int = 500
    # Pass every n-th message through encode/decode (0: never) to exercise the codec.
    codec_every: int = 0


class Observer:
    """Callbacks the world makes; the checkers implement them. Default: ignore."""

    def on_ready(self, node: SimNode, ready: Ready, event: Event | None = None) -> None:
        """`node` stepped `event` (None when unknown) and returned `ready`."""

    def on_broadcast(self, member: MemberId, seq: int, payload: bytes) -> None:
        pass

    def on_stop(self, node: SimNode) -> None:
        """`node`'s current incarnation stops for good (crash, or replaced by a restart)."""


class SimNode:
    __slots__ = ("index", "uuid", "address", "incarnation", "core", "alive", "offset_ms", "tick_at", "member",
                 "restart_pending", "leaving")

    def __init__(self, index: int) -> None:
        self.index = index
        self.uuid = f"n{index + 1}"
        self.address = f"10.0.0.{index + 1}:33061"
        self.incarnation = 0
        self.core: Core | None = None
        self.alive = False
        self.offset_ms = 0  # local clock = world time + offset
        self.tick_at = -1
        self.member: MemberId | None = None
        self.restart_pending = False
        self.leaving = False  # asked to leave: about to stop counting for majorities

    def __repr__(self) -> str:
        return f"SimNode({self.member})"


_DELIVER = 0
_TICK = 1
_CALL = 2


class World:
    """Scheduler + network + nodes. `run_until(t)` processes events in (time, seq) order."""

    def __init__(
        self,
        rng: random.Random,
        core_config: CoreConfig,
        members: int,
        net: NetConfig,
        observer: Observer | None = None,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.rng = rng
        self.core_config = core_config
        self.net = net
        self.observer = observer or Observer()
        self.trace = trace
        self.now_ms = 0
        self._heap: list[tuple[int, int, int, object, object]] = []
        self._seq = 0
        self.nodes = [SimNode(i) for i in range(members)]
        self._by_address = {n.address: n for n in self.nodes}
        self.groups: list[int] | None = None  # partition: group id per node index
        # One-way cuts: (from index, to index) pairs whose messages are lost. Bounded by the
        # number of ordered pairs of nodes.
        self.blocked: set[tuple[int, int]] = set()
        self._codec_count = 0
        self.messages_delivered = 0
        # Per-node listeners of every Ready (the GCS binding's dispatch), by node index.
        self.listeners: dict[int, Callable[[Ready], None]] = {}

    # ------------------------------------------------------------------ scheduling

    def at(self, t_ms: int, fn: Callable[..., None], *args: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t_ms, self._seq, _CALL, fn, args))

    def run_until(self, t_end_ms: int, stop: Callable[[], bool] | None = None, check_every_ms: int = 250) -> bool:
        """Run events up to t_end_ms. With `stop`, return True as soon as it holds (checked
        every check_every_ms of simulated time)."""
        heap = self._heap
        pop = heapq.heappop
        next_check = self.now_ms + check_every_ms if stop is not None else 1 << 62
        while heap and heap[0][0] <= t_end_ms:
            t, _seq, kind, a, b = pop(heap)
            if t >= next_check:
                self.now_ms = next_check
                if stop is not None and stop():
                    return True
                next_check = t + check_every_ms
            self.now_ms = t
            if kind == _DELIVER:
                self._deliver(a, b)  # type: ignore[arg-type]
            elif kind == _TICK:
                node: SimNode = a  # type: ignore[assignment]
                if node.alive and node.tick_at == t and node.incarnation == b:
                    node.tick_at = -1
                    self.step(node, Tick(t + node.offset_ms))
            else:
                a(*b)  # type: ignore[operator]
        self.now_ms = max(self.now_ms, t_end_ms)
        return stop() if stop is not None else False

    # ------------------------------------------------------------------ nodes

    def start(self, node: SimNode, first: Event) -> None:
        """Start a new incarnation of `node` and feed it `first` (Bootstrap or Join)."""
        if node.core is not None:
            self.observer.on_stop(node)
        node.incarnation += 1
        node.member = MemberId(node.uuid, node.address, node.incarnation)
        node.core = Core(node.member, self.core_config)
        node.alive = True
        node.restart_pending = False
        node.leaving = False
        node.tick_at = -1
        self.step(node, Tick(self.now_ms + node.offset_ms))
        self.step(node, first)

    def bootstrap(self, members: tuple[SimNode, ...]) -> None:
        """`members` start a group together (no probe: nobody else runs one)."""
        ids = tuple(MemberId(n.uuid, n.address, n.incarnation + 1) for n in members)
        for n in members:
            self.start(n, Bootstrap(ids))

    def bootstrap_alone(self, node: SimNode, probe: bool = True) -> None:
        """A new incarnation of `node` bootstraps a group of itself. With `probe` it asks the
        other nodes first and is refused (GROUP_EXISTS, then OFFLINE) if a group answers."""
        me = MemberId(node.uuid, node.address, node.incarnation + 1)
        self.start(node, Bootstrap((me,), self.seeds_for(node) if probe else ()))

    def seeds_for(self, node: SimNode) -> tuple[MemberId, ...]:
        """The other nodes' addresses (the configured group seeds; uuid/incarnation unknown)."""
        return tuple(MemberId(n.uuid, n.address, 0) for n in self.nodes if n is not node)

    def join(self, node: SimNode) -> None:
        seeds = tuple(n.member for n in self.nodes if n is not node and n.member is not None)
        self.start(node, Join(seeds))

    def crash(self, node: SimNode) -> None:
        if not node.alive:
            return
        node.alive = False
        node.tick_at = -1
        if self.trace:
            self.trace(f"{self.now_ms:>7} crash {node.member}")
        self.observer.on_stop(node)
        node.core = None

    def leave(self, node: SimNode) -> None:
        if node.alive and node.core is not None:
            node.leaving = True
            self.step(node, Leave())

    def broadcast(self, node: SimNode, payload: bytes) -> bool:
        if not node.alive or node.core is None:
            return False
        ready = self.step(node, Broadcast(payload))
        return bool(ready.broadcast_seqs)

    def step(self, node: SimNode, event: Event) -> Ready:
        core = node.core
        assert core is not None
        ready = core.step(event)
        if ready.broadcast_seqs and isinstance(event, Broadcast):
            self.observer.on_broadcast(core.me, ready.broadcast_seqs[0], event.payload)
        self.observer.on_ready(node, ready, event)
        listener = self.listeners.get(node.index)
        if listener is not None:
            listener(ready)
        if ready.sends:
            self._send(node, ready.sends)
        nt = ready.next_tick_ms
        if nt is not None and node.alive:
            t = nt - node.offset_ms
            if t <= self.now_ms:
                t = self.now_ms + 1
            if node.tick_at < self.now_ms or t < node.tick_at:
                node.tick_at = t
                self._seq += 1
                heapq.heappush(self._heap, (t, self._seq, _TICK, node, node.incarnation))
        return ready

    # ------------------------------------------------------------------ network

    def connected(self, a: SimNode, b: SimNode) -> bool:
        """Can `a`'s messages reach `b` now?"""
        groups = self.groups
        if groups is not None and groups[a.index] != groups[b.index]:
            return False
        return not self.blocked or (a.index, b.index) not in self.blocked

    def _send(self, src: SimNode, sends: list[tuple[MemberId, Message]]) -> None:
        net = self.net
        rng = self.rng
        groups = self.groups
        blocked = self.blocked
        now = self.now_ms
        sender = src.member
        for to, msg in sends:
            dst = self._by_address.get(to.address)
            if dst is None:
                continue
            if groups is not None and groups[src.index] != groups[dst.index]:
                continue
            if blocked and (src.index, dst.index) in blocked:
                continue
            if net.loss and rng.random() < net.loss:
                continue
            if net.codec_every:
                self._codec_count += 1
                if self._codec_count % net.codec_every == 0:
                    msg = decode_message(encode_message(msg))
            copies = 2 if net.duplicate and rng.random() < net.duplicate else 1
            for _ in range(copies):
                if net.slow and rng.random() < net.slow:
                    delay = rng.randint(net.delay_ms_min, net.slow_ms_max)
                else:
                    delay = rng.randint(net.delay_ms_min, net.delay_ms_max)
                self._seq += 1
                heapq.heappush(self._heap, (now + delay, self._seq, _DELIVER, dst, (sender, msg, src)))

    def _deliver(self, dst: SimNode, item: tuple[MemberId, Message, SimNode]) -> None:
        sender, msg, src = item
        if not dst.alive or dst.core is None:
            return
        groups = self.groups
        if groups is not None and groups[src.index] != groups[dst.index]:
            return
        if self.blocked and (src.index, dst.index) in self.blocked:
            return
        self.messages_delivered += 1
        self.step(dst, Received(sender, msg))

    def in_flight(self) -> list[tuple[MemberId, Message]]:
        """(sender, message) on the wire now (for the fault scheduler's caution, not checking)."""
        return [entry[4][:2] for entry in self._heap if entry[2] == _DELIVER]  # type: ignore[index,misc]

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.alive and n.core is not None]

    def phase_of(self, node: SimNode) -> Phase | None:
        return node.core.phase if node.alive and node.core is not None else None
