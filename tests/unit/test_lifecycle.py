"""The member lifecycle table (replication/lifecycle.py) and the reboot decisions
(grproxy/reboot.py's choose_bootstrap and rejoin_needed), from tables."""

from __future__ import annotations

import pytest

from grproxy.reboot import MemberStatus, RebootError, choose_bootstrap, rejoin_needed
from replication.gcs.interface import MemberState
from replication.lifecycle import TRANSITIONS, ExitStateAction, IllegalTransition, LifecycleEvent, transition

O, R, N, E = MemberState.OFFLINE, MemberState.RECOVERING, MemberState.ONLINE, MemberState.ERROR
Ev = LifecycleEvent


@pytest.mark.parametrize("state,event,after", [
    (O, Ev.BOOTSTRAP, N), (O, Ev.JOIN, R), (R, Ev.RECOVERED, N), (N, Ev.FAIL, E), (R, Ev.FAIL, E),
    (E, Ev.REJOIN, R), (O, Ev.REBOOT, N), (N, Ev.STOP, O), (E, Ev.STOP, O), (O, Ev.REJOIN, R),
])
def test_allowed_moves(state: MemberState, event: LifecycleEvent, after: MemberState) -> None:
    assert transition(state, event) is after


@pytest.mark.parametrize("state,event", [
    (E, Ev.RECOVERED),  # a member that failed never announces ONLINE
    (O, Ev.RECOVERED), (N, Ev.JOIN), (N, Ev.BOOTSTRAP), (R, Ev.BOOTSTRAP), (N, Ev.REBOOT), (R, Ev.REBOOT), (E, Ev.REBOOT),
    (N, Ev.REJOIN), (E, Ev.BOOTSTRAP), (E, Ev.JOIN),
])
def test_illegal_moves_name_event_and_state(state: MemberState, event: LifecycleEvent) -> None:
    with pytest.raises(IllegalTransition) as info:
        transition(state, event)
    assert event.value in str(info.value) and state.value in str(info.value)


def test_online_is_reached_only_by_bootstrap_reboot_or_recovery() -> None:
    into_online = {event for (_, event), after in TRANSITIONS.items() if after is N}
    assert into_online == {Ev.BOOTSTRAP, Ev.REBOOT, Ev.RECOVERED}


def test_exit_state_action_parses_gr_names() -> None:
    assert ExitStateAction.parse("read_only") is ExitStateAction.READ_ONLY
    assert ExitStateAction.parse("ABORT_SERVER") is ExitStateAction.ABORT_SERVER
    with pytest.raises(ValueError, match="OFFLINE_MODE"):
        ExitStateAction.parse("shutdown")


G = "3e11fa47-71ca-11e1-9e33-c80aa9429562"


def _m(name: str, gtids: str, state: str = "ERROR", group: str | None = G, in_group: bool = False) -> MemberStatus:
    return MemberStatus(f"127.0.0.1:{abs(hash(name)) % 60000 + 1000}", name, state, group,
                        f"{group}:{gtids}" if gtids else "", None, in_group)


@pytest.mark.parametrize("members,chosen", [
    ([_m("a", "1-10"), _m("b", "1-12"), _m("c", "1-11")], "b"),
    ([_m("a", "1-10:12"), _m("b", "1-12")], "b"),  # out-of-order applied seqs
    ([_m("a", "1-12"), _m("b", "1-12")], "a"),  # equal: the lowest id
    ([_m("a", ""), _m("b", "1-3")], "b"),  # an empty member adds nothing
    ([_m("a", "", group=None), _m("b", "", group=None)], "a"),  # a group that never wrote
])
def test_reboot_starts_from_the_most_advanced_member(members: list[MemberStatus], chosen: str) -> None:
    assert choose_bootstrap(members).member_id == chosen


@pytest.mark.parametrize("members,why", [
    ([_m("a", "1-10", state="ONLINE", in_group=True), _m("b", "1-12")], "still running"),
    ([_m("a", "1-10"), _m("b", "1-12", group="0bd3a5c4-71ca-11e1-9e33-c80aa9429562")], "different groups"),
    ([_m("a", "1-10:12"), _m("b", "1-11")], "diverged"),  # neither holds the other's
    ([], "no member"),
])
def test_reboot_refuses(members: list[MemberStatus], why: str) -> None:
    with pytest.raises(RebootError, match=why):
        choose_bootstrap(members)


def test_a_member_still_asking_its_seeds_does_not_block_the_reboot() -> None:
    assert choose_bootstrap([_m("a", "1-5", state="RECOVERING"), _m("b", "1-4")]).member_id == "a"


@pytest.mark.parametrize("state,asked", [("ERROR", True), ("OFFLINE", True), ("RECOVERING", False), ("ONLINE", False)])
def test_reboot_asks_only_members_that_gave_up_to_rejoin(state: str, asked: bool) -> None:
    """A RECOVERING member joins the rebooted group by itself; telling it to start over could
    drop an incarnation the group had just admitted (chaos seed 7003 run 19)."""
    assert rejoin_needed(_m("a", "1-3", state=state, in_group=state == "ONLINE")) is asked
