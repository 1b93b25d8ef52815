"""Direct reads: the router reads plain EVENTUAL statements from the chosen member's backend
itself (one hop), and everything a member must see or enforce through the member port.

The BEFORE tests of test_router.py (a held applier makes a BEFORE read wait or fail with 3781)
show that BEFORE reads are not read directly; these show that EVENTUAL ones are, and that what
depends on the connection a read ran on (SHOW WARNINGS) follows it.
"""

from __future__ import annotations

import contextlib
import signal
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Sandbox

pytestmark = pytest.mark.e2e

READ_TIMEOUT_S = 10  # a read that went through the frozen member port would wait forever
ROUNDS = 15


def test_eventual_reads_do_not_need_the_member_process(sandbox_factory: Callable[..., Sandbox]) -> None:
    """With a secondary's grproxy process frozen (SIGSTOP: its member port accepts nothing,
    its backend is fine), EVENTUAL reads routed to that secondary are still answered, by its
    backend. Through the member port they would hang."""
    sb = sandbox_factory(members=3)
    conns = [sb.connect(read_timeout=READ_TIMEOUT_S) for _ in range(6)]
    try:
        for c in conns:  # each session picks its secondary (idle sessions are spread by id)
            with c.cursor() as cur:
                cur.execute("SELECT @@port")
        victim = sb.secondaries()[0]
        seen: Counter[int] = Counter()
        sb.signal_member(victim, signal.SIGSTOP)
        try:
            for _ in range(ROUNDS):
                for c in conns:
                    with c.cursor() as cur:
                        cur.execute("SELECT @@port")
                        seen[cur.fetchone()[0]] += 1
        finally:
            sb.signal_member(victim, signal.SIGCONT)
        assert sum(seen.values()) == ROUNDS * len(conns)
        assert seen[victim.backend.port] > 0, (
            f"no read reached the frozen secondary's backend ({dict(seen)}); "
            f"backend ports: { {m.id: m.backend.port for m in sb.members} }")
        assert sb.primary().backend.port not in seen, "an EVENTUAL autocommit read went to the primary"
    finally:
        for c in conns:
            c.close()


def test_show_warnings_reads_the_connection_of_the_previous_read(sandbox: Sandbox) -> None:
    with contextlib.closing(sandbox.connect()) as c, c.cursor() as cur:
        for _ in range(5):
            cur.execute("SELECT CAST('12abc' AS UNSIGNED) AS n, @@port")
            assert cur.fetchone()[0] == 12
            cur.execute("SHOW WARNINGS")
            warnings = cur.fetchall()
            assert [(w[0], w[1]) for w in warnings] == [("Warning", 1292)], warnings
            cur.execute("SELECT @@warning_count")
            assert cur.fetchone() == (1,)
