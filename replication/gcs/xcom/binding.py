"""The asyncio binding of the consensus core: Core + TCP transport + loop clock.

:class:`XcomGroup` implements :class:`~replication.gcs.interface.GroupCommunication` for one
member incarnation. It owns a sans-IO :class:`~replication.gcs.xcom.core.Core`, a
:class:`~replication.gcs.xcom.transport.TcpTransport` and one *driver* task.

Theory of operation
-------------------
The core only moves when stepped, so the binding steps it:

* on input: control calls (bootstrap/join/leave/force_members) and :meth:`XcomGroup.broadcast`
  step it at once, from the caller (the core's answer -- a refusal, the origin_seq -- is
  returned synchronously); received messages are stepped by the driver, up to
  ``inbound_batch_max`` per wake-up;
* on time: after every batch of inputs the driver steps ``Tick(now_ms)`` from the loop clock
  (whatever the inputs made due -- a retransmission, a batch waiting for a slot -- runs at
  once, not at the next timer), and a timer wakes it at ``Ready.next_tick_ms``, at the latest
  every ``tick_interval_ms_max``. A local input is preceded by a Tick when the clock moved, so
  the core stamps it with the current time.

Every :class:`Ready` is executed the same way: ``sends`` go to the transport right away (a
message sent to several peers is encoded and compressed once; a message to ourselves is fed
back to the core by the driver, never through a socket); deliveries, views, reachability
changes and errors are queued and handed to listeners by one non-reentrant dispatcher, so a
listener that broadcasts (and so steps the core) cannot reorder what listeners see. Views are
interleaved with deliveries by ``View.start_slot``, as the core specifies.

Membership at the wire: the transport drops frames from *superseded* incarnations (an older
incarnation of a member whose newer incarnation is in the view: that process crashed and its
stragglers must not reach the core). Everything else that passed the handshake reaches the
core, which enforces the closed group itself (a joiner, a member being told it was expelled,
a forced configuration all need messages from outside the current view); the binding counts
messages from senders outside the view.

Errors: a peer's undecodable message is dropped, counted and the peer reported (logged with
its identity, counted per peer). A core that reports phase ERROR (an
:class:`~replication.gcs.xcom.types.InvariantViolation` inside it), an exception escaping
``Core.step`` and a bug in the driver itself all do the same: the member goes to ERROR (the core
is no longer stepped, waiters fail, listeners get ``GcsEvent(INTERNAL)``) -- never swallowed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog

from replication.gcs.interface import (
    Delivery,
    DeliveryListener,
    EventListener,
    GcsError,
    GcsErrorCode,
    GcsEvent,
    GcsStatistics,
    MemberId,
    ReachabilityChange,
    View,
    ViewListener,
)

from .core import (
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
from .frames import EncodedMessage, NodeId
from .messages import Message, MessageDecodeError, decode_message, encode_message
from .types import InvariantViolation
from .transport import (
    Inbound,
    Inbox,
    PeerEvent,
    PeerInvalidFrame,
    PeerRestarted,
    TcpTransport,
    TransportConfig,
    TransportStats,
)

_log = structlog.get_logger("grproxy.gcs.binding")

# Errors of a Broadcast step that mean "refused now" (raised to the caller).
_BROADCAST_REFUSALS: Final = frozenset(
    {GcsErrorCode.NOT_IN_VIEW, GcsErrorCode.QUEUE_FULL, GcsErrorCode.MESSAGE_TOO_LARGE}
)
# Messages the core sends to itself, waiting for the driver (drained every iteration).
_LOCAL_MESSAGES_MAX: Final = 10_000
# Cached identity translations (they churn only when members restart or join).
_IDENTITY_CACHE_MAX: Final = 1024
# Distinct peers tracked in BindingStats.per_peer_invalid (a hostile flood cannot grow it).
_PER_PEER_KEYS_MAX: Final = 64
# 2025-01-01T00:00:00Z: incarnations count tenths of a second from here (fits u32 until 2038).
_INCARNATION_EPOCH_S: Final = 1_735_689_600


def new_incarnation(now_s: float | None = None) -> int:
    """A fresh incarnation number for a starting process: tenths of a second since 2025, so a
    restarted member always gets a larger one than its previous life (restarts take longer
    than 100 ms)."""
    now = time.time() if now_s is None else now_s
    value = int((now - _INCARNATION_EPOCH_S) * 10)
    if not 0 < value < 2**32:
        raise ValueError("clock outside the incarnation range")
    return value


class Clock(Protocol):
    """Monotonic milliseconds. The loop clock here; the simulator has its own."""

    def now_ms(self) -> int: ...


class LoopClock:
    """The event loop's monotonic clock (the time asyncio timers use)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now_ms(self) -> int:
        return int(self._loop.time() * 1000)


@dataclass(frozen=True, slots=True)
class BindingConfig:
    """Driver settings. Queue/transport bounds live in :class:`TransportConfig`."""

    tick_interval_ms_max: int = 50
    inbound_batch_max: int = 2048
    broadcast_wait_ms: int = 30_000
    waiters_max: int = 100_000
    close_drain_ms: int = 1_000

    def __post_init__(self) -> None:
        for name in ("tick_interval_ms_max", "inbound_batch_max", "broadcast_wait_ms", "waiters_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")


@dataclass(slots=True)
class BindingStats:
    """Driver counters (the core's are in :meth:`XcomGroup.statistics`)."""

    steps: int = 0
    ticks: int = 0
    messages_undecodable: int = 0
    messages_from_outside_view: int = 0
    sends_to_self: int = 0
    sends_refused: int = 0
    encodes: int = 0
    peer_invalid_reports: int = 0
    listener_failures: int = 0
    per_peer_invalid: dict[str, int] = field(default_factory=dict)


def node_of(member: MemberId) -> NodeId:
    """The transport identity of a member. Raises ValueError for an address the transport
    cannot dial (MemberId checks less: only that there is a ':')."""
    return NodeId(member.uuid, member.address, member.incarnation)



class XcomGroup:
    """One member incarnation of a group over TCP. Implements ``GroupCommunication``.

    Lifecycle: construct inside a running loop, ``await start()`` (binds the group port), then
    ``bootstrap()`` or ``join()``; ``await close()`` at the end. All methods must be called from
    the loop's thread. Listeners are called from the loop, in order, and must not block.
    """

    def __init__(
        self,
        me: MemberId,
        core_config: CoreConfig,
        transport_config: TransportConfig,
        binding_config: BindingConfig | None = None,
        *,
        clock: Clock | None = None,
        core_factory: Callable[[MemberId, CoreConfig], Core] = Core,
    ) -> None:
        self._me = me
        self._config = binding_config or BindingConfig()
        self._loop = asyncio.get_running_loop()
        self._clock: Clock = clock or LoopClock(self._loop)
        self._core = core_factory(me, core_config)
        self._wakeup = asyncio.Event()
        self._inbox = Inbox(transport_config.inbox_messages_max, transport_config.inbox_bytes_max, self._wakeup)
        self.log = _log.bind(member_id=str(me))
        self._transport = TcpTransport(
            node_of(me), transport_config, self._inbox, observer=self._on_peer_event, admit=self._admit,
            superseded=lambda node: not self._admit(node),
        )
        self._stats = BindingStats()
        self._view: View | None = None
        self._view_uuids: dict[str, int] = {}  # uuid -> incarnation in the current view
        self._placeholders: set[MemberId] = set()  # seeds known by address only
        # MemberId <-> NodeId translations are cached: building a NodeId validates its address.
        self._members_by_node: dict[NodeId, MemberId] = {}
        self._nodes: dict[MemberId, NodeId] = {}
        self._local: deque[Message] = deque()
        self._outputs: deque[Ready] = deque()
        self._dispatching = False
        # Tuples, replaced on change: a listener may add or remove listeners while called.
        self._view_listeners: tuple[ViewListener, ...] = ()
        self._delivery_listeners: tuple[DeliveryListener, ...] = ()
        self._event_listeners: tuple[EventListener, ...] = ()
        self._waiters: dict[int, asyncio.Future[Delivery]] = {}
        self._early: dict[int, Delivery] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at_ms: int | None = None
        self._last_tick_ms: int | None = None
        self._driver: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on ``me.address`` and start the driver. Raises OSError if the port is taken."""
        await self._transport.start()
        self._driver = self._loop.create_task(self._drive(), name=f"gcs-driver-{self._me.uuid}")
        self._wakeup.set()

    async def close(self) -> None:
        """Stop driving, give queued sends ``close_drain_ms`` to go out, close the transport.
        Pending ``broadcast_and_wait`` calls fail with GcsError(BROADCAST_DROPPED)."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._driver is not None:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
        try:
            async with asyncio.timeout(self._config.close_drain_ms / 1000):
                await self._transport.drain()
        except TimeoutError:
            pass
        await self._transport.close()
        self._fail_waiters(GcsErrorCode.BROADCAST_DROPPED, "member closed")

    @property
    def transport(self) -> TcpTransport:
        return self._transport

    @property
    def core(self) -> Core:
        return self._core

    # ------------------------------------------------------------------ GcsControl

    @property
    def me(self) -> MemberId:
        return self._me

    def bootstrap(self, members: tuple[MemberId, ...], seeds: tuple[MemberId, ...] = ()) -> None:
        """See GcsControl.bootstrap: with ``seeds`` a live group that answers refuses it."""
        self._placeholders.update(seeds)
        self._step_input(Bootstrap(members, seeds))

    def join(self, seeds: tuple[MemberId, ...]) -> None:
        """Ask ``seeds`` (only their addresses matter) to add this incarnation."""
        self._placeholders.update(seeds)
        self._nodes.clear()
        self._step_input(Join(seeds))

    def leave(self) -> None:
        self._step_input(Leave())

    def set_member_expel_timeout_ms(self, ms: int) -> None:
        """See Core.set_member_expel_timeout_ms."""
        self._core.set_member_expel_timeout_ms(ms)

    def set_compression_threshold(self, threshold: int) -> None:
        """See TcpTransport.set_compression_threshold."""
        self._transport.set_compression_threshold(threshold)

    def force_members(self, members: tuple[MemberId, ...]) -> None:
        ready = self._step_input(ForceMembers(members))
        for err in ready.errors:
            if err.code is GcsErrorCode.FORCE_REFUSED:
                raise GcsError(err.code, err.detail)

    def current_view(self) -> View | None:
        return self._core.current_view()

    def add_view_listener(self, listener: ViewListener) -> None:
        self._view_listeners += (listener,)

    def add_event_listener(self, listener: EventListener) -> None:
        self._event_listeners += (listener,)

    # ------------------------------------------------------------------ GcsMessaging

    def broadcast(self, payload: bytes) -> int:
        """Queue ``payload`` for total-order delivery; returns its origin_seq.

        Raises GcsError(NOT_IN_VIEW | QUEUE_FULL | MESSAGE_TOO_LARGE) when the core refuses it,
        GcsError(INTERNAL) when the member is in ERROR.
        """
        ready = self._step_input(Broadcast(payload))
        for err in ready.errors:
            if err.code in _BROADCAST_REFUSALS:
                raise GcsError(err.code, err.detail)
        if not ready.broadcast_seqs:
            raise GcsError(GcsErrorCode.INTERNAL, "core neither accepted nor refused the broadcast")
        self._wakeup.set()  # tick right after this burst of inputs: propose without delay
        return ready.broadcast_seqs[-1]

    async def broadcast_and_wait(self, payload: bytes, timeout_ms: int | None = None) -> Delivery:
        """Broadcast and wait until this member delivers the message; returns the delivery.

        The wait is bounded by ``timeout_ms`` (default ``broadcast_wait_ms``): TimeoutError
        then, and the message may still be delivered later (at most once). Raises GcsError as
        :meth:`broadcast`, or BROADCAST_DROPPED when this member left before delivering it.
        """
        if len(self._waiters) >= self._config.waiters_max:
            raise GcsError(GcsErrorCode.QUEUE_FULL, f"{len(self._waiters)} broadcasts awaiting delivery")
        # A one-member group can deliver inside broadcast() itself: catch that delivery too.
        self._early = {}
        try:
            seq = self.broadcast(payload)
        finally:
            early, self._early = self._early, None
        if seq in early:
            return early[seq]
        fut: asyncio.Future[Delivery] = self._loop.create_future()
        self._waiters[seq] = fut
        try:
            async with asyncio.timeout((timeout_ms or self._config.broadcast_wait_ms) / 1000):
                return await fut
        finally:
            self._waiters.pop(seq, None)

    def add_delivery_listener(self, listener: DeliveryListener) -> None:
        self._delivery_listeners += (listener,)

    def remove_delivery_listener(self, listener: DeliveryListener) -> None:
        """Stop calling ``listener`` (ValueError if it was not added)."""
        listeners = list(self._delivery_listeners)
        listeners.remove(listener)
        self._delivery_listeners = tuple(listeners)

    # ------------------------------------------------------------------ statistics

    def statistics(self) -> GcsStatistics:
        return self._core.statistics()

    def transport_statistics(self) -> TransportStats:
        return self._transport.stats()

    def binding_statistics(self) -> BindingStats:
        return self._stats

    # ------------------------------------------------------------------ stepping

    def _step_input(self, event: Event) -> Ready:
        """Step a local input, after a Tick if the clock moved since the last one: the core
        stamps inputs with its own notion of now (join deadlines, broadcast latency)."""
        now = self._clock.now_ms()
        if now != self._last_tick_ms:
            self._tick(now)
        return self._step(event)

    def _tick(self, now_ms: int) -> None:
        self._last_tick_ms = now_ms
        self._stats.ticks += 1
        self._step(Tick(now_ms))

    def _step(self, event: Event) -> Ready:
        """Step the core once and execute its Ready. Raises GcsError(INTERNAL) in ERROR."""
        if self._failed is not None:
            raise GcsError(GcsErrorCode.INTERNAL, f"member is in ERROR: {self._failed!r}")
        try:
            ready = self._core.step(event)  # type: ignore[arg-type]
        except Exception as exc:  # InvariantViolation, or any other bug of the core
            self._enter_error(exc)
            raise GcsError(GcsErrorCode.INTERNAL, repr(exc)) from exc
        self._stats.steps += 1
        self._execute(ready)
        if ready.phase is Phase.ERROR and self._failed is None:
            self._failed = InvariantViolation(
                "; ".join(e.detail for e in ready.errors if e.code is GcsErrorCode.INTERNAL) or "core in ERROR"
            )
            self.log.critical("gcs core in ERROR: the member stops", error=str(self._failed))
            self._fail_waiters(GcsErrorCode.INTERNAL, str(self._failed))
        return ready

    def _execute(self, ready: Ready) -> None:
        if ready.sends:
            self._send_all(ready.sends)
        if ready.deliveries or ready.views or ready.reachability or ready.errors:
            self._outputs.append(ready)
            if not self._dispatching:
                self._dispatch()
        if ready.next_tick_ms is not None:
            self._schedule_tick(ready.next_tick_ms)

    def _send_all(self, sends: Iterable[tuple[MemberId, Message]]) -> None:
        me = self._me
        encoded: dict[int, EncodedMessage] = {}  # one encoding per message object
        transport = self._transport
        for dest, msg in sends:
            if dest == me:
                if len(self._local) >= _LOCAL_MESSAGES_MAX:
                    self._stats.sends_refused += 1
                    continue
                self._stats.sends_to_self += 1
                self._local.append(msg)
                self._wakeup.set()
                continue
            enc = encoded.get(id(msg))
            if enc is None:
                try:
                    enc = transport.encode(encode_message(msg))
                except ValueError as exc:  # over message_bytes_max: a configuration bug
                    self.log.error("gcs message cannot be sent", reason=str(exc), message=type(msg).__name__)
                    self._stats.sends_refused += 1
                    continue
                encoded[id(msg)] = enc
                self._stats.encodes += 1
            node = self._nodes.get(dest)
            if node is None:
                try:
                    node = NodeId("", dest.address, 0) if dest in self._placeholders else node_of(dest)
                except ValueError as exc:  # e.g. a port out of range, learned from a peer
                    self.log.warning("gcs cannot send to a malformed member address", dest=str(dest), reason=str(exc))
                    self._stats.sends_refused += 1
                    continue
                if len(self._nodes) >= _IDENTITY_CACHE_MAX:  # identities churn only on restarts
                    self._nodes.clear()
                self._nodes[dest] = node
            if not transport.send(node, enc):
                self._stats.sends_refused += 1

    def _schedule_tick(self, at_ms: int) -> None:
        if self._timer_at_ms is not None and self._timer_at_ms <= at_ms:
            return  # an earlier (or equal) wake-up is already armed: the common case
        now = self._clock.now_ms()
        at_ms = max(now + 1, min(at_ms, now + self._config.tick_interval_ms_max))
        if self._timer_at_ms is not None and self._timer_at_ms <= at_ms:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at_ms = at_ms
        self._timer = self._loop.call_later((at_ms - now) / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at_ms = None
        self._wakeup.set()

    async def _drive(self) -> None:
        """The driver task: inbound messages and self-sends, then a Tick; repeat on wake-up."""
        wakeup = self._wakeup
        inbox = self._inbox
        batch_max = self._config.inbound_batch_max
        try:
            while True:
                await wakeup.wait()
                wakeup.clear()
                for item in inbox.take(batch_max):
                    self._on_inbound(item)
                for _ in range(len(self._local)):  # what this batch produces waits a turn
                    self._step(Received(self._me, self._local.popleft()))
                self._tick(self._clock.now_ms())
                if self._timer is None:
                    self._schedule_tick(self._clock.now_ms() + self._config.tick_interval_ms_max)
                if len(inbox) or self._local:
                    wakeup.set()
                    await asyncio.sleep(0)  # let readers and writers run between batches
        except GcsError:
            if self._failed is None:
                raise
            # the member is in ERROR: stop driving; the transport stays up until close()
        except Exception as exc:  # a bug of the binding: the member stops, loudly
            self._enter_error(exc)

    def _on_inbound(self, item: Inbound) -> None:
        sender = self._members_by_node.get(item.sender)
        if sender is None:
            try:
                sender = MemberId(item.sender.name, item.sender.address, item.sender.incarnation)
            except ValueError as exc:
                self._report_peer(item.sender, f"bad sender identity: {exc}")
                return
            if len(self._members_by_node) >= _IDENTITY_CACHE_MAX:
                self._members_by_node.clear()
            self._members_by_node[item.sender] = sender
        try:
            msg = decode_message(item.body)
        except MessageDecodeError as exc:
            self._stats.messages_undecodable += 1
            self._report_peer(item.sender, f"undecodable message: {exc}")
            return
        if self._view is not None and self._view_uuids.get(item.sender.name) != item.sender.incarnation:
            self._stats.messages_from_outside_view += 1
        self._step(Received(sender, msg))

    def _report_peer(self, node: NodeId, reason: str) -> None:
        self._count_invalid(str(node))
        self.log.warning("gcs peer sent an invalid message", peer=str(node), reason=reason)

    def _count_invalid(self, key: str) -> None:
        self._stats.peer_invalid_reports += 1
        per_peer = self._stats.per_peer_invalid
        if key in per_peer or len(per_peer) < _PER_PEER_KEYS_MAX:
            per_peer[key] = per_peer.get(key, 0) + 1

    # ------------------------------------------------------------------ outputs

    def _dispatch(self) -> None:
        """Hand queued outputs to listeners in order; never re-entered (see module doc)."""
        self._dispatching = True
        try:
            while self._outputs:
                ready = self._outputs.popleft()
                views = deque(ready.views)
                for delivery in ready.deliveries:
                    while views and views[0].start_slot <= delivery.position.slot:
                        self._install(views.popleft())
                    self._deliver(delivery)
                while views:
                    self._install(views.popleft())
                for change in ready.reachability:
                    self._notify_event(change)
                for err in ready.errors:
                    self._on_error(err)
        finally:
            self._dispatching = False

    def _install(self, view: View) -> None:
        self._view = view
        self.log = self.log.bind(view_id=str(view.view_id))
        self._view_uuids = {m.uuid: m.incarnation for m in view.members}
        self._transport.set_admission(self._admit)
        staying = {m.address for m in view.members}
        for gone in view.left:
            if gone.address not in staying and gone.address != self._me.address:
                self._transport.forget_peer(gone.address)  # close its connection, drop its queue
        self.log.info(
            "gcs view installed",
            view_id=str(view.view_id),
            members=[str(m) for m in view.members],
            joined=[str(m) for m in view.joined],
            left=[str(m) for m in view.left],
        )
        for listener in self._view_listeners:
            self._call(listener, view)

    def _deliver(self, delivery: Delivery) -> None:
        if delivery.origin == self._me:
            fut = self._waiters.get(delivery.origin_seq)
            if fut is not None and not fut.done():
                fut.set_result(delivery)
            elif self._early is not None:
                self._early[delivery.origin_seq] = delivery
        for listener in self._delivery_listeners:
            try:  # inlined _call: this runs once per delivery per listener
                listener(delivery)
            except Exception:
                self._listener_failed(listener)

    def _on_error(self, err: GcsEvent) -> None:
        if err.code in _BROADCAST_REFUSALS:
            level = self.log.debug  # raised to the caller already; a full queue must not flood
        elif err.code is GcsErrorCode.INTERNAL:
            level = self.log.error
        else:
            level = self.log.warning
        level("gcs event", code=err.code.value, detail=err.detail, seqs=list(err.seqs)[:16])
        if err.code is GcsErrorCode.BROADCAST_DROPPED:
            for seq in err.seqs:
                fut = self._waiters.get(seq)
                if fut is not None and not fut.done():
                    fut.set_exception(GcsError(err.code, err.detail))
        self._notify_event(err)

    def _notify_event(self, event: ReachabilityChange | GcsEvent) -> None:
        for listener in self._event_listeners:
            self._call(listener, event)

    def _call(self, listener: Callable[[object], None], arg: object) -> None:
        try:
            listener(arg)
        except Exception:
            self._listener_failed(listener)

    def _listener_failed(self, listener: object) -> None:
        """The listener is the upper layer's code; its bug must not stop the group member from
        talking to the group. It is logged with its stack (we are in its except block) and
        counted."""
        self._stats.listener_failures += 1
        self.log.exception("gcs listener failed", listener=repr(listener))

    def _enter_error(self, exc: BaseException) -> None:
        self._failed = exc
        self.log.critical("gcs member goes to ERROR", error=repr(exc), exc_info=exc)
        self._fail_waiters(GcsErrorCode.INTERNAL, repr(exc))
        self._notify_event(GcsEvent(GcsErrorCode.INTERNAL, f"member in ERROR: {exc!r}"))

    def _fail_waiters(self, code: GcsErrorCode, detail: str) -> None:
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(GcsError(code, detail))
        self._waiters.clear()

    # ------------------------------------------------------------------ transport glue

    def _admit(self, node: NodeId) -> bool:
        """Transport-level membership filter: refuse superseded incarnations only."""
        incarnation = self._view_uuids.get(node.name)
        return incarnation is None or node.incarnation >= incarnation

    def _on_peer_event(self, event: PeerEvent) -> None:
        if isinstance(event, PeerInvalidFrame):
            self._count_invalid(str(event.node) if event.node is not None else event.address)
        elif isinstance(event, PeerRestarted):
            self._members_by_node.pop(event.old, None)
