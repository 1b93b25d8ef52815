"""aiomysql through grproxy: a pool of concurrent sessions, each with its own transaction and
session state (no cross-talk between clients), streaming, and a client that gives up mid-query."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from compat_support import Target

pytestmark = pytest.mark.timeout(120)

TASKS = 60
POOL_SIZE = 8


async def _workload(t: Target, table: str) -> dict[str, Any]:
    import aiomysql

    out: dict[str, Any] = {}
    async with asyncio.timeout(90):
        pool = await aiomysql.create_pool(minsize=2, maxsize=POOL_SIZE, autocommit=True, **t.aiomysql_kwargs())
        try:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(f"DROP TABLE IF EXISTS {table}")
                await cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, owner INT, note VARCHAR(40))")

            async def task(i: int) -> Any:
                async with pool.acquire() as conn, conn.cursor() as cur:
                    await cur.execute("SET @mine = %s", (i,))
                    await conn.begin()
                    await cur.execute(f"INSERT INTO {table} VALUES (%s, %s, %s)", (i, i, f"task {i} 😀"))
                    await cur.execute("SELECT @mine, @@in_transaction, SLEEP(0.01)")
                    (mine, in_trx, _) = await cur.fetchone()
                    if i % 5 == 0:
                        await conn.rollback()
                    else:
                        await conn.commit()
                    await cur.execute(f"SELECT owner FROM {table} WHERE id = %s", (i,))
                    row = await cur.fetchone()
                    return mine, in_trx, row

            results = await asyncio.gather(*(task(i) for i in range(TASKS)))
            out["results"] = results
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(f"SELECT id, owner, note FROM {table} ORDER BY id")
                out["rows"] = await cur.fetchall()

            # Streaming with an unbuffered cursor.
            async with pool.acquire() as conn, conn.cursor(aiomysql.SSCursor) as cur:
                await cur.execute("SELECT seq, REPEAT('s', seq % 50) FROM seq_1_to_30000")
                count = 0
                last = None
                while True:
                    rows = await cur.fetchmany(1000)
                    if not rows:
                        break
                    count += len(rows)
                    last = rows[-1]
                out["streamed"] = (count, last)

            # A client that gives up mid-query: the connection is dropped, the pool goes on.
            conn = await pool.acquire()
            try:
                async with conn.cursor() as cur:
                    await asyncio.wait_for(cur.execute("SELECT SLEEP(5)"), timeout=0.3)
                out["cancelled"] = "finished"
            except (asyncio.TimeoutError, TimeoutError):
                out["cancelled"] = "timed out"
            finally:
                conn.close()
                pool.release(conn)
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute("SELECT 'pool still works'")
                out["after_cancel"] = await cur.fetchall()
        finally:
            pool.close()
            await pool.wait_closed()
    return out


def test_aiomysql_pool_concurrency(target: Target, direct: Target) -> None:
    observed = asyncio.run(_workload(target, target.table("async")))
    reference = asyncio.run(_workload(direct, direct.table("async")))
    assert observed == reference
    for i, (mine, in_trx, row) in enumerate(observed["results"]):
        assert mine == i and in_trx == 1  # each session saw its own variable, inside its transaction
        assert row == (None if i % 5 == 0 else (i,))
    assert len(observed["rows"]) == TASKS - TASKS // 5
    assert observed["streamed"] == (30000, (30000, "s" * 0))
    assert observed["cancelled"] == "timed out"
    assert observed["after_cancel"] == (("pool still works",),)
