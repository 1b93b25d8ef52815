"""The sim binding implements the GCS interface; upper layers can run on it."""

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
)
from replication.gcs.sim.binding import SimGroup
from replication.gcs.xcom.core import CoreConfig

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
