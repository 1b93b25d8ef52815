"""The sim binding implements the GCS interface; upper layers can run on it.

Also the scenarios of DESIGN §3 scripted through it, each under the checkers: a restarted
member told to bootstrap (refused: GROUP_EXISTS), a bootstrap that cannot see the group (the
checkers report two groups), a whole-group restart, force_members after a majority is lost,
and a one-way link failure.
"""

from __future__ import annotations

import pytest

from replication.gcs.interface import (
    Delivery,
    GcsError,
    GcsErrorCode,
    GcsEvent,
    GroupCommunication,
    MemberState,
    ReachabilityChange,
    View,
    ViewId,
)
from replication.gcs.sim.binding import SimGcs, SimGroup
from replication.gcs.sim.checkers import Violation
from replication.gcs.xcom.core import CoreConfig, Phase

FAST = CoreConfig(heartbeat_interval_ms=200, suspicion_timeout_ms=1000, member_expel_timeout_ms=500)


def test_sim_gcs_is_a_group_communication() -> None:
    group = SimGroup(seed=1, members=3)
    assert all(isinstance(m, GroupCommunication) for m in group.members)
    assert all(m.current_view() is not None and len(m.current_view().members) == 3 for m in group.members)


def test_total_order_through_listeners() -> None:
    group = SimGroup(seed=2, members=3)
    logs: dict[int, list[Delivery]] = {i: [] for i in range(3)}
    for i, gcs in enumerate(group.members):
        gcs.add_delivery_listener(logs[i].append)
    seqs = [gcs.broadcast(f"m{i}".encode()) for i, gcs in enumerate(group.members)]
    assert seqs == [1, 1, 1]
    group.run_for(500)
    orders = [[(d.origin, d.payload) for d in logs[i]] for i in range(3)]
    assert orders[0] == orders[1] == orders[2] and len(orders[0]) == 3


def test_views_events_and_refusals() -> None:
    group = SimGroup(seed=3, members=3, config=FAST)
    a, b, c = group.members
    views: list[View] = []
    events: list[ReachabilityChange | GcsEvent] = []
    a.add_view_listener(views.append)
    a.add_event_listener(events.append)
    with pytest.raises(GcsError) as refused:
        a.force_members((a.me, b.me))
    assert refused.value.code is GcsErrorCode.FORCE_REFUSED
    dead = c.me
    group.crash(c)
    with pytest.raises(GcsError):
        c.broadcast(b"x")
    assert group.run_until(lambda: views and dead not in views[-1].members, timeout_ms=10_000)
    assert any(isinstance(e, ReachabilityChange) and e.member == dead and e.state is MemberState.UNREACHABLE for e in events)
    assert a.statistics().view_id == views[-1].view_id
    # c comes back as a new incarnation and joins.
    group.restart(c)
    def rejoined() -> bool:
        view = a.current_view()
        return c.current_view() is not None and view is not None and c.me in view.members

    assert group.run_until(rejoined, timeout_ms=10_000)
    assert c.me.incarnation == 2 and c.current_view() == a.current_view()


def _events(gcs: SimGcs) -> list[ReachabilityChange | GcsEvent]:
    seen: list[ReachabilityChange | GcsEvent] = []
    gcs.add_event_listener(seen.append)
    return seen


def _one_view(group: SimGroup) -> bool:
    views = [m.current_view() for m in group.members]
    return all(v is not None for v in views) and len({v.view_id for v in views if v}) == 1 and all(
        m.me in views[0].members for m in group.members  # type: ignore[union-attr]
    )


def test_a_restarted_member_told_to_bootstrap_is_refused_then_joins() -> None:
    """Two groups under one name must never run: the probe finds the live group."""
    group = SimGroup(seed=4, members=3, config=FAST)
    a, b, c = group.members
    seen = _events(c)
    group.crash(c)
    group.run_for(3_000)
    group.restart_bootstrapping(c)
    assert group.run_until(lambda: any(isinstance(e, GcsEvent) for e in seen), timeout_ms=10_000)
    refusal = next(e for e in seen if isinstance(e, GcsEvent))
    assert refusal.code is GcsErrorCode.GROUP_EXISTS and "join it instead" in refusal.detail
    assert c.current_view() is None and c.node.core is not None and c.node.core.phase is Phase.OFFLINE
    group.restart(c)
    assert group.run_until(lambda: _one_view(group), timeout_ms=20_000)
    group.checker.finish(group.world.live_nodes())


def test_a_bootstrap_that_cannot_see_the_group_makes_a_second_group_and_the_checkers_fail() -> None:
    group = SimGroup(seed=5, members=3, config=FAST)
    a, b, c = group.members
    group.crash(c)
    group.partition([a, b], [c])
    group.restart_bootstrapping(c)
    with pytest.raises(Violation, match="one-group"):
        group.run_for(10_000)


def test_whole_group_restart_bootstraps_once_and_the_others_join() -> None:
    group = SimGroup(seed=6, members=3, config=FAST)
    a, b, c = group.members
    a.broadcast(b"before")
    group.run_for(1_000)
    for gcs in group.members:
        group.crash(gcs)
    group.run_for(1_000)
    group.restart_bootstrapping(a)  # probes b and c: nobody answers, a starts the group again
    assert group.run_until(lambda: a.current_view() is not None, timeout_ms=10_000)
    assert a.current_view().view_id == ViewId(0, 1)  # type: ignore[union-attr]
    group.restart(b)
    group.restart(c)
    assert group.run_until(lambda: _one_view(group), timeout_ms=20_000)
    got: list[bytes] = []
    c.add_delivery_listener(lambda d: got.append(d.payload))
    b.broadcast(b"after")
    assert group.run_until(lambda: got == [b"after"], timeout_ms=5_000)
    group.checker.finish(group.world.live_nodes())


def test_force_members_after_a_majority_is_lost_and_the_others_rejoin() -> None:
    group = SimGroup(seed=7, members=3, config=FAST)
    a, b, c = group.members
    group.crash(b)
    group.crash(c)
    got: list[bytes] = []
    a.add_delivery_listener(lambda d: got.append(d.payload))
    a.broadcast(b"stuck")
    group.run_for(3_000)
    assert got == []  # no majority: nothing is decided
    a.force_members((a.me,))
    assert group.run_until(lambda: got == [b"stuck"], timeout_ms=5_000)
    assert a.current_view() is not None and a.current_view().members == (a.me,)  # type: ignore[union-attr]
    assert a.current_view().view_id.epoch == 1  # type: ignore[union-attr]
    group.restart(b)
    group.restart(c)
    assert group.run_until(lambda: _one_view(group), timeout_ms=20_000)
    group.checker.finish(group.world.live_nodes())


def test_a_one_way_link_failure_expels_the_member_nobody_hears() -> None:
    group = SimGroup(seed=8, members=3, config=FAST)
    a, b, c = group.members
    group.cut(c, a)
    group.cut(c, b)  # c hears everyone, nobody hears c
    dead = c.me
    assert group.run_until(lambda: a.current_view() is not None and dead not in a.current_view().members, timeout_ms=10_000)  # type: ignore[union-attr]
    group.heal()
    assert group.run_until(lambda: c.node.core is not None and c.node.core.phase is Phase.OFFLINE, timeout_ms=10_000)
    group.restart(c)
    assert group.run_until(lambda: _one_view(group), timeout_ms=20_000)
    group.checker.finish(group.world.live_nodes())
