"""Fuzzing grproxy's front ends (MySQL packets) and its group port (transport frames).

Run: ``python -m tests.chaos.fuzz --inputs 1000000 [--seed N]`` (``make chaos``), or the 50k
version in ``make test`` (tests/chaos/test_fuzz.py). The seed is printed first; the same seed
gives the same inputs (every input is made by its own ``random.Random`` seeded with
``seed/target/index``, so ``--replay target:index`` makes one input again).

Theory of operation
-------------------
Inputs come from tests/chaos/fuzz_inputs.py: valid packets and frames, random ones, and the
valid ones damaged. They are fed to the real code, cheaply where it has a pure entry and over
real sockets to real processes for the rest (``WEIGHTS`` splits the count):

=============  =====================================================================================
target         what is driven
=============  =====================================================================================
``login``      ``parse_handshake_response`` / ``parse_change_user`` (in process)
``frames``     the transport's ``FrameDecoder`` (whole and split at random points: same frames) and
               ``Reassembler`` (in process)
``messages``   ``decode_message``; whatever decodes must encode back to the same bytes (in process)
``core``       three consensus ``Core`` s in a group, stepped in process; each input is a message
               from a dialer that is not a member (a stranger, an older or newer incarnation of a
               member, a member's address under another name) to one of them
``frontend``   grproxy's ``ClientConnection`` in this process, on an in-memory transport, in
               front of an in-process router over the sandbox's members (TLS offered, so TLS
               requests in odd places meet a real TLS stack)
``router``     the sandbox's router process, over TCP
``member``     a member's SQL port (member process), over TCP
``group``      a member's group port, over TCP: garbage, damaged HELLOs, and damaged frames after
               a HELLO from a non-member identity
=============  =====================================================================================

What counts:

* a **crash**: an exception other than the documented one escaping a pure entry; an exception
  out of ``data_received`` or an unretrieved task exception in process; an error logged with a
  traceback, or at level error/critical, by the in-process router or a sandbox process; a
  process that exited;
* a **hang**: a connection that neither answers nor closes within ``HANG_BOUND_S``: after a
  login, after a complete command stream (the fuzzer then sends a sentinel ``SELECT 'token'``,
  which the server must answer or close on), and after the fuzzer's EOF (the server must
  close); a pure entry that does not return within ``PURE_BOUND_S``;
* a **non-member delivery**: a delivery whose payload a fuzzer frame carried (``FUZZ:``), or
  any change of the group a non-member's message caused (a member leaving its view, going
  OFFLINE/ERROR, a new configuration);
* a **serving failure**: after every ``SERVE_CHECK_EVERY`` socket inputs (and at the end) a
  normal client must still get ``SELECT 1`` from the router and every member port, a write
  through the router must reach every member, and every member must be ONLINE; at the end the
  backends' checksums must be equal.

Fuzz sessions set ``innodb_lock_wait_timeout`` and ``lock_wait_timeout`` to
``SESSION_LOCK_WAIT_S`` first: concurrent fuzz sessions lock each other's rows, and a bounded
lock wait is the server's answer, not a hang.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import faulthandler
import json
import os
import random
import re
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from replication.gcs.interface import MemberId
from replication.gcs.xcom import frames as fr
from replication.gcs.xcom import messages as gm
from replication.gcs.xcom.core import Bootstrap, Broadcast, Core, CoreConfig, Phase, Received, Tick
from replication.gcs.xcom.transport import TransportConfig
from replication.protocol.errors import MalformedPacket
from replication.protocol.handshake import parse_change_user, parse_handshake_response
from replication.protocol.packets import parse_server_handshake, scramble_native

from . import fuzz_inputs as fi

ROOT = Path(__file__).resolve().parents[2]

# A connection must answer or close within this. Above the servers' own login bound
# (frontend.connect_timeout_s, 10 s) and the group port's handshake_timeout_ms (5 s): a server
# waiting for the rest of a login may legitimately wait that long, then close.
HANG_BOUND_S: Final = 15.0
PURE_BOUND_S: Final = 2.0  # one in-process decode must return within this
SESSION_LOCK_WAIT_S: Final = 2  # lock waits of fuzz sessions (see the module docstring)
SERVE_CHECK_EVERY: Final = 400  # socket inputs between two serving checks
SERVE_CHECK_TIMEOUT_S: Final = 20.0  # a write through the router reaches every member within this
SOCKET_CONCURRENCY: Final = 6  # fuzz connections open at once against one process
GROUP_CONCURRENCY: Final = 2  # at once against a group port (each may stand in for a member's name)
SANDBOX_READY_TIMEOUT_S: Final = 180.0
SANDBOX_STOP_GRACE_S: Final = 20.0
FINDINGS_KEPT_MAX: Final = 50  # findings kept per kind (all are counted)
WEDGE_TIMEOUT_S: Final = 4 * 3600  # the CLI's last resort: a run still going then dumps stacks and exits

WEIGHTS: Final = {  # share of the inputs per target: most where an input costs microseconds
    "login": 0.34, "frames": 0.24, "messages": 0.16, "core": 0.10,
    "frontend": 0.08, "router": 0.04, "member": 0.025, "group": 0.015,
}
SANDBOX_TARGETS: Final = ("frontend", "router", "member", "group")
USER: Final = "root"  # the sandbox's account (no password, admin)
GROUP_NAME: Final = "grproxy-sandbox"


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(slots=True)
class Finding:
    kind: str  # crash, hang, non-member-delivery, serving, inconsistent
    target: str
    index: int  # -1: not tied to one input
    detail: str
    data: str = ""  # the input, hex (shortened)

    def __str__(self) -> str:
        where = f"{self.target}:{self.index}" if self.index >= 0 else self.target
        return f"[{self.kind}] {where}: {self.detail}" + (f"\n    input: {self.data}" if self.data else "")


@dataclasses.dataclass(slots=True)
class Report:
    seed: int
    inputs: dict[str, int] = dataclasses.field(default_factory=dict)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # findings by kind
    findings: list[Finding] = dataclasses.field(default_factory=list)
    stats: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # per target: outcome → count
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, kind: str, target: str, index: int, detail: str, data: bytes = b"") -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if sum(1 for f in self.findings if f.kind == kind) < FINDINGS_KEPT_MAX:
            hexed = data[:256].hex() + ("…" if len(data) > 256 else "")
            self.findings.append(Finding(kind, target, index, detail[:2000], hexed))

    def note(self, target: str, outcome: str) -> None:
        s = self.stats.setdefault(target, {})
        s[outcome] = s.get(outcome, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.inputs.values())

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def summary(self) -> str:
        per = ", ".join(f"{t}={n}" for t, n in self.inputs.items())
        return (f"fuzz: seed={self.seed} inputs={self.total} crashes={self.count('crash')} hangs={self.count('hang')} "
                f"non_member_deliveries={self.count('non-member-delivery')} serving_failures={self.count('serving')} "
                f"inconsistent={self.count('inconsistent')} ({per})")

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "inputs": self.inputs, "counts": self.counts, "stats": self.stats,
                "seconds": self.seconds, "findings": [dataclasses.asdict(f) for f in self.findings]}


def input_rng(seed: int, target: str, index: int) -> random.Random:
    """The generator of one input: replayable alone."""
    return random.Random(f"{seed}/{target}/{index}")


def split_counts(total: int, targets: Sequence[str]) -> dict[str, int]:
    weights = {t: WEIGHTS[t] for t in targets}
    scale = sum(weights.values())
    counts = {t: int(total * w / scale) for t, w in weights.items()}
    counts[targets[0]] += total - sum(counts.values())
    return counts


class PureHang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise PureHang in the main thread if the block runs longer than `seconds` (SIGALRM)."""
    def fire(signum: int, frame: object) -> None:
        raise PureHang(f"did not return within {seconds}s")

    previous = signal.signal(signal.SIGALRM, fire)
    started = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)  # an outer timer (pytest-timeout) is put back
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, outer - (time.monotonic() - started)))


# --------------------------------------------------------------------------- pure targets


def fuzz_login(report: Report, seed: int, indexes: range) -> None:
    """HandshakeResponse41 and COM_CHANGE_USER parsers: a value or MalformedPacket, nothing else."""
    from replication.protocol.constants import Cap

    server_caps = int(fi.CLIENT_CAPS | Cap.SSL)
    with watchdog(PURE_BOUND_S * max(1, len(indexes) // 1000 + 1)):
        for i in indexes:
            rng = input_rng(seed, "login", i)
            if rng.random() < 0.6:
                data = fi.handshake_response(rng)
                if rng.random() < 0.8:
                    data = fi.mutate_bytes(rng, data)
                parse: Callable[[bytes, int], object] = parse_handshake_response
            else:
                data = fi.change_user_body(rng, capabilities=fi.login_capabilities(rng, valid=False))
                if rng.random() < 0.8:
                    data = fi.mutate_bytes(rng, data)
                parse = parse_change_user
            caps = server_caps if rng.random() < 0.8 else rng.getrandbits(32)
            try:
                parse(data, caps)
                report.note("login", "parsed")
            except MalformedPacket:
                report.note("login", "malformed")
            except PureHang:
                raise
            except Exception as exc:  # noqa: BLE001 - that is the finding
                report.add("crash", "login", i, f"{parse.__name__}: {_exc_text(exc)}", data)


def fuzz_frames(report: Report, seed: int, indexes: range) -> None:
    """FrameDecoder (+ Reassembler): frames or FramingError; a split stream gives the same frames."""
    limits = fr.FrameLimits(TransportConfig(group_name="g").message_bytes_max)
    members = _synthetic_nodes()
    pool = [_member_of(n) for n in members]
    with watchdog(PURE_BOUND_S * max(1, len(indexes) // 500 + 1)):
        for i in indexes:
            rng = input_rng(seed, "frames", i)
            sender = rng.choice(fi.node_pool(rng, members))
            r = rng.random()
            if r < 0.1:
                data = rng.randbytes(rng.randint(0, 200))
            elif r < 0.25:
                data = fi.control_frame(rng, members + [sender], GROUP_NAME)
                if rng.random() < 0.6:
                    data = fi.damage_frame(rng, data)
            else:
                data = fi.frames(rng, pool, members, GROUP_NAME, target=pool[0], sender=_member_of(sender))
            try:
                whole, broken_whole = _decode(data, fr.FrameDecoder(limits), [len(data)])
                cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6)))) if len(data) > 1 else []
                split, broken_split = _decode(data, fr.FrameDecoder(limits), cuts + [len(data)])
                reassembler: fr.Reassembler[str] = fr.Reassembler(64 * 1024 * 1024)
                for frame in whole:
                    if isinstance(frame, fr.Fragment):
                        reassembler.add("peer", frame)
            except PureHang:
                raise
            except Exception as exc:  # noqa: BLE001
                report.add("crash", "frames", i, _exc_text(exc), data)
                continue
            if whole != split or broken_whole != broken_split:
                report.add("inconsistent", "frames", i,
                           f"split at {cuts}: {len(split)} frames (broken {broken_split}) vs {len(whole)} "
                           f"(broken {broken_whole})", data)
            report.note("frames", "broken" if broken_whole else "decoded")


def _decode(data: bytes, decoder: fr.FrameDecoder, cuts: list[int]) -> tuple[list[fr.Frame], bool]:
    out: list[fr.Frame] = []
    pos = 0
    for cut in cuts:
        try:
            out += decoder.feed(data[pos:cut])
        except fr.FramingError as exc:
            return out + exc.frames, True
        pos = cut
    return out, False


def fuzz_messages(report: Report, seed: int, indexes: range) -> None:
    """decode_message: a Message or MessageDecodeError; a decoded message encodes to the same bytes."""
    members = [_member_of(n) for n in _synthetic_nodes()]
    stranger = MemberId("fuzz-stranger", "127.0.0.1:9", 3)
    pool = members + [stranger]
    with watchdog(PURE_BOUND_S * max(1, len(indexes) // 500 + 1)):
        for i in indexes:
            rng = input_rng(seed, "messages", i)
            data = fi.message_bytes(rng, pool, target=members[0], sender=stranger) if rng.random() < 0.9 \
                else rng.randbytes(rng.randint(0, 64))
            try:
                msg = gm.decode_message(data)
            except gm.MessageDecodeError:
                report.note("messages", "refused")
                continue
            except PureHang:
                raise
            except Exception as exc:  # noqa: BLE001
                report.add("crash", "messages", i, f"decode_message: {_exc_text(exc)}", data)
                continue
            try:
                again = gm.encode_message(msg)
            except Exception as exc:  # noqa: BLE001 - a decoded message a member cannot relay
                report.add("crash", "messages", i, f"encode_message of a decoded {type(msg).__name__}: "
                           f"{_exc_text(exc)}", data)
                continue
            if again != data:
                report.add("inconsistent", "messages", i, f"{type(msg).__name__} re-encodes differently", data)
            report.note("messages", "decoded")


def _synthetic_nodes() -> list[fr.NodeId]:
    return [fr.NodeId(f"member-{k}", f"127.0.0.1:{33060 + k}", 1_000_000 + k) for k in (1, 2, 3)]


def _member_of(node: fr.NodeId) -> MemberId:
    return MemberId(node.name, node.address, node.incarnation % 2**32 or 1)


def _exc_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = "; ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in tb[-4:])
    return f"{type(exc).__name__}: {exc} (at {where})"


# --------------------------------------------------------------------------- core target


class CoreGroup:
    """Three consensus cores bootstrapped together, stepped in process with a FIFO network.

    Fuzz messages come from non-members; replies to them are dropped. `check()` says what a
    non-member changed: deliveries of fuzzer payloads, members leaving the MEMBER phase, views
    other than the bootstrap one."""

    STEP_MS: Final = 20
    ROUNDS_MAX: Final = 400  # rounds a legit broadcast may take to be delivered everywhere

    def __init__(self) -> None:
        self.members = tuple(_member_of(n) for n in _synthetic_nodes())
        config = CoreConfig()
        self.cores = {mid: Core(mid, config) for mid in self.members}
        self.now_ms = 0
        self.queue: deque[tuple[MemberId, MemberId, gm.Message]] = deque()
        self.delivered: dict[MemberId, list[tuple[MemberId, bytes]]] = {mid: [] for mid in self.members}
        self.views: dict[MemberId, list[tuple[MemberId, ...]]] = {mid: [] for mid in self.members}
        self.errors: list[str] = []
        self._legit = 0
        for mid in self.members:
            self.step(mid, Bootstrap(self.members))
        self.settle(50)
        if not self.whole():
            raise RuntimeError(f"the core group did not form: {[c.phase for c in self.cores.values()]}")

    def step(self, mid: MemberId, event: object) -> None:
        ready = self.cores[mid].step(event)  # type: ignore[arg-type]
        for dest, msg in ready.sends:
            if dest in self.cores and dest != mid:
                self.queue.append((dest, mid, msg))
            elif dest == mid:
                self.queue.append((mid, mid, msg))
        for d in ready.deliveries:
            self.delivered[mid].append((d.origin, d.payload))
        for v in ready.views:
            self.views[mid].append(v.members)
        for e in ready.errors:
            if e.code.name in ("INTERNAL", "EXPELLED"):
                self.errors.append(f"{mid.uuid}: {e.code.name}: {e.detail}")

    def settle(self, rounds: int) -> None:
        for _ in range(rounds):
            self.now_ms += self.STEP_MS
            for mid in self.members:
                self.step(mid, Tick(self.now_ms))
            for _ in range(len(self.queue)):
                dest, src, msg = self.queue.popleft()
                self.step(dest, Received(src, msg))

    def whole(self) -> bool:
        for core in self.cores.values():
            view = core.current_view()
            if core.phase is not Phase.MEMBER or view is None or tuple(view.members) != self.members:
                return False
            known = core.known_views()  # scheduled configurations too: a change shows at once
            if len(known) != 1 or tuple(known[0].members) != self.members or core.pending_reconfigs() \
                    or core.forced is not None:
                return False
        return True

    def describe(self) -> str:
        def who(members: Sequence[MemberId]) -> str:
            return ",".join(f"{x.uuid}#{x.incarnation}" for x in members)

        parts = []
        for mid, c in self.cores.items():
            views = " ".join(f"{v.view_id}[{who(v.members)}]" for v in c.known_views())
            parts.append(f"{mid.uuid}: {c.phase.value} views {views} pending {len(c.pending_reconfigs())}"
                         f"{' forced' if c.forced is not None else ''}")
        return "; ".join(parts + self.errors)

    def broadcast_everywhere(self, rng: random.Random) -> bool:
        """A legit broadcast from a random member is delivered on every member (bounded)."""
        self._legit += 1
        payload = b"legit:%d" % self._legit
        origin = rng.choice(self.members)
        self.step(origin, Broadcast(payload))
        for _ in range(self.ROUNDS_MAX):
            self.settle(1)
            if all(any(p == payload for _, p in self.delivered[mid][-50:]) for mid in self.members):
                return True
        return False


def fuzz_core(report: Report, seed: int, indexes: range) -> None:
    group = CoreGroup()
    members = _synthetic_nodes()
    checked = {mid: 0 for mid in group.members}
    for n, i in enumerate(indexes):
        rng = input_rng(seed, "core", i)
        sender = _member_of(rng.choice(fi.node_pool(rng, members)))
        target = rng.choice(group.members)
        pool = list(group.members) + [sender, MemberId("fuzz-other", "127.0.0.1:7", 5)]
        body = fi.message_bytes(rng, pool, target=target, sender=sender)
        try:
            msg = gm.decode_message(body)
        except gm.MessageDecodeError:
            report.note("core", "undecodable")
            continue
        try:
            with watchdog(PURE_BOUND_S):
                group.step(target, Received(sender, msg))
                group.settle(rng.choice([0, 1, 1, 3]))
        except PureHang as exc:
            report.add("hang", "core", i, f"{type(msg).__name__} from {sender}: {exc}", body)
            group = CoreGroup()
            checked = {mid: 0 for mid in group.members}
            continue
        except Exception as exc:  # noqa: BLE001
            report.add("crash", "core", i, f"{type(msg).__name__} from {sender}: {_exc_text(exc)}", body)
            group = CoreGroup()
            checked = {mid: 0 for mid in group.members}
            continue
        report.note("core", type(msg).__name__)
        problems = []
        for mid in group.members:
            for origin, payload in group.delivered[mid][checked[mid]:]:
                if payload.startswith(fi.FUZZ_PAYLOAD_TAG) or origin not in group.members:
                    problems.append(f"{mid.uuid} delivered {payload[:24]!r} from {origin}")
            checked[mid] = len(group.delivered[mid])
        if not group.whole() or group.errors:
            problems.append("the group changed: " + group.describe())
        if not problems and n % 50 == 49 and not group.broadcast_everywhere(rng):
            problems.append("a member's broadcast was not delivered everywhere after the input")
        if problems:
            report.add("non-member-delivery", "core", i, f"{type(msg).__name__} from {sender} to {target.uuid}: "
                       + " | ".join(problems), body)
            group = CoreGroup()
            checked = {mid: 0 for mid in group.members}
    orders = {tuple(p for _, p in group.delivered[mid]) for mid in group.members}
    shortest = min(len(o) for o in orders)
    if len({o[:shortest] for o in orders}) != 1:
        report.add("non-member-delivery", "core", -1, "members delivered in different orders")


# --------------------------------------------------------------------------- MySQL driver


class Hang(Exception):
    pass


class Link:
    """A byte pipe to a server: `buf` holds what it sent, `closed` once it closed."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.closed = False
        self.changed = asyncio.Event()
        self.crash: str | None = None  # in process: an exception out of the server's code

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def eof(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    async def wait(self, deadline: float) -> None:
        """Until the server sends something or closes; Hang at `deadline` (loop time)."""
        self.changed.clear()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise Hang("deadline passed")
        try:
            await asyncio.wait_for(self.changed.wait(), remaining)
        except TimeoutError:
            raise Hang(f"no answer and no close within {HANG_BOUND_S}s") from None


class SocketLink(Link):
    def __init__(self) -> None:
        super().__init__()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self, host: str, port: int) -> None:
        self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(host, port), HANG_BOUND_S)
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                self.buf += data
                self.changed.set()
        except (ConnectionError, OSError):
            pass
        self.closed = True
        self.changed.set()

    async def send(self, data: bytes) -> None:
        assert self._writer is not None
        if self.closed or self._writer.is_closing():
            return
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), HANG_BOUND_S)
        except (ConnectionError, OSError):
            pass
        except TimeoutError:
            raise Hang("the server stopped reading") from None

    async def eof(self) -> None:
        assert self._writer is not None
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if not self._writer.is_closing() and self._writer.can_write_eof():
                self._writer.write_eof()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()


class _Wire(asyncio.Transport):
    """The in-memory transport an in-process ClientConnection writes to (see InProcessLink)."""

    def __init__(self, link: "InProcessLink") -> None:
        super().__init__()
        self.link = link
        self.protocol: asyncio.Protocol | None = None
        self._closing = False
        self._paused = False
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self.link.buf += data
            self.link.changed.set()

    def writelines(self, items: Any) -> None:
        for item in items:
            self.write(item)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.link.closed = True
        self.link.changed.set()
        asyncio.get_running_loop().call_soon(self._lost)

    def _lost(self) -> None:
        assert self.protocol is not None
        try:
            self.protocol.connection_lost(None)
        except Exception as exc:  # noqa: BLE001
            self.link.crash = f"connection_lost: {_exc_text(exc)}"

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        if self._pending:
            asyncio.get_running_loop().call_soon(self._flush)

    def is_reading(self) -> bool:
        return not self._paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def can_write_eof(self) -> bool:
        return False

    def feed(self, data: bytes) -> None:
        if self._closing:
            return
        if self._paused or self._pending:
            self._pending.append(data)
            return
        self._deliver(data)

    def _flush(self) -> None:
        while self._pending and not self._paused and not self._closing:
            self._deliver(self._pending.pop(0))

    def _deliver(self, data: bytes) -> None:
        assert self.protocol is not None
        try:
            self.protocol.data_received(data)
        except Exception as exc:  # noqa: BLE001 - asyncio would log it and drop the connection
            self.link.crash = f"data_received: {_exc_text(exc)}"
            self.close()


class InProcessLink(Link):
    """A grproxy ClientConnection of an in-process FrontendServer, on a _Wire."""

    def __init__(self, server: Any) -> None:
        from grproxy.frontend import ClientConnection

        super().__init__()
        self.wire = _Wire(self)
        self.protocol = ClientConnection(server)
        self.wire.protocol = self.protocol
        self.protocol.connection_made(self.wire)

    async def send(self, data: bytes) -> None:
        self.wire.feed(data)
        await asyncio.sleep(0)

    async def eof(self) -> None:
        if self.wire.is_closing():
            return
        if not self.protocol.eof_received():
            self.wire.close()

    def abort(self) -> None:
        self.wire.close()


class MysqlClient:
    """The fuzzer's side of one MySQL connection over a Link (TLS with memory BIOs)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.plain = bytearray()  # what the server sent, decrypted
        self.pos = 0  # next unread packet in `plain`
        self._raw_seen = 0
        self._tls: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()

    def _pull(self) -> None:
        raw = self.link.buf
        new = bytes(raw[self._raw_seen:])
        self._raw_seen = len(raw)
        if self._tls is None:
            self.plain += new
            return
        if new:
            self._in.write(new)
        while True:
            try:
                chunk = self._tls.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLError):
                return
            if not chunk:
                return
            self.plain += chunk

    async def send(self, data: bytes) -> None:
        if self._tls is None:
            await self.link.send(data)
            return
        self._tls.write(data)
        await self.link.send(self._out.read())

    async def packet(self, deadline: float) -> tuple[int, bytes] | None:
        """The next packet the server sent, None if it closed first; Hang at `deadline`."""
        while True:
            self._pull()
            p = self.pos
            if len(self.plain) - p >= 4:
                n = int.from_bytes(self.plain[p:p + 3], "little")
                if len(self.plain) - p - 4 >= n:
                    self.pos = p + 4 + n
                    return self.plain[p + 3], bytes(self.plain[p + 4:p + 4 + n])
            if self.link.closed:
                return None
            await self.link.wait(deadline)

    async def answered(self, token: bytes, since: int, deadline: float) -> None:
        """Until the server answered the sentinel (token or an ERR after `since`) or closed."""
        while True:
            self._pull()
            if token in self.plain[since:] or self.link.closed:
                return
            if _has_err_packet(self.plain, since):
                return
            await self.link.wait(deadline)

    async def start_tls(self, deadline: float) -> bool:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self._tls = ctx.wrap_bio(self._in, self._out, server_side=False)
        self._raw_seen = len(self.link.buf)
        while True:
            try:
                self._tls.do_handshake()
                await self.link.send(self._out.read())
                return True
            except ssl.SSLWantReadError:
                await self.link.send(self._out.read())
            except ssl.SSLError:
                return False
            if len(self.link.buf) == self._raw_seen:
                if self.link.closed:
                    return False
                await self.link.wait(deadline)
            new = bytes(self.link.buf[self._raw_seen:])
            self._raw_seen = len(self.link.buf)
            self._in.write(new)

    async def finish(self, deadline: float) -> None:
        """EOF from us; the server must close."""
        await self.link.eof()
        while not self.link.closed:
            await self.link.wait(deadline)


def _is_ssl_request(stream: bytes) -> bool:
    """Whether the first packet of `stream` is a TLS request (32 bytes, CLIENT_SSL set)."""
    return len(stream) >= 36 and int.from_bytes(stream[:3], "little") == 32 and bool(stream[5] & 0x08)


def _has_err_packet(plain: bytearray, since: int) -> bool:
    pos = 0
    while pos + 4 <= len(plain):
        n = int.from_bytes(plain[pos:pos + 3], "little")
        if pos >= since and pos + 4 < len(plain) and plain[pos + 4] == 0xFF:
            return True
        pos += 4 + n
    return False


class Connections:
    """Which input a server-side connection id belongs to (its greeting says the id), so that a
    problem the server logs with `conn_id` is tied to the input that caused it. Bounded: the
    last CONNECTIONS_KEPT_MAX connections."""

    CONNECTIONS_KEPT_MAX: Final = 20_000

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[int, bytearray]] = {}

    def add(self, conn_id: int, index: int, sent: bytearray) -> None:
        if len(self._by_id) >= self.CONNECTIONS_KEPT_MAX:
            del self._by_id[next(iter(self._by_id))]
        self._by_id[conn_id] = (index, sent)

    def get(self, conn_id: int) -> tuple[int, bytes] | None:
        got = self._by_id.get(conn_id)
        return None if got is None else (got[0], bytes(got[1]))


@dataclasses.dataclass(slots=True)
class MysqlTarget:
    """Where MySQL inputs go: `open()` gives a fresh Link. `tls`: the server offers TLS."""

    name: str
    open: Callable[[], Awaitable[Link]]
    tls: bool = False
    user: str = USER
    connections: Connections = dataclasses.field(default_factory=Connections)


async def mysql_case(target: MysqlTarget, rng: random.Random, index: int = -1) -> tuple[str, bytes]:
    """Run one MySQL input; returns (outcome, bytes sent). Raises Hang."""
    loop = asyncio.get_running_loop()
    deadline = lambda: loop.time() + HANG_BOUND_S  # noqa: E731 - each wait gets the whole bound
    link = await target.open()
    client = MysqlClient(link)
    sent = bytearray()

    async def send(data: bytes) -> None:
        sent.extend(data)
        await client.send(data)

    try:
        r = rng.random()
        if r < 0.08:  # garbage before the greeting was even read
            await send(rng.randbytes(rng.randint(0, 300)) if rng.random() < 0.5
                       else fi.mutate_bytes(rng, fi.frame_packet(fi.handshake_response(rng), 1)))
            await client.finish(deadline())
            return "garbage", bytes(sent)
        greeting = await client.packet(deadline())
        if greeting is None:
            return "closed-before-greeting", bytes(sent)
        hs = parse_server_handshake(greeting[1])
        target.connections.add(hs.connection_id, index, sent)
        seq = 1
        if target.tls and rng.random() < 0.25:
            await send(fi.frame_packet(fi.ssl_request(rng), seq))
            if rng.random() < 0.15:  # TLS asked, then no TLS
                await send(rng.randbytes(rng.randint(1, 200)))
                await client.finish(deadline())
                return "tls-garbage", bytes(sent)
            if not await client.start_tls(deadline()):
                await client.finish(deadline())
                return "tls-failed", bytes(sent)
            seq += 1
        elif rng.random() < 0.03:  # a TLS request where TLS is not offered (or as a second one)
            await send(fi.frame_packet(fi.ssl_request(rng), seq))
            await client.finish(deadline())
            return "tls-refused", bytes(sent)
        spec = fi.login(rng, user=target.user, valid=rng.random() < 0.75)
        login_payload = spec.payload(lambda n: scramble_native("", n), hs.auth_data)
        mutated_login = rng.random() < 0.3
        if mutated_login:
            stream = fi.mutate_stream(rng, [login_payload], first_seq=seq)
            if rng.random() < 0.1:
                stream = fi.Stream(stream.data + fi.frame_packet(fi.ssl_request(rng), seq + 1), False, ())
            await send(stream.data)
            if not stream.in_sync:
                await client.finish(deadline())
                return "login-out-of-sync", bytes(sent)
            if target.tls and _is_ssl_request(stream.data):  # damage made it a TLS request: it waits for TLS
                await client.finish(deadline())
                return "login-became-tls-request", bytes(sent)
        else:
            await send(fi.frame_packet(login_payload, seq))
        reply = await client.packet(deadline())
        if reply is not None and reply[1][:1] == b"\xfe" and len(reply[1]) > 1:  # auth switch
            nonce = reply[1].split(b"\x00", 2)[1] if reply[1].count(b"\x00") >= 2 else b""
            answer = scramble_native("", nonce) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 40))
            await send(fi.frame_packet(answer, reply[0] + 1))
            reply = await client.packet(deadline())
        if reply is None or reply[1][:1] != b"\x00":
            await client.finish(deadline())
            return "login-refused", bytes(sent)
        if mutated_login or not spec.password_ok or spec.user != target.user:
            outcome = "odd-login-accepted"
        else:
            outcome = "commands"
        # bounded lock waits (see the module docstring); not an input
        await client.send(fi.frame_packet(b"\x03SET SESSION innodb_lock_wait_timeout = %d, lock_wait_timeout = %d"
                                          % (SESSION_LOCK_WAIT_S, SESSION_LOCK_WAIT_S), 0))
        if await client.packet(deadline()) is None:
            return "closed-after-login", bytes(sent)
        stream = fi.mutate_stream(rng, fi.commands(rng, user=target.user))
        await send(stream.data)
        if stream.in_sync:
            token = b"fz%012x" % rng.getrandbits(48)
            since = len(client.plain)
            await client.send(fi.frame_packet(b"\x03SELECT '" + token + b"'", 0))
            await client.answered(token, since, deadline())
        await client.finish(deadline())
        return outcome if stream.in_sync else "commands-out-of-sync", bytes(sent)
    except Hang as exc:
        exc.sent = bytes(sent)  # type: ignore[attr-defined]
        raise
    finally:
        link.abort()


# --------------------------------------------------------------------------- group driver


async def group_case(host: str, port: int, members: Sequence[fr.NodeId], me: fr.NodeId,
                     rng: random.Random) -> tuple[str, bytes]:
    """One input at a member's group port; returns (outcome, bytes sent). Raises Hang."""
    loop = asyncio.get_running_loop()
    deadline = lambda: loop.time() + HANG_BOUND_S  # noqa: E731
    link = SocketLink()
    await link.open(host, port)
    sent = bytearray()

    async def send(data: bytes) -> None:
        sent.extend(data)
        await link.send(data)

    async def closes() -> None:
        await link.eof()
        while not link.closed:
            await link.wait(deadline())

    try:
        nodes = fi.node_pool(rng, members)
        sender = rng.choice(nodes)
        pool = [_member_of(n) for n in members] + [_member_of(sender)]
        r = rng.random()
        if r < 0.1:
            await send(rng.randbytes(rng.randint(0, 300)) if rng.random() < 0.5 else
                       fi.frames(rng, pool, nodes, GROUP_NAME, target=_member_of(me), sender=_member_of(sender)))
            await closes()
            return "garbage", bytes(sent)
        hello = fi.hello(rng, GROUP_NAME, sender, me)
        if r < 0.3:
            # The damage may claim a longer body than sent: the listener then waits (up to its
            # handshake timeout) for the rest, so our EOF comes at once and it must close.
            await send(fi.damage_frame(rng, hello) if rng.random() < 0.7 else fi.mutate_bytes(rng, hello))
            await closes()
            return "hello-damaged", bytes(sent)
        await send(hello)
        while not link.closed and not _complete_frame(link.buf):
            await link.wait(deadline())
        answer = _first_frame(link.buf)
        if not isinstance(answer, fr.Welcome):
            await closes()
            return f"hello-{type(answer).__name__.lower()}", bytes(sent)
        data = fi.frames(rng, pool, nodes, GROUP_NAME, target=_member_of(me), sender=_member_of(sender),
                         count=rng.randint(1, 8))
        for i in range(0, len(data), max(1, len(data) // rng.randint(1, 3))):
            await send(data[i:i + max(1, len(data) // 3 + 1)])
        await closes()
        return "frames", bytes(sent)
    except Hang as exc:
        exc.sent = bytes(sent)  # type: ignore[attr-defined]
        raise
    finally:
        link.abort()


def _complete_frame(buf: bytearray) -> bool:
    return len(buf) >= fr.HEADER_LEN and len(buf) >= fr.HEADER_LEN + struct.unpack_from("!I", buf, 6)[0]


def _first_frame(buf: bytearray) -> object:
    try:
        got = fr.FrameDecoder().feed(bytes(buf))
    except fr.FramingError:
        return None
    return got[0] if got else None


async def member_identities(addresses: Sequence[tuple[str, int]]) -> list[fr.NodeId]:
    """Every member's identity, as its WELCOME states it to a (non-member) dialer."""
    out = []
    for host, port in addresses:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            stranger = fr.NodeId(f"fuzz-probe-{os.getpid()}", "127.0.0.1:9", 1)
            writer.write(fr.encode_control(fr.Hello(GROUP_NAME, 1, 1, stranger, fr.NodeId("", f"{host}:{port}", 0))))
            decoder = fr.FrameDecoder()
            while True:
                data = await asyncio.wait_for(reader.read(4096), HANG_BOUND_S)
                if not data:
                    raise RuntimeError(f"{host}:{port} closed during the handshake")
                got = decoder.feed(data)
                if got:
                    if not isinstance(got[0], fr.Welcome):
                        raise RuntimeError(f"{host}:{port} answered {got[0]!r}")
                    out.append(got[0].sender)
                    break
        finally:
            writer.close()
    return out


# --------------------------------------------------------------------------- sandbox


class Sandbox:
    """`python -m grproxy sandbox` (3 members, single-primary) in its own process group."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.status_file = base_dir / "status.json"
        self.log = base_dir / "sandbox.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.doc: dict[str, Any] = {}

    def start(self) -> None:
        from grproxy.mysqld import free_port

        if self.base_dir.exists():  # a previous run's sandbox: its backends belong to another group
            shutil.rmtree(self.base_dir)
        self.base_dir.mkdir(parents=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own arguments
                [sys.executable, "-m", "grproxy", "sandbox", "--members", "3", "--port", str(free_port()),
                 "--base-dir", str(self.base_dir / "sb"), "--status-file", str(self.status_file)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)

    def wait_ready(self, timeout_s: float = SANDBOX_READY_TIMEOUT_S) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if "grproxy sandbox ready" in text and self.status_file.exists():
                self.doc = json.loads(self.status_file.read_text())
                if self.doc.get("router"):
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"the sandbox exited ({self.process.returncode}):\n{text[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"the sandbox was not ready within {timeout_s:.0f}s")

    @property
    def router(self) -> tuple[str, int]:
        return self.doc["router"]["host"], int(self.doc["router"]["port"])

    @property
    def members(self) -> list[dict[str, Any]]:
        return list(self.doc["members"])

    def logs(self) -> list[Path]:
        return [self.log] + [self.base_dir / "sb" / m["id"] / "grproxy.log" for m in self.members]

    def dead(self) -> list[str]:
        out = []
        if self.process is None or self.process.poll() is not None:
            out.append("the sandbox (router) process exited")
        for m in self.members:
            for what, pid in (("member", m["pid"]), ("backend", m["backend"]["pid"])):
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    out.append(f"{m['id']}'s {what} process {pid} exited")
        return out

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=SANDBOX_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)


# What a sandbox process logs when something went wrong in it (a line per event).
_LOG_PROBLEM = re.compile(
    r'Traceback|"exception":|"level": "(?:error|critical)"|\[(?:error|critical)\s*\]|Exception in callback'
    r"|exception was never retrieved|undecodable group message|RuntimeWarning")
_CONN_ID = re.compile(r'conn_id"?[=:]\s*(\d+)')


class LogWatch:
    """New lines of the sandbox's logs that report a problem (from the offsets at creation)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.offsets = {p: (p.stat().st_size if p.exists() else 0) for p in paths}

    def problems(self) -> list[tuple[Path, str]]:
        out = []
        for path, offset in self.offsets.items():
            if not path.exists():
                continue
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            cut = data.rfind(b"\n") + 1  # whole lines only
            self.offsets[path] = offset + cut
            for line in data[:cut].decode(errors="replace").splitlines():
                if _LOG_PROBLEM.search(line):
                    out.append((path, line[:1500]))
        return out


def _sql(host: str, port: int, statements: Sequence[str], *, database: str | None = None) -> list[Any]:
    import pymysql

    conn = pymysql.connect(host=host, port=port, user=USER, password="", database=database, autocommit=True,
                           connect_timeout=HANG_BOUND_S, read_timeout=SERVE_CHECK_TIMEOUT_S,
                           write_timeout=HANG_BOUND_S)
    try:
        out = []
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
                out.append(cur.fetchall())
        return out
    finally:
        conn.close()


class ServingCheck:
    """A normal client's view of the sandbox: still served, and the group still orders writes."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.writes = 0

    def setup(self) -> None:
        host, port = self.sandbox.router
        rows = _sql(host, port, [
            "SET SESSION group_replication_consistency = 'BEFORE'",  # read what the DDL just made
            "CREATE DATABASE IF NOT EXISTS fuzzcheck",
            "CREATE TABLE IF NOT EXISTS fuzzcheck.t (id INT PRIMARY KEY, at VARCHAR(40))",
            "SELECT COALESCE(MAX(id), 0) FROM fuzzcheck.t"])
        self.writes = int(rows[-1][0][0])  # a sandbox fuzzed before goes on from its last check
        _sql(host, port, [
            "CREATE DATABASE IF NOT EXISTS fuzz", "CREATE DATABASE IF NOT EXISTS fuzzcheck",
            "CREATE TABLE IF NOT EXISTS fuzz.t (id INT PRIMARY KEY, v VARCHAR(255))",
            "CREATE TABLE IF NOT EXISTS fuzzcheck.t (id INT PRIMARY KEY, at VARCHAR(40))",
            "INSERT IGNORE INTO fuzz.t (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')"])

    def check(self) -> list[str]:
        problems = self.sandbox.dead()
        if problems:
            return problems
        self.writes += 1
        n = self.writes
        host, port = self.sandbox.router
        try:
            rows = _sql(host, port, ["SELECT 1", f"INSERT INTO fuzzcheck.t (id, at) VALUES ({n}, NOW(6))"])
            if rows[0] != ((1,),):
                problems.append(f"router: SELECT 1 answered {rows[0]!r}")
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            problems.append(f"router: {type(exc).__name__}: {exc}")
        for m in self.sandbox.members:
            deadline = time.monotonic() + SERVE_CHECK_TIMEOUT_S
            while True:
                try:
                    rows = _sql("127.0.0.1", int(m["member_port"]), [
                        "SELECT 1", f"SELECT COUNT(*) FROM fuzzcheck.t WHERE id = {n}",
                        "SELECT MEMBER_STATE FROM performance_schema.replication_group_members"])
                    states = sorted(r[0] for r in rows[2])
                    if rows[1] == ((1,),) and states == ["ONLINE"] * 3:
                        break
                    why = f"row {n} seen: {rows[1][0][0]}, members: {states}"
                except Exception as exc:  # noqa: BLE001
                    why = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    problems.append(f"{m['id']}: {why}")
                    break
                time.sleep(0.1)
        return problems

    def converged(self) -> list[str]:
        sums: dict[str, Any] = {}
        for m in self.sandbox.members:
            b = m["backend"]
            import pymysql

            try:
                conn = pymysql.connect(host=b["host"], port=int(b["port"]), user=b["user"], password=b["password"],
                                       autocommit=True, connect_timeout=HANG_BOUND_S)
            except pymysql.MySQLError as exc:  # the backend died: a finding, not the harness's end
                return [f"{m['id']}'s backend does not answer after the fuzzing: {exc}"]
            try:
                with conn.cursor() as cur:
                    cur.execute("CHECKSUM TABLE fuzz.t, fuzzcheck.t")
                    sums[m["id"]] = tuple(r[1] for r in cur.fetchall())
            finally:
                conn.close()
        if len(set(sums.values())) != 1:
            return [f"backends differ after the fuzzing: {sums}"]
        return []


# --------------------------------------------------------------------------- in-process router


class InProcessRouter:
    """grproxy's router (App with [router]) in this process over the sandbox's member ports,
    with TLS offered on its front end; logs are captured, not printed."""

    def __init__(self, sandbox: Sandbox, work: Path) -> None:
        self.sandbox = sandbox
        self.work = work
        self.app: Any = None
        self.logged: list[str] = []
        self._saved_structlog: dict[str, Any] | None = None

    def _capture(self, logger: object, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if method in ("error", "critical", "exception", "fatal") or "exception" in event_dict:
            self.logged.append(json.dumps(event_dict, default=str)[:3000])
        raise structlog.DropEvent

    async def start(self) -> None:
        from grproxy.app import App
        from grproxy.config import parse_config

        cert, key = _self_signed(self.work)
        self._saved_structlog = structlog.get_config()
        structlog.configure(processors=[structlog.processors.format_exc_info, self._capture],
                            cache_logger_on_first_use=False)
        config = parse_config({
            "frontend": {"host": "127.0.0.1", "port": 0, "tls_cert": str(cert), "tls_key": str(key)},
            "users": [{"name": USER, "password": "", "admin": True}],
            "router": {"members": [f"127.0.0.1:{m['member_port']}" for m in self.sandbox.members]},
        })
        self.app = App(config)
        await self.app.start()

    async def stop(self) -> None:
        try:
            if self.app is not None:
                await self.app.stop()
        finally:
            if self._saved_structlog is not None:
                structlog.configure(**self._saved_structlog)

    async def open(self) -> Link:
        return InProcessLink(self.app.frontend)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grproxy-fuzz")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "fuzz-cert.pem", directory / "fuzz-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# --------------------------------------------------------------------------- orchestration


async def _run_cases(report: Report, target: str, seed: int, indexes: range, concurrency: int,
                     case: Callable[[random.Random, int], Awaitable[tuple[str, bytes]]],
                     after_batch: Callable[[int], Awaitable[None]] | None = None) -> None:
    """Run `case` for every index, `concurrency` at a time, SERVE_CHECK_EVERY per batch with
    `after_batch` between batches. A Hang is a hang finding; an _InProcessCrash a crash; any
    other exception out of the fuzzer's side a crash of the fuzzer (with its input's index)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            rng = input_rng(seed, target, i)
            try:
                outcome, _ = await case(rng, i)
                report.note(target, outcome)
            except Hang as exc:
                report.add("hang", target, i, str(exc), getattr(exc, "sent", b""))
            except _InProcessCrash as exc:
                report.add("crash", target, i, str(exc), exc.sent)
            except Exception as exc:  # noqa: BLE001
                report.add("crash", target, i, f"fuzzer side: {_exc_text(exc)}")

    for start in range(indexes.start, indexes.stop, SERVE_CHECK_EVERY):
        if report.count("serving"):  # the sandbox no longer serves: what follows would say nothing
            report.note(target, "not-run-after-serving-failure")
            return
        await asyncio.gather(*(one(i) for i in range(start, min(indexes.stop, start + SERVE_CHECK_EVERY))))
        if after_batch is not None:
            await after_batch(start)


async def _sandbox_targets(report: Report, seed: int, counts: dict[str, int], sandbox: Sandbox,
                           work: Path, offsets: dict[str, int]) -> None:
    check = ServingCheck(sandbox)
    await asyncio.to_thread(check.setup)
    watch = LogWatch(sandbox.logs())
    inproc = InProcessRouter(sandbox, work)
    # Whose connection ids a log names: the router's log → router inputs, the first member's
    # log → member inputs (ids the router's own sessions use there are not ours), in process → frontend.
    by_log = {sandbox.log: MysqlTarget("router", _socket_opener(*sandbox.router)),
              sandbox.logs()[1]: MysqlTarget("member", _socket_opener("127.0.0.1",
                                                                       int(sandbox.members[0]["member_port"])))}
    frontend = MysqlTarget("frontend", inproc.open, tls=True)

    def attribute(target: str, line: str, where: MysqlTarget | None) -> None:
        m = _CONN_ID.search(line)
        got = where.connections.get(int(m.group(1))) if where is not None and m else None
        if got is not None:
            report.add("crash", where.name, got[0], f"logged: {line}", got[1])
        else:
            report.add("crash", target, -1, f"logged: {line}")

    def collect(target: str) -> None:
        for path, line in watch.problems():
            attribute(target, f"{path.parent.name}/{path.name}: {line}", by_log.get(path))
        for line in inproc.logged:
            attribute(target, f"in process: {line}", frontend)
        inproc.logged.clear()

    def after(target: str) -> Callable[[int], Awaitable[None]]:
        async def run(start: int) -> None:
            for problem in await asyncio.to_thread(check.check):
                report.add("serving", target, start, problem)
            collect(target)
        return run

    loop = asyncio.get_running_loop()
    unretrieved: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: unretrieved.append(
        f"{ctx.get('message')}: {ctx.get('exception')!r}"))

    if counts.get("frontend"):
        t0 = time.monotonic()
        await inproc.start()
        try:
            async def frontend_one(rng: random.Random, index: int) -> tuple[str, bytes]:
                links: list[InProcessLink] = []

                async def opener() -> Link:
                    link = await inproc.open()
                    links.append(link)  # type: ignore[arg-type]
                    return link

                case_target = dataclasses.replace(frontend, open=opener)
                outcome, sent = await mysql_case(case_target, rng, index)
                for link in links:
                    if link.crash:
                        raise _InProcessCrash(link.crash, sent)
                    mine = [e for e in inproc.logged if (m := _CONN_ID.search(e)) and int(m.group(1)) == link.protocol.conn_id]
                    if mine:
                        for e in mine:
                            inproc.logged.remove(e)
                        raise _InProcessCrash("logged in process: " + " | ".join(mine), sent)
                return outcome, sent

            await _run_cases(report, "frontend", seed, range(offsets["frontend"], offsets["frontend"] + counts["frontend"]),
                             SOCKET_CONCURRENCY, frontend_one, after("frontend"))
        finally:
            await inproc.stop()
        report.seconds["frontend"] = time.monotonic() - t0

    for mt in by_log.values():
        if not counts.get(mt.name):
            continue
        t0 = time.monotonic()
        await _run_cases(report, mt.name, seed, range(offsets[mt.name], offsets[mt.name] + counts[mt.name]),
                         SOCKET_CONCURRENCY, lambda rng, i, mt=mt: mysql_case(mt, rng, i), after(mt.name))
        report.seconds[mt.name] = time.monotonic() - t0

    if counts.get("group"):
        t0 = time.monotonic()
        addresses = [("127.0.0.1", int(m["group_port"])) for m in sandbox.members]
        identities = await member_identities(addresses)

        async def gcase(rng: random.Random, index: int) -> tuple[str, bytes]:
            k = rng.randrange(len(addresses))
            return await group_case(*addresses[k], identities, identities[k], rng)

        await _run_cases(report, "group", seed, range(offsets["group"], offsets["group"] + counts["group"]),
                         GROUP_CONCURRENCY, gcase, after("group"))
        report.seconds["group"] = time.monotonic() - t0

    for problem in unretrieved:
        report.add("crash", "sandbox", -1, f"in-process loop: {problem}")
    for problem in await asyncio.to_thread(check.check):
        report.add("serving", "end", -1, problem)
    for problem in await asyncio.to_thread(check.converged):
        report.add("serving", "end", -1, problem)
    collect("end")


def _socket_opener(host: str, port: int) -> Callable[[], Awaitable[Link]]:
    async def opener() -> Link:
        link = SocketLink()
        await link.open(host, port)
        return link
    return opener


class _InProcessCrash(Exception):
    def __init__(self, detail: str, sent: bytes) -> None:
        super().__init__(detail)
        self.sent = sent


def run(seed: int, total: int, work: Path, *, targets: Sequence[str] = tuple(WEIGHTS),
        log: Callable[[str], None] = print, sandbox: Sandbox | None = None,
        wedge_timeout_s: float | None = None) -> Report:
    """Fuzz `total` inputs split over `targets` (WEIGHTS). The targets that need a sandbox use
    `sandbox` (started, not stopped here) or one started here and stopped at the end. Returns
    the report; `log` gets the seed first and the summary line last."""
    report = Report(seed)
    counts = split_counts(total, list(targets))
    report.inputs = dict(counts)
    log(f"fuzz: seed={seed} inputs={total} ({', '.join(f'{t}={n}' for t, n in counts.items())})")
    if wedge_timeout_s is not None:  # a wedged run dies loudly, with every thread's stack
        faulthandler.dump_traceback_later(wedge_timeout_s, exit=True)
    own = sandbox is None and any(counts.get(t) for t in SANDBOX_TARGETS)
    try:
        if own:
            sandbox = Sandbox(work / "sandbox")
            sandbox.start()  # boots while the in-process targets run
        for name, fn in (("login", fuzz_login), ("frames", fuzz_frames), ("messages", fuzz_messages),
                         ("core", fuzz_core)):
            if counts.get(name):
                t0 = time.monotonic()
                fn(report, seed, range(counts[name]))
                report.seconds[name] = time.monotonic() - t0
        if sandbox is not None and any(counts.get(t) for t in SANDBOX_TARGETS):
            if own:
                sandbox.wait_ready()
            asyncio.run(_sandbox_targets(report, seed, counts, sandbox, work,
                                         {t: 0 for t in SANDBOX_TARGETS}))
    finally:
        if wedge_timeout_s is not None:
            faulthandler.cancel_dump_traceback_later()
        if own and sandbox is not None:
            sandbox.stop()
    for f in report.findings:
        log(str(f))
    log(report.summary())
    return report


def replay(seed: int, target: str, index: int, work: Path, log: Callable[[str], None] = print,
           count: int = 1) -> Report:
    """Run inputs index .. index+count-1 of `target` again (a sandbox is started for the
    targets that need one)."""
    report = Report(seed)
    report.inputs = {target: count}
    fn = {"login": fuzz_login, "frames": fuzz_frames, "messages": fuzz_messages, "core": fuzz_core}.get(target)
    if fn is not None:
        fn(report, seed, range(index, index + count))
    else:
        sandbox = Sandbox(work / "sandbox")
        sandbox.start()
        try:
            sandbox.wait_ready()
            counts = {t: (count if t == target else 0) for t in SANDBOX_TARGETS}
            offsets = {t: (index if t == target else 0) for t in SANDBOX_TARGETS}
            asyncio.run(_sandbox_targets(report, seed, counts, sandbox, work, offsets))
        finally:
            sandbox.stop()
    for f in report.findings:
        log(str(f))
    log(report.summary())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=int(os.environ.get("FUZZ_INPUTS", "1000000")),
                   help="how many inputs in all (default: $FUZZ_INPUTS or 1000000)")
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--targets", default=",".join(WEIGHTS), help=f"comma-separated subset of {','.join(WEIGHTS)}")
    p.add_argument("--replay", default="", help="TARGET:INDEX or TARGET:FIRST-LAST — run those inputs again")
    p.add_argument("--out", type=Path, default=None, help="where the report and the sandbox go (default: a temp dir)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    work = args.out or Path(tempfile.mkdtemp(prefix=f"grproxy-fuzz-{seed}-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.replay:
        target, _, where = args.replay.partition(":")
        first, _, last = where.partition("-")
        report = replay(seed, target, int(first), work, count=int(last) - int(first) + 1 if last else 1)
    else:
        targets = [t for t in args.targets.split(",") if t]
        unknown = [t for t in targets if t not in WEIGHTS]
        if unknown:
            p.error(f"unknown targets {unknown}")
        report = run(seed, args.inputs, work, targets=targets, wedge_timeout_s=WEDGE_TIMEOUT_S)
    (work / "fuzz-report.json").write_text(json.dumps(report.to_dict(), indent=2))
    print(f"fuzz: report in {work / 'fuzz-report.json'}")
    bad = report.count("crash") + report.count("hang") + report.count("non-member-delivery") + report.count("serving")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
