"""Concurrent sessions capturing on A; their transactions applied on B in commit order; A == B.

Sessions contend on the same rows (counters updated by ON DUPLICATE KEY UPDATE and by UPDATE,
rows deleted and re-inserted) and interleave AUTO_INCREMENT inserts. If any image were read from
a stale snapshot, or any generated key were attributed to the wrong session, applying the
transactions in commit order on B would not reproduce A.

The commit order is taken from the server: the last statement of each transaction bumps a
ticket row (not captured), whose lock is held to commit, so ticket order is commit order.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from grproxy.mysqld import ServerHandle
from replication.capture import capture_statement
from replication.protocol.errors import BackendError
from replication.rowimage import RowChange, apply_changes
from replication.schema import SchemaCatalog
from test_capture_support import DB, Pair, open_conn, table_state

SESSIONS = 4
TRANSACTIONS_PER_SESSION = 12
SETUP = [
    "CREATE TABLE counter (name VARCHAR(10) PRIMARY KEY, n BIGINT NOT NULL, touched TIMESTAMP(6) NOT NULL "
    "DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
    "CREATE TABLE event (id BIGINT AUTO_INCREMENT PRIMARY KEY, session INT, body VARCHAR(40), at DATETIME(6))",
    "CREATE TABLE slot (id INT PRIMARY KEY, owner INT, v DOUBLE)",
    "CREATE TABLE ticket (id INT PRIMARY KEY, n INT NOT NULL)",
    "INSERT INTO ticket VALUES (1, 0)",
    "INSERT INTO counter (name, n) VALUES ('a', 0), ('b', 0)",
    "INSERT INTO slot VALUES (1, 0, 0), (2, 0, 0), (3, 0, 0)",
]


def _statements(rng: random.Random, session: int) -> list[str]:
    out = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(5)
        if kind == 0:
            rows = ", ".join(f"({session}, UUID(), NOW(6))" for _ in range(rng.randint(1, 4)))
            out.append(f"INSERT INTO event (session, body, at) VALUES {rows}")
        elif kind == 1:
            out.append(f"INSERT INTO counter (name, n) VALUES ('{rng.choice('abc')}', 1) ON DUPLICATE KEY UPDATE n = n + 1")
        elif kind == 2:
            out.append(f"UPDATE slot SET owner = {session}, v = v + RAND() WHERE id = {rng.randint(1, 3)}")
        elif kind == 3:
            out.append(f"DELETE FROM slot WHERE owner = {session} ORDER BY id LIMIT 1")
        else:
            out.append(f"INSERT IGNORE INTO slot VALUES ({rng.randint(1, 4)}, {session}, 0)")
    return out


@pytest.fixture(scope="module")
def pair(backend_factory: Callable[..., ServerHandle]) -> Pair:
    return Pair(backend_factory("concurrent_a"), backend_factory("concurrent_b"))


def test_concurrent_sessions_replicate_in_commit_order(pair: Pair) -> None:
    pair.reset(SETUP)
    committed: list[tuple[int, list[RowChange]]] = []
    catalog = SchemaCatalog()  # shared, as a member shares it between its sessions

    async def session(index: int) -> None:
        rng = random.Random(index)
        conn = await open_conn(pair.a, DB)
        try:
            await conn.execute("SET time_zone = '+02:00'")
            for _ in range(TRANSACTIONS_PER_SESSION):
                statements = _statements(rng, index)
                while True:
                    changes: list[RowChange] = []
                    await conn.execute("BEGIN")
                    try:
                        for sql in statements:
                            _, got = await capture_statement(conn, sql, DB, catalog, sql_mode=pair.sql_mode)
                            changes += got
                        r = await conn.execute("UPDATE ticket SET n = LAST_INSERT_ID(n + 1) WHERE id = 1")
                        await conn.execute("COMMIT")
                    except BackendError as exc:
                        if exc.backend_errno != 1213:  # deadlock: the transaction is gone, retry it
                            raise
                        await conn.execute("ROLLBACK")
                        continue
                    committed.append((r.last_insert_id, changes))
                    break
        finally:
            conn.close()

    async def run_all() -> None:
        await asyncio.gather(*(session(i) for i in range(1, SESSIONS + 1)))

    asyncio.run(run_all())
    assert len(committed) == SESSIONS * TRANSACTIONS_PER_SESSION
    committed.sort(key=lambda item: item[0])
    assert [t for t, _ in committed] == list(range(1, len(committed) + 1))

    async def apply_all() -> None:
        conn = await open_conn(pair.b, DB)
        try:
            for _, changes in committed:
                await conn.execute("BEGIN")
                await apply_changes(conn, changes)
                await conn.execute("COMMIT")
        finally:
            conn.close()

    asyncio.run(apply_all())
    a, b = table_state(pair.a, DB), table_state(pair.b, DB)
    a.pop("ticket")
    b.pop("ticket")
    assert a == b
    assert len(a["event"][1]) > SESSIONS  # type: ignore[index]
