"""A commit whose caller left (the client disconnected mid-COMMIT) and that then fails must
not end as "Task exception was never retrieved" in the member's log (found by fuzzing a member
port: tests/chaos/fuzz.py). The backend is a fake here: what is tested is the task's contract."""

from __future__ import annotations

import asyncio
import gc
import types

from replication.binlog import XaId
from replication.local_commit import LocalCommits
from replication.protocol.errors import BackendLost


class GoneConnection:
    """A backend connection that broke (the session closed it when its client left)."""

    closed = True

    async def execute_all(self, sql: str) -> list[object]:
        await asyncio.sleep(0.01)  # XA END / XA PREPARE in flight when the caller leaves
        raise BackendLost("Lost connection to backend (the session closed it)")

    async def execute(self, sql: str) -> object:
        raise BackendLost("Lost connection to backend (the session closed it)")


async def _no_connection() -> object:
    raise BackendLost("backend unreachable")


def test_a_failed_commit_whose_caller_left_is_not_an_unretrieved_task_exception() -> None:
    found: list[str] = []

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: found.append(ctx["message"]))
        member = types.SimpleNamespace(connect=_no_connection, config=types.SimpleNamespace(uuid="m1"))
        commits = LocalCommits(member)  # type: ignore[arg-type]
        txn = types.SimpleNamespace(preparing=False)
        caller = asyncio.get_running_loop().create_task(
            commits.commit(GoneConnection(), XaId(1, b"g", b"b"), txn, ack=False))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        caller.cancel()  # the client left
        await asyncio.sleep(0.1)
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(run())
    gc.collect()
    assert found == []
