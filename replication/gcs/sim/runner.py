"""One simulated run per seed: a safety phase with faults, then a liveness phase.

`run_seed(seed, options)` derives everything from `random.Random(seed)`: the group size (unless
fixed), the core's timeouts and windows, the network's fault rates, the workload and the fault
schedule. The checkers (checkers.py) watch the whole run; a broken guarantee stops the run and
is returned as the seed's violation.

Safety phase (`SAFETY_MS` of simulated time): members broadcast at random times while the
network drops, duplicates, delays and reorders messages, partitions split and heal, members
crash and restart as new incarnations (only while a majority of every configuration stays
alive, so the liveness phase can recover without force_members), leave, and see their clocks
jump. A nemesis also targets the most delicate moment of the protocol: right after a member
announces a decision, it may be cut off alone for a few seconds, its Decide messages lost, so
that the others must take its slots over without knowing what it decided (the schedule of
Bug #28966455). Members that find themselves out of the group rejoin as a new incarnation,
as GR's auto-rejoin does.

Scenarios beyond single faults, each drawn by some seeds (and each a fault name, so that
`--faults` can isolate it):

- `oneway`: one-way links (A's messages do not reach B, B's still reach A), for a while;
- `stale`: the crash scheduler's caution is off for the seed: a member may crash while an
  expel is pending or while someone suspects a member of the configuration, so an expel
  decided on stale information can leave a configuration without a live majority. No
  binding can reconfigure such a configuration by itself (deciding needs a majority): the
  run plays the DBA, who runs force_members on the most advanced survivor (see `_dba`);
- `majority-loss`: a majority of the view crashes at once; the DBA forces the survivors'
  configuration, which must make progress; the dead rejoin later as new incarnations;
- `restart-all`: every member crashes; one new incarnation bootstraps the group again (after
  probing the others: nobody answers), the others join it -- a new lineage of views;
- `rebootstrap`: a restarted member is told to bootstrap while the group runs: it must be
  refused (GROUP_EXISTS, the checkers fail on two live groups) and then join as usual.

Liveness phase: the network heals (little loss, no partitions), some crashed members restart
and the others stay dead, every live member broadcasts again; within `LIVENESS_MS_MAX` the
group must converge: the dead expelled, all live members in one view, every broadcast of a
live incarnation delivered, everyone executed up to the same slot.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from replication.gcs.interface import GcsErrorCode, MemberId, ViewId
from replication.gcs.xcom.core import CoreConfig, Event, ForceMembers, Phase, Ready
from replication.gcs.xcom.messages import (
    Accept,
    Decide,
    Learn,
    ForwardReconfig,
    JoinRequest,
    Promise,
    Reconfig,
    ReconfigOp,
)
from replication.gcs.xcom.quorum import majority

from .checkers import Checker, Violation
from .world import NetConfig, SimNode, World

__all__ = ["FAULTS", "SimOptions", "SeedResult", "run_seed", "replay_command", "SAFETY_MS", "LIVENESS_MS_MAX"]

FAULTS = (
    "loss",
    "dup",
    "reorder",
    "partition",
    "oneway",
    "isolate",
    "crash",
    "stale",
    "leave",
    "clock",
    "majority-loss",
    "restart-all",
    "rebootstrap",
)
SAFETY_MS = 12_000
LIVENESS_MS_MAX = 40_000


@dataclass(frozen=True, slots=True)
class SimOptions:
    members: int | None = None  # None: 3..5 chosen by the seed
    faults: tuple[str, ...] = FAULTS
    mutant: bool = False  # takeovers ignore accepted values (must be caught)
    codec: bool = True  # pass a share of messages through encode/decode

    def __post_init__(self) -> None:
        unknown = [f for f in self.faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
        if self.members is not None and not 1 <= self.members <= 9:
            raise ValueError("members must be 1..9")


@dataclass(slots=True)
class SeedResult:
    seed: int
    violation: Violation | None = None
    members: int = 0
    sim_ms: int = 0
    deliveries: int = 0
    messages: int = 0
    # What the scenarios did (e.g. "group-exists": bootstraps refused), so tests can check
    # that a scenario is reached, not just that nothing broke.
    events: dict[str, int] = field(default_factory=dict)


def replay_command(seed: int, options: SimOptions) -> str:
    parts = ["python -m replication.gcs.sim", "--seeds 1", f"--start-seed {seed}"]
    if options.members is not None:
        parts.append(f"--members {options.members}")
    if tuple(options.faults) != FAULTS:
        parts.append(f"--faults {','.join(options.faults) or 'none'}")
    if options.mutant:
        parts.append("--mutant")
    if not options.codec:
        parts.append("--no-codec")
    return " ".join(parts)


class _Run(Checker):
    """The checker plus the run's reactions to what nodes report (auto-rejoin)."""

    def __init__(self, rng: random.Random, trace: Callable[[str], None] | None) -> None:
        super().__init__()
        self.rng = rng
        self.trace = trace
        self.world: World | None = None
        self.isolate_chance = 0.0  # nemesis: isolate a member right after it decides
        self.partition_id = 0
        self.cautious = True  # crash only when no expel can leave a configuration without a live majority
        self.quiet_until_ms = 0  # no new partition or one-way cut before this (a probe runs)
        self.dba_active = False  # the DBA watches for a group without a live majority
        self.group_gone_checks = 0  # consecutive DBA checks that found no member at all
        self.orphans: set[tuple[int, int]] = set()  # (node, incarnation) stuck outside the group at the last check
        self.short_views: set[ViewId] = set()  # views installed without a live majority (bounded by views)
        self.events: dict[str, int] = {}

    def count(self, event: str) -> None:
        self.events[event] = self.events.get(event, 0) + 1

    def on_ready(self, node: SimNode, ready: Ready, event: Event | None = None) -> None:
        super().on_ready(node, ready, event)
        if (
            self.isolate_chance
            and ready.sends
            and self.world is not None
            and self.world.groups is None
            and self.world.now_ms >= self.quiet_until_ms
        ):
            if any(type(msg) in (Decide, Learn) for _to, msg in ready.sends) and self.rng.random() < self.isolate_chance:
                self._isolate(node)
        if self.trace is not None:
            world = self.world
            now = world.now_ms if world else 0
            for v in ready.views:
                self.trace(f"{now:>7} {node.member} view {v.view_id} @{v.start_slot} {[str(m) for m in v.members]}")
            for e in ready.errors:
                self.trace(f"{now:>7} {node.member} {e.code.value}: {e.detail}")
            for r in ready.reachability:
                self.trace(f"{now:>7} {node.member} sees {r.member} {r.state.value}")
        for e in ready.errors:
            if e.code is GcsErrorCode.GROUP_EXISTS:
                self.count("group-exists")
            elif e.code is GcsErrorCode.JOIN_FAILED and self.world is not None:
                self._join_failed(node)
        if not self.cautious and ready.sends and self.world is not None:
            self._stale_nemesis(node, ready)
        if ready.views and self.world is not None:
            self._watch_views(ready)
        if ready.phase is Phase.OFFLINE and not node.restart_pending and self.world is not None:
            # Out of the group (expelled, refused, behind): rejoin as a new incarnation.
            node.restart_pending = True
            world = self.world
            world.at(world.now_ms + self.rng.randint(100, 1500), _restart, world, node)

    def _watch_views(self, ready: Ready) -> None:
        """A view may be installed without a live majority, cautious crash scheduler or not:
        an expel decided on information that went stale (a member counted alive died
        meanwhile: no failure detector can tell in time), or the join of an incarnation that
        gave up waiting for its welcome before the join was decided. No binding can decide
        without a majority: the DBA's case (DESIGN §3). Counted, so tests see how often."""
        world = self.world
        assert world is not None
        running = _running(world, None)
        for view in ready.views:
            if not view.left and not view.joined:
                continue
            alive = sum(1 for m in view.members if (m.address, m.incarnation) in running)
            if alive < majority(len(view.members)) and view.view_id not in self.short_views:
                self.short_views.add(view.view_id)
                self.count("view-without-live-majority")
                self._enable_dba()

    def _enable_dba(self) -> None:
        world = self.world
        assert world is not None
        if not self.dba_active:
            self.dba_active = True
            world.at(world.now_ms + 1_000, _dba, world, self)

    def _join_failed(self, node: SimNode) -> None:
        """A joiner gave up while the group had already added it (its welcome was lost):
        the group counts a member that will never answer, and a small group may have lost
        its majority for good -- no binding can decide without one. That is when a DBA
        steps in, so from here on the DBA watches this run too."""
        world = self.world
        assert world is not None
        added = any(
            node.member in view.members
            for other in world.live_nodes()
            if other.core is not None
            for view in other.core.known_views()
        )
        if added:
            self.count("join-failed-member")
            self._enable_dba()

    def _stale_nemesis(self, node: SimNode, ready: Ready) -> None:
        """As an expel is proposed, crash a member it keeps: the proposer counted that member
        alive, and the configuration left may have no live majority (the DBA then forces)."""
        world = self.world
        assert world is not None
        for _to, msg in ready.sends:
            if type(msg) is Accept and isinstance(msg.value, Reconfig) and msg.value.op is ReconfigOp.EXPEL:
                break
        else:
            return
        if self.rng.random() >= 0.5 or node.core is None:
            return
        view = node.core.known_views()[-1]
        kept = {(m.address, m.incarnation) for m in view.members if m not in msg.value.members}
        victims = [n for n in world.live_nodes() if n is not node and (n.address, n.incarnation) in kept]
        if victims:
            world.at(world.now_ms + self.rng.randint(0, 50), self._stale_crash, self.rng.choice(victims))

    def _stale_crash(self, victim: SimNode) -> None:
        world = self.world
        assert world is not None
        others = [
            n
            for n in world.live_nodes()
            if n is not victim and n.core is not None and n.core.phase is Phase.MEMBER and not n.leaving
        ]
        if others and victim.alive:  # someone is left for the DBA to force
            self.count("stale-crash")
            world.crash(victim)

    def _isolate(self, node: SimNode) -> None:
        """Cut `node` off before its Decide messages leave (the world sends after this)."""
        world = self.world
        assert world is not None
        world.groups = [1 if n is node else 0 for n in world.nodes]
        self.partition_id += 1
        if world.trace:
            world.trace(f"{world.now_ms:>7} nemesis: isolate {node.member} as it decides")
        world.at(world.now_ms + self.rng.randint(1_000, 6_000), self.heal, self.partition_id)

    def heal(self, which: int) -> None:
        world = self.world
        if world is not None and self.partition_id == which and world.groups is not None:
            world.groups = None
            if world.trace:
                world.trace(f"{world.now_ms:>7} heal")


def _restart(world: World, node: SimNode) -> None:
    if node.core is not None and node.core.phase not in (Phase.OFFLINE, Phase.ERROR) and node.alive:
        node.restart_pending = False
        return
    if world.trace:
        world.trace(f"{world.now_ms:>7} restart {node.uuid} as incarnation {node.incarnation + 1}")
    world.join(node)


def _running(world: World, exclude: SimNode | None) -> set[tuple[str, int]]:
    """Incarnations that take part in majorities (not leaving, not offline)."""
    return {
        (n.address, n.incarnation)
        for n in world.nodes
        if n.alive
        and n.core is not None
        and n is not exclude
        and not n.leaving
        and n.core.phase not in (Phase.OFFLINE, Phase.ERROR)
    }


def _pending_reconfigs(world: World) -> list[Reconfig]:
    """Membership changes pending anywhere: queued, in flight, accepted, decided."""
    values: list[object] = []
    for n in world.live_nodes():
        assert n.core is not None
        values.extend(n.core.pending_reconfigs())
    for _sender, msg in world.in_flight():
        match msg:
            case Accept(value=v) | Decide(value=v):
                values.append(v)
            case Promise(accepted=accepted):
                values.extend(a.value for a in accepted)
            case ForwardReconfig(reconfig=rc):
                values.append(rc)
            case _:
                pass
    return [v for v in values if isinstance(v, Reconfig)]


def _removal_allowed(world: World, node: SimNode, cautious: bool = True) -> bool:
    """Would every configuration, known or pending, keep a live majority without `node`?

    A pending join may add a member (possibly `node`, or one already dead): configurations
    are checked with every pending joiner added. `cautious` also keeps what the group may
    still do on stale information from leaving it without a live majority: an expel or leave
    pending anywhere may shrink a configuration nobody knows yet, so no removal then; and
    members someone suspects may be expelled, so the rest must hold a live majority without
    them. Not cautious (the `stale` fault), only the configurations known now count.
    """
    pending = _pending_reconfigs(world)
    if cautious and any(rc.op is not ReconfigOp.JOIN for rc in pending):
        return False
    joiners = {m for rc in pending for m in rc.members}
    joiners.update(sender for sender, msg in world.in_flight() if type(msg) is JoinRequest)
    joiners.update(
        n.member
        for n in world.live_nodes()
        if n.member is not None and n.core is not None and n.core.phase in (Phase.JOINING, Phase.CATCHING_UP)
    )
    running = _running(world, node)
    at_risk = _at_risk(world)
    candidates: list[tuple[MemberId, ...]] = []
    # Joins are decided one at a time, in any order: every subset of the pending joiners may
    # be added to a configuration (all of them at once hid the intermediate configuration
    # with a dead member not yet replaced, sim seed 980984785).
    ordered = sorted(joiners)
    subsets = [[j for i, j in enumerate(ordered) if mask >> i & 1] for mask in range(1, 1 << len(ordered))]
    for other in world.live_nodes():
        assert other.core is not None
        for view in other.core.known_views():
            candidates.append(view.members)
            for added in subsets:
                grown = [m for m in view.members if all(j.uuid != m.uuid for j in added)]
                candidates.append(tuple(grown) + tuple(added))
    for members in candidates:
        if members:
            alive = [m for m in members if (m.address, m.incarnation) in running]
            if len(alive) < majority(len(members)):
                return False
            if not cautious:
                continue
            # If the group expels its at-risk members (it may: they look dead), the rest
            # must still hold a live majority of what remains.
            safe = [m for m in alive if (m.address, m.incarnation) not in at_risk]
            remaining = len(members) - (len(alive) - len(safe))
            if len(safe) < majority(remaining):
                return False
    return True


def _at_risk(world: World) -> set[tuple[str, int]]:
    """Live incarnations the group may expel soon: suspected by someone, or cut off from
    the largest side of the current partition."""
    risky: set[tuple[str, int]] = set()
    for n in world.live_nodes():
        assert n.core is not None
        for m in n.core.suspected():
            risky.add((m.address, m.incarnation))
    if world.groups is not None:
        sizes: dict[int, int] = {}
        for g in world.groups:
            sizes[g] = sizes.get(g, 0) + 1
        largest = max(sorted(sizes), key=lambda g: sizes[g])
        for n in world.nodes:
            if world.groups[n.index] != largest:
                risky.add((n.address, n.incarnation))
    return risky


def _make_config(rng: random.Random, mutant: bool) -> CoreConfig:
    return CoreConfig(
        event_horizon_slots=rng.choice((3, 5, 10)),
        pipeline_window_slots=rng.choice((1, 3, 10)),
        proposals_in_flight_max=rng.choice((1, 2, 10)),
        batch_messages_max=rng.choice((1, 3, 64)),
        broadcast_queue_max=rng.choice((8, 1000)),
        broadcast_stall_ms=3_000,
        heartbeat_interval_ms=500,
        suspicion_timeout_ms=rng.choice((1_500, 2_500)),
        member_expel_timeout_ms=rng.choice((0, 1_000, 2_500)),
        retransmit_interval_ms=rng.choice((100, 200)),
        fetch_slots_max=rng.choice((4, 64)),
        join_retry_interval_ms=500,
        join_timeout_ms=8_000,
        force_timeout_ms=3_000,
        paxos_single_leader=rng.random() < 0.2,
        adopt_promised_values=not mutant,
    )


def run_seed(seed: int, options: SimOptions = SimOptions(), trace: Callable[[str], None] | None = None) -> SeedResult:
    rng = random.Random(seed)
    members = options.members if options.members is not None else rng.randint(3, 5)
    faults = set(options.faults)
    config = _make_config(rng, options.mutant)
    net = NetConfig(
        loss=rng.choice((0.0, 0.02, 0.1)) if "loss" in faults else 0.0,
        duplicate=rng.choice((0.0, 0.05)) if "dup" in faults else 0.0,
        delay_ms_min=1,
        delay_ms_max=rng.choice((5, 30)),
        slow=rng.choice((0.0, 0.05)) if "reorder" in faults else 0.0,
        slow_ms_max=800,
        codec_every=7 if options.codec else 0,
    )
    run = _Run(rng, trace)
    world = World(rng, config, members, net, run, trace)
    run.world = world
    result = SeedResult(seed, members=members)
    try:
        if "isolate" in faults:
            run.isolate_chance = rng.choice((0.0, 0.01, 0.03))
        _schedule(world, rng, faults, members, run)
        world.bootstrap(tuple(world.nodes))
        world.run_until(SAFETY_MS)
        _liveness(world, rng, run)
        run.finish(world.live_nodes())
        run.check_delivered_own(world.live_nodes())
    except Violation as v:
        result.violation = v
    result.sim_ms = world.now_ms
    result.deliveries = run.deliveries
    result.messages = world.messages_delivered
    result.events = dict(run.events)
    return result


def _schedule(world: World, rng: random.Random, faults: set[str], members: int, run: _Run) -> None:
    """Workload and faults of the safety phase, drawn up front from the seed."""
    counter = [0]

    def broadcast(node: SimNode) -> None:
        if node.alive and node.core is not None and node.core.phase is Phase.MEMBER:
            counter[0] += 1
            world.broadcast(node, f"{node.member}:{counter[0]}".encode())

    for node in world.nodes:
        for _ in range(rng.randint(3, 10)):
            world.at(rng.randint(0, SAFETY_MS - 500), broadcast, node)
        if rng.random() < 0.3:  # a burst, to fill batches and windows
            t = rng.randint(0, SAFETY_MS - 500)
            for _ in range(rng.randint(5, 20)):
                world.at(t, broadcast, node)

    # Mixed in with every other fault, the heavier scenarios come up now and then; a focused
    # run (--faults naming three kinds or fewer) draws them for every seed.
    focused = len(faults) <= 3
    run.cautious = not ("stale" in faults and (focused or rng.random() < 0.3))
    run.dba_active = not run.cautious
    kinds = [k for k in ("partition", "oneway", "crash", "leave", "clock", "rebootstrap") if k in faults]
    once = [k for k in ("majority-loss", "restart-all") if k in faults and (focused or rng.random() < 0.1)]
    if not kinds and not once:
        return

    def quiet() -> bool:
        return world.now_ms < run.quiet_until_ms

    def split() -> None:
        if quiet():
            return
        groups = [rng.randint(0, 1) for _ in range(members)]
        run.partition_id += 1
        world.groups = groups
        if world.trace:
            world.trace(f"{world.now_ms:>7} partition {groups}")
        world.at(world.now_ms + rng.randint(300, 5_000), run.heal, run.partition_id)

    def oneway() -> None:
        if quiet():
            return
        src, dst = rng.sample(range(members), 2)
        world.blocked.add((src, dst))
        run.count("oneway")
        if world.trace:
            world.trace(f"{world.now_ms:>7} one-way cut: n{src + 1} -/-> n{dst + 1}")
        world.at(world.now_ms + rng.randint(500, 6_000), world.blocked.discard, (src, dst))

    def crash() -> None:
        live = world.live_nodes()
        if not live:
            return
        node = rng.choice(live)
        if not _removal_allowed(world, node, run.cautious):
            return
        if not run.cautious and not _removal_allowed(world, node):
            run.count("stale-crash")  # one the cautious scheduler would not have done
        world.crash(node)
        if rng.random() < 0.7:
            node.restart_pending = True
            world.at(world.now_ms + rng.randint(200, 6_000), _restart, world, node)

    def leave() -> None:
        live = [n for n in world.live_nodes() if n.core is not None and n.core.phase is Phase.MEMBER]
        if not live:
            return
        node = rng.choice(live)
        if _removal_allowed(world, node, run.cautious):
            if world.trace:
                world.trace(f"{world.now_ms:>7} leave {node.member}")
            world.leave(node)

    def clock() -> None:
        node = rng.choice(world.nodes)
        jump = rng.choice((-2_000, -500, 1_000, 2_000, 4_000, 10_000))
        node.offset_ms += jump
        if world.trace:
            world.trace(f"{world.now_ms:>7} clock of {node.uuid} jumps {jump:+} ms")

    def rebootstrap() -> None:
        _rebootstrap(world, rng, run)

    def majority_loss() -> None:
        _majority_loss(world, rng, run)

    def restart_all() -> None:
        _restart_all(world, rng, run)

    actions = {
        "partition": split,
        "oneway": oneway,
        "crash": crash,
        "leave": leave,
        "clock": clock,
        "rebootstrap": rebootstrap,
        "majority-loss": majority_loss,
        "restart-all": restart_all,
    }
    if kinds:
        for _ in range(rng.randint(2, 8)):
            kind = rng.choice(kinds)
            world.at(rng.randint(200, SAFETY_MS - 1_000), actions[kind])
    for kind in once:
        world.at(rng.randint(1_000, SAFETY_MS - 4_000), actions[kind])
    if run.dba_active:
        world.at(1_000, _dba, world, run)


def _two_way(world: World, a: SimNode, b: SimNode) -> bool:
    return world.connected(a, b) and world.connected(b, a)


def _rebootstrap(world: World, rng: random.Random, run: _Run) -> None:
    """A restarted member is told to bootstrap while the group runs: the probe must find the
    group. Only while it can (no cut between it and a live member for the whole probe), since
    a bootstrap that cannot reach the group does start a second one (the checkers fail)."""
    candidates = [n for n in world.nodes if not n.alive or _removal_allowed(world, n, run.cautious)]
    # Not one whose own probe still runs: killed before its verdict, it would count a
    # rebootstrap with no refusal to check.
    candidates = [n for n in candidates if n.core is None or n.core.phase is not Phase.PROBING]
    if not candidates:
        return
    node = rng.choice(candidates)
    group = [
        n
        for n in world.live_nodes()
        if n is not node and n.core is not None and n.core.phase is Phase.MEMBER and _two_way(world, n, node)
    ]
    if not group or world.groups is not None or world.blocked:
        return
    if node.alive:
        world.crash(node)
    run.count("rebootstrap")
    cfg = world.core_config
    run.quiet_until_ms = world.now_ms + cfg.bootstrap_probe_ms + 2 * cfg.join_retry_interval_ms
    if world.trace:
        world.trace(f"{world.now_ms:>7} restart {node.uuid} as incarnation {node.incarnation + 1}, told to bootstrap")
    world.bootstrap_alone(node)


def _majority_loss(world: World, rng: random.Random, run: _Run) -> None:
    """A majority of a live member's configuration crashes at once; the DBA will force."""
    members = [n for n in world.live_nodes() if n.core is not None and n.core.phase is Phase.MEMBER]
    if not members:
        return
    view = rng.choice(members).core.current_view()  # type: ignore[union-attr]
    if view is None:
        return
    in_view = [n for n in world.live_nodes() if n.member in view.members]
    keep = rng.randint(1, max(1, majority(len(view.members)) - 1))
    survivors = rng.sample(in_view, min(keep, len(in_view)))
    run.count("majority-loss")
    if world.trace:
        world.trace(f"{world.now_ms:>7} majority loss in view {view.view_id}: only {[str(n.member) for n in survivors]} live")
    for node in in_view:
        if node not in survivors:
            world.crash(node)
            node.restart_pending = True
            world.at(world.now_ms + rng.randint(2_000, 10_000), _restart, world, node)
    if not run.dba_active:
        run.dba_active = True
        world.at(world.now_ms + 1_000, _dba, world, run)


def _restart_all(world: World, rng: random.Random, run: _Run) -> None:
    """Every member crashes; one bootstraps the group again, the others join it."""
    run.count("restart-all")
    if world.trace:
        world.trace(f"{world.now_ms:>7} whole-group restart")
    for node in world.live_nodes():
        world.crash(node)
    first = rng.choice(world.nodes)
    t = world.now_ms + rng.randint(200, 2_000)
    for node in world.nodes:
        node.restart_pending = True
        if node is first:
            world.at(t, _bootstrap_again, world, rng, run, node)
        else:
            world.at(t + rng.randint(0, 4_000), _restart, world, node)


def _bootstrap_again(world: World, rng: random.Random, run: _Run, node: SimNode) -> None:
    """The operator bootstraps the group again with `node`, and watches: if the group is gone
    again before anyone could join it (the bootstrapper crashed while probing or alone), a
    member that is still trying to join is told to bootstrap (as a DBA would)."""
    if any(n.core is not None and n.core.phase in (Phase.MEMBER, Phase.PROBING) for n in world.live_nodes()):
        if all(n.core is None or n.core.phase is not Phase.MEMBER or n.member is None for n in world.live_nodes()):
            world.at(world.now_ms + 2_000, _bootstrap_again, world, rng, run, node)  # probing: look again
        return
    if world.trace:
        world.trace(f"{world.now_ms:>7} restart {node.uuid} as incarnation {node.incarnation + 1}, bootstraps the group")
    _stop_stragglers(world, rng)
    world.bootstrap_alone(node)
    run.count("bootstrap-again")
    world.at(world.now_ms + 2_000, _bootstrap_again, world, rng, run, rng.choice(world.nodes))


def _stop_stragglers(world: World, rng: random.Random) -> None:
    """Before a group is bootstrapped again, the operator stops what is left of the old one:
    members still catching up with it would otherwise wait for it forever (a welcomed member
    never leaves on its own: its group counts it). They rejoin the new group."""
    for node in world.live_nodes():
        if node.core is not None and node.core.phase is Phase.CATCHING_UP:
            world.crash(node)
            node.restart_pending = True
            world.at(world.now_ms + rng.randint(500, 3_000), _restart, world, node)


def _dba(world: World, run: _Run) -> None:
    """What a DBA does about a group that lost its live majority (DESIGN §3, "Gone missing"),
    checked every second in runs where that can happen (stale expels, majority loss, a view
    installed without a live majority):

    - no live member is in a configuration with a live majority: force_members on the most
      advanced survivor, listing the survivors of its configuration (refused until it
      suspects the dead; retried); if even that survivor is being removed, reboot the group;
    - no member left at all: bootstrap the group again (stragglers still catching up with the
      old one are stopped first; everyone rejoins);
    - some configuration has a live majority: the group helps itself; a member stuck in a
      view without one on two checks in a row (left out of a force) is restarted.
    """
    world.at(world.now_ms + 1_000, _dba, world, run)
    running = _running(world, None)
    members = [n for n in world.live_nodes() if n.core is not None and n.core.phase is Phase.MEMBER]
    if not members:
        # Nobody is left in the group (the last survivors left or crashed): reboot it, as
        # after a whole-group restart -- once it has been so for two checks in a row.
        if any(n.core is not None and n.core.phase is Phase.PROBING for n in world.live_nodes()):
            run.group_gone_checks = 0
            return
        run.group_gone_checks += 1
        if run.group_gone_checks >= 2:
            run.group_gone_checks = 0
            node = run.rng.choice(world.nodes)
            run.count("bootstrap-again")
            if world.trace:
                world.trace(f"{world.now_ms:>7} DBA: no group left; {node.uuid} bootstraps it again")
            _stop_stragglers(world, run.rng)
            world.bootstrap_alone(node)
        return
    run.group_gone_checks = 0
    stuck = []
    for node in members:
        view = node.core.known_views()[0]  # type: ignore[union-attr]
        alive = [m for m in view.members if (m.address, m.incarnation) in running]
        if len(alive) < majority(len(view.members)):
            stuck.append(node)
    if len(stuck) < len(members):
        # A live majority somewhere: the group can help itself. A member stuck in a view
        # without one (left out of a forced configuration, say) is restarted when it still
        # is on the next check: it rejoins as a new incarnation.
        for node in stuck:
            key = (node.index, node.incarnation)
            if key in run.orphans:
                run.count("dba-restart")
                if world.trace:
                    world.trace(f"{world.now_ms:>7} DBA: {node.member} is stuck outside the group; restart it")
                world.crash(node)
                node.restart_pending = True
                world.at(world.now_ms + run.rng.randint(200, 2_000), _restart, world, node)
        run.orphans = {(n.index, n.incarnation) for n in stuck}
        return
    # A member that asked to leave is a survivor only when nobody else is (its leave then
    # completes in the forced configuration, and the group is rebooted).
    staying = [n for n in members if not n.leaving] or members
    forcer = max(staying, key=lambda n: (n.core.known_views()[-1].view_id, n.core.next_slot))  # type: ignore[union-attr]
    core = forcer.core
    assert core is not None
    if forcer.member not in core.known_views()[-1].members:
        # The group had decided to remove even the most advanced survivor (then died): no
        # forced configuration can keep it (the core refuses). Reboot the group instead:
        # stop every member, bootstrap one, the others join.
        if world.trace:
            world.trace(f"{world.now_ms:>7} DBA: {forcer.member} is being removed; reboot the group")
        run.count("dba-reboot")
        _restart_all(world, run.rng, run)
        return
    view = core.known_views()[0]
    listed = tuple(m for m in view.members if (m.address, m.incarnation) in running or m == forcer.member)
    if forcer.member not in listed:
        return
    run.count("no-live-majority")
    ready = world.step(forcer, ForceMembers(listed))
    if not ready.errors:
        run.count("force")
    if world.trace:
        outcome = "; ".join(e.detail for e in ready.errors) or "started"
        world.trace(f"{world.now_ms:>7} DBA: force_members {[str(m) for m in listed]} on {forcer.member}: {outcome}")


def _liveness(world: World, rng: random.Random, run: _Run) -> None:
    start = world.now_ms
    world.groups = None
    run.isolate_chance = 0.0
    run.partition_id += 1  # pending heals are moot
    world.blocked.clear()
    world.net.loss = min(world.net.loss, 0.01)
    world.net.slow = 0.0
    if world.trace:
        world.trace(f"{start:>7} liveness phase: heal")
    counter = [0]

    def broadcast(node: SimNode) -> None:
        if node.alive and node.core is not None and node.core.phase is Phase.MEMBER:
            counter[0] += 1
            world.broadcast(node, f"{node.member}:L{counter[0]}".encode())

    for node in world.nodes:
        if not node.alive:
            # Pending restarts still happen; otherwise half of the dead come back.
            if not node.restart_pending and rng.random() < 0.5:
                node.restart_pending = True
                world.at(start + rng.randint(0, 2_000), _restart, world, node)
        for _ in range(rng.randint(1, 3)):
            world.at(start + rng.randint(0, 3_000), broadcast, node)

    def converged() -> bool:
        return world.now_ms > start + 3_000 and run.check_liveness(world.live_nodes()) is None

    if not world.run_until(start + LIVENESS_MS_MAX, converged):
        why = run.check_liveness(world.live_nodes()) or "did not converge"
        raise Violation("liveness", f"after {LIVENESS_MS_MAX} ms of healed network: {why}")


SEEDS_PER_TASK = 25  # seeds a worker process runs per task of run_seeds


def _run_chunk(args: tuple[list[int], SimOptions]) -> list[SeedResult]:
    seeds, options = args
    return [run_seed(seed, options) for seed in seeds]


def run_seeds(seeds: list[int], options: SimOptions, jobs: int) -> Iterator[SeedResult]:
    """`run_seed` for each seed, on `jobs` worker processes; results in the seeds' order (a
    seed's result does not depend on which process ran it)."""
    if jobs <= 1:
        yield from (run_seed(seed, options) for seed in seeds)
        return
    chunks = [(seeds[i : i + SEEDS_PER_TASK], options) for i in range(0, len(seeds), SEEDS_PER_TASK)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for results in pool.map(_run_chunk, chunks):
            yield from results
