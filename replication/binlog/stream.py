"""A replication connection that streams a backend's binary log as decoded events.

Theory of operation. `BinlogStream.open` logs in with the proxy's backend account (the project's
own `BackendConnection`, so authentication and errors are the same as everywhere), announces
itself as a checksum-aware MariaDB replica (`@master_binlog_checksum`, `@mariadb_slave_capability`,
`@master_heartbeat_period`), finds the end of the binlog (SHOW MASTER STATUS) unless a position
is given, and sends COM_BINLOG_DUMP. From then on the server pushes one packet per event
(0x00 + event; an ERR or EOF packet ends the dump). `next_event()` returns the next event
decoded (events.decode_event), its CRC32 verified, the format description and the file
position tracked across ROTATE events. Once a replica has announced `@master_binlog_checksum`,
the server checksums every event it sends, the artificial ROTATE and heartbeats included.

Bounded buffering: the connection pauses reading from the socket once `STREAM_BUFFER_BYTES_MAX`
bytes of complete packets wait unread, and resumes when the consumer has read them, so a slow
consumer holds the server's dump thread back (TCP backpressure) instead of growing memory. One
event may be larger than that bound (a 20 MB row); it is read whole, up to EVENT_BYTES_MAX.

Liveness: the server sends a heartbeat event after `heartbeat_s` without events; silence for
`STREAM_SILENCE_HEARTBEATS` heartbeat periods, a lost connection, an ERR / EOF packet, a checksum
mismatch or an undecodable event raise `BinlogStreamBroken` (with the server's errno when it
sent one), after which the stream is closed and must be reopened (from `position`).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from ..protocol.backend import BackendAddress, BackendConnection
from ..protocol.constants import MAX_PAYLOAD, PROXY_CAPABILITIES, Cap, Command
from ..protocol.errors import BackendLost, MalformedPacket
from ..protocol.packets import parse_err
from .events import (
    EVENT_BYTES_MAX, BinlogDecodeError, BinlogError, Event, FormatDescription, Heartbeat, Rotate, TableMapCache,
    decode_event,
)

STREAM_BUFFER_BYTES_MAX = 4 << 20  # complete packets buffered unread before the socket is paused
STREAM_HEARTBEAT_S_DEFAULT = 1.0  # the server's heartbeat period asked for
STREAM_SILENCE_HEARTBEATS = 5  # heartbeat periods without any packet before the stream is broken
STREAM_OPEN_TIMEOUT_S = 10.0
BINLOG_DUMP_SEND_ANNOTATE_ROWS = 0x02  # MariaDB: send Annotate_rows events
MARIADB_SLAVE_CAPABILITY_GTID = 4  # MariaDB replica understands GTID (and Annotate_rows) events
STREAM_REPORT_HOST = "grproxy-binlog-reader"  # what SHOW SLAVE HOSTS shows for a stream


def _register_body(server_id: int, host: str, port: int) -> bytes:
    """COM_REGISTER_SLAVE: server_id, host, user, password (1-byte lengths), port, rank, master id."""
    name = host.encode("utf-8")[:60]
    return struct.pack("<I", server_id) + bytes((len(name),)) + name + b"\0\0" + struct.pack("<HII", port & 0xFFFF, 0, 0)


class BinlogStreamBroken(BinlogError):
    """The stream ended or cannot go on; reopen it from `BinlogStream.position`.

    `errno` is the server's error number when it sent an ERR packet (e.g. 1236 for a position
    not in the binlog), else 0.
    """

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True, slots=True)
class BinlogPosition:
    """A position in the server's binlog: the file name and the offset of the next event."""

    file: str
    offset: int

    def __post_init__(self) -> None:
        if not self.file or "/" in self.file or not 4 <= self.offset < 1 << 32:
            raise ValueError(f"invalid binlog position {self.file!r}:{self.offset}")

    def __str__(self) -> str:
        return f"{self.file}:{self.offset}"

    def reached(self, other: "BinlogPosition") -> bool:
        """True when this position is at or after `other` in the server's sequence of files
        (binlog files of one server share a basename and a growing numeric extension)."""
        return (_sequence(self.file), self.offset) >= (_sequence(other.file), other.offset)


def _sequence(file: str) -> tuple[str, int]:
    base, _, ext = file.rpartition(".")
    return (base, int(ext)) if ext.isdigit() else (file, 0)


class _DumpConnection(BackendConnection):
    """A backend connection whose reading is paused while too many bytes wait unread."""

    def __init__(self, address: BackendAddress) -> None:
        super().__init__(address)
        self._paused = False
        self.buffer_bytes_max = STREAM_BUFFER_BYTES_MAX
        self.mid_event = False  # read_packet waits for a continuation part (parts already consumed)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._paused and len(self._buf) > self.buffer_bytes_max and self._head_complete():
            assert self.transport is not None
            self.transport.pause_reading()
            self._paused = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _head_complete(self) -> bool:
        buf = self._buf
        return len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:3], "little")

    def _resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()
            self._paused = False

    def read_buffered(self) -> bytes | None:
        """The payload of the next packet when it is already buffered whole and fits in one
        packet (the common case: the server streams events faster than we take them), else None
        and nothing is consumed (read_packet then waits for it)."""
        buf = self._buf
        if len(buf) < 4:
            return None
        length = buf[0] | buf[1] << 8 | buf[2] << 16
        if length >= MAX_PAYLOAD or len(buf) < 4 + length:
            return None
        payload = bytes(buf[4 : 4 + length])
        del buf[: 4 + length]
        if self._paused and len(buf) <= self.buffer_bytes_max:
            self._resume()
        return payload

    async def read_packet(self) -> tuple[int, bytes]:
        """As BackendConnection.read_packet, bounded by EVENT_BYTES_MAX and resuming the socket."""
        parts: list[bytes] = []
        total = 0
        while True:
            while not self._head_complete():
                if self.closed:
                    raise BackendLost(f"Lost connection to backend {self.address}")
                self._resume()  # an incomplete packet can only complete by reading more
                self.mid_event = bool(parts)  # continuation parts consumed: not resumable
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            self.mid_event = False
            length = int.from_bytes(self._buf[:3], "little")
            seq = self._buf[3]
            parts.append(bytes(self._buf[4 : 4 + length]))
            del self._buf[: 4 + length]
            total += length
            if len(self._buf) <= self.buffer_bytes_max:
                self._resume()
            if total > EVENT_BYTES_MAX + 1:
                self._poison(MalformedPacket("binlog event over its bound"))
                raise BackendLost(f"backend {self.address} sent a binlog event over {EVENT_BYTES_MAX} bytes")
            if length < MAX_PAYLOAD:
                return seq, parts[0] if len(parts) == 1 else b"".join(parts)


class BinlogStream:
    """See the module docstring. Create with `await BinlogStream.open(...)`; one consumer."""

    def __init__(self, conn: _DumpConnection, position: BinlogPosition, checksum: bool, heartbeat_s: float) -> None:
        self._conn = conn
        self._checksum = checksum
        self._heartbeat_s = heartbeat_s
        self._fde: FormatDescription | None = None
        self._table_maps = TableMapCache()
        self._broken: BinlogStreamBroken | None = None
        self._position = position  # of the next event to read, built from the two below on demand
        self._file = position.file
        self._offset = position.offset
        self.start_position = position
        self.start_gtid_pos: str | None = None
        self.events_read = 0
        self.bytes_read = 0
        self.last_raw: memoryview = memoryview(b"")  # the bytes of the event next_event returned last

    @classmethod
    async def open(
        cls,
        address: BackendAddress,
        *,
        replica_server_id: int,
        position: BinlogPosition | None = None,
        heartbeat_s: float = STREAM_HEARTBEAT_S_DEFAULT,
        buffer_bytes_max: int = STREAM_BUFFER_BYTES_MAX,
        timeout_s: float = STREAM_OPEN_TIMEOUT_S,
        report_host: str | None = STREAM_REPORT_HOST,
    ) -> "BinlogStream":
        """Connect and start dumping at `position` (None: the current end of the binlog).

        `replica_server_id` must be unique among the server's replicas and differ from its own
        server_id (a second dump with the same id makes the server end the first one).
        `report_host` registers the stream as a replica (COM_REGISTER_SLAVE), so operators see
        it in SHOW SLAVE HOSTS; None does not register. `start_gtid_pos` is then the server's
        GTID position at the starting point (BINLOG_GTID_POS), when the server is MariaDB.
        Raises BackendError / BackendUnavailable when the server cannot be reached or refuses
        (1227 without REPLICATION SLAVE privilege), BinlogStreamBroken when the binlog is off.
        """
        if not 0 < replica_server_id < 1 << 32:
            raise ValueError(f"replica_server_id {replica_server_id} out of range")
        if heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be positive")
        conn: _DumpConnection | None = None
        try:
            async with asyncio.timeout(timeout_s):
                conn = await _DumpConnection.open(
                    address, capabilities=int(PROXY_CAPABILITIES & ~Cap.NO_SCHEMA), collation=45, timeout_s=timeout_s
                )
                assert isinstance(conn, _DumpConnection)
                conn.buffer_bytes_max = buffer_bytes_max
                result = await conn.execute("SELECT @@global.log_bin, @@global.binlog_checksum, @@global.server_id")
                log_bin, alg, server_id = result.rows[0]
                if log_bin not in (b"1", b"ON"):
                    raise BinlogStreamBroken(f"backend {address} does not write a binary log (log_bin is OFF)")
                if int(server_id or 0) == replica_server_id:
                    raise ValueError(f"replica_server_id {replica_server_id} is the backend's own server_id")
                await conn.execute(
                    "SET @master_binlog_checksum = @@global.binlog_checksum, "
                    f"@mariadb_slave_capability = {MARIADB_SLAVE_CAPABILITY_GTID}, "
                    f"@master_heartbeat_period = {int(heartbeat_s * 1e9)}"
                )
                if position is None:
                    status = await conn.execute("SHOW MASTER STATUS")
                    if not status.rows:
                        raise BinlogStreamBroken(f"backend {address} reports no binlog position")
                    file, offset = status.rows[0][0], status.rows[0][1]
                    assert file is not None and offset is not None
                    position = BinlogPosition(file.decode("utf-8"), int(offset))
                gtid_pos = None
                if conn.handshake is not None and conn.handshake.is_mariadb:
                    quoted = position.file.replace("\\", "\\\\").replace("'", "\\'")
                    found = await conn.execute(f"SELECT BINLOG_GTID_POS('{quoted}', {position.offset})")
                    raw = found.rows[0][0]
                    gtid_pos = raw.decode("ascii") if raw is not None else None
                if report_host is not None:
                    await conn.command(Command.REGISTER_SLAVE, _register_body(replica_server_id, report_host, 0))
                body = struct.pack("<IHI", position.offset, BINLOG_DUMP_SEND_ANNOTATE_ROWS, replica_server_id)
                conn.write_packet(bytes((Command.BINLOG_DUMP,)) + body + position.file.encode("utf-8"), 0)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        stream = cls(conn, position, (alg or b"").upper() == b"CRC32", heartbeat_s)
        stream.start_gtid_pos = gtid_pos
        return stream

    @property
    def position(self) -> BinlogPosition:
        """Where the next event starts (built lazily: most events move it, few readers look)."""
        p = self._position
        if p.offset != self._offset or p.file != self._file:
            p = self._position = BinlogPosition(self._file, self._offset)
        return p

    def reached(self, other: BinlogPosition) -> bool:
        """`self.position.reached(other)`, without building the position (checked per event)."""
        if other.file == self._file:
            return self._offset >= other.offset
        return self.position.reached(other)

    @property
    def checksum(self) -> bool:
        return self._checksum

    @property
    def format_description(self) -> FormatDescription | None:
        return self._fde

    @property
    def closed(self) -> bool:
        return self._conn.closed

    async def _read_after_timeout(self) -> bytes | None:
        """One more heartbeat period for a packet (see next_event); None if none came."""
        try:
            async with asyncio.timeout(self._heartbeat_s):
                return (await self._conn.read_packet())[1]
        except TimeoutError:
            return None
        except (BackendLost, MalformedPacket) as exc:
            raise self._break(f"binlog stream lost: {exc}") from exc

    async def next_event(self) -> Event:
        """The next event (heartbeats included). Raises BinlogStreamBroken; cancel-safe only
        in that a cancelled read breaks the stream (a partial event cannot be resumed)."""
        if self._broken is not None:
            raise self._broken
        # An event already buffered whole is taken without the silence watchdog (a timer armed
        # and cancelled per event was a large share of the reader's CPU): the watchdog only
        # matters while we wait for the server.
        payload = self._conn.read_buffered()
        if payload is None:
            try:
                async with asyncio.timeout(self._heartbeat_s * STREAM_SILENCE_HEARTBEATS):
                    _, payload = await self._conn.read_packet()
            except TimeoutError:
                # This process may have been paused (SIGSTOP, a stalled VM) past the bound while
                # the server's heartbeats piled up unread: on resume the expired timer runs
                # before the loop reads the socket (uvloop runs timers first). So one more
                # heartbeat period is waited for — unless part of an event was consumed (the
                # read cannot be resumed) — and only then is the stream taken for dead.
                payload = None if self._conn.mid_event else await self._read_after_timeout()
                if payload is None:
                    raise self._break(f"no binlog event nor heartbeat for "
                                      f"{self._heartbeat_s * STREAM_SILENCE_HEARTBEATS:g} s") from None
            except (BackendLost, MalformedPacket) as exc:
                raise self._break(f"binlog stream lost: {exc}") from exc
            except asyncio.CancelledError:
                self._break("binlog read cancelled")
                raise
        marker = payload[:1]
        if marker == b"\xff":
            errno, _, message = parse_err(payload)
            raise self._break(f"backend ended the binlog dump: ({errno}) {message}", errno)
        if marker == b"\xfe" and len(payload) < 9:
            raise self._break("backend ended the binlog dump (EOF)")
        if marker != b"\x00":
            raise self._break(f"unexpected packet 0x{payload[0]:02x} in the binlog stream")
        raw = memoryview(payload)[1:]
        try:
            event = decode_event(raw, self._fde, checksum=self._checksum, table_maps=self._table_maps)
        except BinlogDecodeError as exc:
            raise self._break(f"binlog event at {self.position}: {exc}") from exc
        self.events_read += 1
        self.bytes_read += len(raw)
        self.last_raw = raw
        if isinstance(event, FormatDescription):
            self._fde = event
        elif isinstance(event, Rotate):
            self._file, self._offset = event.next_file, max(event.position, 4)
            self.position  # validated now, as the event that moved it is read
        elif not isinstance(event, Heartbeat):
            # log_pos from this event's own bytes: a TABLE_MAP from the decode cache carries the
            # header of the first event that mapped it (an older position, maybe of another file).
            log_pos = raw[13] | raw[14] << 8 | raw[15] << 16 | raw[16] << 24
            if log_pos:
                if log_pos < 4:
                    raise self._break(f"binlog event at {self.position} gives the invalid next position {log_pos}")
                self._offset = log_pos
        return event

    def _break(self, message: str, errno: int = 0) -> BinlogStreamBroken:
        self._broken = BinlogStreamBroken(message, errno)
        self._conn.close()
        return self._broken

    async def close(self) -> None:
        """Close the connection (the server's dump thread ends on its next write)."""
        if self._broken is None:
            self._broken = BinlogStreamBroken("binlog stream closed")
        self._conn.close()

