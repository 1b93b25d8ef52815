"""The group as the router sees it: members, their state and role, the group's mode.

Theory of operation
-------------------

A `Topology` is an immutable snapshot of `performance_schema.replication_group_members`
(DESIGN §8: OFFLINE, RECOVERING, ONLINE, ERROR, UNREACHABLE; PRIMARY / SECONDARY) plus the
group's mode (single- or multi-primary). The I/O side polls a member (or listens to view
changes), builds a new snapshot with `parse_group_members`, and swaps it in; the routing policy
(`router.routing.route`) is a pure function of a snapshot, so a decision never sees half a view.

`version` counts changes: `parse_group_members(rows, previous=old)` keeps `old.version` when the
rows describe the same members in the same states and roles (a poll that found nothing new),
and uses `old.version + 1` otherwise. Equal versions of one lineage therefore mean equal
membership, and a consumer can tell "the group changed" from a number.

Only ONLINE members serve statements. A RECOVERING member has not caught up (its reads would be
stale and it refuses writes), and ERROR / UNREACHABLE / OFFLINE members cannot be relied on.

Which answers are trusted (`distrust`, DESIGN §8): the router polls `ROUTER_MEMBERS_QUERY`, the
member table plus, from the member that answered, whether it is ONLINE in a view whose majority
it can reach (VIEW_HAS_QUORUM) and the group's mode. A table is installed only from a member that
is ONLINE in it, says its view has quorum, and whose table agrees (more than half of its rows
reachable); an empty table never is. A member cut off in a minority still answers from its last
view, in which everyone may look ONLINE: routing on it would send writes nowhere useful and reads
to stale data. In single-primary mode a table with two PRIMARY rows is kept but makes
`ambiguous_primary` true: the routing policy then refuses writes (1290) until one remains.

This module does no I/O; it knows nothing of Paxos (DESIGN §2): the member table is all it reads.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NewType

__all__ = [
    "GROUP_MEMBERS_MAX",
    "MEMBER_WEIGHT_DEFAULT",
    "GROUP_MEMBERS_QUERY",
    "MemberId",
    "MemberState",
    "MemberRole",
    "Mode",
    "MemberInfo",
    "Topology",
    "TopologyError",
    "parse_group_members",
    "ROUTER_MEMBERS_QUERY",
    "PolledTable",
    "parse_router_members",
    "distrust",
]

GROUP_MEMBERS_MAX = 9  # GR's limit (DESIGN §11, 3191); a larger table is refused, not routed over
MEMBER_WEIGHT_DEFAULT = 50  # group_replication_member_weight's default (DESIGN §10b)
MEMBER_WEIGHT_MAX = 100
PORT_MAX = 65535
MEMBER_ID_CHARS_MAX = 255  # GR uses 36-character UUIDs; anything past this is garbage, not an id
GROUP_MEMBERS_QUERY = (
    "SELECT MEMBER_ID, MEMBER_HOST, MEMBER_PORT, MEMBER_STATE, MEMBER_ROLE "
    "FROM performance_schema.replication_group_members"
)

# grproxy's poll: replication_group_members' first five columns, then IS_SELF, VIEW_HAS_QUORUM and
# SINGLE_PRIMARY_MODE (replication.admin.router_members answers it; no admin login needed).
ROUTER_MEMBERS_QUERY = "/* grproxy */ ROUTER MEMBERS"

MemberId = NewType("MemberId", str)  # MEMBER_ID: the member's server UUID


class TopologyError(ValueError):
    """A member table the router cannot use (bad row, duplicate member, too many members)."""


class MemberState(enum.Enum):
    """MEMBER_STATE, as in performance_schema.replication_group_members."""

    OFFLINE = "OFFLINE"
    RECOVERING = "RECOVERING"
    ONLINE = "ONLINE"
    ERROR = "ERROR"
    UNREACHABLE = "UNREACHABLE"


class MemberRole(enum.Enum):
    """MEMBER_ROLE. GR shows an empty role for a member that is not part of the group (NONE)."""

    PRIMARY = "PRIMARY"
    SECONDARY = "SECONDARY"
    NONE = ""


class Mode(enum.Enum):
    SINGLE_PRIMARY = "SINGLE-PRIMARY"
    MULTI_PRIMARY = "MULTI-PRIMARY"


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One row of the member table. Validated at construction (raises TopologyError)."""

    member_id: MemberId
    host: str
    port: int
    state: MemberState
    role: MemberRole
    weight: int = MEMBER_WEIGHT_DEFAULT

    def __post_init__(self) -> None:
        if not self.member_id or len(self.member_id) > MEMBER_ID_CHARS_MAX:
            raise TopologyError(f"member id {self.member_id!r} is empty or longer than {MEMBER_ID_CHARS_MAX}")
        if not 0 <= self.port <= PORT_MAX:
            raise TopologyError(f"member {self.member_id}: port {self.port} out of range")
        if not 0 <= self.weight <= MEMBER_WEIGHT_MAX:
            raise TopologyError(f"member {self.member_id}: weight {self.weight} out of range 0..{MEMBER_WEIGHT_MAX}")

    @property
    def online(self) -> bool:
        """ONLINE and routable: a member whose address is not known yet (port 0: it has not
        announced it to the member asked) takes no traffic until it has."""
        return self.state is MemberState.ONLINE and self.port > 0

    @property
    def writable(self) -> bool:
        """May take writes now: an ONLINE PRIMARY (in multi-primary mode every ONLINE member is one)."""
        return self.online and self.role is MemberRole.PRIMARY


@dataclass(frozen=True, slots=True)
class Topology:
    """A snapshot of the group. Members keep the order they were given in.

    Invariants (checked at construction, TopologyError otherwise): member ids are unique; at most
    GROUP_MEMBERS_MAX members; `version` >= 0. Several PRIMARY rows in single-primary mode are
    a fact to route around, not a bad table: `ambiguous_primary` is then true and `writers()`
    is empty (no write may go to either).
    """

    members: tuple[MemberInfo, ...]
    mode: Mode = Mode.SINGLE_PRIMARY
    version: int = 0
    # Views computed once per snapshot: the router asks for them on every statement.
    _by_id: dict[str, MemberInfo] = field(init=False, repr=False, compare=False)
    _online: tuple[MemberInfo, ...] = field(init=False, repr=False, compare=False)
    _writers: tuple[MemberInfo, ...] = field(init=False, repr=False, compare=False)
    _online_secondaries: tuple[MemberInfo, ...] = field(init=False, repr=False, compare=False)
    ambiguous_primary: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.version < 0:
            raise TopologyError(f"topology version {self.version} < 0")
        if len(self.members) > GROUP_MEMBERS_MAX:
            raise TopologyError(f"{len(self.members)} members: a group has at most {GROUP_MEMBERS_MAX}")
        seen: set[str] = set()
        for m in self.members:
            if m.member_id in seen:
                raise TopologyError(f"member {m.member_id} listed twice")
            seen.add(m.member_id)
        ambiguous = self.mode is Mode.SINGLE_PRIMARY and len(self.primaries()) > 1
        online = tuple(m for m in self.members if m.online)
        object.__setattr__(self, "ambiguous_primary", ambiguous)
        object.__setattr__(self, "_by_id", {m.member_id: m for m in self.members})
        object.__setattr__(self, "_online", online)
        object.__setattr__(self, "_writers",
                           () if ambiguous else tuple(m for m in online if m.role is MemberRole.PRIMARY))
        object.__setattr__(self, "_online_secondaries", tuple(m for m in online if m.role is MemberRole.SECONDARY))

    def member(self, member_id: MemberId) -> MemberInfo | None:
        """The member with this id, or None if it is not in the table."""
        return self._by_id.get(member_id)

    def is_online(self, member_id: MemberId) -> bool:
        m = self._by_id.get(member_id)
        return m is not None and m.online

    def online(self) -> tuple[MemberInfo, ...]:
        """ONLINE members, in table order."""
        return self._online

    def primaries(self) -> tuple[MemberInfo, ...]:
        """Members with the PRIMARY role, whatever their state (see `writers` for ONLINE ones)."""
        return tuple(m for m in self.members if m.role is MemberRole.PRIMARY)

    def secondaries(self) -> tuple[MemberInfo, ...]:
        """Members with the SECONDARY role, whatever their state."""
        return tuple(m for m in self.members if m.role is MemberRole.SECONDARY)

    def writers(self) -> tuple[MemberInfo, ...]:
        """Members that may take writes now: ONLINE primaries (none while the primary is ambiguous)."""
        return self._writers

    def online_secondaries(self) -> tuple[MemberInfo, ...]:
        """ONLINE members with the SECONDARY role, in table order."""
        return self._online_secondaries

    def same_members(self, other: Topology) -> bool:
        """Whether `other` describes the same group (members, states, roles, mode), whatever its version."""
        return self.mode is other.mode and self.members == other.members


def _text(value: object, column: str, row_no: int) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise TopologyError(f"row {row_no}: {column} is not UTF-8: {bytes(value)!r}") from None
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    raise TopologyError(f"row {row_no}: {column} {value!r} is not text")


def _int(value: object, column: str, row_no: int) -> int:
    if isinstance(value, bool):
        raise TopologyError(f"row {row_no}: {column} {value!r} is not an integer")
    if isinstance(value, int):
        return value
    text = _text(value, column, row_no).strip()
    if not text.isdigit():
        raise TopologyError(f"row {row_no}: {column} {text!r} is not an integer")
    return int(text)


def _port(value: object, row_no: int) -> int:
    """MEMBER_PORT; empty or NULL (a member that has not announced its address yet, e.g. a new
    incarnation just admitted) is 0: the row still counts, the member is not routable."""
    if value is None:
        return 0
    if isinstance(value, (bytes, bytearray, str)) and not _text(value, "MEMBER_PORT", row_no).strip():
        return 0
    return _int(value, "MEMBER_PORT", row_no)


def parse_group_members(
    rows: Iterable[Sequence[object]],
    *,
    mode: Mode | None = None,
    previous: Topology | None = None,
) -> Topology:
    """Build a Topology from rows of GROUP_MEMBERS_QUERY.

    Args:
        rows: (MEMBER_ID, MEMBER_HOST, MEMBER_PORT, MEMBER_STATE, MEMBER_ROLE[, MEMBER_WEIGHT]) with
            text as str or bytes (UTF-8) and numbers as int or decimal text. MEMBER_ROLE may be
            empty or NULL (a member outside the group). A row with an empty MEMBER_ID (what GR
            shows before the plugin starts) names no member and is skipped.
        mode: the group's mode; None infers it: MULTI_PRIMARY when several members have the
            PRIMARY role, else SINGLE_PRIMARY (a group with one primary is routed the same way
            either way).
        previous: the snapshot this one replaces; the result keeps its version when nothing
            changed and takes version + 1 otherwise. None gives version 0.

    Raises TopologyError naming the row for an unknown state or role, a bad port or weight, a
    duplicate member, too many members, or several primaries in single-primary mode.
    """
    members: list[MemberInfo] = []
    for row_no, row in enumerate(rows):
        if len(row) not in (5, 6):
            raise TopologyError(f"row {row_no}: expected 5 or 6 columns, got {len(row)}")
        member_id = _text(row[0], "MEMBER_ID", row_no).strip()
        if not member_id:
            continue
        state_text = _text(row[3], "MEMBER_STATE", row_no).strip().upper()
        role_text = _text(row[4], "MEMBER_ROLE", row_no).strip().upper()
        try:
            state = MemberState(state_text)
        except ValueError:
            raise TopologyError(f"row {row_no}: unknown MEMBER_STATE {state_text!r}") from None
        try:
            role = MemberRole(role_text)
        except ValueError:
            raise TopologyError(f"row {row_no}: unknown MEMBER_ROLE {role_text!r}") from None
        weight = _int(row[5], "MEMBER_WEIGHT", row_no) if len(row) == 6 else MEMBER_WEIGHT_DEFAULT
        members.append(
            MemberInfo(
                member_id=MemberId(member_id),
                host=_text(row[1], "MEMBER_HOST", row_no),
                port=_port(row[2], row_no),
                state=state,
                role=role,
                weight=weight,
            )
        )
    if mode is None:
        several = sum(1 for m in members if m.role is MemberRole.PRIMARY) > 1
        mode = Mode.MULTI_PRIMARY if several else Mode.SINGLE_PRIMARY
    topology = Topology(tuple(members), mode, 0)
    if previous is None:
        return topology
    version = previous.version if topology.same_members(previous) else previous.version + 1
    return Topology(topology.members, mode, version)


@dataclass(frozen=True, slots=True)
class PolledTable:
    """One member's answer to ROUTER_MEMBERS_QUERY: its table, which row is its own (None: it
    is not in its own table), whether its view has quorum, and the mode it applies."""

    table: Topology
    self_id: MemberId | None
    quorum: bool


def parse_router_members(rows: Iterable[Sequence[object]], *, previous: Topology | None = None) -> PolledTable:
    """Parse an answer to ROUTER_MEMBERS_QUERY (rows of MEMBER_ID, MEMBER_HOST, MEMBER_PORT,
    MEMBER_STATE, MEMBER_ROLE, IS_SELF, VIEW_HAS_QUORUM, SINGLE_PRIMARY_MODE). The mode is the
    member's word, never inferred from roles (two PRIMARY rows in single-primary mode must read
    as an ambiguous primary, not as multi-primary). Raises TopologyError as parse_group_members."""
    rows = list(rows)
    quorum = False
    single = True
    self_id: MemberId | None = None
    members: list[Sequence[object]] = []
    for row_no, row in enumerate(rows):
        if len(row) != 8:
            raise TopologyError(f"row {row_no}: expected 8 columns, got {len(row)}")
        flags = [_int(row[i], name, row_no) for i, name in
                 ((5, "IS_SELF"), (6, "VIEW_HAS_QUORUM"), (7, "SINGLE_PRIMARY_MODE"))]
        if flags[0]:
            self_id = MemberId(_text(row[0], "MEMBER_ID", row_no).strip())
        quorum, single = bool(flags[1]), bool(flags[2])  # the same on every row
        members.append(row[:5])
    mode = Mode.SINGLE_PRIMARY if single else Mode.MULTI_PRIMARY
    return PolledTable(parse_group_members(members, mode=mode, previous=previous), self_id, quorum)


def distrust(polled: PolledTable) -> str | None:
    """Why the router must not install this answer, or None when it may (see the module
    docstring): an empty table; a member not ONLINE in its own table; a view without quorum by
    the member's word or by its own table (half or more of its rows UNREACHABLE)."""
    table = polled.table
    if not table.members:
        return "an empty member table"
    me = table.member(polled.self_id) if polled.self_id is not None else None
    if me is None:
        return "a member that is not in its own member table"
    if not me.online:
        return f"a member that is {me.state.value}"
    reachable = sum(1 for m in table.members if m.state is not MemberState.UNREACHABLE)
    if not polled.quorum or reachable * 2 <= len(table.members):
        return "a member whose view has no quorum (it cannot reach a majority of its group)"
    return None
