"""Unit tests of the core's API contract and its bounds (STYLE 11: every bound is tested)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
from gcs_strategies import messages as message_strategy
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.gcs.interface import GcsErrorCode, MemberId, MemberState
from replication.gcs.xcom.core import (
    Bootstrap,
    Broadcast,
    Core,
    CoreConfig,
    Event,
    ForceMembers,
    Join,
    Leave,
    Phase,
    Ready,
    Received,
    Tick,
)
from replication.gcs.xcom.messages import NOOP, Decide, Message
from replication.gcs.xcom.types import Ballot


CFG = CoreConfig(heartbeat_interval_ms=250, suspicion_timeout_ms=1000, member_expel_timeout_ms=1000)


def mid(name: str, inc: int = 1) -> MemberId:
    return MemberId(name, f"{name}:1", inc)


class Cluster:
    """Cores wired by a perfect, manual network (messages move on flush())."""

    def __init__(self, names: str, config: CoreConfig = CFG) -> None:
        self.now = 0
        self.config = config
        self.cores = {n: Core(mid(n), config) for n in names}
        self.queue: list[tuple[MemberId, str, Message]] = []
        self.down: set[str] = set()
        self.readies: dict[str, list[Ready]] = {n: [] for n in names}
        members = tuple(mid(n) for n in names)
        for n in names:
            self.step(n, Tick(0))
            self.step(n, Bootstrap(members))

    def step(self, name: str, event: Event) -> Ready:
        ready = self.cores[name].step(event)
        self.readies[name].append(ready)
        for to, msg in ready.sends:
            self.queue.append((self.cores[name].me, to.uuid, msg))
        return ready

    def flush(self) -> None:
        while self.queue:
            batch, self.queue = self.queue, []
            for sender, dest, msg in batch:
                if dest not in self.down and sender.uuid not in self.down:
                    self.step(dest, Received(sender, msg))

    def run(self, ms: int) -> None:
        end = self.now + ms
        while self.now < end:
            self.now += 50
            for n in self.cores:
                if n not in self.down:
                    self.step(n, Tick(self.now))
            self.flush()

    def delivered(self, name: str) -> list[bytes]:
        return [d.payload for r in self.readies[name] for d in r.deliveries]

    def errors(self, name: str) -> list[GcsErrorCode]:
        return [e.code for r in self.readies[name] for e in r.errors]


def test_a_broadcast_is_delivered_everywhere_in_the_same_position() -> None:
    c = Cluster("abc")
    ready = c.step("b", Broadcast(b"x"))
    assert ready.broadcast_seqs == [1]
    c.flush()
    positions = {n: [d.position for r in c.readies[n] for d in r.deliveries] for n in "abc"}
    assert positions["a"] == positions["b"] == positions["c"] and len(positions["a"]) == 1
    d = next(d for r in c.readies["a"] for d in r.deliveries)
    assert (d.origin, d.origin_seq, d.payload) == (mid("b"), 1, b"x")


def test_a_one_member_group_delivers_at_once() -> None:
    core = Core(mid("a"), CFG)
    core.step(Tick(0))
    core.step(Bootstrap((mid("a"),)))
    ready = core.step(Broadcast(b"solo"))
    assert [d.payload for d in ready.deliveries] == [b"solo"]


def test_broadcast_outside_a_view_is_refused() -> None:
    core = Core(mid("a"), CFG)
    ready = core.step(Broadcast(b"x"))
    assert [e.code for e in ready.errors] == [GcsErrorCode.NOT_IN_VIEW]
    assert ready.broadcast_seqs == []


def test_queue_bound_refuses_with_queue_full_and_frees_after_delivery() -> None:
    c = Cluster("abc", replace(CFG, broadcast_queue_max=3))
    seqs = [c.step("a", Broadcast(b"m%d" % i)).broadcast_seqs for i in range(4)]
    assert seqs[:3] == [[1], [2], [3]] and seqs[3] == []
    assert c.errors("a")[-1] is GcsErrorCode.QUEUE_FULL
    c.flush()
    assert c.cores["a"].queued_broadcasts == 0
    assert c.step("a", Broadcast(b"again")).broadcast_seqs == [4]


def test_queue_byte_bound_and_message_size_bound() -> None:
    c = Cluster("abc", replace(CFG, broadcast_queue_bytes_max=10, message_bytes_max=8))
    assert c.step("a", Broadcast(b"123456789")).errors[0].code is GcsErrorCode.MESSAGE_TOO_LARGE
    assert c.step("a", Broadcast(b"12345678")).broadcast_seqs == [1]
    assert c.step("a", Broadcast(b"123")).errors[0].code is GcsErrorCode.QUEUE_FULL


def test_without_a_majority_nothing_is_decided_and_the_wait_is_reported_once() -> None:
    c = Cluster("abc", replace(CFG, broadcast_stall_ms=1500))
    c.down = {"b", "c"}
    c.step("a", Broadcast(b"stuck"))
    c.run(4000)
    assert c.delivered("a") == []
    stalls = [e for r in c.readies["a"] for e in r.errors if e.code is GcsErrorCode.BROADCAST_STALLED]
    assert len(stalls) == 1 and stalls[0].seqs == (1,)
    states = {m.member.uuid: m.state for m in c.cores["a"].statistics().members}
    assert states == {"a": MemberState.ONLINE, "b": MemberState.UNREACHABLE, "c": MemberState.UNREACHABLE}
    # The majority comes back: the waiting message is delivered once.
    c.down = set()
    c.run(1000)
    assert c.delivered("a") == [b"stuck"] == c.delivered("b")


def test_force_members_refused_while_a_majority_is_reachable() -> None:
    c = Cluster("abc")
    c.down = {"c"}
    c.run(1500)
    ready = c.step("a", ForceMembers((mid("a"), mid("b"))))
    assert [e.code for e in ready.errors] == [GcsErrorCode.FORCE_REFUSED]
    assert ready.sends == []


def test_force_members_fails_when_a_listed_member_does_not_answer() -> None:
    c = Cluster("abc", replace(CFG, force_timeout_ms=1000))
    c.down = {"b", "c"}
    c.run(1500)
    c.step("a", ForceMembers((mid("a"), mid("b"))))
    c.run(1500)
    assert GcsErrorCode.FORCE_FAILED in c.errors("a")
    assert c.cores["a"].current_view().view_id.epoch == 0


def test_requests_in_the_wrong_phase_are_refused_and_change_nothing() -> None:
    core = Core(mid("a"), CFG)
    ready = core.step(Leave())
    assert [e.code for e in ready.errors] == [GcsErrorCode.INVALID_REQUEST]
    assert core.phase is Phase.IDLE
    core.step(Join((mid("b"),)))
    assert core.step(Leave()).phase is Phase.OFFLINE  # not in a view yet: just stop
    core = Core(mid("a"), CFG)
    core.step(Bootstrap((mid("a"),)))
    ready = core.step(Join((mid("b"),)))
    assert [e.code for e in ready.errors] == [GcsErrorCode.INVALID_REQUEST]
    assert core.phase is Phase.MEMBER
    ready = core.step(Bootstrap((mid("a"),)))
    assert [e.code for e in ready.errors] == [GcsErrorCode.INVALID_REQUEST]
    bad = Core(mid("a"), CFG)
    assert bad.step(Bootstrap((mid("b"),))).errors[0].code is GcsErrorCode.INVALID_REQUEST
    assert bad.phase is Phase.IDLE


def test_leave_reports_a_last_view_without_us_and_stops() -> None:
    c = Cluster("abc")
    c.step("c", Leave())
    c.run(500)
    views = [v for r in c.readies["c"] for v in r.views]
    assert mid("c") not in views[-1].members and views[-1].left == (mid("c"),)
    assert c.cores["c"].phase is Phase.OFFLINE
    assert c.cores["c"].step(Broadcast(b"x")).errors[0].code is GcsErrorCode.NOT_IN_VIEW


def test_join_times_out_without_seeds() -> None:
    core = Core(mid("z"), replace(CFG, join_timeout_ms=2000, join_retry_interval_ms=500))
    core.step(Tick(0))
    ready = core.step(Join((mid("a"),)))
    assert [to for to, _ in ready.sends] == [mid("a")]
    t = 0
    while core.phase is Phase.JOINING and t < 5000:
        t += 100
        ready = core.step(Tick(t))
    assert core.phase is Phase.OFFLINE and t == 2000
    assert [e.code for e in ready.errors] == [GcsErrorCode.JOIN_FAILED]


def test_a_clock_jump_is_a_pause_not_silence_and_a_backward_tick_is_ignored() -> None:
    c = Cluster("abc")
    c.run(500)
    core = c.cores["a"]
    ready = core.step(Tick(c.now + 60_000))  # we were paused for a minute
    assert ready.reachability == []
    ready = core.step(Tick(5))  # backwards: ignored
    assert ready.reachability == [] and ready.sends == []


def test_next_tick_is_reported_while_active() -> None:
    c = Cluster("abc")
    ready = c.step("a", Tick(0))
    assert ready.next_tick_ms is not None and 0 < ready.next_tick_ms <= CFG.heartbeat_interval_ms
    assert Core(mid("z"), CFG).step(Tick(0)).next_tick_ms is None


def test_statistics_snapshot() -> None:
    c = Cluster("abc")
    c.step("a", Broadcast(b"x"))
    c.flush()
    stats = c.cores["a"].statistics()
    assert stats.state is MemberState.ONLINE and stats.queued_broadcasts == 0
    assert stats.counters.broadcasts_accepted == 1 and stats.counters.deliveries == 1
    assert stats.latency.count == 1
    assert [m.member for m in stats.members] == [mid("a"), mid("b"), mid("c")]


def test_core_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        CoreConfig(broadcast_queue_max=0)
    with pytest.raises(ValueError):
        CoreConfig(event_horizon_slots=100, accept_ahead_slots_max=10)


def test_invariant_is_not_stripped_by_python_minus_o() -> None:
    code = "from replication.gcs.xcom.types import invariant\ninvariant(False, 'still checked')"
    proc = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "InvariantViolation: still checked" in proc.stderr


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcx"), message_strategy), max_size=12))
def test_step_never_raises_whatever_peers_send(inputs: list[tuple[str, Message]]) -> None:
    """Well-formed but arbitrary messages from members or strangers never crash step();
    inconsistent ones may at worst move the member to ERROR (reported, not raised)."""
    c = Cluster("abc")
    core = c.cores["a"]
    for sender, msg in inputs:
        ready = core.step(Received(mid(sender), msg))
        assert isinstance(ready, Ready)
        if core.phase is Phase.ERROR:
            assert any(e.code is GcsErrorCode.INTERNAL for e in ready.errors)
            break
    core.step(Tick(10_000))


def test_a_member_behind_the_decided_cache_goes_offline_as_behind() -> None:
    """decided_cache_slots_max bounds the log kept for laggards; past it they must rejoin."""
    config = replace(CFG, decided_cache_slots_max=20, member_expel_timeout_ms=600_000)
    c = Cluster("abc", config)
    c.down = {"c"}
    for i in range(30):
        c.step("a", Broadcast(b"m%d" % i))
        c.run(100)
    assert c.cores["a"].next_slot > 40
    c.down = set()
    c.run(2000)
    assert c.cores["c"].phase is Phase.OFFLINE
    assert GcsErrorCode.BEHIND in c.errors("c")


def test_the_pipeline_window_bounds_own_slots_in_flight() -> None:
    config = replace(CFG, pipeline_window_slots=3, batch_messages_max=1)
    c = Cluster("abc", config)
    c.down = {"b", "c"}  # nothing gets decided: proposals stay in flight
    for i in range(10):
        c.step("a", Broadcast(b"m%d" % i))
    accepts = {msg.slot for r in c.readies["a"] for _to, msg in r.sends if type(msg).__name__ == "Accept"}
    assert accepts and max(accepts) < c.cores["a"].next_slot + 3
    c.down = set()
    c.queue.clear()
    c.run(3000)
    assert c.delivered("b") == [b"m%d" % i for i in range(10)]


def _accepted_batches(c: Cluster, name: str) -> list[list[bytes]]:
    """The batches `name` proposed, in slot order (an Accept goes to every peer: once each)."""
    by_slot = {
        msg.slot: [payload for run in msg.value.runs for payload in run.payloads]
        for r in c.readies[name]
        for _to, msg in r.sends
        if type(msg).__name__ == "Accept" and type(msg.value).__name__ == "Batch"
    }
    return [by_slot[slot] for slot in sorted(by_slot)]


@pytest.mark.parametrize("in_flight_max", [1, 2])
def test_broadcasts_wait_while_own_batches_are_in_flight_then_go_as_one_batch(in_flight_max: int) -> None:
    c = Cluster("abc", replace(CFG, proposals_in_flight_max=in_flight_max))
    for i in range(8):
        c.step("a", Broadcast(b"m%d" % i))
    # Nothing answered yet: only in_flight_max slots were proposed, one broadcast each; the rest
    # wait in the queue, and the slot kept for them is not skipped.
    sent = {tuple(batch) for batch in _accepted_batches(c, "a")}
    assert sent == {(b"m%d" % i,) for i in range(in_flight_max)}
    assert not any(type(msg).__name__ == "Skip" for r in c.readies["a"] for _to, msg in r.sends)
    c.flush()
    batches = _accepted_batches(c, "a")
    assert [p for batch in batches for p in batch] == [b"m%d" % i for i in range(8)]
    assert len(batches) <= in_flight_max + 2  # the waiting ones went out together
    assert c.delivered("b") == c.delivered("c") == [b"m%d" % i for i in range(8)]


def test_a_membership_change_does_not_wait_behind_batches_in_flight() -> None:
    c = Cluster("abc", replace(CFG, proposals_in_flight_max=1))
    c.down = {"b", "c"}  # nothing gets chosen: a's batch stays in flight
    c.step("a", Broadcast(b"x"))
    c.step("a", Broadcast(b"y"))
    c.step("a", Leave())
    reconfigs = [msg for r in c.readies["a"] for _to, msg in r.sends
                 if type(msg).__name__ == "Accept" and type(msg.value).__name__ == "Reconfig"]
    assert reconfigs, "the LEAVE was held behind the batch in flight"
    assert _accepted_batches(c, "a") == [[b"x"]]


def test_a_bootstrap_with_seeds_is_refused_when_a_live_member_answers() -> None:
    """One group per name: a restarted member told to bootstrap finds the running group."""
    c = Cluster("ab")
    c.cores["x"] = Core(MemberId("x", "x:1", 1), CFG)
    c.readies["x"] = []
    c.step("x", Tick(c.now))
    ready = c.step("x", Bootstrap((c.cores["x"].me,), (MemberId("a", "a:1", 0), MemberId("b", "b:1", 0))))
    assert ready.phase is Phase.PROBING and ready.views == [] and len(ready.sends) == 2
    c.flush()
    assert GcsErrorCode.GROUP_EXISTS in c.errors("x") and c.cores["x"].phase is Phase.OFFLINE
    assert c.cores["x"].current_view() is None


def test_a_bootstrap_with_seeds_starts_the_group_when_nobody_answers_within_the_probe() -> None:
    config = replace(CFG, bootstrap_probe_ms=1_000, join_retry_interval_ms=250)
    core = Core(mid("x"), config)
    core.step(Tick(0))
    ready = core.step(Bootstrap((mid("x"),), (mid("gone", 0),)))
    assert ready.phase is Phase.PROBING and ready.next_tick_ms == 250
    probes = 1
    for now in range(250, 1_000, 250):
        ready = core.step(Tick(now))
        probes += len(ready.sends)
        assert ready.phase is Phase.PROBING
    assert probes == 4  # one per join_retry_interval_ms
    ready = core.step(Tick(1_000))
    assert ready.phase is Phase.MEMBER and [v.members for v in ready.views] == [(mid("x"),)]
    # A pause of ours during the probe is not silence of the others: the probe goes on.
    paused = Core(mid("y"), config)
    paused.step(Tick(0))
    paused.step(Bootstrap((mid("y"),), (mid("gone", 0),)))
    assert paused.step(Tick(10_000)).phase is Phase.PROBING


def test_consensus_messages_from_non_members_are_dropped_and_counted() -> None:
    c = Cluster("ab")
    stranger = MemberId("z", "z:1", 1)
    c.step("a", Received(stranger, Decide(c.cores["a"].next_slot, Ballot(0), NOOP)))
    assert c.cores["a"].statistics().counters.messages_from_non_members == 1
    assert c.cores["a"].next_slot == 1  # nothing learned from another group


def test_a_second_live_process_with_a_members_uuid_is_refused_and_a_crashed_ones_replaced() -> None:
    """Duplicate uuid (a copied config, two processes): refused while the member with that uuid
    is heard from; once it is silent the join is a restart and replaces it."""
    c = Cluster("abc")
    c.run(500)
    dup = Core(MemberId("b", "elsewhere:1", 2), CFG)
    dup.step(Tick(c.now))

    def ask() -> list[Message]:
        ready = dup.step(Join((mid("a"),)))
        answers: list[Message] = []
        for to, msg in ready.sends:
            assert to.uuid == "a"
            answer = c.step("a", Received(dup.me, msg))
            answers += [m for t, m in answer.sends if t == dup.me]
        return answers

    answers = ask()
    assert [type(m).__name__ for m in answers] == ["JoinRefused"]
    assert "same uuid" in answers[0].reason  # type: ignore[attr-defined]
    ready = dup.step(Received(mid("a"), answers[0]))
    assert ready.phase is Phase.OFFLINE and GcsErrorCode.JOIN_REFUSED in [e.code for e in ready.errors]
    # b crashes: after it is silent the same join is a new incarnation of b and goes ahead.
    c.down.add("b")
    c.run(1_000)
    dup = Core(MemberId("b", "elsewhere:1", 3), CFG)
    dup.step(Tick(c.now))
    assert ask() == []  # no refusal: a's proposal to add it is under way
    assert any(rc.members == (dup.me,) for rc in c.cores["a"]._reconfigs) or c.cores["a"]._mine
