"""A history of operations, as Jepsen records them: what each client asked and what it learnt.

Theory of operation
-------------------
Every operation a client (a *process*) performs is two entries: an ``invoke`` when it starts
and exactly one completion when it ends:

- ``ok``: the system acknowledged it; its value is what the system answered (reads filled in);
- ``fail``: it certainly did not take effect (an error returned before COMMIT, a certification
  conflict, a refused write);
- ``info``: we do not know. A COMMIT whose answer was lost (connection error, timeout, the
  member died) is ``info``: it may or may not have committed, and a checker must accept both.

A process runs one operation at a time; after an ``info`` the process is considered crashed and
the client continues under a new process id, as Jepsen does, so a history never has two open
operations of one process. Times are ``time.monotonic_ns()`` of the recording machine: the
stale-read checker compares an acknowledgement time with a later invoke time, so both must come
from the same clock.

On disk a history is JSON lines, one entry per line, written and flushed as it happens, so a run
that is killed still leaves everything up to its last operation. :func:`load` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

OpType = Literal["invoke", "ok", "fail", "info"]
OP_TYPES: tuple[str, ...] = ("invoke", "ok", "fail", "info")
COMPLETIONS: tuple[str, ...] = ("ok", "fail", "info")


@dataclasses.dataclass(frozen=True, slots=True)
class Op:
    """One history entry.

    ``index`` is the position in the history (0-based, dense). ``f`` names the operation
    ("txn", "transfer", "read", "insert" …); ``value`` is JSON-shaped data (lists, dicts,
    numbers, strings, None). ``member`` optionally says which member served it; ``error`` is the
    error text of a ``fail``/``info``.
    """

    index: int
    process: int
    type: OpType
    f: str
    value: Any
    time_ns: int
    error: str | None = None
    member: str | None = None

    def __post_init__(self) -> None:
        if self.type not in OP_TYPES:
            raise ValueError(f"op type {self.type!r} is not one of {OP_TYPES}")
        if self.index < 0:
            raise ValueError("index must be >= 0")

    def to_json(self) -> str:
        d = {"index": self.index, "process": self.process, "type": self.type, "f": self.f,
             "value": self.value, "time_ns": self.time_ns}
        if self.error is not None:
            d["error"] = self.error
        if self.member is not None:
            d["member"] = self.member
        return json.dumps(d, separators=(",", ":"))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Op:
        return Op(index=int(d["index"]), process=int(d["process"]), type=d["type"], f=str(d["f"]),
                  value=d.get("value"), time_ns=int(d["time_ns"]), error=d.get("error"),
                  member=d.get("member"))


@dataclasses.dataclass(frozen=True, slots=True)
class Completed:
    """An invocation with its completion; ``completion`` is None when the history ended first
    (which counts as ``info``)."""

    invoke: Op
    completion: Op | None

    @property
    def type(self) -> str:
        return "info" if self.completion is None else self.completion.type

    @property
    def value(self) -> Any:
        """The completion's value when there is one (reads filled in), else the invocation's."""
        if self.completion is not None and self.completion.value is not None:
            return self.completion.value
        return self.invoke.value

    @property
    def process(self) -> int:
        return self.invoke.process

    @property
    def f(self) -> str:
        return self.invoke.f

    @property
    def invoke_ns(self) -> int:
        return self.invoke.time_ns

    @property
    def complete_ns(self) -> int | None:
        return None if self.completion is None else self.completion.time_ns


class HistoryError(ValueError):
    """A history that breaks its own rules (a completion without invocation, two open
    operations of one process, indices out of order)."""


class Recorder:
    """Records a history in memory and, when given a path, as JSON lines on disk.

    Thread-safe: workload clients may run in threads. ``invoke`` returns the invocation entry;
    pass it to ``ok`` / ``fail`` / ``info``.
    """

    def __init__(self, path: Path | None = None, *, clock_ns: Any = time.monotonic_ns) -> None:
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._open: dict[int, Op] = {}
        self._clock_ns = clock_ns
        self._file: IO[str] | None = open(path, "w", encoding="utf-8") if path is not None else None  # noqa: SIM115
        self.path = path

    def _append(self, process: int, type_: OpType, f: str, value: Any, error: str | None,
                member: str | None) -> Op:
        with self._lock:
            op = Op(len(self._ops), process, type_, f, value, self._clock_ns(), error, member)
            if type_ == "invoke":
                if process in self._open:
                    raise HistoryError(f"process {process} already has an open operation")
                self._open[process] = op
            else:
                if self._open.pop(process, None) is None:
                    raise HistoryError(f"process {process} completes an operation it never invoked")
            self._ops.append(op)
            if self._file is not None:
                self._file.write(op.to_json() + "\n")
                self._file.flush()
            return op

    def invoke(self, process: int, f: str, value: Any, member: str | None = None) -> Op:
        return self._append(process, "invoke", f, value, None, member)

    def ok(self, invoked: Op, value: Any = None, member: str | None = None) -> Op:
        return self._append(invoked.process, "ok", invoked.f, invoked.value if value is None else value, None,
                            member or invoked.member)

    def fail(self, invoked: Op, error: str, member: str | None = None) -> Op:
        return self._append(invoked.process, "fail", invoked.f, invoked.value, error, member or invoked.member)

    def info(self, invoked: Op, error: str, member: str | None = None) -> Op:
        return self._append(invoked.process, "info", invoked.f, invoked.value, error, member or invoked.member)

    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dump(ops: Iterable[Op], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for op in ops:
            f.write(op.to_json() + "\n")


def load(path: Path) -> list[Op]:
    """Read a JSON-lines history back. A torn last line (the writer was killed mid-write) is
    ignored; any other bad line raises HistoryError naming it."""
    ops: list[Op] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            ops.append(Op.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            if n == len(lines):
                break
            raise HistoryError(f"{path}:{n}: {exc}") from None
    return ops


def complete(ops: Sequence[Op]) -> list[Completed]:
    """Pair every invocation with its completion (in invocation order).

    Raises HistoryError for a completion without an open invocation of its process, or a second
    invocation while one is open.
    """
    open_by_process: dict[int, int] = {}
    pairs: list[list[Op | None]] = []
    for op in ops:
        if op.type == "invoke":
            if op.process in open_by_process:
                raise HistoryError(f"op {op.index}: process {op.process} invokes while op "
                                   f"{pairs[open_by_process[op.process]][0].index} is open")  # type: ignore[union-attr]
            open_by_process[op.process] = len(pairs)
            pairs.append([op, None])
        else:
            slot = open_by_process.pop(op.process, None)
            if slot is None:
                raise HistoryError(f"op {op.index}: process {op.process} completes nothing")
            pairs[slot][1] = op
    return [Completed(inv, comp) for inv, comp in pairs]  # type: ignore[arg-type]


def reindex(ops: Iterable[Op]) -> list[Op]:
    """The same entries with dense indices 0..n-1 (after a test edits a history)."""
    return [dataclasses.replace(op, index=i) for i, op in enumerate(ops)]


def by_type(done: Iterable[Completed], *types: str) -> Iterator[Completed]:
    return (c for c in done if c.type in types)
