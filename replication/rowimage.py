"""Row images: what a replicated write carries, how it is hashed, encoded and applied.

Theory of operation (DESIGN §5). A member reads every row its prepared transaction changed back
from the binary log (replication/binlog/rows.py, replication/writeset.py), in a form that
re-applies bit for bit on another server, as `RowChange`s:

* an *upsert* carries the full after-image of the row (every stored, non-generated column);
* a *delete* carries the primary key of the row that is gone.

Values are typed by the column's `Form`, chosen so that no session setting can alter them on
the way out or on the way in: strings travel as the raw bytes of the column's character set and
are applied as `_charset X'…'` (no character_set_results / character_set_client conversion);
TIMESTAMP travels as UNIX_TIMESTAMP (time_zone independent) and is applied in a UTC session;
FLOAT and DOUBLE travel as IEEE doubles (a FLOAT widened, which is exact) and are applied as
double literals; DECIMAL, DATE, TIME, DATETIME as the server's exact text; BIT, ENUM,
SET, YEAR and integers as integers (ENUM/SET by index/bitmask, so no collation is involved).

Besides the image, a change carries *key material*: for every key part of the table (the
primary key, each unique key, each foreign key's columns) the canonical bytes the index compares
— WEIGHT_STRING for collated strings (with PAD SPACE trailing spaces removed), raw bytes for
binary strings, the exact text for everything else. `write_set_keys` hashes (schema, table,
index, material) with BLAKE2b-64, so two rows that the index considers equal ('a' and 'A ' under
a case-insensitive PAD SPACE collation) hash equal, on every member and in every process. For
a row referencing a parent through a foreign key, the parent's key hash is part of the write set
too, so a transaction that deletes the parent conflicts with one that adds a child.

`encode_changes` / `decode_changes` give a transaction's changes a compact, versioned byte form
for group communication; decoding validates everything (shapes, forms, value types, bounds) and
raises `RowCodecError` on anything else.

`apply_changes` writes changes on a backend within the caller's transaction: upserts by primary
key with INSERT … ON DUPLICATE KEY UPDATE (never REPLACE, which deletes and would fire
foreign-key cascades), deletes by primary key, consecutive changes of one table batched into
one statement and statements batched into few round trips, in the order the origin made them.

What cannot be exact: MariaDB's UUID type keeps two record layouts and logs (and reads back)
its in-memory value. A 16-byte binary input with version ≥ 8 and a variant byte of 0x01-0x80
(text input refuses that combination) is stored as given but reads back — and is logged — as
another value whose own record differs; the binlog then holds the same bytes for two different
records, so the applied row has the origin's value but not its record (CHECKSUM TABLE differs;
MariaDB's own replicas do the same, and the origin's own index lookups miss such a row). No
image we can read tells the two apart, so this is neither refusable nor repairable here:
tests/integration/test_rowimage_uuid.py pins it; every value text input accepts applies exactly.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, Protocol

from .certifier import KeyHash

if TYPE_CHECKING:
    from .protocol.backend import BackendConnection, Result

# --- bounds --------------------------------------------------------------------------------------

CODEC_VERSION = 1
CODEC_SHAPES_MAX = 4_096  # distinct tables one transaction may write
CODEC_CHANGES_MAX = 10_000_000  # rows one transaction may change
CODEC_COLUMNS_MAX = 4_096  # MySQL allows 4096 columns per table
CODEC_NAME_BYTES_MAX = 256  # identifiers are at most 64 characters (256 bytes in utf8mb4)
APPLY_ROWS_PER_STATEMENT_MAX = 1_000  # rows in one INSERT … VALUES or DELETE … IN (…)
APPLY_STATEMENT_BYTES_MAX = 1 << 20  # a statement is closed once its text passes this size
APPLY_BATCH_BYTES_MAX = 4 << 20  # statements sent in one multi-statement round trip
APPLY_STATEMENTS_PER_BATCH_MAX = 256

INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1  # BIGINT UNSIGNED


class Form(enum.IntEnum):
    """How a column's value is read, carried and applied (see the module docstring)."""

    INT = 1  # integers, YEAR, BIT (col+0), SET (bitmask, col+0): python int
    DECIMAL = 2  # exact decimal text: str
    DOUBLE = 3  # FLOAT / DOUBLE as an IEEE double: python float
    TEMPORAL = 4  # DATE / TIME / DATETIME text: str
    TIMESTAMP = 5  # UNIX_TIMESTAMP(col) text, fractional digits kept: str
    TEXT = 6  # character string: raw bytes in the column's character set
    BYTES = 7  # binary string: raw bytes
    JSON = 8  # MySQL's JSON type: utf8mb4 text bytes
    GEOMETRY = 9  # internal format (SRID + WKB): raw bytes
    ENUM = 10  # index (col+0): python int; 0 is the error value '', stored with a warning


Value = int | float | str | bytes | None
Op = Literal["upsert", "delete"]

_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?\Z")
_TEMPORAL_RE = re.compile(r"-?[0-9][0-9:. -]*\Z")
_TIMESTAMP_RE = re.compile(r"[0-9]+(\.[0-9]+)?\Z")
_CHARSET_RE = re.compile(r"[a-z0-9_]+\Z")
_INT_FORMS = frozenset({Form.INT, Form.ENUM})
_STR_FORMS = {Form.DECIMAL: _DECIMAL_RE, Form.TEMPORAL: _TEMPORAL_RE, Form.TIMESTAMP: _TIMESTAMP_RE}
_BYTES_FORMS = frozenset({Form.TEXT, Form.BYTES, Form.JSON, Form.GEOMETRY})


class RowImageInvariant(AssertionError):
    """A violated invariant of row images: a bug, never a user error (STYLE §10)."""


def check_value(form: Form, value: Value) -> None:
    """Raise ValueError unless `value` is a valid value of `form` (None is NULL)."""
    if value is None:
        return
    if form in _INT_FORMS:
        if type(value) is not int or not INT_MIN <= value <= INT_MAX:
            raise ValueError(f"{form.name} value must be an int in range, not {value!r}")
    elif form is Form.DOUBLE:
        if type(value) is not float or not math.isfinite(value):
            raise ValueError(f"DOUBLE value must be a finite float, not {value!r}")
    elif form in _STR_FORMS:
        if type(value) is not str or not _STR_FORMS[form].match(value):
            raise ValueError(f"{form.name} value has an invalid text {value!r}")
    elif form in _BYTES_FORMS:
        if type(value) is not bytes:
            raise ValueError(f"{form.name} value must be bytes, not {type(value).__name__}")
    else:  # pragma: no cover - Form is closed
        raise ValueError(f"unknown form {form!r}")


@dataclass(frozen=True, slots=True)
class RowShape:
    """The layout of one table's row images, shared by all changes of that table.

    `columns` are the stored, non-generated columns in table order (what an upsert writes);
    `primary_key` indexes into them; `key_parts` lists every (column, prefix length) that some
    unique key or foreign key uses, the order key material follows. `self_referencing` tables
    (a foreign key to themselves) have deletes applied one row at a time in the origin's order.
    """

    schema: str
    table: str
    columns: tuple[str, ...]
    forms: tuple[Form, ...]
    charsets: tuple[str | None, ...]
    primary_key: tuple[int, ...]
    key_parts: tuple[tuple[str, int], ...]
    self_referencing: bool = False

    def __post_init__(self) -> None:
        if not self.schema or not self.table:
            raise ValueError("a row shape needs a schema and a table")
        n = len(self.columns)
        if not 0 < n <= CODEC_COLUMNS_MAX or len(self.forms) != n or len(self.charsets) != n:
            raise ValueError(f"row shape of {self.schema}.{self.table}: columns, forms, charsets differ in length")
        if len(set(self.columns)) != n:
            raise ValueError(f"row shape of {self.schema}.{self.table}: duplicate column")
        if not self.primary_key or len(set(self.primary_key)) != len(self.primary_key):
            raise ValueError(f"row shape of {self.schema}.{self.table}: no primary key")
        if any(not 0 <= i < n for i in self.primary_key):
            raise ValueError(f"row shape of {self.schema}.{self.table}: primary key outside the columns")
        for form, charset in zip(self.forms, self.charsets):
            if not isinstance(form, Form):
                raise ValueError(f"not a Form: {form!r}")
            if form is Form.TEXT:
                if charset is None or not _CHARSET_RE.match(charset):
                    raise ValueError(f"TEXT column needs a character set name, not {charset!r}")
            elif charset is not None:
                raise ValueError(f"only TEXT columns have a character set ({form.name}: {charset!r})")
        if len(set(self.key_parts)) != len(self.key_parts) or any(sub < 0 for _, sub in self.key_parts):
            raise ValueError(f"row shape of {self.schema}.{self.table}: bad key parts")

    @property
    def pk_columns(self) -> tuple[str, ...]:
        return tuple(self.columns[i] for i in self.primary_key)


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row written by a transaction: an upsert with its full after-image, or a delete.

    `pk` is the primary-key values (in `shape.primary_key` order). `after` is the image aligned
    with `shape.columns` (upserts only). `after_key` / `before_key` are the key material of the
    row after / before the change, aligned with `shape.key_parts` (None when that side does not
    exist: no before for an insert, no after for a delete).
    """

    shape: RowShape
    op: Op
    pk: tuple[Value, ...]
    after: tuple[Value, ...] | None
    after_key: tuple[bytes | None, ...] | None
    before_key: tuple[bytes | None, ...] | None

    def __post_init__(self) -> None:
        shape = self.shape
        if len(self.pk) != len(shape.primary_key) or any(v is None for v in self.pk):
            raise ValueError(f"{shape.schema}.{shape.table}: primary key values {self.pk!r} do not fit the shape")
        for i, v in zip(shape.primary_key, self.pk):
            check_value(shape.forms[i], v)
        nparts = len(shape.key_parts)
        for material in (self.after_key, self.before_key):
            if material is not None:
                if len(material) != nparts or any(m is not None and type(m) is not bytes for m in material):
                    raise ValueError(f"{shape.schema}.{shape.table}: key material does not fit the shape")
        if self.op == "upsert":
            if self.after is None or len(self.after) != len(shape.columns) or self.after_key is None:
                raise ValueError(f"{shape.schema}.{shape.table}: an upsert needs a full after-image and its key")
            for form, v in zip(shape.forms, self.after):
                check_value(form, v)
            if tuple(self.after[i] for i in shape.primary_key) != self.pk:
                raise ValueError(f"{shape.schema}.{shape.table}: after-image disagrees with the primary key")
        elif self.op == "delete":
            if self.after is not None or self.after_key is not None or self.before_key is None:
                raise ValueError(f"{shape.schema}.{shape.table}: a delete carries only the key it removes")
        else:
            raise ValueError(f"unknown op {self.op!r}")

    @property
    def schema(self) -> str:
        return self.shape.schema

    @property
    def table(self) -> str:
        return self.shape.table

    def after_image(self) -> dict[str, Value]:
        """column → value of the after-image ({} for a delete)."""
        if self.after is None:
            return {}
        return dict(zip(self.shape.columns, self.after))

    def size_bytes(self) -> int:
        """An estimate of the change's encoded size (what transaction_size_limit counts)."""
        total = 16
        for values in (self.pk, self.after or (), self.after_key or (), self.before_key or ()):
            for v in values:
                total += 2 + (len(v) if isinstance(v, (bytes, str)) else 8)
        return total


# --- write sets ----------------------------------------------------------------------------------


class UniqueKeySpec(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def parts(self) -> tuple[tuple[str, int], ...]: ...


class ParentRefSpec(Protocol):
    @property
    def columns(self) -> tuple[str, ...]: ...  # child columns, in the parent index's column order
    @property
    def parent_schema(self) -> str: ...
    @property
    def parent_table(self) -> str: ...
    @property
    def parent_index(self) -> str: ...


class KeySpec(Protocol):
    """What `write_set_keys` needs of a table: its unique keys and its foreign-key parents."""

    @property
    def unique_keys(self) -> Sequence[UniqueKeySpec]: ...  # the primary key first, named PRIMARY
    @property
    def parents(self) -> Sequence[ParentRefSpec]: ...


_HASH_PERSON = b"grproxy-wset-v1"


def key_hash(schema: str, table: str, index: str, values: Sequence[bytes]) -> KeyHash:
    """The 64-bit hash of one index entry: deterministic across members and processes.

    Index names compare case-insensitively in MySQL, so they are folded; schema and table names
    are hashed as stored (the catalog gives them as the server spells them).
    """
    h = hashlib.blake2b(digest_size=8, person=_HASH_PERSON)
    for part in (schema.encode("utf-8"), table.encode("utf-8"), index.lower().encode("utf-8")):
        h.update(struct.pack(">I", len(part)))
        h.update(part)
    h.update(struct.pack(">I", len(values)))
    for value in values:
        h.update(struct.pack(">I", len(value)))
        h.update(value)
    return KeyHash(int.from_bytes(h.digest(), "big"))


def write_set_keys(change: RowChange, table_meta: KeySpec) -> set[KeyHash]:
    """Hashes of every index entry the change writes or frees, plus its parents' keys.

    For the after-image and the before-image (whichever exist): the primary key and every unique
    key whose parts are all non-NULL (a NULL never collides), and the primary/unique key of the
    parent row each non-NULL foreign key points at. Raises ValueError when the change's shape
    lacks material for a key part `table_meta` names (the two disagree: stale metadata).
    """
    shape = change.shape
    position = {part: i for i, part in enumerate(shape.key_parts)}
    keys: set[KeyHash] = set()
    for material in (change.after_key, change.before_key):
        if material is None:
            continue
        for index in table_meta.unique_keys:
            values = _material(material, position, index.parts, shape)
            if values is not None:
                keys.add(key_hash(shape.schema, shape.table, index.name, values))
        for parent in table_meta.parents:
            values = _material(material, position, tuple((c, 0) for c in parent.columns), shape)
            if values is not None:
                keys.add(key_hash(parent.parent_schema, parent.parent_table, parent.parent_index, values))
    return keys


def _material(
    material: Sequence[bytes | None],
    position: dict[tuple[str, int], int],
    parts: Sequence[tuple[str, int]],
    shape: RowShape,
) -> list[bytes] | None:
    out: list[bytes] = []
    for part in parts:
        i = position.get(part)
        if i is None:
            raise ValueError(f"{shape.schema}.{shape.table}: no key material for {part!r} (stale metadata?)")
        value = material[i]
        if value is None:
            return None
        out.append(value)
    return out


def canonical_bytes(form: Form, value: Value) -> bytes | None:
    """Key material of a value whose index comparison is exact (not a collated string)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value + 0.0).encode("ascii")  # -0.0 and 0.0 are the same index entry
    if isinstance(value, int):
        return str(value).encode("ascii")
    if form is Form.DECIMAL or form is Form.TIMESTAMP:
        d = Decimal(value)
        return (str(d.normalize()) if d else "0").encode("ascii")
    return value.encode("ascii")


# --- SQL rendering -------------------------------------------------------------------------------


def quote_identifier(name: str) -> str:
    """`name` as a backquoted identifier."""
    return "`" + name.replace("`", "``") + "`"


def qualified_name(schema: str, table: str) -> str:
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"


def render_value(form: Form, value: Value, charset: str | None = None) -> str:
    """A SQL literal that stores exactly `value` into a column of `form` (apply session: UTC).

    Raises ValueError for a value that is not valid for the form.
    """
    check_value(form, value)
    if value is None:
        return "NULL"
    if form in _INT_FORMS:
        return str(value)
    if form is Form.DOUBLE:
        text = repr(value)
        return text if "e" in text else text + "E0"
    if form is Form.DECIMAL:
        return str(value)
    if form is Form.TEMPORAL:
        return f"'{value}'"
    if form is Form.TIMESTAMP:
        if Decimal(str(value)) == 0:
            return "'0000-00-00 00:00:00'"  # the zero TIMESTAMP: UNIX_TIMESTAMP() says 0
        return f"FROM_UNIXTIME({value})"
    assert isinstance(value, bytes)
    hexed = value.hex().upper()
    if form is Form.TEXT:
        if charset is None or not _CHARSET_RE.match(charset):
            raise ValueError(f"TEXT value needs a character set, not {charset!r}")
        return f"_{charset} X'{hexed}'"
    if form is Form.JSON:
        return f"CAST(_utf8mb4 X'{hexed}' AS JSON)"
    return f"X'{hexed}'"  # BYTES, GEOMETRY (internal format is accepted as is)


def pk_predicate(shape: RowShape, keys: Sequence[Sequence[Value]], qualifier: str = "") -> str:
    """`WHERE` text selecting exactly the rows with these primary keys ("FALSE" if none)."""
    if not keys:
        return "FALSE"
    prefix = qualifier + "." if qualifier else ""
    cols = [prefix + quote_identifier(shape.columns[i]) for i in shape.primary_key]
    forms = [shape.forms[i] for i in shape.primary_key]
    charsets = [shape.charsets[i] for i in shape.primary_key]
    if len(cols) == 1:
        literals = ", ".join(render_value(forms[0], k[0], charsets[0]) for k in keys)
        return f"{cols[0]} IN ({literals})"
    terms = []
    for key in keys:
        terms.append(
            "(" + " AND ".join(f"{c} = {render_value(f, v, cs)}" for c, f, v, cs in zip(cols, forms, key, charsets)) + ")"
        )
    return "(" + " OR ".join(terms) + ")"


# --- codec ---------------------------------------------------------------------------------------

_MAGIC = b"\xc7R"
_TAG_NULL, _TAG_INT, _TAG_FLOAT, _TAG_STR, _TAG_BYTES = 0, 1, 2, 3, 4
_OP_DELETE, _HAS_AFTER_KEY, _HAS_BEFORE_KEY = 1, 2, 4
_SHAPE_SELF_REFERENCING = 1


class RowCodecError(ValueError):
    """Bytes that are not a valid encoding of a transaction's row changes."""


def _varint(n: int, out: bytearray) -> None:
    if n < 0:
        raise RowImageInvariant(f"varint of negative {n}")
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _put_bytes(b: bytes, out: bytearray) -> None:
    _varint(len(b), out)
    out += b


def _put_value(v: Value, out: bytearray) -> None:
    if v is None:
        out.append(_TAG_NULL)
    elif type(v) is int:
        out.append(_TAG_INT)
        _varint((v << 1) if v >= 0 else ((-v << 1) - 1), out)  # zigzag
    elif type(v) is float:
        out.append(_TAG_FLOAT)
        out += struct.pack(">d", v)
    elif type(v) is str:
        out.append(_TAG_STR)
        _put_bytes(v.encode("ascii"), out)
    elif type(v) is bytes:
        out.append(_TAG_BYTES)
        _put_bytes(v, out)
    else:
        raise RowImageInvariant(f"not a row value: {type(v).__name__}")


def encode_changes(changes: Sequence[RowChange]) -> bytes:
    """The versioned byte form of one transaction's changes, in order.

    Shapes are written once and referenced by index. Changes are validated at construction, so
    encoding cannot fail for a well-formed list; a list over the codec bounds raises ValueError.
    """
    if len(changes) > CODEC_CHANGES_MAX:
        raise ValueError(f"{len(changes)} row changes is over the bound of {CODEC_CHANGES_MAX}")
    shape_index: dict[RowShape, int] = {}
    shapes: list[RowShape] = []
    for change in changes:
        if change.shape not in shape_index:
            shape_index[change.shape] = len(shapes)
            shapes.append(change.shape)
    if len(shapes) > CODEC_SHAPES_MAX:
        raise ValueError(f"{len(shapes)} tables is over the bound of {CODEC_SHAPES_MAX}")
    out = bytearray(_MAGIC)
    out.append(CODEC_VERSION)
    _varint(len(shapes), out)
    for shape in shapes:
        _put_bytes(shape.schema.encode("utf-8"), out)
        _put_bytes(shape.table.encode("utf-8"), out)
        _varint(len(shape.columns), out)
        for name, form, charset in zip(shape.columns, shape.forms, shape.charsets):
            _put_bytes(name.encode("utf-8"), out)
            out.append(int(form))
            _put_bytes((charset or "").encode("ascii"), out)
        _varint(len(shape.primary_key), out)
        for i in shape.primary_key:
            _varint(i, out)
        _varint(len(shape.key_parts), out)
        for column, sub_part in shape.key_parts:
            _put_bytes(column.encode("utf-8"), out)
            _varint(sub_part, out)
        out.append(_SHAPE_SELF_REFERENCING if shape.self_referencing else 0)
    _varint(len(changes), out)
    for change in changes:
        _varint(shape_index[change.shape], out)
        flags = (_OP_DELETE if change.op == "delete" else 0)
        flags |= _HAS_AFTER_KEY if change.after_key is not None else 0
        flags |= _HAS_BEFORE_KEY if change.before_key is not None else 0
        out.append(flags)
        if change.op == "delete":
            for v in change.pk:
                _put_value(v, out)
        else:
            assert change.after is not None
            for v in change.after:
                _put_value(v, out)
        for material in (change.after_key, change.before_key):
            if material is not None:
                for m in material:
                    _put_value(m, out)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise RowCodecError("truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self, bound: int) -> int:
        n = 0
        for shift in range(0, 10 * 7, 7):
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                if b == 0 and shift:
                    raise RowCodecError("non-minimal varint")
                if n > bound:
                    raise RowCodecError(f"value {n} over its bound {bound}")
                return n
        raise RowCodecError("varint too long")

    def raw(self, bound: int) -> bytes:
        n = self.varint(bound)
        if self.pos + n > len(self.data):
            raise RowCodecError("truncated")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def name(self) -> str:
        try:
            return self.raw(CODEC_NAME_BYTES_MAX).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RowCodecError("a name is not UTF-8") from exc

    def value(self) -> Value:
        tag = self.byte()
        if tag == _TAG_NULL:
            return None
        if tag == _TAG_INT:
            z = self.varint(2 * INT_MAX + 2)
            v = (z >> 1) if not z & 1 else -((z + 1) >> 1)
            return v
        if tag == _TAG_FLOAT:
            if self.pos + 8 > len(self.data):
                raise RowCodecError("truncated")
            (f,) = struct.unpack_from(">d", self.data, self.pos)
            self.pos += 8
            return float(f)
        if tag == _TAG_STR:
            try:
                return self.raw(len(self.data)).decode("ascii")
            except UnicodeDecodeError as exc:
                raise RowCodecError("text value is not ASCII") from exc
        if tag == _TAG_BYTES:
            return self.raw(len(self.data))
        raise RowCodecError(f"unknown value tag {tag}")


def decode_changes(data: bytes) -> list[RowChange]:
    """Inverse of `encode_changes`. Raises RowCodecError for anything but a valid encoding."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RowCodecError("row changes must be bytes")
    r = _Reader(bytes(data))
    if r.data[:2] != _MAGIC:
        raise RowCodecError("not an encoding of row changes (bad magic)")
    r.pos = 2
    version = r.byte()
    if version != CODEC_VERSION:
        raise RowCodecError(f"row changes encoding version {version} is not {CODEC_VERSION}")
    try:
        shapes: list[RowShape] = []
        for _ in range(r.varint(CODEC_SHAPES_MAX)):
            schema, table = r.name(), r.name()
            ncols = r.varint(CODEC_COLUMNS_MAX)
            columns, forms, charsets = [], [], []
            for _ in range(ncols):
                columns.append(r.name())
                form_code = r.byte()
                try:
                    forms.append(Form(form_code))
                except ValueError as exc:
                    raise RowCodecError(f"unknown form {form_code}") from exc
                charset = r.name()
                charsets.append(charset or None)
            pk = tuple(r.varint(CODEC_COLUMNS_MAX) for _ in range(r.varint(CODEC_COLUMNS_MAX)))
            parts = tuple((r.name(), r.varint(1 << 32)) for _ in range(r.varint(CODEC_COLUMNS_MAX)))
            flags = r.byte()
            if flags & ~_SHAPE_SELF_REFERENCING:
                raise RowCodecError(f"unknown shape flags {flags:#x}")
            shapes.append(
                RowShape(schema, table, tuple(columns), tuple(forms), tuple(charsets), pk, parts,
                         bool(flags & _SHAPE_SELF_REFERENCING))
            )
        if len(set(shapes)) != len(shapes):
            raise RowCodecError("a table shape is written twice")
        changes: list[RowChange] = []
        used = 0  # shapes are numbered in the order changes first use them
        for _ in range(r.varint(CODEC_CHANGES_MAX)):
            if not shapes:
                raise RowCodecError("a change refers to no table")
            index = r.varint(len(shapes) - 1)
            if index > used:
                raise RowCodecError("table shapes out of order")
            used = max(used, index + 1)
            shape = shapes[index]
            flags = r.byte()
            if flags & ~(_OP_DELETE | _HAS_AFTER_KEY | _HAS_BEFORE_KEY):
                raise RowCodecError(f"unknown change flags {flags:#x}")
            if flags & _OP_DELETE:
                pk_values = tuple(r.value() for _ in shape.primary_key)
                after = None
            else:
                after = tuple(r.value() for _ in shape.columns)
                pk_values = tuple(after[i] for i in shape.primary_key)
            nparts = len(shape.key_parts)
            after_key = tuple(_material_value(r) for _ in range(nparts)) if flags & _HAS_AFTER_KEY else None
            before_key = tuple(_material_value(r) for _ in range(nparts)) if flags & _HAS_BEFORE_KEY else None
            changes.append(
                RowChange(shape, "delete" if flags & _OP_DELETE else "upsert", pk_values, after, after_key, before_key)
            )
    except RowCodecError:
        raise
    except (ValueError, TypeError) as exc:  # a constructor refused what was decoded
        raise RowCodecError(str(exc)) from exc
    if used != len(shapes):
        raise RowCodecError("a table shape is not used by any change")
    if r.pos != len(r.data):
        raise RowCodecError(f"{len(r.data) - r.pos} bytes after the last change")
    return changes


def _material_value(r: _Reader) -> bytes | None:
    v = r.value()
    if v is not None and type(v) is not bytes:
        raise RowCodecError("key material must be bytes or NULL")
    return v


# --- transactions ----------------------------------------------------------------------------------

TRANSACTION_SIZE_LIMIT_DEFAULT = 150_000_000  # GR's group_replication_transaction_size_limit


class TransactionTooLarge(Exception):
    """The changes of one transaction passed transaction_size_limit (reported as 3100)."""


@dataclass(slots=True)
class TransactionChanges:
    """The changes of one transaction, in the origin's order, bounded by `size_limit_bytes`.

    `add` raises TransactionTooLarge as soon as the estimate passes the limit (0 = no limit),
    so a runaway transaction is stopped before it is buffered whole; the member then rolls the
    transaction back and reports 3100, as GR does at commit.
    """

    size_limit_bytes: int = TRANSACTION_SIZE_LIMIT_DEFAULT
    changes: list[RowChange] = field(default_factory=list)
    size_bytes: int = 0

    def add(self, changes: Iterable[RowChange]) -> None:
        for change in changes:
            self.size_bytes += change.size_bytes()
            self.changes.append(change)
        if self.size_limit_bytes and self.size_bytes > self.size_limit_bytes:
            raise TransactionTooLarge(
                f"transaction of about {self.size_bytes} bytes is over transaction_size_limit ({self.size_limit_bytes})"
            )

    def __iter__(self) -> Iterator[RowChange]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)


# --- apply -------------------------------------------------------------------------------------------

# The applier's session. UTC so that FROM_UNIXTIME() gives back the TIMESTAMP that was read;
# NO_AUTO_VALUE_ON_ZERO so that a replicated 0 in an AUTO_INCREMENT column stays 0;
# ALLOW_INVALID_DATES so that a date the origin accepted (under that mode) is stored again;
# not strict, because the one value strict mode rejects that an origin may hold is the ENUM
# error value (index 0) — every apply statement's warnings are checked instead, so a value that
# does not store exactly fails loudly rather than being truncated.
#
# foreign_key_checks stays ON. The applier applies whole transactions in certification order,
# each on a backend that already holds every earlier transaction touching the same keys (a
# referenced parent's key is in the write set of every transaction that depends on it, so a
# child cannot overtake the transaction that creates its parent, nor run beside one deleting
# it), and within a transaction changes are applied in the order the origin made them: every
# intermediate state passed the origin's checks and passes them here. Cascading actions never
# need to fire because writeset.derive refuses changes that fired one (3098). Keeping the
# checks on turns a divergence into a loud apply error instead of silent orphans.
# unique_checks stays ON for the same reason.
APPLY_SESSION_SQL = (
    "SET SESSION time_zone = '+00:00', "
    "sql_mode = 'NO_AUTO_VALUE_ON_ZERO,ALLOW_INVALID_DATES,NO_ENGINE_SUBSTITUTION', "
    "foreign_key_checks = 1, unique_checks = 1, character_set_client = utf8mb4, "
    "character_set_results = NULL, collation_connection = utf8mb4_general_ci"
)


class ApplyError(Exception):
    """A change did not apply exactly (a delete found no row, a value did not store as is).

    The backends have diverged or the image is wrong: the member must stop (ERROR state), and the
    caller's transaction must be rolled back.
    """


@dataclass(frozen=True, slots=True)
class _ApplyStatement:
    sql: str
    kind: Literal["session", "upsert", "delete", "warnings"]
    rows: int
    enum_zero: bool = False


def _enum_zero(change: RowChange) -> bool:
    return change.after is not None and any(
        f is Form.ENUM and v == 0 for f, v in zip(change.shape.forms, change.after)
    )


def _statements(changes: Sequence[RowChange], mariadb: bool) -> Iterator[_ApplyStatement]:
    i = 0
    n = len(changes)
    while i < n:
        first = changes[i]
        shape, op = first.shape, first.op
        group = [first]
        j = i + 1
        size = 0
        zero = _enum_zero(first)
        single = zero or (op == "delete" and shape.self_referencing)
        while not single and j < n and len(group) < APPLY_ROWS_PER_STATEMENT_MAX and size < APPLY_STATEMENT_BYTES_MAX:
            nxt = changes[j]
            if nxt.shape != shape or nxt.op != op:
                break
            if _enum_zero(nxt):
                break
            group.append(nxt)
            size += nxt.size_bytes()
            j += 1
        if op == "upsert":
            yield _ApplyStatement(_upsert_sql(shape, group, mariadb), "upsert", len(group), zero)
            if zero:
                yield _ApplyStatement("SHOW WARNINGS", "warnings", 0)
        else:
            where = pk_predicate(shape, [c.pk for c in group])
            yield _ApplyStatement(f"DELETE FROM {qualified_name(shape.schema, shape.table)} WHERE {where}", "delete", len(group))
        i = j


def _upsert_sql(shape: RowShape, group: Sequence[RowChange], mariadb: bool) -> str:
    cols = [quote_identifier(c) for c in shape.columns]
    rows = []
    for change in group:
        assert change.after is not None
        rows.append("(" + ", ".join(render_value(f, v, cs) for f, v, cs in zip(shape.forms, change.after, shape.charsets)) + ")")
    pk = set(shape.primary_key)
    updated = [c for i, c in enumerate(cols) if i not in pk] or [cols[shape.primary_key[0]]]
    head = f"INSERT INTO {qualified_name(shape.schema, shape.table)} ({', '.join(cols)}) VALUES {', '.join(rows)}"
    if mariadb:
        return head + " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in updated)
    # MySQL 8.0.20+ deprecates VALUES() here (warning 1287): use a row alias.
    return head + " AS `__grproxy_new` ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = `__grproxy_new`.{c}" for c in updated)


async def apply_changes(
    conn: "BackendConnection",
    changes: Sequence[RowChange],
) -> int:
    """Apply `changes` in order on `conn`, inside the caller's open transaction.

    Sets the applier session (APPLY_SESSION_SQL) first, in the same round trip as the first
    statements, and leaves it so (the applier's connections are its own). A row holding the
    ENUM error value (index 0) is applied in a statement of its own whose only tolerated
    warning is 1265. Returns the number of round trips used.

    Raises ApplyError when a delete finds fewer rows than it names or a statement warns (the
    value did not store exactly) — the caller must roll back and stop applying; BackendError for
    a server error (duplicate key, foreign key violation: a divergence as well).
    """
    mariadb = bool(conn.handshake and conn.handshake.is_mariadb)
    statements = [_ApplyStatement(APPLY_SESSION_SQL, "session", 0)]
    statements += _statements(changes, mariadb)
    round_trips = 0
    k = 0
    multi = bool(conn.capabilities & (1 << 16))  # Cap.MULTI_STATEMENTS
    while k < len(statements):
        batch = [statements[k]]
        size = len(statements[k].sql)
        k += 1
        while (
            multi and k < len(statements) and len(batch) < APPLY_STATEMENTS_PER_BATCH_MAX
            and size + len(statements[k].sql) < APPLY_BATCH_BYTES_MAX
        ):
            batch.append(statements[k])
            size += len(statements[k].sql)
            k += 1
        if batch[-1].kind == "upsert" and batch[-1].enum_zero and k < len(statements):
            batch.append(statements[k])  # keep an ENUM-0 upsert with its SHOW WARNINGS
            k += 1
        results = await conn.execute_all(";\n".join(s.sql for s in batch))
        round_trips += 1
        if len(results) != len(batch):
            raise RowImageInvariant(f"{len(batch)} apply statements gave {len(results)} results")
        for stmt, result in zip(batch, results):
            _check_applied(stmt, result)
    return round_trips


def _check_applied(stmt: _ApplyStatement, result: "Result") -> None:
    affected, warnings = result.affected_rows, result.warnings
    if stmt.kind == "delete" and affected != stmt.rows:
        raise ApplyError(f"delete by primary key removed {affected} of {stmt.rows} rows: {stmt.sql[:300]}")
    if stmt.kind == "upsert" and warnings and not stmt.enum_zero:
        raise ApplyError(f"applying a row image raised {warnings} warnings (value not stored exactly): {stmt.sql[:300]}")
    if stmt.kind == "warnings":
        bad = [r for r in result.rows if r[1] != b"1265"]
        if bad:
            raise ApplyError(f"applying a row image warned: {bad!r}")


async def apply_encoded(conn: "BackendConnection", data: bytes) -> None:
    """The applier's entry point (replication.applier.ApplyChanges): decode, then apply_changes.

    Raises RowCodecError for bytes that are not a valid encoding (the member must stop: the
    group delivered something no member should have sent).
    """
    await apply_changes(conn, decode_changes(data))
