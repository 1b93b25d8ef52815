"""A bare TCP byte relay on asyncio + uvloop: the ceiling for any Python proxy.

    python -m bench.relay LISTEN_PORT TARGET_HOST TARGET_PORT

Used by bench/proxy_overhead.py as the reference grproxy is measured against; it understands
nothing of MySQL, so it is what "no work per packet" costs in Python.
"""

from __future__ import annotations

import asyncio
import sys


class _Pipe(asyncio.Protocol):
    def __init__(self) -> None:
        self.peer: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        elif not self.peer.is_closing():
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


async def main(listen_port: int, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()

    class Front(_Pipe):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            loop.create_task(self.link())

        async def link(self) -> None:
            back = _Pipe()
            try:
                await loop.create_connection(lambda: back, host, port)
            except OSError:
                assert self.transport is not None
                self.transport.close()
                return
            assert self.transport is not None
            if self.transport.is_closing():  # the client left before we were linked
                assert back.transport is not None
                back.transport.close()
                return
            back.peer = self.transport
            self.peer = back.transport
            assert self.peer is not None
            for chunk in self.pending:
                self.peer.write(chunk)
            self.pending.clear()
            # The backend may already have spoken (its greeting) before this task resumed.
            for chunk in back.pending:
                self.transport.write(chunk)  # type: ignore[union-attr]
            back.pending.clear()

    server = await loop.create_server(Front, "127.0.0.1", listen_port)
    print("relay ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
