"""replication/recovery: the joiner's phase table, the cache's reach, the donor's wire format and
the clone's chunk queries (pure parts; the clone itself runs in tests/e2e/test_recovery_clone.py)."""

from __future__ import annotations

import pytest

from replication.recovery.cache import TransactionCache
from replication.recovery.clone import TableCursor, literal_expr
from replication.recovery.donor import pack_recovery_state, unpack_recovery_state
from replication.recovery.phases import TRANSITIONS, IllegalPhase, Phase, PhaseEvent, next_phase

E = PhaseEvent


def _walk(*events: PhaseEvent) -> Phase:
    phase = Phase.SELECT_DONOR
    for event in events:
        phase = next_phase(phase, event)
    return phase


def test_the_cache_path_and_the_clone_path_end_online() -> None:
    assert _walk(E.DONOR_CHOSEN, E.CACHE_REACHES, E.FETCHED, E.CAUGHT_UP) is Phase.ONLINE
    assert _walk(E.DONOR_CHOSEN, E.CACHE_SHORT, E.CLONED, E.FETCHED, E.CAUGHT_UP) is Phase.ONLINE
    assert _walk(E.DONOR_CHOSEN, E.CACHE_REACHES, E.CACHE_SHORT, E.CLONED, E.FETCHED) is Phase.APPLY_BACKLOG


def test_a_failed_donor_goes_back_to_selecting_one() -> None:
    for phase in (Phase.STATE, Phase.CLONE, Phase.FETCH):
        assert next_phase(phase, E.DONOR_FAILED) is Phase.SELECT_DONOR
    assert _walk(E.DONOR_CHOSEN, E.CACHE_SHORT, E.DONOR_FAILED, E.DONOR_CHOSEN) is Phase.STATE


def test_online_only_after_the_backlog_and_final_phases_stay_final() -> None:
    sources = {p for (p, e), to in TRANSITIONS.items() if to is Phase.ONLINE}
    assert sources == {Phase.APPLY_BACKLOG}
    for final in (Phase.ONLINE, Phase.FAILED):
        for event in PhaseEvent:
            with pytest.raises(IllegalPhase):
                next_phase(final, event)


def test_an_illegal_move_names_event_and_phase() -> None:
    with pytest.raises(IllegalPhase, match="'caught_up' is not allowed in phase CLONE"):
        next_phase(Phase.CLONE, E.CAUGHT_UP)
    with pytest.raises(IllegalPhase):
        next_phase(Phase.APPLY_BACKLOG, E.DONOR_FAILED)  # the backlog is local: no donor to change


def test_the_cache_drops_oldest_first_and_says_how_far_back_it_reaches() -> None:
    cache = TransactionCache(bytes_max=10)
    assert cache.lowest() is None
    for seq in range(1, 6):
        cache.put(seq, "T", b"abc")
    assert cache.lowest() == 3 and len(cache) == 3 and cache.bytes == 9
    assert cache.get(2) is None and cache.get(5) == ("T", b"abc")


def test_recovery_state_round_trips_with_the_group_uuid() -> None:
    blob = pack_recovery_state("g-uuid", b"\x00state")
    assert unpack_recovery_state(blob) == ("g-uuid", b"\x00state")
    with pytest.raises(ValueError):
        unpack_recovery_state(b"nope")


def test_chunks_follow_the_primary_key_from_the_last_key_sent() -> None:
    cur = TableCursor("SELECT x FROM t", ("a", "b"))
    assert cur.next_sql(10) == "SELECT x FROM t ORDER BY `a`,`b` LIMIT 10"
    cur.last_key = ("'1'", "'k'")
    assert cur.next_sql(10) == ("SELECT x FROM t WHERE (`a` > '1') OR (`a` = '1' AND `b` > 'k') "
                                "ORDER BY `a`,`b` LIMIT 10")
    no_key = TableCursor("SELECT x FROM t", ())
    no_key.offset = 20
    assert no_key.next_sql(10) == "SELECT x FROM t LIMIT 10 OFFSET 20"


def test_values_are_rendered_as_literals_by_the_donors_server() -> None:
    assert literal_expr("c", "int") == "CONVERT(QUOTE(`c`) USING utf8mb4)"
    assert "HEX(`c`)" in literal_expr("c", "VARBINARY")
    assert "CAST(`c` AS UNSIGNED)" in literal_expr("c", "bit")
    assert "ST_AsBinary(`c`)" in literal_expr("c", "point")
