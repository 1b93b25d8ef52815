"""Checkers of the GCS guarantees (DESIGN §3), outside the code under test.

They only look at what crosses the core's boundary: broadcasts accepted (Ready.broadcast_seqs),
deliveries, views, errors, what each acceptor reports it accepted (Ready.accepted) and the
Decide and Learn messages on the wire. Every incarnation is tracked separately.

- consensus: no two Decide messages for the same slot (and ballot epoch) carry different
  values -- caught as soon as a wrong decision is announced, before anyone delivers it; a
  Learn (a decision without its value) stands for the value accepted in its slot at its
  ballot;
- integrity: a message is delivered at most once per incarnation, and only if its origin
  broadcast exactly that payload under that origin_seq;
- agreement / total order: a position holds the same message everywhere, a message has one
  position, every log is strictly increasing in position;
- safe delivery: a delivered message was accepted, in one ballot, by a majority of the
  configuration of its slot;
- view synchrony: a view id means the same members and start slot everywhere, and between
  two views (and from its last view to where it stopped) an incarnation delivered exactly
  the messages of those slots (no holes: every log is a prefix of one sequence);
- one group: a group has one lineage of views, from one bootstrap. Two lineages may follow
  each other (every member stopped, then the group was bootstrapped again), but two with
  live members at once are two groups under one name: a violation;
- liveness (end of run): every broadcast of a live incarnation was delivered to it, the
  dead were expelled, and all live members share one view.

Branches: force_members is the DBA's override of a lost majority; decisions only the lost
majority knew are gone (DESIGN §3). Its configuration has a higher epoch and forks the history
at its first gap (a slot it declares empty; its start if none): from there the dead may have
delivered other messages at the same positions, or the same message elsewhere. So a position
is checked per (lineage, branch epoch: the epoch of the view it was delivered in, or of the
force the incarnation applied if the slot is past that force's fork), and at the end an
incarnation owes only the messages that some incarnation of its branch (one at least as
recent in epoch) delivered too; the survivors' branch stays checked in full.

Lineages: an incarnation that bootstraps starts one (named by its Bootstrap members); one that
is welcomed belongs to its welcomer's. Slots, positions and view ids restart with each
bootstrap, so everything above is checked per lineage; what an acceptor accepted belongs to
the lineage of the proposer whose Accept it answered (a joining acceptor has none yet).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from replication.gcs.interface import Delivery, GcsErrorCode, MemberId, Position, View, ViewId
from replication.gcs.xcom.core import Bootstrap, Event, Phase, Ready, Received
from replication.gcs.xcom.messages import Accept, Batch, Decide, Learn, Value, Welcome
from replication.gcs.xcom.quorum import majority
from replication.gcs.xcom.types import ballot_epoch

from .world import Observer, SimNode

__all__ = ["Violation", "Checker", "IncarnationRecord", "Lineage"]

Lineage = tuple[MemberId, ...] | None  # the Bootstrap members that started it; None: unknown


class Violation(Exception):
    """A guarantee was broken. `kind` names the checker."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail

    def __reduce__(self) -> tuple[type[Violation], tuple[str, str]]:
        return (Violation, (self.kind, self.detail))  # results cross processes (--jobs)


@dataclass(slots=True)
class IncarnationRecord:
    member: MemberId
    views: list[View] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    delivered: set[tuple[MemberId, int]] = field(default_factory=set)
    broadcasts: dict[int, bytes] = field(default_factory=dict)
    final_next_slot: int | None = None  # set when the incarnation stops
    lineage: Lineage = None
    forks: list[tuple[int, int]] = field(default_factory=list)  # (fork slot, epoch) of forces applied

    def branch(self, slot: int, view_epoch: int) -> int:
        """The branch epoch of a delivery at `slot` in a view of epoch `view_epoch`."""
        epoch = view_epoch
        for fork, forced in self.forks:
            if slot >= fork and forced > epoch:
                epoch = forced
        return epoch

    def final_epoch(self) -> int:
        epoch = self.views[-1].view_id.epoch if self.views else 0
        return max([epoch] + [forced for _fork, forced in self.forks])


class Checker(Observer):
    def __init__(self) -> None:
        self.records: dict[MemberId, IncarnationRecord] = {}
        self.broadcasts: dict[tuple[MemberId, int], bytes] = {}
        # (lineage, epoch of the delivering view, position) -> message; and back
        self.global_order: dict[tuple[Lineage, int, Position], tuple[MemberId, int]] = {}
        self.message_position: dict[tuple[Lineage, int, MemberId, int], Position] = {}
        self.decided: dict[tuple[Lineage, int, int], Value] = {}
        # (lineage, slot) -> ballot -> (value, acceptors)
        self.accepted_by: dict[tuple[Lineage, int], dict[int, tuple[Value, set[MemberId]]]] = {}
        self.safe_slots: set[tuple[Lineage, int, MemberId, int]] = set()
        self.views: dict[tuple[Lineage, ViewId], tuple[tuple[MemberId, ...], int]] = {}
        self.bootstrapping: dict[MemberId, tuple[MemberId, ...]] = {}  # asked, no view yet
        self.in_group: dict[Lineage, set[MemberId]] = {}  # live incarnations in phase MEMBER
        self.deliveries = 0

    def _record(self, member: MemberId) -> IncarnationRecord:
        rec = self.records.get(member)
        if rec is None:
            rec = self.records[member] = IncarnationRecord(member)
        return rec

    # ------------------------------------------------------------------ online checks

    def on_broadcast(self, member: MemberId, seq: int, payload: bytes) -> None:
        key = (member, seq)
        if key in self.broadcasts:
            raise Violation("integrity", f"origin_seq {seq} assigned twice by {member}")
        self.broadcasts[key] = payload
        self._record(member).broadcasts[seq] = payload

    def on_stop(self, node: SimNode) -> None:
        if node.core is not None and node.member is not None:
            rec = self._record(node.member)
            rec.final_next_slot = node.core.next_slot
            self.in_group.get(rec.lineage, set()).discard(node.member)

    def _lineage_step(self, rec: IncarnationRecord, ready: Ready, event: Event | None) -> None:
        """Learn `rec`'s lineage from the event that started it, and watch for two groups."""
        member = rec.member
        match event:
            case Bootstrap(members=members):
                self.bootstrapping[member] = members
            case Received(sender=sender, msg=Welcome()) if rec.lineage is None and ready.phase is Phase.CATCHING_UP:
                rec.lineage = self._record(sender).lineage
            case _:
                pass
        if rec.lineage is None and ready.views and member in self.bootstrapping:
            rec.lineage = self.bootstrapping.pop(member)
        if rec.lineage is None:
            return
        live = self.in_group.setdefault(rec.lineage, set())
        if ready.phase is not Phase.MEMBER:
            live.discard(member)
            return
        if member in live:
            return
        live.add(member)
        for other, members in self.in_group.items():
            if other != rec.lineage and members:
                raise Violation(
                    "one-group",
                    f"two groups live at once: {member} in the group bootstrapped by {_lineage(rec.lineage)}, "
                    f"{sorted(str(m) for m in members)} in the one bootstrapped by {_lineage(other)}",
                )

    def on_ready(self, node: SimNode, ready: Ready, event: Event | None = None) -> None:
        member = node.member
        assert member is not None
        for err in ready.errors:
            if err.code is GcsErrorCode.INTERNAL:
                raise Violation("invariant", f"{member}: {err.detail}")
        rec = self._record(member)
        if event is not None or rec.lineage is not None:
            self._lineage_step(rec, ready, event)
        core = node.core
        forced = core.forced if core is not None else None
        if forced is not None:
            epoch = forced.config.view_id.epoch
            if not rec.forks or rec.forks[-1][1] < epoch:
                rec.forks.append((min([g.first for g in forced.gaps] + [forced.config.start]), epoch))
        lineage = rec.lineage
        if ready.accepted:
            accepted_by = self.accepted_by
            # An Accept answered belongs to its proposer's lineage; our own proposals to ours.
            theirs: Accept | None = None
            their_lineage: Lineage = None
            if type(event) is Received and type(event.msg) is Accept:
                theirs = event.msg
                their_lineage = self._record(event.sender).lineage
            for av in ready.accepted:
                key = (their_lineage if theirs is not None and av.slot == theirs.slot and av.value is theirs.value
                       else lineage, av.slot)
                ballots = accepted_by.get(key)
                if ballots is None:
                    ballots = accepted_by[key] = {}
                entry = ballots.get(av.ballot)
                if entry is None:
                    ballots[av.ballot] = (av.value, {member})
                else:
                    if entry[0] is not av.value and entry[0] != av.value:
                        raise Violation("consensus", f"two values accepted in slot {av.slot} ballot {av.ballot:#x}")
                    entry[1].add(member)
        learned: set[tuple[int, int]] = set()
        for _to, msg in ready.sends:
            kind = type(msg)
            if kind is Decide:
                value = msg.value
            elif kind is Learn:
                if (msg.slot, msg.ballot) in learned:
                    continue
                learned.add((msg.slot, msg.ballot))
                entry = self.accepted_by.get((lineage, msg.slot), {}).get(msg.ballot)
                if entry is None:
                    raise Violation("consensus", f"slot {msg.slot} decided at ballot {msg.ballot:#x} "
                                                 f"that no acceptor accepted ({member})")
                value = entry[0]
            else:
                continue
            key = (lineage, ballot_epoch(msg.ballot), msg.slot)
            known = self.decided.get(key)
            if known is None:
                self.decided[key] = value
            elif known is not value and known != value:
                raise Violation(
                    "consensus", f"slot {msg.slot} decided as {_show(known)} and as {_show(value)} ({member})"
                )
        if ready.views or ready.deliveries:
            self._on_views_and_deliveries(member, ready)

    def _on_views_and_deliveries(self, member: MemberId, ready: Ready) -> None:
        rec = self._record(member)
        views = ready.views
        vi = 0
        for d in ready.deliveries:
            while vi < len(views) and views[vi].start_slot <= d.position.slot:
                self._on_view(rec, views[vi])
                vi += 1
            self._on_delivery(rec, d)
        while vi < len(views):
            self._on_view(rec, views[vi])
            vi += 1

    def _on_view(self, rec: IncarnationRecord, view: View) -> None:
        key = (rec.lineage, view.view_id)
        known = self.views.get(key)
        shape = (view.members, view.start_slot)
        if known is None:
            self.views[key] = shape
        elif known != shape:
            raise Violation("view-synchrony", f"view {view.view_id} differs: {known} vs {shape} at {rec.member}")
        if rec.views and view.start_slot <= rec.views[-1].start_slot:
            raise Violation("view-synchrony", f"{rec.member} installed views out of slot order")
        if rec.positions and rec.positions[-1].slot >= view.start_slot:
            raise Violation("view-synchrony", f"{rec.member} installed {view.view_id} after delivering past it")
        rec.views.append(view)

    def _on_delivery(self, rec: IncarnationRecord, d: Delivery) -> None:
        self.deliveries += 1
        msg_id = (d.origin, d.origin_seq)
        pos = d.position
        if msg_id in rec.delivered:
            raise Violation("integrity", f"{rec.member} delivered {_id(msg_id)} twice")
        rec.delivered.add(msg_id)
        sent = self.broadcasts.get(msg_id)
        if sent is None:
            raise Violation("integrity", f"{rec.member} delivered {_id(msg_id)} that nobody broadcast")
        if sent != d.payload:
            raise Violation("integrity", f"{rec.member} delivered {_id(msg_id)} with another payload")
        if rec.positions and pos <= rec.positions[-1]:
            raise Violation("total-order", f"{rec.member} delivered {pos} after {rec.positions[-1]}")
        if not rec.views or d.view_id != rec.views[-1].view_id:
            raise Violation("view-synchrony", f"{rec.member} delivered {pos} outside its current view")
        rec.positions.append(pos)
        epoch = rec.branch(pos.slot, d.view_id.epoch)
        at = self.global_order.get((rec.lineage, epoch, pos))
        if at is None:
            self.global_order[(rec.lineage, epoch, pos)] = msg_id
        elif at != msg_id:
            raise Violation("agreement", f"position {pos}: {_id(at)} and {_id(msg_id)} ({rec.member})")
        where = self.message_position.get((rec.lineage, epoch, *msg_id))
        if where is None:
            self.message_position[(rec.lineage, epoch, *msg_id)] = pos
        elif where != pos:
            raise Violation("agreement", f"{_id(msg_id)} delivered at {where} and at {pos}")
        self._check_safe(rec, d)

    def _check_safe(self, rec: IncarnationRecord, d: Delivery) -> None:
        slot = d.position.slot
        key = (rec.lineage, slot, d.origin, d.origin_seq)
        if key in self.safe_slots:
            return
        view = rec.views[-1]
        quorum = majority(len(view.members))
        members = view.members
        for value, acceptors in self.accepted_by.get((rec.lineage, slot), {}).values():
            if _contains(value, d.origin, d.origin_seq) and sum(1 for m in members if m in acceptors) >= quorum:
                self.safe_slots.add(key)
                return
        raise Violation(
            "safe-delivery", f"{rec.member} delivered {_id((d.origin, d.origin_seq))} at {d.position} "
            "without a majority of the view having accepted it"
        )

    # ------------------------------------------------------------------ end of run

    def finish(self, live: list[SimNode]) -> None:
        """View synchrony without holes, then liveness. Call once, after the run."""
        for node in live:
            if node.core is not None and node.member is not None:
                self._record(node.member).final_next_slot = node.core.next_slot
        # (lineage, epoch, position) -> the highest final epoch among those who delivered it
        reach: dict[tuple[Lineage, int, Position], int] = {}
        for rec in self.records.values():
            if not rec.views:
                continue
            final_epoch = rec.final_epoch()
            for pos in rec.positions:
                key = (rec.lineage, rec.branch(pos.slot, _epoch_at(rec.views, pos.slot)), pos)
                if reach.get(key, -1) < final_epoch:
                    reach[key] = final_epoch
        by_lineage: dict[Lineage, list[tuple[Position, int, int]]] = {}
        for (lineage, epoch, pos), final_epoch in reach.items():
            by_lineage.setdefault(lineage, []).append((pos, epoch, final_epoch))
        for entries in by_lineage.values():
            entries.sort()
        for rec in self.records.values():
            if not rec.views or rec.final_next_slot is None:
                continue
            entries = by_lineage.get(rec.lineage, [])
            first = rec.views[0].start_slot
            end = rec.final_next_slot
            final_epoch = rec.final_epoch()
            lo = bisect.bisect_left(entries, (Position(first, -1),))  # type: ignore[arg-type]
            hi = bisect.bisect_left(entries, (Position(end, -1),))  # type: ignore[arg-type]
            expected = [
                pos
                for pos, epoch, reached in entries[lo:hi]
                if reached >= final_epoch and epoch == rec.branch(pos.slot, _epoch_at(rec.views, pos.slot))
            ]
            if rec.positions != expected:
                missing = [p for p in expected if p not in set(rec.positions)]
                raise Violation(
                    "view-synchrony",
                    f"{rec.member} delivered {len(rec.positions)} messages in slots [{first}, {end}), "
                    f"the group {len(expected)}; first missing: {missing[:3]}",
                )

    def check_liveness(self, live: list[SimNode]) -> str | None:
        """None when converged, else what is still missing (used as a stop predicate too)."""
        if not live:
            return "no live node"
        view_ids = set()
        members = set()
        for node in live:
            core = node.core
            if core is None or core.current_view() is None:
                return f"{node.member} is not a member ({core.phase.value if core else 'down'})"
            views = core.known_views()
            if len(views) != 1:
                return f"{node.member} has a pending configuration change"
            view_ids.add(views[0].view_id)
            members.add(node.member)
            if core.queued_broadcasts:
                return f"{node.member} has {core.queued_broadcasts} undelivered broadcasts"
        if len(view_ids) != 1:
            return f"live members are in different views: {sorted(str(v) for v in view_ids)}"
        view = live[0].core.current_view()  # type: ignore[union-attr]
        assert view is not None
        if set(view.members) != members:
            extra = sorted(str(m) for m in view.members if m not in members)
            absent = sorted(str(m) for m in members if m not in view.members)
            return f"view {view.view_id} has dead {extra} / lacks live {absent}"
        slots = {node.core.next_slot for node in live}  # type: ignore[union-attr]
        if len(slots) != 1:
            return f"live members executed up to different slots {sorted(slots)}"
        return None

    def check_delivered_own(self, live: list[SimNode]) -> None:
        """Liveness, from the checker's own books: each live incarnation delivered all it sent."""
        for node in live:
            assert node.member is not None
            rec = self._record(node.member)
            for seq in rec.broadcasts:
                if (node.member, seq) not in rec.delivered:
                    raise Violation("liveness", f"{node.member} never delivered its broadcast #{seq}")


def _contains(value: Value, origin: MemberId, seq: int) -> bool:
    if type(value) is not Batch:
        return False
    for run in value.runs:
        if run.origin == origin and run.first_seq <= seq < run.first_seq + len(run.payloads):
            return True
    return False


def _epoch_at(views: list[View], slot: int) -> int:
    """The epoch of the view (of an incarnation's list, in slot order) in effect at `slot`."""
    epoch = views[0].view_id.epoch
    for view in views:
        if view.start_slot > slot:
            break
        epoch = view.view_id.epoch
    return epoch


def _lineage(lineage: Lineage) -> str:
    return "?" if lineage is None else "[" + " ".join(str(m) for m in lineage) + "]"


def _id(msg_id: tuple[MemberId, int]) -> str:
    return f"{msg_id[0]}/{msg_id[1]}"


def _show(value: Value) -> str:
    if type(value) is Batch:
        return "batch[" + ",".join(f"{r.origin.uuid}#{r.origin.incarnation}:{r.first_seq}+{len(r.payloads)}" for r in value.runs) + "]"
    return type(value).__name__
