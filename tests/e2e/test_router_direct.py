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
ROUTER_NOTICES_S = 2.0  # the router polls each member's default level every 0.5 s


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


def test_new_sessions_start_at_a_changed_global_level(sandbox: Sandbox) -> None:
    """`SET GLOBAL group_replication_consistency` on the member ports (not through the router):
    new router sessions start at the new level, although the router's pooled member connections
    were made (and reset) under the old one."""
    import time

    def level_of_a_new_session() -> str:
        with contextlib.closing(sandbox.connect()) as c, c.cursor() as cur:
            cur.execute("SELECT @@group_replication_consistency")
            level = cur.fetchone()[0]
        time.sleep(0.3)  # the router resets the session's connections and pools them again
        return level

    def set_global(level: str) -> None:
        for m in sandbox.members:
            with contextlib.closing(sandbox.connect_member(m)) as c, c.cursor() as cur:
                cur.execute(f"SET GLOBAL group_replication_consistency = '{level}'")

    for _ in range(4):  # pooled member connections at EVENTUAL
        assert level_of_a_new_session() == "EVENTUAL"
    set_global("BEFORE")
    try:
        time.sleep(ROUTER_NOTICES_S)
        # Every new session now: a pooled connection reset under EVENTUAL must not serve one.
        assert [level_of_a_new_session() for _ in range(6)] == ["BEFORE"] * 6
    finally:
        set_global("EVENTUAL")
    deadline = time.monotonic() + 10
    while level_of_a_new_session() != "EVENTUAL":
        assert time.monotonic() < deadline, "new router sessions kept BEFORE after it was set back"
        time.sleep(0.2)
