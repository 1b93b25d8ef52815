"""Distributed recovery by clone (issue [E] item 3), on `grproxy sandbox` with real MariaDB servers.

- A member kept down until the donors' transaction caches (made small through `message_cache_size`
  in their config files) no longer reach back restarts, clones a donor's data in a consistent
  snapshot, fetches the rest from the cache, applies its backlog, and only then shows ONLINE;
  its copy of an ENABLED event is DISABLE ON SLAVE.
- The donor is killed while a joiner clones from it: another donor serves a new clone and the
  joiner converges.

Every test ends with identical CHECKSUM TABLE and GTID sets on every ONLINE member.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pymysql
import pytest

from grproxy.mysqld import free_port, start_server

if TYPE_CHECKING:  # the fixtures hand these out; `conftest` is no importable module at run time
    from conftest import MemberInfo, Sandbox

pytestmark = pytest.mark.e2e

ONLINE_TIMEOUT_S = 180
WRITE_RETRY_S = 60
SMALL_CACHE_BYTES = 20_000  # a few dozen transactions: a member down for longer needs a clone
SMALL_CACHE = {"message_cache_size": SMALL_CACHE_BYTES}  # every member's config from the start
DONOR_TIMEOUT_S = 8  # recovery_donor_timeout_s of the stall case (the default 30 s would only slow it)
TABLES = ["app.items", "app.parents", "app.children"]


def _query(sandbox: Sandbox, member: MemberInfo, sql: str) -> dict[str, object]:
    c = sandbox.connect_member(member)
    try:
        with c.cursor() as cur:
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            return dict(zip(names, cur.fetchone()))
    finally:
        c.close()


def _status(sandbox: Sandbox, member: MemberInfo) -> dict[str, object]:
    return _query(sandbox, member, "/* grproxy */ GROUP STATUS")


def _stats(sandbox: Sandbox, member: MemberInfo) -> dict[str, object]:
    return _query(sandbox, member, "/* grproxy */ MEMBER STATS")


def _wait(what: str, sandbox: Sandbox, check: Callable[[], bool], timeout_s: float = ONLINE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except pymysql.MySQLError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout_s:.0f}s (last error: {last})\n{sandbox.log_tail(40)}")


def _wait_online(sandbox: Sandbox, member: MemberInfo) -> None:
    _wait(f"{member.id} ONLINE", sandbox, lambda: _status(sandbox, member)["MEMBER_STATE"] == "ONLINE")


def _execute(sandbox: Sandbox, *statements: str) -> None:
    """Run each statement through the router. One refused because no primary is elected yet
    (1290, 3100), or a router that reaches no ONLINE member (2003): nothing was written, it is
    sent again until WRITE_RETRY_S."""
    c: pymysql.connections.Connection | None = None
    try:
        for sql in statements:
            deadline = time.monotonic() + WRITE_RETRY_S
            while True:
                try:
                    if c is None:
                        c = sandbox.connect(read_timeout=120, write_timeout=120)
                    with c.cursor() as cur:
                        cur.execute(sql)
                    break
                except pymysql.MySQLError as exc:
                    if not exc.args or exc.args[0] not in (1290, 3100, 2003) or time.monotonic() > deadline:
                        raise
                    if exc.args[0] == 2003:
                        c = None
                    time.sleep(0.3)
    finally:
        if c is not None:
            c.close()


def _schema(sandbox: Sandbox) -> None:
    """Tables, a foreign key, views (one over another, one calling a function), a trigger, a
    procedure, a function, a sequence moved by DDL and an event: all cloned (every other kind
    of object and state: tests/integration/test_recovery_clone_objects.py)."""
    _execute(
        sandbox,
        "CREATE DATABASE app",
        "CREATE TABLE app.items (id INT PRIMARY KEY, v INT, pad VARCHAR(400), b VARBINARY(16), d DATETIME(6), "
        "f DOUBLE, n DECIMAL(20,6), j TEXT CHARACTER SET latin1)",
        "CREATE TABLE app.parents (a INT, b VARCHAR(20), note VARCHAR(50), PRIMARY KEY (a, b))",
        "CREATE TABLE app.children (id INT PRIMARY KEY AUTO_INCREMENT, a INT, b VARCHAR(20), "
        "FOREIGN KEY (a, b) REFERENCES app.parents (a, b))",
        "CREATE TABLE app.counts (name VARCHAR(20) PRIMARY KEY, n INT)",
        "CREATE VIEW app.big AS SELECT id, v FROM app.items WHERE v > 10",
        "CREATE VIEW app.big2 AS SELECT id FROM app.big",
        # Cloned like the rest (a trigger's definition; its effects are rows like any other).
        "CREATE TRIGGER app.counted BEFORE INSERT ON app.counts FOR EACH ROW SET NEW.n = NEW.n + 1",
        "CREATE PROCEDURE app.p() SELECT COUNT(*) FROM app.items",
        "CREATE FUNCTION app.twice(x INT) RETURNS INT DETERMINISTIC RETURN 2 * x",
        "CREATE VIEW app.doubled AS SELECT id, app.twice(v) AS v2 FROM app.items",
        "CREATE SEQUENCE app.tickets START WITH 100 INCREMENT BY 10",
        "ALTER SEQUENCE app.tickets RESTART WITH 500",
        "CREATE EVENT app.nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO DELETE FROM app.counts",
    )


def _load(sandbox: Sandbox, first: int, count: int, per_txn: int = 500) -> None:
    statements = []
    for lo in range(first, first + count, per_txn):
        hi = min(first + count, lo + per_txn) - 1
        statements.append(
            "INSERT INTO app.items SELECT seq, seq % 97, REPEAT(CHAR(65 + seq % 26), 300), UNHEX(MD5(seq)), "
            "'2024-01-02 03:04:05.123456' + INTERVAL seq SECOND, seq / 7, seq * 1.5, CONCAT('é', seq) "
            f"FROM app.seq_{lo}_to_{hi}")
    _execute(sandbox, *statements)


def _small_txns(sandbox: Sandbox, first: int, count: int) -> None:
    statements = []
    for i in range(first, first + count):
        statements += [f"INSERT INTO app.parents VALUES ({i}, 'k{i}', REPEAT('n', 40))",
                       f"INSERT INTO app.children (a, b) VALUES ({i}, 'k{i}')",
                       f"UPDATE app.items SET v = v + 1 WHERE id = {i}"]
    _execute(sandbox, *statements)


def _assert_converged(sandbox: Sandbox, members: list[MemberInfo]) -> None:
    state: dict[str, object] = {}

    def same() -> bool:
        statuses = [_status(sandbox, m) for m in members]
        sums = [sandbox.checksums(m, TABLES + ["app.counts"]) for m in members]
        state.update(statuses=statuses, sums=sums)
        return (all(s["MEMBER_STATE"] == "ONLINE" for s in statuses) and len({s["GTID_EXECUTED"] for s in statuses}) == 1
                and len(set(sums)) == 1)

    _wait("identical checksums and GTID sets", sandbox, same)
    programs = []
    for m in members:
        c = sandbox.connect_backend(m)
        try:
            with c.cursor() as cur:
                cur.execute("SELECT app.twice(21), (SELECT COUNT(*) FROM app.big2), (SELECT COUNT(*) FROM "
                            "information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'app' AND TRIGGER_NAME = 'counted'), "
                            "(SELECT SUM(v2) FROM app.doubled)")
                twice, big, triggers, doubled = cur.fetchone()
                assert twice == 42 and big > 0 and triggers == 1 and doubled > 0
                cur.execute("SHOW CREATE SEQUENCE app.tickets")
                sequence = cur.fetchone()
                cur.execute("SELECT * FROM app.tickets")
                sequence_row = cur.fetchone()
                cur.execute("SELECT EVENT_DEFINITION, INTERVAL_VALUE, INTERVAL_FIELD, STARTS, TIME_ZONE "
                            "FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'app' AND EVENT_NAME = 'nightly'")
                event = cur.fetchone()
                programs.append((sequence, sequence_row, event, doubled))
        finally:
            c.close()
    assert programs[0][1][0] == 500, programs[0]  # next_not_cached_value after the RESTART
    assert all(p == programs[0] for p in programs), programs


def _event_status(sandbox: Sandbox, member: MemberInfo) -> str:
    c = sandbox.connect_backend(member)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'app' AND EVENT_NAME = 'nightly'")
            return str(cur.fetchone()[0])
    finally:
        c.close()


def test_member_behind_the_cache_recovers_by_clone(sandbox_factory: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_factory(members=3, settings=SMALL_CACHE)
    _schema(sandbox)
    _load(sandbox, 1, 2_000)
    victim = sandbox.secondaries()[0]  # the primary keeps taking the load
    sandbox.kill_member(victim)
    _load(sandbox, 2_001, 3_000)
    _small_txns(sandbox, 1, 100)  # far more than the donors' caches hold
    victim = sandbox.restart_member(victim)
    _wait_online(sandbox, victim)
    stats = _stats(sandbox, victim)
    assert int(stats["RECOVERY_CLONES"]) >= 1, stats
    assert stats["RECOVERY_PHASE"] == "ONLINE", stats
    assert int(stats["CLONE_ROWS"]) >= 5_000 and int(stats["CLONE_TABLES"]) == 4, stats
    print(f"clone: {stats['CLONE_BYTES']} bytes at {stats['CLONE_MIB_PER_S']} MiB/s; "
          f"cache fetch {stats['RECOVERY_FETCHED']} txns at {stats['RECOVERY_FETCH_TXNS_PER_S']} txns/s")
    _small_txns(sandbox, 101, 20)  # the group goes on with the cloned member in it
    _assert_converged(sandbox, list(sandbox.members))
    assert _event_status(sandbox, victim) == "SLAVESIDE_DISABLED"  # a cloned event never fires on the joiner


@pytest.mark.parametrize("fault", ["kill", "stall"])
def test_donor_killed_or_stalled_mid_clone_another_donor_finishes(sandbox_factory: Callable[..., Sandbox],
                                                                   fault: str) -> None:
    """kill: the donor's process dies (its snapshot connection with it); stall: it is stopped
    (SIGSTOP), so the joiner's next chunk times out (recovery_donor_timeout_s)."""
    sandbox = sandbox_factory(members=4,  # one down and one killed: still a majority
                              settings={**SMALL_CACHE, "recovery_donor_timeout_s": DONOR_TIMEOUT_S})
    _schema(sandbox)
    victim = sandbox.secondaries()[0]  # the primary keeps taking the load
    sandbox.kill_member(victim)
    _load(sandbox, 1, 40_000)  # a clone of several seconds
    _small_txns(sandbox, 1, 50)
    victim = sandbox.restart_member(victim)
    by_uuid = {}
    for m in sandbox.members:
        if m.id != victim.id:
            by_uuid[str(_status(sandbox, m)["MEMBER_ID"])] = m
    seen: dict[str, object] = {}

    def cloning() -> bool:
        stats = _stats(sandbox, victim)
        seen.update(stats)
        return stats["RECOVERY_PHASE"] == "CLONE" and int(stats["CLONE_ROWS"]) > 0

    _wait(f"{victim.id} cloning", sandbox, cloning)
    first_donor = by_uuid[str(seen["RECOVERY_DONOR"])]
    if fault == "kill":
        sandbox.kill_member(first_donor)
    else:
        sandbox.signal_member(first_donor, signal.SIGSTOP)
    try:
        _wait_online(sandbox, victim)
    finally:
        if fault == "stall":
            sandbox.signal_member(first_donor, signal.SIGCONT)
    stats = _stats(sandbox, victim)
    assert stats["RECOVERY_DONOR"] != seen["RECOVERY_DONOR"], stats
    assert int(stats["RECOVERY_CLONES"]) >= 2, stats  # the clone restarted at the next donor
    assert int(stats["CLONE_ROWS"]) >= 40_000, stats
    print(f"clone after a donor failure: {stats['CLONE_BYTES']} bytes at {stats['CLONE_MIB_PER_S']} MiB/s; "
          f"cache fetch {stats['RECOVERY_FETCHED']} txns at {stats['RECOVERY_FETCH_TXNS_PER_S']} txns/s")
    _small_txns(sandbox, 51, 20)
    _assert_converged(sandbox, [m for m in sandbox.members if m.id != first_donor.id])


def test_member_within_the_cache_fetches_without_clone(sandbox_factory: Callable[..., Sandbox]) -> None:
    sandbox = sandbox_factory(members=3)
    _schema(sandbox)
    _load(sandbox, 1, 1_000)
    victim = sandbox.secondaries()[0]
    sandbox.kill_member(victim)
    _small_txns(sandbox, 1, 400)  # 1 200 transactions, all still in the donors' caches
    victim = sandbox.restart_member(victim)
    _wait_online(sandbox, victim)
    stats = _stats(sandbox, victim)
    assert int(stats["RECOVERY_CLONES"]) == 0 and int(stats["RECOVERY_FETCHED"]) >= 1_200, stats
    print(f"cache fetch: {stats['RECOVERY_FETCHED']} txns at {stats['RECOVERY_FETCH_TXNS_PER_S']} txns/s")
    _assert_converged(sandbox, list(sandbox.members))


def _fourth_member_config(sandbox: Sandbox, backend: object, member_port: int, group_port: int) -> str:
    """A `grproxy serve` config for a new member, written as the sandbox writes its own."""
    seeds = [f"127.0.0.1:{m.group_port}" for m in sandbox.members]
    b = backend
    return "\n".join([
        "[frontend]", "enabled = false",
        "", "[[users]]", 'name = "root"', 'password = ""', "admin = true",
        "", "[[backends]]", 'name = "member4"', f'host = "{b.host}"', f"port = {b.port}",  # type: ignore[attr-defined]
        f'user = "{b.user}"', f'password = "{b.password}"',  # type: ignore[attr-defined]
        "", "[member]", 'backend = "member4"', 'host = "127.0.0.1"', f"port = {member_port}",
        'group_name = "grproxy-sandbox"', f'group_address = "127.0.0.1:{group_port}"',
        f"group_seeds = [{', '.join(json.dumps(x) for x in seeds)}]", "bootstrap_group = false",
        f"message_cache_size = {SMALL_CACHE_BYTES}",
        "", "[log]", 'format = "json"', "",
    ])


def test_member_with_an_empty_backend_joins_a_loaded_group_by_clone(sandbox_factory: Callable[..., Sandbox],
                                                                     tmp_path: Path) -> None:
    sandbox = sandbox_factory(members=3, settings=SMALL_CACHE)  # the caches cannot hold the load
    _schema(sandbox)
    _load(sandbox, 1, 3_000)
    _small_txns(sandbox, 1, 50)
    backend = start_server(tmp_path / "member4" / "data", user="grproxy", password="grproxy", die_with_parent=True)
    proc: subprocess.Popen[bytes] | None = None
    try:
        member_port, group_port = free_port(), free_port()
        config = tmp_path / "member4" / "grproxy.toml"
        config.write_text(_fourth_member_config(sandbox, backend, member_port, group_port))
        with open(tmp_path / "member4" / "grproxy.log", "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own arguments
                [sys.executable, "-m", "grproxy", "serve", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        # The fixtures' own types, taken from a member they made (`conftest` is no importable
        # module: in a whole run that name is another directory's conftest).
        model = sandbox.members[0]
        fourth = dataclasses.replace(
            model, id="member4", member_port=member_port, group_port=group_port, pid=proc.pid,
            backend=dataclasses.replace(model.backend, host=backend.host, port=backend.port, user=backend.user,
                                        password=backend.password, pid=backend.pid, datadir=str(backend.datadir)))
        _wait_online(sandbox, fourth)
        stats = _stats(sandbox, fourth)
        assert int(stats["RECOVERY_CLONES"]) == 1 and int(stats["CLONE_ROWS"]) >= 3_000, stats
        print(f"empty backend clone: {stats['CLONE_BYTES']} bytes at {stats['CLONE_MIB_PER_S']} MiB/s; "
              f"cache fetch {stats['RECOVERY_FETCHED']} txns at {stats['RECOVERY_FETCH_TXNS_PER_S']} txns/s")
        _small_txns(sandbox, 51, 20)
        _assert_converged(sandbox, [*sandbox.members, fourth])
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        backend.stop()
