"""Scripted scenarios for the xcom core: a small text DSL with expected output.

Modelled on etcd-io/raft's data-driven interaction tests. A script is a sequence of commands;
each command prints what happened (deliveries, views, reachability changes, errors, and for
`deliver` each message handed over). `run_script(text)` returns the transcript: the input
lines, each followed by its output indented by two spaces. Tests compare it with a file.

Time only moves when a command says so, and messages only move when a command says so:

    config key=value ...        CoreConfig overrides for members created afterwards
    bootstrap a b c             start a group with these members (all given the same view)
    broadcast a text            member a broadcasts the bytes of `text`
    deliver [filters] [drop]    hand over the messages queued now, oldest first; filters are
                                from=a to=b type=Accept slot=3 (comma lists allowed); with
                                `drop` they are discarded instead (message loss)
    msgs [filters]              list queued messages
    tick [ms]                   advance time by ms (default 100) in 100 ms steps, ticking
                                every live member; messages stay queued
    run [ms]                    advance time by ms (default 100) in 100 ms steps, delivering
                                every message after each step (partitions respected)
    partition a b | c           cut the network between the groups (queued messages across
                                the cut are dropped when delivered)
    heal                        reconnect everyone
    crash a                     stop member a (its queued messages are lost)
    restart a [seeds=b,c]       start a new incarnation of a that joins through seeds
    leave a                     member a leaves
    force a members=a,b         member a runs force_members with the listed members
    status                      phase, view, next slot, queue and suspicions of every member
    log                         what every member delivered so far

The simulator's checkers watch every step; a broken guarantee prints `VIOLATION ...`.
"""

from __future__ import annotations

import shlex
from dataclasses import fields, replace

from replication.gcs.interface import MemberId, View
from replication.gcs.xcom.core import (
    Bootstrap,
    Broadcast,
    Core,
    CoreConfig,
    Event,
    ForceMembers,
    Join,
    Leave,
    Ready,
    Received,
    Tick,
)
from replication.gcs.xcom.messages import (
    Accept,
    Accepted,
    Batch,
    Decide,
    ForceInstall,
    Learn,
    ForceState,
    Forward,
    Message,
    Nack,
    NoOp,
    Prepare,
    Promise,
    Reconfig,
    Skip,
    Value,
)
from replication.gcs.xcom.types import Ballot, ballot_epoch, ballot_round

from .checkers import Checker, Violation

__all__ = ["run_script", "ScriptError"]

_STEP_MS = 100


class ScriptError(Exception):
    pass


def _name(m: MemberId) -> str:
    return f"{m.uuid}#{m.incarnation}"


def _ballot(b: Ballot) -> str:
    if b == 0:
        return "b0"
    return f"b{ballot_epoch(b)}.{ballot_round(b)}.{b & 0xFF}"


def _value(v: Value) -> str:
    match v:
        case NoOp():
            return "noop"
        case Batch(runs=runs):
            return "batch[" + " ".join(
                f"{_name(r.origin)}:{r.first_seq}" + (f"+{len(r.payloads)}" if len(r.payloads) > 1 else "")
                for r in runs
            ) + "]"
        case Reconfig(op=op, members=members):
            return f"{op.name.lower()}[{' '.join(_name(m) for m in members)}]"
    return repr(v)


def _message(msg: Message) -> str:
    match msg:
        case Accept(slot=slot, ballot=ballot, value=value):
            return f"Accept slot={slot} {_ballot(ballot)} {_value(value)}"
        case Decide(slot=slot, ballot=ballot, value=value):
            return f"Decide slot={slot} {_ballot(ballot)} {_value(value)}"
        case Accepted(slot=slot, ballot=ballot):
            return f"Accepted slot={slot} {_ballot(ballot)}"
        case Learn(slot=slot, ballot=ballot):
            return f"Learn slot={slot} {_ballot(ballot)}"
        case Nack(slot=slot, ballot=ballot, promised=promised):
            return f"Nack slot={slot} {_ballot(ballot)} promised={_ballot(promised)}"
        case Prepare(ballot=ballot, slots=slots):
            return f"Prepare {_ballot(ballot)} slots={','.join(map(str, slots))}"
        case Promise(ballot=ballot, slots=slots, accepted=accepted):
            reported = " ".join(f"{a.slot}:{_ballot(a.ballot)}:{_value(a.value)}" for a in accepted)
            return f"Promise {_ballot(ballot)} slots={','.join(map(str, slots))} accepted=[{reported}]"
        case Skip(first=first, end=end):
            return f"Skip [{first},{end})"
        case ForceInstall(config=config, gaps=gaps):
            members = " ".join(_name(m) for m in config.members)
            holes = " ".join(f"[{g.first},{g.end})" for g in gaps)
            return f"ForceInstall view={config.view_id} @{config.start} [{members}] gaps=[{holes}]"
        case Forward(run=run):
            return f"Forward {_value(Batch((run,)))}"
        case ForceState(next_slot=next_slot, known=known):
            return f"ForceState next_slot={next_slot} known=[{','.join(map(str, known))}]"
        case _:
            return type(msg).__name__ + " " + ", ".join(
                f"{f.name}={getattr(msg, f.name)}" for f in fields(msg) if f.name not in ("configs", "origins")
            )


class _Node:
    __slots__ = ("name", "member", "core", "log")

    def __init__(self, name: str, member: MemberId, core: Core) -> None:
        self.name = name
        self.member = member
        self.core = core
        self.log: list[str] = []


class _Script:
    def __init__(self) -> None:
        self.config = CoreConfig()
        self.now_ms = 0
        self.nodes: dict[str, _Node] = {}
        self.incarnations: dict[str, int] = {}
        self.queue: list[tuple[MemberId, str, Message]] = []  # (sender, destination name, msg)
        self.groups: dict[str, int] | None = None
        self.checker = Checker()
        self.out: list[str] = []

    # ------------------------------------------------------------------ plumbing

    def emit(self, line: str) -> None:
        self.out.append(line)

    def member(self, name: str) -> MemberId:
        return MemberId(name, f"{name}:33061", self.incarnations.get(name, 1))

    def node(self, name: str) -> _Node:
        node = self.nodes.get(name)
        if node is None:
            raise ScriptError(f"no live member {name!r}")
        return node

    def step(self, node: _Node, event: Event) -> Ready:
        ready = node.core.step(event)
        if isinstance(event, Broadcast) and ready.broadcast_seqs:
            self.checker.on_broadcast(node.member, ready.broadcast_seqs[0], event.payload)
        self.checker.on_ready(node, ready, event)  # type: ignore[arg-type]
        name = node.name
        vi = 0
        for d in ready.deliveries:
            while vi < len(ready.views) and ready.views[vi].start_slot <= d.position.slot:
                self._view(name, ready.views[vi])
                vi += 1
            text = d.payload.decode(errors="replace")
            node.log.append(f"{d.position} {_name(d.origin)}:{d.origin_seq} {text}")
            self.emit(f"{name}: deliver {d.position} {_name(d.origin)}:{d.origin_seq} {text!r}")
        for v in ready.views[vi:]:
            self._view(name, v)
        for r in ready.reachability:
            self.emit(f"{name}: {_name(r.member)} {r.state.value}")
        for e in ready.errors:
            seqs = f" seqs={','.join(map(str, e.seqs))}" if e.seqs else ""
            self.emit(f"{name}: {e.code.value}: {e.detail}{seqs}")
        for to, msg in ready.sends:
            self.queue.append((node.member, to.uuid, msg))
        return ready

    def _view(self, name: str, v: View) -> None:
        extra = ""
        if v.joined:
            extra += f" joined=[{' '.join(map(_name, v.joined))}]"
        if v.left:
            extra += f" left=[{' '.join(map(_name, v.left))}]"
        self.emit(f"{name}: view {v.view_id} @{v.start_slot} [{' '.join(map(_name, v.members))}]{extra}")

    def connected(self, a: str, b: str) -> bool:
        return self.groups is None or self.groups.get(a, -1) == self.groups.get(b, -2)

    def _filter(self, args: dict[str, str]) -> list[int]:
        def match(key: str, value: str) -> bool:
            want = args.get(key)
            return want is None or value in want.split(",")

        picked = []
        for i, (sender, dest, msg) in enumerate(self.queue):
            if (
                match("from", sender.uuid)
                and match("to", dest)
                and match("type", type(msg).__name__)
                and match("slot", str(getattr(msg, "slot", "")))
            ):
                picked.append(i)
        return picked

    def deliver_one(self, sender: MemberId, dest: str, msg: Message, verbose: bool) -> None:
        node = self.nodes.get(dest)
        if node is None or not self.connected(sender.uuid, dest):
            if verbose:
                self.emit(f"{sender.uuid}->{dest} {_message(msg)} (lost)")
            return
        if verbose:
            self.emit(f"{sender.uuid}->{dest} {_message(msg)}")
        self.step(node, Received(sender, msg))

    def advance(self, total_ms: int, deliver: bool) -> None:
        end = self.now_ms + total_ms
        while self.now_ms < end:
            self.now_ms = min(end, self.now_ms + _STEP_MS)
            for node in list(self.nodes.values()):
                if node.name in self.nodes:
                    self.step(node, Tick(self.now_ms))
            if deliver:
                self.flush()

    def flush(self) -> None:
        rounds = 0
        while self.queue:
            rounds += 1
            if rounds > 10_000:
                raise ScriptError("messages keep flowing: livelock?")
            batch, self.queue = self.queue, []
            for sender, dest, msg in batch:
                self.deliver_one(sender, dest, msg, verbose=False)

    # ------------------------------------------------------------------ commands

    def run(self, line: str) -> None:
        words = shlex.split(line, comments=True)
        if not words:
            return
        cmd, rest = words[0], words[1:]
        args = {k: v for k, _, v in (w.partition("=") for w in rest if "=" in w)}
        plain = [w for w in rest if "=" not in w]
        handler = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise ScriptError(f"unknown command {cmd!r}")
        handler(plain, args)

    def cmd_config(self, plain: list[str], args: dict[str, str]) -> None:
        changes: dict[str, object] = {}
        for key, raw in args.items():
            current = getattr(self.config, key)
            if isinstance(current, bool):
                changes[key] = raw.lower() in ("1", "true", "on", "yes")
            else:
                changes[key] = int(raw)
        self.config = replace(self.config, **changes)  # type: ignore[arg-type]

    def cmd_bootstrap(self, plain: list[str], args: dict[str, str]) -> None:
        members = tuple(self.member(n) for n in plain)
        for n, m in zip(plain, members, strict=True):
            self.nodes[n] = _Node(n, m, Core(m, self.config))
            self.incarnations[n] = m.incarnation
        for n in plain:
            node = self.nodes[n]
            self.step(node, Tick(self.now_ms))
            self.step(node, Bootstrap(members))

    def cmd_broadcast(self, plain: list[str], args: dict[str, str]) -> None:
        node = self.node(plain[0])
        self.step(node, Broadcast(" ".join(plain[1:]).encode()))

    def cmd_deliver(self, plain: list[str], args: dict[str, str]) -> None:
        picked = self._filter(args)
        chosen = [self.queue[i] for i in picked]
        keep = set(picked)
        self.queue = [q for i, q in enumerate(self.queue) if i not in keep]
        if "drop" in plain:
            for sender, dest, msg in chosen:
                self.emit(f"{sender.uuid}->{dest} {_message(msg)} (dropped)")
            return
        for sender, dest, msg in chosen:
            self.deliver_one(sender, dest, msg, verbose=True)

    def cmd_msgs(self, plain: list[str], args: dict[str, str]) -> None:
        for i in self._filter(args):
            sender, dest, msg = self.queue[i]
            self.emit(f"{sender.uuid}->{dest} {_message(msg)}")

    def cmd_tick(self, plain: list[str], args: dict[str, str]) -> None:
        self.advance(int(plain[0]) if plain else _STEP_MS, deliver=False)

    def cmd_run(self, plain: list[str], args: dict[str, str]) -> None:
        self.flush()
        self.advance(int(plain[0]) if plain else _STEP_MS, deliver=True)

    def cmd_partition(self, plain: list[str], args: dict[str, str]) -> None:
        groups: dict[str, int] = {}
        g = 0
        for w in plain:
            if w == "|":
                g += 1
            else:
                groups[w] = g
        self.groups = groups

    def cmd_heal(self, plain: list[str], args: dict[str, str]) -> None:
        self.groups = None

    def cmd_crash(self, plain: list[str], args: dict[str, str]) -> None:
        for name in plain:
            node = self.node(name)
            self.checker.on_stop(node)  # type: ignore[arg-type]
            del self.nodes[name]
            self.queue = [q for q in self.queue if q[1] != name]
            self.emit(f"{name}: crashed")

    def cmd_restart(self, plain: list[str], args: dict[str, str]) -> None:
        name = plain[0]
        if name in self.nodes:
            self.checker.on_stop(self.nodes[name])  # type: ignore[arg-type]
        self.incarnations[name] = self.incarnations.get(name, 0) + 1
        member = self.member(name)
        node = self.nodes[name] = _Node(name, member, Core(member, self.config))
        seeds_arg = args.get("seeds")
        names = seeds_arg.split(",") if seeds_arg else [n for n in self.nodes if n != name]
        seeds = tuple(MemberId(n, f"{n}:33061", 0) for n in names)
        self.step(node, Tick(self.now_ms))
        self.step(node, Join(seeds))

    def cmd_leave(self, plain: list[str], args: dict[str, str]) -> None:
        self.step(self.node(plain[0]), Leave())

    def cmd_force(self, plain: list[str], args: dict[str, str]) -> None:
        names = args.get("members", "").split(",")
        members = tuple(MemberId(n, f"{n}:33061", 0) for n in names if n)
        self.step(self.node(plain[0]), ForceMembers(members))

    def cmd_status(self, plain: list[str], args: dict[str, str]) -> None:
        for name in sorted(self.nodes):
            core = self.nodes[name].core
            view = core.current_view()
            shown = f"{view.view_id} [{' '.join(map(_name, view.members))}]" if view else "-"
            suspects = " ".join(_name(m) for m in core.suspected())
            self.emit(
                f"{name}: {_name(core.me)} {core.phase.value} view={shown} next_slot={core.next_slot} "
                f"queued={core.queued_broadcasts}" + (f" unreachable=[{suspects}]" if suspects else "")
            )

    def cmd_log(self, plain: list[str], args: dict[str, str]) -> None:
        for name in sorted(self.nodes):
            node = self.nodes[name]
            self.emit(f"{name}: " + (" | ".join(node.log) if node.log else "(nothing)"))

    def cmd_check(self, plain: list[str], args: dict[str, str]) -> None:
        """End-of-run checks: view synchrony without holes over every incarnation."""
        live = list(self.nodes.values())
        self.checker.finish(live)  # type: ignore[arg-type]
        self.emit("checks: ok")


def run_script(text: str) -> str:
    """Run a script; return the transcript (commands, each followed by its indented output)."""
    script = _Script()
    lines: list[str] = []
    stopped = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("  "):
            continue  # expected output of a previous run: regenerated below
        lines.append(line)
        if line.startswith("#") or stopped:
            continue
        script.out = []
        try:
            script.run(line)
        except Violation as v:
            script.emit(f"VIOLATION {v.kind}: {v.detail}")
            stopped = True
        lines.extend("  " + o for o in script.out)
    return "\n".join(lines) + "\n"
