"""GR's admin SQL and the router's majority rule, end to end (`grproxy sandbox`, PyMySQL).

Waits poll a condition up to a generous bound; nothing asserts how long something took.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pymysql
import pytest

if TYPE_CHECKING:  # the fixtures hand these out; `conftest` is no importable module at run time
    from conftest import MemberInfo, Sandbox

WAIT_S = 90.0


def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.1)


def query(conn: pymysql.connections.Connection, sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def uuids(sb: Sandbox) -> dict[str, str]:
    """member id (sandbox's) → MEMBER_ID (uuid in the group)."""
    conn = sb.connect_member(sb.live_members()[0])
    try:
        rows = query(conn, "SELECT MEMBER_ID, MEMBER_PORT FROM performance_schema.replication_group_members")
    finally:
        conn.close()
    by_port = {m.member_port: m.id for m in sb.members}
    return {by_port[int(port)]: str(uuid) for uuid, port in rows}


class Writer:
    """A light write load through the router, one INSERT at a time, retried on what a client
    retries across a primary change (1290, 3101, 3100, 2013, 3783)."""

    RETRIED = {1290, 3101, 3100, 2013, 3783}

    def __init__(self, sb: Sandbox, first_id: int) -> None:
        self.sb = sb
        self.next_id = first_id
        self.acked: list[int] = []
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        conn = None
        try:
            while not self.stop.is_set():
                try:
                    if conn is None:
                        conn = self.sb.connect()
                    query(conn, f"INSERT INTO admin_e2e.t VALUES ({self.next_id}, {self.next_id})")
                except pymysql.err.IntegrityError as exc:
                    if exc.args[0] != 1062:  # an earlier try committed after all
                        raise
                except pymysql.MySQLError as exc:
                    if exc.args[0] not in self.RETRIED:
                        raise
                    if exc.args[0] == 2013 and conn is not None:
                        conn.close()
                        conn = None
                    time.sleep(0.05)
                    continue
                self.acked.append(self.next_id)
                self.next_id += 1
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc
        finally:
            if conn is not None:
                conn.close()

    def progressed(self, by: int = 5) -> None:
        start = len(self.acked)
        wait_until(lambda: len(self.acked) >= start + by or self.failure is not None, f"{by} more writes")
        assert self.failure is None, self.failure

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(WAIT_S)
        assert self.failure is None, self.failure


def checksums(sb: Sandbox) -> list[object]:
    out = []
    for m in sb.live_members():
        conn = sb.connect_backend(m)
        try:
            out.append(query(conn, "CHECKSUM TABLE admin_e2e.t")[0][1])
        finally:
            conn.close()
    return out


def test_group_actions_through_the_router_under_load(sandbox: Sandbox) -> None:
    sb = sandbox
    ids = uuids(sb)
    router = sb.connect()
    query(router, "CREATE DATABASE IF NOT EXISTS admin_e2e")
    query(router, "CREATE TABLE admin_e2e.t (id INT PRIMARY KEY, v INT NOT NULL)")
    first = sb.primary()
    second = next(m for m in sb.secondaries())
    writer = Writer(sb, first_id=1)
    try:
        writer.progressed()
        assert query(router, f"SELECT group_replication_set_as_primary('{ids[second.id]}')") == [
            (f"Primary server switched to: {ids[second.id]}",)]
        sb.wait_group(lambda rows: any(g.member.id == second.id and g.role == "PRIMARY" for g in rows), WAIT_S,
                      "the appointed member is PRIMARY")
        writer.progressed()
        assert query(router, "SELECT group_replication_switch_to_multi_primary_mode()") == [
            ("Mode switched to multi-primary successfully.",)]
        sb.wait_group(lambda rows: all(g.role == "PRIMARY" for g in rows), WAIT_S, "every member PRIMARY")
        assert dict(query(router, "SHOW VARIABLES LIKE 'group_replication_single_primary_mode'")) == {
            "group_replication_single_primary_mode": "OFF"}
        writer.progressed()
        assert query(router, f"SELECT group_replication_switch_to_single_primary_mode('{ids[first.id]}')") == [
            ("Mode switched to single-primary successfully.",)]
        sb.wait_group(lambda rows: [g.member.id for g in rows if g.role == "PRIMARY"] == [first.id], WAIT_S,
                      "the first member PRIMARY again, alone")
        writer.progressed()
    finally:
        writer.finish()
    wait_until(lambda: len(set(checksums(sb))) == 1, "every backend identical (CHECKSUM TABLE)")
    conn = sb.connect_backend(second)
    try:
        present = {row[0] for row in query(conn, "SELECT id FROM admin_e2e.t")}
    finally:
        conn.close()
    assert set(writer.acked) <= present
    stats = query(router, "SELECT MEMBER_ID, COUNT_TRANSACTIONS_CHECKED FROM "
                          "performance_schema.replication_group_member_stats ORDER BY MEMBER_ID")
    assert sorted(r[0] for r in stats) == sorted(ids.values())
    query(router, "DROP DATABASE admin_e2e")
    router.close()


def test_set_as_primary_lets_running_transactions_end_then_rolls_back_the_rest(
        sandbox_factory: Callable[..., Sandbox]) -> None:
    """GR's set_as_primary(uuid[, timeout]) on a primary with an open transaction: without a
    timeout the call waits until the transaction ends (its commit stands); with one, new
    transactions are refused meanwhile (1290) and the one still open at the timeout is rolled
    back (its COMMIT answers 3101). Every backend ends identical."""
    sb = sandbox_factory(members=3)
    ids = uuids(sb)
    admin = sb.connect()
    query(admin, "CREATE DATABASE ho")
    query(admin, "CREATE TABLE ho.t (id INT PRIMARY KEY)")
    first = sb.primary()
    second = sb.secondaries()[0]

    # No timeout: the call returns only once the open transaction committed.
    open_txn = sb.connect_member(first)
    query(open_txn, "BEGIN")
    query(open_txn, "INSERT INTO ho.t VALUES (1)")
    answer: list[object] = []
    call = threading.Thread(target=lambda: answer.append(
        query(sb.connect(), f"SELECT group_replication_set_as_primary('{ids[second.id]}')")), daemon=True)
    call.start()
    call.join(3.0)
    assert call.is_alive() and not answer, answer  # still waiting for the open transaction
    assert sb.primary().id == first.id
    query(open_txn, "INSERT INTO ho.t VALUES (2)")  # new statements still run meanwhile
    query(open_txn, "COMMIT")
    call.join(WAIT_S)
    assert answer == [[(f"Primary server switched to: {ids[second.id]}",)]]
    sb.wait_group(lambda rows: any(g.member.id == second.id and g.role == "PRIMARY" for g in rows), WAIT_S,
                  "the appointed member is PRIMARY")
    open_txn.close()

    # A 2 s timeout: the transaction still open then is rolled back.
    open_txn = sb.connect_member(second)
    query(open_txn, "BEGIN")
    query(open_txn, "INSERT INTO ho.t VALUES (3)")
    answer.clear()
    call = threading.Thread(target=lambda: answer.append(
        query(sb.connect(), f"SELECT group_replication_set_as_primary('{ids[first.id]}', 2)")), daemon=True)
    call.start()
    time.sleep(0.5)
    late = sb.connect_member(second)
    with pytest.raises(pymysql.err.MySQLError) as info:
        query(late, "INSERT INTO ho.t VALUES (4)")  # no new transaction while it hands over
    assert info.value.args[0] == 1290, info.value
    late.close()
    call.join(WAIT_S)
    assert answer == [[(f"Primary server switched to: {ids[first.id]}",)]]
    with pytest.raises(pymysql.err.MySQLError) as info:
        query(open_txn, "COMMIT")
    assert info.value.args[0] == 3101, info.value
    open_txn.close()
    sb.wait_group(lambda rows: any(g.member.id == first.id and g.role == "PRIMARY" for g in rows), WAIT_S,
                  "the first member is PRIMARY again")
    query(admin, "INSERT INTO ho.t VALUES (5)")

    def rows_everywhere() -> list[list[tuple[Any, ...]]]:
        out = []
        for m in sb.live_members():
            conn = sb.connect_backend(m)
            try:
                out.append(query(conn, "SELECT id FROM ho.t ORDER BY id"))
            finally:
                conn.close()
        return out
    wait_until(lambda: rows_everywhere() == [[(1,), (2,), (5,)]] * 3, "every backend holds 1, 2 and 5 only")
    admin.close()


def test_router_stops_routing_without_a_majority(sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory(members=3)
    conn = sb.connect()
    assert query(conn, "SELECT 1") == [(1,)]
    survivor: MemberInfo = sb.primary()
    for m in list(sb.members):
        if m.id != survivor.id:
            sb.kill_member(m)

    def no_quorum() -> bool:
        c = sb.connect_member(survivor)
        try:
            return all(r[6] == 0 for r in query(c, "/* grproxy */ ROUTER MEMBERS"))
        finally:
            c.close()
    wait_until(no_quorum, "the survivor says its view has no quorum")

    def refused() -> bool:
        try:
            query(conn, "SELECT 1")
        except pymysql.MySQLError as exc:
            return exc.args[0] == 3783
        return False
    # The survivor still answers, and lists itself ONLINE, but without a majority its table is
    # not installed: nothing is routed (no stale read, no write that cannot commit).
    wait_until(refused, "the router refuses statements (3783)")
    with pytest.raises(pymysql.MySQLError) as info:
        query(conn, "INSERT INTO mysql.nothing VALUES (1)")
    assert info.value.args[0] == 3783
    conn.close()
