"""Row images: codec round trips and garbage, write-set hashing, SQL literals, apply batching."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replication.rowimage import (
    APPLY_ROWS_PER_STATEMENT_MAX,
    CODEC_VERSION,
    INT_MAX,
    INT_MIN,
    Form,
    RowChange,
    RowCodecError,
    RowShape,
    TransactionChanges,
    TransactionTooLarge,
    _statements,
    canonical_bytes,
    decode_changes,
    encode_changes,
    key_hash,
    pk_predicate,
    render_value,
    write_set_keys,
)
from replication.schema import ParentRef, TableMeta, UniqueKey, make_column

# --- strategies ------------------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)


def values_of(form: Form) -> st.SearchStrategy[object]:
    if form in (Form.INT, Form.ENUM):
        return st.integers(INT_MIN, INT_MAX)
    if form is Form.DOUBLE:
        return st.floats(allow_nan=False, allow_infinity=False)
    if form is Form.DECIMAL:
        return st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{1,30})?", fullmatch=True)
    if form is Form.TEMPORAL:
        return st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?)?", fullmatch=True)
    if form is Form.TIMESTAMP:
        return st.from_regex(r"[0-9]{1,10}(\.[0-9]{1,6})?", fullmatch=True)
    return st.binary(max_size=40)


@st.composite
def shapes(draw: st.DrawFn) -> RowShape:
    cols = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    forms = [draw(st.sampled_from(list(Form))) for _ in cols]
    charsets = [draw(st.sampled_from(["utf8mb4", "latin1", "binary"])) if f is Form.TEXT else None for f in forms]
    pk = draw(st.lists(st.integers(0, len(cols) - 1), min_size=1, max_size=len(cols), unique=True))
    parts = draw(st.lists(st.tuples(st.sampled_from(cols), st.integers(0, 300)), max_size=4, unique=True))
    return RowShape(draw(names), draw(names), tuple(cols), tuple(forms), tuple(charsets), tuple(pk), tuple(parts), draw(st.booleans()))


@st.composite
def changes_of(draw: st.DrawFn, shape: RowShape) -> RowChange:
    material = st.one_of(st.none(), st.binary(max_size=16))
    key = st.tuples(*[material for _ in shape.key_parts]) if shape.key_parts else st.just(())
    if draw(st.booleans()):
        after = [draw(values_of(f)) if i in shape.primary_key else draw(st.one_of(st.none(), values_of(f)))
                 for i, f in enumerate(shape.forms)]
        pk = tuple(after[i] for i in shape.primary_key)
        return RowChange(shape, "upsert", pk, tuple(after), draw(key), draw(st.one_of(st.none(), key)))
    pk = tuple(draw(values_of(shape.forms[i])) for i in shape.primary_key)
    return RowChange(shape, "delete", pk, None, None, draw(key))


@st.composite
def transactions(draw: st.DrawFn) -> list[RowChange]:
    pool = draw(st.lists(shapes(), min_size=1, max_size=3))
    return [draw(changes_of(draw(st.sampled_from(pool)))) for _ in range(draw(st.integers(0, 8)))]


# --- codec ----------------------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(transactions())
def test_codec_round_trip(changes: list[RowChange]) -> None:
    data = encode_changes(changes)
    assert data[2] == CODEC_VERSION
    assert decode_changes(data) == changes
    assert encode_changes(decode_changes(data)) == data


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(transactions(), st.data())
def test_every_strict_prefix_is_refused(changes: list[RowChange], data: st.DataObject) -> None:
    encoded = encode_changes(changes)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(RowCodecError):
        decode_changes(encoded[:cut])


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(transactions(), st.data())
def test_mutations_are_refused_or_canonical(changes: list[RowChange], data: st.DataObject) -> None:
    """A corrupted encoding is refused with RowCodecError, or is another valid, canonical one."""
    encoded = bytearray(encode_changes(changes))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_changes(bytes(encoded))
    except RowCodecError:
        return
    assert encode_changes(decoded) == bytes(encoded)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_is_refused_or_canonical(blob: bytes) -> None:
    for data in (blob, b"\xc7R\x01" + blob):
        try:
            decoded = decode_changes(data)
        except RowCodecError:
            continue
        assert encode_changes(decoded) == data


def test_codec_refusals() -> None:
    shape = RowShape("s", "t", ("id",), (Form.INT,), (None,), (0,), (("id", 0),))
    change = RowChange(shape, "upsert", (1,), (1,), (b"1",), None)
    good = encode_changes([change])
    assert decode_changes(good) == [change]
    with pytest.raises(RowCodecError, match="magic"):
        decode_changes(b"xx" + good[2:])
    with pytest.raises(RowCodecError, match="version"):
        decode_changes(good[:2] + bytes([CODEC_VERSION + 1]) + good[3:])
    with pytest.raises(RowCodecError, match="after the last"):
        decode_changes(good + b"\x00")
    with pytest.raises(RowCodecError):
        decode_changes("not bytes")  # type: ignore[arg-type]
    assert decode_changes(encode_changes([])) == []


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


# --- SQL rendering --------------------------------------------------------------------------------------

RENDERED = [
    (Form.INT, 18446744073709551615, None, "18446744073709551615"),
    (Form.INT, None, None, "NULL"),
    (Form.ENUM, 0, None, "0"),
    (Form.DOUBLE, 0.30000000000000004, None, "0.30000000000000004E0"),
    (Form.DOUBLE, 1e300, None, "1e+300"),
    (Form.DECIMAL, "-1.000000000000000000000000000001", None, "-1.000000000000000000000000000001"),
    (Form.TEMPORAL, "-838:59:59.000000", None, "'-838:59:59.000000'"),
    (Form.TIMESTAMP, "1710018000.123456", None, "FROM_UNIXTIME(1710018000.123456)"),
    (Form.TIMESTAMP, "0.000000", None, "'0000-00-00 00:00:00'"),
    (Form.TEXT, "😀".encode(), "utf8mb4", "_utf8mb4 X'F09F9880'"),
    (Form.TEXT, b"", "latin1", "_latin1 X''"),
    (Form.BYTES, b"\x00\xff", None, "X'00FF'"),
    (Form.JSON, b"{}", None, "CAST(_utf8mb4 X'7B7D' AS JSON)"),
    (Form.GEOMETRY, b"\x00\x00\x00\x00\x01", None, "X'0000000001'"),
]


@pytest.mark.parametrize(("form", "value", "charset", "sql"), RENDERED)
def test_render_value(form: Form, value: object, charset: str | None, sql: str) -> None:
    assert render_value(form, value, charset) == sql  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("form", "value"),
    [(Form.INT, "1"), (Form.INT, INT_MAX + 1), (Form.DOUBLE, math.nan), (Form.DECIMAL, "1e5"), (Form.TEMPORAL, "x'; DROP"),
     (Form.TIMESTAMP, "-1"), (Form.BYTES, "text"), (Form.TEXT, b"x")],
)
def test_render_value_refuses(form: Form, value: object) -> None:
    with pytest.raises(ValueError):
        render_value(form, value, None)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_double_literal_round_trips(x: float) -> None:
    assert float(render_value(Form.DOUBLE, x).replace("E0", "")) == x


def test_pk_predicate() -> None:
    one = RowShape("s", "t", ("id",), (Form.INT,), (None,), (0,), ())
    assert pk_predicate(one, [(1,), (2,)]) == "`id` IN (1, 2)"
    assert pk_predicate(one, []) == "FALSE"
    two = RowShape("s", "t", ("a", "b"), (Form.INT, Form.TEXT), (None, "utf8mb4"), (0, 1), ())
    assert pk_predicate(two, [(1, b"x")], "`q`") == "((`q`.`a` = 1 AND `q`.`b` = _utf8mb4 X'78'))"


# --- apply batching ----------------------------------------------------------------------------------


def _shape(self_referencing: bool = False) -> RowShape:
    return RowShape("s", "t", ("id", "e"), (Form.INT, Form.ENUM), (None, None), (0,), (("id", 0),), self_referencing)


def _up(shape: RowShape, i: int, e: int = 1) -> RowChange:
    return RowChange(shape, "upsert", (i,), (i, e), (str(i).encode(),), None)


def _del(shape: RowShape, i: int) -> RowChange:
    return RowChange(shape, "delete", (i,), None, None, (str(i).encode(),))


def test_apply_statements_keep_order_and_batch() -> None:
    shape = _shape()
    changes = [_up(shape, 1), _up(shape, 2), _del(shape, 3), _del(shape, 4), _up(shape, 5)]
    stmts = list(_statements(changes, mariadb=True))
    assert [(s.kind, s.rows) for s in stmts] == [("upsert", 2), ("delete", 2), ("upsert", 1)]
    assert stmts[0].sql == (
        "INSERT INTO `s`.`t` (`id`, `e`) VALUES (1, 1), (2, 1) ON DUPLICATE KEY UPDATE `e` = VALUES(`e`)"
    )
    assert stmts[1].sql == "DELETE FROM `s`.`t` WHERE `id` IN (3, 4)"
    assert "REPLACE" not in " ".join(s.sql for s in stmts)
    mysql = list(_statements([_up(shape, 1)], mariadb=False))[0].sql
    assert mysql.endswith("AS `__grproxy_new` ON DUPLICATE KEY UPDATE `e` = `__grproxy_new`.`e`")


def test_apply_statements_bounds_and_special_rows() -> None:
    shape = _shape()
    many = [_up(shape, i) for i in range(APPLY_ROWS_PER_STATEMENT_MAX + 5)]
    assert [s.rows for s in _statements(many, mariadb=True)] == [APPLY_ROWS_PER_STATEMENT_MAX, 5]
    # The ENUM error value gets a statement of its own, followed by SHOW WARNINGS.
    stmts = list(_statements([_up(shape, 1), _up(shape, 2, e=0), _up(shape, 3)], mariadb=True))
    assert [(s.kind, s.rows, s.enum_zero) for s in stmts] == [
        ("upsert", 1, False), ("upsert", 1, True), ("warnings", 0, False), ("upsert", 1, False)]
    # Self-referencing tables: deletes one row at a time, in the origin's order.
    tree = _shape(self_referencing=True)
    stmts = list(_statements([_del(tree, 3), _del(tree, 1), _del(tree, 2)], mariadb=True))
    assert [s.sql for s in stmts] == [f"DELETE FROM `s`.`t` WHERE `id` IN ({i})" for i in (3, 1, 2)]
    # A table of only primary-key columns still has a valid (no-op) update list.
    only = RowShape("s", "k", ("id",), (Form.INT,), (None,), (0,), ())
    assert list(_statements([RowChange(only, "upsert", (1,), (1,), (), None)], mariadb=True))[0].sql.endswith(
        "ON DUPLICATE KEY UPDATE `id` = VALUES(`id`)")


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
