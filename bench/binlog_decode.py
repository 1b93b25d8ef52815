"""Decode cost of binlog events: grproxy's decoder vs the pure-Python mysql-replication package.

    python -m bench.binlog_decode [--transactions 2000] [--bulk-rows 10000] [--repeat 5]

A throw-away MariaDB (grproxy's backend settings: ROW, FULL images, binlog_row_metadata=FULL,
CRC32) runs, as XA transactions like a member's, sysbench oltp_write_only-shaped transactions on
an sbtest table (UPDATE of the indexed column, UPDATE of c, DELETE, INSERT: 4 rows, 8 images)
and one bulk INSERT of `--bulk-rows` rows. The closed binlog file is read from disk and split
into events, so both decoders get the same bytes with no I/O:

* ours:  events.decode_event (CRC32 verified) + transactions.Assembler (rows decoded to values);
         a second line adds rows.to_row_changes (row images ready for the group message);
* mysql-replication: BinLogPacketWrapper over the same event packets (checksums verified,
         table-map optional metadata used, no server queries), `.rows` read for every rows event.

Printed: µs per 4-row transaction (all its events), µs per row of the bulk INSERT, and the
ratio theirs / ours. Best of `--repeat` runs; one process, one core.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pymysql

from grproxy.mysqld import start_server
from replication.binlog.events import FormatDescription, TableMapCache, decode_event
from replication.binlog.rows import to_row_changes
from replication.binlog.transactions import Assembler, BinlogTransaction
from replication.schema import TableMeta, make_column

TABLE = "CREATE TABLE sbtest (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL DEFAULT 0, " \
        "c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k)) ENGINE=InnoDB"
C = "83868641912-28773972837-60736120486-75162659906-27563526494-20381887404-41576422241-93426793964-56405065102-33518432330"
PAD = "67847967377-48000963322-62604785301-91415491898-96926520291"


def _split(data: bytes) -> list[bytes]:
    out, p = [], 4
    while p < len(data):
        size = struct.unpack_from("<I", data, p + 9)[0]
        out.append(data[p : p + size])
        p += size
    return out


def generate(base: Path, transactions: int, bulk_rows: int) -> tuple[list[bytes], list[bytes]]:
    """(events of the 4-row XA transactions, events of the bulk INSERT transaction)."""
    handle = start_server(base / "data", die_with_parent=True)
    try:
        conn = pymysql.connect(host=handle.host, port=handle.port, user="root", password="", autocommit=True)
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE sbtest")
            cur.execute("USE sbtest")
            cur.execute(TABLE)
            rows = max(transactions * 2, 1000)
            for start in range(0, rows, 1000):
                values = ", ".join(f"({i}, {i % 997}, '{C}', '{PAD}')" for i in range(start + 1, start + 1001))
                cur.execute(f"INSERT INTO sbtest VALUES {values}")
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("SHOW MASTER STATUS")
            small_file = cur.fetchone()[0]
            for n in range(transactions):
                x = n * 2 + 1
                cur.execute(f"XA START 'b{n}'")
                cur.execute(f"UPDATE sbtest SET k = k + 1 WHERE id = {x}")
                cur.execute(f"UPDATE sbtest SET c = '{C[::-1]}' WHERE id = {x + 1}")
                cur.execute(f"DELETE FROM sbtest WHERE id = {x}")
                cur.execute(f"INSERT INTO sbtest VALUES ({x}, {n}, '{C}', '{PAD}')")
                cur.execute(f"XA END 'b{n}'")
                cur.execute(f"XA PREPARE 'b{n}'")
                cur.execute(f"XA COMMIT 'b{n}'")
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("SHOW MASTER STATUS")
            bulk_file = cur.fetchone()[0]
            cur.execute("XA START 'bulk'")
            values = ", ".join(f"({i}, {i % 997}, '{C}', '{PAD}')" for i in range(10_000_000, 10_000_000 + bulk_rows))
            cur.execute(f"INSERT INTO sbtest VALUES {values}")
            cur.execute("XA END 'bulk'")
            cur.execute("XA PREPARE 'bulk'")
            cur.execute("XA COMMIT 'bulk'")
            cur.execute("FLUSH BINARY LOGS")
        conn.close()
        small = _split((handle.datadir / small_file).read_bytes())
        bulk = _split((handle.datadir / bulk_file).read_bytes())
    finally:
        handle.stop()
    return small, bulk


def _meta() -> TableMeta:
    cols = [make_column("id", 1, "int(11)"), make_column("k", 2, "int(11)"),
            make_column("c", 3, "char(120)"), make_column("pad", 4, "char(60)")]
    return TableMeta.build("sbtest", "sbtest", cols, primary_key=["id"])


def ours(events: list[bytes], *, images: bool) -> Callable[[], int]:
    meta = _meta()

    def run() -> int:
        assembler = Assembler()
        table_maps = TableMapCache()  # as the stream keeps one
        fde = None
        prepared = 0
        for raw in events:
            event = decode_event(raw, fde, checksum=True, table_maps=table_maps)
            if isinstance(event, FormatDescription):
                fde = event
                continue
            txn = assembler.feed(event)
            if txn is not None and txn.end == "xa_prepare":
                prepared += 1
                if images:
                    _images(meta, txn)
        return prepared

    return run


def _images(meta: TableMeta, txn: BinlogTransaction) -> None:
    for table_rows in txn.tables:
        to_row_changes(meta, table_rows.table_map, table_rows.changes)


def theirs(events: list[bytes]) -> Callable[[], int] | None:
    try:
        from pymysql.protocol import MysqlPacket
        from pymysqlreplication import event as ev
        from pymysqlreplication import row_event as rev
        from pymysqlreplication.packet import BinLogPacketWrapper
    except ImportError:
        return None

    class Ctl:
        charset = "utf8mb4"

        def _get_dbms(self) -> str:
            return "mariadb"

    allowed = frozenset({
        ev.FormatDescriptionEvent, ev.RotateEvent, ev.XidEvent, ev.QueryEvent, ev.MariadbGtidEvent,
        ev.MariadbAnnotateRowsEvent, ev.XAPrepareEvent, rev.TableMapEvent, rev.WriteRowsEvent, rev.UpdateRowsEvent,
        rev.DeleteRowsEvent,
    })
    packets = [b"\x00" + raw for raw in events]

    def run() -> int:
        table_map: dict = {}
        ctl = Ctl()
        prepared = 0
        for data in packets:
            wrapper = BinLogPacketWrapper(
                MysqlPacket(data, "utf8"), table_map, ctl, (10, 11, 0), True, allowed, None, None, None, None,
                False, False, True, True, False,
            )
            e = wrapper.event
            if isinstance(e, rev.TableMapEvent):
                table_map[e.table_id] = e.get_table()
            elif isinstance(e, rev.RowsEvent):
                e.rows  # noqa: B018 - rows are decoded on first access
            elif isinstance(e, ev.XAPrepareEvent):
                prepared += 1
        return prepared

    return run


def best_s(fn: Callable[[], int], repeat: int, expect: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = fn()
        best = min(best, time.perf_counter() - t0)
        if got != expect:
            raise SystemExit(f"decoder saw {got} prepared XA transactions, expected {expect}")
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.binlog_decode", description=__doc__.split("\n")[0])
    ap.add_argument("--transactions", type=int, default=2000)
    ap.add_argument("--bulk-rows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grproxy-bench-binlog-") as tmp:
        small, bulk = generate(Path(tmp), args.transactions, args.bulk_rows)
    n, rows = args.transactions, args.bulk_rows
    print(f"binlog decode: {n} XA transactions of 4 rows ({len(small)} events, {sum(map(len, small))} bytes); "
          f"bulk INSERT of {rows} rows ({sum(map(len, bulk))} bytes); best of {args.repeat}; CRC32 verified")
    ours_txn = best_s(ours(small, images=False), args.repeat, n) / n * 1e6
    ours_row = best_s(ours(bulk, images=False), args.repeat, 1) / rows * 1e6
    img_txn = best_s(ours(small, images=True), args.repeat, n) / n * 1e6
    img_row = best_s(ours(bulk, images=True), args.repeat, 1) / rows * 1e6
    print(f"  grproxy decoder                  {ours_txn:8.1f} µs / 4-row transaction  {ours_row:6.2f} µs / row")
    print(f"  grproxy decoder + to_row_changes {img_txn:8.1f} µs / 4-row transaction  {img_row:6.2f} µs / row")
    small_theirs, bulk_theirs = theirs(small), theirs(bulk)
    if small_theirs is None or bulk_theirs is None:
        print("  mysql-replication: not installed (pip install mysql-replication) — no ratio")
        return 0
    their_txn = best_s(small_theirs, args.repeat, n) / n * 1e6
    their_row = best_s(bulk_theirs, args.repeat, 1) / rows * 1e6
    print(f"  mysql-replication                {their_txn:8.1f} µs / 4-row transaction  {their_row:6.2f} µs / row")
    print(f"  ratio mysql-replication / grproxy decoder: {their_txn / ours_txn:.1f}x per transaction, "
          f"{their_row / ours_row:.1f}x per row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
