"""The checkers must stay sharp: each one fails on a planted violation (STYLE 19)."""

from __future__ import annotations

import pytest

from replication.gcs.interface import Delivery, MemberId, Position, Slot, View, ViewId
from replication.gcs.sim.checkers import Checker, Violation
from replication.gcs.xcom.core import Bootstrap, Phase, Ready
from replication.gcs.xcom.messages import NOOP, AcceptedValue, Batch, Decide, Run
from replication.gcs.xcom.types import Ballot


def mid(name: str) -> MemberId:
    return MemberId(name, f"{name}:1", 1)


A, B, C = mid("a"), mid("b"), mid("c")
VIEW = View(ViewId(0, 1), (A, B, C), (A, B, C), Slot(1))


class Node:
    def __init__(self, member: MemberId) -> None:
        self.member = member
        self.core = None


def batch(origin: MemberId, seq: int, n: int = 1) -> Batch:
    return Batch((Run(origin, seq, tuple(b"p%d" % (seq + i) for i in range(n))),))


def delivery(slot: int, index: int, origin: MemberId, seq: int, payload: bytes | None = None) -> Delivery:
    return Delivery(Position(Slot(slot), index), origin, seq, payload or b"p%d" % seq, VIEW.view_id)


def setup() -> tuple[Checker, dict[str, Node]]:
    checker = Checker()
    nodes = {n: Node(m) for n, m in (("a", A), ("b", B), ("c", C))}
    for node in nodes.values():
        checker.on_ready(node, Ready(views=[VIEW]))  # type: ignore[arg-type]
    checker.on_broadcast(A, 1, b"p1")
    checker.on_broadcast(A, 2, b"p2")
    return checker, nodes


def accepted(checker: Checker, nodes: dict[str, Node], slot: int, value: Batch, who: str) -> None:
    for n in who:
        checker.on_ready(nodes[n], Ready(accepted=[AcceptedValue(Slot(slot), Ballot(0), value)]))  # type: ignore[arg-type]


def test_a_correct_history_passes() -> None:
    checker, nodes = setup()
    accepted(checker, nodes, 1, batch(A, 1), "ab")
    for n in "abc":
        checker.on_ready(nodes[n], Ready(deliveries=[delivery(1, 0, A, 1)]))  # type: ignore[arg-type]
    checker.finish([])


def test_safe_delivery_needs_a_majority_of_acceptances() -> None:
    checker, nodes = setup()
    accepted(checker, nodes, 1, batch(A, 1), "a")
    with pytest.raises(Violation, match="safe-delivery"):
        checker.on_ready(nodes["a"], Ready(deliveries=[delivery(1, 0, A, 1)]))  # type: ignore[arg-type]


def test_agreement_on_positions() -> None:
    checker, nodes = setup()
    accepted(checker, nodes, 1, batch(A, 1, 2), "abc")
    checker.on_ready(nodes["a"], Ready(deliveries=[delivery(1, 0, A, 1)]))  # type: ignore[arg-type]
    with pytest.raises(Violation, match="agreement"):
        checker.on_ready(nodes["b"], Ready(deliveries=[delivery(1, 0, A, 2)]))  # type: ignore[arg-type]


def test_integrity_duplicates_and_inventions() -> None:
    checker, nodes = setup()
    accepted(checker, nodes, 1, batch(A, 1), "abc")
    checker.on_ready(nodes["a"], Ready(deliveries=[delivery(1, 0, A, 1)]))  # type: ignore[arg-type]
    with pytest.raises(Violation, match="integrity"):
        checker.on_ready(nodes["a"], Ready(deliveries=[delivery(2, 0, A, 1)]))  # type: ignore[arg-type]
    with pytest.raises(Violation, match="integrity"):
        checker.on_ready(nodes["b"], Ready(deliveries=[delivery(1, 0, B, 9)]))  # type: ignore[arg-type]
    with pytest.raises(Violation, match="integrity"):
        checker.on_ready(nodes["c"], Ready(deliveries=[delivery(1, 0, A, 1, b"forged")]))  # type: ignore[arg-type]


def test_total_order_within_a_log() -> None:
    checker, nodes = setup()
    accepted(checker, nodes, 2, batch(A, 1), "abc")
    accepted(checker, nodes, 1, batch(A, 2), "abc")
    checker.on_ready(nodes["a"], Ready(deliveries=[delivery(2, 0, A, 1)]))  # type: ignore[arg-type]
    with pytest.raises(Violation, match="total-order"):
        checker.on_ready(nodes["a"], Ready(deliveries=[delivery(1, 0, A, 2)]))  # type: ignore[arg-type]


def test_holes_break_view_synchrony() -> None:
    checker, nodes = setup()
    accepted(checker, nodes, 1, batch(A, 1), "abc")
    accepted(checker, nodes, 2, batch(A, 2), "abc")
    checker.on_ready(nodes["a"], Ready(deliveries=[delivery(1, 0, A, 1), delivery(2, 0, A, 2)]))  # type: ignore[arg-type]
    checker.on_ready(nodes["b"], Ready(deliveries=[delivery(2, 0, A, 2)]))  # type: ignore[arg-type]
    for n in "ab":
        checker.records[nodes[n].member].final_next_slot = 3
    with pytest.raises(Violation, match="view-synchrony"):
        checker.finish([])


def test_views_must_agree() -> None:
    checker, nodes = setup()
    other = View(ViewId(0, 1), (A, B), (A, B), Slot(1))
    with pytest.raises(Violation, match="view-synchrony"):
        checker.on_ready(Node(mid("d")), Ready(views=[other]))  # type: ignore[arg-type]


def test_conflicting_decisions() -> None:
    checker, nodes = setup()
    checker.on_ready(nodes["a"], Ready(sends=[(B, Decide(Slot(4), Ballot(0), batch(A, 1)))]))  # type: ignore[arg-type]
    with pytest.raises(Violation, match="consensus"):
        checker.on_ready(nodes["b"], Ready(sends=[(A, Decide(Slot(4), Ballot(0x101), NOOP))]))  # type: ignore[arg-type]


def test_a_violation_survives_pickling() -> None:
    """Results cross process boundaries with --jobs."""
    import pickle

    v = pickle.loads(pickle.dumps(Violation("agreement", "position 3.0")))
    assert (v.kind, v.detail, str(v)) == ("agreement", "position 3.0", "agreement: position 3.0")


# ---------------------------------------------------------------------------------------------
# Lineages (one per bootstrap) and force branches


def bootstrapped(checker: Checker, node: Node, members: tuple[MemberId, ...], slot: int = 1) -> View:
    view = View(ViewId(0, 1), members, members, Slot(slot))
    checker.on_ready(node, Ready(views=[view], phase=Phase.MEMBER), Bootstrap(members))  # type: ignore[arg-type]
    return view


def test_two_live_groups_under_one_name_are_a_violation() -> None:
    checker = Checker()
    a, b = Node(A), Node(B)
    bootstrapped(checker, a, (A,))
    with pytest.raises(Violation, match="one-group"):
        bootstrapped(checker, b, (B,))


def test_a_group_bootstrapped_again_after_every_member_stopped_is_one_group() -> None:
    """Slots, positions and view ids restart with the new lineage without colliding."""
    checker = Checker()
    a, b = Node(A), Node(B)
    view_a = bootstrapped(checker, a, (A,))
    checker.on_broadcast(A, 1, b"old")
    checker.on_ready(a, Ready(accepted=[AcceptedValue(Slot(1), Ballot(0), batch(A, 1))]))  # type: ignore[arg-type]
    checker.on_ready(a, Ready(deliveries=[Delivery(Position(Slot(1), 0), A, 1, b"old", view_a.view_id)]))  # type: ignore[arg-type]
    checker.on_stop(a)  # type: ignore[arg-type]
    view_b = bootstrapped(checker, b, (B,))
    checker.on_broadcast(B, 1, b"new")
    checker.on_ready(b, Ready(accepted=[AcceptedValue(Slot(1), Ballot(0), Batch((Run(B, 1, (b"new",)),)))]))  # type: ignore[arg-type]
    checker.on_ready(b, Ready(deliveries=[Delivery(Position(Slot(1), 0), B, 1, b"new", view_b.view_id)]))  # type: ignore[arg-type]
    checker.finish([])


def test_a_forced_branch_owes_only_what_its_own_members_delivered() -> None:
    """force_members drops decisions only the lost majority knew (DESIGN §3): a survivor may
    miss what the dead delivered, but not what another survivor delivered."""
    checker, nodes = setup()
    d = Node(mid("d"))
    checker.on_ready(d, Ready(views=[VIEW]))  # type: ignore[arg-type]
    accepted(checker, nodes, 2, batch(A, 1), "bc")
    checker.on_ready(nodes["c"], Ready(deliveries=[delivery(2, 0, A, 1)]))  # type: ignore[arg-type]
    checker.records[C].final_next_slot = 3  # c died after delivering slot 2; b died too
    forced = View(ViewId(1, 2), (A,), (A,), Slot(4))
    checker.on_ready(nodes["a"], Ready(views=[forced]))  # type: ignore[arg-type]
    checker.records[A].final_next_slot = 5
    checker.finish([])  # a never delivered slot 2: a gap of the force
    accepted(checker, nodes, 3, batch(A, 2), "abc")
    checker.on_ready(d, Ready(deliveries=[delivery(3, 0, A, 2)], views=[forced]))  # type: ignore[arg-type]
    checker.records[d.member].final_next_slot = 5
    with pytest.raises(Violation, match="view-synchrony"):
        checker.finish([])  # d, in the forced branch too, delivered slot 3 and a did not
