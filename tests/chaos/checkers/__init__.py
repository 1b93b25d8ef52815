"""Checkers: pure functions over a history (tests/chaos/history.py), outside the code under test.

Each returns a :class:`~tests.chaos.checkers.result.CheckResult` (anomalies by kind, with the
offending operations). None of them does I/O; the runner collects the inputs.
"""

from .bank import check_bank
from .convergence import MemberState, check_convergence
from .list_append import check_list_append
from .lost_writes import check_lost_writes
from .result import Anomaly, CheckResult
from .stale_reads import check_stale_reads

__all__ = [
    "Anomaly",
    "CheckResult",
    "MemberState",
    "check_bank",
    "check_convergence",
    "check_list_append",
    "check_lost_writes",
    "check_stale_reads",
]
