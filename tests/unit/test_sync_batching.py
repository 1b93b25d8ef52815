"""Consistency BEFORE: concurrent `Member.sync_point` callers share sync points.

One member of a simulated group (the sim binding of the GCS interface) answers the calls; the
test decides when the group makes progress (`run_until`), so "a sync point is in flight" is a
state the test holds, not a race it hopes for. No backend: sync points never touch one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from replication.certifier import KeyHash, Seq
from replication.gcs.sim.binding import SimGroup
from replication.member import Member, MemberConfig
from replication.messages import TxnMessage, encode
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.errors import HoldWaitTimeout

LONG_S = 60.0  # a timeout no caller reaches in these tests (a hang fails as 3781, not forever)


async def no_apply(conn: BackendConnection, changes: bytes) -> None:
    raise AssertionError("nothing is applied in these tests")


def sim_member(seed: int, **config: int) -> tuple[SimGroup, Member]:
    """Member 0 of a three-member simulated group, listening to its deliveries."""
    group = SimGroup(seed=seed, members=3)
    gcs = group.members[0]
    member = Member(MemberConfig(uuid=gcs.me.uuid, backend=BackendAddress("127.0.0.1", 1, "unused", ""), **config),
                    gcs, no_apply)
    gcs.add_delivery_listener(member._on_delivery)  # what Member.start does, without a backend
    return group, member


def callers(member: Member, n: int, timeout_s: float = LONG_S) -> list[asyncio.Task[Seq]]:
    return [asyncio.create_task(member.sync_point(timeout_s)) for _ in range(n)]


async def started() -> None:
    """Let the tasks just created run up to their first wait (they join or broadcast there)."""
    await asyncio.sleep(0)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_concurrent_callers_share_one_sync_point_per_batch() -> None:
    async def scenario() -> None:
        group, member = sim_member(seed=1)
        other = group.members[1]
        # A transaction of another member, ordered before anyone asks.
        other.broadcast(encode(TxnMessage(other.me.uuid, 1, Seq(0), (KeyHash(7),), b"", False, ())))
        assert group.run_until(lambda: member.engine.certifier.last_seq == 1, timeout_ms=10_000)
        committed = member.engine.certifier.last_seq

        tasks = callers(member, 20)
        await started()
        # The first caller's sync point is in flight; the 19 others wait in one pending batch.
        assert member.stats_sync_broadcasts == 1
        # Its delivery answers the first caller and broadcasts the batch, in the same step;
        # stop there (checked every simulated ms: the batch's own delivery takes longer).
        assert group.run_until(lambda: member.stats_sync_broadcasts == 2, timeout_ms=10_000, check_every_ms=1)
        first = await tasks[0]
        assert first >= committed
        # The others did not share the first sync point: they were not answered by it.
        assert not any(t.done() for t in tasks[1:])
        assert group.run_until(lambda: not member._syncs, timeout_ms=10_000)
        results = await asyncio.gather(*tasks)
        assert all(seq >= committed for seq in results)
        assert member.stats_sync_broadcasts == 2

    run(scenario)


def test_a_full_batch_is_broadcast_at_once() -> None:
    async def scenario() -> None:
        group, member = sim_member(seed=2, sync_batch_waiters_max=5)
        tasks = callers(member, 21)
        await started()
        # 1 for the first caller, then the 20 others in batches of 5, each sent when it fills.
        assert member.stats_sync_broadcasts == 1 + 4
        assert group.run_until(lambda: not member._syncs, timeout_ms=10_000)
        await asyncio.gather(*tasks)
        assert member.stats_sync_broadcasts == 5  # no batch was left pending

    run(scenario)


def test_callers_that_leave_do_not_break_their_batch() -> None:
    async def scenario() -> None:
        group, member = sim_member(seed=3)
        [first] = callers(member, 1)
        await started()
        [timing_out] = callers(member, 1, timeout_s=0.01)
        cancelled, staying = callers(member, 2)
        await started()
        assert member.stats_sync_broadcasts == 1
        with pytest.raises(HoldWaitTimeout) as info:
            await timing_out
        assert info.value.errno == 3781
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert member.stats_sync_broadcasts == 1  # the batch still waits for the first one
        assert group.run_until(lambda: not member._syncs and member.stats_sync_broadcasts == 2, timeout_ms=10_000)
        assert await staying >= await first

        # A pending batch whose callers all left is never broadcast.
        [first] = callers(member, 1)
        await started()
        [gone] = callers(member, 1)
        await started()
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert group.run_until(lambda: not member._syncs, timeout_ms=10_000)
        await first
        assert member.stats_sync_broadcasts == 3

    run(scenario)


def test_a_lost_sync_point_gates_the_batch_only_while_its_callers_wait() -> None:
    async def scenario() -> None:
        group, member = sim_member(seed=4)
        # The group makes no progress: the first sync point is never delivered while anyone
        # waits for it (as one lost with a view change).
        [lost] = callers(member, 1, timeout_s=0.01)
        await started()
        [later] = callers(member, 1)
        await started()
        with pytest.raises(HoldWaitTimeout):
            await lost
        # Its last caller gave up: the pending batch went out at once.
        assert member.stats_sync_broadcasts == 2
        assert group.run_until(lambda: not member._syncs, timeout_ms=10_000)
        await later  # the late delivery of the lost one answered nobody and broke nothing

    run(scenario)


def test_a_refused_broadcast_fails_its_batch_with_3781() -> None:
    async def scenario() -> None:
        group, member = sim_member(seed=5)
        [first] = callers(member, 1)
        await started()
        batch = callers(member, 3)
        await started()
        group.crash(group.members[0])  # broadcasts are now refused with a GcsError
        first.cancel()  # the in-flight one ends: the pending batch is broadcast, and refused
        for task in batch:
            with pytest.raises(HoldWaitTimeout) as info:
                await task
            assert info.value.errno == 3781
        # A caller alone is refused too, and nothing is left waiting.
        with pytest.raises(HoldWaitTimeout):
            await member.sync_point(LONG_S)
        assert member.stats_sync_broadcasts == 1
        assert not member._syncs and member._sync_inflight is None and member._sync_pending is None

    run(scenario)
