"""The clone (replication/recovery/clone.py) between two real MariaDB servers, called directly:
a `Donor` serving its backend's snapshot, `clone_into` filling an empty joiner backend. What the
e2e clone tests (tests/e2e/test_recovery_clone.py) do not reach through a group: every kind of
object and the state the server keeps beside it.

- sequences: SHOW CREATE SEQUENCE and the sequence's row (next value not cached, cycle count)
  as on the donor, and the next NEXTVAL the donor's once its cache is dropped (as a restart
  drops it); a table whose DEFAULT is NEXTVAL of a sequence;
- tables with generated, invisible and system-versioning columns and a default character set
  other than their schema's; a view over a view that sorts before it, a view calling a
  function, and views that name a table, column or function that no longer exists;
- programs keep their sql_mode, time zone, client character set, connection collation (it
  decides how their string literals compare) and their schema's collation of then;
- events: an ENABLED one becomes DISABLE ON SLAVE on the joiner, the others as they are;
- accounts are not cloned (the group does not replicate them): each backend keeps its own;
- a view that names a column its (existing) table lost fails the clone, naming the view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pymysql
import pytest

from grproxy.mysqld import ServerHandle
from replication.positions import AppliedSet, PositionStore
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import OWN_CAPABILITIES, UTF8MB4_GENERAL_CI
from replication.recovery.cache import TransactionCache
from replication.recovery.clone import CloneError, CloneProgress, clone_into
from replication.recovery.donor import Donor

pytestmark = pytest.mark.integration

GROUP_UUID = "6d3b5c1e-0000-4000-8000-00000000c10e"
DONOR_POSITIONS = AppliedSet([(1, 7)])

DONOR_SETUP = [
    "CREATE DATABASE app CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
    "CREATE DATABASE other CHARACTER SET latin1 COLLATE latin1_swedish_ci",
    # Sequences, advanced: a cached one, one that cycled, one a table's DEFAULT draws from.
    "CREATE SEQUENCE app.s_cached START WITH 100 INCREMENT BY 5 CACHE 10",
    "SELECT NEXTVAL(app.s_cached), NEXTVAL(app.s_cached)",
    "CREATE SEQUENCE app.s_cycled MINVALUE 1 MAXVALUE 3 CYCLE NOCACHE",
    "SELECT NEXTVAL(app.s_cycled), NEXTVAL(app.s_cycled), NEXTVAL(app.s_cycled), NEXTVAL(app.s_cycled)",
    "CREATE SEQUENCE app.s_numbers CACHE 3",
    # Sorts before the sequence it needs.
    "CREATE TABLE app.a_numbered (id BIGINT NOT NULL DEFAULT NEXTVAL(app.s_numbers) PRIMARY KEY, note VARCHAR(20))",
    "INSERT INTO app.a_numbered (note) VALUES ('one'), ('two')",
    "CREATE TABLE app.shapes (id INT PRIMARY KEY, w INT, h INT, area INT AS (w * h) VIRTUAL, "
    "perimeter INT AS (2 * (w + h)) PERSISTENT, secret VARCHAR(20) INVISIBLE, label VARCHAR(20)) "
    "DEFAULT CHARSET = latin1",
    "INSERT INTO app.shapes (id, w, h, secret, label) VALUES (1, 2, 3, 'hidden', 'café'), (2, 4, 5, NULL, 'Ærø')",
    "CREATE TABLE app.versioned (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING",
    "INSERT INTO app.versioned VALUES (1, 1), (2, 2)",
    "UPDATE app.versioned SET v = 10 WHERE id = 1",
    "CREATE TABLE other.base (id INT PRIMARY KEY, name VARCHAR(20))",
    "INSERT INTO other.base VALUES (1, 'é'), (2, 'b')",
    "CREATE FUNCTION app.twice(x INT) RETURNS INT DETERMINISTIC RETURN 2 * x",
    # b_mid calls a function; a_top sorts first but reads b_mid; c_cross reads both schemas.
    "CREATE VIEW app.b_mid AS SELECT id, app.twice(w) AS w2 FROM app.shapes",
    "CREATE VIEW app.a_top AS SELECT id, w2 FROM app.b_mid",
    "CREATE VIEW app.c_cross AS SELECT t.id, b.name, t.w2 FROM app.a_top t JOIN other.base b ON b.id = t.id",
    # Invalid on the donor: their table and function are dropped below.
    "CREATE TABLE app.gone (id INT, amount INT)",
    "CREATE FUNCTION app.vanished(x INT) RETURNS INT DETERMINISTIC RETURN x",
    "CREATE VIEW app.d_dangling AS SELECT g.id, g.amount, app.vanished(g.id) AS v FROM app.gone g",
    "CREATE VIEW app.a_over_dangling AS SELECT id FROM app.d_dangling",
    "CREATE DATABASE gone_schema",
    "CREATE TABLE gone_schema.t (k INT)",
    "CREATE VIEW app.e_gone_schema AS SELECT x.k FROM gone_schema.t x",
    "DROP TABLE app.gone",
    "DROP FUNCTION app.vanished",
    "DROP DATABASE gone_schema",
    "SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES'",
    "CREATE TRIGGER app.shapes_label BEFORE INSERT ON app.shapes FOR EACH ROW SET NEW.label = UPPER(NEW.label)",
    "SET SESSION sql_mode = DEFAULT",
    "SET SESSION time_zone = '+05:00'",
    "CREATE EVENT app.e_enabled ON SCHEDULE EVERY 1 HOUR STARTS '2030-01-01 10:00:00' "
    "COMMENT 'not ON COMPLETION PRESERVE ENABLE DO' DO INSERT INTO app.a_numbered (note) VALUES ('event')",
    "CREATE EVENT app.e_disabled ON SCHEDULE AT '2031-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE "
    "DO DELETE FROM app.a_numbered",
    "CREATE EVENT app.e_replica ON SCHEDULE EVERY '1:30' HOUR_MINUTE STARTS '2030-06-01 00:00:00' "
    "DISABLE ON SLAVE DO SELECT 1",
    "SET SESSION time_zone = DEFAULT",
    "CREATE USER 'clone_probe'@'%' IDENTIFIED BY 'probe'",
    "GRANT SELECT ON app.* TO 'clone_probe'@'%'",
]
# Created by a latin1 client whose literals compare in latin1_bin ('café' = 'CAFÉ' is 0 there,
# 1 in the joiner's utf8mb4_general_ci), while `other` had another collation than it has now.
LATIN1_SETUP = [
    "SET SESSION collation_connection = latin1_bin",
    "CREATE FUNCTION other.same_letters() RETURNS INT DETERMINISTIC RETURN 'café' = 'CAFÉ'",
    "CREATE VIEW other.v_letters AS SELECT 'café' = 'CAFÉ' AS same, name FROM other.base",
    "ALTER DATABASE other CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
]


def _connect(server: ServerHandle, charset: str = "utf8mb4") -> pymysql.connections.Connection:
    return pymysql.connect(host=server.host, port=server.port, user="root", password="", charset=charset,
                           autocommit=True)


def _run(server: ServerHandle, statements: list[str], charset: str = "utf8mb4") -> None:
    c = _connect(server, charset)
    try:
        with c.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
                cur.fetchall()
    finally:
        c.close()


def _rows(server: ServerHandle, sql: str) -> list[tuple[Any, ...]]:
    c = _connect(server)
    try:
        with c.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        c.close()


def _reset(server: ServerHandle) -> None:
    """No user schema, event or probe account left from an earlier test."""
    schemas = [s for (s,) in _rows(server, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME "
                                           "NOT IN ('mysql','sys','performance_schema','information_schema')")]
    _run(server, [f"DROP DATABASE `{s}`" for s in schemas] + ["DROP USER IF EXISTS 'clone_probe'@'%'"])


@pytest.fixture(scope="module")
def servers(backend_factory: Callable[..., ServerHandle]) -> Iterator[tuple[ServerHandle, ServerHandle]]:
    donor, joiner = backend_factory("clone_donor"), backend_factory("clone_joiner")
    yield donor, joiner
    for server in (donor, joiner):
        _reset(server)


async def _open(server: ServerHandle) -> BackendConnection:
    return await BackendConnection.open(BackendAddress(server.host, server.port, server.user, server.password),
                                        capabilities=int(OWN_CAPABILITIES), collation=UTF8MB4_GENERAL_CI)


@dataclass
class _Answer:
    rows: list[Any]


async def _clone(donor_server: ServerHandle, joiner_server: ServerHandle) -> tuple[str, AppliedSet, CloneProgress]:
    """One clone, the donor's commands answered by a `Donor` on the donor's backend (what its
    member port does), into the joiner's backend."""
    setup = await _open(donor_server)
    try:
        await PositionStore().setup(setup)
        await setup.execute("DELETE FROM grproxy.applied_ranges")
        await setup.execute("INSERT INTO grproxy.applied_ranges VALUES (1, 7)")
    finally:
        setup.close()
    donor = Donor(TransactionCache(1 << 20), lambda: _open(donor_server), lambda: GROUP_UUID,
                  lambda: DONOR_POSITIONS, lambda: ())

    async def call(command: str) -> _Answer:
        _, rows = await donor.answer(command.split())
        return _Answer(list(rows))

    local = await _open(joiner_server)
    progress = CloneProgress()
    try:
        group_uuid, positions = await clone_into(call, local, progress)
    finally:
        local.close()
        donor.close()
    assert not donor.clones  # CLONE END closed the snapshot
    return group_uuid, positions, progress


def _catalog(server: ServerHandle) -> dict[str, list[tuple[Any, ...]]]:
    user = "('app','other')"
    return {
        "tables": _rows(server, f"SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, TABLE_COLLATION FROM "
                                f"information_schema.TABLES WHERE TABLE_SCHEMA IN {user} ORDER BY 1, 2"),
        "columns": _rows(server, f"SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, EXTRA, "
                                 f"GENERATION_EXPRESSION, COLLATION_NAME FROM information_schema.COLUMNS "
                                 f"WHERE TABLE_SCHEMA IN {user} ORDER BY 1, 2, ORDINAL_POSITION"),
        "routines": _rows(server, f"SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE, SQL_MODE, CHARACTER_SET_CLIENT, "
                                  f"COLLATION_CONNECTION, DATABASE_COLLATION FROM information_schema.ROUTINES "
                                  f"WHERE ROUTINE_SCHEMA IN {user} ORDER BY 1, 2"),
        "views": _rows(server, f"SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION, CHARACTER_SET_CLIENT, "
                               f"COLLATION_CONNECTION FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN {user} "
                               f"ORDER BY 1, 2"),
        "triggers": _rows(server, f"SELECT TRIGGER_SCHEMA, TRIGGER_NAME, ACTION_ORDER, SQL_MODE, CHARACTER_SET_CLIENT, "
                                  f"COLLATION_CONNECTION, DATABASE_COLLATION FROM information_schema.TRIGGERS "
                                  f"WHERE TRIGGER_SCHEMA IN {user} ORDER BY 1, 2"),
        "events": _rows(server, f"SELECT EVENT_SCHEMA, EVENT_NAME, TIME_ZONE, SQL_MODE, CHARACTER_SET_CLIENT, "
                                f"COLLATION_CONNECTION, DATABASE_COLLATION FROM information_schema.EVENTS "
                                f"WHERE EVENT_SCHEMA IN {user} ORDER BY 1, 2"),
        "schemas": _rows(server, f"SELECT SCHEMA_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                                 f"WHERE SCHEMA_NAME IN {user} ORDER BY 1"),
    }


def _show_creates(server: ServerHandle) -> dict[str, tuple[Any, ...]]:
    """SHOW CREATE of every user object (a trigger's without its creation time)."""
    out: dict[str, tuple[Any, ...]] = {}
    for schema, name, kind in _rows(server, "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                                            "WHERE TABLE_SCHEMA IN ('app','other')"):
        what = {"VIEW": "VIEW", "SEQUENCE": "SEQUENCE"}.get(kind, "TABLE")
        out[f"{what} {schema}.{name}"] = _rows(server, f"SHOW CREATE {what} `{schema}`.`{name}`")[0]
    for schema, name, kind in _rows(server, "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE FROM "
                                            "information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN ('app','other')"):
        out[f"{kind} {schema}.{name}"] = _rows(server, f"SHOW CREATE {kind} `{schema}`.`{name}`")[0]
    for schema, name in _rows(server, "SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS "
                                      "WHERE TRIGGER_SCHEMA IN ('app','other')"):
        out[f"TRIGGER {schema}.{name}"] = _rows(server, f"SHOW CREATE TRIGGER `{schema}`.`{name}`")[0][:6]
    for schema, name in _rows(server, "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS "
                                      "WHERE EVENT_SCHEMA IN ('app','other')"):
        out[f"EVENT {schema}.{name}"] = _rows(server, f"SHOW CREATE EVENT `{schema}`.`{name}`")[0]
    return out


def _error(server: ServerHandle, sql: str) -> int:
    try:
        _rows(server, sql)
    except pymysql.MySQLError as exc:
        return int(exc.args[0])
    return 0


def test_a_clone_copies_every_object_with_its_state(servers: tuple[ServerHandle, ServerHandle]) -> None:
    donor, joiner = servers
    for server in servers:
        _reset(server)
    _run(donor, DONOR_SETUP)
    _run(donor, LATIN1_SETUP, charset="latin1")
    _run(joiner, ["CREATE DATABASE junk", "CREATE TABLE junk.t (id INT PRIMARY KEY)"])

    group_uuid, positions, progress = asyncio.run(_clone(donor, joiner))

    assert (group_uuid, str(positions)) == (GROUP_UUID, str(DONOR_POSITIONS))
    assert progress.tables == progress.tables_done == 4  # a_numbered, shapes, versioned, base: sequences are not
    assert _rows(joiner, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'junk'") == []
    assert _catalog(joiner) == _catalog(donor)
    donor_creates, joiner_creates = _show_creates(donor), _show_creates(joiner)
    assert set(joiner_creates) == set(donor_creates)
    assert len(donor_creates) == 20
    enabled = donor_creates.pop("EVENT app.e_enabled")
    for key, donor_row in donor_creates.items():
        assert joiner_creates[key] == donor_row, key
    # The one difference: an ENABLED event does not fire on the joiner.
    joiner_enabled = joiner_creates["EVENT app.e_enabled"]
    assert " ON COMPLETION NOT PRESERVE ENABLE COMMENT " in enabled[3]
    assert joiner_enabled[3] == enabled[3].replace(" NOT PRESERVE ENABLE COMMENT ", " NOT PRESERVE DISABLE ON SLAVE COMMENT ")
    assert joiner_enabled[:3] + joiner_enabled[4:] == enabled[:3] + enabled[4:]
    status = "SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS ORDER BY 1"
    assert _rows(donor, status) == [("e_disabled", "DISABLED"), ("e_enabled", "ENABLED"), ("e_replica", "SLAVESIDE_DISABLED")]
    assert _rows(joiner, status) == [("e_disabled", "DISABLED"), ("e_enabled", "SLAVESIDE_DISABLED"),
                                     ("e_replica", "SLAVESIDE_DISABLED")]

    # Rows, with the invisible and generated columns; a system-versioned table's current rows.
    for sql in ("SELECT id, w, h, area, perimeter, secret, label FROM app.shapes ORDER BY id",
                "SELECT * FROM app.a_numbered ORDER BY id", "SELECT * FROM app.versioned ORDER BY id",
                "SELECT * FROM app.c_cross ORDER BY id", "SELECT * FROM other.v_letters ORDER BY name",
                "SELECT other.same_letters(), app.twice(21)",
                "CHECKSUM TABLE app.shapes, app.a_numbered, other.base"):
        assert _rows(joiner, sql) == _rows(donor, sql), sql
    assert _rows(joiner, "SELECT other.same_letters()") == [(0,)]  # compared in latin1_bin, as created
    assert _rows(joiner, "SELECT label FROM app.shapes ORDER BY id") == [("café",), ("Ærø",)]
    history = "SELECT COUNT(*) FROM app.versioned FOR SYSTEM_TIME ALL"
    assert _rows(donor, history) == [(3,)] and _rows(joiner, history) == [(2,)]  # history is not cloned

    # Sequences: the same row; once the donor's cache is dropped, the same next values.
    for seq in ("app.s_cached", "app.s_cycled", "app.s_numbers"):
        assert _rows(joiner, f"SELECT * FROM {seq}") == _rows(donor, f"SELECT * FROM {seq}"), seq
    assert _rows(joiner, "SELECT next_not_cached_value, cycle_count FROM app.s_cached") == [(150, 0)]
    assert _rows(joiner, "SELECT cycle_count FROM app.s_cycled") == [(1,)]
    _run(donor, ["FLUSH TABLES app.s_cached, app.s_cycled, app.s_numbers"])
    for sql in ("SELECT NEXTVAL(app.s_cached), NEXTVAL(app.s_cycled)",
                "INSERT INTO app.a_numbered (note) VALUES ('three') RETURNING id"):
        assert _rows(joiner, sql) == _rows(donor, sql), sql
    assert _rows(joiner, "SELECT NEXTVAL(app.s_cached)") == [(155,)]

    # Views that name what no longer exists: as invalid here as there, stand-ins gone.
    for view in ("app.d_dangling", "app.a_over_dangling", "app.e_gone_schema"):
        assert _error(joiner, f"SELECT * FROM {view}") == _error(donor, f"SELECT * FROM {view}") == 1356, view
    assert _rows(joiner, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'gone_schema'") == []

    # Accounts are each backend's own.
    assert _rows(donor, "SELECT COUNT(*) FROM mysql.user WHERE User = 'clone_probe'") == [(1,)]
    assert _rows(joiner, "SELECT COUNT(*) FROM mysql.user WHERE User = 'clone_probe'") == [(0,)]


def test_a_view_missing_a_column_of_an_existing_table_fails_the_clone_and_says_which(
        servers: tuple[ServerHandle, ServerHandle]) -> None:
    donor, joiner = servers
    for server in servers:
        _reset(server)
    _run(donor, ["CREATE DATABASE bad", "CREATE TABLE bad.t (id INT PRIMARY KEY, x INT)",
                 "CREATE VIEW bad.v AS SELECT id, x FROM bad.t", "ALTER TABLE bad.t DROP COLUMN x"])
    with pytest.raises(CloneError, match=r"view bad\.v cannot be created on this member: .*1054"):
        asyncio.run(_clone(donor, joiner))
    assert _rows(joiner, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'bad'") == [("t",)]
