"""A member's lifecycle: GR's member states and the one table of moves between them (STYLE 4).

States are those of `performance_schema.replication_group_members.MEMBER_STATE` that a member
gives itself (UNREACHABLE is what *others* see of it):

    OFFLINE ──bootstrap──▶ ONLINE
    OFFLINE ──join───────▶ RECOVERING ──recovered──▶ ONLINE
    any     ──fail───────▶ ERROR        (left the group, refuses writes and held reads)
    ERROR   ──rejoin─────▶ RECOVERING   (autorejoin_tries, or START GROUP_REPLICATION)
    OFFLINE ──reboot─────▶ ONLINE       (the whole-group reboot, `grproxy reboot`: a member in
                                         ERROR or still asking its seeds stops first)
    any     ──stop───────▶ OFFLINE      (STOP GROUP_REPLICATION, shutdown)

Rule: a member announces ONLINE to the group only through `recovered` or `bootstrap`; a member
whose recovery failed moves by `fail` and never announces ONLINE. An illegal move raises
`IllegalTransition` naming the event and the state, and changes nothing.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum

from replication.gcs.interface import MemberState


class LifecycleEvent(enum.Enum):
    BOOTSTRAP = "bootstrap"
    JOIN = "join"
    RECOVERED = "recovered"
    FAIL = "fail"
    REJOIN = "rejoin"
    REBOOT = "reboot"
    STOP = "stop"


class IllegalTransition(Exception):
    """An event that is not allowed in the member's current state (a programming error)."""

    def __init__(self, event: LifecycleEvent, state: MemberState) -> None:
        super().__init__(f"member lifecycle: event {event.value!r} is not allowed in state {state.value}")
        self.event = event
        self.state = state


_O, _R, _N, _E = MemberState.OFFLINE, MemberState.RECOVERING, MemberState.ONLINE, MemberState.ERROR

TRANSITIONS: dict[tuple[MemberState, LifecycleEvent], MemberState] = {
    (_O, LifecycleEvent.BOOTSTRAP): _N,
    (_O, LifecycleEvent.REBOOT): _N,
    (_O, LifecycleEvent.JOIN): _R,
    (_E, LifecycleEvent.REJOIN): _R,
    (_O, LifecycleEvent.REJOIN): _R,
    (_R, LifecycleEvent.RECOVERED): _N,
    **{(s, LifecycleEvent.FAIL): _E for s in (_O, _R, _N, _E)},
    **{(s, LifecycleEvent.STOP): _O for s in (_O, _R, _N, _E)},
}


def transition(state: MemberState, event: LifecycleEvent) -> MemberState:
    """The state after `event` in `state`; raises IllegalTransition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(event, state) from None


class ExitStateAction(enum.Enum):
    """What a member does when it enters ERROR (group_replication_exit_state_action)."""

    READ_ONLY = "READ_ONLY"  # keep serving reads; refuse writes (1290)
    OFFLINE_MODE = "OFFLINE_MODE"  # refuse every new client statement (like offline_mode=ON)
    ABORT_SERVER = "ABORT_SERVER"  # stop the process

    @classmethod
    def parse(cls, text: str) -> "ExitStateAction":
        try:
            return cls(text.strip().upper())
        except ValueError:
            raise ValueError(f"exit_state_action must be one of {', '.join(a.value for a in cls)}, not {text!r}") from None
