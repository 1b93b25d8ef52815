"""Config validation: every bad file names its key; the CLI exits with code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grproxy.config import ConfigError, load_config, parse_config
from replication.protocol.packets import native_password_hash

GOOD = {"backends": [{"name": "db1", "port": 3306}]}


def test_defaults() -> None:
    config = parse_config(GOOD)
    assert config.frontend.port == 6446
    assert config.frontend.max_allowed_packet == 64 * 1024 * 1024
    assert config.backends[0].user == "grproxy"
    assert config.log.format == "console"


def test_example_file_is_valid() -> None:
    config = load_config(Path(__file__).parents[2] / "conf" / "grproxy.example.toml")
    assert config.users[0].name == "root"


def test_password_becomes_native_hash() -> None:
    config = parse_config({**GOOD, "users": [{"name": "app", "password": "secret"}]})
    assert config.users[0].password_hash == native_password_hash("secret")
    assert config.users[0].password_hash.startswith("*") and len(config.users[0].password_hash) == 41


@pytest.mark.parametrize(
    "raw,key",
    [
        ({**GOOD, "frontnd": {}}, "frontnd"),
        ({**GOOD, "frontend": {"port": "6446"}}, "frontend.port"),
        ({**GOOD, "frontend": {"port": 70000}}, "frontend.port"),
        ({**GOOD, "frontend": {"prot": 1}}, "frontend.prot"),
        ({**GOOD, "frontend": {"max_allowed_packet": 10}}, "frontend.max_allowed_packet"),
        ({**GOOD, "frontend": {"tls_cert": "/nonexistent.pem"}}, "frontend.tls_cert"),
        ({**GOOD, "frontend": {"require_secure_transport": True}}, "frontend.require_secure_transport"),
        ({**GOOD, "users": [{"password": "x"}]}, "users[0].name"),
        ({**GOOD, "users": [{"name": "a", "password_hash": "abc"}]}, "users[0].password_hash"),
        ({**GOOD, "users": [{"name": "a", "password": "x", "password_hash": "*" + "0" * 40}]}, "users[0].password"),
        ({**GOOD, "users": [{"name": "a"}, {"name": "a"}]}, "users"),
        ({"backends": []}, "backends"),
        ({"backends": [{"port": 0}]}, "backends[0].port"),
        ({"backends": [{"host": 5}]}, "backends[0].host"),
        ({**GOOD, "log": {"format": "xml"}}, "log.format"),
        ({**GOOD, "log": {"level": "loud"}}, "log.level"),
    ],
)
def test_bad_config_names_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.key == key
    assert str(info.value).startswith(f"config: {key}:")


@pytest.mark.parametrize(
    "text,key",
    [
        ("[frontend]\nport = 'x'\n[[backends]]\nport = 3306\n", "frontend.port"),
        ("[frontend\n", "--config"),
        ("[[backends]]\nport = 3306\n[log]\nformat = 'yaml'\n", "log.format"),
    ],
)
def test_cli_exits_2_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "grproxy", "serve", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert key in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_cli_missing_file(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "grproxy", "serve", "--config", str(tmp_path / "none.toml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no such file" in out.stderr


def test_member_section_defaults_and_checks() -> None:
    config = parse_config({**GOOD, "member": {"bootstrap_group": True}})
    assert config.member is not None and config.member.port == 3310 and config.member.member_weight == 50
    assert config.member.single_primary_mode and config.member.group_name == "grproxy"
    for raw, key in [
        ({"bootstrap_group": True, "backend": "nope"}, "member.backend"),
        ({"bootstrap_group": True, "group_address": "nohost"}, "member.group_address"),
        ({"group_seeds": ["127.0.0.1:1", "bad"]}, "member.group_seeds[1]"),
        ({"bootstrap_group": True, "member_weight": 101}, "member.member_weight"),
        ({"bootstrap_group": True, "group_seeds": "127.0.0.1:1"}, "member.group_seeds"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config({**GOOD, "member": raw})
        assert info.value.key == key, raw


def test_member_group_security_settings(tmp_path: Path) -> None:
    from grproxy.app import transport_config
    from replication.gcs.xcom.tls import SslMode

    for raw, key in [
        ({"bootstrap_group": True, "ssl_mode": "SOMETIMES"}, "member.ssl_mode"),
        ({"bootstrap_group": True, "ip_allowlist": "10.0.0.0/8, not-an-address"}, "member.ip_allowlist"),
        ({"bootstrap_group": True, "ssl_mode": "REQUIRED"}, "member.ssl_cert"),
        ({"bootstrap_group": True, "ssl_cert": str(tmp_path / "missing.pem")}, "member.ssl_cert"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config({**GOOD, "member": raw})
        assert info.value.key == key, raw
    cert, key_file, ca = (tmp_path / n for n in ("c.pem", "k.pem", "ca.pem"))
    for f in (cert, key_file, ca):
        f.write_text("x")
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, "member": {"bootstrap_group": True, "ssl_mode": "VERIFY_CA",
                                         "ssl_cert": str(cert), "ssl_key": str(key_file)}})
    assert info.value.key == "member.ssl_ca"
    config = parse_config({**GOOD, "member": {"bootstrap_group": True, "ssl_mode": "verify_identity",
                                              "ssl_cert": str(cert), "ssl_key": str(key_file), "ssl_ca": str(ca),
                                              "ip_allowlist": "127.0.0.1, 10.1.0.0/16"}})
    assert config.member is not None
    transport = transport_config(config.member)
    assert transport.tls.ssl_mode is SslMode.VERIFY_IDENTITY and transport.tls.ssl_ca == str(ca)
    assert transport.group_name == "grproxy"


def test_router_section() -> None:
    from grproxy.config import parse_config

    config = parse_config({"router": {"members": ["127.0.0.1:3310", "db2:3311"], "refresh_s": 1}})
    assert config.router is not None and config.router.members == ("127.0.0.1:3310", "db2:3311")
    assert config.router.refresh_s == 1.0 and config.backends == ()
    for bad, key in (({"members": []}, "router.members"), ({"members": ["nohost"]}, "router.members[0]"),
                     ({"members": ["h:1"], "refresh_s": 0}, "router.refresh_s"),
                     ({"members": "h:1"}, "router.members")):
        with pytest.raises(ConfigError) as exc:
            parse_config({"router": bad})
        assert exc.value.key == key
    with pytest.raises(ConfigError) as exc:
        parse_config({"router": {"members": ["h:1"]}, "member": {"bootstrap_group": True},
                      "backends": [{"name": "b"}]})
    assert exc.value.key == "router"
