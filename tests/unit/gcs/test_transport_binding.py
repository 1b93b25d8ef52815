"""The asyncio binding (XcomGroup): the real core over loopback TCP, several members in one loop.

What is checked here is the driver's part of the contract: views and deliveries reach the
listeners in the core's order and never re-entrantly, broadcast refusals and bounded waits,
peers that send garbage, superseded incarnations, and a core failure sending the member to
ERROR. Total order under faults is the simulator's job (tests/sim).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from grproxy.mysqld import free_port
from replication.gcs.interface import (
    Delivery,
    GcsError,
    GcsErrorCode,
    GcsEvent,
    GroupCommunication,
    MemberId,
    ReachabilityChange,
    View,
)
from replication.gcs.xcom.binding import BindingConfig, XcomGroup, new_incarnation
from replication.gcs.xcom.core import Broadcast, Core, CoreConfig, Event, Ready
from replication.gcs.xcom.frames import FrameDecoder, Hello, MessageEncoder, NodeId, Reject, Welcome, encode_control
from replication.gcs.xcom.transport import TransportConfig

GROUP = "g-binding"
FAST = CoreConfig(heartbeat_interval_ms=100, suspicion_timeout_ms=600, member_expel_timeout_ms=300, join_retry_interval_ms=200)




def run(fn: Callable[[], Awaitable[None]], timeout_s: float = 60) -> None:
    async def main() -> None:
        async with asyncio.timeout(timeout_s):
            await fn()

    asyncio.run(main())


class Member:
    """An XcomGroup plus what its listeners saw."""

    def __init__(
        self, name: str, incarnation: int = 1, core: CoreConfig = FAST, address: str | None = None, **kw: object
    ) -> None:
        self.id = MemberId(name, address or f"127.0.0.1:{free_port()}", incarnation)
        self.g = XcomGroup(self.id, core, TransportConfig(group_name=GROUP), BindingConfig(), **kw)  # type: ignore[arg-type]
        self.views: list[View] = []
        self.deliveries: list[Delivery] = []
        self.events: list[ReachabilityChange | GcsEvent] = []
        self.g.add_view_listener(self.views.append)
        self.g.add_delivery_listener(self.deliveries.append)
        self.g.add_event_listener(self.events.append)

    def payloads(self) -> list[bytes]:
        return [d.payload for d in self.deliveries]

    def member_names(self) -> list[str]:
        return sorted(m.uuid for m in self.views[-1].members) if self.views else []


async def until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.01)


@asynccontextmanager
async def group_of(n: int, **kw: object) -> AsyncIterator[list[Member]]:
    members = [Member(f"m{i}", **kw) for i in range(n)]
    for m in members:
        await m.g.start()
    try:
        members[0].g.bootstrap((members[0].id,))
        seed = (MemberId("seed", members[0].id.address, 0),)  # address only, as a DBA gives it
        for m in members[1:]:
            m.g.join(seed)
        names = sorted(m.id.uuid for m in members)
        await until(lambda: all(m.member_names() == names for m in members))
        yield members
    finally:
        for m in members:
            await m.g.close()


def test_binding_is_a_group_communication() -> None:
    async def body() -> None:
        m = Member("solo")
        assert isinstance(m.g, GroupCommunication)
        await m.g.close()

    run(body)


def test_one_member_group_delivers_inside_broadcast() -> None:
    async def body() -> None:
        m = Member("solo")
        await m.g.start()
        try:
            with pytest.raises(GcsError) as info:
                m.g.broadcast(b"before bootstrap")
            assert info.value.code is GcsErrorCode.NOT_IN_VIEW
            m.g.bootstrap((m.id,))
            d = await m.g.broadcast_and_wait(b"alone", timeout_ms=5000)
            assert d.payload == b"alone" and d.origin == m.id
            assert m.payloads() == [b"alone"]
        finally:
            await m.g.close()

    run(body)


def test_three_members_same_order_views_before_their_deliveries() -> None:
    async def body() -> None:
        async with group_of(3) as ms:
            seqs = []
            for i in range(30):
                for m in ms:
                    seqs.append(m.g.broadcast(f"{m.id.uuid}-{i}".encode()))
            await until(lambda: all(len(m.deliveries) == 90 for m in ms))
            orders = [[(d.origin, d.origin_seq) for d in m.deliveries] for m in ms]
            assert orders[0] == orders[1] == orders[2]
            assert [d.position for d in ms[0].deliveries] == [d.position for d in ms[1].deliveries]
            # each origin's messages in its own order, seqs as broadcast() returned them
            for m in ms:
                mine = [d.origin_seq for d in ms[0].deliveries if d.origin == m.id]
                assert mine == sorted(mine) and len(mine) == 30
            last = await ms[1].g.broadcast_and_wait(b"last")
            assert last.origin == ms[1].id and last.payload == b"last"
            # the view of three was installed before any delivery at or past its start slot
            v3 = next(v for v in ms[0].views if len(v.members) == 3)
            assert all(d.position.slot >= v3.start_slot for d in ms[0].deliveries)
            s = ms[0].g.statistics()
            assert s.counters.deliveries >= 90 and s.view_id == v3.view_id

    run(body)


def test_listeners_are_not_reentered_by_a_broadcasting_listener() -> None:
    """A listener that broadcasts steps the core from inside the dispatcher: what that step
    delivers must wait until the current listener call returns, and keep the core's order."""

    async def body() -> None:
        async with group_of(3) as ms:
            a = ms[0]
            depth = 0
            max_depth = 0
            seen: list[bytes] = []

            def echo(d: Delivery) -> None:
                nonlocal depth, max_depth
                depth += 1
                max_depth = max(max_depth, depth)
                seen.append(d.payload)
                if d.payload.startswith(b"ping"):
                    a.g.broadcast(b"pong" + d.payload[4:])
                depth -= 1

            a.g.add_delivery_listener(echo)
            for i in range(20):
                ms[1].g.broadcast(b"ping%d" % i)
            await until(lambda: all(len(m.deliveries) == 40 for m in ms))
            assert max_depth == 1
            assert seen == a.payloads()
            assert a.payloads() == ms[1].payloads() == ms[2].payloads()
            for i in range(20):
                assert a.payloads().index(b"ping%d" % i) < a.payloads().index(b"pong%d" % i)

    run(body)


def test_broadcast_wait_is_bounded_without_a_majority() -> None:
    async def body() -> None:
        async with group_of(3) as ms:
            await ms[1].g.close()
            await ms[2].g.close()
            with pytest.raises(TimeoutError):
                await ms[0].g.broadcast_and_wait(b"nobody to agree", timeout_ms=300)
            assert ms[0].g.statistics().queued_broadcasts >= 1

    run(body)


def test_queue_full_is_refused_synchronously() -> None:
    async def body() -> None:
        core = CoreConfig(heartbeat_interval_ms=100, suspicion_timeout_ms=60_000, broadcast_queue_max=5)
        async with group_of(3, core=core) as ms:
            await ms[1].g.close()
            await ms[2].g.close()
            for i in range(5):
                ms[0].g.broadcast(b"%d" % i)
            with pytest.raises(GcsError) as info:
                ms[0].g.broadcast(b"one too many")
            assert info.value.code is GcsErrorCode.QUEUE_FULL

    run(body)


async def raw_peer(
    target: MemberId, me: NodeId, expect: type = Welcome
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-made peer connection: HELLO as ``me``; asserts the answer is an ``expect``."""
    host, port = target.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(encode_control(Hello(GROUP, 1, 1, me, NodeId(target.uuid, target.address, 0))))
    decoder = FrameDecoder()
    frames: list[object] = []
    while not frames:
        frames = decoder.feed(await reader.read(4096))
    assert isinstance(frames[0], expect), frames
    return reader, writer


def test_undecodable_message_is_dropped_counted_and_reported() -> None:
    async def body() -> None:
        async with group_of(2) as ms:
            a = ms[0]
            rogue = NodeId("rogue", f"127.0.0.1:{free_port()}", 7)
            _, writer = await raw_peer(a.id, rogue)
            for frame in MessageEncoder().encode(b"\x01\xfe not a core message").frames:
                writer.write(b"".join(bytes(p) for p in frame))
            await until(lambda: a.g.binding_statistics().messages_undecodable == 1)
            assert a.g.binding_statistics().per_peer_invalid == {str(rogue): 1}
            writer.close()
            # still a working member
            d = await a.g.broadcast_and_wait(b"fine")
            assert d.payload == b"fine"
            await until(lambda: ms[1].payloads() == [b"fine"])

    run(body)


def test_restarted_member_rejoins_and_old_incarnation_is_refused() -> None:
    async def body() -> None:
        async with group_of(3) as ms:
            a, b, c = ms
            await c.g.close()  # "crash"
            await until(lambda: a.member_names() == ["m0", "m1"] and b.member_names() == ["m0", "m1"])
            c2 = Member("m2", incarnation=2, address=c.id.address)
            await c2.g.start()
            try:
                c2.g.join((MemberId("seed", a.id.address, 0),))
                await until(lambda: all(m.member_names() == ["m0", "m1", "m2"] for m in (a, b, c2)))
                assert any(m.incarnation == 2 and m.uuid == "m2" for m in a.views[-1].members)
                # a straggler of the dead incarnation is refused at the handshake, and would be
                # dropped frame by frame if it were still connected
                straggler = NodeId("m2", c.id.address, 1)
                _, writer = await raw_peer(a.id, straggler, expect=Reject)
                writer.close()
                await until(lambda: a.g.transport_statistics().handshakes_rejected >= 1)
                assert not a.g._admit(straggler)
                assert a.g._admit(NodeId("m2", c.id.address, 2))  # the live incarnation
                assert a.g._admit(NodeId("m9", "127.0.0.1:9", 1))  # a newcomer may be joining
                d = await c2.g.broadcast_and_wait(b"back")
                assert d.origin == c2.id
                await until(lambda: b"back" in a.payloads())
            finally:
                await c2.g.close()

    run(body)


class ExplodingCore(Core):
    def step(self, event: Event) -> Ready:
        if isinstance(event, Broadcast) and event.payload == b"boom":
            raise KeyError("a bug in the core")
        return super().step(event)


def test_core_failure_sends_member_to_error() -> None:
    async def body() -> None:
        m = Member("solo", core_factory=ExplodingCore)
        await m.g.start()
        try:
            m.g.bootstrap((m.id,))
            await m.g.broadcast_and_wait(b"ok")
            with pytest.raises(GcsError) as info:
                m.g.broadcast(b"boom")
            assert info.value.code is GcsErrorCode.INTERNAL
            with pytest.raises(GcsError):
                m.g.broadcast(b"after")
            assert any(isinstance(e, GcsEvent) and e.code is GcsErrorCode.INTERNAL for e in m.events)
        finally:
            await m.g.close()

    run(body)


def test_new_incarnation_grows() -> None:
    assert new_incarnation(1_800_000_000.0) < new_incarnation(1_800_000_000.2)
    assert 0 < new_incarnation() < 2**32
    with pytest.raises(ValueError):
        new_incarnation(1_000_000_000.0)  # before the epoch


def test_force_members_refused_with_majority_accepted_without() -> None:
    """The binding's part of force_members: a refusal is raised at once; without a majority the
    request is taken and its outcome (the forced view, or FORCE_FAILED) reaches the listeners.
    Whether the forced configuration installs is the core's business (tests/sim)."""

    async def body() -> None:
        core = CoreConfig(
            heartbeat_interval_ms=100, suspicion_timeout_ms=600, member_expel_timeout_ms=60_000, force_timeout_ms=2_000
        )
        async with group_of(3, core=core) as ms:
            a = ms[0]
            with pytest.raises(GcsError) as info:
                a.g.force_members((a.id,))
            assert info.value.code is GcsErrorCode.FORCE_REFUSED
            await ms[1].g.close()
            await ms[2].g.close()
            await until(
                lambda: sum(isinstance(e, ReachabilityChange) and e.member != a.id for e in a.events) >= 2
            )
            a.g.force_members((a.id,))  # no majority: accepted
            await until(
                lambda: a.member_names() == ["m0"]
                or any(isinstance(e, GcsEvent) and e.code is GcsErrorCode.FORCE_FAILED for e in a.events)
            )

    run(body)


def test_a_failing_listener_is_counted_and_the_others_still_called() -> None:
    async def body() -> None:
        m = Member("solo")
        await m.g.start()
        try:
            def broken(d: Delivery) -> None:
                raise RuntimeError("upper layer bug")

            m.g.add_delivery_listener(broken)
            after: list[bytes] = []
            m.g.add_delivery_listener(lambda d: after.append(d.payload))
            m.g.bootstrap((m.id,))
            await m.g.broadcast_and_wait(b"x")
            await m.g.broadcast_and_wait(b"y")
            assert after == [b"x", b"y"]
            assert m.g.binding_statistics().listener_failures == 2
        finally:
            await m.g.close()

    run(body)
