"""Frame codec: round trips, byte-at-a-time feeding, garbage, bounds, reassembly."""

from __future__ import annotations

import os
import struct

import lz4.block
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replication.gcs.xcom.frames import (
    ENVELOPE_VERSION,
    HEADER_LEN,
    MAGIC,
    Data,
    Fragment,
    FrameDecoder,
    FrameFlags,
    FrameKind,
    FrameLimits,
    FramingError,
    Hello,
    InvalidFrame,
    MessageEncoder,
    NodeId,
    Reassembler,
    Reject,
    RejectReason,
    Welcome,
    encode_control,
    split_address,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def wire(encoded_frames: tuple[tuple[bytes | memoryview, ...], ...]) -> bytes:
    return b"".join(bytes(part) for frame in encoded_frames for part in frame)


def decode_all(data: bytes, splits: list[int] | None = None, limits: FrameLimits | None = None) -> list:
    """Feed ``data`` cut at ``splits`` (all cuts when None: one byte at a time)."""
    decoder = FrameDecoder(limits)
    out = []
    if splits is None:
        for i in range(len(data)):
            out.extend(decoder.feed(data[i : i + 1]))
    else:
        cuts = sorted({0, len(data), *(s % (len(data) + 1) for s in splits)})
        for a, b in zip(cuts, cuts[1:]):
            out.extend(decoder.feed(data[a:b]))
    assert decoder.buffered_bytes == 0
    return out


def messages_from(frames: list, sender: str = "a") -> list[bytes]:
    """Whole messages in arrival order, reassembling fragments; invalid frames fail the test."""
    reasm: Reassembler[str] = Reassembler()
    out = []
    for f in frames:
        match f:
            case Data():
                out.append(f.body)
            case Fragment():
                got = reasm.add(sender, f)
                assert not isinstance(got, InvalidFrame), got
                if got is not None:
                    out.append(got)
            case _:
                pytest.fail(f"unexpected frame {f!r}")
    assert len(reasm) == 0 and reasm.buffered_bytes == 0
    return out


bodies = st.one_of(
    st.binary(max_size=3000),
    # compressible: repeated short patterns
    st.tuples(st.binary(min_size=1, max_size=8), st.integers(1, 600)).map(lambda t: t[0] * t[1]),
)


@FAST
@given(
    msgs=st.lists(bodies, min_size=1, max_size=5),
    threshold=st.sampled_from([0, 1, 64, 1_000_000]),
    max_size=st.sampled_from([0, 1, 7, 100, 10_485_760]),
    splits=st.lists(st.integers(0, 100_000), max_size=20),
)
def test_round_trip_any_split(msgs: list[bytes], threshold: int, max_size: int, splits: list[int]) -> None:
    enc = MessageEncoder(compression_threshold=threshold, max_message_size=max_size)
    data = b"".join(wire(enc.encode(m).frames) for m in msgs)
    assert messages_from(decode_all(data, splits)) == msgs


@settings(max_examples=40, deadline=None)
@given(
    msgs=st.lists(bodies.filter(lambda b: len(b) < 600), min_size=1, max_size=3),
    threshold=st.sampled_from([0, 16]),
    max_size=st.sampled_from([0, 50]),
)
def test_round_trip_one_byte_at_a_time(msgs: list[bytes], threshold: int, max_size: int) -> None:
    enc = MessageEncoder(compression_threshold=threshold, max_message_size=max_size)
    data = b"".join(wire(enc.encode(m).frames) for m in msgs)
    assert messages_from(decode_all(data, None)) == msgs


def test_compression_is_flagged_and_only_used_when_smaller() -> None:
    enc = MessageEncoder(compression_threshold=100)
    small = enc.encode(b"x" * 100)  # not above the threshold
    assert not small.compressed and small.raw_len == 100
    big = enc.encode(b"x" * 5000)
    assert big.compressed and big.wire_len < 200
    noise = enc.encode(os.urandom(5000))  # LZ4 cannot shrink it: sent as is
    assert not noise.compressed
    (frame,) = decode_all(wire(big.frames), [])
    assert frame == Data(b"x" * 5000, True)
    flags = wire(big.frames)[4]
    assert flags & FrameFlags.COMPRESSED


def test_members_with_different_thresholds_interoperate() -> None:
    """The receiver follows the flag, never its own threshold: three senders, one decoder."""
    body = b"row image " * 500
    data = b"".join(
        wire(MessageEncoder(compression_threshold=t).encode(body).frames) for t in (0, 10, 1_000_000)
    )
    frames = decode_all(data, [3, 50, 4000])
    assert [f.body for f in frames] == [body] * 3
    assert [f.compressed for f in frames] == [False, True, False]


def test_compressed_then_fragmented() -> None:
    enc = MessageEncoder(compression_threshold=10, max_message_size=20)
    body = b"abcdefgh" * 200
    msg = enc.encode(body)
    assert msg.compressed and msg.fragmented
    frames = decode_all(wire(msg.frames), [])
    assert all(isinstance(f, Fragment) and f.compressed for f in frames)
    assert all(len(f.chunk) <= 20 for f in frames)
    assert messages_from(frames) == [body]


def test_fragment_ids_differ_per_message() -> None:
    enc = MessageEncoder(max_message_size=4)
    ids = {f.msg_id for m in (b"123456789", b"abcdefghi") for f in decode_all(wire(enc.encode(m).frames), [])}
    assert len(ids) == 2


node_ids = st.builds(
    NodeId,
    name=st.text(max_size=20),
    address=st.tuples(st.sampled_from(["127.0.0.1", "host.example", "[::1]"]), st.integers(1, 65535)).map(
        lambda t: f"{t[0]}:{t[1]}"
    ),
    incarnation=st.integers(0, 2**64 - 1),
)
control_frames = st.one_of(
    st.builds(
        Hello,
        group_name=st.text(max_size=40),
        version_min=st.just(1),
        version_max=st.integers(1, 9),
        sender=node_ids,
        target=node_ids,
    ),
    st.builds(Welcome, version=st.integers(1, 65535), sender=node_ids),
    st.builds(Reject, reason=st.sampled_from(list(RejectReason)), detail=st.text(max_size=60)),
)


@FAST
@given(frames=st.lists(control_frames, min_size=1, max_size=4), splits=st.lists(st.integers(0, 2000), max_size=8))
def test_control_frames_round_trip(frames: list, splits: list[int]) -> None:
    data = b"".join(encode_control(f) for f in frames)
    assert decode_all(data, splits) == frames


@FAST
@given(garbage=st.binary(max_size=400), splits=st.lists(st.integers(0, 400), max_size=6))
def test_garbage_never_crashes(garbage: bytes, splits: list[int]) -> None:
    decoder = FrameDecoder(FrameLimits(message_bytes_max=1 << 20))
    cuts = sorted({0, len(garbage), *(s % (len(garbage) + 1) for s in splits)})
    try:
        for a, b in zip(cuts, cuts[1:]):
            for f in decoder.feed(garbage[a:b]):
                assert isinstance(f, Hello | Welcome | Reject | Data | Fragment | InvalidFrame)
    except FramingError as exc:
        assert exc.reason
        with pytest.raises(FramingError):  # a broken decoder stays broken
            decoder.feed(b"")


def envelope(kind: int, flags: int, body: bytes, raw_len: int | None = None) -> bytes:
    raw = len(body) if raw_len is None else raw_len
    return struct.pack("!2sBBBBII", MAGIC, ENVELOPE_VERSION, kind, flags, 0, len(body), raw) + body


@FAST
@given(kind=st.integers(0, 255), flags=st.integers(0, 255), body=st.binary(max_size=200), raw=st.integers(0, 4096))
def test_garbage_inside_a_sound_envelope_is_a_value_not_an_exception(kind: int, flags: int, body: bytes, raw: int) -> None:
    """The stream survives: the bad frame is reported and the next good frame still decodes."""
    good = wire(MessageEncoder().encode(b"after").frames)
    frames = decode_all(envelope(kind, flags, body, raw) + good, [])
    assert frames[-1] == Data(b"after", False)
    assert len(frames) == 2


def test_invalid_frames_are_reported() -> None:
    cases = [
        envelope(99, 0, b"x"),  # unknown kind
        envelope(FrameKind.DATA, 0x80, b"x"),  # unknown flag
        envelope(FrameKind.DATA, FrameFlags.COMPRESSED, os.urandom(30), 1000),  # LZ4 garbage
        envelope(FrameKind.DATA, 0, b"abc", 4),  # raw length lies
        envelope(FrameKind.DATA, FrameFlags.FRAGMENT, b"short"),  # truncated fragment header
        envelope(FrameKind.HELLO, 0, b"\x00\x05ab"),  # truncated hello
        envelope(FrameKind.REJECT, 0, b"\x63\x00\x00"),  # unknown reject reason
        # a sound WELCOME with one trailing byte
        envelope(FrameKind.WELCOME, 0, encode_control(Welcome(1, NodeId("a", "h:1", 1)))[HEADER_LEN:] + b"!"),
    ]
    for data in cases:
        (frame,) = decode_all(data, [])
        assert isinstance(frame, InvalidFrame), (data, frame)


def test_lz4_bomb_is_bounded_by_the_envelope() -> None:
    bomb = lz4.block.compress(b"\x00" * 100_000, store_size=False)
    limits = FrameLimits(message_bytes_max=10_000)
    with pytest.raises(FramingError, match="message_bytes_max"):
        FrameDecoder(limits).feed(envelope(FrameKind.DATA, FrameFlags.COMPRESSED, bomb, 100_000))
    (frame,) = decode_all(envelope(FrameKind.DATA, FrameFlags.COMPRESSED, bomb, 5_000), [], limits)
    assert isinstance(frame, InvalidFrame)  # lied about its size: refused, not truncated


def test_oversized_length_breaks_the_stream_before_buffering() -> None:
    decoder = FrameDecoder(FrameLimits(message_bytes_max=1000))
    good = wire(MessageEncoder().encode(b"ok").frames)
    huge_header = struct.pack("!2sBBBBII", MAGIC, ENVELOPE_VERSION, FrameKind.DATA, 0, 0, 2**31, 2**31)
    with pytest.raises(FramingError) as info:
        decoder.feed(good + huge_header)
    assert info.value.frames == [Data(b"ok", False)]  # what came before the break is kept
    assert decoder.buffered_bytes == 0


@pytest.mark.parametrize(
    "header",
    [
        b"XX" + bytes([ENVELOPE_VERSION, 4, 0, 0]) + bytes(8),
        MAGIC + bytes([ENVELOPE_VERSION + 1, 4, 0, 0]) + bytes(8),
        MAGIC + bytes([ENVELOPE_VERSION, 4, 0, 1]) + bytes(8),
    ],
)
def test_broken_envelope_is_fatal(header: bytes) -> None:
    with pytest.raises(FramingError):
        FrameDecoder().feed(header)


def test_encoder_refuses_message_over_bound() -> None:
    enc = MessageEncoder(limits=FrameLimits(message_bytes_max=10))
    with pytest.raises(ValueError, match="message_bytes_max"):
        enc.encode(b"x" * 11)


def frags(body: bytes, size: int, enc: MessageEncoder | None = None) -> list[Fragment]:
    enc = enc or MessageEncoder(compression_threshold=0, max_message_size=size)
    out = decode_all(wire(enc.encode(body).frames), [])
    assert all(isinstance(f, Fragment) for f in out)
    return out


def test_reassembly_is_per_sender_and_interleaves() -> None:
    a, b = frags(b"A" * 10, 3), frags(b"B" * 7, 3)
    r: Reassembler[str] = Reassembler()
    results = []
    for fa, fb in zip(a, b + [None]):
        results.append(r.add("a", fa))
        if fb is not None:
            results.append(r.add("b", fb))
    assert [x for x in results if x is not None] == [b"B" * 7, b"A" * 10]


def test_reassembly_restart_abandons_partial() -> None:
    enc = MessageEncoder(compression_threshold=0, max_message_size=3)
    first, second = frags(b"1" * 9, 3, enc), frags(b"2" * 9, 3, enc)
    r: Reassembler[str] = Reassembler()
    assert r.add("a", first[0]) is None
    assert r.add("a", first[1]) is None
    # the sender reconnected and resent the message from offset 0
    for f in first[:-1]:
        assert r.add("a", f) is None
    # then a newer message started before the old one ended
    for f in second[:-1]:
        assert r.add("a", f) is None
    assert r.add("a", second[-1]) == b"2" * 9
    assert r.stats.abandoned == 2 and r.stats.completed == 1


def test_reassembly_rejects_gaps_and_orphans() -> None:
    f = frags(b"x" * 9, 3)
    r: Reassembler[str] = Reassembler()
    assert isinstance(r.add("a", f[1]), InvalidFrame)  # orphan: no head
    assert r.add("a", f[0]) is None
    assert isinstance(r.add("a", f[2]), InvalidFrame)  # gap: the partial is useless now
    assert len(r) == 0 and r.buffered_bytes == 0
    assert r.stats.invalid == 2


def test_reassembly_survives_view_change_but_drops_non_members() -> None:
    fa, fb = frags(b"a" * 6, 2), frags(b"b" * 6, 2)
    r: Reassembler[str] = Reassembler()
    r.add("stays", fa[0])
    r.add("leaves", fb[0])
    assert r.retain(lambda s: s == "stays") == 1  # new view without "leaves"
    assert len(r) == 1
    r.add("stays", fa[1])
    assert r.add("stays", fa[2]) == b"a" * 6


def test_reassembly_bytes_bound() -> None:
    f = frags(b"x" * 10, 4)
    r: Reassembler[str] = Reassembler(reassembly_bytes_max=6)
    assert r.add("a", f[0]) is None
    assert isinstance(r.add("a", f[1]), InvalidFrame)
    assert r.buffered_bytes == 0


def test_reassembly_reports_corrupt_compressed_message() -> None:
    garbage = os.urandom(40)
    r: Reassembler[str] = Reassembler()
    head = Fragment(7, 0, 40, 1000, True, garbage[:20])  # type: ignore[arg-type]
    tail = Fragment(7, 20, 40, 1000, True, garbage[20:])  # type: ignore[arg-type]
    assert r.add("a", head) is None
    assert isinstance(r.add("a", tail), InvalidFrame)


def test_node_id_matching_and_validation() -> None:
    n = NodeId("m1", "127.0.0.1:33061", 5)
    assert NodeId("m1", "127.0.0.1:33061", 5).accepts(n)
    assert NodeId("", "127.0.0.1:33061", 0).accepts(n)  # a seed known by address only
    assert NodeId("m1", "127.0.0.1:33061", 0).accepts(n)
    assert not NodeId("m1", "127.0.0.1:33061", 4).accepts(n)  # an older incarnation
    assert not NodeId("m2", "127.0.0.1:33061", 5).accepts(n)
    assert str(n) == "m1@127.0.0.1:33061#5"
    for bad in ("nohost", "h:0", "h:70000", ":5"):
        with pytest.raises(ValueError):
            NodeId("m", bad, 1)
    assert split_address("[::1]:9") == ("::1", 9)


@FAST
@given(
    msgs=st.lists(st.tuples(st.sampled_from("abc"), st.binary(min_size=1, max_size=300)), min_size=1, max_size=8),
    max_size=st.integers(1, 64),
    threshold=st.sampled_from([0, 8]),
    ops=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["keep", "drop", "dup"])), max_size=200),
    bound=st.sampled_from([50, 100_000]),
)
def test_reassembly_under_loss_and_duplication_never_invents_a_message(
    msgs: list[tuple[str, bytes]], max_size: int, threshold: int, ops: list[tuple[int, str]], bound: int
) -> None:
    """Oracle: whatever fragments are lost or repeated, every message the reassembler returns
    is one its sender really sent, and it never holds more than its bound."""
    enc = MessageEncoder(compression_threshold=threshold, max_message_size=max_size)
    stream: list[tuple[str, Fragment]] = []
    for sender, body in msgs:
        for f in decode_all(wire(enc.encode(body).frames), []):
            if isinstance(f, Fragment):
                stream.append((sender, f))
    # mutate the stream: drop or duplicate fragments (order per sender kept, as TCP does)
    mutated: list[tuple[str, Fragment]] = []
    for i, item in enumerate(stream):
        op = ops[i % len(ops)][1] if ops else "keep"
        if op == "keep":
            mutated.append(item)
        elif op == "dup":
            mutated += [item, item]
    r: Reassembler[str] = Reassembler(reassembly_bytes_max=bound)
    sent = {(s, b) for s, b in msgs}
    for sender, frag in mutated:
        got = r.add(sender, frag)
        assert r.buffered_bytes <= bound
        if isinstance(got, bytes):
            assert (sender, got) in sent
