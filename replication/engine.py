"""The deterministic heart of a member: from totally ordered deliveries to decisions.

Theory of operation. Every member feeds the same views and deliveries, in the same order, to
its `Engine`; the engine holds nothing that depends on local timing, so every member reaches
the same decisions: which transactions commit and with which seq, when DDL runs (and whether it
runs: a DDL is decided by its origin's DdlOutcome, or — when the origin leaves the view first —
run by everyone; see `ExecuteDdl`), which member
is primary, what each member's state is, and when certification data may be collected.
The member (replication/member.py) turns the returned actions into I/O: answering the local
session waiting on a commit, queueing remote transactions for the applier, running DDL.

Pure: no I/O, no clock, no logging. A violated invariant raises `EngineInvariantError`; the
member then goes to ERROR (it must never keep certifying from a state that may differ from
the other members').
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field, replace

from replication.gcs.interface import MemberState, View

from .certifier import Certifier, CertifierFull, KeyHash, Seq
from .messages import (
    AdminAction,
    AdminOp,
    AppliedAck,
    Announce,
    DdlMessage,
    DdlOutcome,
    MemberStats,
    Message,
    ReplicationDecodeError,
    StableReport,
    SyncPoint,
    TxnMessage,
    decode,
)


class Role(enum.Enum):
    PRIMARY = "PRIMARY"
    SECONDARY = "SECONDARY"


class EngineInvariantError(Exception):
    """The engine met a state it cannot certify from; the member must go to ERROR."""


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """What the group knows of a member (replication_group_members, one row)."""

    uuid: str
    state: MemberState
    role: Role
    weight: int = 50
    member_address: str = ""
    version: str = ""
    join_index: int = 0  # order of arrival in the group; older members first


# --- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalOutcome:
    """This member's transaction `txn_id` was certified: committed as `seq`, or conflicted."""

    txn_id: int
    seq: Seq | None
    conflict_seq: Seq | None = None
    changes: bytes = b""


@dataclass(frozen=True, slots=True)
class ApplyRemote:
    """Another member's transaction committed as `seq`: apply its changes here."""

    seq: Seq
    origin: str
    changes: bytes
    write_set: tuple[KeyHash, ...]
    ack: bool = False  # report AppliedAck once applied (consistency AFTER)


@dataclass(frozen=True, slots=True)
class AckReceived:
    """`member` reported it has applied `seq`."""

    member: str
    seq: Seq


@dataclass(frozen=True, slots=True)
class ExecuteDdl:
    """DDL ordered as `seq`: at that point of the order every member's applier stops (all
    earlier seqs applied, no later one started). `local`: this member asked for it — its
    session runs it now, in the client's own session. Elsewhere it runs, under the origin
    session's `context`, once `DdlDecided(seq)` says so."""

    seq: Seq
    origin: str
    txn_id: int
    schema: str
    sql: bytes
    local: bool
    context: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DdlDecided:
    """DDL `seq` is decided: `run` — it succeeded on its origin (`errno` 0), or its origin
    left the view before saying (`origin_left`), or it failed there with `errno` after
    changing something (the origin's server logged it): then it must fail with that `errno`
    here too. Not `run` — it failed on its origin with `errno`, changing nothing: nobody runs
    it."""

    seq: Seq
    run: bool
    errno: int = 0
    origin_left: bool = False


@dataclass(frozen=True, slots=True)
class SyncReached:
    """A sync point: whoever waits on (origin, sync_id) needs every seq up to `seq` applied."""

    origin: str
    sync_id: int
    seq: Seq


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """The member table or the primary changed (after a view or an announcement)."""

    members: tuple[MemberRecord, ...]
    primary: str | None
    previous_primary: str | None


@dataclass(frozen=True, slots=True)
class CertifierRefused:
    """A transaction could not be certified because the certifier is at its bound."""

    origin: str
    txn_id: int


@dataclass(frozen=True, slots=True)
class AdminOutcome:
    """A group action (AdminOp) was decided at this point of the order: applied (`ok`) or
    refused, with GR's message for the session that asked (on `origin`)."""

    origin: str
    op_id: int
    ok: bool
    message: str


@dataclass(frozen=True, slots=True)
class HandoverStarted:
    """set_as_primary was ordered while `old` is the primary: `old` ends (or, after
    `timeout_s`, rolls back) its transactions running now, then broadcasts HANDOVER_DONE, at
    whose delivery `target` becomes the primary. None: no timeout given (GR waits for them
    without a bound, and new transactions may start meanwhile)."""

    old: str
    target: str
    timeout_s: int | None


@dataclass(frozen=True, slots=True)
class Handover:
    """A primary change between its two steps (Engine.handover)."""

    origin: str
    op_id: int
    target: str
    old: str
    timeout_s: int | None


Action = (LocalOutcome | ApplyRemote | ExecuteDdl | SyncReached | MembershipChanged | CertifierRefused
          | AckReceived | AdminOutcome | DdlDecided | HandoverStarted)

# GR's answers to its group actions (plugin/group_replication udf_single_primary.cc / udf_multi_primary.cc).
NOT_A_MEMBER = "The requested uuid is not a member of the group."
MEMBER_NOT_ONLINE = "A member is joining the group, wait for it to be ONLINE."
IN_MULTI_PRIMARY = "In multi-primary mode. Use group_replication_switch_to_single_primary_mode."
ALREADY_PRIMARY = "The requested member is already the current group primary."
ALREADY_SINGLE = "The group is already on single-primary mode."
ALREADY_SINGLE_WITH_UUID = "Already in single-primary mode. Did you mean to use group_replication_set_as_primary?"
ALREADY_MULTI = "The group is already on multi-primary mode."
SWITCHED_SINGLE = "Mode switched to single-primary successfully."
SWITCHED_MULTI = "Mode switched to multi-primary successfully."
SWITCHED_PRIMARY = "Primary server switched to: {}"
ACTION_RUNNING = "There is already a group action running: wait for it to end."
TARGET_LEFT = ("The appointed primary for election left the group, this operation will be aborted and if present "
               "the old primary member will be re-elected.")


# --- the engine ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Engine:
    """See the module docstring. `me` is this member's uuid."""

    me: str
    single_primary: bool = True
    certifier: Certifier = field(default_factory=Certifier)
    members: dict[str, MemberRecord] = field(default_factory=dict)
    primary: str | None = None
    view: View | None = None
    _joins: int = 0
    # replication_group_member_stats: this member's certification counters (from its own
    # deliveries; a joiner counts from its join), and the last MemberStats of every member.
    stats_checked: int = 0
    stats_conflicts: int = 0
    stats_local_proposed: int = 0
    stats_local_rollback: int = 0
    last_conflict_free: Seq = Seq(0)
    member_stats: dict[str, MemberStats] = field(default_factory=dict)
    pending_ddl: dict[Seq, str] = field(default_factory=dict)  # DDL seq → origin, until decided
    handover: Handover | None = None  # set_as_primary between its two steps

    # views ---------------------------------------------------------------------------------------

    def on_view(self, view: View) -> list[Action]:
        """Install a view: members that left are dropped; new ones start RECOVERING."""
        first = self.view is None
        joined = {m.uuid for m in view.joined}
        present = {m.uuid for m in view.members}
        for uuid in [u for u in self.members if u not in present]:
            del self.members[uuid]
            self.member_stats.pop(uuid, None)
        for m in view.joined:
            # A new incarnation of a member that was still in the table (restarted before it
            # was expelled) starts over: RECOVERING, no role; the old one's role is re-elected.
            if not first and m.uuid in self.members:
                del self.members[m.uuid]
        decided = self._decide_left_ddl(present - joined)
        for m in view.members:
            if m.uuid not in self.members:
                self._joins += 1
                # Members of a bootstrap view start the group together: ONLINE. A joiner's
                # first view: the members that were there before are taken as ONLINE (they
                # re-announce their facts when someone joins); joiners are RECOVERING.
                online = first and m.uuid not in joined
                state = MemberState.ONLINE if online else MemberState.RECOVERING
                self.members[m.uuid] = MemberRecord(m.uuid, state, Role.SECONDARY, join_index=self._joins)
        self.view = view
        return [*decided, *self._membership_actions()]

    def _decide_left_ddl(self, staying: set[str]) -> list[Action]:
        """DDL whose origin (that incarnation) left before its outcome: everyone runs it. Its
        origin may have run it already; if it did not, it re-runs it when it recovers (its
        position lacks the seq)."""
        gone = sorted(seq for seq, origin in self.pending_ddl.items() if origin not in staying)
        for seq in gone:
            del self.pending_ddl[seq]
        return [DdlDecided(seq, True, 0, origin_left=True) for seq in gone]

    def _membership_actions(self) -> list[Action]:
        previous = self.primary
        self._elect()
        actions: list[Action] = [MembershipChanged(tuple(self.ordered_members()), self.primary, previous)]
        h = self.handover
        if h is not None:
            old, target = self.members.get(h.old), self.members.get(h.target)
            if (old is None or old.state is not MemberState.ONLINE or target is None
                    or target.state is not MemberState.ONLINE):
                # The old primary cannot finish its step (gone, or in ERROR): the switch
                # happens now; or the appointed one is gone: the action fails.
                actions += self._finish_handover()
        return actions

    def _elect(self) -> None:
        """Single-primary: keep the primary while it is ONLINE, else elect among ONLINE members
        by GR's rule (highest weight, then lowest uuid). Multi-primary: everyone is PRIMARY."""
        online = [m for m in self.members.values() if m.state is MemberState.ONLINE]
        if not self.single_primary:
            self.primary = None
            for m in self.members.values():
                self._set_role(m.uuid, Role.PRIMARY)
            return
        current = self.members.get(self.primary) if self.primary else None
        if current is None or current.state is not MemberState.ONLINE:
            best = min(online, key=lambda m: (-m.weight, m.uuid), default=None)
            self.primary = best.uuid if best else None
        for m in list(self.members.values()):
            self._set_role(m.uuid, Role.PRIMARY if m.uuid == self.primary else Role.SECONDARY)

    def _set_role(self, uuid: str, role: Role) -> None:
        m = self.members[uuid]
        if m.role is not role:
            self.members[uuid] = _replace(m, role=role)

    def ordered_members(self) -> list[MemberRecord]:
        return sorted(self.members.values(), key=lambda m: m.join_index)

    def set_mode(self, single_primary: bool, primary: str | None = None) -> list[Action]:
        """Switch single-/multi-primary, or appoint `primary` (called at a totally ordered
        point). In single-primary mode without a `primary` (or one not in the group) the usual
        election picks one."""
        previous = self.primary
        self.single_primary = single_primary
        if single_primary and primary in self.members:
            self.primary = primary
        elif single_primary:
            self.primary = None
        self._elect()
        return [MembershipChanged(tuple(self.ordered_members()), self.primary, previous)]

    # deliveries ----------------------------------------------------------------------------------

    def on_delivery(self, payload: bytes) -> list[Action]:
        """Process one delivered payload; returns what the member must do, in order."""
        try:
            msg = decode(payload)
        except ReplicationDecodeError as exc:
            raise EngineInvariantError(f"undecodable group message: {exc}") from exc
        return self.on_message(msg)

    def on_message(self, msg: Message) -> list[Action]:
        match msg:
            case TxnMessage():
                return self._on_txn(msg)
            case DdlMessage():
                seq = self.certifier.ddl(msg.tables)
                self.pending_ddl[seq] = msg.origin
                return [ExecuteDdl(seq, msg.origin, msg.txn_id, msg.schema, msg.sql, msg.origin == self.me,
                                   msg.context)]
            case DdlOutcome():
                if self.pending_ddl.get(msg.seq) != msg.origin:
                    return []  # decided already (its origin left) — or not a DDL of that member
                del self.pending_ddl[msg.seq]
                return [DdlDecided(msg.seq, msg.errno == 0 or msg.logged, msg.errno)]
            case StableReport():
                view = [m.uuid for m in self.view.members] if self.view else []
                if msg.member in view:
                    self.certifier.report_stable(msg.member, msg.lowest_snapshot, view)
                return []
            case SyncPoint():
                return [SyncReached(msg.origin, msg.sync_id, self.certifier.last_seq)]
            case AppliedAck():
                return [AckReceived(msg.member, msg.seq)]
            case AdminOp():
                return self._on_admin(msg)
            case MemberStats():
                if msg.member in self.members:
                    self.member_stats[msg.member] = msg
                return []
            case Announce():
                record = self.members.get(msg.member)
                if record is None:
                    return []  # announced from a view it has already left
                try:
                    state = MemberState(msg.state)
                except ValueError:
                    raise EngineInvariantError(f"unknown member state {msg.state!r}") from None
                self.members[msg.member] = _replace(record, state=state, weight=msg.weight,
                                                    member_address=msg.member_address, version=msg.version)
                return self._membership_actions()
        raise EngineInvariantError(f"unhandled message {type(msg).__name__}")

    def _on_txn(self, msg: TxnMessage) -> list[Action]:
        if msg.snapshot > self.certifier.last_seq or (msg.seen and max(msg.seen) > self.certifier.last_seq):
            raise EngineInvariantError(
                f"transaction {msg.origin}:{msg.txn_id} has snapshot {msg.snapshot} after the last seq "
                f"{self.certifier.last_seq}: members disagree on the order"
            )
        try:
            outcome = self.certifier.certify(msg.write_set, msg.snapshot, frozenset(msg.seen), msg.tables)
        except CertifierFull:
            return [CertifierRefused(msg.origin, msg.txn_id)]
        self.stats_checked += 1
        mine = msg.origin == self.me
        self.stats_local_proposed += mine
        if outcome.positive:
            assert outcome.seq is not None
            self.last_conflict_free = outcome.seq
        else:
            self.stats_conflicts += 1
            self.stats_local_rollback += mine
        if msg.origin == self.me:
            return [LocalOutcome(msg.txn_id, outcome.seq, outcome.conflict_seq, msg.changes if outcome.positive else b"")]
        if outcome.positive:
            assert outcome.seq is not None
            return [ApplyRemote(outcome.seq, msg.origin, msg.changes, msg.write_set, msg.ack)]
        return []

    # group actions ----------------------------------------------------------------------------

    def _on_admin(self, op: AdminOp) -> list[Action]:
        """Apply a group action where it is ordered: every member checks it against the same
        state, so all apply it or all refuse it (GR's checks and messages)."""
        if op.action is AdminAction.HANDOVER_DONE:
            h = self.handover
            if h is None or op.origin != h.old or op.target != h.target:
                return []  # finished already (the old primary left meanwhile)
            return self._finish_handover()
        if self.handover is not None:
            return [AdminOutcome(op.origin, op.op_id, False, ACTION_RUNNING)]
        target = self.members.get(op.target) if op.target else None
        if op.target and target is None:
            return [AdminOutcome(op.origin, op.op_id, False, NOT_A_MEMBER)]
        if target is not None and target.state is not MemberState.ONLINE:
            return [AdminOutcome(op.origin, op.op_id, False, MEMBER_NOT_ONLINE)]
        match op.action:
            case AdminAction.SET_PRIMARY:
                if not self.single_primary:
                    return [AdminOutcome(op.origin, op.op_id, False, IN_MULTI_PRIMARY)]
                if op.target == self.primary:
                    return [AdminOutcome(op.origin, op.op_id, True, ALREADY_PRIMARY)]
                current = self.members.get(self.primary) if self.primary else None
                if current is not None and current.state is MemberState.ONLINE:
                    # Two steps, as GR: the old primary ends what runs there first.
                    self.handover = Handover(op.origin, op.op_id, op.target, current.uuid, op.timeout_s)
                    return [HandoverStarted(current.uuid, op.target, op.timeout_s)]
                actions = self.set_mode(True, op.target)
                return [*actions, AdminOutcome(op.origin, op.op_id, True, SWITCHED_PRIMARY.format(op.target))]
            case AdminAction.SINGLE_PRIMARY:
                if self.single_primary:
                    message = ALREADY_SINGLE_WITH_UUID if op.target else ALREADY_SINGLE
                    return [AdminOutcome(op.origin, op.op_id, True, message)]
                actions = self.set_mode(True, op.target or None)
                return [*actions, AdminOutcome(op.origin, op.op_id, True, SWITCHED_SINGLE)]
            case AdminAction.MULTI_PRIMARY:
                if not self.single_primary:
                    return [AdminOutcome(op.origin, op.op_id, True, ALREADY_MULTI)]
                actions = self.set_mode(False)
                return [*actions, AdminOutcome(op.origin, op.op_id, True, SWITCHED_MULTI)]
        raise EngineInvariantError(f"unhandled group action {op.action}")

    def _finish_handover(self) -> list[Action]:
        """The second step of set_as_primary: the appointed member becomes the primary if it is
        still ONLINE; the asking session gets the outcome."""
        h = self.handover
        assert h is not None
        self.handover = None
        target = self.members.get(h.target)
        if target is None or target.state is not MemberState.ONLINE or not self.single_primary:
            return [AdminOutcome(h.origin, h.op_id, False, TARGET_LEFT)]
        actions = self.set_mode(True, h.target)
        return [*actions, AdminOutcome(h.origin, h.op_id, True, SWITCHED_PRIMARY.format(h.target))]

    # state transfer (distributed recovery) -------------------------------------------------------

    def export_state(self) -> bytes:
        """Everything another member needs to continue from this point of the total order."""
        c = self.certifier
        header = {
            "single_primary": self.single_primary, "primary": self.primary, "joins": self._joins,
            "last_seq": c.last_seq, "stable": c.stable, "reports": dict(c._reports),
            "members": [[m.uuid, m.state.value, m.role.value, m.weight, m.member_address, m.version, m.join_index]
                        for m in self.members.values()],
            "last_ddl": [[k, v] for k, v in c.ddl_state().items()],
            "pending_ddl": [[seq, origin] for seq, origin in self.pending_ddl.items()],
            "handover": None if self.handover is None else [
                self.handover.origin, self.handover.op_id, self.handover.target, self.handover.old,
                self.handover.timeout_s],
        }
        head = json.dumps(header).encode()
        writers = c._last_writer
        body = struct.pack(f"<{2 * len(writers)}Q", *(x for kv in writers.items() for x in kv))
        return struct.pack("<II", STATE_VERSION, len(head)) + head + body

    def import_state(self, data: bytes, view: View) -> None:
        """Continue from a donor's export taken at `view` (raises EngineInvariantError)."""
        try:
            version, n = struct.unpack_from("<II", data)
            if version != STATE_VERSION:
                raise ValueError(f"state version {version}")
            header = json.loads(data[8 : 8 + n])
            body = data[8 + n :]
            pairs = struct.unpack(f"<{len(body) // 8}Q", body)
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise EngineInvariantError(f"invalid recovery state: {exc}") from exc
        last_writer = {KeyHash(pairs[i]): Seq(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        self.certifier = Certifier.from_state(
            Seq(header["last_seq"]), Seq(header["stable"]), last_writer, keys_max=self.certifier.keys_max,
            last_ddl={KeyHash(k): Seq(v) for k, v in header.get("last_ddl", [])})
        self.pending_ddl = {Seq(seq): origin for seq, origin in header.get("pending_ddl", [])}
        h = header.get("handover")
        self.handover = None if h is None else Handover(h[0], int(h[1]), h[2], h[3], h[4])
        self.certifier._reports = {k: Seq(v) for k, v in header["reports"].items()}
        self.single_primary = header["single_primary"]
        self.primary = header["primary"]
        self._joins = header["joins"]
        self.members = {
            u: MemberRecord(u, MemberState(st), Role(role), w, addr, ver, idx)
            for u, st, role, w, addr, ver, idx in header["members"]
        }
        self.view = view


STATE_VERSION = 1


def _replace(record: MemberRecord, **changes: object) -> MemberRecord:
    return replace(record, **changes)  # type: ignore[arg-type]
