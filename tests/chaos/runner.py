"""Seeded chaos runs: a real group through relays, workloads, a fault schedule, checkers.

Usage::

    python -m tests.chaos.runner --matrix [--seed N] [--durations 60-90] [--only 3,7] [--out DIR]
    python -m tests.chaos.runner [--seed N] [--runs 3] [--duration 40] [--faults a,b,…]
                                 [--mode single-primary|multi-primary] [--levels L1,L2,L3,L4]

``--matrix`` is the whole schedule of runs from one seed (see :func:`matrix`): 10 fault-free
runs and 21 with faults, by class (partitions, kills, pauses, a coordinated crash, majority loss
then force_members, clients that give up mid-commit, everything mixed), in single- and
multi-primary mode. Without it, ``--runs`` runs of one configuration.

Each run starts a fresh 3-member group (tests/chaos/cluster.py), creates the schemas through the
router, and runs the bank workload (2 clients) and the list-append workload (4 clients, each at
its own ``group_replication_consistency``, set on its session through the router: two EVENTUAL,
two among BEFORE / AFTER / BEFORE_AND_AFTER) for the run's duration while a nemesis applies
faults from a schedule drawn from the seed:

- network faults through the relays: isolate a member, majority / minority split, bridge,
  one-way, delay, reset;
- process faults: SIGSTOP/SIGCONT of a member process or a backend, SIGKILL of either followed
  by a restart;
- ``crash-all``: SIGKILL of every member process, backend and the router within a second, then
  the README's whole-group reboot (restart everything with its config, ``grproxy reboot``);
- ``force-members``: two members' hosts die (processes, sometimes backends), the survivor is
  forced alone with ``SET GLOBAL group_replication_force_members``, the two are restarted later
  and rejoin;
- ``give-up``: every client's read timeout drops to 30-250 ms (links sometimes slowed): COMMITs
  whose answer does not come in time are ``info``.

Then everything is healed, the group must become whole again and converge (a liveness bound,
not a speed assertion), the final state is read from every backend, and the checkers run:

- bank (every read sums to the total, no negative balance),
- list-append (Elle-style cycles and friends; G2-item allowed),
- lost writes (per ONLINE member), stale reads (a read at BEFORE / BEFORE_AND_AFTER, or of a
  write made at AFTER / BEFORE_AND_AFTER, must see every write acknowledged before it started;
  other stale reads are reported as allowed), convergence (checksums and applied positions of
  every backend).

The seed fixes the schedule (which fault, when, on whom) and every client's requests; what the
system does concurrently is real and not replayed exactly. A run's directory keeps the
histories (JSON lines), every process's log, the schedule, the verdict and ``plot.svg``; the
summary (report.py) is written to ``summary.md`` (and ``summary.json``) in ``--out``/seed-N,
after every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql

from .checkers import (
    MemberState,
    check_bank,
    check_convergence,
    check_list_append,
    check_lost_writes,
    check_stale_reads,
)
from .checkers.result import Anomaly, CheckResult, result
from .cluster import Cluster, MemberNode, connect
from .history import Completed, Recorder
from .netfault import RESET
from .report import summary_markdown, write_plot
from .workloads import OP_TIMEOUT_S, Bank, Client, ListAppend, parse_list

NETWORK_FAULTS = ("isolate", "split", "bridge", "one-way", "delay", "reset")
PROCESS_FAULTS = ("stop-member", "stop-backend", "kill-member", "kill-backend")
DISASTER_FAULTS = ("crash-all", "force-members")
CLIENT_FAULTS = ("give-up",)
ALL_FAULTS = NETWORK_FAULTS + PROCESS_FAULTS + DISASTER_FAULTS + CLIENT_FAULTS
# The list-append clients' consistency levels (one each); strict levels vary per run of the matrix.
LA_LEVELS = ("BEFORE", "EVENTUAL", "AFTER", "EVENTUAL")
BANK_CLIENTS = 2
CONVERGENCE_TIMEOUT_S = 120.0
USER_TABLES = ("bank.accounts", "la.lists")
# After a disaster (crash-all, force-members) the next fault waits this much longer: the group
# needs the time to be whole again, and a fault on a half-rebooted group tests the reboot, not
# the group.
DISASTER_CALM_S = (8.0, 12.0)
CALM_MIN_S = 2.0  # the nemesis never applies a fault sooner than this after the last heal ended
RESTARTED_ANSWER_TIMEOUT_S = 60.0  # a restarted member answers on its member port within this
FORCE_TIMEOUT_S = 40.0  # the survivor of a lost majority accepts force_members within this
# After the heal, a group whose ONLINE members cannot reach a majority of their view for this
# long has lost it in earnest (every process is running again); the DBA then forces it.
MAJORITY_LOSS_GRACE_S = 20.0
MAJORITY_WATCH_S = 45.0  # how long after the heal the DBA watches for that (the group whole ends it)
GIVE_UP_TIMEOUTS_MS = (30, 60, 120, 250)


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault of a schedule.

    ``targets`` by kind: one member (isolate, reset, split's minority, stop-*, kill-*); the two
    ends (one-way: bytes from the first to the second are dropped); bridge, one side, other side
    (bridge); survivor then the two lost members (force-members); the processes in the order
    they are killed, ``member:mN`` / ``backend:mN`` / ``router``, ``gaps_ms`` apart (crash-all).
    ``delay_ms``: delay on every link (delay; give-up, where 0 means none). ``timeout_ms``: the
    clients' read timeout while it lasts (give-up). ``backends``: the lost members' backends die
    too (force-members).
    """

    at_s: float  # since the workload started
    heal_at_s: float
    kind: str
    targets: tuple[str, ...]
    delay_ms: int = 0
    timeout_ms: int = 0
    backends: bool = False
    gaps_ms: tuple[int, ...] = ()

    def label(self) -> str:
        """A few words: kind and whom it hits."""
        match self.kind:
            case "crash-all":
                return "crash-all"
            case "force-members":
                return f"force-members: {self.targets[0]} survives"
            case "delay" | "give-up":
                return f"{self.kind} {self.timeout_ms or self.delay_ms}ms"
            case "bridge":
                return f"bridge via {self.targets[0]}"
            case "one-way":
                return f"one-way {self.targets[0]}->{self.targets[1]}"
            case _:
                return f"{self.kind} {' '.join(self.targets)}"

    def describe(self) -> str:
        extra = ""
        if self.kind == "delay" or (self.kind == "give-up" and self.delay_ms):
            extra += f" {self.delay_ms}ms"
        if self.kind == "give-up":
            extra += f" timeout {self.timeout_ms}ms"
        if self.kind == "force-members":
            extra += " (with backends)" if self.backends else ""
            return (f"{self.at_s:5.1f}s-{self.heal_at_s:5.1f}s {self.kind}{extra} survivor {self.targets[0]}, "
                    f"lost {' '.join(self.targets[1:])}")
        if self.kind == "crash-all":
            order = " ".join(t if i == 0 else f"+{g}ms {t}" for i, (t, g) in
                             enumerate(zip(self.targets, (0, *self.gaps_ms), strict=True)))
            return f"{self.at_s:5.1f}s-{self.heal_at_s:5.1f}s {self.kind} {order}"
        return f"{self.at_s:5.1f}s-{self.heal_at_s:5.1f}s {self.kind}{extra} {' '.join(self.targets)}"


def schedule(rng: random.Random, kinds: tuple[str, ...], duration_s: float, members: list[str]) -> list[Fault]:
    """Faults one after another: each lasts 4-16 s (long enough, at times, for the failure
    detector to suspect and expel: 5 s of silence + member_expel_timeout 5 s), with 2-5 s of
    calm between (more after a disaster: DISASTER_CALM_S). The draws for the older kinds are
    unchanged, so their seeds replay as before."""
    out: list[Fault] = []
    if not kinds:
        return out
    t = rng.uniform(2, 4)
    while t + 3 < duration_s - 2:
        kind = rng.choice(kinds)
        length = min(rng.uniform(4, 16), duration_s - 2 - t)
        shuffled = rng.sample(members, len(members))
        delay_ms = rng.choice((50, 100, 300)) if kind == "delay" else 0
        timeout_ms, backends, gaps_ms = 0, False, ()
        targets: tuple[str, ...]
        if kind in ("one-way",):
            targets = (shuffled[0], shuffled[1])
        elif kind == "bridge":
            targets = tuple(shuffled[:3])  # bridge, one side, other side
        elif kind == "delay":
            targets = ()
        elif kind == "crash-all":
            # Everything within a second: every member process, every backend, the router.
            procs = [f"{what}:{m}" for m in members for what in ("member", "backend")] + ["router"]
            targets = tuple(rng.sample(procs, len(procs)))
            gaps_ms = tuple(rng.randint(0, 1000 // len(procs)) for _ in procs[1:])
            length = min(rng.uniform(2, 8), duration_s - 2 - t)  # everything stays down this long
        elif kind == "force-members":
            targets = tuple(shuffled)  # survivor, then the majority that is lost
            backends = rng.random() < 0.5
        elif kind == "give-up":
            targets = ()
            timeout_ms = rng.choice(GIVE_UP_TIMEOUTS_MS)
            delay_ms = rng.choice((0, 20, 50))
        else:
            targets = (shuffled[0],)
        out.append(Fault(round(t, 1), round(t + length, 1), kind, targets, delay_ms, timeout_ms, backends, gaps_ms))
        t += length + rng.uniform(2, 5)
        if kind in DISASTER_FAULTS:
            t += rng.uniform(*DISASTER_CALM_S)
    return out


@dataclasses.dataclass
class Interval:
    """What the nemesis did, in seconds since the workload started: the fault from ``start_s``,
    its heal from ``heal_s`` until ``end_s`` (a reboot or a rejoin can take a while)."""

    kind: str
    what: str  # the fault as scheduled (Fault.describe)
    label: str  # a few words for the plot
    start_s: float
    heal_s: float | None = None
    end_s: float | None = None


class Nemesis:
    """Applies a schedule to a cluster, then heals everything.

    Runs in the main thread on purpose: processes are started with PR_SET_PDEATHSIG, which
    kills a child when the *thread* that started it exits, so a member or backend restarted
    from a short-lived thread would die with it.

    Timing: each fault starts at its ``at_s`` or, when the previous heal overran (a reboot),
    ``CALM_MIN_S`` after that heal ended; a fault that would then start less than 3 s before
    the end of the workload is left out (listed in ``skipped``). The order of faults is the
    schedule's; their exact times are in ``intervals``.
    """

    def __init__(self, cluster: Cluster, faults: list[Fault], members: list[str],
                 clients: list[Client] | None = None) -> None:
        self.c = cluster
        self.faults = faults
        self.members = members
        self.clients: list[Client] = clients or []
        self.applied: list[str] = []
        self.skipped: list[str] = []
        self.errors: list[str] = []
        self.intervals: list[Interval] = []
        self.log: list[str] = []  # what the DBA saw (reboot reports, refusals)
        self._group_down = False  # a force-members fault found no group left: reboot at its heal
        self.t0 = time.monotonic()

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    def run(self, duration_s: float, t0: float | None = None) -> None:
        """Apply the schedule; returns ``duration_s`` after ``t0`` (the workload's start,
        default now), or when the last heal ended if that is later."""
        self.t0 = time.monotonic() if t0 is None else t0

        def sleep_until(at_s: float) -> None:
            time.sleep(max(0.0, self.t0 + min(at_s, duration_s) - time.monotonic()))

        not_before = 0.0
        for f in self.faults:
            start = max(f.at_s, not_before)
            if start >= duration_s - 3:
                self.skipped.append(f.describe())
                continue
            sleep_until(start)
            iv = Interval(f.kind, f.describe(), f.label(), self.now_s())
            self.intervals.append(iv)
            try:
                self.apply(f)
                self.applied.append(f.describe())
                self.c.note(f"fault {f.describe()}")
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                self.errors.append(f"{f.describe()}: {exc!r}")
            sleep_until(start + (f.heal_at_s - f.at_s))
            iv.heal_s = self.now_s()
            try:
                self.heal(f)
                self.c.note(f"heal {f.kind}")
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"heal {f.describe()}: {exc!r}")
            iv.end_s = self.now_s()
            not_before = iv.end_s + CALM_MIN_S
        sleep_until(duration_s)

    def apply(self, f: Fault) -> None:
        c, net = self.c, self.c.net
        members = self.members
        match f.kind:
            case "isolate":
                c.on_loop(lambda: net.isolate(f.targets[0]))
            case "reset":
                c.on_loop(lambda: net.isolate(f.targets[0], rule=RESET))
            case "split":
                minority = [f.targets[0]]
                majority = [m for m in members if m not in minority]
                c.on_loop(lambda: net.partition(majority, minority))
            case "bridge":
                b, x, y = f.targets
                c.on_loop(lambda: net.bridge(b, [b, x], [b, y]))
            case "one-way":
                c.on_loop(lambda: net.one_way(f.targets[0], f.targets[1]))
            case "delay":
                c.on_loop(lambda: net.delay_all(f.delay_ms))
            case "stop-member":
                c.signal_member(f.targets[0], signal.SIGSTOP)
            case "stop-backend":
                c.signal_backend(f.targets[0], signal.SIGSTOP)
            case "kill-member":
                c.signal_member(f.targets[0], signal.SIGKILL)
            case "kill-backend":
                c.signal_backend(f.targets[0], signal.SIGKILL)
            case "crash-all":
                self._crash_all(f)
            case "force-members":
                self._lose_majority_and_force(f)
            case "give-up":
                for client in self.clients:
                    client.read_timeout_s = f.timeout_ms / 1000
                if f.delay_ms:
                    c.on_loop(lambda: net.delay_all(f.delay_ms))
            case _:
                raise ValueError(f"unknown fault {f.kind}")

    def heal(self, f: Fault) -> None:
        c = self.c
        match f.kind:
            case "stop-member":
                c.signal_member(f.targets[0], signal.SIGCONT)
            case "stop-backend":
                c.signal_backend(f.targets[0], signal.SIGCONT)
            case "kill-member":
                c.restart_member(f.targets[0])
            case "kill-backend":
                c.restart_backend(f.targets[0])
            case "crash-all":
                self._reboot_after_outage()
            case "force-members":
                # The lost members come back (their hosts were repaired) and rejoin the group
                # the survivor now is, by themselves. When the survivor was outside the group
                # itself, nothing was left of the group: the whole-group reboot.
                for name in f.targets[1:]:
                    c.restart_backend(name)
                for name in f.targets[1:]:
                    c.restart_member(name)
                if self._group_down:
                    self._group_down = False
                    self._reboot_after_outage()
            case "give-up":
                self._patient_clients()
                c.on_loop(c.net.heal)
            case _:
                c.on_loop(c.net.heal)

    def _patient_clients(self) -> None:
        for client in self.clients:
            client.read_timeout_s = OP_TIMEOUT_S

    def _crash_all(self, f: Fault) -> None:
        """Kill -9 every process of the group (members, backends, the router) in the
        schedule's order, ``gaps_ms`` apart: all within a second."""
        c = self.c
        for target, gap_ms in zip(f.targets, (0, *f.gaps_ms), strict=True):
            time.sleep(gap_ms / 1000)
            what, _, name = target.partition(":")
            if what == "member":
                c.signal_member(name, signal.SIGKILL)
            elif what == "backend":
                c.signal_backend(name, signal.SIGKILL)
            else:
                c.signal_router(signal.SIGKILL)

    def _reboot_after_outage(self) -> None:
        """The documented whole-group reboot (README, Membership): restart every backend and
        member with its own config (they wait, in ERROR, with no group to join), then `grproxy
        reboot --config …` once; and the router."""
        c = self.c
        for name in self.members:
            c.restart_backend(name)
        for name in self.members:
            c.restart_member(name)
        deadline = time.monotonic() + RESTARTED_ANSWER_TIMEOUT_S
        waiting = set(self.members)
        while waiting:
            for name in sorted(waiting):
                try:
                    status = c.group_status(name)
                except pymysql.MySQLError:
                    continue
                self.log.append(f"{self.now_s():6.1f}s {name} restarted: {status.get('MEMBER_STATE')} "
                                f"in_group={status.get('IN_GROUP')} gtids={status.get('GTID_EXECUTED')}")
                waiting.discard(name)
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"restarted members {sorted(waiting)} did not answer in {RESTARTED_ANSWER_TIMEOUT_S:.0f}s")
            if waiting:
                time.sleep(0.5)
        c.restart_router()  # it starts listening once a member port answers
        code, report = c.reboot()
        self.log.append(f"{self.now_s():6.1f}s grproxy reboot (exit {code}):\n{report}")
        if code != 0:
            raise RuntimeError(f"grproxy reboot failed (exit {code}): {report[-600:]}")

    def _lose_majority_and_force(self, f: Fault) -> None:
        """Two members' hosts die (processes, and backends when ``f.backends``): the survivor
        has no majority. As GR's manual says, the DBA makes sure the lost members are down, then
        sets group_replication_force_members to the survivor alone, on the survivor; it refuses
        until the survivor suspects the lost members, so the DBA tries again (bounded)."""
        c = self.c
        survivor, *lost = f.targets
        for name in lost:
            c.signal_member(name, signal.SIGKILL)
            if f.backends:
                c.signal_backend(name, signal.SIGKILL)
        deadline = time.monotonic() + FORCE_TIMEOUT_S
        refusals = 0
        while True:
            try:
                c.force_members([survivor])
                break
            except pymysql.MySQLError as exc:
                refusals += 1
                if time.monotonic() > deadline:
                    status = self._status_or_none(survivor)
                    if (status is not None and not status.get("IN_GROUP")) or not c.member(survivor).backend.alive():
                        # An earlier fault had put the survivor out of the group (ERROR, still
                        # rejoining, or its backend still down): with the other two gone there is
                        # no group left to force. GR's answer is the reboot from complete outage,
                        # done at heal.
                        self._group_down = True
                        where = status.get("MEMBER_STATE") if status else "without its backend"
                        self.log.append(f"{self.now_s():6.1f}s force_members on {survivor} refused ({exc.args[-1]}): "
                                        f"it is {where} outside the group, so no group is left: whole-group reboot "
                                        "at heal")
                        return
                    raise RuntimeError(f"force_members on {survivor} refused for {FORCE_TIMEOUT_S:.0f}s: {exc}") from None
                time.sleep(0.5)
        self.log.append(f"{self.now_s():6.1f}s force_members on {survivor} accepted after {refusals} refusal(s)")

    def _status_or_none(self, name: str) -> dict[str, Any] | None:
        try:
            return self.c.group_status(name)
        except pymysql.MySQLError:
            return None

    def restore_majority(self) -> bool:
        """After the heal, what a DBA does when the group has lost its majority for good.

        A kill schedule can cause that as it can in GR: a member in ERROR has left, so the view
        is two members, and then one of those two is killed. The survivor waits for a majority
        that cannot come back, since a restarted process is a new incarnation and may not vote
        for its old one. It also cannot admit anyone. GR's manual gives the way out: make sure
        the members it cannot reach are really gone (dead, or their new incarnation outside the
        group), set group_replication_force_members to the reachable ONLINE members, then START
        GROUP_REPLICATION on the members in ERROR.

        When no member at all is in a group (every one answering, none IN_GROUP: what is left
        after a majority loss whose survivor was itself out of the group) for
        MAJORITY_LOSS_GRACE_S, the DBA runs the whole-group reboot instead.

        A member that has stayed in ERROR for MAJORITY_LOSS_GRACE_S while the group (a
        majority) is ONLINE has spent its autorejoin tries (a backend frozen again during each
        try's recovery uses one each): it stays in ERROR, as GR's member does, and the DBA runs
        START GROUP_REPLICATION on it.

        This watches for up to MAJORITY_WATCH_S. It forces only when the same member has been
        blocked for MAJORITY_LOSS_GRACE_S: ONLINE, its view not reachable in a majority, and
        every unreachable member gone. It returns whether the DBA acted. A group that is whole
        again ends the watch."""
        c = self.c
        names = {m.name for m in c.members}
        t0 = time.monotonic()
        blocked_since: dict[tuple[str, frozenset[str]], float] = {}
        no_group_since: float | None = None
        error_since: dict[str, float] = {}
        while time.monotonic() - t0 < MAJORITY_WATCH_S:
            group = online_group(c)
            if group == names:
                return False
            now = time.monotonic()
            statuses = [self._status_or_none(n) if c.member(n).alive() else None for n in sorted(names)]
            for n, st in zip(sorted(names), statuses):
                if st is not None and st.get("MEMBER_STATE") == "ERROR" and not st.get("IN_GROUP"):
                    error_since.setdefault(n, now)
                else:
                    error_since.pop(n, None)
            stuck = sorted(n for n, since in error_since.items() if now - since >= MAJORITY_LOSS_GRACE_S)
            if stuck and len(group) * 2 > len(names):
                for n in stuck:
                    self.log.append(f"{self.now_s():6.1f}s {n} has been in ERROR for {now - error_since[n]:.0f}s "
                                    "(its autorejoin tries spent) while the group is ONLINE: START GROUP_REPLICATION")
                    c.admin(n, "START GROUP_REPLICATION")
                return True
            if all(st is not None and not st.get("IN_GROUP") for st in statuses):
                no_group_since = now if no_group_since is None else no_group_since
                if now - no_group_since >= MAJORITY_LOSS_GRACE_S:
                    states = ", ".join(f"{n} {st.get('MEMBER_STATE')}" for n, st in zip(sorted(names), statuses) if st)
                    self.log.append(f"{self.now_s():6.1f}s no member has been in a group for {now - no_group_since:.0f}s "
                                    f"({states}): whole-group reboot")
                    self._reboot_after_outage()
                    return True
            else:
                no_group_since = None
            seen: dict[tuple[str, frozenset[str]], float] = {}
            for m in c.members:
                survivors = self._blocked_survivors(m)
                if survivors is not None:
                    key = (m.name, survivors)
                    seen[key] = blocked_since.get(key, now)
            blocked_since = seen
            ripe = [(k, since) for k, since in seen.items() if now - since >= MAJORITY_LOSS_GRACE_S]
            if ripe:
                (name, survivors), since = ripe[0]
                order = [name, *sorted(survivors - {name})]
                self.log.append(f"{self.now_s():6.1f}s {name} has had no majority of its view for "
                                f"{now - since:.0f}s, its unreachable members gone: force_members {','.join(order)}")
                c.force_members(order)
                for other in sorted(names - survivors):
                    try:
                        status = c.group_status(other)
                    except pymysql.MySQLError as exc:
                        self.log.append(f"{self.now_s():6.1f}s {other}: no answer ({exc})")
                        continue
                    if status.get("MEMBER_STATE") == "ERROR":
                        c.admin(other, "START GROUP_REPLICATION")
                        self.log.append(f"{self.now_s():6.1f}s START GROUP_REPLICATION on {other} (was ERROR)")
                return True
            time.sleep(1.0)
        return False

    def _blocked_survivors(self, m: MemberNode) -> frozenset[str] | None:
        """The ONLINE members of ``m``'s view when ``m`` is ONLINE without a majority of it and
        every member it cannot reach is gone (process dead, or outside the group); else None."""
        c = self.c
        if not m.alive():
            return None
        try:
            states = {c.name_of_member_address(a): s for a, s in c.member_states(m).items()}
        except pymysql.MySQLError:
            return None
        online = frozenset(n for n, s in states.items() if s == "ONLINE")
        unreachable = [n for n, s in states.items() if s == "UNREACHABLE"]
        if m.name not in online or not unreachable or len(online) * 2 > len(states):
            return None
        for name in unreachable:
            if name not in {x.name for x in c.members}:
                return None
            if c.member(name).alive():
                try:
                    if c.group_status(name).get("IN_GROUP"):
                        return None
                except pymysql.MySQLError:
                    return None  # it may be alive and in the group: the DBA does not force
        return online

    def heal_all(self) -> None:
        c = self.c
        self._patient_clients()
        c.on_loop(c.net.heal)
        for m in c.members:
            if m.stopped:
                c.signal_member(m.name, signal.SIGCONT)
            if m.backend.alive():
                c.signal_backend(m.name, signal.SIGCONT)
            else:
                c.restart_backend(m.name)
            if not m.alive():
                c.restart_member(m.name)
        c.restart_router()
        c.note("healed all")


@dataclasses.dataclass
class Workload:
    """What the clients did: their histories, the models, counts, when they started."""

    bank_rec: Recorder
    la_rec: Recorder
    bank: Bank
    la: ListAppend
    counts: dict[str, int]
    t0_ns: int  # time.monotonic_ns() when the clients started (the histories' clock)
    end_s: float  # since t0, when the last client stopped
    level_errors: list[str]


def run_clients(cluster: Cluster, seed_text: str, duration_s: float, out: Path,
                nemesis: Nemesis | None, levels: tuple[str, ...] = LA_LEVELS) -> Workload:
    bank, la = Bank(), ListAppend()
    bank_rec, la_rec = Recorder(out / "bank.jsonl"), Recorder(out / "list-append.jsonl")
    clients: list[tuple[Client, Callable[[Client], Any]]] = []
    for i in range(BANK_CLIENTS):
        clients.append((Client(i, BANK_CLIENTS, cluster.router_port, bank_rec, _seed_int(f"{seed_text}:bank:{i}")),
                        bank.step))
    for i, level in enumerate(levels):
        clients.append((Client(i, len(levels), cluster.router_port, la_rec,
                               _seed_int(f"{seed_text}:la:{i}"), level=level), la.step))
    stop = threading.Event()

    def loop(client: Client, step: Callable[[Client], Any]) -> None:
        while not stop.is_set():
            op = step(client)
            if op.type != "ok":
                stop.wait(0.05)  # do not spin on a group that refuses everything
        client.close()

    threads = [threading.Thread(target=loop, args=cs, daemon=True) for cs in clients]
    t0_ns = time.monotonic_ns()
    for t in threads:
        t.start()
    if nemesis is not None:
        nemesis.clients = [c for c, _ in clients]
        nemesis.run(duration_s, t0=t0_ns / 1e9)
    else:
        stop.wait(duration_s)
    stop.set()
    for t in threads:
        t.join(60)
    end_s = (time.monotonic_ns() - t0_ns) / 1e9
    bank_rec.close()
    la_rec.close()
    counts = {"ok": 0, "fail": 0, "info": 0}
    level_errors: list[str] = []
    for c, _ in clients:
        for k, v in c.counts.items():
            counts[k] += v
        level_errors += c.level_errors
    return Workload(bank_rec, la_rec, bank, la, counts, t0_ns, end_s, level_errors)


def _seed_int(text: str) -> int:
    return random.Random(text).getrandbits(64)


@dataclasses.dataclass
class MemberFinal:
    state: MemberState
    lists: dict[int, list[int]] | None = None
    balances: dict[str, int] | None = None


def read_final(cluster: Cluster) -> dict[str, MemberFinal]:
    out: dict[str, MemberFinal] = {}
    for m in cluster.members:
        b = m.backend
        try:
            conn = connect(b.port, user=b.user, password=b.password, timeout_s=10)
        except pymysql.MySQLError as exc:
            out[m.name] = MemberFinal(MemberState(error=str(exc)))
            continue
        try:
            with conn.cursor() as cur:
                sums = {}
                for t in USER_TABLES:
                    cur.execute(f"CHECKSUM TABLE {t}")
                    (_, value), = cur.fetchall()
                    if value is not None:
                        sums[t] = int(value)
                cur.execute("SELECT lo, hi FROM grproxy.applied_ranges")
                seqs: set[tuple[int, int]] = {(int(lo), int(hi)) for lo, hi in cur.fetchall()}
                cur.execute("SELECT seq FROM grproxy.applied")
                seqs |= {(int(s), int(s)) for (s,) in cur.fetchall()}
                cur.execute("SELECT k, v FROM la.lists")
                lists = {int(k): parse_list(v) for k, v in cur.fetchall()}
                cur.execute("SELECT id, balance FROM bank.accounts")
                balances = {str(i): int(v) for i, v in cur.fetchall()}
            out[m.name] = MemberFinal(MemberState(sums, _intervals(seqs)), lists, balances)
        except pymysql.MySQLError as exc:
            out[m.name] = MemberFinal(MemberState(error=str(exc)))
        finally:
            conn.close()
    return out


def _intervals(pairs: set[tuple[int, int]]) -> str:
    merged: list[list[int]] = []
    for lo, hi in sorted(pairs):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in merged)


def wait_converged(cluster: Cluster, timeout_s: float) -> tuple[float | None, str]:
    """Seconds until every member is ONLINE in every member's view and all backends agree
    (checksums and positions), or None with the last observation."""
    t0 = time.monotonic()
    names = {m.name for m in cluster.members}
    last = ""
    while time.monotonic() - t0 < timeout_s:
        try:
            cluster.wait_online(names, timeout_s=1)
        except TimeoutError as exc:
            last = str(exc)
            continue
        finals = read_final(cluster)
        verdict = check_convergence({n: f.state for n, f in finals.items()})
        if verdict.valid:
            return time.monotonic() - t0, "converged"
        last = "; ".join(a.detail for v in verdict.anomalies.values() for a in v)[:500]
        time.sleep(0.5)
    return None, last


def online_group(cluster: Cluster) -> set[str]:
    """The members of the group as its members see it: the ONLINE set reported by a majority of
    all members, each of which lists itself in it. Empty when there is no such group. A member
    outside the group (ERROR, expelled) lists only itself or nothing, so its backend is not
    taken for the group's state."""
    views: dict[str, frozenset[str]] = {}
    for m in cluster.members:
        if not m.alive():
            continue
        try:
            views[m.name] = frozenset(cluster.online_view(m))
        except pymysql.MySQLError:
            continue
    majority = len(cluster.members) // 2 + 1
    for view in set(views.values()):
        agreeing = [n for n, v in views.items() if v == view and n in view]
        if len(agreeing) >= majority and set(agreeing) == set(view):
            return set(view)
    return set()


def _append_elements(c: Completed) -> list[tuple[int, int]]:
    if c.f != "txn":
        return []
    return [(m[1], m[2]) for m in (c.invoke.value or []) if m[0] == "append"]


def check_run(bank: Bank, bank_ops: list[Any], la_ops: list[Any], finals: dict[str, MemberFinal],
              online: set[str], converged_s: float | None, convergence_note: str,
              convergence_timeout_s: float = CONVERGENCE_TIMEOUT_S,
              snapshot_isolation: bool = True, levels: tuple[str, ...] = LA_LEVELS) -> list[CheckResult]:
    results = [
        check_bank(bank_ops, total=bank.total, accounts=[str(a) for a in bank.accounts]),
        check_list_append(la_ops, snapshot_isolation=snapshot_isolation),
        check_stale_reads(
            la_ops,
            writes=_append_elements,
            reads=lambda c: [(m[1], set(m[2])) for m in (c.value or []) if c.f == "txn" and m[0] == "r"],
            # A client that continues after an `info` takes process + len(levels): same level.
            level=lambda c: levels[c.process % len(levels)],
        ),
    ]
    for name in sorted(online):
        f = finals.get(name)
        if f is None or f.lists is None:
            continue
        final = {(k, v) for k, vs in f.lists.items() for v in vs}
        r = check_lost_writes(la_ops, final, elements=_append_elements)
        results.append(dataclasses.replace(r, checker=f"lost-writes@{name}"))
        if f.balances is not None:
            s = sum(f.balances.values())
            if s != bank.total:
                results.append(result(f"bank-final@{name}", [Anomaly("wrong-total", (), f"final balances sum to {s}",
                                                                      {"balances": f.balances})]))
    conv = check_convergence({n: f.state for n, f in finals.items()})
    if converged_s is None and len(online) > 1:
        # The group is not whole; the members it does have must still agree with each other.
        inner = check_convergence({n: f.state for n, f in finals.items() if n in online})
        results.append(dataclasses.replace(inner, checker="convergence-online", anomalies={
            f"online-{k}": v for k, v in inner.anomalies.items()}))
    if converged_s is None:
        conv = dataclasses.replace(conv, anomalies={**conv.anomalies, "no-convergence": (
            Anomaly("no-convergence", (), f"not whole and converged within {convergence_timeout_s:.0f}s: "
                    f"{convergence_note}"),)})
    results.append(conv)
    return results


@dataclasses.dataclass
class RunResult:
    run: int
    seed: str
    faults: list[str]
    fault_kinds: list[str]
    ops: dict[str, int]
    results: list[CheckResult]
    converged_s: float | None
    nemesis_errors: list[str]
    directory: str
    klass: str = "custom"
    mode: str = "single-primary"
    duration_s: float = 0.0
    levels: tuple[str, ...] = LA_LEVELS
    intervals: list[Interval] = dataclasses.field(default_factory=list)
    workload_end_s: float | None = None  # since the workload started
    healed_s: float | None = None  # heal_all done, convergence wait starts
    nemesis_log: list[str] = dataclasses.field(default_factory=list)
    replay: str = ""

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.results)

    @property
    def identical_backends(self) -> bool:
        """Every member ONLINE and every backend with the same checksums and positions."""
        return self.converged_s is not None and all(r.valid for r in self.results if r.checker == "convergence")

    def violations(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            for k, v in r.violations.items():
                out[f"{r.checker.split('@')[0]}:{k}"] = out.get(f"{r.checker.split('@')[0]}:{k}", 0) + len(v)
        return out

    def allowed(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            for k, v in r.anomalies.items():
                if v and k in r.allowed:
                    out[k] = out.get(k, 0) + len(v)
        return out

    def lost_writes(self) -> int:
        return self._most("lost")

    def resurrected_writes(self) -> int:
        """Failed appends present in the final state (``failed-present``)."""
        return self._most("failed-present")

    def _most(self, kind: str) -> int:
        return max((len(r.anomalies.get(kind, ())) for r in self.results if r.checker.startswith("lost-writes")),
                   default=0)

    def stale_reads(self) -> dict[str, Any]:
        for r in self.results:
            if r.checker == "stale-reads":
                return {"strict": len(r.anomalies.get("stale-read", ())),
                        "eventual": len(r.anomalies.get("stale-read-eventual", ())),
                        "by_level": r.stats.get("by_level", {})}
        return {"strict": 0, "eventual": 0, "by_level": {}}

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "seed": self.seed, "class": self.klass, "mode": self.mode,
                "duration_s": self.duration_s, "levels": list(self.levels), "faults": self.faults,
                "ops": self.ops, "converged_s": self.converged_s, "valid": self.valid,
                "identical_backends": self.identical_backends, "violations": self.violations(),
                "allowed": self.allowed(), "lost_writes": self.lost_writes(),
                "resurrected_writes": self.resurrected_writes(), "stale_reads": self.stale_reads(),
                "nemesis_errors": self.nemesis_errors, "nemesis_log": self.nemesis_log,
                "intervals": [dataclasses.asdict(i) for i in self.intervals],
                "workload_end_s": self.workload_end_s, "healed_s": self.healed_s,
                "directory": self.directory, "replay": self.replay,
                "results": [r.to_dict() for r in self.results]}


def run_once(seed: int, run: int, kinds: tuple[str, ...], duration_s: float, out: Path, *,
             faults: list[Fault] | None = None, convergence_timeout_s: float = CONVERGENCE_TIMEOUT_S,
             single_primary: bool = True, levels: tuple[str, ...] = LA_LEVELS, klass: str = "custom",
             replay: str = "") -> RunResult:
    """One run; ``faults`` replaces the seeded schedule (a test's fixed scenario). Writes the
    histories, logs, ``verdict.json`` and ``plot.svg`` into ``out``."""
    seed_text = f"{seed}:{run}"
    rng = random.Random(seed_text)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-{run}-"))
    cluster = Cluster(base, single_primary=single_primary)
    members = [f"m{i}" for i in range(1, cluster.count + 1)]
    if faults is None:
        faults = schedule(rng, kinds, duration_s, members)
    (out / "schedule.txt").write_text("\n".join(f.describe() for f in faults) + "\n")
    nemesis: Nemesis | None = None
    work: Workload | None = None
    healed_s: float | None = None
    try:
        with cluster:
            conn = connect(cluster.router_port, timeout_s=30)
            with conn.cursor() as cur:
                Bank.setup(Bank(), cur)
                ListAppend.setup(ListAppend(), cur)
            conn.close()
            nemesis = Nemesis(cluster, faults, members) if faults else None
            work = run_clients(cluster, seed_text, duration_s, out, nemesis, levels)
            if nemesis is not None:
                nemesis.heal_all()
            healed_s = (time.monotonic_ns() - work.t0_ns) / 1e9
            watch_t0 = time.monotonic()
            if nemesis is not None:
                try:
                    if nemesis.restore_majority():
                        cluster.note("DBA: force_members or reboot after a lasting loss of majority")
                except Exception as exc:  # noqa: BLE001 - recorded; convergence then says how it ended
                    nemesis.errors.append(f"after the heal, the DBA's step failed: {exc!r}")
            watch_s = time.monotonic() - watch_t0
            converged_s, note = wait_converged(cluster, convergence_timeout_s)
            if converged_s is not None:
                converged_s += watch_s  # convergence counts from the heal
            finals = read_final(cluster)
            online = online_group(cluster) & {n for n, f in finals.items() if f.state.error is None}
            results = check_run(work.bank, work.bank_rec.ops(), work.la_rec.ops(), finals, online, converged_s, note,
                                convergence_timeout_s, cluster.snapshot_isolation, levels)
            exits = cluster.unexpected_exits()
            if exits:
                results.append(result("processes", [Anomaly("unexpected-exit", (), e) for e in exits]))
            if work.level_errors:
                results.append(result("harness", [Anomaly("consistency-level-not-set", (), e)
                                                  for e in work.level_errors[:20]]))
            (out / "final.json").write_text(json.dumps(
                {n: {"error": f.state.error, "checksums": dict(f.state.checksums), "position": f.state.position,
                     "balances": f.balances, "lists": {str(k): v for k, v in sorted((f.lists or {}).items())}}
                 for n, f in finals.items()}, indent=1) + "\n")
            (out / "events.txt").write_text("\n".join(f"{t - cluster.events[0][0]:8.2f} {w}" for t, w in cluster.events) + "\n")
            if nemesis is not None and nemesis.log:
                (out / "nemesis.txt").write_text("\n".join(nemesis.log) + "\n")
    finally:
        for p in [*(m.log_path for m in cluster.members), base / "router" / "grproxy.log"]:
            if p.exists():
                shutil.copy(p, out / f"{p.parent.name}.log")
        for m in cluster.members:  # the backends' error logs (crash recovery, XA, aborts)
            if m.backend.error_log.exists():
                shutil.copy(m.backend.error_log, out / f"{m.name}-backend.err")
        shutil.rmtree(base, ignore_errors=True)
    assert work is not None
    rr = RunResult(run, seed_text, [f.describe() for f in faults], [f.kind for f in faults], work.counts, results,
                   converged_s, (nemesis.errors + [f"skipped (no time left): {x}" for x in nemesis.skipped])
                   if nemesis else [], str(out),
                   klass=klass, mode="single-primary" if single_primary else "multi-primary", duration_s=duration_s,
                   levels=levels, intervals=nemesis.intervals if nemesis else [], workload_end_s=work.end_s,
                   healed_s=healed_s, nemesis_log=nemesis.log if nemesis else [], replay=replay)
    (out / "verdict.json").write_text(json.dumps(rr.to_dict(), indent=2, default=str) + "\n")
    write_plot(rr, [*work.bank_rec.ops(), *work.la_rec.ops()], work.t0_ns, out / "plot.svg")
    return rr


def failed_run(seed: int, run: int, out: Path, exc: BaseException, **labels: Any) -> RunResult:
    """A run that broke before its checks (the group did not start, setup was refused …)."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.txt").write_text(text)
    err = result("run", [Anomaly("run-error", (), f"{type(exc).__name__}: {exc}"[:400], {"traceback": text[-2000:]})])
    return RunResult(run, f"{seed}:{run}", [], [], {"ok": 0, "fail": 0, "info": 0}, [err], None, [], str(out),
                     **labels)


# --------------------------------------------------------------------------- the matrix

FAULT_CLASSES: dict[str, tuple[str, ...]] = {
    "none": (),
    "partitions": ("isolate", "split", "bridge", "one-way", "reset", "delay"),
    "kills": ("kill-member", "kill-backend"),
    "pauses": ("stop-member", "stop-backend"),
    "crash": ("crash-all",),
    "force-members": ("force-members",),
    "give-up": ("give-up",),
    "mixed": ALL_FAULTS,
}
# (class, runs): 10 without faults, 21 with.
MATRIX: tuple[tuple[str, int], ...] = (
    ("none", 10), ("partitions", 3), ("kills", 3), ("pauses", 3), ("crash", 3), ("force-members", 3),
    ("give-up", 3), ("mixed", 3),
)
MODES = ("single-primary", "multi-primary")
# The list-append clients' levels per run: every strict level appears, and two EVENTUAL clients
# in each run show that the stale-read check sees lag where no level forbids it.
LEVEL_SETS: tuple[tuple[str, ...], ...] = (
    ("BEFORE", "EVENTUAL", "AFTER", "EVENTUAL"),
    ("BEFORE_AND_AFTER", "EVENTUAL", "AFTER", "EVENTUAL"),
    ("BEFORE", "EVENTUAL", "BEFORE_AND_AFTER", "EVENTUAL"),
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of the matrix; everything about it follows from the matrix seed and ``run``."""

    run: int
    klass: str
    mode: str
    duration_s: float
    levels: tuple[str, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        return FAULT_CLASSES[self.klass]


def matrix(seed: int, durations_s: tuple[float, float] = (60.0, 90.0)) -> list[RunSpec]:
    """The whole schedule of runs from one seed: MATRIX's classes, each alternating single- and
    multi-primary mode (which comes first is drawn), durations drawn in ``durations_s`` (5 s
    steps, from their own generator: other durations leave every run's class, mode and levels
    as they were), strict consistency levels rotating through LEVEL_SETS; the runs in a drawn order
    (so fault-free and faulty runs meet the machine's load alike). The fault schedule of each
    run is drawn from ``f"{seed}:{run}"`` as for any run."""
    rng = random.Random(f"{seed}:matrix")
    rng_durations = random.Random(f"{seed}:durations")  # other durations, same runs otherwise
    lo, hi = durations_s
    steps = list(range(int(lo), int(hi) + 1, 5)) or [int(lo)]
    drawn: list[tuple[str, str, float, tuple[str, ...]]] = []
    for klass, count in MATRIX:
        first_mode = rng.randrange(2)
        first_levels = rng.randrange(len(LEVEL_SETS))
        for i in range(count):
            drawn.append((klass, MODES[(first_mode + i) % 2], float(rng_durations.choice(steps)),
                          LEVEL_SETS[(first_levels + i) % len(LEVEL_SETS)]))
    rng.shuffle(drawn)
    return [RunSpec(i, *d) for i, d in enumerate(drawn)]


def _parse_only(text: str | None) -> set[int] | None:
    if not text:
        return None
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.runner", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--matrix", action="store_true",
                   help=f"the whole matrix from the seed ({sum(n for _, n in MATRIX)} runs: "
                        + ", ".join(f"{k} x{n}" for k, n in MATRIX) + "); --runs/--faults/--mode/--duration unused")
    p.add_argument("--durations", default="60-90", help="with --matrix: range of run durations in seconds (LO-HI)")
    p.add_argument("--only", default=None, help="run only these run numbers, e.g. 3,7 or 0-5 (the others are not run)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=40.0, help="seconds of workload per run")
    p.add_argument("--faults", default=",".join(ALL_FAULTS),
                   help=f"comma-separated subset of {','.join(ALL_FAULTS)}, or 'none'")
    p.add_argument("--mode", choices=MODES, default="single-primary")
    p.add_argument("--levels", default=",".join(LA_LEVELS),
                   help="the list-append clients' consistency levels (without --matrix)")
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "grproxy-chaos"),
                   help="directory for histories, logs and the summary (default: $TMPDIR/grproxy-chaos)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    only = _parse_only(args.only)
    if args.matrix:
        lo, _, hi = args.durations.partition("-")
        specs = matrix(seed, (float(lo), float(hi or lo)))
        label = f"matrix of {len(specs)} runs"
        base_cmd = f"python -m tests.chaos.runner --matrix --seed {seed} --durations {args.durations}"
    else:
        kinds = () if args.faults in ("", "none") else tuple(args.faults.split(","))
        unknown = set(kinds) - set(ALL_FAULTS)
        if unknown:
            p.error(f"unknown faults {sorted(unknown)}")
        levels = tuple(x.strip().upper() for x in args.levels.split(","))
        klass = next((k for k, v in FAULT_CLASSES.items() if v == kinds), "custom")
        specs = [RunSpec(i, klass, args.mode, args.duration, levels) for i in range(args.runs)]
        custom_kinds = kinds
        label = f"{args.runs} runs of {args.duration:.0f}s, {args.mode}, faults {','.join(kinds) or 'none'}"
        base_cmd = (f"python -m tests.chaos.runner --seed {seed} --runs {args.runs} --duration {args.duration:g} "
                    f"--mode {args.mode} --faults {','.join(kinds) or 'none'} --levels {','.join(levels)}")
    selected = [s for s in specs if only is None or s.run in only]
    out = Path(args.out).resolve() / f"seed-{seed}"
    print(f"chaos: seed {seed} ({label}; running {len(selected)}) → {out}", flush=True)
    runs = []
    for spec in selected:
        kinds = spec.kinds if args.matrix else custom_kinds
        replay = f"{base_cmd} --only {spec.run}"
        labels = {"klass": spec.klass, "mode": spec.mode, "duration_s": spec.duration_s, "levels": spec.levels,
                  "replay": replay}
        started = time.monotonic()
        try:
            r = run_once(seed, spec.run, kinds, spec.duration_s, out / f"run-{spec.run}",
                         single_primary=spec.mode == "single-primary", levels=spec.levels, klass=spec.klass,
                         replay=replay)
        except Exception as exc:  # noqa: BLE001 - a run that could not even start is a finding too
            r = failed_run(seed, spec.run, out / f"run-{spec.run}", exc, **labels)
        runs.append(r)
        sr = r.stale_reads()
        print(f"  run {r.seed} [{spec.klass}, {spec.mode}, {spec.duration_s:.0f}s] in {time.monotonic() - started:.0f}s: "
              f"ops {r.ops}, faults {len(r.faults)}, violations {r.violations() or 'none'}, "
              f"stale {sr['strict']}/{sr['eventual']} (strict/eventual), "
              f"converged {r.converged_s if r.converged_s is None else round(r.converged_s, 1)}", flush=True)
        write_summary(out, runs, seed, base_cmd)  # after each run: a long matrix shows progress
    text = write_summary(out, runs, seed, base_cmd)
    print(text)
    print(f"chaos: summary in {out / 'summary.md'}; replay with --seed {seed}", flush=True)
    return 0 if all(r.valid for r in runs) else 1


def write_summary(out: Path, runs: list[RunResult], seed: int, command: str) -> str:
    text = summary_markdown(runs, seed, command, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps([r.to_dict() for r in runs], indent=2, default=str) + "\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
