"""Fixtures of the compatibility suite: where clients connect, and a database per module.

`target` is parametrized "direct" (the backend itself) and "proxy" (grproxy in front of it).
Run `pytest -k direct` to validate the tests without a proxy; a test that passes direct and
fails through the proxy has found a proxy bug. `direct` is always the backend, so a proxy test
can compute its reference on the spot.

Both variants log in as root without a password (root@127.0.0.1 on the backend, the frontend
user root on grproxy) and use the same per-module database on the same backend; tests name
their tables with `target.table(...)` so the two runs do not collide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pymysql
import pytest

from compat_support import Target
from grproxy.mysqld import ServerHandle



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def database(backend: ServerHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for this test module (dropped afterwards)."""
    name = "t_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])[:60]
    conn = pymysql.connect(host=backend.host, port=backend.port, user="root", password="")
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield name
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def direct(backend: ServerHandle, database: str) -> Target:
    """The backend itself: the reference every proxy observation is compared with."""
    return Target("direct", backend.host, backend.port, "root", "", database)


@pytest.fixture(params=["direct", "proxy"])
def target(request: pytest.FixtureRequest, direct: Target, database: str) -> Target:
    if request.param == "direct":
        return direct
    proxy = request.getfixturevalue("proxy")
    return Target("proxy", proxy.host, proxy.port, "root", "", database)


@pytest.fixture
def admin(backend: ServerHandle, database: str) -> Iterator[pymysql.connections.Connection]:
    """A root connection straight to the backend, for setup and for checking effects."""
    conn = pymysql.connect(
        host=backend.host,
        port=backend.port,
        user="root",
        password="",
        database=database,
        charset="utf8mb4",
        autocommit=True,
        read_timeout=60,
    )
    yield conn
    conn.close()


@pytest.fixture
def run_both(direct: Target, target: Target) -> Callable[..., tuple[object, object]]:
    """run_both(scenario, *args) -> (observed through target, reference observed direct).

    The reference always runs against the backend with tables named for "direct", so for the
    direct variant the two are the same run's twin and must be equal too.
    """

    def run(scenario: Callable[..., object], *args: object, **kwargs: object) -> tuple[object, object]:
        observed = scenario(target, *args, **kwargs)
        reference = observed if target is direct else scenario(direct, *args, **kwargs)
        return observed, reference

    return run
