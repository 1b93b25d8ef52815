"""The dump connection's framing and flow control, fed by hand (no server).

Packets reach `_DumpConnection` split anywhere — one byte at a time, or many packets in one
read — and must come out whole, a >16 MB event joined from its continuation packets. Reading is
paused once more than `buffer_bytes_max` bytes of complete packets wait, and resumed as soon
as the consumer drains below it or needs more bytes to complete a packet (never a deadlock on a
packet larger than the bound).
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.binlog.stream import _DumpConnection
from replication.protocol.backend import BackendAddress
from replication.protocol.constants import MAX_PAYLOAD


class Transport:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause_reading(self) -> None:
        assert not self.paused
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        assert self.paused
        self.paused = False

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def frame(payload: bytes, seq: int) -> bytes:
    out = b""
    while True:
        part, payload = payload[:MAX_PAYLOAD], payload[MAX_PAYLOAD:]
        out += len(part).to_bytes(3, "little") + bytes((seq & 0xFF,)) + part
        seq += 1
        if len(part) < MAX_PAYLOAD:
            return out


def connection(bound: int) -> tuple[_DumpConnection, Transport]:
    conn = _DumpConnection(BackendAddress("127.0.0.1", 1, "u", "p"))
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.buffer_bytes_max = bound
    return conn, transport


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20), st.integers(1, 97), st.integers(64, 2000))
def test_packets_come_out_whole_however_split(payloads: list[bytes], chunk: int, bound: int) -> None:
    async def go() -> list[bytes]:
        conn, transport = connection(bound)
        stream = b"".join(frame(b"\x00" + p, i) for i, p in enumerate(payloads))

        async def feed() -> None:
            for k in range(0, len(stream), chunk):
                while transport.paused:  # a paused transport delivers nothing
                    await asyncio.sleep(0)
                conn.data_received(stream[k : k + chunk])
                await asyncio.sleep(0)

        feeder = asyncio.ensure_future(feed())
        out = []
        for _ in payloads:
            _, payload = await conn.read_packet()
            out.append(payload[1:])
        await feeder
        assert not transport.paused
        return out

    assert asyncio.run(go()) == payloads


def test_reading_pauses_at_the_bound_and_resumes_when_drained() -> None:
    async def go() -> None:
        conn, transport = connection(1000)
        packets = [frame(b"\x00" + bytes([i]) * 300, i) for i in range(10)]
        for p in packets[:3]:
            conn.data_received(p)
        assert not transport.paused  # 912 bytes: under the bound
        conn.data_received(packets[3])
        assert transport.paused and transport.pauses == 1
        _, first = await conn.read_packet()
        assert first[1:] == b"\x00" * 300 and not transport.paused  # drained below the bound

    asyncio.run(go())


def test_an_event_larger_than_the_bound_and_than_one_packet() -> None:
    async def go() -> None:
        conn, transport = connection(1 << 16)
        event = b"\x00" + b"e" * (MAX_PAYLOAD + 1000)  # continued in a second packet
        data = frame(event, 0)

        async def feed() -> None:
            for k in range(0, len(data), 1 << 20):
                while transport.paused:
                    await asyncio.sleep(0)
                conn.data_received(data[k : k + (1 << 20)])
                await asyncio.sleep(0)

        feeder = asyncio.ensure_future(feed())
        _, payload = await conn.read_packet()
        await feeder
        assert payload == event

    asyncio.run(go())


def test_closed_connection_raises() -> None:
    from replication.protocol.errors import BackendLost

    async def go() -> None:
        conn, _ = connection(100)
        conn.data_received(b"\x05\x00")  # half a header
        conn.connection_lost(None)
        with pytest.raises(BackendLost):
            await conn.read_packet()

    asyncio.run(go())


def test_positions_order_across_files() -> None:
    from replication.binlog.stream import BinlogPosition

    a, b, c = BinlogPosition("binlog.000009", 900), BinlogPosition("binlog.000010", 4), BinlogPosition("binlog.000010", 5)
    assert b.reached(a) and c.reached(b) and c.reached(c) and not a.reached(b) and not b.reached(c)
    assert BinlogPosition("binlog.1000000", 4).reached(BinlogPosition("binlog.999999", 10))
    for bad in (("", 4), ("binlog.000001", 3), ("../x.000001", 4), ("binlog.000001", 1 << 32)):
        with pytest.raises(ValueError):
            BinlogPosition(*bad)
