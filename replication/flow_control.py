"""Flow control, GR's QUOTA mode (DESIGN §9; seed "Fine tuning the GCT"): a pure state machine.

Every member broadcasts its counters (`MemberStats`) about once a second; each member keeps
the last report of every other one (engine.member_stats) and feeds the member's own live
counters too. At the end of every period (`flow_control_period`, 1 s) `end_period` looks at
the latest report of each member of the view:

* A member is *over* when its certification queue (`in_queue`) passes
  `flow_control_certifier_threshold` or its applier queue (`remote_in_applier_queue`) passes
  `flow_control_applier_threshold` (25000 each, GR's defaults).
* Its *capacity* is what it got through per period since its previous report: transactions
  certified (`checked`) when its certification queue is over, applied (`remote_applied`) when
  its applier queue is, the smaller when both.
* The *writers* are the members whose `local_proposed` grew since their previous report
  (at least one).

While some member is over, every writer's quota for the next period is the slowest over
member's capacity shared among the writers, minus 10 % so the queue drains (GR's
flow_control_hold_percent) — never below `QUOTA_MIN` (a member whose applier makes no
progress at all slows the group to a trickle, it does not stop it). When no member is over
any more, the quota grows 50 % a period (GR 8.0's flow_control_release_percent; the 5.7-era
seed says 10 %, which takes half a minute to get back to full speed), so throttling ends
without a lump, and is lifted once it no longer binds: this member committed less
than half of it in the last period. Mode DISABLED never throttles.

`observe()` takes the reports as they come (the member polls them every
`FLOW_OBSERVE_INTERVAL_S`, so a report's time is known to that precision, not to a period's);
`admit()` counts one local transaction against the current period: True when it may go on,
False when the quota is used up — the caller waits for the next period (`end_period`) and
asks again. Nothing here reads a clock or does I/O: the member drives both from a timer and
passes the time in.

The member passes the reports of the ONLINE members only: a joiner's queues (distributed
recovery still fetching) do not throttle the group.

Bounds: one entry per member of the view (`MEMBERS_MAX` at most); reports of members that
left the view are dropped at the next period.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import MemberStats

QUOTA_MIN = 1  # transactions per period a writer keeps while throttled
FLOW_OBSERVE_INTERVAL_S = 0.1  # how often the member looks for new reports (their time's precision)
HOLD_PERCENT = 10  # the quota is the capacity minus this share, so the queue drains
RELEASE_PERCENT = 50  # growth per period once no member is over (GR 8.0's flow_control_release_percent)


@dataclass(frozen=True, slots=True)
class FlowSettings:
    """GR's variables: group_replication_flow_control_mode / _certifier_threshold /
    _applier_threshold / _period (seconds)."""

    mode: str = "QUOTA"  # QUOTA or DISABLED
    certifier_threshold: int = 25_000
    applier_threshold: int = 25_000
    period_s: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("QUOTA", "DISABLED"):
            raise ValueError(f"flow control mode {self.mode!r} is neither QUOTA nor DISABLED")
        if self.certifier_threshold < 0 or self.applier_threshold < 0:
            raise ValueError("flow control thresholds must be >= 0")
        if not 1 <= self.period_s <= 60:
            raise ValueError("flow control period must be 1..60 s")


@dataclass(slots=True)
class _Seen:
    """The report of one member that the last period used, and its capacity then."""

    stats: MemberStats
    at: float
    certified_per_period: float | None = None
    applied_per_period: float | None = None
    writing: bool = False


@dataclass(slots=True)
class FlowControl:
    settings: FlowSettings = field(default_factory=FlowSettings)
    quota: int | None = None  # transactions this member may commit per period; None = unlimited
    used: int = 0  # admitted in the current period
    held: int = 0  # refusals in the current period (callers that had to wait)
    holds_total: int = 0
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _committed_last_period: int = 0

    def admit(self) -> bool:
        """One local transaction asks to commit in this period."""
        if self.quota is None or self.settings.mode == "DISABLED":
            self.used += 1
            return True
        if self.used < self.quota:
            self.used += 1
            return True
        self.held += 1
        self.holds_total += 1
        return False

    def observe(self, reports: dict[str, MemberStats], now: float) -> None:
        """The latest counters of the members that count (`reports`, this member's own
        included), `now` the caller's clock in seconds. A report not seen before gives its
        member's capacity: its progress since its previous report, per period. Call it often
        (a report's time is when it is first observed) and at least once a period."""
        period = self.settings.period_s
        for member in [m for m in self._seen if m not in reports]:
            del self._seen[member]
        for member, stats in reports.items():
            seen = self._seen.get(member)
            if seen is None:
                self._seen[member] = _Seen(stats, now)
                continue
            if stats == seen.stats:
                continue  # no new report: keep the last capacity
            elapsed = max(now - seen.at, 1e-3)
            scale = period / elapsed
            self._seen[member] = _Seen(
                stats, now,
                certified_per_period=max(0, stats.checked - seen.stats.checked) * scale,
                applied_per_period=max(0, stats.remote_applied - seen.stats.remote_applied) * scale,
                writing=stats.local_proposed > seen.stats.local_proposed,
            )

    def end_period(self, reports: dict[str, MemberStats] | None, now: float) -> None:
        """The period is over (after observing `reports`, when given): the quota for the next."""
        if reports is not None:
            self.observe(reports, now)
        self._committed_last_period = self.used
        self.used = 0
        self.held = 0
        if self.settings.mode == "DISABLED":
            self.quota = None
            return
        capacity = self._capacity()
        if capacity is not None:
            writers = max(1, sum(1 for s in self._seen.values() if s.writing))
            share = capacity / writers
            self.quota = max(QUOTA_MIN, int(share * (100 - HOLD_PERCENT) / 100))
            return
        if self.quota is not None:
            if self._committed_last_period * 2 < self.quota:
                self.quota = None  # it no longer binds
            else:
                self.quota = self.quota + max(1, self.quota * RELEASE_PERCENT // 100)

    def _capacity(self) -> float | None:
        """The slowest over member's capacity per period, or None when no member is over."""
        s = self.settings
        lowest: float | None = None
        for seen in self._seen.values():
            stats = seen.stats
            caps = []
            if stats.in_queue > s.certifier_threshold:
                caps.append(seen.certified_per_period)
            if stats.remote_in_applier_queue > s.applier_threshold:
                caps.append(seen.applied_per_period)
            measured = [c for c in caps if c is not None]
            if not measured:
                continue  # over since its first report: its capacity is known a period later
            cap = min(measured)
            lowest = cap if lowest is None else min(lowest, cap)
        return lowest
