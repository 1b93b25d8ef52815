"""Hypothesis strategies for the consensus core's messages (shared by the gcs unit tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from replication.gcs.interface import MemberId, Slot, ViewId
from replication.gcs.xcom import messages as m
from replication.gcs.xcom.types import Ballot

u64 = st.integers(0, 2**64 - 1)
slots = u64.map(Slot)
ballots = u64.map(Ballot)
names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
members = st.builds(
    MemberId,
    uuid=names,
    address=st.builds(lambda h, p: f"{h}:{p}", st.from_regex(r"[a-z0-9.]{1,12}", fullmatch=True), st.integers(0, 65535)),
    incarnation=st.integers(0, 2**32 - 1),
)
view_ids = st.builds(ViewId, st.integers(0, 2**32 - 1), u64)
runs = st.builds(m.Run, members, st.integers(1, 2**64 - 1), st.lists(st.binary(max_size=40), min_size=1, max_size=4).map(tuple))
reconfigs = st.builds(m.Reconfig, st.sampled_from(list(m.ReconfigOp)), st.lists(members, min_size=1, max_size=3).map(tuple))
values = st.one_of(st.just(m.NOOP), st.builds(m.Batch, st.lists(runs, min_size=1, max_size=3).map(tuple)), reconfigs)
configs = st.builds(
    m.ConfigRecord, view_ids, slots, st.lists(members, max_size=4, unique=True).map(tuple)
)
slot_tuples = st.lists(slots, max_size=5).map(tuple)


@st.composite
def ranges(draw: st.DrawFn) -> m.SlotRange:
    a, b = sorted((draw(slots), draw(slots)))
    return m.SlotRange(a, b)


@st.composite
def ordered_pair(draw: st.DrawFn, cls: type) -> object:
    a, b = sorted((draw(slots), draw(slots)))
    return cls(a, b)


messages = st.one_of(
    st.builds(m.Accept, slots, ballots, values),
    st.builds(m.Accepted, slots, ballots),
    st.builds(m.Nack, slots, ballots, ballots),
    st.builds(m.Prepare, ballots, st.lists(slots, min_size=1, max_size=5).map(tuple)),
    st.builds(m.Promise, ballots, slot_tuples, st.lists(st.builds(m.AcceptedValue, slots, ballots, values), max_size=3).map(tuple)),
    st.builds(m.Decide, slots, ballots, values),
    st.builds(m.Learn, slots, ballots),
    st.builds(lambda r, b: m.Skip(r.first, r.end, b), ranges(), ballots),
    ordered_pair(m.Fetch),
    st.builds(m.Forgotten, slots),
    st.builds(m.Heartbeat, view_ids, slots),
    st.just(m.JoinRequest()),
    st.builds(m.Welcome, members, slots, st.lists(configs, min_size=1, max_size=3).map(tuple), st.lists(st.builds(m.OriginSeq, members, u64), max_size=3).map(tuple)),
    st.builds(m.JoinRefused, members, names),
    st.builds(m.NotMember, members, view_ids),
    st.builds(m.ForceQuery, u64, view_ids),
    st.builds(m.ForceState, u64, slots, slot_tuples, slots),
    st.builds(m.ForceInstall, u64, configs, st.lists(ranges(), max_size=3).map(tuple)),
    st.builds(m.ForceAck, u64),
    st.builds(m.Forward, runs),
    st.builds(m.ForwardReconfig, reconfigs),
)
