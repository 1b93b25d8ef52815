"""FlowControl (GR's QUOTA mode) from tables: what a period's reports make of the quota."""

from __future__ import annotations

import pytest

from replication.flow_control import QUOTA_MIN, FlowControl, FlowSettings
from replication.messages import MemberStats

LOW = FlowSettings(certifier_threshold=100, applier_threshold=100)


def stats(member: str, *, applier_queue: int = 0, cert_queue: int = 0, applied: int = 0, checked: int = 0,
          local: int = 0) -> MemberStats:
    return MemberStats(member, in_queue=cert_queue, remote_in_applier_queue=applier_queue, remote_applied=applied,
                       checked=checked, local_proposed=local)


def run_periods(flow: FlowControl, periods: list[dict[str, MemberStats]], start: float = 0.0) -> None:
    for i, reports in enumerate(periods):
        flow.end_period(reports, start + i * flow.settings.period_s)


def test_no_member_over_its_thresholds_leaves_commits_unlimited() -> None:
    flow = FlowControl(LOW)
    run_periods(flow, [{"a": stats("a", local=0), "b": stats("b", applier_queue=100, applied=0)},
                       {"a": stats("a", local=500), "b": stats("b", applier_queue=100, applied=500)}])
    assert flow.quota is None
    assert all(flow.admit() for _ in range(10_000))


@pytest.mark.parametrize(
    ("second", "writers", "quota"),
    [
        # b's applier queue is over: its applied count per period is the capacity, minus 10 %.
        ({"a": stats("a", local=300), "b": stats("b", applier_queue=500, applied=100)}, 1, 90),
        # Two members wrote in the period: they share it.
        ({"a": stats("a", local=300), "b": stats("b", applier_queue=500, applied=100, local=10)}, 2, 45),
        # The certifier queue counts certified transactions instead.
        ({"a": stats("a", local=300), "b": stats("b", cert_queue=500, checked=200, applied=1000)}, 1, 180),
        # Both queues over: the smaller capacity.
        ({"a": stats("a", local=300), "b": stats("b", cert_queue=500, applier_queue=500, checked=200, applied=50)},
         1, 45),
        # An applier that makes no progress: a trickle, not a stop.
        ({"a": stats("a", local=300), "b": stats("b", applier_queue=500, applied=0)}, 1, QUOTA_MIN),
    ],
)
def test_a_member_over_a_threshold_gives_the_writers_its_capacity_less_ten_percent(
        second: dict[str, MemberStats], writers: int, quota: int) -> None:
    flow = FlowControl(LOW)
    first = {"a": stats("a"), "b": stats("b", applier_queue=150, cert_queue=150)}
    run_periods(flow, [first, second])
    assert sum(s.writing for s in flow._seen.values()) == writers
    assert flow.quota == quota


def test_the_capacity_is_per_period_whatever_the_report_interval() -> None:
    flow = FlowControl(LOW)
    flow.end_period({"a": stats("a"), "b": stats("b", applier_queue=500)}, 0.0)
    flow.end_period({"a": stats("a", local=5), "b": stats("b", applier_queue=600, applied=200)}, 2.0)  # 2 s apart
    assert flow.quota == 90  # 200 in 2 s is 100 a period


def test_admit_refuses_past_the_quota_until_the_period_ends() -> None:
    flow = FlowControl(LOW)
    run_periods(flow, [{"a": stats("a"), "b": stats("b", applier_queue=500)},
                       {"a": stats("a", local=1), "b": stats("b", applier_queue=600, applied=10)}])
    assert flow.quota == 9
    assert [flow.admit() for _ in range(10)] == [True] * 9 + [False]
    assert flow.held == 1 and flow.holds_total == 1
    flow.end_period({"a": stats("a", local=10), "b": stats("b", applier_queue=700, applied=20)}, 2.0)
    assert flow.used == 0 and flow.held == 0 and flow.admit()


def test_after_the_queue_drains_the_quota_grows_by_half_then_is_lifted_when_it_no_longer_binds() -> None:
    flow = FlowControl(LOW)
    run_periods(flow, [{"a": stats("a"), "b": stats("b", applier_queue=500)},
                       {"a": stats("a", local=1), "b": stats("b", applier_queue=600, applied=100)}])
    assert flow.quota == 90
    for _ in range(90):
        assert flow.admit()
    flow.end_period({"a": stats("a", local=91), "b": stats("b", applier_queue=10, applied=800)}, 2.0)
    assert flow.quota == 135  # +50 %, not all at once
    for _ in range(60):  # under half of the quota: it no longer binds
        assert flow.admit()
    flow.end_period({"a": stats("a", local=151), "b": stats("b", applier_queue=0, applied=820)}, 3.0)
    assert flow.quota is None


def test_a_member_over_since_its_first_report_throttles_from_its_second() -> None:
    flow = FlowControl(LOW)
    flow.end_period({"a": stats("a"), "b": stats("b", applier_queue=5000)}, 0.0)
    assert flow.quota is None  # no capacity measured yet
    flow.end_period({"a": stats("a", local=3), "b": stats("b", applier_queue=5100, applied=30)}, 1.0)
    assert flow.quota == 27


def test_an_unchanged_report_keeps_the_last_capacity() -> None:
    flow = FlowControl(LOW)
    b_over = stats("b", applier_queue=600, applied=100)
    run_periods(flow, [{"a": stats("a"), "b": stats("b", applier_queue=500)},
                       {"a": stats("a", local=1), "b": b_over},
                       {"a": stats("a", local=2), "b": b_over}])  # b sent nothing new
    assert flow.quota == 90


def test_a_member_that_left_the_view_no_longer_throttles() -> None:
    flow = FlowControl(LOW)
    run_periods(flow, [{"a": stats("a"), "b": stats("b", applier_queue=500)},
                       {"a": stats("a", local=1), "b": stats("b", applier_queue=600, applied=100)}])
    assert flow.quota == 90
    flow.end_period({"a": stats("a", local=2)}, 2.0)
    assert "b" not in flow._seen and flow.quota is None  # the quota did not bind (2 of 90)


def test_disabled_mode_never_throttles() -> None:
    flow = FlowControl(FlowSettings(mode="DISABLED", applier_threshold=0, certifier_threshold=0))
    run_periods(flow, [{"a": stats("a"), "b": stats("b", applier_queue=500)},
                       {"a": stats("a", local=1), "b": stats("b", applier_queue=600, applied=0)}])
    assert flow.quota is None and all(flow.admit() for _ in range(1000))


@pytest.mark.parametrize("bad", [dict(mode="ON"), dict(applier_threshold=-1), dict(period_s=0), dict(period_s=61)])
def test_settings_out_of_range_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FlowSettings(**bad)  # type: ignore[arg-type]


# --- Member.flow_admit: the wait of a commit over the quota ---------------------------------------

def _throttled_member(commit_timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    import types

    from replication.member import Member

    flow = FlowControl(LOW)
    flow.quota, flow.used = 1, 1  # the period's quota is used up
    member = types.SimpleNamespace(flow=flow, config=types.SimpleNamespace(commit_timeout_s=commit_timeout_s),
                                   _flow_waiting={})
    member.flow_admit = types.MethodType(Member.flow_admit, member)
    member._flow_wake_all = types.MethodType(Member._flow_wake_all, member)
    return member


def _txn():  # type: ignore[no-untyped-def]
    from replication.member import LocalTxn

    return LocalTxn(txn_id=7)


def test_a_commit_over_the_quota_waits_for_the_next_period() -> None:
    import asyncio

    async def run() -> None:
        member, txn = _throttled_member(), _txn()
        waiter = asyncio.ensure_future(member.flow_admit(txn))
        await asyncio.sleep(0.05)
        assert not waiter.done() and member._flow_waiting == {7: txn}
        member._flow_wake_all()  # a period ended, with the quota still used up: it waits on
        await asyncio.sleep(0.05)
        assert not waiter.done()
        member.flow.end_period(None, 1.0)  # a new period with quota left
        member._flow_wake_all()
        await asyncio.wait_for(waiter, 1)
        assert member._flow_waiting == {} and txn.flow_wake is None and member.flow.used == 1

    asyncio.run(run())


def test_a_commit_doomed_while_it_waits_goes_on_at_once() -> None:
    """The applier's lock watch dooms it (the session's on_doom wakes it): it must not hold its
    locks until the quota frees."""
    import asyncio

    async def run() -> None:
        member, txn = _throttled_member(), _txn()
        waiter = asyncio.ensure_future(member.flow_admit(txn))
        await asyncio.sleep(0.05)
        txn.doomed_by = 42
        txn.flow_wake.set_result(None)  # what MemberSession._on_doom does
        await asyncio.wait_for(waiter, 1)
        assert member.flow.used == 1  # it took no quota: it will be rolled back

    asyncio.run(run())


def test_a_commit_held_past_commit_timeout_fails_with_3100() -> None:
    import asyncio

    from replication.protocol.errors import HookError

    async def run() -> None:
        member, txn = _throttled_member(commit_timeout_s=0.2), _txn()
        with pytest.raises(HookError) as caught:
            await asyncio.wait_for(member.flow_admit(txn), 5)
        assert caught.value.errno == 3100 and member._flow_waiting == {}

    asyncio.run(run())
