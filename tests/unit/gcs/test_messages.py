"""Wire codec of the consensus core: round trips, canonical form, garbage never crashes.

Strategies build every message type; properties (h11 tests/test_io.py style):
- decode(encode(m)) == m for every message;
- decoding arbitrary bytes either raises MessageDecodeError or yields a message whose
  encoding is exactly those bytes (the encoding is canonical);
- every proper prefix of an encoding is rejected (feeding a message one byte at a time);
- flipping any byte of a valid encoding never raises anything but MessageDecodeError.
"""

from __future__ import annotations

import pytest
from gcs_strategies import messages
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.gcs.interface import Slot, ViewId
from replication.gcs.xcom import messages as m
from replication.gcs.xcom.types import Ballot


def test_every_message_type_has_a_strategy_and_a_tag() -> None:
    union = set(m.Message.__args__)  # type: ignore[attr-defined]
    assert union == set(m._TAGS), union ^ set(m._TAGS)
    assert len(set(m._TAGS.values())) == len(m._TAGS)


@settings(max_examples=400, deadline=None)
@given(messages)
def test_round_trip(msg: m.Message) -> None:
    data = m.encode_message(msg)
    assert data[0] == m.WIRE_VERSION
    assert m.decode_message(data) == msg


@settings(max_examples=150, deadline=None)
@given(messages)
def test_every_proper_prefix_is_rejected(msg: m.Message) -> None:
    data = m.encode_message(msg)
    for n in range(len(data)):
        with pytest.raises(m.MessageDecodeError):
            m.decode_message(data[:n])
    with pytest.raises(m.MessageDecodeError):
        m.decode_message(data + b"\x00")


def _decode_or_canonical(data: bytes) -> None:
    try:
        msg = m.decode_message(data)
    except m.MessageDecodeError:
        return
    assert m.encode_message(msg) == data


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_only_decode_errors(data: bytes) -> None:
    _decode_or_canonical(data)


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_corrupted_messages_raise_only_decode_errors(msg: m.Message, data: st.DataObject) -> None:
    raw = bytearray(m.encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    _decode_or_canonical(bytes(raw))


@given(st.binary(max_size=30))
def test_garbage_after_a_valid_header(tail: bytes) -> None:
    for tag in range(0, 24):
        _decode_or_canonical(bytes([m.WIRE_VERSION, tag]) + tail)


def test_specific_malformations() -> None:
    accept = m.encode_message(m.Accept(Slot(1), Ballot(0), m.NOOP))
    cases = {
        "empty": b"",
        "wrong version": bytes([99]) + accept[1:],
        "unknown tag": bytes([m.WIRE_VERSION, 200]),
        "unknown value kind": accept[:-1] + b"\x09",
        "huge count": bytes([m.WIRE_VERSION, 4]) + (0).to_bytes(8, "big") + (2**32 - 1).to_bytes(4, "big"),
        "bad utf-8": bytes([m.WIRE_VERSION, 9 + 5]) + b"\x00\x02\xff\xfe",
        "skip ends before it starts": m.encode_message(m.Skip(Slot(1), Slot(1), Ballot(0)))[:2]
        + (5).to_bytes(8, "big") + (1).to_bytes(8, "big") + (0).to_bytes(8, "big"),
        "empty prepare": bytes([m.WIRE_VERSION, 4]) + (0).to_bytes(8, "big") + (0).to_bytes(4, "big"),
    }
    for what, data in cases.items():
        with pytest.raises(m.MessageDecodeError):
            m.decode_message(data)
            pytest.fail(what)


def test_encoding_is_compact() -> None:
    """A heartbeat and an accepted are a few dozen bytes, not a pickle."""
    assert len(m.encode_message(m.Accepted(Slot(123), Ballot(0)))) == 2 + 16
    assert len(m.encode_message(m.Heartbeat(ViewId(0, 3), Slot(9)))) == 2 + 12 + 8
