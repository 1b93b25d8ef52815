"""grproxy.mysqld, the server launcher behind the fixtures and `grproxy sandbox`, on a real server."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pymysql
import pytest

from grproxy.mysqld import ServerBinary, ServerNotFound, ServerStartError, find_server_binary, start_server

pytestmark = pytest.mark.timeout(180)


def _processes_using(datadir: Path) -> list[int]:
    """pids whose command line mentions datadir (a leaked server would)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(datadir).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def test_lifecycle(tmp_path: Path, server_binary: ServerBinary) -> None:
    datadir = tmp_path / "data"
    handle = start_server(datadir, server_id=7, user="tester", password="pw 'quoted'", die_with_parent=True)
    try:
        assert handle.alive() and handle.host == "127.0.0.1" and handle.socket.parent == datadir.resolve()
        conn = pymysql.connect(host=handle.host, port=handle.port, user="tester", password="pw 'quoted'")
        with conn.cursor() as cur:
            cur.execute("SELECT @@server_id, @@bind_address, @@log_bin, @@binlog_format, @@skip_name_resolve")
            assert cur.fetchone() == (7, "127.0.0.1", 1, "ROW", 1)
            cur.execute("SHOW GRANTS")
            assert any("ALL PRIVILEGES ON *.*" in g[0] and "WITH GRANT OPTION" in g[0] for g in cur.fetchall())
            cur.execute("CREATE DATABASE kept")
        conn.close()
        root = pymysql.connect(host=handle.host, port=handle.port, user="root", password="")
        root.close()
        sock_login = pymysql.connect(unix_socket=str(handle.socket), user="root", password="")
        sock_login.close()
        port = handle.port
        handle.stop()
        assert not handle.alive()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
        # Restart on the same datadir and port: initialised once, data kept.
        handle = start_server(datadir, port=port, user="tester", password="pw 'quoted'", die_with_parent=True)
        conn = pymysql.connect(host=handle.host, port=handle.port, user="tester", password="pw 'quoted'")
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE 'kept'")
            assert cur.fetchall() == (("kept",),)
        conn.close()
        handle.kill()
        assert not handle.alive()
        assert _processes_using(datadir.resolve()) == []
    finally:
        handle.stop()


def test_start_failure_reports_log_and_leaves_nothing(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    with pytest.raises(ServerStartError) as info:
        start_server(datadir, extra_options={"no_such_server_option": "1"}, startup_timeout_s=30)
    assert "no_such_server_option" in str(info.value)  # the error log's tail is in the message
    assert _processes_using(datadir.resolve()) == []


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError) as info:
            start_server(tmp_path / "data", port=port, startup_timeout_s=30)
    assert str(port) in str(info.value)
    assert _processes_using((tmp_path / "data").resolve()) == []


def test_long_datadir_path_gets_a_short_socket(tmp_path: Path) -> None:
    datadir = tmp_path / ("d" * 60) / ("e" * 60) / "data"
    handle = start_server(datadir, die_with_parent=True)
    try:
        assert len(os.fsencode(handle.socket)) <= 100
        conn = pymysql.connect(unix_socket=str(handle.socket), user="root", password="")
        conn.close()
    finally:
        handle.stop()
    assert not handle.socket.parent.exists()  # the temporary socket directory is removed


def test_missing_server_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPROXY_MYSQLD", "/nonexistent/mariadbd")
    with pytest.raises(ServerNotFound) as info:
        find_server_binary()
    assert "make run" in str(info.value) and "apt-get install mariadb-server" in str(info.value)


def test_found_binary_knows_its_flavour(server_binary: ServerBinary) -> None:
    assert server_binary.flavor in ("mariadb", "mysql")
    assert server_binary.version >= (5, 7, 0)
    assert server_binary.path.exists()
