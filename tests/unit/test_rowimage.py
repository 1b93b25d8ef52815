"""Row images: validation, write-set hashing, canonical key material, the transaction size bound."""

from __future__ import annotations

import math

import pytest

from replication.rowimage import (
    Form,
    RowChange,
    RowShape,
    TransactionChanges,
    TransactionTooLarge,
    canonical_bytes,
    key_hash,
    write_set_keys,
)
from replication.schema import ParentRef, TableMeta, UniqueKey, make_column


def test_constructors_validate() -> None:
    shape = RowShape("s", "t", ("id", "v"), (Form.INT, Form.TEXT), (None, "utf8mb4"), (0,), ())
    with pytest.raises(ValueError):
        RowChange(shape, "upsert", (1,), (1, "text, not bytes"), (), None)
    with pytest.raises(ValueError):
        RowChange(shape, "upsert", (2,), (1, b"x"), (), None)  # pk disagrees with the image
    with pytest.raises(ValueError):
        RowChange(shape, "delete", (None,), None, None, ())
    with pytest.raises(ValueError):
        RowChange(shape, "upsert", (1,), (1, b"x"), (b"extra",), None)  # material longer than key parts
    with pytest.raises(ValueError):
        RowShape("s", "t", ("id",), (Form.TEXT,), (None,), (0,), ())  # TEXT needs a charset
    with pytest.raises(ValueError):
        RowShape("s", "t", ("id", "id"), (Form.INT, Form.INT), (None, None), (0,), ())
    with pytest.raises(ValueError):
        RowShape("s", "t", ("id",), (Form.INT,), (None,), (), ())  # no primary key
    with pytest.raises(ValueError):
        RowChange(RowShape("s", "t", ("d",), (Form.DOUBLE,), (None,), (0,), ()), "delete", (math.inf,), None, None, ())


# --- write sets --------------------------------------------------------------------------------------


def test_key_hash_is_stable() -> None:
    # A fixed vector: the hash is part of the group's protocol (members of different versions
    # certify the same transactions), so changing it must be a deliberate protocol change.
    import hashlib
    import struct

    h = hashlib.blake2b(digest_size=8, person=b"grproxy-wset-v1")
    for part in (b"db", b"t", b"primary"):
        h.update(struct.pack(">I", len(part)) + part)
    h.update(struct.pack(">I", 1) + struct.pack(">I", 1) + b"1")
    assert key_hash("db", "t", "PRIMARY", [b"1"]) == int.from_bytes(h.digest(), "big") == 0x5DBD81446EC3F92E
    assert key_hash("db", "t", "primary", [b"1"]) == key_hash("db", "t", "PRIMARY", [b"1"])
    assert key_hash("db", "t", "PRIMARY", [b"1"]) != key_hash("db", "t2", "PRIMARY", [b"1"])
    assert key_hash("db", "t", "PRIMARY", [b"1", b"2"]) != key_hash("db", "t", "PRIMARY", [b"12"])
    assert key_hash("db", "t", "PRIMARY", [b"a", b""]) != key_hash("db", "t", "PRIMARY", [b"", b"a"])
    assert 0 <= key_hash("x", "y", "z", []) < 1 << 64


def _meta() -> TableMeta:
    return TableMeta.build(
        "db", "c",
        [make_column("id", 1, "int(11)"), make_column("u", 2, "varchar(10)"), make_column("pid", 3, "int(11)"),
         make_column("x", 4, "int(11)")],
        primary_key=["id"], unique_keys=[UniqueKey("uu", (("u", 0), ("x", 0)))],
        parents=[ParentRef("fk", ("pid",), "db", "p", "PRIMARY")],
    )


def test_write_set_keys() -> None:
    meta = _meta()
    shape = meta.shape
    assert shape is not None
    assert meta.key_parts == (("id", 0), ("u", 0), ("x", 0), ("pid", 0))
    after = (b"1", b"\x00A", b"7", b"9")
    change = RowChange(shape, "upsert", (1,), (1, b"a", 9, 7), after, None)
    keys = write_set_keys(change, meta)
    assert keys == {
        key_hash("db", "c", "PRIMARY", [b"1"]),
        key_hash("db", "c", "uu", [b"\x00A", b"7"]),
        key_hash("db", "p", "PRIMARY", [b"9"]),  # the parent row, as the parent hashes it
    }
    # A NULL part: that unique key and that parent do not exist for the row.
    change = RowChange(shape, "upsert", (1,), (1, None, None, 7), (b"1", None, b"7", None), None)
    assert write_set_keys(change, meta) == {key_hash("db", "c", "PRIMARY", [b"1"])}
    # An update that moves the unique key frees the old entry: both are in the write set.
    change = RowChange(shape, "upsert", (1,), (1, b"a", 9, 7), after, (b"1", b"\x00B", b"7", b"9"))
    assert key_hash("db", "c", "uu", [b"\x00B", b"7"]) in write_set_keys(change, meta)
    # A delete: the before-image's keys.
    change = RowChange(shape, "delete", (1,), None, None, after)
    assert write_set_keys(change, meta) == keys
    # Stale metadata naming a key part the change does not carry is an error, not a silent miss.
    stale = TableMeta.build("db", "c", list(meta.columns), primary_key=["id"], unique_keys=[UniqueKey("ux", (("x", 3),))])
    with pytest.raises(ValueError, match="stale"):
        write_set_keys(RowChange(shape, "delete", (1,), None, None, after), stale)


def test_canonical_bytes() -> None:
    assert canonical_bytes(Form.INT, -5) == b"-5"
    assert canonical_bytes(Form.DOUBLE, -0.0) == canonical_bytes(Form.DOUBLE, 0.0)
    assert canonical_bytes(Form.DECIMAL, "1.500") == canonical_bytes(Form.DECIMAL, "1.5")
    assert canonical_bytes(Form.DECIMAL, "-0.00") == b"0"
    assert canonical_bytes(Form.BYTES, b"\x00") == b"\x00"
    assert canonical_bytes(Form.INT, None) is None


# --- transactions ----------------------------------------------------------------------------------


def _shape(self_referencing: bool = False) -> RowShape:
    return RowShape("s", "t", ("id", "e"), (Form.INT, Form.ENUM), (None, None), (0,), (("id", 0),), self_referencing)


def _up(shape: RowShape, i: int, e: int = 1) -> RowChange:
    return RowChange(shape, "upsert", (i,), (i, e), (str(i).encode(),), None)


def _del(shape: RowShape, i: int) -> RowChange:
    return RowChange(shape, "delete", (i,), None, None, (str(i).encode(),))


def test_transaction_size_limit() -> None:
    shape = _shape()
    tx = TransactionChanges(size_limit_bytes=10_000)
    tx.add([_up(shape, i) for i in range(10)])
    assert len(tx) == 10 and tx.size_bytes > 0
    tiny = TransactionChanges(size_limit_bytes=tx.size_bytes - 1)
    with pytest.raises(TransactionTooLarge):
        tiny.add(list(tx))
    unlimited = TransactionChanges(size_limit_bytes=0)
    unlimited.add([_up(shape, i) for i in range(100)])
    assert len(unlimited) == 100
