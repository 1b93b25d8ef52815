"""Server-side TLS for client connections, on memory BIOs.

Why not `loop.start_tls`: a MySQL client sends its SSL request and, without waiting, its TLS
ClientHello; when both arrive in one read, the ClientHello is already in our buffer and
`start_tls` never sees it (the handshake then stalls). Owning the TLS object lets us feed it
those bytes, and works the same on uvloop and the default loop.

`TlsTransport` wraps the raw transport: `feed()` takes ciphertext and returns plaintext;
`write()` takes plaintext. It offers the transport methods the proxy uses (write, close,
pause/resume_reading, is_closing, get_extra_info), so sessions relay into it unchanged.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

READ_CHUNK_BYTES = 256 * 1024


class TlsTransport:
    def __init__(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        self.raw = raw
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self.handshake_done = False
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed_by_peer = False

    def feed(self, data: bytes) -> bytes:
        """Ciphertext in, plaintext out (b"" while the handshake runs or nothing is complete).

        Raises ssl.SSLError on a broken TLS stream (the caller closes the connection).
        """
        self._in.write(data)
        if not self.handshake_done:
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return b""
            except ssl.SSLError as exc:
                self._flush()
                if not self.handshake.done():
                    self.handshake.set_exception(exc)
                    # The caller gets it raised here and closes; a handshake nobody awaits yet
                    # must not log "Future exception was never retrieved" later.
                    self.handshake.exception()
                raise
            self.handshake_done = True
            self._flush()
            if not self.handshake.done():
                self.handshake.set_result(None)
        chunks = []
        while True:
            try:
                chunk = self._obj.read(READ_CHUNK_BYTES)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed_by_peer = True
                break
            if not chunk:
                break
            chunks.append(chunk)
        self._flush()
        return b"".join(chunks)

    def _flush(self) -> None:
        pending = self._out.read()
        if pending and not self.raw.is_closing():
            self.raw.write(pending)

    # --- the transport surface the proxy uses ----------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.raw.is_closing():
            return
        self._obj.write(data)
        self._flush()

    def close(self) -> None:
        if not self.raw.is_closing():
            try:
                self._obj.unwrap()
            except ssl.SSLError:
                pass
            self._flush()
            self.raw.close()

    def abort(self) -> None:
        self.raw.abort()

    def is_closing(self) -> bool:
        return self.raw.is_closing()

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._obj
        if name == "cipher":
            return self._obj.cipher()
        return self.raw.get_extra_info(name, default)

    def version(self) -> str | None:
        return self._obj.version()
