"""Command line: `grproxy serve --config FILE` and `grproxy sandbox ...`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .config import ConfigError, load_config
from .log import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grproxy", description="MySQL proxy with group replication")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run grproxy from a config file")
    serve.add_argument("--config", required=True, help="TOML file (see conf/grproxy.example.toml)")
    serve.add_argument("--bootstrap", action="store_true",
                       help="bootstrap a new group with this member (its backend must never have belonged to one)")
    serve.add_argument("--clone", action="store_true",
                       help="rebuild this member's backend from the group: recover by a clone of a donor's data, "
                            "replacing its user schemas (for a backend refused for writes the group never saw)")

    reboot = sub.add_parser("reboot", help="restart a group after every member went down (from the most advanced member)")
    reboot.add_argument("members", nargs="*", help="member ports, host:port (or use --config)")
    reboot.add_argument("--config", action="append", default=[], help="a member's TOML file (repeatable)")
    reboot.add_argument("--user", default="root", help="an admin login on the member ports (default root)")
    reboot.add_argument("--password", default="")
    reboot.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every member to be ONLINE")

    sandbox = sub.add_parser("sandbox", help="start local MariaDB/MySQL servers and grproxy in front of them")
    sandbox.add_argument("--members", type=int, default=3, help="group members, each with its own backend (default 3)")
    sandbox.add_argument("--mode", choices=("single-primary", "multi-primary"), default="single-primary")
    sandbox.add_argument("--port", type=int, default=6446, help="client port of grproxy (default 6446; 0 = any free port)")
    sandbox.add_argument("--base-dir", default=None, help="where datadirs live (default: a temporary directory, removed at exit)")
    sandbox.add_argument("--status-file", default=None, help="write the sandbox's ports and pids as JSON here")
    sandbox.add_argument("--log-format", choices=("console", "json"), default="console")
    sandbox.add_argument("--member-setting", action="append", type=_member_setting, metavar="KEY=VALUE",
                         help="a [member] setting for every member's config, e.g. message_cache_size=1048576 "
                              "(repeatable; see conf/grproxy.example.toml)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .app import install_loop_policy

    install_loop_policy()
    if args.command == "serve":
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"grproxy: {exc}", file=sys.stderr)
            return 2
        configure_logging(config.log.format, config.log.level)
        from .app import serve

        return asyncio.run(serve(config, bootstrap=args.bootstrap, clone=args.clone))
    if args.command == "reboot":
        configure_logging("console", "warning")
        from .reboot import RebootError, addresses_from, reboot_group

        try:
            addresses = addresses_from(args.members, args.config)
            report = asyncio.run(reboot_group(addresses, args.user, args.password, args.timeout))
        except (RebootError, ConfigError) as exc:
            print(f"grproxy reboot: {exc}", file=sys.stderr)
            return 1
        print(report)
        return 0
    if args.command == "sandbox":
        if not 1 <= args.members <= 9:
            print("grproxy: --members must be between 1 and 9 (a group holds at most 9 members)", file=sys.stderr)
            return 2
        configure_logging(args.log_format, "info")
        from .sandbox import run_sandbox

        return asyncio.run(run_sandbox(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())


def _member_setting(text: str) -> tuple[str, str]:
    from .sandbox import member_setting

    try:
        return member_setting(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
