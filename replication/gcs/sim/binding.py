"""The `sim` binding of the GCS interface: the xcom core over the simulated world.

Upper layers (the member, certification, recovery) can be tested on a deterministic group:

    group = SimGroup(seed=7, members=3)
    a, b, c = group.members
    a.add_delivery_listener(print)
    a.broadcast(b"hello")
    group.run_for(1_000)

Each `SimGcs` implements `GroupCommunication` for one simulated node; calls step the core at
once and listeners run synchronously, in order, as the world steps the node. Time advances
only in `SimGroup.run_for` / `run_until`. The group's checkers watch everything, so a test
on top of this binding also checks the GCS guarantees (a violation raises `Violation`).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from replication.gcs.interface import (
    DeliveryListener,
    EventListener,
    GcsError,
    GcsErrorCode,
    GcsStatistics,
    MemberId,
    View,
    ViewListener,
)
from replication.gcs.xcom.core import Bootstrap, Broadcast, CoreConfig, ForceMembers, Join, Leave, Ready

from .checkers import Checker
from .world import NetConfig, SimNode, World

__all__ = ["SimGcs", "SimGroup"]

_REFUSALS = {GcsErrorCode.NOT_IN_VIEW, GcsErrorCode.QUEUE_FULL, GcsErrorCode.MESSAGE_TOO_LARGE}


class SimGcs:
    """GroupCommunication for one simulated node (see the module docstring)."""

    def __init__(self, world: World, node: SimNode) -> None:
        self._world = world
        self._node = node
        self._views: list[ViewListener] = []
        self._deliveries: list[DeliveryListener] = []
        self._events: list[EventListener] = []
        self._view: View | None = None
        world.listeners[node.index] = self._dispatch

    @property
    def me(self) -> MemberId:
        member = self._node.member
        if member is None:
            raise GcsError(GcsErrorCode.INVALID_REQUEST, "not started: bootstrap or join first")
        return member

    @property
    def node(self) -> SimNode:
        return self._node

    def _dispatch(self, ready: Ready) -> None:
        vi = 0
        views = ready.views
        for d in ready.deliveries:
            while vi < len(views) and views[vi].start_slot <= d.position.slot:
                self._install(views[vi])
                vi += 1
            for listener in self._deliveries:
                listener(d)
        for v in views[vi:]:
            self._install(v)
        for change in ready.reachability:
            for event_listener in self._events:
                event_listener(change)
        for err in ready.errors:
            for event_listener in self._events:
                event_listener(err)

    def _install(self, view: View) -> None:
        self._view = view if self._node.member in view.members else None
        for listener in self._views:
            listener(view)

    # -- control

    def bootstrap(self, members: tuple[MemberId, ...], seeds: tuple[MemberId, ...] | None = None) -> None:
        """GcsControl.bootstrap. `seeds` default to every other simulated node (the group
        seeds a real member is configured with): a live group among them refuses the
        bootstrap (GcsEvent GROUP_EXISTS) within the probe time. Pass () to skip the probe."""
        if seeds is None:
            seeds = self._world.seeds_for(self._node)
        self._world.start(self._node, Bootstrap(members, seeds))

    def join(self, seeds: tuple[MemberId, ...]) -> None:
        self._world.start(self._node, Join(seeds))

    def leave(self) -> None:
        self._world.step(self._alive(), Leave())

    def force_members(self, members: tuple[MemberId, ...]) -> None:
        ready = self._world.step(self._alive(), ForceMembers(members))
        for err in ready.errors:
            if err.code is GcsErrorCode.FORCE_REFUSED:
                raise GcsError(err.code, err.detail)

    def current_view(self) -> View | None:
        view = self._view
        if view is None or not self._node.alive or self._node.member not in view.members:
            return None  # down, or a view of an earlier incarnation
        return view

    def add_view_listener(self, listener: ViewListener) -> None:
        self._views.append(listener)

    def add_event_listener(self, listener: EventListener) -> None:
        self._events.append(listener)

    # -- message

    def broadcast(self, payload: bytes) -> int:
        ready = self._world.step(self._alive(), Broadcast(payload))
        if ready.broadcast_seqs:
            return ready.broadcast_seqs[0]
        err = next((e for e in ready.errors if e.code in _REFUSALS), None)
        if err is None:
            raise GcsError(GcsErrorCode.INTERNAL, "broadcast neither queued nor refused")
        raise GcsError(err.code, err.detail)

    def add_delivery_listener(self, listener: DeliveryListener) -> None:
        self._deliveries.append(listener)

    # -- statistics

    def statistics(self) -> GcsStatistics:
        core = self._alive().core
        assert core is not None
        return core.statistics()

    def _alive(self) -> SimNode:
        if not self._node.alive or self._node.core is None:
            raise GcsError(GcsErrorCode.NOT_IN_VIEW, f"{self._node.uuid} is down")
        return self._node


class SimGroup:
    """A simulated group of `members` nodes, bootstrapped together, with the checkers on.

    `net` defaults to a clean network (short delays, no loss); pass a NetConfig for faults,
    and use `crash`, `restart`, `restart_bootstrapping`, `partition`/`cut`/`heal` to script
    failures.
    """

    def __init__(
        self,
        seed: int,
        members: int,
        config: CoreConfig | None = None,
        net: NetConfig | None = None,
        bootstrap: bool = True,
    ) -> None:
        self.rng = random.Random(seed)
        self.checker = Checker()
        self.world = World(self.rng, config or CoreConfig(), members, net or NetConfig(), self.checker)
        self.members = [SimGcs(self.world, node) for node in self.world.nodes]
        if bootstrap:
            self.world.bootstrap(tuple(self.world.nodes))
            # Bootstrap happened before any listener could be added: remember the view.
            for gcs in self.members:
                core = gcs.node.core
                assert core is not None
                gcs._view = core.current_view()

    @property
    def now_ms(self) -> int:
        return self.world.now_ms

    def run_for(self, ms: int) -> None:
        self.world.run_until(self.world.now_ms + ms)

    def run_until(self, condition: Callable[[], bool], timeout_ms: int, check_every_ms: int = 10) -> bool:
        return self.world.run_until(self.world.now_ms + timeout_ms, condition, check_every_ms)

    def crash(self, gcs: SimGcs) -> None:
        self.world.crash(gcs.node)

    def restart(self, gcs: SimGcs) -> None:
        """A new incarnation of a crashed (or offline) node joins through the others."""
        self.world.join(gcs.node)

    def restart_bootstrapping(self, gcs: SimGcs, probe: bool = True) -> None:
        """A new incarnation of `gcs`'s node bootstraps a group of itself. With `probe` (as
        SimGcs.bootstrap does by default) a live group among the other nodes refuses it:
        GcsEvent(GROUP_EXISTS), then OFFLINE. Without, it vouches that no group runs."""
        self.world.bootstrap_alone(gcs.node, probe)

    def cut(self, source: SimGcs, destination: SimGcs) -> None:
        """One-way link failure: `source`'s messages no longer reach `destination`."""
        self.world.blocked.add((source.node.index, destination.node.index))

    def partition(self, *groups: list[SimGcs]) -> None:
        ids = [0] * len(self.world.nodes)
        for g, members in enumerate(groups):
            for gcs in members:
                ids[gcs.node.index] = g
        self.world.groups = ids

    def heal(self) -> None:
        """Undo partitions and one-way cuts."""
        self.world.groups = None
        self.world.blocked.clear()
