"""The sans-IO consensus core: Mencius-style multi-Paxos with views, as MySQL's XCom.

API (the contract the asyncio binding and the simulator code against)
=====================================================================

``Core(me: MemberId, config: CoreConfig)`` is one *incarnation* of a member. It has one input
verb, ``step(event) -> Ready``; it never does I/O, never reads a clock, never sleeps.

Events (frozen, slotted dataclasses; ``Event`` is their union):

- ``Tick(now_ms: int)`` -- the driver's monotonic time in ms. Drive it at least at
  ``Ready.next_tick_ms`` (ticking more often is harmless). A backwards tick is ignored;
  a forward jump larger than ``CoreConfig.clock_jump_ms`` is treated as a pause of this member
  (peers are not blamed for the silence we did not observe).
- ``Received(sender: MemberId, msg: Message)`` -- a message from a peer. The transport must
  authenticate ``sender`` (handshake) and decode with ``messages.decode_message``.
- ``Broadcast(payload: bytes)`` -- queue an application message for total-order delivery.
- ``Bootstrap(members: tuple[MemberId, ...], seeds: tuple[MemberId, ...] = ())`` -- start a
  new group whose first view is ``members`` (every listed member must be given the same tuple;
  usually just ``(me,)``). With ``seeds`` (only their addresses matter) the member first
  *probes* them for ``bootstrap_probe_ms``: if a live member of a group answers, the bootstrap
  is refused (``GROUP_EXISTS`` in ``Ready.errors``, phase OFFLINE: join instead) -- two groups
  with the same name must never run at once. Without seeds it starts at once (the caller
  vouches that no group is running, e.g. every member bootstrapping together).
- ``Join(seeds: tuple[MemberId, ...])`` -- ask seeds to add this incarnation. Only the seeds'
  ``address`` matters: their uuid/incarnation may be placeholders.
- ``Leave()`` -- leave the group (the final view, without this member, is reported).
- ``ForceMembers(members: tuple[MemberId, ...])`` -- install a configuration with only the
  listed members (matched by address against the current view) without consensus. Refused
  (``Ready.errors``) while a majority of the current view is reachable.

``Ready`` (the driver's duties after each step, in this order):

- ``sends: list[tuple[MemberId, Message]]`` -- encode with ``messages.encode_message`` and
  send to ``member.address``. Best effort: the core retransmits what matters.
- ``deliveries: list[Delivery]`` -- application messages in total order (``position`` is
  identical on every member, ``origin``/``origin_seq`` name the broadcast).
- ``views: list[View]`` -- views installed, interleaved with deliveries by
  ``View.start_slot`` (a view applies to deliveries whose slot >= its start_slot). The last
  view of a member that leaves or is expelled does not contain it.
- ``reachability: list[ReachabilityChange]`` -- peers becoming UNREACHABLE or ONLINE.
- ``errors: list[GcsEvent]`` -- refusals and notable events: force refused, broadcast refused
  (NOT_IN_VIEW, QUEUE_FULL, MESSAGE_TOO_LARGE), BROADCAST_STALLED (waited longer than
  ``broadcast_stall_ms``: the driver may time the caller out; the message stays queued and is
  delivered at most once later), EXPELLED, JOIN_FAILED, ...
- ``broadcast_seqs: list[int]`` -- the origin_seq assigned to each accepted Broadcast.
- ``accepted: list[AcceptedValue]`` -- what this member's acceptor accepted in this step. For
  observers only (the simulator's safe-delivery checker, tracing): XCom keeps acceptor state
  in memory, so there is nothing to persist.
- ``next_tick_ms: int | None`` -- when the core next needs a Tick (None: no timer pending).
- ``phase: Phase`` -- the member's phase after this step.

Other public surface: ``Core.phase``, ``Core.me``, ``Core.current_view()``, ``Core.forced``,
``Core.known_views()`` (current and scheduled configurations), ``Core.suspected()``,
``Core.pending_reconfigs()``,
``Core.statistics() ->
GcsStatistics``, ``Core.next_slot`` (next slot to execute), ``Core.queued_broadcasts``.
A Core whose phase is OFFLINE or ERROR stays so: to rejoin, build a new Core with a higher
incarnation (acceptor state is in memory only).

Theory of operation
===================

*Slots.* Consensus runs per slot (single-decree Paxos). The configuration in effect at a slot
fixes its acceptors (quorum = majority of its members) and its owner: slots are dealt
round-robin to the configuration's leaders (all members; only the first member with
``paxos_single_leader``). The owner proposes in its own slots at ballot round 0 without a
prepare (only the owner can use round 0, so an acceptor may accept it straight away).
Values are batches of broadcasts (``Batch``), membership changes (``Reconfig``) or ``NoOp``.

*Skips.* An owner with nothing to send *skips* its slots below the highest slot it has seen
used: a Skip from the owner is a known no-op without a quorum, because the owner never
proposes anything but a no-op in a slot it skipped, and nobody else may propose anything but
a value some acceptor reports (none) or a no-op. A Fetch for an owner's unused slot makes it
skip there too, so a lost Skip cannot stall the group.

*Revocation.* The slots of a suspected owner are taken over with a full prepare/accept at a
higher ballot; the proposer ADOPTS the highest-ballot value reported by a majority of
promises and proposes a no-op only if none was reported (Bug #28966455 was a takeover that
proposed a no-op over a value a majority had accepted). An acceptor that knows the slot
decided answers with the decision instead.

*Pipelining and horizon.* A membership change decided in slot s takes effect at slot
s + event_horizon_slots, so the configuration of slot t is known once every slot up to
t - horizon is executed; owners propose only inside that window (and within
``pipeline_window_slots``). Every member executes slots in order, so every member switches
view at the same slot (view synchrony). Under load an owner batches: while
``proposals_in_flight_max`` of its batches are proposed and not yet chosen, new broadcasts wait
and its next own slot is kept for them (neither proposed nor skipped); when one is chosen they
all go in that slot as one batch. An idle owner proposes at once; a membership change never
waits. A pending change pushes the group forward: owners
skip and suspected owners are revoked up to its start, so the view changes even when idle.

*Execution.* Slots are executed in order. Each origin's broadcasts are delivered exactly once
and in origin order (replicated per-origin next seq); a batch from an origin outside the
slot's configuration is dropped (closed group). An origin whose batch did not make it
(revoked to a no-op, or out of order) proposes again from its first undelivered message.

*Joining.* A seed proposes JOIN; every member that executes it sends the joiner a Welcome
(the replicated state after that slot). The joiner fetches decided slots from there, silently,
and starts delivering at its first view. A crashed member restarts as a new incarnation;
joining replaces the older incarnation with the same uuid or address — except that a join
with the uuid of a member at another address that was heard from within
_DUPLICATE_ALIVE_HEARTBEATS heartbeat intervals is a second live process with that uuid, and is
refused (JoinRefused: the joiner goes OFFLINE with JOIN_REFUSED). A member that leaves at
a switch (left, expelled) first hands the decisions before the switch to peers behind it, and
answers Fetch while OFFLINE: with the rest of its configuration dead it may hold the only copy.

*One group.* A bootstrap with seeds probes them first (a Heartbeat at view 0:0, answered with
NotMember by every live member of a group) and is refused with GROUP_EXISTS if one answers.
Consensus messages are taken only from peers (members of our current or scheduled
configurations): another group under the same name reaches us by address, and its decisions
are not ours.

*Failure detection.* Heartbeats every ``heartbeat_interval_ms``; any message counts as a
sign of life. A peer silent for ``suspicion_timeout_ms`` is UNREACHABLE; suspected for
``member_expel_timeout_ms`` more, it is expelled -- proposed only by a member that heard
recently from a majority of the view and of the configuration left after the expel (so a
member dead for less than the suspicion timeout is not counted as alive), and applied only
if the new configuration keeps a majority of the one that decided it (concurrent expels
never remove a majority together). Without a majority nothing is decided: broadcasts wait in a
bounded queue and ``BROADCAST_STALLED`` is reported.

*force_members.* The forcing member asks the listed members for their progress, picks a start
slot above everything any of them knows decided, declares the slots nobody knows decided
below it no-ops, and installs the listed members at that slot with a higher ballot epoch
(so nothing from the old configuration can be accepted there). Refused while a majority of
the current view is reachable. It is the DBA's override: decisions only the lost majority
knew are gone, exactly as with XCom. A slot counts as known only if a listed member holds it
(a joiner never held the slots before its welcome); listed members the group removes before the
forced start are left out, and a member removed before it refuses to force. Members that learn
of the force late get it from any forced peer they heartbeat with (a joiner, a new Welcome);
until then decisions of the unknown epoch are not applied.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import replace, dataclass, field
from typing import assert_never

from replication.gcs.interface import (
    MEMBERS_MAX,
    Delivery,
    GcsCounters,
    GcsErrorCode,
    GcsEvent,
    GcsStatistics,
    LatencyStatistics,
    MemberId,
    MemberState,
    MemberStatistics,
    Position,
    ReachabilityChange,
    Slot,
    View,
    ViewId,
)
from replication.gcs.xcom.messages import (
    NOOP,
    Accept,
    Accepted,
    AcceptedValue,
    Batch,
    ConfigRecord,
    Decide,
    Learn,
    Fetch,
    ForceAck,
    ForceInstall,
    ForceQuery,
    ForceState,
    Forgotten,
    Forward,
    ForwardReconfig,
    Heartbeat,
    JoinRefused,
    JoinRequest,
    Message,
    Nack,
    NoOp,
    NotMember,
    OriginSeq,
    Prepare,
    Promise,
    Reconfig,
    ReconfigOp,
    Run,
    Skip,
    SlotRange,
    Value,
    Welcome,
)
from replication.gcs.xcom.quorum import Config
from replication.gcs.xcom.types import (
    BALLOT_RANK_MAX,
    Ballot,
    InvariantViolation,
    ballot_epoch,
    ballot_round,
    invariant,
    make_ballot,
    owner_ballot,
)

__all__ = [
    "Core",
    "CoreConfig",
    "Phase",
    "Ready",
    "Event",
    "Tick",
    "Received",
    "Broadcast",
    "Bootstrap",
    "Join",
    "Leave",
    "ForceMembers",
]


# =========================================================================== events


@dataclass(frozen=True, slots=True)
class Tick:
    now_ms: int


@dataclass(frozen=True, slots=True)
class Received:
    sender: MemberId
    msg: Message


@dataclass(frozen=True, slots=True)
class Broadcast:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Bootstrap:
    members: tuple[MemberId, ...]
    seeds: tuple[MemberId, ...] = ()


@dataclass(frozen=True, slots=True)
class Join:
    seeds: tuple[MemberId, ...]


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class ForceMembers:
    members: tuple[MemberId, ...]


Event = Tick | Received | Broadcast | Bootstrap | Join | Leave | ForceMembers


class Phase(enum.Enum):
    """Lifecycle of one incarnation. Allowed moves are in _TRANSITIONS (STYLE 4)."""

    IDLE = "idle"  # built, neither bootstrapped nor joining
    PROBING = "probing"  # asked to bootstrap: making sure no group answers through the seeds
    JOINING = "joining"  # asking seeds; no state yet
    CATCHING_UP = "catching_up"  # welcomed: learning silently until its first view
    MEMBER = "member"  # in the view: delivers, proposes, detects failures
    OFFLINE = "offline"  # left, expelled, refused or gave up: final
    ERROR = "error"  # an invariant failed: final


_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.MEMBER, Phase.PROBING, Phase.JOINING, Phase.ERROR}),
    Phase.PROBING: frozenset({Phase.MEMBER, Phase.OFFLINE, Phase.ERROR}),
    Phase.JOINING: frozenset({Phase.CATCHING_UP, Phase.OFFLINE, Phase.ERROR}),
    Phase.CATCHING_UP: frozenset({Phase.MEMBER, Phase.OFFLINE, Phase.ERROR}),
    Phase.MEMBER: frozenset({Phase.OFFLINE, Phase.ERROR}),
    Phase.OFFLINE: frozenset(),
    Phase.ERROR: frozenset(),
}

_ACTIVE = frozenset({Phase.CATCHING_UP, Phase.MEMBER})


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Tunables. Every queue and window is bounded here; the behaviour at each bound is stated.

    Group-wide settings (must be equal on all members): event_horizon_slots,
    paxos_single_leader.
    """

    # Slots a membership change waits before taking effect (XCom's event horizon).
    event_horizon_slots: int = 10
    # Own slots in flight are also limited to this many slots above the next slot to execute.
    pipeline_window_slots: int = 10
    # Own batches proposed and not yet chosen. At the bound, new broadcasts wait (in the
    # broadcast queue) for the next own slot after one is chosen, so under load they go out
    # together in one batch instead of one slot each (Nagle-style; an idle member proposes at
    # once). Our next own slot is neither proposed nor skipped while it waits, so later slots of
    # other owners wait for it at most one round trip.
    proposals_in_flight_max: int = 1
    # A batch (one slot's value) holds at most this many messages / bytes; more waits a slot.
    batch_messages_max: int = 256
    batch_bytes_max: int = 1_048_576
    # Bound of the broadcast queue (undelivered own messages, in flight included).
    # At the bound a Broadcast is refused with QUEUE_FULL.
    broadcast_queue_max: int = 10_000
    broadcast_queue_bytes_max: int = 256 * 1_048_576
    # A single payload over this is refused with MESSAGE_TOO_LARGE.
    message_bytes_max: int = 150_000_000
    # A broadcast undelivered for this long is reported once as BROADCAST_STALLED.
    broadcast_stall_ms: int = 10_000
    # Failure detector (DESIGN §3): heartbeats, UNREACHABLE after suspicion_timeout_ms of
    # silence, expel proposed after member_expel_timeout_ms more.
    heartbeat_interval_ms: int = 1_000
    suspicion_timeout_ms: int = 5_000
    member_expel_timeout_ms: int = 5_000
    # Retransmission of Accept/Prepare, and the period of Fetch while execution is stuck.
    retransmit_interval_ms: int = 300
    # A Fetch asks for at most this many slots; a responder answers at most this many.
    fetch_slots_max: int = 64
    # A revocation round prepares at most this many slots.
    revoke_slots_max: int = 64
    # Executed slots kept to answer Fetch from lagging members; past it, oldest are dropped
    # and a member that needs them gets Forgotten (-> BEHIND, OFFLINE).
    decided_cache_slots_max: int = 100_000
    # An acceptor ignores proposals this far above its next slot (memory bound).
    accept_ahead_slots_max: int = 10_000
    # paxos_single_leader: forwarded runs waiting at the leader; at the bound newer ones are
    # dropped (their origins retransmit).
    forward_queue_max: int = 1_024
    join_retry_interval_ms: int = 1_000
    join_timeout_ms: int = 60_000
    # A bootstrap with seeds probes them this long (every join_retry_interval_ms) before it
    # starts a group; an answer from a live member refuses it (GROUP_EXISTS).
    bootstrap_probe_ms: int = 3_000
    force_timeout_ms: int = 10_000
    # A tick later than this after the previous one is a pause of ours, not peers' silence.
    clock_jump_ms: int = 3_000
    paxos_single_leader: bool = False
    # Mutation-testing hook ONLY: a taking-over proposer that ignores accepted values in
    # promises (Bug #28966455). Tests prove the simulator catches it; never turn it off.
    adopt_promised_values: bool = True

    def __post_init__(self) -> None:
        positive = (
            "event_horizon_slots",
            "pipeline_window_slots",
            "proposals_in_flight_max",
            "batch_messages_max",
            "batch_bytes_max",
            "broadcast_queue_max",
            "broadcast_queue_bytes_max",
            "message_bytes_max",
            "broadcast_stall_ms",
            "heartbeat_interval_ms",
            "suspicion_timeout_ms",
            "retransmit_interval_ms",
            "fetch_slots_max",
            "revoke_slots_max",
            "decided_cache_slots_max",
            "accept_ahead_slots_max",
            "forward_queue_max",
            "join_retry_interval_ms",
            "join_timeout_ms",
            "bootstrap_probe_ms",
            "force_timeout_ms",
            "clock_jump_ms",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"CoreConfig.{name} must be > 0")
        if self.member_expel_timeout_ms < 0:
            raise ValueError("CoreConfig.member_expel_timeout_ms must be >= 0")
        if self.accept_ahead_slots_max < 2 * self.event_horizon_slots:
            raise ValueError("CoreConfig.accept_ahead_slots_max must be >= 2 * event_horizon_slots")


@dataclass(slots=True)
class Ready:
    """What the driver must do after a step (see the module docstring)."""

    sends: list[tuple[MemberId, Message]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    views: list[View] = field(default_factory=list)
    reachability: list[ReachabilityChange] = field(default_factory=list)
    errors: list[GcsEvent] = field(default_factory=list)
    broadcast_seqs: list[int] = field(default_factory=list)
    accepted: list[AcceptedValue] = field(default_factory=list)
    next_tick_ms: int | None = None
    phase: Phase = Phase.IDLE


# =========================================================================== internals

_NEVER = 1 << 62  # a deadline that never comes
_NO_BALLOT = Ballot(-1)

_ACCEPT = 0  # proposal phases
_PREPARE = 1
_BACKOFF = 2  # nacked: retry with a higher ballot at retry_ms (or drop)

# Messages a member handles from anyone; the rest only from peers (see _on_message). A
# force_members may come from a member we do not know yet (it joined while we were cut off):
# its messages check who is listed themselves.
_FROM_ANYONE: frozenset[type] = frozenset(
    {Fetch, Heartbeat, JoinRequest, NotMember, Welcome, JoinRefused, ForceQuery, ForceState, ForceInstall, ForceAck}
)

_LATENCY_BUCKETS_MS = (1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, -1)
_SKIP_RANGES_MAX = 64  # skip ranges remembered per owner (see _add_skip)
# A join whose uuid belongs to a member of the group heard from within this many heartbeat
# intervals is a duplicate (a second process with the same uuid), refused; a silent one is a
# crashed incarnation, which the join replaces.
_DUPLICATE_ALIVE_HEARTBEATS = 2


class _AcceptorSlot:
    __slots__ = ("promised", "ballot", "value")

    def __init__(self) -> None:
        self.promised: Ballot = Ballot(0)
        self.ballot: Ballot = _NO_BALLOT
        self.value: Value = NOOP


class _Proposal:
    __slots__ = ("slot", "ballot", "value", "phase", "config", "acks", "best", "sent_ms", "retry_ms", "owned")

    def __init__(self, slot: Slot, ballot: Ballot, value: Value, phase: int, config: Config, owned: bool, now_ms: int):
        self.slot = slot
        self.ballot = ballot
        self.value = value
        self.phase = phase
        self.config = config
        self.acks: set[MemberId] = set()  # accepted (phase 2) or promised (phase 1)
        self.best: AcceptedValue | None = None  # highest-ballot value reported by promises
        self.sent_ms = now_ms
        self.retry_ms = _NEVER
        self.owned = owned  # True: our own slot (we keep it alive ourselves)


class _ForceOp:
    __slots__ = ("force_id", "members", "states", "deadline_ms", "sent_ms", "install", "acks")

    def __init__(self, force_id: int, members: tuple[MemberId, ...], deadline_ms: int, now_ms: int) -> None:
        self.force_id = force_id
        self.members = members
        self.states: dict[MemberId, ForceState] = {}
        self.deadline_ms = deadline_ms
        self.sent_ms = now_ms
        self.install: ForceInstall | None = None
        self.acks: set[MemberId] = set()


class _Counters:
    __slots__ = tuple(GcsCounters.__dataclass_fields__)

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def snapshot(self) -> GcsCounters:
        return GcsCounters(**{name: getattr(self, name) for name in self.__slots__})


# =========================================================================== the core


class Core:
    """One incarnation of a member's consensus engine. See the module docstring."""

    def __init__(self, me: MemberId, config: CoreConfig) -> None:
        self.me = me
        self.cfg = config
        self._phase = Phase.IDLE
        self._ready: Ready = Ready()
        self._now_ms = 0
        self._clock_started = False
        self._wakeup_ms = _NEVER
        self._horizon = config.event_horizon_slots
        self._window = min(config.event_horizon_slots, config.pipeline_window_slots)

        # Replicated state (identical on every member after executing the same slots).
        self._configs: list[Config] = []  # configs[0] is in effect at _next_slot; rest scheduled
        self._view: View | None = None  # the last view installed
        self._next_slot = Slot(1)
        self._origin_next: dict[MemberId, int] = {}
        self._force_start = 0  # start slot of the latest forced configuration

        # Learner.
        self._decided: dict[int, tuple[Ballot, Value]] = {}  # known decided, not executed
        self._log: dict[int, tuple[Ballot, Value]] = {}  # executed, kept for Fetch
        self._log_floor = 0  # executed slots below this were dropped from _log
        self._skips: dict[MemberId, list[list[int]]] = {}  # owner -> [first, end, epoch]
        self._frontier = 0  # highest slot known to need a decision
        self._stall_since_ms: int | None = None
        self._revoked_upto = 0  # slots up to here were considered for revocation
        self._suspect_changed_ms = 0  # when the last peer became suspected
        self._revoke_not_before_ms = 0  # staggering: our turn to revoke
        self._forgotten_by: set[MemberId] = set()  # peers that no longer hold our next slot
        self._fetch_sent_ms = -_NEVER
        self._fetch_rotation = 0

        # Acceptor (in memory only: a new incarnation starts empty).
        self._acc: dict[int, _AcceptorSlot] = {}

        # Proposer.
        self._proposals: dict[int, _Proposal] = {}
        self._mine: dict[int, Value] = {}  # own values in flight, by slot, until executed
        self._own_next = 0  # own slots below this are proposed or skipped
        self._skip_first = -1  # skip range accumulated during this step
        self._skip_end = -1
        self._skip_ballot = Ballot(0)

        # Broadcast queue: own undelivered messages, seq -> (payload, enqueued_ms).
        self._pending: dict[int, tuple[bytes, int]] = {}
        self._pending_bytes = 0
        self._seq_next = 1
        self._send_seq = 1  # next own seq to put into a proposal / forward
        self._delivered_seq = 0  # own seqs <= this are delivered
        self._stall_report_seq = 1  # own seqs below this were reported stalled (or delivered)
        self._forward_sent_ms = -_NEVER
        self._forward_reconfig_ms = -_NEVER
        self._forwarded: list[Run] = []  # single leader: runs forwarded to us, to propose
        self._reconfigs: list[Reconfig] = []  # membership changes to propose
        self._leaving = False
        self._expel_queued: set[MemberId] = set()
        self._welcomes: dict[MemberId, Welcome] = {}

        # Failure detector.
        self._peers: tuple[MemberId, ...] = ()
        self._last_heard: dict[MemberId, int] = {}  # for suspicion: shifted over our own pauses
        # When a message from the peer really arrived (never shifted): the only evidence that
        # counts as "alive now" when deciding whether an expel leaves a live majority.
        self._heard_ms: dict[MemberId, int] = {}
        self._suspected: dict[MemberId, int] = {}  # member -> suspected since (ms)
        self._peer_next: dict[MemberId, int] = {}
        self._hb_due_ms = 0

        # Join / force.
        self._seeds: tuple[MemberId, ...] = ()
        self._bootstrap_members: tuple[MemberId, ...] = ()
        self._join_retry_ms = _NEVER
        self._join_deadline_ms = _NEVER
        self._force: _ForceOp | None = None
        self._forced: ForceInstall | None = None  # the latest force applied here (to resend)
        self._force_seq = 0

        self._counters = _Counters()
        self._latency_count = 0
        self._latency_total_ms = 0
        self._latency_max_ms = 0
        self._latency_buckets = [0] * len(_LATENCY_BUCKETS_MS)

    # ------------------------------------------------------------------ public surface

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def next_slot(self) -> Slot:
        return self._next_slot

    def set_member_expel_timeout_ms(self, ms: int) -> None:
        """group_replication_member_expel_timeout changed at runtime (a per-member setting):
        applies from the next tick, also to members suspected already. Raises ValueError."""
        self.cfg = replace(self.cfg, member_expel_timeout_ms=ms)

    def current_view(self) -> View | None:
        """The last view installed (None unless MEMBER)."""
        return self._view if self._phase is Phase.MEMBER else None

    def known_views(self) -> tuple[View, ...]:
        """The configuration in effect at next_slot and those scheduled after it."""
        return tuple(c.view(None) for c in self._configs)

    def suspected(self) -> tuple[MemberId, ...]:
        """Peers this member currently considers UNREACHABLE."""
        return tuple(self._suspected)

    def pending_reconfigs(self) -> tuple[Reconfig, ...]:
        """Membership changes this member knows of that are not applied yet: queued, in flight,
        accepted by its acceptor, or decided but not executed. For tests and diagnostics."""
        found: list[Reconfig] = list(self._reconfigs)
        values: list[Value] = list(self._mine.values())
        values += [p.value for p in self._proposals.values()]
        values += [v for _b, v in self._decided.values()]
        values += [a.value for a in self._acc.values() if a.ballot != _NO_BALLOT]
        found += [v for v in values if isinstance(v, Reconfig)]
        return tuple(found)

    @property
    def forced(self) -> ForceInstall | None:
        """The latest force_members this member applied (its configuration and the slots it
        declared empty), or None. For observers: the history forks at its first gap."""
        return self._forced

    @property
    def queued_broadcasts(self) -> int:
        """Own broadcasts not delivered yet (in flight included)."""
        return len(self._pending)

    def statistics(self) -> GcsStatistics:
        members = []
        if self._configs:
            for m in self._configs[0].members:
                if m == self.me:
                    state, heard, executed = self._member_state(), self._now_ms, self._next_slot
                else:
                    state = MemberState.UNREACHABLE if m in self._suspected else MemberState.ONLINE
                    heard = self._last_heard.get(m)
                    executed = self._peer_next.get(m)
                members.append(MemberStatistics(m, state, heard, Slot(executed) if executed is not None else None))
        buckets = tuple(zip(_LATENCY_BUCKETS_MS, self._latency_buckets, strict=True))
        return GcsStatistics(
            me=self.me,
            state=self._member_state(),
            view_id=self._configs[0].view_id if self._configs else None,
            executed_slot=self._next_slot,
            queued_broadcasts=len(self._pending),
            counters=self._counters.snapshot(),
            members=tuple(members),
            latency=LatencyStatistics(
                self._latency_count, self._latency_total_ms, self._latency_max_ms, buckets
            ),
        )

    def step(self, event: Event) -> Ready:
        """Feed one event; return the driver's duties. Never raises for a peer's behaviour.

        An internal invariant failure moves the member to ERROR and is reported as an
        INTERNAL error in the returned Ready (it is not swallowed: the member stops).
        """
        ready = self._ready = Ready()
        if self._phase in (Phase.OFFLINE, Phase.ERROR):
            ready.phase = self._phase
            if isinstance(event, Broadcast):
                self._refuse(GcsErrorCode.NOT_IN_VIEW, "this incarnation is no longer in the group")
            elif (
                self._phase is Phase.OFFLINE
                and type(event) is Received
                and type(event.msg) is Fetch
                and event.sender in self._last_heard
            ):
                # Left or expelled, we may hold decisions our former peers still need to
                # reach the same switch (see _last_words): answer from the log, read-only.
                self._on_fetch(event.sender, event.msg)
            return ready
        try:
            match event:
                case Received(sender=sender, msg=msg):
                    self._counters.messages_received += 1
                    self._on_message(sender, msg)
                case Tick(now_ms=now_ms):
                    if not self._on_tick(now_ms):
                        ready.next_tick_ms = self._wakeup_ms if self._wakeup_ms < _NEVER else None
                        ready.phase = self._phase
                        return ready
                case Broadcast(payload=payload):
                    self._on_broadcast(payload)
                case Bootstrap(members=members, seeds=seeds):
                    self._on_bootstrap(members, seeds)
                case Join(seeds=seeds):
                    self._on_join(seeds)
                case Leave():
                    self._on_leave()
                case ForceMembers(members=members):
                    self._on_force_members(members)
                case _:
                    assert_never(event)
            if self._phase in _ACTIVE:
                self._pump()
        except InvariantViolation as exc:
            self._error(f"invariant violated: {exc}")
        ready.phase = self._phase
        ready.next_tick_ms = self._wakeup_ms if self._wakeup_ms < _NEVER and self._phase not in (
            Phase.OFFLINE,
            Phase.ERROR,
        ) else None
        return ready

    # ------------------------------------------------------------------ helpers

    def _member_state(self) -> MemberState:
        match self._phase:
            case Phase.MEMBER:
                return MemberState.ONLINE
            case Phase.CATCHING_UP | Phase.JOINING:
                return MemberState.RECOVERING
            case Phase.ERROR:
                return MemberState.ERROR
            case Phase.IDLE | Phase.PROBING | Phase.OFFLINE:
                return MemberState.OFFLINE
            case _:
                assert_never(self._phase)

    def _transition(self, new: Phase) -> None:
        if new not in _TRANSITIONS[self._phase]:
            raise InvariantViolation(f"illegal phase transition {self._phase.value} -> {new.value}")
        self._phase = new

    def _error(self, detail: str) -> None:
        self._phase = Phase.ERROR  # always allowed: the member stops
        self._ready.errors.append(GcsEvent(GcsErrorCode.INTERNAL, detail))

    def _event(self, code: GcsErrorCode, detail: str, seqs: tuple[int, ...] = ()) -> None:
        self._ready.errors.append(GcsEvent(code, detail, seqs))

    def _refuse(self, code: GcsErrorCode, detail: str) -> None:
        self._counters.broadcasts_refused += 1
        self._event(code, detail)

    def _send(self, to: MemberId, msg: Message) -> None:
        self._counters.messages_sent += 1
        self._ready.sends.append((to, msg))

    def _send_all(self, msg: Message, members: Iterable[MemberId] | None = None) -> None:
        me = self.me
        sends = self._ready.sends
        n = 0
        for m in self._peers if members is None else members:
            if m != me:
                sends.append((m, msg))
                n += 1
        self._counters.messages_sent += n

    def _arm(self, at_ms: int) -> None:
        if at_ms < self._wakeup_ms:
            self._wakeup_ms = at_ms

    def _config_for(self, slot: int) -> Config:
        configs = self._configs
        for i in range(len(configs) - 1, 0, -1):
            if configs[i].start <= slot:
                return configs[i]
        return configs[0]

    def _config_known(self, slot: int) -> bool:
        """The configuration of `slot` is final once every slot <= slot - horizon is executed."""
        return bool(self._configs) and slot < self._next_slot + self._horizon

    def _latest_view_id(self) -> ViewId:
        return self._configs[-1].view_id

    def _in_any_config(self, member: MemberId) -> bool:
        return any(member in c.member_set for c in self._configs)

    def _refresh_peers(self) -> None:
        """Recompute who we talk to (members of the current and scheduled configurations)."""
        seen: dict[MemberId, None] = {}
        for c in self._configs:
            for m in c.members:
                if m != self.me:
                    seen[m] = None
        self._peers = tuple(seen)
        for m in self._peers:
            if m not in self._last_heard:
                self._last_heard[m] = self._now_ms
        for m in list(self._last_heard):
            if m not in seen:
                del self._last_heard[m]
                self._heard_ms.pop(m, None)
                self._peer_next.pop(m, None)
                self._suspected.pop(m, None)  # no longer a member: reachability is moot
        self._expel_queued &= set(seen)

    # ------------------------------------------------------------------ control events

    def _on_bootstrap(self, members: tuple[MemberId, ...], seeds: tuple[MemberId, ...]) -> None:
        if self._phase is not Phase.IDLE:
            self._event(GcsErrorCode.INVALID_REQUEST, f"bootstrap in phase {self._phase.value}")
            return
        if self.me not in members or len(set(members)) != len(members) or len(members) > MEMBERS_MAX:
            self._event(GcsErrorCode.INVALID_REQUEST, "bootstrap members must be distinct, at most 9, include me")
            return
        addresses = {m.address for m in members}
        self._seeds = tuple(s for s in seeds if s.address not in addresses)
        self._bootstrap_members = members
        if self._seeds:
            # A group may be running already (this member restarted and was told to bootstrap,
            # or two members were): ask the seeds first. A Heartbeat from a non-member at view
            # 0:0 makes every live member of a group answer NotMember (see _on_heartbeat).
            self._transition(Phase.PROBING)
            self._join_deadline_ms = self._now_ms + self.cfg.bootstrap_probe_ms
            self._send_probes()
            return
        self._start_group()

    def _send_probes(self) -> None:
        self._send_all(Heartbeat(ViewId(0, 0), Slot(0)), self._seeds)
        self._join_retry_ms = self._now_ms + self.cfg.join_retry_interval_ms
        self._arm(min(self._join_retry_ms, self._join_deadline_ms))

    def _start_group(self) -> None:
        members = self._bootstrap_members
        self._join_retry_ms = self._join_deadline_ms = _NEVER
        config = Config.make(ViewId(0, 1), Slot(1), tuple(members), self.cfg.paxos_single_leader)
        self._configs = [config]
        self._next_slot = Slot(1)
        self._own_next = 1
        self._transition(Phase.MEMBER)
        self._refresh_peers()
        self._install(config.view(None))
        self._hb_due_ms = self._now_ms
        self._arm(self._now_ms)

    def _on_join(self, seeds: tuple[MemberId, ...]) -> None:
        if self._phase is not Phase.IDLE:
            self._event(GcsErrorCode.INVALID_REQUEST, f"join in phase {self._phase.value}")
            return
        self._seeds = tuple(s for s in seeds if s.address != self.me.address)
        if not self._seeds:
            self._event(GcsErrorCode.INVALID_REQUEST, "join needs at least one seed other than me")
            return
        self._transition(Phase.JOINING)
        self._join_deadline_ms = self._now_ms + self.cfg.join_timeout_ms
        self._send_join_requests()

    def _send_join_requests(self) -> None:
        self._send_all(JoinRequest(), self._seeds)
        self._join_retry_ms = self._now_ms + self.cfg.join_retry_interval_ms
        self._arm(self._join_retry_ms)

    def _on_leave(self) -> None:
        if self._phase is Phase.IDLE:
            self._event(GcsErrorCode.INVALID_REQUEST, "leave before bootstrap or join")
            return
        if self._phase in (Phase.PROBING, Phase.JOINING, Phase.CATCHING_UP):
            # Not in a view yet: nothing to agree on. If our join was decided, the group
            # expels this incarnation when it stays silent.
            self._go_offline(None, "left before joining")
            return
        if self._leaving:
            return
        self._leaving = True
        self._reconfigs.append(Reconfig(ReconfigOp.LEAVE, (self.me,)))

    def _on_broadcast(self, payload: bytes) -> None:
        if self._phase is not Phase.MEMBER or self._leaving:
            self._refuse(GcsErrorCode.NOT_IN_VIEW, "only members of the current view can broadcast")
            return
        size = len(payload)
        if size > self.cfg.message_bytes_max:
            self._refuse(GcsErrorCode.MESSAGE_TOO_LARGE, f"{size} bytes > {self.cfg.message_bytes_max}")
            return
        if len(self._pending) >= self.cfg.broadcast_queue_max or (
            self._pending_bytes + size > self.cfg.broadcast_queue_bytes_max
        ):
            self._refuse(
                GcsErrorCode.QUEUE_FULL,
                f"{len(self._pending)} messages / {self._pending_bytes} bytes waiting (no majority?)",
            )
            return
        seq = self._seq_next
        self._seq_next = seq + 1
        self._pending[seq] = (bytes(payload), self._now_ms)
        self._pending_bytes += size
        self._counters.broadcasts_accepted += 1
        self._ready.broadcast_seqs.append(seq)
        self._arm(self._now_ms + self.cfg.broadcast_stall_ms)

    def _on_force_members(self, members: tuple[MemberId, ...]) -> None:
        if self._phase is not Phase.MEMBER:
            self._event(GcsErrorCode.FORCE_REFUSED, "force_members needs a member of a view")
            return
        if self._force is not None:
            self._event(GcsErrorCode.FORCE_REFUSED, "a force_members is already in progress")
            return
        # Members of the view in effect and of the scheduled ones (the newest incarnation at an
        # address): the DBA sees the installed view, while the group may already have decided
        # to remove this very member -- and then died (sim: a stale expel, the rest crashed).
        by_address: dict[str, MemberId] = {}
        for config in self._configs:
            for m in config.members:
                by_address[m.address] = m
        chosen: list[MemberId] = []
        for m in members:
            found = by_address.get(m.address)
            if found is None:
                self._event(GcsErrorCode.FORCE_REFUSED, f"{m.address} is not in the current view")
                return
            if found not in chosen:
                chosen.append(found)
        if self.me not in chosen:
            self._event(GcsErrorCode.FORCE_REFUSED, "force_members must run on one of the listed members")
            return
        current = self._configs[0]
        reachable = sum(1 for m in current.members if m == self.me or m not in self._suspected)
        if reachable >= current.quorum:
            self._event(
                GcsErrorCode.FORCE_REFUSED,
                f"a majority of the current view is reachable ({reachable} of {len(current.members)}):"
                " the group can reconfigure itself",
            )
            return
        ordered = tuple(m for m in by_address.values() if m in chosen)
        self._force_seq += 1
        op = _ForceOp(self._force_seq, ordered, self._now_ms + self.cfg.force_timeout_ms, self._now_ms)
        self._force = op
        op.states[self.me] = self._force_state(op.force_id)
        self._send_all(ForceQuery(op.force_id, self._latest_view_id()), ordered)
        self._arm(self._now_ms + self.cfg.retransmit_interval_ms)
        self._maybe_force_install()

    def _force_state(self, force_id: int) -> ForceState:
        known = tuple(Slot(s) for s in sorted(self._decided) if s >= self._next_slot)
        held_from = next(iter(self._log), self._next_slot)  # the log is in slot order
        return ForceState(force_id, self._next_slot, known, Slot(held_from))

    def _maybe_force_install(self) -> None:
        op = self._force
        if op is None or op.install is not None or len(op.states) < len(op.members):
            return
        op.states[self.me] = self._force_state(op.force_id)  # we may have executed more meanwhile
        states = list(op.states.values())
        # Slots below some member's next slot are executed there: decided, and fetchable if
        # some listed member still holds them. A joiner never held the slots before its
        # welcome, though its state includes their effects (configurations): a listed member
        # behind such a hole could never catch up (sim seed 770), and declaring the hole empty
        # instead made it run other configurations than the joiner (two owners of one slot,
        # sim seed 566445872). Such members are left out of the forced configuration (they
        # rejoin as new incarnations); a forcer that is one of them fails.
        executed_high = max(st.next_slot for st in states)
        held: set[int] = set()
        for st in states:
            held.update(st.known)
            held.update(range(max(st.held_from, min(s.next_slot for s in states)), st.next_slot))
        stranded = {
            m for m, st in op.states.items() if any(s not in held for s in range(st.next_slot, executed_high))
        }
        if self.me in stranded:
            self._force = None
            self._event(
                GcsErrorCode.FORCE_FAILED,
                f"slots from {self._next_slot} up to {executed_high - 1} are held by no listed member: this member"
                " cannot catch up; force on the most advanced member instead",
            )
            return
        if stranded:
            op.members = tuple(m for m in op.members if m not in stranded)
            states = [st for m, st in op.states.items() if m not in stranded]
        # Above, a slot is known decided if some listed member says so; the rest are gaps.
        # At least one slot above every listed member's next slot: the configuration in effect
        # there may have started at that very slot (its view installed, nothing executed), and
        # a forced one starting there too would replace it without a switch -- its view never
        # installed (sim seed 458). The extra slot is a gap unless someone knows it decided.
        start = executed_high + 1
        known: set[int] = set()
        for st in states:
            known.update(st.known)
            if st.known:
                start = max(start, max(st.known) + 1)
        gaps: list[SlotRange] = []
        first = -1
        for s in range(executed_high, start):
            if s in known:
                if first >= 0:
                    gaps.append(SlotRange(Slot(first), Slot(s)))
                    first = -1
            elif first < 0:
                first = s
        if first >= 0:
            gaps.append(SlotRange(Slot(first), Slot(start)))
        removed = self._removed_before(start)
        if removed is not None:
            self._force = None
            self._event(GcsErrorCode.FORCE_FAILED, removed)
            return
        # Listed members the group removes before the forced start (a change we learned of
        # after the list was made) would refuse it, and the forced group would wait for them
        # for good (sim seed 506): they are left out.
        before = [c for c in self._configs if c.start < start][-1]
        op.members = tuple(m for m in op.members if m in before.member_set)
        latest = self._configs[-1]
        record = ConfigRecord(ViewId(latest.view_id.epoch + 1, latest.view_id.number + 1), Slot(start), op.members)
        op.install = ForceInstall(op.force_id, record, tuple(gaps))
        op.sent_ms = self._now_ms
        self._send_all(op.install, op.members)
        self._apply_force(op.install, self.me)
        op.acks.add(self.me)
        if len(op.acks) >= len(op.members):
            self._force = None  # forced alone: nobody else to confirm it

    # ------------------------------------------------------------------ time

    def _on_tick(self, now_ms: int) -> bool:
        """Advance the clock; run timers when due. Returns False when nothing was due."""
        if not self._clock_started:
            self._clock_started = True
            self._now_ms = now_ms
            for m in self._last_heard:
                self._last_heard[m] = now_ms
            self._wakeup_ms = now_ms
        elif now_ms > self._now_ms:
            gap = now_ms - self._now_ms
            if gap > self.cfg.clock_jump_ms:
                # We were paused (or the clock jumped): we did not hear peers because we were
                # not listening. Shift the failure detector instead of blaming them.
                for m in self._last_heard:
                    self._last_heard[m] += gap
                for m in self._suspected:
                    self._suspected[m] += gap
                if self._phase is Phase.PROBING:
                    # Nobody could answer a probe we were not sending: probe on.
                    self._join_deadline_ms += gap
            self._now_ms = now_ms
        if self._now_ms < self._wakeup_ms:
            return False
        self._run_timers()
        return True

    def _run_timers(self) -> None:
        now = self._now_ms
        cfg = self.cfg
        self._wakeup_ms = _NEVER
        phase = self._phase
        if phase is Phase.PROBING:
            if now >= self._join_deadline_ms:
                self._start_group()  # nobody answered: no group is running
                return
            if now >= self._join_retry_ms:
                self._send_probes()
            self._arm(min(self._join_retry_ms, self._join_deadline_ms))
            return
        if phase is Phase.JOINING:
            if now >= self._join_deadline_ms:
                self._go_offline(GcsErrorCode.JOIN_FAILED, "no seed admitted us before join_timeout_ms")
                return
            if now >= self._join_retry_ms:
                self._send_join_requests()
            self._arm(self._join_retry_ms)
            self._arm(self._join_deadline_ms)
            return
        if phase not in _ACTIVE:
            return
        if now >= self._hb_due_ms:
            self._send_all(Heartbeat(self._latest_view_id(), self._next_slot))
            self._hb_due_ms = now + cfg.heartbeat_interval_ms
            self._gc()
        self._arm(self._hb_due_ms)
        self._detect_failures()
        self._retransmit()
        self._check_stall()
        if self._suspected and phase is Phase.MEMBER:
            self._revoke_suspected()
        self._report_stalled_broadcasts()
        self._retry_force()
        if cfg.paxos_single_leader and phase is Phase.MEMBER:
            self._retry_forward()

    def _detect_failures(self) -> None:
        now = self._now_ms
        suspicion = self.cfg.suspicion_timeout_ms
        expel_after = self.cfg.member_expel_timeout_ms
        expel_due: list[MemberId] = []
        for m in self._peers:
            heard = self._last_heard[m]
            since = self._suspected.get(m)
            if since is None:
                if now - heard >= suspicion:
                    self._suspected[m] = now
                    self._suspect_changed_ms = now
                    self._revoked_upto = 0  # its slots may need revoking from the start
                    self._ready.reachability.append(ReachabilityChange(m, MemberState.UNREACHABLE, now))
                    since = now
                else:
                    self._arm(heard + suspicion)
                    continue
            if m not in self._expel_queued:
                if now - since >= expel_after:
                    expel_due.append(m)
                else:
                    self._arm(since + expel_after)
        if expel_due and self._phase is Phase.MEMBER and not self._leaving:
            current = self._configs[0]
            latest = self._configs[-1]
            targets = tuple(m for m in latest.members if m in expel_due)
            remaining = [m for m in latest.members if m not in targets]
            # Only a member of a majority proposes expels, and only if the group left behind
            # can go on. "Reachable" means heard from recently, not merely "not suspected
            # yet": a member dead for less than the suspicion timeout must not be counted,
            # or the expel of a live member could leave a configuration without a live
            # majority (which only force_members could undo).
            if (
                targets
                and self.me in current.member_set
                and self._fresh_count(current.members) >= current.quorum
                and self._fresh_count(remaining) >= len(remaining) // 2 + 1
            ):
                self._expel_queued.update(targets)
                self._reconfigs.append(Reconfig(ReconfigOp.EXPEL, targets))
            else:
                self._arm(now + self.cfg.heartbeat_interval_ms)  # look again later

    def _fresh_count(self, members: Iterable[MemberId]) -> int:
        """Members (us included) heard from within the freshness window.

        Uses the arrival times of messages, not `_last_heard`: after a pause of ours (a clock
        jump) `_last_heard` is shifted forward so that peers are not blamed for a silence we
        did not observe, which makes a peer that died meanwhile look just heard from. Counted
        as alive, such a peer let an expel through that left a configuration without a live
        majority (seed 33803: the dead n1 and n2 kept, the live n3 expelled).
        """
        window = max(2 * self.cfg.heartbeat_interval_ms, self.cfg.suspicion_timeout_ms // 2)
        since = self._now_ms - window
        heard = self._heard_ms
        count = 0
        for m in members:
            if m == self.me:
                count += 1
            elif m not in self._suspected and heard.get(m, -_NEVER) >= since:
                count += 1
        return count

    def _heard_from(self, sender: MemberId) -> None:
        if sender in self._last_heard:
            self._last_heard[sender] = self._now_ms
            self._heard_ms[sender] = self._now_ms
            if sender in self._suspected:
                del self._suspected[sender]
                self._expel_queued.discard(sender)
                self._ready.reachability.append(ReachabilityChange(sender, MemberState.ONLINE, self._now_ms))
                if self._reconfigs:
                    # An expel not proposed yet is stale now (one already in flight may still
                    # be chosen: that member then rejoins as a new incarnation).
                    self._reconfigs = [r for r in self._reconfigs if self._reconfig_relevant(r)]

    def _retransmit(self) -> None:
        now = self._now_ms
        interval = self.cfg.retransmit_interval_ms
        for p in list(self._proposals.values()):
            if p.phase == _BACKOFF:
                if now >= p.retry_ms:
                    self._retry_proposal(p)
                else:
                    self._arm(p.retry_ms)
                continue
            if now - p.sent_ms >= interval:
                p.sent_ms = now
                missing = [m for m in p.config.members if m not in p.acks and m != self.me]
                if p.phase == _ACCEPT:
                    self._send_all(Accept(p.slot, p.ballot, p.value), missing)
                else:
                    self._send_all(Prepare(p.ballot, (p.slot,)), missing)
            self._arm(p.sent_ms + interval)

    def _retry_proposal(self, p: _Proposal) -> None:
        """A nacked proposal: try again with a higher ballot, or let it go."""
        slot = p.slot
        if slot < self._next_slot or slot in self._decided or not self._config_known(slot):
            self._proposals.pop(slot, None)
            return
        owner = p.config.owner(slot)
        if not p.owned and owner not in self._suspected:
            self._proposals.pop(slot, None)  # the owner is back: it completes its slot
            return
        self._start_prepare(p.config, [p], self._acc_promised(slot))

    def _check_stall(self) -> None:
        """Execution waits on a slot others have moved past: fetch it (owner and one peer)."""
        if self._next_slot > self._frontier:
            self._stall_since_ms = None
            return
        now = self._now_ms
        interval = self.cfg.retransmit_interval_ms
        if self._stall_since_ms is None:
            self._stall_since_ms = now
        if now - self._fetch_sent_ms >= interval and now - self._stall_since_ms >= interval // 2:
            self._fetch_sent_ms = now
            first = self._next_slot
            end = min(self._frontier + 1, first + self.cfg.fetch_slots_max)
            msg = Fetch(first, Slot(end))
            targets: list[MemberId] = []
            if self._config_known(first):
                owner = self._config_for(first).owner(first)
                if owner != self.me and owner not in self._suspected:
                    targets.append(owner)
            # Any peer may know the decision, members of scheduled configurations included
            # (those of the current one may all have left by now).
            live = [m for m in self._peers if m not in self._suspected] or list(self._peers)
            if live:
                self._fetch_rotation += 1
                other = live[self._fetch_rotation % len(live)]
                if other not in targets:
                    targets.append(other)
            self._send_all(msg, targets)
            self._counters.fetches_sent += 1
        self._arm(self._fetch_sent_ms + interval)

    def _report_stalled_broadcasts(self) -> None:
        if not self._pending:
            return
        limit = self._now_ms - self.cfg.broadcast_stall_ms
        seq = max(self._stall_report_seq, self._delivered_seq + 1)
        stalled: list[int] = []
        while seq < self._seq_next:
            entry = self._pending.get(seq)
            if entry is not None:
                if entry[1] > limit:
                    self._arm(entry[1] + self.cfg.broadcast_stall_ms)
                    break
                stalled.append(seq)
            seq += 1
        self._stall_report_seq = seq
        if stalled:
            self._event(
                GcsErrorCode.BROADCAST_STALLED,
                f"{len(stalled)} broadcast(s) waited over {self.cfg.broadcast_stall_ms} ms (no majority?)",
                tuple(stalled),
            )

    def _gc(self) -> None:
        """Forget executed slots every member has executed, within decided_cache_slots_max."""
        floor = self._next_slot
        for m in self._peers:  # joiners too: they fetch from their welcome on
            floor = min(floor, self._peer_next.get(m, 0))
        floor = max(floor, self._next_slot - self.cfg.decided_cache_slots_max)
        log = self._log
        while log:
            first = next(iter(log))
            if first >= floor:
                break
            del log[first]
            self._log_floor = first + 1
        for owner in list(self._skips):
            ranges = self._skips[owner]
            while ranges and ranges[0][1] <= self._next_slot:
                ranges.pop(0)
            if not ranges and owner not in self._last_heard and owner != self.me:
                del self._skips[owner]  # no longer a member: nothing more to learn from it
        for m in list(self._welcomes):
            if not self._in_any_config(m) or self._peer_next.get(m, 0) >= self._first_start_with(m):
                del self._welcomes[m]

    def _first_start_with(self, member: MemberId) -> int:
        for c in self._configs:
            if member in c.member_set:
                return c.start
        return _NEVER

    # ------------------------------------------------------------------ messages

    def _on_message(self, sender: MemberId, msg: Message) -> None:
        phase = self._phase
        if phase is Phase.IDLE:
            return
        if phase is Phase.PROBING:
            if type(msg) is NotMember and msg.member == self.me:
                self._go_offline(
                    GcsErrorCode.GROUP_EXISTS,
                    f"{sender} is a live member of the group (view {msg.view_id}): join it instead of bootstrapping",
                )
            return
        if phase is Phase.JOINING:
            match msg:
                case Welcome():
                    self._on_welcome(sender, msg)
                case JoinRefused(member=member, reason=reason) if member == self.me:
                    self._go_offline(GcsErrorCode.JOIN_REFUSED, f"{sender}: {reason}")
                case Accept():
                    # Our join may be decided and in effect before the welcome reaches us:
                    # the group may need our vote. Acting as an acceptor is always safe
                    # (proposers count only members of the slot's configuration).
                    self._on_accept(sender, msg)
                case Prepare():
                    self._on_prepare(sender, msg)
                case _:
                    pass
            return
        if sender not in self._last_heard and sender != self.me and type(msg) not in _FROM_ANYONE:
            # Consensus traffic only from peers (members of our current or scheduled
            # configurations). Another group under the same name (a second bootstrap that
            # could not see us, or a new group after ours died while we caught up) reaches
            # us by address: its decisions for "our" slots made us decide a slot twice
            # (sim seed 980984755). A newer member we do not know yet is learned by fetching
            # from peers instead.
            self._counters.messages_from_non_members += 1
            return
        self._heard_from(sender)
        match msg:
            case Accept():
                self._on_accept(sender, msg)
            case Accepted():
                self._on_accepted(sender, msg)
            case Nack():
                self._on_nack(sender, msg)
            case Prepare():
                self._on_prepare(sender, msg)
            case Promise():
                self._on_promise(sender, msg)
            case Decide():
                self._on_decide(msg.slot, msg.ballot, msg.value)
            case Learn():
                self._on_learn(msg)
            case Skip():
                self._on_skip(sender, msg)
            case Fetch():
                self._on_fetch(sender, msg)
            case Forgotten(first_available=first):
                self._on_forgotten(sender, first)
            case Heartbeat():
                self._on_heartbeat(sender, msg)
            case JoinRequest():
                self._on_join_request(sender)
            case Welcome():
                if self._phase is Phase.CATCHING_UP:
                    self._on_welcome(sender, msg)  # only one into a forced branch is taken
            case JoinRefused():
                pass  # for an earlier join of ours, or another incarnation
            case NotMember(member=member, view_id=view_id):
                # Only a peer may tell us we were removed: from anyone else (a stranger, another
                # incarnation at a peer's address) it would expel us on its word (fuzzing found it).
                if member == self.me and view_id > self._latest_view_id() and sender in self._last_heard:
                    self._go_offline(GcsErrorCode.EXPELLED, f"{sender} says we are not in view {view_id}")
                elif sender not in self._last_heard:
                    self._counters.messages_from_non_members += 1
            case ForceQuery(force_id=force_id):
                self._send(sender, self._force_state(force_id))
            case ForceState():
                op = self._force
                if op is not None and msg.force_id == op.force_id and sender in op.members:
                    op.states[sender] = msg
                    self._maybe_force_install()
            case ForceInstall():
                self._apply_force(msg, sender)
            case ForceAck(force_id=force_id):
                op = self._force
                if op is not None and op.force_id == force_id and sender in op.members:
                    op.acks.add(sender)
                    if len(op.acks) >= len(op.members):
                        self._force = None
            case Forward(run=run):
                self._on_forward(run)
            case ForwardReconfig(reconfig=rc):
                if self._is_leader() and self._phase is Phase.MEMBER and not self._leaving:
                    self._queue_reconfig(rc)
            case _:
                assert_never(msg)

    def _on_forgotten(self, sender: MemberId, first: int) -> None:
        """Peers dropped the slots we need. Give up only when every live peer says so."""
        if first <= self._next_slot:
            return
        if sender not in self._last_heard:
            return  # not a peer of ours
        self._forgotten_by.add(sender)
        # The sender executed past `first`: that is progress news (a member that no longer
        # counts us as a peer sends no heartbeats to us).
        if self._peer_next.get(sender, 0) < first:
            self._peer_next[sender] = first
        # A peer that has not executed past our next slot cannot hold it either: waiting for
        # it would deadlock two laggards on each other (both expelled at a slot neither could
        # fetch any more, seed 104510295). A peer whose progress we do not know yet may help.
        me = self._next_slot
        live = [m for m in self._peers if m not in self._suspected and self._peer_next.get(m, _NEVER) > me]
        if live and all(m in self._forgotten_by for m in live):
            self._go_offline(GcsErrorCode.BEHIND, f"no live peer holds slot {self._next_slot} any more")

    # -- acceptor

    def _acc_slot(self, slot: int) -> _AcceptorSlot | None:
        if self._phase is Phase.JOINING:
            # No position yet to measure "ahead" from: bound the number of slots instead.
            if slot not in self._acc and len(self._acc) >= self.cfg.accept_ahead_slots_max:
                return None
        elif slot >= self._next_slot + self.cfg.accept_ahead_slots_max:
            return None  # too far ahead: bounded memory; the proposer retransmits later
        a = self._acc.get(slot)
        if a is None:
            a = self._acc[slot] = _AcceptorSlot()
        return a

    def _acc_promised(self, slot: int) -> Ballot:
        a = self._acc.get(slot)
        return a.promised if a is not None else Ballot(0)

    def _stale_epoch(self, slot: int, ballot: Ballot) -> bool:
        """A ballot from before a force_members that installed the configuration of `slot`."""
        return self._config_known(slot) and ballot_epoch(ballot) < self._config_for(slot).epoch

    def _unknown_epoch(self, slot: int, ballot: Ballot) -> bool:
        """A ballot from a forced configuration we do not know (an epoch above every one we
        know): its decisions belong to another branch of the history. Applied under our
        configuration they forked us off (a joiner executed the survivors' decisions in the
        group they had forced away from, sim seed 942); we wait for the ForceInstall instead,
        or for NotMember if we are not in it. (A known forced configuration's gaps are decided
        with its epoch below its start: those are ours.)"""
        return bool(self._configs) and ballot_epoch(ballot) > self._configs[-1].epoch

    def _known_decision(self, slot: int) -> tuple[Ballot, Value] | None:
        entry = self._decided.get(slot)
        if entry is None:
            entry = self._log.get(slot)
        if entry is None and slot >= self._next_slot and self._config_known(slot):
            config = self._config_for(slot)
            if config.members:
                owner = config.owner(slot)
                if self._skip_known(owner, slot, config.epoch):
                    entry = (owner_ballot(config.epoch), NOOP)
        return entry

    def _on_accept(self, sender: MemberId, msg: Accept) -> None:
        slot = msg.slot
        known = self._known_decision(slot)
        if known is not None:
            self._send(sender, Decide(msg.slot, known[0], known[1]))
            return
        if slot < self._next_slot or self._stale_epoch(slot, msg.ballot):
            return
        if ballot_round(msg.ballot) == 0 and slot > self._frontier:
            self._frontier = slot  # an owner uses this slot: skip ours below it
        reply = self._accept_local(slot, msg.ballot, msg.value)
        if reply is not None:
            self._send(sender, reply)

    def _accept_local(self, slot: int, ballot: Ballot, value: Value) -> Accepted | Nack | None:
        a = self._acc_slot(slot)
        if a is None:
            return None
        if ballot >= a.promised:
            a.promised = ballot
            a.ballot = ballot
            a.value = value
            self._ready.accepted.append(AcceptedValue(Slot(slot), ballot, value))
            return Accepted(Slot(slot), ballot)
        return Nack(Slot(slot), ballot, a.promised)

    def _on_prepare(self, sender: MemberId, msg: Prepare) -> None:
        promise, replies = self._prepare_local(msg.ballot, msg.slots)
        for reply in replies:
            self._send(sender, reply)
        if promise is not None:
            self._send(sender, promise)

    def _prepare_local(self, ballot: Ballot, slots: tuple[Slot, ...]) -> tuple[Promise | None, list[Decide | Nack]]:
        """Phase 1b: promise `ballot` where we can; report decisions we know and refusals."""
        granted: list[Slot] = []
        accepted: list[AcceptedValue] = []
        replies: list[Decide | Nack] = []
        for slot in slots:
            known = self._known_decision(slot)
            if known is not None:
                replies.append(Decide(slot, known[0], known[1]))
                continue
            if slot < self._next_slot or self._stale_epoch(slot, ballot):
                continue
            if slot > self._frontier:
                self._frontier = slot
            a = self._acc_slot(slot)
            if a is None:
                continue
            if ballot >= a.promised:
                a.promised = ballot
                granted.append(slot)
                if a.ballot != _NO_BALLOT:
                    accepted.append(AcceptedValue(slot, a.ballot, a.value))
            else:
                replies.append(Nack(slot, ballot, a.promised))
        promise = Promise(ballot, tuple(granted), tuple(accepted)) if granted else None
        return promise, replies

    # -- proposer

    def _on_accepted(self, sender: MemberId, msg: Accepted) -> None:
        p = self._proposals.get(msg.slot)
        if p is None or p.phase != _ACCEPT or p.ballot != msg.ballot or sender not in p.config.member_set:
            return
        p.acks.add(sender)
        if len(p.acks) >= p.config.quorum:
            self._chosen(p)

    def _chosen(self, p: _Proposal) -> None:
        """A majority of the slot's configuration accepted p: it is decided. Tell everyone:
        the slot's configuration, which was sent the Accept, without the value (Learn); other
        peers (members of later configurations) with it (Decide)."""
        del self._proposals[p.slot]
        members = p.config.member_set
        self._send_all(Learn(p.slot, p.ballot), p.config.members)
        others = [m for m in self._peers if m not in members]
        if others:
            self._send_all(Decide(p.slot, p.ballot, p.value), others)
        self._on_decide(p.slot, p.ballot, p.value)

    def _on_learn(self, msg: Learn) -> None:
        a = self._acc.get(msg.slot)
        if a is not None and a.ballot == msg.ballot:
            self._on_decide(msg.slot, msg.ballot, a.value)
        else:
            self._counters.learns_without_value += 1  # learned later like any missing slot

    def _on_nack(self, sender: MemberId, msg: Nack) -> None:
        p = self._proposals.get(msg.slot)
        if p is None or p.ballot != msg.ballot or p.phase == _BACKOFF:
            return
        # Someone is running a higher ballot here. Back off, then take over with a higher
        # ballot if the slot is still open (rank-staggered so two proposers do not duel).
        p.phase = _BACKOFF
        rank = p.config.member_rank.get(self.me, len(p.config.members))
        p.retry_ms = self._now_ms + self.cfg.retransmit_interval_ms * (1 + rank)
        p.best = None
        a = self._acc_slot(msg.slot)
        if a is not None and msg.promised > a.promised:
            a.promised = msg.promised  # remember the round to beat (we do not accept below it)
        self._arm(p.retry_ms)

    def _start_prepare(self, config: Config, proposals: list[_Proposal], beat: Ballot) -> None:
        """Phase 1 for `proposals` (all in `config`) with a ballot above `beat` and any promise."""
        rank = config.member_rank.get(self.me)
        if rank is None or rank > BALLOT_RANK_MAX:
            for p in proposals:
                self._proposals.pop(p.slot, None)
            return
        round_ = ballot_round(beat) if ballot_epoch(beat) == config.epoch else 0
        for p in proposals:
            promised = self._acc_promised(p.slot)
            if ballot_epoch(promised) == config.epoch:
                round_ = max(round_, ballot_round(promised))
        ballot = make_ballot(config.epoch, round_ + 1, rank)
        slots: list[Slot] = []
        for p in proposals:
            p.ballot = ballot
            p.phase = _PREPARE
            p.acks = set()
            p.best = None
            p.sent_ms = self._now_ms
            p.value = NOOP
            self._proposals[p.slot] = p
            slots.append(p.slot)
        self._counters.revocations += len(slots)
        prepare = Prepare(ballot, tuple(slots))
        self._send_all(prepare, config.members)
        self._arm(self._now_ms + self.cfg.retransmit_interval_ms)
        # Our own acceptor answers too, locally.
        promise, replies = self._prepare_local(ballot, prepare.slots)
        for reply in replies:
            match reply:
                case Decide():
                    self._on_decide(reply.slot, reply.ballot, reply.value)
                case Nack():
                    self._on_nack(self.me, reply)
                case _:
                    assert_never(reply)
        if promise is not None:
            self._on_promise(self.me, promise)

    def _on_promise(self, sender: MemberId, msg: Promise) -> None:
        reported: dict[int, AcceptedValue] | None = None
        for slot in msg.slots:
            p = self._proposals.get(slot)
            if p is None or p.phase != _PREPARE or p.ballot != msg.ballot or sender not in p.config.member_set:
                continue
            if reported is None:
                reported = {av.slot: av for av in msg.accepted}
            av = reported.get(slot)
            if av is not None and (p.best is None or av.ballot > p.best.ballot):
                p.best = av
            p.acks.add(sender)
            if len(p.acks) >= p.config.quorum:
                self._begin_accept(p)

    def _begin_accept(self, p: _Proposal) -> None:
        """Phase 2 after a majority promised: ADOPT the highest-ballot value reported, else no-op."""
        if p.best is not None and self.cfg.adopt_promised_values:
            p.value = p.best.value
        elif (
            self.cfg.paxos_single_leader
            and not p.owned
            and self._reconfigs
            and self._phase is Phase.MEMBER
        ):
            # Nothing was accepted here and, with a single leader, nothing is learned without
            # a quorum: any value is safe. Use it for a membership change (e.g. expelling the
            # dead leader, which no one else could propose: the leader owns every slot). A
            # leaving member uses it for its LEAVE (all it queues): excluded, it revoked the
            # dead leader's slots to no-ops forever, first in line, while the others' expel
            # never got a slot (sim seed 980987962).
            p.value = self._reconfigs.pop(0)
            self._mine[p.slot] = p.value
        else:
            p.value = NOOP
        p.phase = _ACCEPT
        p.acks = set()
        p.sent_ms = self._now_ms
        self._send_all(Accept(p.slot, p.ballot, p.value), p.config.members)
        reply = self._accept_local(p.slot, p.ballot, p.value)
        if isinstance(reply, Accepted):
            p.acks.add(self.me)
            if len(p.acks) >= p.config.quorum:
                self._chosen(p)
        elif isinstance(reply, Nack):
            self._on_nack(self.me, reply)

    def _revoke_suspected(self) -> None:
        """Take over undecided slots of suspected owners up to the frontier (full Paxos)."""
        if self.me not in self._configs[0].member_set:
            return
        high = min(self._frontier, self._next_slot + self._horizon - 1)
        if high < self._next_slot:
            return
        # Stagger: the first unsuspected member (in view order) revokes at once, the next
        # after one retransmit interval, and so on, so that usually one member does it.
        config0 = self._configs[0]
        position = 0
        for m in config0.members:
            if m == self.me:
                break
            if m not in self._suspected:
                position += 1
        if position:
            if self._stall_since_ms is None:
                self._revoke_not_before_ms = self._now_ms + self.cfg.retransmit_interval_ms
                return
            since = max(self._stall_since_ms, self._suspect_changed_ms)
            due = since + position * self.cfg.retransmit_interval_ms
            if self._now_ms < due:
                self._revoke_not_before_ms = due
                self._arm(due)
                return
        by_config: dict[int, tuple[Config, list[_Proposal]]] = {}
        count = 0
        slot = max(self._next_slot, self._revoked_upto + 1)
        while slot <= high and count < self.cfg.revoke_slots_max:
            if slot not in self._proposals and slot not in self._decided:
                config = self._config_for(slot)
                if config.members:
                    owner = config.owner(slot)
                    if owner in self._suspected and not self._skip_known(owner, slot, config.epoch):
                        p = _Proposal(Slot(slot), Ballot(0), NOOP, _PREPARE, config, False, self._now_ms)
                        entry = by_config.setdefault(config.start, (config, []))
                        entry[1].append(p)
                        count += 1
            slot += 1
        self._revoked_upto = slot - 1
        for config, proposals in by_config.values():
            self._start_prepare(config, proposals, Ballot(0))

    # -- learner

    def _on_decide(self, slot: int, ballot: Ballot, value: Value) -> None:
        if slot < self._next_slot:
            return
        if self._stale_epoch(slot, ballot) or self._unknown_epoch(slot, ballot):
            return
        existing = self._decided.get(slot)
        if existing is not None:
            if existing[1] != value and ballot_epoch(existing[0]) == ballot_epoch(ballot):
                raise InvariantViolation(f"slot {slot} decided twice with different values")
            return
        if slot >= self._next_slot + self.cfg.accept_ahead_slots_max or not self._configs:
            return
        self._decided[slot] = (ballot, value)
        if slot > self._frontier:
            self._frontier = slot
        p = self._proposals.get(slot)
        if p is not None:
            del self._proposals[slot]

    def _on_skip(self, sender: MemberId, msg: Skip) -> None:
        if msg.end <= self._next_slot:
            return
        self._add_skip(sender, max(msg.first, self._next_slot), msg.end, ballot_epoch(msg.ballot))

    def _add_skip(self, owner: MemberId, first: int, end: int, epoch: int) -> None:
        ranges = self._skips.get(owner)
        if ranges is None:
            ranges = self._skips[owner] = []
        if ranges:
            last = ranges[-1]
            if last[2] == epoch and first <= last[1] and end >= last[0]:
                last[0] = min(last[0], first)
                last[1] = max(last[1], end)
                return
        ranges.append([first, end, epoch])
        while ranges and ranges[0][1] <= self._next_slot:
            ranges.pop(0)  # executed already
        if len(ranges) > _SKIP_RANGES_MAX and owner != self.me:
            # Bounded (a lagging member hears skips far ahead): drop the oldest; a dropped
            # skip is learned again through Fetch (the owner answers from its log). Our own
            # ranges are never dropped: they lie within our window, at most horizon long.
            ranges.pop(0)

    def _skip_known(self, owner: MemberId, slot: int, epoch: int) -> bool:
        ranges = self._skips.get(owner)
        if ranges:
            for first, end, ep in ranges:
                if first <= slot < end and ep == epoch:
                    return True
        return False

    def _on_fetch(self, sender: MemberId, msg: Fetch) -> None:
        first = msg.first
        end = min(msg.end, first + self.cfg.fetch_slots_max)
        if first < self._log_floor and first not in self._log:
            # We executed it once and dropped it since (a joiner never had the slots before
            # its welcome: it just does not answer for them).
            self._send(sender, Forgotten(Slot(self._log_floor)))
            return
        # An owner asked for its unused slots skips them (the asker waits on them): raising
        # the frontier makes _pump skip them right after this message.
        bound = min(end - 1, self._next_slot + self._horizon - 1)
        if bound > self._frontier:
            self._frontier = bound
        for slot in range(first, end):
            known = self._known_decision(slot)
            if known is not None:
                self._send(sender, Decide(Slot(slot), known[0], known[1]))

    def _on_heartbeat(self, sender: MemberId, msg: Heartbeat) -> None:
        if sender in self._last_heard:
            self._peer_next[sender] = msg.next_slot
            if msg.view_id.epoch < self._configs[-1].epoch:
                # A peer behind a force we know of. A joiner welcomed before it: our welcome
                # (sent once, when its join executed here) moves it into the forced branch.
                # A listed member that missed the ForceInstall (the forcer stops resending
                # after force_timeout_ms): the force itself (sim seed 268240641: it could
                # never apply the forced branch's decisions).
                welcome = self._welcomes.get(sender)
                if welcome is not None:
                    self._send(sender, welcome)
                elif self._forced is not None and sender in self._forced.config.members:
                    self._send(sender, self._forced)
            if msg.next_slot - 1 > self._frontier:
                # The peer executed past our frontier: those slots are decided and we are
                # behind (say, cut off while the group went idle). Fetch them.
                self._frontier = msg.next_slot - 1
            return
        if (
            self._phase is Phase.MEMBER
            and not self._leaving
            and msg.view_id < self._latest_view_id()
            and not self._in_any_config(sender)
        ):
            # A member on its way out does not speak for the group: when the rest of the group
            # died before its leave was agreed, it stays here for good, and answering would
            # refuse every bootstrap, the whole-group reboot's included (chaos seed 20261208 run
            # 4). A live group still answers through its other members.
            self._send(sender, NotMember(sender, self._latest_view_id()))

    def _on_join_request(self, joiner: MemberId) -> None:
        if self._phase is not Phase.MEMBER or self._leaving:
            return
        latest = self._configs[-1]
        if self._in_any_config(joiner):
            # Already added (perhaps even removed again since): it missed its welcome.
            welcome = self._welcomes.get(joiner)
            if welcome is not None:
                self._send(joiner, welcome)
            return
        replaced = any(m.uuid == joiner.uuid or m.address == joiner.address for m in latest.members)
        alive_ms = _DUPLICATE_ALIVE_HEARTBEATS * self.cfg.heartbeat_interval_ms
        for m in latest.members:
            if m.uuid != joiner.uuid or m.address == joiner.address:
                continue  # same address: the same process slot restarted
            heard = self._heard_ms.get(m)
            if m == self.me or (heard is not None and self._now_ms - heard < alive_ms):
                self._send(joiner, JoinRefused(
                    joiner, f"member uuid {joiner.uuid} is in the group already, at {m.address}, and alive: "
                            "a second member with the same uuid is refused (give each member its own uuid)"))
                return
        if len(latest.members) >= MEMBERS_MAX and not replaced:
            self._send(joiner, JoinRefused(joiner, f"the group already has {MEMBERS_MAX} members"))
            return
        self._queue_reconfig(Reconfig(ReconfigOp.JOIN, (joiner,)))

    def _queue_reconfig(self, rc: Reconfig) -> None:
        """Queue a membership change to propose, unless already queued or in flight."""
        if rc in self._reconfigs or rc in self._mine.values() or not self._reconfig_relevant(rc):
            return
        self._reconfigs.append(rc)

    def _is_leader(self) -> bool:
        return self.me in self._configs[0].leader_rank

    def _on_welcome(self, sender: MemberId, msg: Welcome) -> None:
        if msg.member != self.me:
            return
        single = self.cfg.paxos_single_leader
        configs = [Config.from_record(r, single) for r in msg.configs]
        for a, b in zip(configs, configs[1:]):
            if b.start <= a.start:
                return  # malformed: ignore, another seed will answer
        if not any(self.me in c.member_set for c in configs) or configs[0].start > msg.next_slot:
            return
        if self._phase is Phase.CATCHING_UP:
            # Welcomed once already, but the group was forced since (we were not listed) and
            # re-added us in the forced branch: that welcome supersedes ours. What we learned
            # or accepted in the old branch does not hold in the new one (as _apply_force
            # drops it on the listed members); without this we waited forever for decisions
            # of an epoch we did not know (sim seed 141 with --faults stale,crash,partition).
            epoch = configs[-1].epoch
            if epoch <= self._configs[-1].epoch:
                return
            self._decided = {
                s: e for s, e in self._decided.items() if s >= msg.next_slot and ballot_epoch(e[0]) >= epoch
            }
            for a in self._acc.values():
                if a.ballot != _NO_BALLOT and ballot_epoch(a.ballot) < epoch:
                    a.ballot = _NO_BALLOT
                    a.value = NOOP
        self._configs = configs
        self._next_slot = msg.next_slot
        for slot in [s for s in self._acc if s < msg.next_slot]:
            del self._acc[slot]  # accepted while joining, decided before our state begins
        self._origin_next = {o.origin: o.next_seq for o in msg.origins}
        self._own_next = msg.next_slot
        self._frontier = max(self._frontier, configs[-1].start - 1)
        if self._phase is Phase.JOINING:
            self._transition(Phase.CATCHING_UP)
        self._refresh_peers()
        self._hb_due_ms = self._now_ms
        self._join_retry_ms = _NEVER
        self._join_deadline_ms = _NEVER
        self._arm(self._now_ms)

    def _on_forward(self, run: Run) -> None:
        if self._phase is not Phase.MEMBER or not self._configs[0].leaders:
            return
        if self._configs[0].leaders[0] != self.me:
            return
        for queued in self._forwarded:
            if queued.origin == run.origin and queued.first_seq == run.first_seq:
                return
        if len(self._forwarded) >= self.cfg.forward_queue_max:
            return  # bounded: the origin retransmits
        self._forwarded.append(run)

    def _forward_reconfigs(self) -> None:
        """Single leader: non-leaders hand their membership changes to the leader."""
        leaders = self._configs[0].leaders
        if not self._reconfigs or not leaders or leaders[0] == self.me:
            return
        due = self._forward_reconfig_ms + 2 * self.cfg.retransmit_interval_ms
        if self._now_ms >= due:
            self._forward_reconfig_ms = self._now_ms
            for rc in self._reconfigs:
                self._send(leaders[0], ForwardReconfig(rc))
            due = self._now_ms + 2 * self.cfg.retransmit_interval_ms
        self._arm(due)

    def _retry_forward(self) -> None:
        """Single leader: resend our undelivered messages to the leader when they stall."""
        self._forward_reconfigs()
        if self._delivered_seq + 1 >= self._seq_next:
            return
        due = self._forward_sent_ms + 2 * self.cfg.retransmit_interval_ms
        if self._now_ms >= due:
            self._send_seq = self._delivered_seq + 1
        else:
            self._arm(due)

    # -- force_members

    def _retry_force(self) -> None:
        op = self._force
        if op is None:
            return
        now = self._now_ms
        if now >= op.deadline_ms:
            self._force = None
            if op.install is None:
                missing = [str(m) for m in op.members if m not in op.states]
                self._event(GcsErrorCode.FORCE_FAILED, f"no answer from {', '.join(missing)}")
            else:
                missing = [str(m) for m in op.members if m not in op.acks]
                self._event(GcsErrorCode.FORCE_FAILED, f"installed here; unconfirmed by {', '.join(missing)}")
            return
        if now - op.sent_ms >= self.cfg.retransmit_interval_ms:
            op.sent_ms = now
            if op.install is None:
                waiting = [m for m in op.members if m not in op.states]
                self._send_all(ForceQuery(op.force_id, self._latest_view_id()), waiting)
            else:
                waiting = [m for m in op.members if m not in op.acks]
                self._send_all(op.install, waiting)
        self._arm(min(op.deadline_ms, op.sent_ms + self.cfg.retransmit_interval_ms))

    def _removed_before(self, start: int) -> str | None:
        """Why a configuration forced at `start` cannot include us, or None: the group already
        decided a configuration without us that starts before it. We would execute its
        switch first and leave, after executing the force's gaps as no-ops -- declaring
        decisions lost that were not (sim seed 268238274)."""
        for c in self._configs:
            if c.start < start and self.me not in c.member_set:
                return (
                    f"this member is removed from the group at slot {c.start} ({c.view_id}), before a forced"
                    f" configuration could start (slot {start}): restart the group instead"
                )
        return None

    def _apply_force(self, msg: ForceInstall, sender: MemberId) -> None:
        record = msg.config
        if self.me not in record.members:
            return
        if sender != self.me and (sender not in record.members or not self._in_any_config(sender)):
            # A forcer is a member of our configuration that lists itself (force_members runs on
            # a listed member); anyone else could install a group of its choosing, itself in it.
            self._counters.messages_from_non_members += 1
            return
        latest = self._configs[-1]
        if record.view_id.epoch <= latest.view_id.epoch:
            if record == latest.record() and sender != self.me:
                self._send(sender, ForceAck(msg.force_id))  # a retransmission: ack again
            return
        start = record.start
        if self._next_slot > start:
            self._event(
                GcsErrorCode.FORCE_FAILED,
                f"cannot install {record.view_id} at slot {start}: already executed up to {self._next_slot - 1}",
            )
            return
        removed = self._removed_before(start)
        if removed is not None:
            self._event(GcsErrorCode.FORCE_FAILED, removed)
            return
        for gap in msg.gaps:
            for s in range(gap.first, min(gap.end, self._next_slot)):
                entry = self._log.get(s)
                if entry is not None and not isinstance(entry[1], NoOp):
                    # We delivered something in a slot the forcer declares empty: decisions
                    # went on after its query (a majority was alive after all). Installing
                    # would make us diverge from the others: refuse, loudly.
                    self._event(
                        GcsErrorCode.FORCE_FAILED,
                        f"cannot install {record.view_id}: slot {s} was delivered here but is a gap there",
                    )
                    return
        config = Config.from_record(record, self.cfg.paxos_single_leader)
        self._forced = msg
        invariant(self._configs[0].start < start, "a forced configuration must start after the one in effect")
        self._configs = [c for c in self._configs if c.start < start] + [config]
        self._force_start = start
        gap_ballot = owner_ballot(config.epoch)
        for s in list(self._decided):
            if s >= start:
                del self._decided[s]
        for gap in msg.gaps:
            for s in range(max(gap.first, self._next_slot), gap.end):
                self._decided[s] = (gap_ballot, NOOP)
        for s in list(self._acc):
            if s >= start:
                del self._acc[s]
        for s in list(self._proposals):
            if s >= start or s in self._decided:
                del self._proposals[s]
        for s in list(self._mine):
            if s >= start:
                # Our value there is void in the forced configuration: propose it again (a
                # membership change too: a lost LEAVE left a leaving member in the group for
                # good, refusing every join; sim seed 1119).
                self._own_failed(NOOP, self._mine.pop(s))
        if self._leaving and self._phase is Phase.MEMBER:
            # Our LEAVE may have been decided in a slot the force voided: ask again.
            self._queue_reconfig(Reconfig(ReconfigOp.LEAVE, (self.me,)))
        if self._own_next > start:
            self._own_next = start
        self._frontier = max(self._frontier, start - 1)
        self._refresh_peers()
        if sender != self.me:
            self._send(sender, ForceAck(msg.force_id))

    # ------------------------------------------------------------------ pump: execute, propose

    def _pump(self) -> None:
        """Execute what is decided and use our own slots, until neither makes progress
        (executing moves the window; a skip or a one-member quorum decides at once)."""
        while True:
            self._execute()
            if self._phase not in _ACTIVE:
                return
            self._propose_own()
            self._flush_skip()
            if self._next_slot not in self._decided and not self._own_skip_executable():
                break
        if self._next_slot <= self._frontier and self._stall_since_ms is None:
            self._stall_since_ms = self._now_ms
            self._arm(self._now_ms + self.cfg.retransmit_interval_ms // 2)
        if self._suspected and self._phase is Phase.MEMBER:
            high = min(self._frontier, self._next_slot + self._horizon - 1)
            if high >= self._next_slot and high > self._revoked_upto:
                self._arm(max(self._now_ms, self._revoke_not_before_ms))  # revocations may be due

    def _own_skip_executable(self) -> bool:
        config = self._configs[0]
        if not config.members or (len(self._configs) > 1 and self._configs[1].start == self._next_slot):
            return False
        owner = config.owner(self._next_slot)
        return owner == self.me and self._skip_known(owner, self._next_slot, config.epoch)

    def _execute(self) -> None:
        decided = self._decided
        while True:
            slot = self._next_slot
            configs = self._configs
            if len(configs) > 1 and configs[1].start == slot:
                self._switch_config()
                if self._phase not in _ACTIVE:
                    return
                configs = self._configs
            config = configs[0]
            entry = decided.pop(slot, None)
            if entry is not None and ballot_epoch(entry[0]) > configs[-1].epoch:
                entry = None  # learned before our configurations were known: see _unknown_epoch
            if entry is None:
                if not config.members:
                    return
                owner = config.owner(slot)
                if not self._skip_known(owner, slot, config.epoch):
                    return
                entry = (owner_ballot(config.epoch), NOOP)
            self._apply(slot, entry[1], config)
            self._log[slot] = entry
            self._next_slot = Slot(slot + 1)
            self._forgotten_by.clear()
            self._acc.pop(slot, None)
            self._proposals.pop(slot, None)
            self._stall_since_ms = None
            if len(self._log) > self.cfg.decided_cache_slots_max:
                dropped = next(iter(self._log))
                del self._log[dropped]
                self._log_floor = dropped + 1
            if self._phase not in _ACTIVE:
                return

    def _last_words(self) -> None:
        """Leaving at a switch: hand the decisions before it to peers that have not executed
        them. Otherwise they may be the only copy: with the rest of the configuration dead,
        the slots could never be decided again (sim seed 268338234, --faults
        oneway,crash,loss). Bounded by fetch_slots_max; a Fetch is still answered later."""
        behind = [m for m in self._peers if self._peer_next.get(m, 0) < self._next_slot]
        if not behind:
            return
        first = max(self._log_floor, min(self._peer_next.get(m, 0) for m in behind), self._next_slot - self.cfg.fetch_slots_max)
        for slot in range(first, self._next_slot):
            entry = self._log.get(slot)
            if entry is not None:
                self._send_all(Decide(Slot(slot), entry[0], entry[1]), [m for m in behind if self._peer_next.get(m, 0) <= slot])

    def _switch_config(self) -> None:
        previous = self._configs.pop(0)
        config = self._configs[0]
        invariant(config.start == self._next_slot, "configuration switch off its start slot")
        view = config.view(previous)
        if self.me in config.member_set:
            if self._phase is Phase.CATCHING_UP:
                self._transition(Phase.MEMBER)
            self._install(view)
            self._refresh_peers()
            return
        if self._phase is Phase.MEMBER:
            self._install(view)  # the final view, without us
            self._last_words()
            if self._leaving:
                self._go_offline(None, "left the group")
            else:
                self._go_offline(GcsErrorCode.EXPELLED, f"expelled from the group in view {config.view_id}")
            return
        # Catching up and not (yet) in this configuration.
        if not self._in_any_config(self.me):
            self._go_offline(GcsErrorCode.EXPELLED, f"removed before our first view ({config.view_id})")
            return
        self._refresh_peers()

    def _install(self, view: View) -> None:
        self._view = view
        self._ready.views.append(view)
        self._counters.views_installed += 1

    def _go_offline(self, code: GcsErrorCode | None, detail: str) -> None:
        if code is not None:
            self._event(code, detail)
        undelivered = tuple(seq for seq in self._pending)
        if undelivered:
            self._event(GcsErrorCode.BROADCAST_DROPPED, f"not delivered before going offline: {detail}", undelivered)
        self._pending.clear()
        self._pending_bytes = 0
        self._transition(Phase.OFFLINE)
        self._wakeup_ms = _NEVER

    def _apply(self, slot: int, value: Value, config: Config) -> None:
        self._counters.slots_executed += 1
        mine = self._mine.pop(slot, None)
        match value:
            case NoOp():
                self._counters.slots_noop += 1
            case Batch(runs=runs):
                index = 0
                for run in runs:
                    index = self._deliver_run(slot, run, config, index)
            case Reconfig():
                if slot < self._force_start <= slot + self._horizon:
                    # Superseded by a later force_members: it would take effect at or after
                    # the forced start, where the configuration is exactly the forced list.
                    # Ours is proposed again below (a LEAVE dropped here for good kept a
                    # leaving member in the group, refusing every join).
                    value = NOOP
                else:
                    self._apply_reconfig(slot, value)
            case _:
                assert_never(value)
        if mine is not None:
            self._own_failed(value, mine)

    def _own_failed(self, decided: Value, mine: Value | None) -> None:
        """After our slot executed (or was dropped by force_members): re-propose what did not
        make it. `mine` None means "unknown, assume the worst"."""
        match mine:
            case None:
                self._send_seq = self._delivered_seq + 1
            case Batch(runs=runs):
                last = 0
                for r in runs:
                    if r.origin == self.me:
                        last = max(last, r.first_seq + len(r.payloads) - 1)
                if last > self._delivered_seq:
                    # Revoked to a no-op, or dropped as out of order: propose again from the
                    # first undelivered message; copies that still land are dropped as duplicates.
                    self._send_seq = self._delivered_seq + 1
            case Reconfig():
                if decided is not mine and decided != mine and self._reconfig_relevant(mine):
                    self._reconfigs.insert(0, mine)
            case NoOp():
                pass
            case _:
                assert_never(mine)

    def _reconfig_relevant(self, rc: Reconfig) -> bool:
        latest = self._configs[-1]
        match rc.op:
            case ReconfigOp.JOIN:
                return not all(m in latest.member_set for m in rc.members)
            case ReconfigOp.LEAVE:
                return any(m in latest.member_set for m in rc.members)
            case ReconfigOp.EXPEL:
                alive = [m for m in rc.members if m in latest.member_set and m in self._suspected]
                if len(alive) != len(rc.members):
                    self._expel_queued.difference_update(rc.members)
                return len(alive) == len(rc.members)
            case _:
                assert_never(rc.op)

    def _deliver_run(self, slot: int, run: Run, config: Config, index: int) -> int:
        origin = run.origin
        if origin not in config.member_set:
            return index  # closed group: only members of the slot's view deliver
        expected = self._origin_next.get(origin, 1)
        first = run.first_seq
        count = len(run.payloads)
        if first > expected or first + count <= expected:
            return index  # out of order (an earlier run was lost) or a duplicate
        skip = expected - first
        self._origin_next[origin] = first + count
        deliver = self._phase is Phase.MEMBER
        view_id = config.view_id
        counters = self._counters
        deliveries = self._ready.deliveries
        for i in range(skip, count):
            payload = run.payloads[i]
            if deliver:
                deliveries.append(Delivery(Position(Slot(slot), index), origin, first + i, payload, view_id))
                counters.deliveries += 1
                counters.delivered_bytes += len(payload)
            index += 1
        if origin == self.me:
            self._own_delivered(first + count - 1)
        return index

    def _own_delivered(self, last_seq: int) -> None:
        now = self._now_ms
        for seq in range(self._delivered_seq + 1, last_seq + 1):
            entry = self._pending.pop(seq, None)
            if entry is not None:
                self._pending_bytes -= len(entry[0])
                latency = now - entry[1]
                self._latency_count += 1
                self._latency_total_ms += latency
                if latency > self._latency_max_ms:
                    self._latency_max_ms = latency
                for i, bound in enumerate(_LATENCY_BUCKETS_MS):
                    if bound < 0 or latency <= bound:
                        self._latency_buckets[i] += 1
                        break
        self._delivered_seq = last_seq
        if self._send_seq <= last_seq:
            self._send_seq = last_seq + 1

    def _apply_reconfig(self, slot: int, rc: Reconfig) -> None:
        start = slot + self._horizon
        # The configuration it changes: the latest one, or, below a force_members' start,
        # the latest one before its own start. A member listed in the force may learn
        # slots decided before it only now; a change taking effect below the forced start
        # holds there (the forcer had applied it already): dropped, the member used another
        # rotation of owners there and proposed in a slot it did not own (sim seed
        # 268240069: two values accepted at ballot 0).
        index = len(self._configs)
        while index > 1 and self._configs[index - 1].start >= start:
            index -= 1
        latest = self._configs[index - 1]
        members = list(latest.members)
        match rc.op:
            case ReconfigOp.JOIN:
                for j in rc.members:
                    if j in members:
                        continue
                    # A new incarnation replaces the older one (same uuid or same address).
                    members = [m for m in members if m.uuid != j.uuid and m.address != j.address]
                    if len(members) < MEMBERS_MAX:
                        members.append(j)
            case ReconfigOp.LEAVE:
                members = [m for m in members if m not in rc.members]
            case ReconfigOp.EXPEL:
                members = [m for m in members if m not in rc.members]
                # Concurrent expels, each proposed by a member that saw a majority, must not
                # add up to removing a majority: the result keeps a majority of the
                # configuration that decided this slot (which also keeps that
                # configuration's slots learnable from the members that remain).
                deciding = self._configs[0]
                kept = sum(1 for m in members if m in deciding.member_set)
                if kept < deciding.quorum:
                    return
            case _:
                assert_never(rc.op)
        if tuple(members) == latest.members:
            return
        invariant(start > latest.start, "reconfiguration would start before the latest configuration")
        invariant(
            index == len(self._configs) or self._configs[index].epoch > latest.epoch,
            "only a forced configuration may follow a change learned late",
        )
        config = Config.make(
            ViewId(latest.view_id.epoch, latest.view_id.number + 1),
            Slot(start),
            tuple(members),
            self.cfg.paxos_single_leader,
        )
        self._configs.insert(index, config)
        self._frontier = max(self._frontier, start - 1)
        self._refresh_peers()
        for m in rc.members:
            if rc.op is ReconfigOp.JOIN and m in config.member_set and self._phase is Phase.MEMBER:
                welcome = Welcome(
                    m,
                    Slot(slot + 1),
                    tuple(c.record() for c in self._configs),
                    tuple(OriginSeq(o, n) for o, n in self._origin_next.items()),
                )
                self._welcomes[m] = welcome
                self._send(m, welcome)
        if rc.op is ReconfigOp.EXPEL:
            self._expel_queued.difference_update(rc.members)
        # Forget queued requests this change satisfied.
        self._reconfigs = [r for r in self._reconfigs if self._reconfig_relevant(r)]
        # Origins that left: their later batches are dropped by the closed-group rule.
        for o in list(self._origin_next):
            if not self._in_any_config(o):
                del self._origin_next[o]

    # -- own slots

    def _propose_own(self) -> None:
        """Fill our own slots inside the window with values, or skip those below the frontier."""
        limit = self._next_slot + self._window
        slot = self._own_next
        if slot < self._next_slot:
            slot = self._next_slot
        member = self._phase is Phase.MEMBER
        frontier = self._frontier
        configs = self._configs
        held = False
        while slot < limit:
            # Next slot >= `slot` that we own, across configuration boundaries.
            own = None
            for i, c in enumerate(configs):
                end = configs[i + 1].start if i + 1 < len(configs) else _NEVER
                if end <= slot:
                    continue
                cand = c.next_owned(self.me, slot) if c.members else None
                if cand is not None and cand < end:
                    own = cand
                    break
            if own is None or own >= limit:
                # Ownership is only final below `limit`: never move past it.
                self._own_next = max(self._own_next, limit)
                break
            if member and self._holds_batch():
                held = True
                # Batches wait for one in flight to be chosen: keep this slot for them.
                self._own_next = own
                break
            value = self._next_value() if member else None
            if value is not None:
                self._propose(own, value)
            elif own <= frontier:
                if self.cfg.paxos_single_leader:
                    # The single leader "skips" through a quorum (a no-op proposal), never by
                    # a quorum-less Skip: so a member taking over a slot may propose its own
                    # value there (see _begin_accept), as in plain Paxos.
                    self._propose(own, NOOP)
                else:
                    # The range starts where the search started: no own slot lies between,
                    # so consecutive skips form one contiguous range.
                    self._skip(slot, own)
            else:
                self._own_next = own
                break
            slot = own + 1
            self._own_next = slot
        if member and not held and self._wants_slot() and self._frontier < limit - 1:
            # A value waits but our next own slot is beyond the window: we need every slot
            # up to the window's end decided. Raising the frontier makes us Fetch them, and a
            # Fetch makes their idle owners skip (Mencius needs a "someone wants this slot").
            self._frontier = limit - 1
        if member and self.cfg.paxos_single_leader:
            self._forward_own()
            self._forward_reconfigs()

    def _holds_batch(self) -> bool:
        """True when a batch is ready for our next slot but must wait: proposals_in_flight_max
        own batches are proposed and not yet chosen. A membership change never waits."""
        if self._reconfigs:
            return False
        if self.cfg.paxos_single_leader:
            config0 = self._configs[0]
            if not (config0.leaders and self.me in config0.leader_rank):
                return False
            if not self._forwarded and self._send_seq >= self._seq_next:
                return False
        elif self._send_seq >= self._seq_next:
            return False  # nothing to send: the slot is skipped as usual
        in_flight = sum(1 for p in self._proposals.values() if p.owned and isinstance(p.value, Batch))
        return in_flight >= self.cfg.proposals_in_flight_max

    def _wants_slot(self) -> bool:
        if self._reconfigs:
            return True
        if self.me not in self._configs[0].leader_rank:
            return False
        return self._send_seq < self._seq_next or bool(self._forwarded)

    def _next_value(self) -> Value | None:
        """What to propose next in our slot: a membership change first, then a batch."""
        while self._reconfigs:
            rc = self._reconfigs.pop(0)
            if self._reconfig_relevant(rc):
                return rc
        runs: list[Run] = []
        budget_msgs = self.cfg.batch_messages_max
        budget_bytes = self.cfg.batch_bytes_max
        config0 = self._configs[0]
        is_leader = bool(config0.leaders) and self.me in config0.leader_rank
        if is_leader or not self.cfg.paxos_single_leader:
            payloads: list[bytes] = []
            seq = self._send_seq
            while seq < self._seq_next and len(payloads) < budget_msgs:
                entry = self._pending.get(seq)
                if entry is None:
                    seq += 1
                    continue
                if payloads and budget_bytes - len(entry[0]) < 0:
                    break
                payloads.append(entry[0])
                budget_bytes -= len(entry[0])
                seq += 1
            if payloads:
                runs.append(Run(self.me, self._send_seq, tuple(payloads)))
                budget_msgs -= len(payloads)
                self._send_seq = seq
        if self.cfg.paxos_single_leader and is_leader:
            while self._forwarded and budget_msgs > 0:
                run = self._forwarded.pop(0)
                runs.append(run)
                budget_msgs -= len(run.payloads)
        if not runs:
            return None
        return Batch(tuple(runs))

    def _forward_own(self) -> None:
        config0 = self._configs[0]
        if not config0.leaders or config0.leaders[0] == self.me or self._send_seq >= self._seq_next:
            return
        payloads: list[bytes] = []
        seq = self._send_seq
        budget = self.cfg.batch_bytes_max
        while seq < self._seq_next and len(payloads) < self.cfg.batch_messages_max:
            entry = self._pending.get(seq)
            if entry is None:
                seq += 1
                continue
            if payloads and budget - len(entry[0]) < 0:
                break
            payloads.append(entry[0])
            budget -= len(entry[0])
            seq += 1
        if payloads:
            self._send(config0.leaders[0], Forward(Run(self.me, self._send_seq, tuple(payloads))))
            self._send_seq = seq
            self._forward_sent_ms = self._now_ms
            self._arm(self._now_ms + 2 * self.cfg.retransmit_interval_ms)

    def _propose(self, slot: int, value: Value) -> None:
        config = self._config_for(slot)
        invariant(config.owner(slot) == self.me, "proposing in a slot we do not own")
        self._flush_skip()
        ballot = owner_ballot(config.epoch)
        p = _Proposal(Slot(slot), ballot, value, _ACCEPT, config, True, self._now_ms)
        self._proposals[slot] = p
        self._mine[slot] = value
        self._counters.proposals += 1
        self._send_all(Accept(Slot(slot), ballot, value), config.members)
        self._arm(self._now_ms + self.cfg.retransmit_interval_ms)
        reply = self._accept_local(slot, ballot, value)
        if isinstance(reply, Accepted):
            p.acks.add(self.me)
            if len(p.acks) >= config.quorum:
                self._chosen(p)
        elif isinstance(reply, Nack):
            self._on_nack(self.me, reply)

    def _skip(self, first: int, slot: int) -> None:
        """Skip our own `slot`; [first, slot) holds no slot of ours."""
        epoch = self._config_for(slot).epoch
        if self._skip_end == first and self._skip_ballot == owner_ballot(epoch):
            self._skip_end = slot + 1
        else:
            self._flush_skip()
            self._skip_first = first
            self._skip_end = slot + 1
            self._skip_ballot = owner_ballot(epoch)
        self._add_skip(self.me, first, slot + 1, epoch)

    def _flush_skip(self) -> None:
        if self._skip_first < 0:
            return
        msg = Skip(Slot(self._skip_first), Slot(self._skip_end), self._skip_ballot)
        self._skip_first = self._skip_end = -1
        self._counters.skips_sent += 1
        self._send_all(msg)
