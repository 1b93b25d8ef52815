"""replication.admin's pure parts and the engine's group actions (no servers)."""

from __future__ import annotations

import pytest

from replication.admin import (
    GROUP_MEMBERS,
    MEMBER_STATS,
    VARIABLES,
    _parse_args,
    admin_only,
    mentions,
    rewrite_table,
)
from replication.certifier import KeyHash, Seq
from replication.engine import ACTION_RUNNING, TARGET_LEFT, AdminOutcome, Engine, HandoverStarted, MembershipChanged, Role
from replication.gcs.interface import MemberId, MemberState, Slot, View, ViewId
from replication.messages import (
    AdminAction,
    AdminOp,
    Announce,
    MemberStats,
    ReplicationDecodeError,
    TxnMessage,
    decode,
    encode,
)
from replication.statements import classify

A, B, C = (MemberId(u, f"127.0.0.1:{3000 + i}", 1) for i, u in enumerate(("a", "b", "c")))


def group(me: str = "a") -> Engine:
    e = Engine(me)
    e.on_view(View(ViewId(0, 1), (A, B, C), (A, B, C), Slot(1)))
    return e


# --- messages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("msg", [
    AdminOp("a", 7, AdminAction.SET_PRIMARY, "b"),
    AdminOp("a", 8, AdminAction.SINGLE_PRIMARY),
    AdminOp("a", 9, AdminAction.SINGLE_PRIMARY, "c"),
    AdminOp("a", 10, AdminAction.MULTI_PRIMARY),
    MemberStats("b", 1, 2, 3, 4, 5, 6, 7, 8, 9),
    MemberStats("c"),
])
def test_admin_messages_round_trip(msg: object) -> None:
    data = encode(msg)  # type: ignore[arg-type]
    assert decode(data) == msg
    for cut in range(len(data)):
        with pytest.raises(ReplicationDecodeError):
            decode(data[:cut])


def test_admin_messages_are_validated() -> None:
    with pytest.raises(ValueError):
        AdminOp("a", 1, AdminAction.SET_PRIMARY)
    with pytest.raises(ValueError):
        AdminOp("a", 1, AdminAction.MULTI_PRIMARY, "b")
    with pytest.raises(ValueError):
        MemberStats("a", checked=-1)
    bad = bytearray(encode(AdminOp("a", 1, AdminAction.MULTI_PRIMARY)))
    bad[2 + 4 + 1 + 8] = 9  # the action byte
    with pytest.raises(ReplicationDecodeError, match="admin operation"):
        decode(bytes(bad))


# --- the engine applies group actions at delivery -------------------------------------------------


def test_set_as_primary_is_the_same_decision_everywhere() -> None:
    """Two steps, as GR: at the action's delivery the old primary is asked to end what runs
    there (nothing changes yet); at its HANDOVER_DONE every member switches."""
    engines = [group(u) for u in "abc"]
    for e in engines:
        out = e.on_message(AdminOp("c", 1, AdminAction.SET_PRIMARY, "b", 5))
        assert out == [HandoverStarted("a", "b", 5)]
        assert e.primary == "a"
        out = e.on_message(AdminOp("a", 9, AdminAction.HANDOVER_DONE, "b"))
        changed = [x for x in out if isinstance(x, MembershipChanged)]
        assert changed and changed[0].primary == "b" and changed[0].previous_primary == "a"
        assert out[-1] == AdminOutcome("c", 1, True, "Primary server switched to: b")
        assert e.primary == "b" and e.members["a"].role is Role.SECONDARY and e.members["b"].role is Role.PRIMARY
        assert e.handover is None
    assert {e.primary for e in engines} == {"b"}


def test_a_handover_refuses_other_actions_and_ignores_a_stray_done() -> None:
    e = group()
    e.on_message(AdminOp("c", 1, AdminAction.SET_PRIMARY, "b"))
    assert e.on_message(AdminOp("c", 2, AdminAction.MULTI_PRIMARY))[-1] == AdminOutcome(
        "c", 2, False, ACTION_RUNNING)
    assert e.on_message(AdminOp("b", 3, AdminAction.HANDOVER_DONE, "b")) == []  # not from the old primary
    assert e.on_message(AdminOp("a", 4, AdminAction.HANDOVER_DONE, "c")) == []  # not its target
    assert e.primary == "a" and e.handover is not None


@pytest.mark.parametrize(("who", "how", "primary", "ok"), [
    ("a", "ERROR", "b", True),  # the old primary failed before its step: the switch happens now
    ("a", "leave", "b", True),
    ("b", "ERROR", "a", False),  # the appointed one is gone: the action fails, the old one stays
    ("b", "leave", "a", False),
])
def test_a_member_leaving_mid_handover_ends_it(who: str, how: str, primary: str, ok: bool) -> None:
    e = group("c")
    e.on_message(AdminOp("c", 1, AdminAction.SET_PRIMARY, "b"))
    if how == "ERROR":
        out = e.on_message(Announce(who, "ERROR", 50, "", "1"))
    else:
        rest = tuple(m for m in (A, B, C) if m.uuid != who)
        out = e.on_view(View(ViewId(0, 2), rest, (), Slot(9)))
    outcome = [x for x in out if isinstance(x, AdminOutcome)]
    assert len(outcome) == 1 and outcome[0].ok is ok and outcome[0].op_id == 1
    assert ok or outcome[0].message == TARGET_LEFT
    assert e.primary == primary and e.handover is None
    # A late HANDOVER_DONE changes nothing.
    assert e.on_message(AdminOp("a", 5, AdminAction.HANDOVER_DONE, "b")) == []


def test_a_joiner_continues_a_handover_from_the_donors_state() -> None:
    donor = group("a")
    donor.on_message(AdminOp("c", 1, AdminAction.SET_PRIMARY, "b", 30))
    joiner = Engine("d")
    joiner.import_state(donor.export_state(), View(ViewId(0, 2), (A, B, C), (), Slot(5)))
    assert joiner.handover == donor.handover
    out = joiner.on_message(AdminOp("a", 2, AdminAction.HANDOVER_DONE, "b"))
    assert joiner.primary == "b" and out[-1].ok


def test_admin_op_timeout_round_trips() -> None:
    for timeout in (None, 0, 7, 3600):
        op = AdminOp("a", 1, AdminAction.SET_PRIMARY, "b", timeout)
        assert decode(encode(op)) == op
    with pytest.raises(ValueError):
        AdminOp("a", 1, AdminAction.SET_PRIMARY, "b", 3601)


def test_group_action_refusals_at_delivery() -> None:
    e = group()
    assert e.on_message(AdminOp("a", 1, AdminAction.SET_PRIMARY, "zz")) == [
        AdminOutcome("a", 1, False, "The requested uuid is not a member of the group.")]
    e.on_message(Announce("c", "RECOVERING", 50, "", "1"))
    assert e.on_message(AdminOp("a", 2, AdminAction.SET_PRIMARY, "c"))[-1].ok is False
    assert e.primary == "a"
    assert e.on_message(AdminOp("a", 3, AdminAction.SET_PRIMARY, "a"))[-1] == AdminOutcome(
        "a", 3, True, "The requested member is already the current group primary.")
    assert e.on_message(AdminOp("a", 4, AdminAction.SINGLE_PRIMARY))[-1].message == \
        "The group is already on single-primary mode."


def test_mode_switches() -> None:
    e = group("b")
    out = e.on_message(AdminOp("a", 1, AdminAction.MULTI_PRIMARY))
    assert out[-1] == AdminOutcome("a", 1, True, "Mode switched to multi-primary successfully.")
    assert not e.single_primary and all(m.role is Role.PRIMARY for m in e.members.values())
    assert e.on_message(AdminOp("a", 2, AdminAction.SET_PRIMARY, "b"))[-1] == AdminOutcome(
        "a", 2, False, "In multi-primary mode. Use group_replication_switch_to_single_primary_mode.")
    assert e.on_message(AdminOp("a", 3, AdminAction.MULTI_PRIMARY))[-1].message == \
        "The group is already on multi-primary mode."
    out = e.on_message(AdminOp("a", 4, AdminAction.SINGLE_PRIMARY, "c"))
    assert out[-1] == AdminOutcome("a", 4, True, "Mode switched to single-primary successfully.")
    assert e.single_primary and e.primary == "c"
    assert [m.uuid for m in e.members.values() if m.role is Role.PRIMARY] == ["c"]
    # Without a uuid, the usual election (highest weight, then lowest uuid) picks one.
    e.on_message(AdminOp("a", 5, AdminAction.MULTI_PRIMARY))
    e.on_message(Announce("b", "ONLINE", 80, "", "1"))
    e.on_message(AdminOp("a", 6, AdminAction.SINGLE_PRIMARY))
    assert e.primary == "b"
    # The mode travels with the recovery state.
    joiner = Engine("d")
    joiner.import_state(e.export_state(), e.view)  # type: ignore[arg-type]
    assert joiner.single_primary and joiner.primary == "b"


def test_certification_counters_and_member_stats() -> None:
    e = group("a")
    txn = lambda origin, n, snap, key: encode(TxnMessage(origin, n, Seq(snap), (KeyHash(key),), b"x"))  # noqa: E731
    e.on_delivery(txn("a", 1, 0, 10))  # seq 1
    e.on_delivery(txn("b", 1, 0, 10))  # conflicts with seq 1
    e.on_delivery(txn("a", 2, 0, 10))  # conflicts too: ours
    e.on_delivery(txn("c", 1, 1, 11))  # seq 2
    assert (e.stats_checked, e.stats_conflicts, e.stats_local_proposed, e.stats_local_rollback) == (4, 2, 2, 1)
    assert e.last_conflict_free == 2
    e.on_message(MemberStats("b", checked=4))
    e.on_message(MemberStats("zz", checked=1))  # not a member: ignored
    assert set(e.member_stats) == {"b"}
    e.on_view(View(ViewId(0, 2), (A, C), (A, C), Slot(2), left=(B,)))
    assert e.member_stats == {}
    assert e.members["a"].state is MemberState.ONLINE


# --- SQL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT group_replication_set_as_primary('x')", True),
    ("select GROUP_REPLICATION_SWITCH_TO_MULTI_PRIMARY_MODE ()", True),
    ("SET GLOBAL group_replication_member_weight = 1", True),
    ("SET PERSIST group_replication_consistency = 'AFTER'", True),
    ("SET SESSION group_replication_consistency = 'AFTER'", False),
    ("SET @@group_replication_consistency = 1", False),
    ("STOP GROUP_REPLICATION", True),
    ("start group_replication;", True),
    ("SELECT * FROM performance_schema.replication_group_members", False),
    ("SHOW VARIABLES LIKE 'group_replication%'", False),
    ("SELECT @@group_replication_member_weight", False),
])
def test_admin_only(sql: str, expected: bool) -> None:
    assert admin_only(classify(sql), sql) is expected


def test_mentions_is_a_cheap_prefilter() -> None:
    assert mentions(b"\x00\x00\x00\x00\x03SHOW VARIABLES")
    assert mentions(b"\x00\x00\x00\x00\x03select @@GROUP_REPLICATION_consistency")
    assert not mentions(b"\x00\x00\x00\x00\x03SELECT 1")


def test_parse_args() -> None:
    assert _parse_args("") == []
    assert _parse_args(" 'a-b' , 30 ") == ["a-b", 30]
    assert _parse_args("\"x\"") == ["x"]
    assert _parse_args("'it''s'") == ["it's"]
    with pytest.raises(ValueError):
        _parse_args("@uuid")
    with pytest.raises(ValueError):
        _parse_args("UUID()")


def test_rewrite_tables_keep_aliases_and_other_tables() -> None:
    rows = [("group_replication_applier", "u1", "h", 1, "ONLINE", "PRIMARY", "v", "XCom")]
    sql = rewrite_table("SELECT m.MEMBER_ID FROM performance_schema.replication_group_members m WHERE 1", GROUP_MEMBERS,
                        rows)
    assert sql.startswith("SELECT m.MEMBER_ID FROM (SELECT 'group_replication_applier' AS CHANNEL_NAME, 'u1' AS "
                          "MEMBER_ID") and sql.endswith(") AS m WHERE 1")
    assert "CAST(1 AS UNSIGNED) AS MEMBER_PORT" in sql
    # replication_group_members is not a prefix match of the stats table, and vice versa.
    stats = "SELECT * FROM replication_group_member_stats"
    assert rewrite_table(stats, GROUP_MEMBERS, rows) == stats
    empty = rewrite_table(stats, MEMBER_STATS, [])
    assert "WHERE FALSE) AS replication_group_member_stats" in empty


def test_variables_have_gr_names() -> None:
    for name in ("group_replication_consistency", "group_replication_member_weight",
                 "group_replication_member_expel_timeout", "group_replication_autorejoin_tries",
                 "group_replication_exit_state_action", "group_replication_unreachable_majority_timeout",
                 "group_replication_flow_control_mode", "group_replication_flow_control_period",
                 "group_replication_compression_threshold", "group_replication_single_primary_mode",
                 "group_replication_group_name", "group_replication_transaction_size_limit"):
        assert name in VARIABLES
    assert VARIABLES["group_replication_compression_threshold"].write is not None
    assert VARIABLES["group_replication_group_name"].write is None  # read-only
    assert VARIABLES["group_replication_single_primary_mode"].write is None  # use the switch functions
    assert VARIABLES["group_replication_member_weight"].parse is not None
    parse = VARIABLES["group_replication_member_weight"].parse
    assert parse(70) == 70 and parse("DEFAULT") == 50  # type: ignore[misc]
