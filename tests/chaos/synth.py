"""Synthetic histories for the checkers' own tests: serial executions of a model (which must
come out clean) and the same with one anomaly injected (which must be found).

A serial history runs one transaction at a time against an in-memory model, so every
isolation level holds trivially; processes take turns. ``fail`` transactions change nothing,
``info`` ones take effect or not at random. Everything is driven by a ``random.Random``, so a
hypothesis-drawn seed reproduces a history.
"""

from __future__ import annotations

import random
from typing import Any

from .history import Op, reindex


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        self.now += 10
        return self.now


class Builder:
    """Appends invoke/completion pairs with increasing times."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.clock = _Clock()
        self.next_process = 0

    def pair(self, f: str, invoke_value: Any, type_: str, value: Any = None, *, process: int | None = None,
             error: str | None = None) -> int:
        """Add one operation; returns its invocation's index."""
        if process is None:
            process = self.next_process
            self.next_process = (self.next_process + 1) % 5
        i = len(self.ops)
        self.ops.append(Op(i, process, "invoke", f, invoke_value, self.clock()))
        done = value if value is not None else invoke_value
        self.ops.append(Op(i + 1, process, type_, f, done, self.clock(),  # type: ignore[arg-type]
                           error if error is not None or type_ == "ok" else type_))
        return i

    def history(self) -> list[Op]:
        return reindex(self.ops)


# ------------------------------------------------------------------------- list-append

class ListAppendModel:
    """Serial list-append: keys 0..keys-1, values unique per key (a counter)."""

    def __init__(self, rng: random.Random, keys: int = 4) -> None:
        self.rng = rng
        self.keys = keys
        self.state: dict[int, list[int]] = {k: [] for k in range(keys)}
        self.next_value = 1
        self.b = Builder()

    def fresh(self) -> int:
        v = self.next_value
        self.next_value += 1
        return v

    def random_txn(self) -> list[list[Any]]:
        mops: list[list[Any]] = []
        for _ in range(self.rng.randint(1, 4)):
            k = self.rng.randrange(self.keys)
            mops.append(["append", k, self.fresh()] if self.rng.random() < 0.5 else ["r", k, None])
        return mops

    def run(self, mops: list[list[Any]], type_: str = "ok") -> int:
        """Execute serially; ``type_`` ok: applied with reads answered; fail: not applied;
        info: applied or not at random, reads unanswered."""
        apply = type_ == "ok" or (type_ == "info" and self.rng.random() < 0.5)
        scratch = {k: list(v) for k, v in self.state.items()}
        done = []
        for f, k, v in mops:
            if f == "append":
                scratch[k].append(v)
                done.append([f, k, v])
            else:
                done.append([f, k, list(scratch[k])])
        if apply:
            self.state = scratch
        return self.b.pair("txn", mops, type_, done if type_ == "ok" else None)

    def step(self) -> None:
        r = self.rng.random()
        self.run(self.random_txn(), "ok" if r < 0.8 else "fail" if r < 0.9 else "info")

    def final_reads(self) -> None:
        for _ in range(2):
            self.run([["r", k, None] for k in range(self.keys)])

    def history(self) -> list[Op]:
        return self.b.history()


def serial_list_append(seed: int, txns: int, keys: int = 4) -> list[Op]:
    m = ListAppendModel(random.Random(seed), keys)
    for _ in range(txns):
        m.step()
    m.final_reads()
    return m.history()


def inject(m: ListAppendModel, kind: str) -> None:
    """Add transactions to ``m`` that show ``kind`` (the model state is advanced so later reads
    agree with the injected anomaly)."""
    b, st, fresh = m.b, m.state, m.fresh
    k1, k2 = 0, 1
    if kind == "G1a":
        x = fresh()
        b.pair("txn", [["append", k1, x]], "fail", error="aborted")
        st[k1].append(x)
    elif kind == "G1b":
        x1, x2 = fresh(), fresh()
        b.pair("txn", [["append", k1, x1], ["append", k1, x2]], "ok")
        b.pair("txn", [["r", k1, None]], "ok", [["r", k1, [*st[k1], x1]]])
        st[k1] += [x1, x2]
    elif kind == "lost-update":
        s = list(st[k1])
        a, c = fresh(), fresh()
        b.pair("txn", [["r", k1, None], ["append", k1, a]], "ok", [["r", k1, s], ["append", k1, a]])
        b.pair("txn", [["r", k1, None], ["append", k1, c]], "ok", [["r", k1, s], ["append", k1, c]])
        st[k1] += [a, c]
    elif kind == "G0":
        x1, x2, y1, y2 = fresh(), fresh(), fresh(), fresh()
        b.pair("txn", [["append", k1, x1], ["append", k2, y1]], "ok")
        b.pair("txn", [["append", k1, x2], ["append", k2, y2]], "ok")
        st[k1] += [x1, x2]
        st[k2] += [y2, y1]
    elif kind == "G1c":
        a, c = fresh(), fresh()
        b.pair("txn", [["append", k1, a], ["r", k2, None]], "ok", [["append", k1, a], ["r", k2, [*st[k2], c]]])
        b.pair("txn", [["append", k2, c], ["r", k1, None]], "ok", [["append", k2, c], ["r", k1, [*st[k1], a]]])
        st[k1].append(a)
        st[k2].append(c)
    elif kind == "G-single":
        a, c = fresh(), fresh()
        b.pair("txn", [["append", k1, a], ["append", k2, c]], "ok")
        # Reads k2 after the writer and k1 before it: read skew.
        b.pair("txn", [["r", k1, None], ["r", k2, None]], "ok",
               [["r", k1, list(st[k1])], ["r", k2, [*st[k2], c]]])
        st[k1].append(a)
        st[k2].append(c)
    elif kind == "G2-item":
        s1, s2 = list(st[k1]), list(st[k2])
        a, c = fresh(), fresh()
        b.pair("txn", [["r", k1, None], ["r", k2, None], ["append", k1, a]], "ok",
               [["r", k1, s1], ["r", k2, s2], ["append", k1, a]])
        b.pair("txn", [["r", k1, None], ["r", k2, None], ["append", k2, c]], "ok",
               [["r", k1, s1], ["r", k2, s2], ["append", k2, c]])
        st[k1].append(a)
        st[k2].append(c)
    elif kind == "duplicate-elements":
        x = fresh()
        st[k1].append(x)
        b.pair("txn", [["append", k1, x]], "ok")
        b.pair("txn", [["r", k1, None]], "ok", [["r", k1, [*st[k1], x]]])
    elif kind == "incompatible-order":
        x1, x2 = fresh(), fresh()
        b.pair("txn", [["append", k1, x1]], "ok")
        b.pair("txn", [["append", k1, x2]], "ok")
        b.pair("txn", [["r", k1, None]], "ok", [["r", k1, [*st[k1], x2, x1]]])
        st[k1] += [x1, x2]
    elif kind == "internal":
        x = fresh()
        b.pair("txn", [["append", k1, x], ["r", k1, None]], "ok", [["append", k1, x], ["r", k1, list(st[k1])]])
        st[k1].append(x)
    elif kind == "garbage-read":
        b.pair("txn", [["r", k1, None]], "ok", [["r", k1, [*st[k1], 10**9]]])
    else:
        raise ValueError(kind)


INJECTABLE = ("G1a", "G1b", "lost-update", "G0", "G1c", "G-single", "G2-item", "duplicate-elements",
              "incompatible-order", "internal", "garbage-read")


def list_append_with(seed: int, txns: int, kind: str, keys: int = 4) -> list[Op]:
    """A serial history with ``kind`` injected at a random point."""
    rng = random.Random(seed)
    m = ListAppendModel(rng, keys)
    at = rng.randint(0, txns)
    for i in range(txns + 1):
        if i == at:
            inject(m, kind)
        if i < txns:
            m.step()
    m.final_reads()
    return m.history()


# ------------------------------------------------------------------------- bank

def serial_bank(seed: int, steps: int, accounts: int = 5, balance: int = 10) -> list[Op]:
    rng = random.Random(seed)
    state = {str(a): balance for a in range(accounts)}
    b = Builder()
    for _ in range(steps):
        if rng.random() < 0.5:
            src, dst = rng.sample(sorted(state), 2)
            amount = rng.randint(1, 5)
            value = {"from": src, "to": dst, "amount": amount}
            if state[src] >= amount and rng.random() < 0.9:
                state[src] -= amount
                state[dst] += amount
                b.pair("transfer", value, "ok")
            else:
                b.pair("transfer", value, "fail", error="insufficient funds")
        else:
            b.pair("read", None, "ok", dict(state))
    b.pair("read", None, "ok", dict(state))
    return b.history()


# ------------------------------------------------------------------------- inserts (sets)

def serial_inserts(seed: int, steps: int) -> tuple[list[Op], set[int]]:
    """Inserts of unique elements and reads of all of them; returns the history and the final
    set. Reads happen at BEFORE (the value says so)."""
    rng = random.Random(seed)
    state: set[int] = set()
    b = Builder()
    n = 0
    for _ in range(steps):
        r = rng.random()
        if r < 0.6:
            n += 1
            t = "ok" if r < 0.45 else "fail" if r < 0.55 else "info"
            if t == "ok" or (t == "info" and rng.random() < 0.5):
                state.add(n)
            b.pair("insert", n, t)
        else:
            b.pair("read", {"level": "BEFORE"}, "ok", {"level": "BEFORE", "seen": sorted(state)})
    return b.history(), state
