"""The joiner's recovery phases and the one table of moves between them (STYLE 4).

    SELECT_DONOR ──donor_chosen──▶ STATE ──cache_reaches──▶ FETCH ──fetched──▶ APPLY_BACKLOG ──caught_up──▶ ONLINE
                                   STATE ──cache_short────▶ CLONE ──cloned───▶ FETCH
                                   FETCH ──cache_short────▶ CLONE  (the donor's cache moved on meanwhile)
    STATE / CLONE / FETCH ──donor_failed──▶ SELECT_DONOR   (next donor; a clone restarts there)
    any but ONLINE ──fail──▶ FAILED   (refused, out of donors or time, or the member left)

Rules: a joiner announces ONLINE only from APPLY_BACKLOG, once what the group delivered while
it recovered is applied; FAILED and ONLINE are final. An illegal move raises IllegalPhase
naming the event and the phase, and changes nothing.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    SELECT_DONOR = "SELECT_DONOR"
    STATE = "STATE"
    CLONE = "CLONE"
    FETCH = "FETCH"
    APPLY_BACKLOG = "APPLY_BACKLOG"
    ONLINE = "ONLINE"
    FAILED = "FAILED"


class PhaseEvent(enum.Enum):
    DONOR_CHOSEN = "donor_chosen"
    CACHE_REACHES = "cache_reaches"
    CACHE_SHORT = "cache_short"
    CLONED = "cloned"
    FETCHED = "fetched"
    CAUGHT_UP = "caught_up"
    DONOR_FAILED = "donor_failed"
    FAIL = "fail"


class IllegalPhase(Exception):
    """An event that is not allowed in the joiner's current phase (a programming error)."""

    def __init__(self, event: PhaseEvent, phase: Phase) -> None:
        super().__init__(f"recovery: event {event.value!r} is not allowed in phase {phase.value}")
        self.event = event
        self.phase = phase


_P, _E = Phase, PhaseEvent

TRANSITIONS: dict[tuple[Phase, PhaseEvent], Phase] = {
    (_P.SELECT_DONOR, _E.DONOR_CHOSEN): _P.STATE,
    (_P.STATE, _E.CACHE_REACHES): _P.FETCH,
    (_P.STATE, _E.CACHE_SHORT): _P.CLONE,
    (_P.CLONE, _E.CLONED): _P.FETCH,
    (_P.FETCH, _E.CACHE_SHORT): _P.CLONE,
    (_P.FETCH, _E.FETCHED): _P.APPLY_BACKLOG,
    (_P.APPLY_BACKLOG, _E.CAUGHT_UP): _P.ONLINE,
    **{(p, _E.DONOR_FAILED): _P.SELECT_DONOR for p in (_P.STATE, _P.CLONE, _P.FETCH)},
    **{(p, _E.FAIL): _P.FAILED for p in (_P.SELECT_DONOR, _P.STATE, _P.CLONE, _P.FETCH, _P.APPLY_BACKLOG)},
}


def next_phase(phase: Phase, event: PhaseEvent) -> Phase:
    """The phase after `event` in `phase`; raises IllegalPhase."""
    try:
        return TRANSITIONS[(phase, event)]
    except KeyError:
        raise IllegalPhase(event, phase) from None
