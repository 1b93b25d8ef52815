"""Applying other members' transactions: the cost of the applier's BINLOG statements.

    python -m bench.apply_paths [--transactions 2000] [--chunk 100] [--rows 20000]

Three throw-away MariaDB servers with grproxy's backend settings: A plays the origin member's
backend, B and C two secondaries' (one per shape below), all loaded with the same sbtest table.
On A, as a member does, every transaction runs as XA (sysbench oltp_write_only's shape: UPDATE
of the indexed column, UPDATE of c, DELETE, INSERT) and is read back prepared from A's binlog
(Assembler(keep_events=True), as the member's reader), then `writeset.derive` gives its write
set and `rowevents.ship` the group's form of its events. Each transaction is then applied with
`RowEventApplier.apply` in one backend transaction with its position record, in chunks of
`--chunk` alternating between the two shapes so both see the same machine:

* 4 trips: BEGIN; BINLOG …; INSERT position; COMMIT, one round trip each;
* 1 trip:  all four in one multi-statement packet (the applier's shape when the transaction
           before it has committed).

Printed per transaction, side by side: µs of member CPU on the origin (shipping) and on the
receiver (decoding and applying: this process's CPU while it applies), µs of the receiving
MariaDB's CPU (/proc), wall µs, and the bytes the group carries. At the end CHECKSUM TABLE of A,
B and C must agree (printed). One process, sequential; the load average is printed with the
figures (the machine is shared). Asserts nothing; exits 0.

The applier generated SQL from row images before (upsert / delete by primary key). This module
at commit 968a515 measured both in one run (1000 transactions, load 1.1): generated SQL 17 µs to
encode, 397 µs member and 360 µs MariaDB CPU to apply, 679 bytes; BINLOG 13 µs, 200 µs and 240 µs
(4 trips), 144 µs and 190 µs (1 trip), 1853 bytes (the events carry before-images, table maps
and the origin's format description). BINLOG was kept; the generated SQL went.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import cpu_seconds
from grproxy.mysqld import ServerHandle, start_server
from replication.binlog.events import Heartbeat
from replication.binlog.stream import BinlogStream
from replication.binlog.transactions import Assembler, BinlogTransaction
from replication.positions import PositionStore
from replication.protocol.backend import BackendAddress, BackendConnection
from replication.protocol.constants import PROXY_CAPABILITIES, Cap
from replication.rowevents import RowEventApplier, ship
from replication.schema import SchemaCatalog
from replication.writeset import OWN_SCHEMA, derive

TABLE = ("CREATE TABLE sbtest (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL DEFAULT 0, "
         "c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k)) ENGINE=InnoDB")


def _text(rng: random.Random, groups: int) -> str:
    return "-".join("".join(rng.choice("0123456789") for _ in range(11)) for _ in range(groups))


async def _conn(h: ServerHandle, database: str | None = "sbtest") -> BackendConnection:
    return await BackendConnection.open(BackendAddress(h.host, h.port, "root", ""),
                                        capabilities=int(PROXY_CAPABILITIES & ~Cap.NO_SCHEMA), collation=45,
                                        database=database)


async def _load(h: ServerHandle, rows: int) -> None:
    conn = await _conn(h, None)
    await conn.execute("CREATE DATABASE sbtest")
    await conn.execute("USE sbtest")
    await conn.execute(TABLE)
    for sql in PositionStore.SETUP_SQL:
        await conn.execute(sql)
    rng = random.Random(7)
    for start in range(1, rows + 1, 500):
        values = ", ".join(f"({i}, {rng.randrange(rows)}, '{_text(rng, 10)}', '{_text(rng, 5)}')"
                           for i in range(start, min(start + 500, rows + 1)))
        await conn.execute(f"INSERT INTO sbtest VALUES {values}")
    conn.close()


async def _origin(a: ServerHandle, n: int, rows: int) -> list[BinlogTransaction]:
    """Run `n` sysbench-shaped XA transactions on A; return them as read from its binlog."""
    stream = await BinlogStream.open(BackendAddress(a.host, a.port, "root", ""), replica_server_id=4_000_001,
                                     heartbeat_s=0.5)
    assembler = Assembler(decode_outside_xa=False, keep_events=True)
    conn = await _conn(a)
    rng = random.Random(11)
    out: list[BinlogTransaction] = []

    async def read() -> None:
        while len(out) < n:
            event = await stream.next_event()
            if isinstance(event, Heartbeat):
                continue
            txn = assembler.feed(event, stream.last_raw)
            if txn is not None and txn.end == "xa_prepare":
                out.append(txn)

    reader = asyncio.ensure_future(read())
    for i in range(n):
        x = rng.randrange(1, rows + 1)
        xid = f"'bench{i}'"
        await conn.execute_all(
            f"XA START {xid}; UPDATE sbtest SET k = k + 1 WHERE id = {rng.randrange(1, rows + 1)};"
            f"UPDATE sbtest SET c = '{_text(rng, 10)}' WHERE id = {rng.randrange(1, rows + 1)};"
            f"DELETE FROM sbtest WHERE id = {x};"
            f"INSERT INTO sbtest VALUES ({x}, {rng.randrange(rows)}, '{_text(rng, 10)}', '{_text(rng, 5)}');"
            f"XA END {xid}; XA PREPARE {xid}; XA COMMIT {xid}")
    async with asyncio.timeout(60):
        await reader
    conn.close()
    await stream.close()
    return out


@dataclass
class Path_:
    name: str
    encode_cpu_s: float = 0.0
    apply_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    wall_s: float = 0.0
    bytes: int = 0
    count: int = 0
    payloads: list[bytes] = field(default_factory=list)


async def _apply_chunk(path: Path_, conn: BackendConnection, server_pid: int, payloads: list[bytes],
                       seqs: list[int], how: str, events: RowEventApplier) -> None:
    store = PositionStore()
    cpu0, srv0, wall0 = time.process_time(), cpu_seconds([server_pid]), time.perf_counter()
    for data, seq in zip(payloads, seqs):
        if how == "binlog4":
            await conn.execute("BEGIN")
            await events.apply(conn, data)
            await conn.execute(store.record_sql(seq))
            await conn.execute("COMMIT")
        else:
            await events.apply(conn, data, head=("BEGIN",), tail=(store.record_sql(seq), "COMMIT"))
    path.apply_cpu_s += time.process_time() - cpu0
    path.server_cpu_s += cpu_seconds([server_pid]) - srv0
    path.wall_s += time.perf_counter() - wall0
    path.count += len(payloads)


async def _checksum(h: ServerHandle) -> int:
    conn = await _conn(h)
    r = await conn.execute("CHECKSUM TABLE sbtest")
    conn.close()
    return int(r.rows[0][1] or 0)


async def run(base: Path, n: int, chunk: int, rows: int) -> None:
    servers = [start_server(base / name, die_with_parent=True) for name in ("a", "b", "c")]
    a, b, c = servers
    try:
        for h in servers:
            await _load(h, rows)
        txns = await _origin(a, n, rows)
        meta = await _conn(a)
        catalog = SchemaCatalog()
        ev4, ev1 = Path_("BINLOG, 4 trips"), Path_("BINLOG, 1 trip")
        for t in txns:
            await derive(t, meta, catalog, 0)
            t0 = time.process_time()
            ev4.payloads.append(ship(t, OWN_SCHEMA))
            ev4.encode_cpu_s += time.process_time() - t0
        ev1.payloads, ev1.encode_cpu_s = ev4.payloads, ev4.encode_cpu_s
        for p in (ev4, ev1):
            p.bytes = sum(map(len, p.payloads))
        meta.close()
        targets = [(ev4, b, "binlog4"), (ev1, c, "binlog1")]
        conns = {id(p): await _conn(h) for p, h, _ in targets}
        events = RowEventApplier()
        for start in range(0, n, chunk):
            seqs = list(range(start + 1, min(start + chunk, n) + 1))
            order = targets if (start // chunk) % 2 == 0 else targets[::-1]
            for p, h, how in order:
                await _apply_chunk(p, conns[id(p)], h.pid, p.payloads[start:start + chunk], seqs, how, events)
        for conn in conns.values():
            conn.close()
        sums = [await _checksum(h) for h in servers]
        load = os.getloadavg()
        print(f"apply paths: {n} sysbench write_only-shaped transactions (4 rows), chunks of {chunk} alternating; "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores, shared)")
        print(f"{'path':<24}{'origin µs':>10}{'member µs':>10}{'MariaDB µs':>11}{'wall µs':>9}{'bytes':>7}")
        for p in (ev4, ev1):
            k = 1e6 / max(p.count, 1)
            print(f"{p.name:<24}{p.encode_cpu_s * k:>10.1f}{p.apply_cpu_s * k:>10.1f}{p.server_cpu_s * k:>11.1f}"
                  f"{p.wall_s * k:>9.1f}{p.bytes / max(p.count, 1):>7.0f}")
        print("origin µs: member CPU to ship; member µs: member CPU to decode + apply (and wait for the "
              "server's answers); MariaDB µs: the receiving server's CPU")
        verdict = "equal" if len(set(sums)) == 1 else "DIFFER"
        print(f"CHECKSUM TABLE sbtest on origin, BINLOG 4-trip, BINLOG 1-trip: {sums} — {verdict}")
    finally:
        for h in servers:
            h.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.apply_paths", description=__doc__.split("\n")[0])
    ap.add_argument("--transactions", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--rows", type=int, default=20_000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grproxy-bench-apply-") as tmp:
        asyncio.run(run(Path(tmp), args.transactions, args.chunk, args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
