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

    sandbox = sub.add_parser("sandbox", help="start local MariaDB/MySQL servers and grproxy in front of them")
    sandbox.add_argument("--members", type=int, default=3, help="group members, each with its own backend (default 3)")
    sandbox.add_argument("--mode", choices=("single-primary", "multi-primary"), default="single-primary")
    sandbox.add_argument("--port", type=int, default=6446, help="client port of grproxy (default 6446; 0 = any free port)")
    sandbox.add_argument("--base-dir", default=None, help="where datadirs live (default: a temporary directory, removed at exit)")
    sandbox.add_argument("--status-file", default=None, help="write the sandbox's ports and pids as JSON here")
    sandbox.add_argument("--log-format", choices=("console", "json"), default="console")
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

        asyncio.run(serve(config))
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
