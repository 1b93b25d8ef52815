"""replication/recovery: the joiner's phase table, the cache's reach, the donor's wire format, the
clone's chunk queries and what the joiner does to the donor's texts (pure parts; the clone itself
runs in tests/integration/test_recovery_clone_objects.py and tests/e2e/test_recovery_clone.py)."""

from __future__ import annotations

import pytest

from replication.certifier import Seq
from replication.engine import DdlDecided
from replication.recovery.cache import TransactionCache, ddl_decision, ddl_kind, is_ddl_kind
from replication.recovery.clone import (
    CloneError,
    CloneObject,
    TableCursor,
    encode_for_client,
    event_disabled_here,
    literal_expr,
    order_views,
    split_qualified,
)
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


def test_an_enabled_event_is_disabled_on_the_joiner_and_only_its_status_changes() -> None:
    head = "CREATE DEFINER=`root`@`%` EVENT `e ON COMPLETION PRESERVE ENABLE DO` ON SCHEDULE EVERY '1:30' HOUR_MINUTE "
    create = head + "STARTS '2030-01-01 10:00:00' ON COMPLETION NOT PRESERVE ENABLE COMMENT 'x ENABLE DO' DO SELECT 1"
    assert event_disabled_here(create, "e ON COMPLETION PRESERVE ENABLE DO") == (
        head + "STARTS '2030-01-01 10:00:00' ON COMPLETION NOT PRESERVE DISABLE ON SLAVE COMMENT 'x ENABLE DO' DO SELECT 1")
    for status in ("DISABLE", "DISABLE ON SLAVE"):
        kept = f"CREATE DEFINER=`u`@`h` EVENT `e` ON SCHEDULE AT '2031-01-01 00:00:00' ON COMPLETION PRESERVE {status} DO DO 1"
        assert event_disabled_here(kept, "e") == kept
    with pytest.raises(CloneError, match="no status"):
        event_disabled_here("CREATE EVENT `e` DO SELECT 1", "e")


def test_program_text_is_sent_in_its_own_client_character_set_when_it_can_be() -> None:
    assert encode_for_client("SELECT 'café'", "latin1") == (b"SELECT 'caf\xe9'", "latin1")
    assert encode_for_client("SELECT 'café'", "utf8mb3") == ("SELECT 'café'".encode(), "utf8mb3")
    assert encode_for_client("SELECT 1", "tis620") == (b"SELECT 1", "tis620")  # ASCII: the same bytes
    assert encode_for_client("SELECT '€'", "latin2") == ("SELECT '€'".encode(), "utf8mb4")  # no € in latin2
    assert encode_for_client("SELECT 'é'", "tis620") == ("SELECT 'é'".encode(), "utf8mb4")  # unknown here
    assert encode_for_client("SELECT 1", "swe7") == (b"SELECT 1", "utf8mb4")  # not ASCII underneath


def _view(name: str, body: str, schema: str = "s") -> CloneObject:
    return CloneObject("VIEW", schema, name, "", f"CREATE ALGORITHM=UNDEFINED VIEW `{schema}`.`{name}` AS {body}")


def test_views_come_after_the_views_they_name() -> None:
    a = _view("a", "select `b`.`x` AS `x` from `s`.`b`")
    b = _view("b", "select `c`.`x` AS `x` from `t`.`c`")
    c = _view("c", "select 1 AS `x`", schema="t")
    d = _view("d", "select 1 AS `x`")
    other_c = _view("c", "select `a`.`x` AS `x` from `s`.`a`")  # `c` named, but t.c is another schema's
    assert [(v.schema, v.name) for v in order_views([a, b, c, d])] == [("t", "c"), ("s", "d"), ("s", "b"), ("s", "a")]
    assert [(v.schema, v.name) for v in order_views([other_c, a, b])][-1] == ("s", "c")
    x, y = _view("x", "select 'y' AS `y` from `s`.`y`"), _view("y", "select 'x' AS `x` from `s`.`x`")
    assert order_views([x, y]) == [x, y]  # a cycle of mere mentions keeps the order given


def test_a_qualified_name_splits_after_a_known_schema() -> None:
    assert split_qualified("a.b.c", {"a.b"}) == ("a.b", "c")
    assert split_qualified("a.b.c", {"x"}) == ("a", "b.c")
    assert split_qualified("plain", set()) == ("", "plain")


def test_clone_objects_are_checked_when_decoded() -> None:
    row = ("VIEW", "s", "v", "", "CREATE VIEW v AS SELECT 1", "")
    assert CloneObject.from_row([x.encode() for x in row]).row() == (*row, "", "", "", "")  # a first-version donor
    with pytest.raises(ValueError, match="unknown clone object kind"):
        CloneObject.from_row(("PACKAGE", "s", "p", "", "CREATE PACKAGE p", ""))
    with pytest.raises(ValueError, match="fields"):
        CloneObject.from_row(("VIEW", "s"))


@pytest.mark.parametrize("decision", [DdlDecided(Seq(4), True), DdlDecided(Seq(4), False, 1050),
                                      DdlDecided(Seq(4), True, 1051)])
def test_a_cached_ddl_carries_its_decision_to_a_joiner(decision: DdlDecided) -> None:
    """Run, skipped, or run expecting the origin's error (it failed there after changing something)."""
    kind = ddl_kind(decision)
    assert is_ddl_kind(kind)
    expected = decision if decision.run else DdlDecided(decision.seq, False)  # a skipped DDL's errno is not needed
    assert ddl_decision(decision.seq, kind) == expected
    assert ddl_decision(Seq(4), "P") is None
    for bad in ("E", "E0", "Ex", "Z"):
        with pytest.raises(ValueError):
            ddl_decision(Seq(4), bad)
    assert not is_ddl_kind("T")
