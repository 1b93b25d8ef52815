"""Member._resolve_local (before a new incarnation) against fakes: it ends the prepared XA
transactions the old incarnation left only once no certified local commit is between its
position record and its XA COMMIT, and keeps the seqs committed while it read the positions."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from replication.member import Member
from replication.positions import AppliedSet, Positions


def _fake(events: list[str], committing: set[int], stored: AppliedSet) -> Any:
    class Conn:
        async def quit(self) -> None:
            pass

    async def connect() -> Conn:
        return Conn()

    async def reopen_if_broken() -> None:
        pass

    async def resolve_prepared(_conn: Conn) -> tuple[int, int]:
        events.append(f"resolve_prepared committing={sorted(committing)}")
        return 0, 0

    async def load(_conn: Conn) -> AppliedSet:
        return stored

    async def check_outside_writes(_conn: Conn) -> None:
        events.append("check_outside_writes")

    return SimpleNamespace(
        local=SimpleNamespace(reopen_if_broken=reopen_if_broken, committing=committing,
                              resolve_prepared=resolve_prepared),
        clone_requested=False, check_outside_writes=check_outside_writes,
        _applier_task=None, positions=Positions(AppliedSet([(1, 3)])), connect=connect,
        store=SimpleNamespace(load=load), _log=SimpleNamespace(warning=lambda *a, **k: None))


def test_prepared_transactions_are_resolved_only_after_local_commits_in_flight_ended() -> None:
    async def go() -> None:
        events: list[str] = []
        committing = {4}  # seq 4: its position record is in flight, its XA COMMIT follows
        fake = _fake(events, committing, AppliedSet([(1, 4)]))
        task = asyncio.ensure_future(Member._resolve_local(fake))
        for _ in range(5):
            await asyncio.sleep(0.02)
        assert events == []  # resolve_prepared would roll seq 4 back if it read the xids now
        committing.discard(4)
        fake.positions.mark_applied(4)
        await asyncio.wait_for(task, 2.0)
        assert events == ["check_outside_writes", "resolve_prepared committing=[]"]
        assert str(fake.positions.applied) == "1-4"

    asyncio.run(go())
