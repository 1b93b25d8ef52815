"""`python -m tests.chaos.member_main serve --config FILE`: `grproxy serve` whose listeners bind
where the chaos launcher says, while the member advertises the relays in front of them.

Why: a member advertises one group address (in its HELLO and in the view) and one member port
(in the member table the router reads), and binds exactly those. For every member↔member and
router↔member link to go through a fault-injecting relay, peers must be told the relay's
address while the member listens elsewhere. grproxy has no setting for that (GR's
``group_replication_local_address`` has the same one-address shape), so this test-only entry
point wraps the two listeners before running the real CLI:

- ``TcpTransport.start`` binds the group port at the mapped address (identity unchanged);
- ``FrontendServer.start`` binds the member port at the mapped address.

``GRPROXY_CHAOS_LISTEN`` is a JSON object {advertised "host:port": actual "host:port"}.
Nothing else of the process is changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys


def install(mapping: dict[str, str]) -> None:
    from grproxy.frontend import FrontendServer
    from replication.gcs.xcom.frames import split_address
    from replication.gcs.xcom.transport import TcpTransport

    transport_start = TcpTransport.start
    frontend_start = FrontendServer.start

    async def start_transport(self: TcpTransport) -> None:
        actual = mapping.get(self.me.address)
        if actual is None:
            return await transport_start(self)
        advertised = self.me
        self.me = dataclasses.replace(advertised, address=actual)
        try:
            await transport_start(self)
        finally:
            self.me = advertised

    async def start_frontend(self: FrontendServer) -> None:
        actual = mapping.get(f"{self.listen[0]}:{self.listen[1]}")
        if actual is not None:
            self.listen = split_address(actual)
        await frontend_start(self)

    TcpTransport.start = start_transport  # type: ignore[method-assign]
    FrontendServer.start = start_frontend  # type: ignore[method-assign]


def main() -> int:
    install(json.loads(os.environ.get("GRPROXY_CHAOS_LISTEN", "{}")))
    from grproxy.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
