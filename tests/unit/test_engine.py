"""Engine: certification outcomes, election and membership from views and deliveries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.certifier import ALL_TABLES, KeyHash, Seq
from replication.engine import (
    ApplyRemote,
    DdlDecided,
    Engine,
    EngineInvariantError,
    ExecuteDdl,
    LocalOutcome,
    MembershipChanged,
    Role,
    SyncReached,
)
from replication.gcs.interface import MemberId, MemberState, Slot, View, ViewId
from replication.messages import (
    AppliedAck,
    Announce,
    DdlMessage,
    DdlOutcome,
    ReplicationDecodeError,
    StableReport,
    SyncPoint,
    TxnMessage,
    decode,
    encode,
)

A, B, C = (MemberId(u, f"127.0.0.1:{3000 + i}", 1) for i, u in enumerate(("a", "b", "c")))


def view(number: int, members: tuple[MemberId, ...], joined: tuple[MemberId, ...] = (), left: tuple[MemberId, ...] = ()) -> View:
    return View(ViewId(0, number), members, members, Slot(number), joined, left)


def txn(origin: str, txn_id: int, snapshot: int, *keys: int) -> bytes:
    return encode(TxnMessage(origin, txn_id, Seq(snapshot), tuple(KeyHash(k) for k in keys), b"rows"))


def test_same_outcomes_on_every_member() -> None:
    engines = [Engine(u) for u in "abc"]
    stream = [txn("a", 1, 0, 10), txn("b", 1, 0, 10), txn("c", 1, 0, 11), txn("b", 2, 1, 10)]
    outs = []
    for e in engines:
        e.on_view(view(1, (A, B, C)))
        outs.append([e.on_delivery(p) for p in stream])
    # a's txn wins key 10 (seq 1); b's first conflicts; c's commits (seq 2); b's second, with a
    # snapshot that includes seq 1, commits (seq 3).
    assert outs[0] == [[LocalOutcome(1, Seq(1), None, b"rows")], [], [ApplyRemote(Seq(2), "c", b"rows", (KeyHash(11),))],
                       [ApplyRemote(Seq(3), "b", b"rows", (KeyHash(10),))]]
    assert outs[1][1] == [LocalOutcome(1, None, Seq(1))]
    assert outs[1][3] == [LocalOutcome(2, Seq(3), None, b"rows")]
    assert [e.certifier.last_seq for e in engines] == [3, 3, 3]


def test_bootstrap_view_members_are_online_and_one_primary() -> None:
    e = Engine("b")
    [changed] = e.on_view(view(1, (A, B, C)))
    assert isinstance(changed, MembershipChanged)
    assert all(m.state is MemberState.ONLINE for m in changed.members)
    assert changed.primary == "a"  # equal weights: lowest uuid
    assert [m.role for m in changed.members] == [Role.PRIMARY, Role.SECONDARY, Role.SECONDARY]


def test_weight_decides_and_primary_is_kept_until_it_leaves() -> None:
    e = Engine("a")
    e.on_view(view(1, (A, B)))
    assert e.primary == "a"
    e.on_message(Announce("b", "ONLINE", 90, "127.0.0.1:3311", "1"))
    assert e.primary == "a"  # no election while the primary is ONLINE
    [changed] = e.on_view(view(2, (B, C), joined=(C,), left=(A,)))
    assert changed.primary == "b" and changed.previous_primary == "a"
    assert e.members["c"].state is MemberState.RECOVERING
    e.on_message(Announce("c", "ONLINE", 100, "", "1"))
    assert e.primary == "b"


def test_joiner_is_recovering_until_it_announces_online() -> None:
    e = Engine("a")
    e.on_view(view(1, (A,)))
    e.on_view(view(2, (A, B), joined=(B,)))
    assert e.members["b"].state is MemberState.RECOVERING
    e.on_message(Announce("b", "ONLINE", 50, "127.0.0.1:3311", "1"))
    assert e.members["b"].state is MemberState.ONLINE and e.members["b"].member_address == "127.0.0.1:3311"


def test_multi_primary_everyone_primary() -> None:
    e = Engine("a", single_primary=False)
    [changed] = e.on_view(view(1, (A, B, C)))
    assert changed.primary is None and all(m.role is Role.PRIMARY for m in changed.members)


def test_ddl_and_sync_points_take_their_place_in_order() -> None:
    e = Engine("a")
    e.on_view(view(1, (A, B)))
    e.on_delivery(txn("b", 1, 0, 1))
    ctx = (("sql_mode", "ANSI_QUOTES"), ("time_zone", "+02:00"))
    [ddl] = e.on_delivery(encode(DdlMessage("a", 7, "db", b"ALTER TABLE t ADD c INT", ctx, (KeyHash(5),))))
    assert ddl == ExecuteDdl(Seq(2), "a", 7, "db", b"ALTER TABLE t ADD c INT", True, ctx)
    [sync] = e.on_delivery(encode(SyncPoint("b", 3)))
    assert sync == SyncReached("b", 3, Seq(2))


def test_ddl_is_decided_by_its_origins_outcome_or_run_when_the_origin_leaves() -> None:
    e = Engine("b")
    e.on_view(view(1, (A, B, C)))
    e.on_delivery(encode(DdlMessage("a", 1, "db", b"TRUNCATE t", (), (KeyHash(5),))))  # seq 1
    e.on_delivery(encode(DdlMessage("a", 2, "db", b"DROP TABLE nosuch", (), (KeyHash(6),))))  # seq 2
    e.on_delivery(encode(DdlMessage("c", 1, "db", b"CREATE TABLE u (id INT)", (), (ALL_TABLES,))))  # seq 3
    e.on_delivery(encode(DdlMessage("a", 3, "db", b"DROP TABLE t, nosuch", (), (KeyHash(5), KeyHash(6)))))  # seq 4
    assert e.on_delivery(encode(DdlOutcome("a", Seq(1), 0))) == [DdlDecided(Seq(1), True, 0)]
    assert e.on_delivery(encode(DdlOutcome("a", Seq(2), 1051))) == [DdlDecided(Seq(2), False, 1051)]
    # Failed after dropping t (its server logged it): everyone runs it, expecting 1051.
    assert e.on_delivery(encode(DdlOutcome("a", Seq(4), 1051, logged=True))) == [DdlDecided(Seq(4), True, 1051)]
    assert e.on_delivery(encode(DdlOutcome("b", Seq(3), 0))) == []  # not b's DDL
    actions = e.on_view(view(2, (A, B), left=(C,)))
    assert actions[0] == DdlDecided(Seq(3), True, 0, origin_left=True)
    assert e.on_delivery(encode(DdlOutcome("c", Seq(3), 1050))) == []  # decided already
    assert e.pending_ddl == {}


def test_a_transaction_whose_snapshot_precedes_a_ddl_on_its_table_conflicts() -> None:
    e = Engine("a")
    e.on_view(view(1, (A, B)))
    t, u = KeyHash(5), KeyHash(6)
    e.on_delivery(encode(DdlMessage("a", 1, "db", b"TRUNCATE t", (), (t,))))  # seq 1
    before = TxnMessage("a", 2, Seq(0), (KeyHash(100),), b"rows", tables=(t,))
    seen_it = TxnMessage("a", 3, Seq(0), (KeyHash(101),), b"rows", seen=(Seq(1),), tables=(t,))
    other_table = TxnMessage("b", 4, Seq(0), (KeyHash(102),), b"rows", tables=(u,))
    assert e.on_message(before) == [LocalOutcome(2, None, Seq(1))]
    assert e.on_message(seen_it) == [LocalOutcome(3, Seq(2), None, b"rows")]
    assert [a.seq for a in e.on_message(other_table)] == [Seq(3)]  # type: ignore[union-attr]
    e.on_delivery(encode(DdlMessage("b", 5, "db", b"???", (), (ALL_TABLES,))))  # seq 4: any table
    assert e.on_message(TxnMessage("b", 6, Seq(3), (KeyHash(103),), b"rows", tables=(u,))) == []


def test_stable_reports_collect() -> None:
    e = Engine("a")
    e.on_view(view(1, (A, B)))
    for i in range(1, 4):
        e.on_delivery(txn("b", i, i - 1, i))
    e.on_delivery(encode(StableReport("a", Seq(3))))
    assert len(e.certifier) == 3
    e.on_delivery(encode(StableReport("b", Seq(2))))
    assert len(e.certifier) == 1


def test_snapshot_from_the_future_is_an_invariant_violation() -> None:
    e = Engine("a")
    e.on_view(view(1, (A, B)))
    with pytest.raises(EngineInvariantError):
        e.on_delivery(txn("b", 1, 5, 1))


def test_garbage_payload_is_an_invariant_violation() -> None:
    e = Engine("a")
    with pytest.raises(EngineInvariantError):
        e.on_delivery(b"\x01\x09nonsense")


messages = st.one_of(
    st.builds(TxnMessage, st.text(max_size=8), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
              st.lists(st.integers(0, 2**64 - 1), max_size=20).map(tuple), st.binary(max_size=64), st.booleans(),
              st.just(()), st.lists(st.integers(0, 2**64 - 1), max_size=5).map(tuple)),
    st.builds(AppliedAck, st.text(max_size=8), st.integers(0, 2**64 - 1)),
    st.builds(DdlMessage, st.text(max_size=8), st.integers(0, 2**64 - 1), st.text(max_size=8), st.binary(max_size=40),
              st.lists(st.tuples(st.sampled_from(["sql_mode", "time_zone"]), st.sampled_from(["", "ANSI_QUOTES", "+00:00"])),
                       max_size=2).map(tuple),
              st.lists(st.integers(0, 2**64 - 1), max_size=5).map(tuple)),
    st.builds(DdlOutcome, st.text(max_size=8), st.integers(0, 2**64 - 1), st.integers(1, 2**32 - 1), st.booleans()),
    st.builds(DdlOutcome, st.text(max_size=8), st.integers(0, 2**64 - 1), st.just(0)),
    st.builds(StableReport, st.text(max_size=8), st.integers(0, 2**64 - 1)),
    st.builds(SyncPoint, st.text(max_size=8), st.integers(0, 2**64 - 1)),
    st.builds(Announce, st.text(max_size=8), st.sampled_from([s.value for s in MemberState]), st.integers(0, 2**32 - 1),
              st.text(max_size=20), st.text(max_size=8)),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_codec_round_trip(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(messages, st.integers(0, 200), st.binary(max_size=4))
def test_codec_rejects_damage(msg: object, cut: int, junk: bytes) -> None:
    data = encode(msg)  # type: ignore[arg-type]
    for damaged in (data[: cut % len(data)], data + junk if junk else data + b"\x00"):
        with pytest.raises(ReplicationDecodeError):
            decode(damaged)


def test_ddl_outcome_flags_are_checked() -> None:
    good = encode(DdlOutcome("a", Seq(3), 1051, logged=True))
    for damaged in (good[:-1] + b"\x02", encode(DdlOutcome("a", Seq(3), 0))[:-1] + b"\x01"):
        with pytest.raises(ReplicationDecodeError):
            decode(damaged)


def test_state_transfer_gives_identical_decisions() -> None:
    donor, twin = Engine("a"), Engine("a")
    for e in (donor, twin):
        e.on_view(view(1, (A, B)))
        e.on_message(Announce("b", "ONLINE", 80, "127.0.0.1:3311", "1"))
        for i in range(1, 6):
            e.on_delivery(txn("b", i, i - 1, i, 100 + i))
        e.on_delivery(encode(StableReport("a", Seq(2))))
    v2 = view(2, (A, B, C), joined=(C,))
    donor.on_view(v2)
    twin.on_view(v2)
    joiner = Engine("c")
    joiner.import_state(donor.export_state(), v2)
    assert joiner.members == donor.members and joiner.primary == donor.primary
    stream = [txn("b", 9, 3, 4), txn("a", 9, 5, 6), txn("c", 1, 2, 1), encode(StableReport("b", Seq(5)))]
    for p in stream:
        got, want = joiner.on_delivery(p), twin.on_delivery(p)
        assert [getattr(a, "seq", None) for a in got] == [getattr(a, "seq", None) for a in want]
    assert joiner.certifier.snapshot_state() == twin.certifier.snapshot_state()
    # DDL: the tables' last DDL seqs and the undecided DDL go with the state.
    donor = joiner  # it holds the same state as the twin now
    for e in (donor, twin):
        e.on_delivery(encode(DdlMessage("b", 20, "db", b"TRUNCATE t", (), (KeyHash(500),))))
    v3 = view(3, (A, B, C, MemberId("d", "127.0.0.1:3009", 1)), joined=(MemberId("d", "127.0.0.1:3009", 1),))
    donor.on_view(v3)
    twin.on_view(v3)
    joiner = Engine("d")
    joiner.import_state(donor.export_state(), v3)
    assert joiner.pending_ddl == twin.pending_ddl and joiner.certifier.ddl_state() == twin.certifier.ddl_state()
    late = TxnMessage("b", 30, Seq(1), (KeyHash(900),), b"rows", tables=(KeyHash(500),))
    assert joiner.on_message(late) == twin.on_message(late) == []
    decided = encode(DdlOutcome("b", twin.certifier.last_seq, 0))
    assert joiner.on_delivery(decided) == twin.on_delivery(decided) != []
    with pytest.raises(EngineInvariantError):
        Engine("d").import_state(b"\x00garbage", v2)
