"""Membership you can trust (issue [E]): restarts, the whole-group reboot, group identity and
a dead backend, on `grproxy sandbox` with real MariaDB servers, checked as a DBA would.

- A member killed with -9 and restarted exactly as the README says (`grproxy serve --config
  <base-dir>/memberN/grproxy.toml`) rejoins the same group and holds every acknowledged write,
  the bootstrap member included; the group never splits (one group uuid, one view).
- Every member killed within a second, all restarted, then `grproxy reboot`: one group again,
  with every acknowledged write.
- `--bootstrap` on a backend that already belonged to a group is refused with a message that
  says how to rejoin; a backend holding another group's transactions, or seqs the group does
  not have, is refused and the group goes on.
- The primary's MariaDB dies: its member goes to ERROR and leaves; a new primary takes writes.

Every test ends with identical checksums and GTID sets on every ONLINE member.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import pymysql
import pytest

if TYPE_CHECKING:  # the fixtures hand these out; `conftest` is no importable module at run time
    from conftest import MemberInfo, Sandbox

pytestmark = pytest.mark.e2e

ONLINE_TIMEOUT_S = 120
WRITE_RETRY_S = 60


def _status(sandbox: Sandbox, member: MemberInfo) -> dict[str, object]:
    """`/* grproxy */ GROUP STATUS` on the member's port."""
    c = sandbox.connect_member(member)
    try:
        with c.cursor() as cur:
            cur.execute("/* grproxy */ GROUP STATUS")
            names = [d[0] for d in cur.description]
            return dict(zip(names, cur.fetchone()))
    finally:
        c.close()


def _wait_status(sandbox: Sandbox, member: MemberInfo, predicate: Callable[[dict[str, object]], bool],
                 what: str, timeout_s: float = ONLINE_TIMEOUT_S) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = _status(sandbox, member)
            if predicate(last):  # type: ignore[arg-type]
                return last  # type: ignore[return-value]
        except pymysql.MySQLError as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{member.id}: {what} not within {timeout_s:.0f}s (last: {last})\n{sandbox.log_tail()}")


def _wait_all_online(sandbox: Sandbox, count: int) -> None:
    """Every member ONLINE, and every member's table shows `count` ONLINE members."""
    for m in sandbox.members:
        _wait_status(sandbox, m, lambda s: s["MEMBER_STATE"] == "ONLINE", "ONLINE")
    deadline = time.monotonic() + ONLINE_TIMEOUT_S
    for m in sandbox.members:
        while True:
            try:
                rows: object = sandbox.group_members(via=m)
            except AssertionError as exc:  # a member's Announce not delivered here yet (no address)
                rows = str(exc)
            if (isinstance(rows, list) and sum(1 for g in rows if g.state == "ONLINE") == count
                    and len(rows) == count):
                break
            assert time.monotonic() < deadline, f"{m.id} sees {rows}"
            time.sleep(0.3)


class Writer:
    """Inserts numbered rows through the router until stopped; remembers which were
    acknowledged (OK) and which have an unknown outcome (the connection broke mid-commit)."""

    def __init__(self, sandbox: Sandbox, table: str) -> None:
        self.sandbox = sandbox
        self.table = table
        self.acked: list[int] = []
        self.unknown: list[int] = []
        self.errors: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Writer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WRITE_RETRY_S + 30)

    def _run(self) -> None:
        n = 0
        conn: pymysql.connections.Connection | None = None
        while not self._stop.is_set():
            n += 1
            try:
                if conn is None:
                    conn = self.sandbox.connect(read_timeout=30, write_timeout=30)
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} (id, v) VALUES ({n}, {n})")
                self.acked.append(n)
            except pymysql.err.OperationalError as exc:
                code = exc.args[0]
                self.errors[code] = self.errors.get(code, 0) + 1
                if code in (2006, 2013, 2003, 2014):
                    self.unknown.append(n)  # the answer was lost: it may or may not have committed
                    conn = None
                time.sleep(0.1)
            except pymysql.MySQLError as exc:
                code = exc.args[0] if exc.args else 0
                self.errors[code] = self.errors.get(code, 0) + 1
                time.sleep(0.1)
            time.sleep(0.01)
        if conn is not None:
            conn.close()


def _rows(sandbox: Sandbox, member: MemberInfo, table: str) -> set[int]:
    c = sandbox.connect_backend(member)
    try:
        with c.cursor() as cur:
            cur.execute(f"SELECT id FROM {table}")
            return {int(r[0]) for r in cur.fetchall()}
    finally:
        c.close()


def _assert_converged(sandbox: Sandbox, tables: list[str]) -> None:
    """Every member ONLINE with the same GTID set and the same checksums (waits for the
    appliers to catch up)."""
    deadline = time.monotonic() + ONLINE_TIMEOUT_S
    while True:
        statuses = [_status(sandbox, m) for m in sandbox.members]
        sums = [sandbox.checksums(m, tables) for m in sandbox.members]
        gtids = {s["GTID_EXECUTED"] for s in statuses}
        groups = {s["GROUP_UUID"] for s in statuses}
        if len(gtids) == 1 and len(set(sums)) == 1 and all(s["MEMBER_STATE"] == "ONLINE" for s in statuses):
            assert len(groups) == 1 and None not in groups
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"members did not converge: {statuses} {sums}\n{sandbox.log_tail()}")
        time.sleep(0.5)


def _prepare(sandbox: Sandbox, table: str) -> None:
    c = sandbox.connect()
    try:
        with c.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS app")
            cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT)")
    finally:
        c.close()


def _wait_acked(writer: Writer, more_than: int) -> None:
    deadline = time.monotonic() + WRITE_RETRY_S
    while len(writer.acked) <= more_than:
        assert time.monotonic() < deadline, f"writes did not resume (errors {writer.errors})"
        time.sleep(0.1)


def test_each_member_killed_and_restarted_rejoins_the_same_group(sandbox_factory: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_factory(members=3)
    table = "app.restarts"
    _prepare(sandbox, table)
    group = _status(sandbox, sandbox.members[0])["GROUP_UUID"]
    writer = Writer(sandbox, table).start()
    try:
        for member in list(sandbox.members):  # member1 first: it bootstrapped the group
            _wait_acked(writer, len(writer.acked) + 20)
            sandbox.kill_member(member)
            _wait_acked(writer, len(writer.acked) + 20)  # the group goes on (a new primary if needed)
            restarted = sandbox.restart_member(member)
            status = _wait_status(sandbox, restarted, lambda s: s["MEMBER_STATE"] == "ONLINE", "ONLINE after restart")
            assert status["GROUP_UUID"] == group, "the restarted member is in another group"
            _wait_all_online(sandbox, 3)
    finally:
        writer.stop()
    _assert_converged(sandbox, [table])
    for m in sandbox.members:
        rows = _rows(sandbox, m, table)
        lost = set(writer.acked) - rows
        assert not lost, f"{m.id} lost acknowledged writes {sorted(lost)[:20]}"
        assert rows <= set(writer.acked) | set(writer.unknown), "a write nobody attempted appeared"
        assert _status(sandbox, m)["GROUP_UUID"] == group


def test_whole_group_outage_then_reboot(sandbox_factory: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_factory(members=3)
    table = "app.outage"
    _prepare(sandbox, table)
    group = _status(sandbox, sandbox.members[0])["GROUP_UUID"]
    writer = Writer(sandbox, table).start()
    try:
        _wait_acked(writer, 50)
        for member in list(sandbox.members):  # all within a second
            sandbox.signal_member(member, signal.SIGKILL)
        time.sleep(1)
    finally:
        writer.stop()
    acked = list(writer.acked)
    assert acked
    for member in list(sandbox.members):
        sandbox.restart_member(member)
    # With nobody to join, restarted members wait (they never bootstrap by themselves).
    for member in sandbox.members:
        status = _wait_status(sandbox, member, lambda s: s["MEMBER_STATE"] in ("RECOVERING", "ERROR"), "waiting")
        assert status["GROUP_UUID"] == group
        assert status["IN_GROUP"] in (0, "0")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "grproxy", "reboot",
         *[arg for m in sandbox.members for arg in ("--config", str(sandbox.member_config(m)))]],
        capture_output=True, text=True, timeout=ONLINE_TIMEOUT_S + 30,
    )
    print(f"reboot took {time.monotonic() - started:.1f}s: {done.stdout}")
    assert done.returncode == 0, done.stdout + done.stderr + sandbox.log_tail()
    assert "rebooted from" in done.stdout
    _wait_all_online(sandbox, 3)
    _assert_converged(sandbox, [table])
    for m in sandbox.members:
        lost = set(acked) - _rows(sandbox, m, table)
        assert not lost, f"{m.id} lost acknowledged writes {sorted(lost)[:20]}"
        assert _status(sandbox, m)["GROUP_UUID"] == group
    # The group takes writes again through the router.
    c = sandbox.connect()
    try:
        deadline = time.monotonic() + WRITE_RETRY_S
        while True:
            try:
                with c.cursor() as cur:
                    cur.execute(f"INSERT INTO {table} (id, v) VALUES (1000000, 1)")
                break
            except pymysql.MySQLError:
                assert time.monotonic() < deadline
                time.sleep(0.3)
    finally:
        c.close()
    # A second reboot while the group runs is refused.
    again = subprocess.run([sys.executable, "-m", "grproxy", "reboot",
                            *(f"127.0.0.1:{m.member_port}" for m in sandbox.members)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "still running" in again.stderr, again.stdout + again.stderr


def test_identity_is_checked_at_start_and_at_join(sandbox_factory: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_factory(members=3)
    table = "app.identity"
    _prepare(sandbox, table)
    c = sandbox.connect()
    with c.cursor() as cur:
        for i in range(10):
            cur.execute(f"INSERT INTO {table} VALUES ({i}, {i})")
    c.close()
    first, _, third = sandbox.members
    group = _status(sandbox, first)["GROUP_UUID"]

    # --bootstrap on a backend that belonged to the group: refused, says how to rejoin.
    sandbox.kill_member(first)
    refused = sandbox.restart_member(first, "--bootstrap")
    proc = sandbox.restarted_process(refused)
    assert proc is not None
    assert proc.wait(60) != 0
    log = (sandbox.base_dir / "sb" / first.id / "grproxy.log").read_text(errors="replace")
    assert "bootstrap_group refused" in log and "bootstrap_group = false" in log
    # Restarted as the README says, it rejoins.
    first = sandbox.restart_member(first)
    _wait_status(sandbox, first, lambda s: s["MEMBER_STATE"] == "ONLINE" and s["GROUP_UUID"] == group, "rejoined")

    # A backend holding another group's transactions is refused; the group goes on.
    sandbox.kill_member(third)
    b = sandbox.connect_backend(third)
    foreign = str(uuid.uuid4())
    with b.cursor() as cur:
        # Unlogged: this stands for a member's own state, not for a write around grproxy (which
        # the member refuses at start for itself: test_write_path).
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"UPDATE grproxy.meta SET value = '{foreign}' WHERE name = 'group_uuid'")
    third = sandbox.restart_member(third)
    status = _wait_status(sandbox, third, lambda s: s["MEMBER_STATE"] == "ERROR", "refused")
    assert "another group" in str(status["ERROR"]) and foreign in str(status["ERROR"])
    rows = sandbox.wait_group(lambda g: sum(1 for x in g if x.state == "ONLINE") == 2 and len(g) == 2, 60,
                              "the refused member left the view")
    assert third.id not in {g.member.id for g in rows}

    # Seqs the group does not have: refused, naming them.
    sandbox.kill_member(third)
    with b.cursor() as cur:
        cur.execute(f"UPDATE grproxy.meta SET value = '{group}' WHERE name = 'group_uuid'")
        cur.execute("INSERT INTO grproxy.applied (seq) VALUES (1000000)")
    third = sandbox.restart_member(third)
    status = _wait_status(sandbox, third, lambda s: s["MEMBER_STATE"] == "ERROR", "refused")
    assert "does not have" in str(status["ERROR"]) and f"{group}:1000000" in str(status["ERROR"])

    # Put right, START (rejoin) brings it back.
    with b.cursor() as cur:
        cur.execute("DELETE FROM grproxy.applied WHERE seq = 1000000")
    b.close()
    sandbox.kill_member(third)
    third = sandbox.restart_member(third)
    _wait_all_online(sandbox, 3)
    _assert_converged(sandbox, [table])


def test_primary_backend_dies_and_a_new_primary_takes_writes(sandbox_factory: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_factory(members=3)
    table = "app.failover"
    _prepare(sandbox, table)
    primary = sandbox.primary()
    others = [m for m in sandbox.members if m.id != primary.id]
    started = time.monotonic()
    os.kill(primary.backend.pid, signal.SIGKILL)
    # Its member goes to ERROR and leaves: the others elect a new primary at once (no expel wait).
    rows = sandbox.wait_group(lambda g: len(g) == 2 and any(x.role == "PRIMARY" and x.state == "ONLINE" for x in g),
                              60, "a new primary without the old one")
    for m in others:
        assert primary.id not in {g.member.id for g in sandbox.group_members(via=m)}
    log = (sandbox.base_dir / "sb" / primary.id / "grproxy.log").read_text(errors="replace")
    assert "stopped answering" in log
    c = sandbox.connect()
    try:
        deadline = time.monotonic() + WRITE_RETRY_S
        while True:
            try:
                with c.cursor() as cur:
                    cur.execute(f"INSERT INTO {table} VALUES (1, 1)")
                break
            except pymysql.MySQLError:
                assert time.monotonic() < deadline, sandbox.log_tail()
                time.sleep(0.2)
    finally:
        c.close()
    print(f"primary's backend killed → first write through the router: {time.monotonic() - started:.1f}s")
    assert primary.id not in {g.member.id for g in rows}
