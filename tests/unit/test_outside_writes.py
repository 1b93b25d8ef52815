"""replication.outside_writes: finding writes made around grproxy from MariaDB GTID states."""

from __future__ import annotations

import pytest

from replication.outside_writes import (
    GRPROXY_GTID_DOMAIN,
    from_meta_rows,
    meta_rows,
    outside,
    parse_state,
    went_back,
    written_since,
)

D = GRPROXY_GTID_DOMAIN


def test_parse_state_reads_mariadbs_notation() -> None:
    assert parse_state("") == {}
    assert parse_state("0-1-55") == {(0, 1): 55}
    assert parse_state(f"0-1-55,{D}-1-9, 0-2-3") == {(0, 1): 55, (D, 1): 9, (0, 2): 3}


@pytest.mark.parametrize("text", ["0-1", "a-b-c", "0-1-2-3", "0--1-2"])
def test_parse_state_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_state(text)


def test_grproxys_own_domain_is_not_outside() -> None:
    assert outside(parse_state(f"0-1-55,{D}-1-9000,{D}-2-7,3-4-1")) == {(0, 1): 55, (3, 4): 1}


@pytest.mark.parametrize(("recorded", "current", "written"), [
    ({}, {}, []),
    ({(0, 1): 55}, {(0, 1): 55}, []),
    ({(0, 1): 55}, {(0, 1): 56}, ["0-1-56"]),
    ({(0, 1): 55}, {(0, 1): 58}, ["0-1-56..58"]),
    ({}, {(0, 1): 3}, ["0-1-1..3"]),
    ({(0, 1): 55}, {(0, 1): 55, (0, 2): 1, (5, 1): 2}, ["0-2-1", "5-1-1..2"]),
    ({(0, 1): 55}, {(0, 1): 10}, []),  # went back: not a write, a reset (went_back says so)
])
def test_written_since_names_the_new_transactions(recorded: dict[tuple[int, int], int],
                                                  current: dict[tuple[int, int], int], written: list[str]) -> None:
    assert written_since(recorded, current) == written


def test_went_back_is_a_reset_not_a_write() -> None:
    assert went_back({(0, 1): 55}, {(0, 1): 10})
    assert went_back({(0, 1): 55}, {})
    assert not went_back({(0, 1): 55}, {(0, 1): 55, (0, 2): 1})


def test_meta_rows_round_trip() -> None:
    state = {(0, 1): 55, (12, 3000000000): 7}
    rows = meta_rows(state)
    assert all(len(k) <= 64 for k in rows)  # grproxy.meta's name column
    assert from_meta_rows({**rows, "member_uuid": "x"}) == state
