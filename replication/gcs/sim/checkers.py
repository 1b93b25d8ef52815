"""Checkers of the GCS guarantees (DESIGN §3), outside the code under test.

They only look at what crosses the core's boundary: broadcasts accepted (Ready.broadcast_seqs),
deliveries, views, errors, what each acceptor reports it accepted (Ready.accepted) and the
Decide messages on the wire. Every incarnation is tracked separately.

- consensus: no two Decide messages for the same slot (and ballot epoch) carry different
  values -- caught as soon as a wrong decision is announced, before anyone delivers it;
- integrity: a message is delivered at most once per incarnation, and only if its origin
  broadcast exactly that payload under that origin_seq;
- agreement / total order: a position holds the same message everywhere, a message has one
  position, every log is strictly increasing in position;
- safe delivery: a delivered message was accepted, in one ballot, by a majority of the
  configuration of its slot;
- view synchrony: a view id means the same members and start slot everywhere, and between
  two views (and from its last view to where it stopped) an incarnation delivered exactly
  the messages of those slots (no holes: every log is a prefix of one sequence);
- liveness (end of run): every broadcast of a live incarnation was delivered to it, the
  dead were expelled, and all live members share one view.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from replication.gcs.interface import Delivery, GcsErrorCode, MemberId, Position, View, ViewId
from replication.gcs.xcom.core import Ready
from replication.gcs.xcom.messages import Batch, Decide, Value
from replication.gcs.xcom.quorum import majority
from replication.gcs.xcom.types import ballot_epoch

from .world import Observer, SimNode

__all__ = ["Violation", "Checker", "IncarnationRecord"]


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


class Checker(Observer):
    def __init__(self) -> None:
        self.records: dict[MemberId, IncarnationRecord] = {}
        self.broadcasts: dict[tuple[MemberId, int], bytes] = {}
        self.global_order: dict[Position, tuple[MemberId, int]] = {}
        self.message_position: dict[tuple[MemberId, int], Position] = {}
        self.decided: dict[tuple[int, int], Value] = {}
        # slot -> ballot -> (value, acceptors)
        self.accepted_by: dict[int, dict[int, tuple[Value, set[MemberId]]]] = {}
        self.safe_slots: set[tuple[int, MemberId, int]] = set()
        self.views: dict[ViewId, tuple[tuple[MemberId, ...], int]] = {}
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
            self._record(node.member).final_next_slot = node.core.next_slot

    def on_ready(self, node: SimNode, ready: Ready) -> None:
        member = node.member
        assert member is not None
        for err in ready.errors:
            if err.code is GcsErrorCode.INTERNAL:
                raise Violation("invariant", f"{member}: {err.detail}")
        if ready.accepted:
            accepted_by = self.accepted_by
            for av in ready.accepted:
                ballots = accepted_by.get(av.slot)
                if ballots is None:
                    ballots = accepted_by[av.slot] = {}
                entry = ballots.get(av.ballot)
                if entry is None:
                    ballots[av.ballot] = (av.value, {member})
                else:
                    if entry[0] is not av.value and entry[0] != av.value:
                        raise Violation("consensus", f"two values accepted in slot {av.slot} ballot {av.ballot:#x}")
                    entry[1].add(member)
        for _to, msg in ready.sends:
            if type(msg) is Decide:
                key = (ballot_epoch(msg.ballot), msg.slot)
                known = self.decided.get(key)
                if known is None:
                    self.decided[key] = msg.value
                elif known is not msg.value and known != msg.value:
                    raise Violation(
                        "consensus", f"slot {msg.slot} decided as {_show(known)} and as {_show(msg.value)} ({member})"
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
        known = self.views.get(view.view_id)
        shape = (view.members, view.start_slot)
        if known is None:
            self.views[view.view_id] = shape
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
        at = self.global_order.get(pos)
        if at is None:
            self.global_order[pos] = msg_id
        elif at != msg_id:
            raise Violation("agreement", f"position {pos}: {_id(at)} and {_id(msg_id)} ({rec.member})")
        where = self.message_position.get(msg_id)
        if where is None:
            self.message_position[msg_id] = pos
        elif where != pos:
            raise Violation("agreement", f"{_id(msg_id)} delivered at {where} and at {pos}")
        self._check_safe(rec, d)

    def _check_safe(self, rec: IncarnationRecord, d: Delivery) -> None:
        slot = d.position.slot
        key = (slot, d.origin, d.origin_seq)
        if key in self.safe_slots:
            return
        view = rec.views[-1]
        quorum = majority(len(view.members))
        members = view.members
        for value, acceptors in self.accepted_by.get(slot, {}).values():
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
        ordered = sorted(self.global_order)
        for rec in self.records.values():
            if not rec.views or rec.final_next_slot is None:
                continue
            first = rec.views[0].start_slot
            end = rec.final_next_slot
            lo = bisect.bisect_left(ordered, Position(first, -1))  # type: ignore[arg-type]
            hi = bisect.bisect_left(ordered, Position(end, -1))  # type: ignore[arg-type]
            expected = ordered[lo:hi]
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


def _id(msg_id: tuple[MemberId, int]) -> str:
    return f"{msg_id[0]}/{msg_id[1]}"


def _show(value: Value) -> str:
    if type(value) is Batch:
        return "batch[" + ",".join(f"{r.origin.uuid}#{r.origin.incarnation}:{r.first_seq}+{len(r.payloads)}" for r in value.runs) + "]"
    return type(value).__name__
