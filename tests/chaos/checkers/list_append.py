"""List-append checker after Elle (Kingsbury & Alvaro, "Elle: inferring isolation anomalies
from experimental observations", VLDB 2020). Our code, Elle's ideas.

Theory of operation
-------------------
The workload runs transactions of micro-operations on keys whose values are lists:
``["append", k, v]`` adds the unique element ``v`` at the end of ``k``'s list (in SQL: an
``UPDATE … SET v = CONCAT(v, ',', x)`` or an insert of the first element), ``["r", k, list]``
reads the whole list. Because every element is unique and a list only grows, a read *names the
version it saw* and every version names all the versions before it (its prefixes). So:

1. *Version order.* All ok reads of ``k`` must be prefixes of one another; the longest one is
   the order of ``k``'s versions. A read that is not a prefix of the longest is
   ``incompatible-order`` (two members that applied appends in different orders).
2. *Who wrote what.* Each element has one writer transaction. An element nobody appended is
   ``garbage-read``; one appended by a ``fail``ed transaction is ``G1a`` (aborted read); a read
   ending in an element that is not its writer's last append to that key is ``G1b``
   (intermediate read). A read with an element twice is ``duplicate-elements``. A transaction
   whose own reads disagree with its own earlier reads and appends is ``internal``.
3. *Dependencies* between committed transactions (``ok``, and ``info`` ones whose appends were
   read, which therefore committed):
   - ``ww``: T1 appended the element right before T2's in ``k``'s order;
   - ``wr``: T2 read a list whose last element (other than its own) T1 appended;
   - ``rw``: T1 read a version of ``k`` and T2 appended the element right after it
     (T2 overwrote what T1 read: an anti-dependency).
4. *Cycles.* Tarjan's algorithm finds the strongly connected components; in each, a breadth-
   first search finds a witness cycle, classified as Adya does: ``G0`` (ww edges only), ``G1c``
   (ww and wr, at least one wr), ``G-single`` (exactly one rw edge), ``G2-item`` (two or more rw
   edges). ``lost-update``: two committed transactions read the same version of ``k`` and both
   appended to ``k``.

What grproxy forbids, and why
-----------------------------
grproxy promises what MySQL Group Replication promises: each transaction executes on one
member's InnoDB (REPEATABLE READ), and at commit it is certified against every transaction
ordered before it that it did not see (the snapshot is the member's applied position):
*first committer wins* on intersecting write sets, as GR's manual describes for multi-primary
mode. Every member applies the same certified transactions in the same total order.

- ``G0`` (dirty write), ``G1a`` (aborted read), ``G1b`` (intermediate read), ``G1c``
  (circular information flow): forbidden. Only certified, committed transactions are applied,
  whole, in one total order on every member; InnoDB never shows uncommitted rows.
- ``incompatible-order``, ``duplicate-elements``, ``garbage-read``, ``internal``: forbidden;
  these are not isolation levels but plain corruption (members disagreeing on order, a
  transaction applied twice, data out of nowhere, a transaction not seeing its own writes).
- ``lost-update`` and ``G-single`` (read skew): forbidden when the backends give each
  transaction a snapshot and refuse to overwrite a row changed since (MariaDB
  ``innodb_snapshot_isolation=ON``, the chaos backends' setting): certification then extends
  first-committer-wins across members, which is snapshot isolation. Plain InnoDB REPEATABLE
  READ (snapshot off) lets an UPDATE overwrite a newer version than its snapshot on the same
  member — lost update and read skew — which GR inherits; pass ``snapshot_isolation=False``
  for such backends and they are reported as allowed.
- ``G2-item`` (write skew, e.g. two transactions on two members each reading both keys and
  appending to a different one): **allowed**. Certification compares write sets only, so it
  cannot see a read–write conflict; GR's manual says the same (SERIALIZABLE is not supported
  in multi-primary mode). G2 is reported so a run shows it happens, never counted as a failure.

Real-time order is *not* used as an edge: GR is not strictly serializable (an EVENTUAL read on a
lagging secondary is allowed to miss a committed write; stale_reads.py checks the levels that
forbid that).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from ..history import Completed, Op, complete
from .result import Anomaly, CheckResult, result

Key = Hashable
Element = Hashable
TxnId = int  # the invocation's history index

ALWAYS_FORBIDDEN = frozenset({
    "G0", "G1a", "G1b", "G1c", "incompatible-order", "duplicate-elements", "garbage-read", "internal",
})
SI_FORBIDDEN = frozenset({"lost-update", "G-single"})
ALL_KINDS = ALWAYS_FORBIDDEN | SI_FORBIDDEN | {"G2-item"}

WW, WR, RW = "ww", "wr", "rw"


def _freeze(x: Any) -> Any:
    return tuple(_freeze(v) for v in x) if isinstance(x, list) else x


def _mops(c: Completed) -> list[tuple[str, Key, Any]]:
    out = []
    for m in c.value or ():
        f, k, v = m
        out.append((f, _freeze(k), v if f == "r" else _freeze(v)))
    return out


def check_list_append(ops: Sequence[Op], *, snapshot_isolation: bool = True,
                      witnesses_per_scc_max: int = 3) -> CheckResult:
    """Check a list-append history (operations with ``f="txn"``).

    Args:
        ops: the history.
        snapshot_isolation: whether the backends give snapshot isolation (see the module
            docstring); False moves ``lost-update`` and ``G-single`` to the allowed kinds.
        witnesses_per_scc_max: cycles reported per strongly connected component and kind.

    Returns a CheckResult with the kinds listed in the module docstring; anomalies name the
    transactions by the history index of their invocation.

    Raises ValueError when the workload broke its own contract (an element appended twice).
    """
    txns = [c for c in complete(ops) if c.f == "txn"]
    by_id: dict[TxnId, Completed] = {c.invoke.index: c for c in txns}
    found: list[Anomaly] = []

    # 1. Writers of every element, and each transaction's appends per key.
    writer: dict[tuple[Key, Element], TxnId] = {}
    appends: dict[TxnId, dict[Key, list[Element]]] = {}
    for c in txns:
        t = c.invoke.index
        for f, k, v in _mops(c):
            if f != "append":
                continue
            if (k, v) in writer:
                raise ValueError(f"element {v!r} appended to {k!r} twice (ops {writer[(k, v)]} and {t})")
            writer[(k, v)] = t
            appends.setdefault(t, {}).setdefault(k, []).append(v)

    # 2. Reads of ok transactions; per-read checks; version order candidates.
    ok = [c for c in txns if c.type == "ok"]
    reads_of_key: dict[Key, list[tuple[TxnId, tuple[Element, ...]]]] = {}
    # For dependency edges: (txn, key, external prefix it saw, whether it appended k afterwards)
    external_reads: list[tuple[TxnId, Key, tuple[Element, ...], bool]] = []
    for c in ok:
        t = c.invoke.index
        known: dict[Key, tuple[Element, ...]] = {}  # what this txn must see next, per key
        own: dict[Key, list[Element]] = {}  # own appends so far, per key
        mops = _mops(c)
        for pos, (f, k, v) in enumerate(mops):
            if f == "append":
                own.setdefault(k, []).append(v)
                if k in known:
                    known[k] = known[k] + (v,)
                continue
            if f != "r":
                raise ValueError(f"op {t}: unknown micro-op {f!r}")
            if v is None:
                raise ValueError(f"op {t}: ok transaction with an unanswered read of {k!r}")
            lst = tuple(_freeze(x) for x in v)
            if len(set(lst)) != len(lst):
                dups = sorted({repr(x) for x in lst if lst.count(x) > 1})
                found.append(Anomaly("duplicate-elements", (t,), f"read of {k!r} holds {', '.join(dups)} twice",
                                     {"key": k, "read": list(lst)}))
            # Internal consistency: a repeated read sees what the txn saw plus its own appends.
            mine = own.get(k, [])
            if k in known and lst != known[k]:
                found.append(Anomaly("internal", (t,), f"read of {k!r} is {list(lst)}, expected {list(known[k])}",
                                     {"key": k, "read": list(lst), "expected": list(known[k])}))
            elif k not in known and mine and tuple(lst[-len(mine):]) != tuple(mine):
                found.append(Anomaly("internal", (t,), f"read of {k!r} {list(lst)} does not end with own appends {mine}",
                                     {"key": k, "read": list(lst), "own": mine}))
            known[k] = lst
            reads_of_key.setdefault(k, []).append((t, lst))
            # The external part: strip own appends from the end.
            ext = lst
            if mine and tuple(ext[-len(mine):]) == tuple(mine):
                ext = ext[: len(ext) - len(mine)]
            appends_later = any(f2 == "append" and k2 == k for f2, k2, _ in mops[pos + 1:])
            external_reads.append((t, k, ext, appends_later and not mine))
            for x in lst:
                w = writer.get((k, x))
                if w is None:
                    found.append(Anomaly("garbage-read", (t,), f"read of {k!r} holds {x!r}, which nobody appended",
                                         {"key": k, "element": x, "read": list(lst)}))
                elif by_id[w].type == "fail":
                    found.append(Anomaly("G1a", (t, w), f"read of {k!r} holds {x!r}, appended by failed op {w}",
                                         {"key": k, "element": x, "read": list(lst)}))
            if ext:
                last = ext[-1]
                w = writer.get((k, last))
                if w is not None and w != t and appends[w][k][-1] != last:
                    found.append(Anomaly("G1b", (t, w), f"read of {k!r} ends in {last!r}, an intermediate append of op {w}",
                                         {"key": k, "element": last, "read": list(lst)}))

    # 3. Version orders.
    order: dict[Key, tuple[Element, ...]] = {}
    for k, rs in reads_of_key.items():
        longest = max((lst for _, lst in rs), key=len)
        order[k] = longest
        longest_by = next(t for t, lst in rs if lst == longest)
        reported: set[tuple[Element, ...]] = set()
        for t, lst in rs:
            if longest[: len(lst)] != lst and lst not in reported:
                reported.add(lst)
                found.append(Anomaly("incompatible-order", (t, longest_by),
                                     f"reads of {k!r} disagree: {list(lst)} is not a prefix of {list(longest)}",
                                     {"key": k, "read": list(lst), "longest": list(longest)}))

    # 4. Dependency graph over committed transactions.
    def committed(t: TxnId) -> bool:
        return by_id[t].type != "fail"

    edges: dict[TxnId, dict[TxnId, set[str]]] = {}

    def edge(a: TxnId, b: TxnId, kind: str) -> None:
        if a != b and committed(a) and committed(b):
            edges.setdefault(a, {}).setdefault(b, set()).add(kind)

    for k, lst in order.items():
        ws = [writer.get((k, x)) for x in lst]
        for a, b in zip(ws, ws[1:]):
            if a is not None and b is not None:
                edge(a, b, WW)
    version_readers: dict[tuple[Key, tuple[Element, ...]], set[TxnId]] = {}
    for t, k, ext, then_appends in external_reads:
        if ext:
            w = writer.get((k, ext[-1]))
            if w is not None:
                edge(w, t, WR)
        full = order.get(k, ())
        if full[: len(ext)] == ext and len(full) > len(ext):
            nxt = writer.get((k, full[len(ext)]))
            if nxt is not None:
                edge(t, nxt, RW)
        if then_appends:
            version_readers.setdefault((k, ext), set()).add(t)

    # Lost update: committed txns that read the same version of k and then appended to k.
    for (k, ext), ts in version_readers.items():
        writers_of_k = sorted(t for t in ts if by_id[t].type == "ok")
        if len(writers_of_k) > 1:
            found.append(Anomaly("lost-update", tuple(writers_of_k),
                                 f"ops {writers_of_k} all read {k!r} = {list(ext)} and appended to it",
                                 {"key": k, "version": list(ext)}))

    # 5. Cycles.
    found += _cycles(edges, witnesses_per_scc_max)

    allowed = {"G2-item"} | (set() if snapshot_isolation else set(SI_FORBIDDEN))
    n_edges = sum(len(v) for v in edges.values())
    return result("list-append", found, allowed=allowed,
                  stats={"txns": len(txns), "ok": len(ok), "keys": len(order), "edges": n_edges})


# ---------------------------------------------------------------------------- graph search

Graph = dict[TxnId, dict[TxnId, set[str]]]


def tarjan_scc(nodes: Iterable[TxnId], succ: Graph) -> list[list[TxnId]]:
    """Strongly connected components (iterative Tarjan: histories are long, recursion is not)."""
    index: dict[TxnId, int] = {}
    low: dict[TxnId, int] = {}
    on_stack: set[TxnId] = set()
    stack: list[TxnId] = []
    out: list[list[TxnId]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[TxnId, Iterable[TxnId]]] = [(root, iter(succ.get(root, {})))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(succ.get(w, {}))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
    return out


def _path(graph: Graph, start: TxnId, goal: TxnId, members: set[TxnId], kinds: set[str]) -> list[TxnId] | None:
    """Shortest path start → goal inside ``members`` over edges having one of ``kinds``."""
    prev: dict[TxnId, TxnId | None] = {start: None}
    q = deque([start])
    while q:
        v = q.popleft()
        if v == goal:
            path = [v]
            while prev[path[-1]] is not None:
                path.append(prev[path[-1]])  # type: ignore[arg-type]
            return path[::-1]
        for w, ks in graph.get(v, {}).items():
            if w in members and w not in prev and ks & kinds:
                prev[w] = v
                q.append(w)
    return None


def _witness(graph: Graph, cycle: list[TxnId], kinds_per_step: list[str]) -> dict[str, Any]:
    return {"cycle": [{"from": a, "to": b, "kind": k} for (a, b), k in
                      zip(zip(cycle, cycle[1:] + cycle[:1]), kinds_per_step)]}


def _label(graph: Graph, a: TxnId, b: TxnId, prefer: Sequence[str]) -> str:
    ks = graph[a][b]
    return next(k for k in prefer if k in ks)


def _cycles(graph: Graph, per_scc_max: int) -> list[Anomaly]:
    nodes = set(graph) | {b for v in graph.values() for b in v}
    found: list[Anomaly] = []
    for comp in tarjan_scc(sorted(nodes), graph):
        if len(comp) < 2:
            continue
        members = set(comp)
        inner = [(a, b, ks) for a in comp for b, ks in graph.get(a, {}).items() if b in members]
        seen_cycles: set[frozenset[TxnId]] = set()

        def report(kind: str, path: list[TxnId], closing: str, prefer: Sequence[str]) -> bool:
            # path is b … a for a closing edge a → b; the cycle is a → b … a.
            cyc = [path[-1]] + path[:-1]
            key = frozenset(cyc)
            if key in seen_cycles:
                return False
            seen_cycles.add(key)
            labels = [closing] + [_label(graph, x, y, prefer) for x, y in zip(path, path[1:])]
            found.append(Anomaly(kind, tuple(cyc), f"{kind} cycle over ops {cyc}", _witness(graph, cyc, labels)))
            return True

        # G0: cycle of ww edges only.
        n = 0
        for a, b, ks in inner:
            if WW in ks and n < per_scc_max:
                p = _path(graph, b, a, members, {WW})
                if p is not None and report("G0", p, WW, (WW,)):
                    n += 1
        # G1c: ww/wr cycle with a wr edge.
        n = 0
        for a, b, ks in inner:
            if WR in ks and n < per_scc_max:
                p = _path(graph, b, a, members, {WW, WR})
                if p is not None and report("G1c", p, WR, (WW, WR)):
                    n += 1
        # G-single: exactly one rw edge; G2-item: any other cycle through an rw edge.
        n_single = n_g2 = 0
        for a, b, ks in inner:
            if RW not in ks:
                continue
            if n_single >= per_scc_max and n_g2 >= per_scc_max:
                break  # enough witnesses of both kinds in this component
            p = _path(graph, b, a, members, {WW, WR})
            if p is not None:
                if n_single < per_scc_max and report("G-single", p, RW, (WW, WR)):
                    n_single += 1
                continue
            if n_g2 >= per_scc_max:
                continue
            p = _path(graph, b, a, members, {WW, WR, RW})
            if p is not None and report("G2-item", p, RW, (WW, WR, RW)):
                n_g2 += 1
    return found
