"""A stand-alone group member process, for tests and benchmarks over real TCP.

``python -m replication.gcs.xcom.node --name n1 --address 127.0.0.1:33061 --group g1 --bootstrap``

It prints one JSON object per line on stdout (``started``, ``view``, ``delivery``,
``gcs_event``, ``reachability``, ``reply``, ``stats``, ``load_done``) and reads one JSON command per
line on stdin::

    {"cmd": "broadcast", "payload": "text"}            -> reply {"seq": n}
    {"cmd": "burst", "count": 100, "prefix": "a", "pad": 0}
                                                       -> broadcasts a-0 .. a-99 (windowed)
    {"cmd": "load", "duration_ms": D, "size": S, "window": W}
                                                       -> load_done {msgs_per_s, p50_ms, p99_ms}
    {"cmd": "stats"}                                   -> stats (core, transport, delivery digest)
    {"cmd": "join", "seeds": ["127.0.0.1:33061"]}
    {"cmd": "leave"} | {"cmd": "exit"}

Logs go to stderr, so stdout stays machine-readable. The process runs on uvloop when it is
installed. A restarted process gets a new incarnation (see ``binding.new_incarnation``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import hashlib
import json
import logging
import os
import signal
import sys
import time
import zlib
from typing import Any

import structlog

from replication.gcs.interface import Delivery, GcsError, GcsEvent, MemberId, ReachabilityChange, View

from .allowlist import IpAllowlist
from .binding import BindingConfig, XcomGroup, new_incarnation
from .core import CoreConfig
from .tls import SslMode, TlsConfig
from .transport import TransportConfig

# Latency samples kept by one `load` command (bounded; the rest is counted only).
_LOAD_SAMPLES_MAX = 1_000_000


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _member(m: MemberId) -> str:
    return f"{m.uuid}#{m.incarnation}"


def _parse_overrides(cls: type, pairs: list[str]) -> dict[str, Any]:
    """``["member_expel_timeout_ms=1000", ...]`` -> typed kwargs for dataclass ``cls``."""
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"unknown {cls.__name__} setting {key!r}; known: {sorted(types)}")
        kind = str(types[key])
        value: Any
        if "bool" in kind:
            value = text.lower() in ("1", "true", "on", "yes")
        elif "int" in kind:
            value = int(text)
        elif "float" in kind:
            value = float(text)
        else:
            value = text
        out[key] = value
    return out


def _sample_bodies(size: int, variants: int = 64) -> list[bytes]:
    """Payloads that look like row images (text with repeats, as binlog rows: LZ4 gets ~2-4x),
    distinct per variant so a batch is not one repeated string."""
    words = [b"id=", b"name=", b"user", b"balance=", b"status=ACTIVE", b"ts=2025-01-0", b",", b"city=", b"Lisboa"]
    out = []
    for v in range(variants):
        rnd = hashlib.sha256(b"%d" % v).digest()
        parts: list[bytes] = []
        length = i = 0
        while length < size:
            word = words[rnd[i % 32] % len(words)]
            number = b"%d" % (rnd[(i * 7) % 32] * (v + 1) + i)
            parts += (word, number)
            length += len(word) + len(number)
            i += 1
        out.append(b"".join(parts)[:size])
    return out


class Node:
    """Glue between stdin/stdout and one :class:`XcomGroup`."""

    def __init__(self, group: XcomGroup, print_deliveries: bool) -> None:
        self.group = group
        self.print_deliveries = print_deliveries
        self.delivered = 0
        # A rolling CRC of the delivery sequence: cheap enough for 64 KiB payloads at full rate,
        # and two members with different sequences end with different values in practice.
        self.digest = 0
        self.views = 0
        self.done = asyncio.Event()
        group.add_delivery_listener(self.on_delivery)
        group.add_view_listener(self.on_view)
        group.add_event_listener(self.on_event)

    def on_delivery(self, d: Delivery) -> None:
        self.delivered += 1
        head = f"{_member(d.origin)}/{d.origin_seq}/{len(d.payload)}|".encode()
        self.digest = zlib.crc32(d.payload, zlib.crc32(head, self.digest))
        if self.print_deliveries:
            _emit(
                {
                    "event": "delivery",
                    "slot": d.position.slot,
                    "index": d.position.index,
                    "origin": _member(d.origin),
                    "seq": d.origin_seq,
                    "payload": d.payload.decode("utf-8", "backslashreplace"),
                }
            )

    def on_view(self, v: View) -> None:
        self.views += 1
        _emit(
            {
                "event": "view",
                "view_id": str(v.view_id),
                "members": [_member(m) for m in v.members],
                "joined": [_member(m) for m in v.joined],
                "left": [_member(m) for m in v.left],
                "delivered": self.delivered,
            }
        )

    def on_event(self, e: ReachabilityChange | GcsEvent) -> None:
        if isinstance(e, ReachabilityChange):
            _emit({"event": "reachability", "member": _member(e.member), "state": e.state.value})
        else:
            _emit({"event": "gcs_event", "code": e.code.value, "detail": e.detail})

    def stats(self) -> dict[str, Any]:
        s = self.group.statistics()
        t = self.group.transport_statistics()
        b = self.group.binding_statistics()
        return {
            "event": "stats",
            "delivered": self.delivered,
            "digest": f"{self.digest:08x}",
            "state": s.state.value,
            "view_id": str(s.view_id) if s.view_id else None,
            "counters": dataclasses.asdict(s.counters),
            "transport": t.as_dict(),
            "binding": {k: v for k, v in dataclasses.asdict(b).items() if k != "per_peer_invalid"},
        }

    async def burst(self, count: int, prefix: str, window: int, pad: int) -> None:
        """Broadcast ``<prefix>-<i>`` (plus ``pad`` filler bytes) for i < count, at most
        ``window`` undelivered at a time; reply with how many were delivered / failed."""
        filler = "." * pad
        pending: set[asyncio.Task[Delivery]] = set()
        failed = 0

        def reap(done: set[asyncio.Task[Delivery]]) -> None:
            nonlocal failed
            failed += sum(1 for t in done if t.exception() is not None)

        for i in range(count):
            while len(pending) >= window:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                reap(done)
            payload = f"{prefix}-{i}{'-' + filler if pad else ''}".encode()
            pending.add(asyncio.ensure_future(self.group.broadcast_and_wait(payload)))
        if pending:
            done, _ = await asyncio.wait(pending)
            reap(done)
        _emit({"event": "reply", "cmd": "burst", "count": count, "failed": failed})

    async def load(self, count: int, duration_ms: int, size: int, window: int, timeout_ms: int) -> None:
        """Broadcast ``size``-byte messages, at most ``window`` undelivered at a time, until
        ``count`` are sent or ``duration_ms`` has passed (whichever first; 0 = no limit).
        Latency is broadcast -> delivery on this member (perf_counter: the loop clock of uvloop
        has millisecond resolution). Stops early, counting the rest as failed, if nothing is
        delivered for ``timeout_ms``."""
        bodies = _sample_bodies(size)
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        room = asyncio.Event()
        me = self.group.me

        def on_delivery(d: Delivery) -> None:
            if d.origin == me:
                t0 = sent_at.pop(d.origin_seq, None)
                if t0 is not None:
                    if len(latencies) < _LOAD_SAMPLES_MAX:
                        latencies.append((time.perf_counter() - t0) * 1000)
                    room.set()

        self.group.add_delivery_listener(on_delivery)
        sent = failed = 0
        start = time.perf_counter()
        deadline = start + duration_ms / 1000 if duration_ms else float("inf")
        try:
            while (not count or sent < count) and time.perf_counter() < deadline:
                while len(sent_at) < window and (not count or sent < count):
                    try:
                        seq = self.group.broadcast(bodies[sent % len(bodies)])
                    except GcsError:
                        failed += 1
                        break
                    sent_at[seq] = time.perf_counter()
                    sent += 1
                room.clear()
                try:
                    async with asyncio.timeout(timeout_ms / 1000):
                        await room.wait()
                except TimeoutError:
                    break
            # let the last window drain (bounded)
            try:
                async with asyncio.timeout(timeout_ms / 1000):
                    while sent_at:
                        room.clear()
                        await room.wait()
            except TimeoutError:
                pass
        finally:
            self.group.remove_delivery_listener(on_delivery)
        failed += len(sent_at)
        elapsed = time.perf_counter() - start
        latencies.sort()

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else -1.0

        _emit(
            {
                "event": "load_done",
                "count": sent,
                "failed": failed,
                "elapsed_s": elapsed,
                "msgs_per_s": (sent - failed) / elapsed if elapsed else 0,
                "p50_ms": pct(0.50),
                "p99_ms": pct(0.99),
                "max_ms": latencies[-1] if latencies else -1.0,
            }
        )

    async def command(self, cmd: dict[str, Any]) -> None:
        name = cmd.get("cmd")
        try:
            if name == "broadcast":
                seq = self.group.broadcast(str(cmd["payload"]).encode())
                _emit({"event": "reply", "cmd": name, "seq": seq})
            elif name == "burst":
                await self.burst(
                    int(cmd["count"]), str(cmd.get("prefix", "m")), int(cmd.get("window", 64)), int(cmd.get("pad", 0))
                )
            elif name == "load":
                await self.load(
                    int(cmd.get("count", 0)),
                    int(cmd.get("duration_ms", 0)),
                    int(cmd["size"]),
                    int(cmd.get("window", 64)),
                    int(cmd.get("timeout_ms", 30_000)),
                )
            elif name == "stats":
                _emit(self.stats())
            elif name == "join":
                seeds = tuple(MemberId(f"seed@{a}", a, 0) for a in cmd["seeds"])
                self.group.join(seeds)
                _emit({"event": "reply", "cmd": name})
            elif name == "leave":
                self.group.leave()
                _emit({"event": "reply", "cmd": name})
            elif name == "exit":
                self.done.set()
            else:
                _emit({"event": "error", "cmd": name, "detail": "unknown command"})
        except (GcsError, KeyError, ValueError, TimeoutError) as exc:
            _emit({"event": "error", "cmd": name, "detail": repr(exc)})

    async def read_commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        tasks: set[asyncio.Task[None]] = set()
        while not self.done.is_set():
            line = await reader.readline()
            if not line:
                break
            try:
                cmd = json.loads(line)
            except json.JSONDecodeError:
                _emit({"event": "error", "detail": "bad json"})
                continue
            # commands run concurrently (a long load must not block stats)
            task = loop.create_task(self.command(cmd))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        self.done.set()


def _configure_logging(level: str) -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m replication.gcs.xcom.node", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="member uuid/name")
    p.add_argument("--address", required=True, help="group address host:port to listen on")
    p.add_argument("--group", required=True, help="group name (checked in the handshake)")
    p.add_argument("--incarnation", type=int, default=None, help="default: from the clock")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--bootstrap", action="store_true", help="start a new group of this member")
    mode.add_argument("--join", default=None, help="comma-separated seed addresses")
    p.add_argument("--compression-threshold", type=int, default=1_000_000)
    p.add_argument("--max-message-size", type=int, default=10_485_760)
    p.add_argument("--ip-allowlist", default="AUTOMATIC")
    p.add_argument("--ssl-mode", default="DISABLED")
    p.add_argument("--ssl-ca")
    p.add_argument("--ssl-cert")
    p.add_argument("--ssl-key")
    p.add_argument("--core", action="append", default=[], metavar="KEY=VALUE", help="CoreConfig override")
    p.add_argument("--quiet", action="store_true", help="do not print each delivery")
    p.add_argument("--log-level", default="info")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--profile", metavar="FILE", help="write a cProfile of the run to FILE")
    return p


async def amain(args: argparse.Namespace) -> int:
    incarnation = args.incarnation if args.incarnation is not None else new_incarnation()
    me = MemberId(args.name, args.address, incarnation)
    core_config = CoreConfig(**_parse_overrides(CoreConfig, args.core))
    tls = TlsConfig(SslMode.parse(args.ssl_mode), args.ssl_ca, args.ssl_cert, args.ssl_key)
    transport_config = TransportConfig(
        group_name=args.group,
        compression_threshold=args.compression_threshold,
        communication_max_message_size=args.max_message_size,
        ip_allowlist=IpAllowlist.parse(args.ip_allowlist),
        tls=tls,
    )
    group = XcomGroup(me, core_config, transport_config, BindingConfig())
    node = Node(group, print_deliveries=not args.quiet)
    await group.start()
    _emit({"event": "started", "member": _member(me), "address": me.address, "pid": os.getpid(), "time": time.time()})
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.done.set)
    if args.bootstrap:
        group.bootstrap((me,))
    elif args.join:
        group.join(tuple(MemberId(f"seed@{a}", a, 0) for a in args.join.split(",")))
    reader = loop.create_task(node.read_commands())
    try:
        await node.done.wait()
    finally:
        reader.cancel()
        await group.close()
    _emit({"event": "exited"})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        try:
            return profiler.runcall(_run, args)
        finally:
            profiler.dump_stats(args.profile)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    if not args.no_uvloop:
        try:
            import uvloop

            return uvloop.run(amain(args))
        except ImportError:
            pass
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
