"""What a dialer that is not a member may do to a member's core (found by fuzzing the group
port, tests/chaos/fuzz.py): nothing but what the join and probe protocols need.

A non-member here is anyone outside the member's configurations: a stranger, or another
incarnation of a member's name or address (the transport admits newer incarnations: a member
restarted after a crash dials with one before it has rejoined)."""

from __future__ import annotations

from replication.gcs.interface import MemberId, ViewId
from replication.gcs.xcom.core import ForceMembers, Phase, Received
from replication.gcs.xcom.messages import ConfigRecord, ForceAck, ForceInstall, NotMember, Slot, SlotRange

from test_core import Cluster, mid

STRANGER = MemberId("stranger", "stranger:1", 7)
NEWER_B = MemberId("b", "b:1", 2)  # b's name and address, a newer incarnation than the member's


def _whole(c: Cluster) -> bool:
    members = (mid("a"), mid("b"), mid("c"))
    for core in c.cores.values():
        views = core.known_views()
        if core.phase is not Phase.MEMBER or len(views) != 1 or tuple(views[0].members) != members:
            return False
    return True


def test_not_member_from_a_non_member_does_not_expel() -> None:
    c = Cluster("abc")
    c.run(200)
    for sender in (STRANGER, NEWER_B):
        c.step("a", Received(sender, NotMember(mid("a"), ViewId(5, 99))))
        c.run(200)
    assert _whole(c)
    assert c.cores["a"].statistics().counters.messages_from_non_members >= 2


def test_not_member_from_a_peer_still_expels() -> None:
    c = Cluster("abc")
    c.run(200)
    c.step("a", Received(mid("b"), NotMember(mid("a"), ViewId(0, 99))))
    assert c.cores["a"].phase is Phase.OFFLINE


def test_force_install_from_a_non_member_is_not_installed() -> None:
    """A ForceInstall listing the receiver and the sender at a higher epoch made the receiver
    leave its group for one the sender chose."""
    c = Cluster("abc")
    c.run(200)
    for sender in (STRANGER, NEWER_B):
        record = ConfigRecord(ViewId(3, 50), Slot(1000), (mid("a"), sender))
        c.step("a", Received(sender, ForceInstall(1, record, (SlotRange(Slot(900), Slot(1000)),))))
        c.run(200)
    assert _whole(c)
    assert c.cores["a"].forced is None


def test_force_ack_from_an_unlisted_member_does_not_count() -> None:
    """The forcer counts acks of the listed members: a stranger's ack ended the force before
    b had it (the forcer stopped resending the ForceInstall)."""
    c = Cluster("abcd")
    c.run(300)
    c.down = {"c", "d"}
    c.run(2500)  # c and d suspected: a and b are not a majority of four
    c.step("a", ForceMembers((mid("a"), mid("b"))))
    op = c.cores["a"]._force
    assert op is not None
    c.step("a", Received(STRANGER, ForceAck(op.force_id)))
    while c.queue:  # query, state, install; b's ack is lost
        batch, c.queue = c.queue, []
        for sender, dest, msg in batch:
            if dest not in c.down and not (isinstance(msg, ForceAck) and sender == mid("b")):
                c.step(dest, Received(sender, msg))
    assert c.cores["a"]._force is op and op.install is not None  # still resending to b
    c.run(1000)
    assert c.cores["a"]._force is None
    assert {m.uuid for m in c.cores["a"].current_view().members} == {"a", "b"}
