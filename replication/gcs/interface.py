"""The group communication (GCS) interface, after the seeds' GCS: control, message, statistics.

Upper layers (the member, certification, recovery) talk to group communication only through
this module. Two bindings implement it: `xcom` (the Paxos core driven over TCP by asyncio) and
`sim` (the same core driven by a seeded, in-memory network). Nothing here does I/O, reads a
clock or imports one: the consensus core imports these types, and the core must stay sans-IO.

Vocabulary
----------
- `MemberId`: one *incarnation* of a member process: a stable name (the server uuid), the group
  address "host:port" and an incarnation number. Acceptor state lives in memory, so a member
  that crashes comes back as a new incarnation and must join again (seed "Gone missing").
- `View`: the membership installed at a slot. Every member switches view at the same slot,
  so the deliveries between two views are the same everywhere (view synchrony).
- `Delivery`: one application message in total order. Its `position` (slot, index in the slot)
  is identical on every member that delivers it; `(origin, origin_seq)` identify the broadcast.

Guarantees a binding gives (DESIGN §3, checked by tests/sim): closed group, agreement / total
order, integrity, safe delivery, view synchrony, and liveness while a majority is connected.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType, Protocol, runtime_checkable

__all__ = [
    "Slot",
    "MemberId",
    "ViewId",
    "Position",
    "View",
    "Delivery",
    "MemberState",
    "ReachabilityChange",
    "GcsErrorCode",
    "GcsEvent",
    "GcsError",
    "GcsCounters",
    "MemberStatistics",
    "LatencyStatistics",
    "GcsStatistics",
    "ViewListener",
    "DeliveryListener",
    "EventListener",
    "GcsControl",
    "GcsMessaging",
    "GcsStatisticsSource",
    "GroupCommunication",
    "MEMBERS_MAX",
]

Slot = NewType("Slot", int)
"""A consensus instance number. Slot 1 is the first slot of a bootstrapped group."""

MEMBERS_MAX = 9
"""A group holds at most nine members, as MySQL GR (ER_GROUP_REPLICATION_MAX_GROUP_SIZE)."""


@dataclass(frozen=True, slots=True, order=True)
class MemberId:
    """One incarnation of a member: `uuid` (stable name), `address` ("host:port"), `incarnation`.

    Ordering is by (uuid, address, incarnation); it only serves deterministic tie-breaks.
    The transport routes by `address`; the core tells incarnations apart by `incarnation`.
    Member ids are dict keys and compared on every message in the core: the hash is computed
    once and equality tries identity first.
    """

    uuid: str
    address: str
    incarnation: int
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.uuid:
            raise ValueError("MemberId.uuid must not be empty")
        if not self.address or ":" not in self.address:
            raise ValueError(f"MemberId.address must be 'host:port', got {self.address!r}")
        if not 0 <= self.incarnation < 2**32:
            raise ValueError(f"MemberId.incarnation out of range: {self.incarnation}")
        object.__setattr__(self, "_hash", hash((self.uuid, self.address, self.incarnation)))

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not MemberId:
            return NotImplemented
        return (
            self._hash == other._hash
            and self.incarnation == other.incarnation
            and self.uuid == other.uuid
            and self.address == other.address
        )

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[MemberId], tuple[str, str, int]]:
        # String hashes differ between processes: never carry _hash across a pickle.
        return (MemberId, (self.uuid, self.address, self.incarnation))

    def __str__(self) -> str:
        return f"{self.uuid}#{self.incarnation}@{self.address}"


@dataclass(frozen=True, slots=True, order=True)
class ViewId:
    """Identifies a configuration: `epoch` grows only with force_members, `number` with every view."""

    epoch: int
    number: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.number}"


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a message sits in the total order: its slot and its index among that slot's deliveries."""

    slot: Slot
    index: int

    def __str__(self) -> str:
        return f"{self.slot}.{self.index}"


@dataclass(frozen=True, slots=True)
class View:
    """A membership in effect from `start_slot` on (every member installs it at that slot).

    `members` keeps join order (the first member is the longest standing); `leaders` are the
    members that own slots (all members, or only the first with paxos_single_leader).
    `joined` / `left` are relative to the group's previous configuration (both empty for the
    bootstrap view); `left` includes expelled members.
    """

    view_id: ViewId
    members: tuple[MemberId, ...]
    leaders: tuple[MemberId, ...]
    start_slot: Slot
    joined: tuple[MemberId, ...] = ()
    left: tuple[MemberId, ...] = ()

    def __contains__(self, member: object) -> bool:
        return member in self.members


@dataclass(frozen=True, slots=True)
class Delivery:
    """One application message delivered in total order (identical on every member)."""

    position: Position
    origin: MemberId
    origin_seq: int
    payload: bytes
    view_id: ViewId


class MemberState(enum.Enum):
    """Member states as in performance_schema.replication_group_members."""

    OFFLINE = "OFFLINE"
    RECOVERING = "RECOVERING"
    ONLINE = "ONLINE"
    ERROR = "ERROR"
    UNREACHABLE = "UNREACHABLE"


@dataclass(frozen=True, slots=True)
class ReachabilityChange:
    """A peer became UNREACHABLE (silent for the suspicion timeout) or ONLINE again."""

    member: MemberId
    state: MemberState
    at_ms: int


class GcsErrorCode(enum.Enum):
    """What went wrong, in terms the upper layer can act on (each is also reported as an event)."""

    NOT_IN_VIEW = "not_in_view"  # broadcast/leave/force from a member outside the view
    QUEUE_FULL = "queue_full"  # broadcast refused: the bounded queue is full
    MESSAGE_TOO_LARGE = "message_too_large"  # broadcast refused: payload over the bound
    BROADCAST_STALLED = "broadcast_stalled"  # waited longer than the stall bound (no majority?)
    BROADCAST_DROPPED = "broadcast_dropped"  # left/expelled before these were delivered
    FORCE_REFUSED = "force_refused"  # force_members while a majority is reachable, or invalid
    FORCE_FAILED = "force_failed"  # a listed member did not answer in time
    JOIN_FAILED = "join_failed"  # no seed let us in within the join timeout
    JOIN_REFUSED = "join_refused"  # the group is full or the request was invalid
    GROUP_EXISTS = "group_exists"  # bootstrap refused: a live member of the group answered
    EXPELLED = "expelled"  # the group removed this incarnation
    BEHIND = "behind"  # peers no longer hold the slots this member needs to catch up
    INVALID_REQUEST = "invalid_request"  # an event that makes no sense in this phase
    INTERNAL = "internal"  # an invariant failed: the member is in ERROR


@dataclass(frozen=True, slots=True)
class GcsEvent:
    """An error or notable event reported by a binding; `seqs` names affected broadcasts."""

    code: GcsErrorCode
    detail: str
    seqs: tuple[int, ...] = ()


class GcsError(Exception):
    """Raised by binding methods that refuse a request synchronously (e.g. broadcast, force)."""

    def __init__(self, code: GcsErrorCode, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class GcsCounters:
    """Monotone counters since this incarnation started."""

    messages_sent: int = 0
    messages_received: int = 0
    broadcasts_accepted: int = 0
    broadcasts_refused: int = 0
    deliveries: int = 0
    delivered_bytes: int = 0
    slots_executed: int = 0
    slots_noop: int = 0
    proposals: int = 0
    skips_sent: int = 0
    revocations: int = 0
    views_installed: int = 0
    fetches_sent: int = 0
    messages_from_non_members: int = 0  # consensus messages dropped: sender not in our configurations
    learns_without_value: int = 0  # value-less decisions for a slot we held no value of (fetched instead)


@dataclass(frozen=True, slots=True)
class MemberStatistics:
    """What this member knows of a peer: reachability and progress."""

    member: MemberId
    state: MemberState
    last_heard_ms: int | None
    executed_slot: Slot | None


@dataclass(frozen=True, slots=True)
class LatencyStatistics:
    """Broadcast-to-local-delivery latency of this member's own messages, in ms."""

    count: int = 0
    total_ms: int = 0
    max_ms: int = 0
    buckets_ms: tuple[tuple[int, int], ...] = ()  # (upper bound ms, count); last bound is -1 = inf

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class GcsStatistics:
    """A snapshot of the statistics interface."""

    me: MemberId
    state: MemberState
    view_id: ViewId | None
    executed_slot: Slot
    queued_broadcasts: int
    counters: GcsCounters
    members: tuple[MemberStatistics, ...] = ()
    latency: LatencyStatistics = field(default_factory=LatencyStatistics)


class ViewListener(Protocol):
    def __call__(self, view: View) -> None: ...


class DeliveryListener(Protocol):
    def __call__(self, delivery: Delivery) -> None: ...


class EventListener(Protocol):
    """Receives reachability changes and errors/events (`GcsEvent`)."""

    def __call__(self, event: ReachabilityChange | GcsEvent) -> None: ...


@runtime_checkable
class GcsControl(Protocol):
    """Membership: bootstrap/join/leave, view listeners, force_members.

    Calls start an operation and return; completion arrives through the listeners (a view that
    contains this member means the join completed). Listeners run in delivery order.
    """

    @property
    def me(self) -> MemberId: ...

    def bootstrap(self, members: tuple[MemberId, ...], seeds: tuple[MemberId, ...] = ()) -> None:
        """Start a new group whose first view is `members` (usually just `(me,)`).

        One group, one lineage: two groups with the same name must never run at once (their
        views and positions would collide, and members would hop between them). So with
        `seeds` (only their addresses matter: the configured group seeds and former peers) the
        binding first asks them whether a group is running; if a live member of a group
        answers, the bootstrap is refused: GcsEvent(GROUP_EXISTS) reaches the event listeners,
        this incarnation goes OFFLINE and never installs a view, and the caller should join
        instead. Only when nobody answers within the probe time does the bootstrap view arrive.
        Without seeds the caller vouches that no group is running (a whole-group start where
        every member is listed, or a group restarted after every member stopped).
        """
        ...

    def join(self, seeds: tuple[MemberId, ...]) -> None: ...

    def leave(self) -> None: ...

    def force_members(self, members: tuple[MemberId, ...]) -> None:
        """Install `members` as the configuration without consensus (seed "Gone missing").

        Raises GcsError(FORCE_REFUSED) at once when a majority of the current view is reachable
        or the list is invalid; a later failure arrives as a GcsEvent(FORCE_FAILED).
        """
        ...

    def current_view(self) -> View | None: ...

    def add_view_listener(self, listener: ViewListener) -> None: ...

    def add_event_listener(self, listener: EventListener) -> None: ...


@runtime_checkable
class GcsMessaging(Protocol):
    """Total-order broadcast within the closed group."""

    def broadcast(self, payload: bytes) -> int:
        """Queue `payload` for total-order delivery; return its origin_seq.

        Raises GcsError(NOT_IN_VIEW | QUEUE_FULL | MESSAGE_TOO_LARGE) when refused. Without a
        majority the message waits (bounded queue); a GcsEvent(BROADCAST_STALLED) reports a
        wait longer than the configured bound so the caller can time out.
        """
        ...

    def add_delivery_listener(self, listener: DeliveryListener) -> None: ...


@runtime_checkable
class GcsStatisticsSource(Protocol):
    def statistics(self) -> GcsStatistics: ...


@runtime_checkable
class GroupCommunication(GcsControl, GcsMessaging, GcsStatisticsSource, Protocol):
    """The whole GCS interface: what a binding (xcom over TCP, sim) offers upper layers."""
