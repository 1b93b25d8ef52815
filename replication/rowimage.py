"""Row images: what a write changed, in the form its write set is derived from.

Theory of operation (DESIGN §5). A member reads every row its prepared transaction changed back
from the binary log (replication/binlog/rows.py, replication/writeset.py) as `RowChange`s:

* an *upsert* carries the full after-image of the row (every stored, non-generated column);
* a *delete* carries the primary key of the row that is gone.

Values are typed by the column's `Form`, chosen so that no session setting can alter them:
strings are the raw bytes of the column's character set, TIMESTAMP is UNIX_TIMESTAMP text (time
zone independent), FLOAT and DOUBLE are IEEE doubles (a FLOAT widened, which is exact), DECIMAL,
DATE, TIME, DATETIME the server's exact text; BIT, ENUM, SET, YEAR and integers are integers
(ENUM/SET by index/bitmask, so no collation is involved).

Besides the image, a change carries *key material*: for every key part of the table (the
primary key, each unique key, each foreign key's columns) the canonical bytes the index compares
— WEIGHT_STRING for collated strings (with PAD SPACE trailing spaces removed), raw bytes for
binary strings, the exact text for everything else. `write_set_keys` hashes (schema, table,
index, material) with BLAKE2b-64, so two rows that the index considers equal ('a' and 'A ' under
a case-insensitive PAD SPACE collation) hash equal, on every member and in every process. For
a row referencing a parent through a foreign key, the parent's key hash is part of the write set
too, so a transaction that deletes the parent conflicts with one that adds a child.

What the other members apply is not these images but the origin's row events themselves
(replication/rowevents.py: BINLOG statements, the server's own row applier), which replaced the
SQL this module generated from the images (measured with bench/apply_paths.py at commit 968a515:
about half the member's and two thirds of the server's CPU per transaction, and exact by
construction). `TransactionChanges` bounds a transaction's images by transaction_size_limit.

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
from typing import Literal, Protocol

from .certifier import KeyHash

# --- bounds --------------------------------------------------------------------------------------

COLUMNS_MAX = 4_096  # MySQL allows 4096 columns per table

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
        if not 0 < n <= COLUMNS_MAX or len(self.forms) != n or len(self.charsets) != n:
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


# --- identifiers -------------------------------------------------------------------------------


def quote_identifier(name: str) -> str:
    """`name` as a backquoted identifier."""
    return "`" + name.replace("`", "``") + "`"


def qualified_name(schema: str, table: str) -> str:
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"


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
