"""Certification of write sets: deterministic, at delivery, the same on every member.

Theory of operation (DESIGN §5). Every transaction reaches every member in the same total
order, carrying its *write set* (64-bit hashes of the primary/unique keys it wrote, and of the
foreign-key parents it depends on) and its *snapshot*: the low-water mark of the member that
ran it — every seq at or below the snapshot was committed on that member's backend before the
transaction's rows were locked, so it has seen them.

    conflict  <=>  some key of the write set was last written by a seq > snapshot that the
                   transaction did not see

(A member commits local transactions out of order, so besides its low-water mark a snapshot
names the seqs already committed above it: a transaction that waited on a row lock has seen
the writer that held it, even when an older seq is still committing.)

A transaction that passes gets the next seq and becomes the last writer of its keys (first
committer wins). The certification database maps key → last writer seq.

Garbage collection: members report, through the same total order, the lowest snapshot any
transaction of theirs may still carry (their low-water mark, or less while one of their own
transactions is in flight). A key whose last writer is at or below the minimum over all
members can never make a future transaction fail — every future snapshot is at least that
minimum — so it is dropped. Because the reports are totally ordered, every member drops the
same keys at the same point and certification stays identical everywhere.

DDL (DESIGN §5). A DDL takes a seq of its own (`ddl`) and names the tables (or schemas) it
changes as 64-bit hashes; the certifier keeps the last DDL seq of each. A transaction also
names the tables and schemas it wrote: it conflicts with a DDL on one of them ordered after
its snapshot that it did not see — its rows were written against the table as it was before
(and on its member its prepared XA transaction holds the table's metadata lock the DDL waits
for: the conflict rolls it back and lets the DDL run). A DDL whose tables are not known names
`ALL_TABLES`, which every transaction conflicts with. Garbage-collected like keys.

Pure: no I/O, no clock. Bounded by `keys_max`: at the bound, certification refuses new
transactions (`CertifierFull`) rather than forgetting keys, which would be unsound.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NewType

Seq = NewType("Seq", int)
KeyHash = NewType("KeyHash", int)

CERT_KEYS_MAX_DEFAULT = 10_000_000
ALL_TABLES = KeyHash(0)  # a DDL whose tables are unknown: it conflicts with every transaction


class CertifierFull(Exception):
    """The certification database holds `keys_max` keys: the group must garbage-collect first."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The certifier's verdict on one transaction."""

    positive: bool
    seq: Seq | None  # assigned only when positive
    conflict_key: KeyHash | None = None  # one key that conflicted, for diagnostics
    conflict_seq: Seq | None = None


@dataclass(slots=True)
class Certifier:
    """The certification database and the seq counter of one member.

    `certify` and `report_stable` must be called in delivery order, with the same arguments on
    every member; then every member reaches the same verdicts and the same state.
    """

    last_seq: Seq = Seq(0)
    keys_max: int = CERT_KEYS_MAX_DEFAULT
    _last_writer: dict[KeyHash, Seq] = field(default_factory=dict)
    _reports: dict[str, Seq] = field(default_factory=dict)
    stable: Seq = Seq(0)
    _last_ddl: dict[KeyHash, Seq] = field(default_factory=dict)  # table / schema hash → last DDL seq

    def certify(self, write_set: Iterable[KeyHash], snapshot: Seq, seen: Collection[Seq] = (),
                tables: Iterable[KeyHash] = ()) -> Outcome:
        """Certify a transaction. Positive → its seq; its keys now point at that seq.

        The transaction saw every seq up to `snapshot` and the seqs in `seen` (committed on its
        member above the snapshot, out of order); it conflicts with a later writer of one of its
        keys that it did not see, and with a later DDL on one of its `tables` (table and schema
        hashes) or on ALL_TABLES that it did not see (`conflict_key` is then the table's hash).

        Raises ValueError for a snapshot from the future (a bug upstream), CertifierFull when
        admitting the keys would pass `keys_max`.
        """
        if snapshot > self.last_seq or (seen and max(seen) > self.last_seq):
            raise ValueError(f"[BUG] snapshot {snapshot} / seen seqs after the last certified seq {self.last_seq}")
        if self._last_ddl:
            for table in (ALL_TABLES, *tables):
                ddl = self._last_ddl.get(table)
                if ddl is not None and ddl > snapshot and ddl not in seen:
                    return Outcome(False, None, table, ddl)
        keys = write_set if isinstance(write_set, (set, frozenset, tuple, list)) else tuple(write_set)
        last_writer = self._last_writer
        for key in keys:
            writer = last_writer.get(key)
            if writer is not None and writer > snapshot and writer not in seen:
                return Outcome(False, None, key, writer)
        if len(last_writer) + len(keys) > self.keys_max:
            raise CertifierFull(f"certification database at its bound of {self.keys_max} keys")
        seq = Seq(self.last_seq + 1)
        self.last_seq = seq
        for key in keys:
            last_writer[key] = seq
        return Outcome(True, seq)

    def assign(self) -> Seq:
        """Give the next seq to a totally ordered event that is not certified."""
        self.last_seq = Seq(self.last_seq + 1)
        return self.last_seq

    def ddl(self, tables: Iterable[KeyHash]) -> Seq:
        """Give the next seq to a DDL changing `tables` (table / schema hashes, or ALL_TABLES):
        transactions on them with an earlier snapshot now conflict (see `certify`). The DDL
        itself is never refused: the bound on keys is not checked (a DDL names few)."""
        seq = self.assign()
        for table in tables:
            self._last_ddl[table] = seq
        return seq

    def report_stable(self, member: str, lowest_snapshot: Seq, members: Iterable[str]) -> int:
        """A member's report of the lowest snapshot it may still send; returns keys dropped.

        `members` is the current view: reports of members outside it are forgotten, and until
        every member of the view has reported nothing is collected.
        """
        view = set(members)
        self._reports[member] = max(self._reports.get(member, Seq(0)), lowest_snapshot)
        for gone in [m for m in self._reports if m not in view]:
            del self._reports[gone]
        if not view or any(m not in self._reports for m in view):
            return 0
        stable = Seq(min(self._reports[m] for m in view))
        if stable <= self.stable:
            return 0
        self.stable = stable
        before = len(self._last_writer)
        self._last_writer = {k: s for k, s in self._last_writer.items() if s > stable}
        self._last_ddl = {k: s for k, s in self._last_ddl.items() if s > stable}
        return before - len(self._last_writer)

    def __len__(self) -> int:
        return len(self._last_writer)

    def snapshot_state(self) -> tuple[Seq, Seq, Mapping[KeyHash, Seq]]:
        """(last_seq, stable, key → last writer): what a donor sends a joining member."""
        return self.last_seq, self.stable, dict(self._last_writer)

    def ddl_state(self) -> dict[KeyHash, Seq]:
        """table / schema hash → last DDL seq (sent to a joining member with `snapshot_state`)."""
        return dict(self._last_ddl)

    @classmethod
    def from_state(cls, last_seq: Seq, stable: Seq, last_writer: Mapping[KeyHash, Seq], keys_max: int = CERT_KEYS_MAX_DEFAULT,
                   last_ddl: Mapping[KeyHash, Seq] | None = None) -> "Certifier":
        return cls(last_seq=last_seq, keys_max=keys_max, _last_writer=dict(last_writer), stable=stable,
                   _last_ddl=dict(last_ddl or {}))
