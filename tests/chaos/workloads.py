"""Workloads through the router with PyMySQL, recording a history: bank and list-append.

Theory of operation
-------------------
A :class:`Client` is one thread with one connection to the router. It performs one operation at
a time and records it (history.py): ``invoke``, then ``ok`` / ``fail`` / ``info``:

- any error before COMMIT is sent, or a server error at COMMIT that means "rolled back"
  (certification 3101, 3100, 1290 read-only, 1020 snapshot conflict, deadlock 1213, lock wait
  1205, 3781-3783 consistency holds), is ``fail``: the transaction did not commit;
- a lost connection, a timeout or any other error at COMMIT is ``info``: it may have committed.
  The client then continues as a new process (history.py), on a new connection.

After any error the connection is dropped and a new one made for the next operation, so no
state (an open transaction) leaks from one operation to the next.

Every client's choices come from its own ``random.Random(seed)``; the timing (what the system
does concurrently) is not reproducible, the sequence of requests is.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Callable
from typing import Any

import pymysql

from .history import Op, Recorder

# Server errors at COMMIT that mean the transaction was rolled back.
ROLLED_BACK_AT_COMMIT = frozenset({3101, 3100, 1290, 1020, 1213, 1205, 3781, 3782, 3783, 3098, 1180, 1399})
# PyMySQL's client-side codes: the answer never arrived.
CLIENT_SIDE = frozenset({2003, 2006, 2013, 2014, 2055, 0})
OP_TIMEOUT_S = 20
# What `SELECT @@SESSION.group_replication_consistency` answers for each level a client sets.
LEVELS = ("EVENTUAL", "BEFORE_ON_PRIMARY_FAILOVER", "BEFORE", "AFTER", "BEFORE_AND_AFTER")


class Abort(Exception):
    """The workload itself decided not to commit (e.g. insufficient funds): a ``fail``."""


class Client:
    """One workload client. ``level`` is set on every connection it makes (``SET SESSION
    group_replication_consistency``, through the router) and read back: a connection whose
    level did not take is recorded in ``level_errors`` (the run reports it: the stale-read
    check would otherwise judge reads by a level they did not run at).

    ``read_timeout_s`` is how long it waits for any answer; the nemesis may shorten it for a
    while ("clients that give up mid-commit"): a COMMIT whose answer does not arrive in time is
    ``info``. The next operation uses a new connection with the current timeout.
    """

    def __init__(self, index: int, clients: int, port: int, recorder: Recorder, seed: int, *,
                 level: str = "EVENTUAL") -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown consistency level {level!r}")
        self.index = index
        self.clients = clients
        self.port = port
        self.rec = recorder
        self.rng = random.Random(seed)
        self.level = level
        self.process = index
        self.conn: pymysql.connections.Connection | None = None
        self.counts = {"ok": 0, "fail": 0, "info": 0}
        self.read_timeout_s: float = OP_TIMEOUT_S
        self._conn_timeout_s: float = OP_TIMEOUT_S
        self.level_errors: list[str] = []

    def _connect(self) -> pymysql.connections.Connection:
        if self.conn is not None and self._conn_timeout_s != self.read_timeout_s:
            self._drop()
        if self.conn is None:
            timeout_s = self.read_timeout_s
            # Setting up the session always gets the full timeout: a client gives up on
            # operations, not on its login.
            conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="",
                                   connect_timeout=5, read_timeout=OP_TIMEOUT_S, write_timeout=OP_TIMEOUT_S,
                                   autocommit=True)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"SET @@SESSION.group_replication_consistency = '{self.level}'")
                    cur.execute("SELECT @@SESSION.group_replication_consistency")
                    (got,) = cur.fetchone()
                if (got.decode() if isinstance(got, bytes) else str(got)).upper() != self.level:
                    self.level_errors.append(f"set {self.level}, the session reports {got!r}")
            except BaseException:
                conn.close()
                raise
            conn._read_timeout = timeout_s  # noqa: SLF001 - PyMySQL applies it at each read
            self._conn_timeout_s = timeout_s
            self.conn = conn
        return self.conn

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self.conn = None

    def perform(self, f: str, value: Any, body: Callable[[Any, list[bool]], Any]) -> Op:
        """Run ``body(cursor, committing)`` as one operation. ``body`` sets ``committing[0]``
        right before it sends COMMIT and returns the completion value."""
        op = self.rec.invoke(self.process, f, value)
        committing = [False]
        try:
            conn = self._connect()
            with conn.cursor() as cur:
                out = body(cur, committing)
        except Abort as exc:
            self._rollback()
            self.counts["fail"] += 1
            return self.rec.fail(op, str(exc))
        except (pymysql.MySQLError, OSError, socket.timeout) as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            text = f"({code}) {exc.args[1] if len(exc.args) > 1 else exc}"
            self._drop()
            server_said_no = isinstance(exc, pymysql.MySQLError) and code not in CLIENT_SIDE
            if not committing[0] or (server_said_no and code in ROLLED_BACK_AT_COMMIT):
                # Before COMMIT nothing can have committed (the server rolls back an open
                # transaction whose connection is gone); at COMMIT these codes mean rollback.
                self.counts["fail"] += 1
                return self.rec.fail(op, text)
            self.counts["info"] += 1
            done = self.rec.info(op, text)
            self.process += self.clients  # a new process: the old one's COMMIT may still land
            return done
        self.counts["ok"] += 1
        return self.rec.ok(op, out)

    def _rollback(self) -> None:
        try:
            if self.conn is not None:
                with self.conn.cursor() as cur:
                    cur.execute("ROLLBACK")
        except Exception:  # noqa: BLE001
            self._drop()

    def close(self) -> None:
        self._drop()


# --------------------------------------------------------------------------- bank

class Bank:
    """Transfers between accounts in transactions; reads of all accounts outside them."""

    name = "bank"
    database = "bank"

    def __init__(self, accounts: int = 5, balance: int = 10) -> None:
        self.accounts = list(range(accounts))
        self.balance = balance
        self.total = accounts * balance

    def setup(self, cur: Any) -> None:
        cur.execute("CREATE DATABASE IF NOT EXISTS bank")
        cur.execute("CREATE TABLE bank.accounts (id INT PRIMARY KEY, balance INT NOT NULL)")
        values = ", ".join(f"({a}, {self.balance})" for a in self.accounts)
        cur.execute(f"INSERT INTO bank.accounts (id, balance) VALUES {values}")

    def step(self, client: Client) -> Op:
        rng = client.rng
        if rng.random() < 0.5:
            return client.perform("read", None, self._read)
        src, dst = rng.sample(self.accounts, 2)
        amount = rng.randint(1, 5)

        def transfer(cur: Any, committing: list[bool]) -> Any:
            cur.execute("BEGIN")
            cur.execute("SELECT balance FROM bank.accounts WHERE id = %s", (src,))
            (balance,) = cur.fetchone()
            if balance < amount:
                raise Abort(f"insufficient funds: {balance} < {amount}")
            cur.execute("UPDATE bank.accounts SET balance = balance - %s WHERE id = %s", (amount, src))
            cur.execute("UPDATE bank.accounts SET balance = balance + %s WHERE id = %s", (amount, dst))
            committing[0] = True
            cur.execute("COMMIT")
            return None

        return client.perform("transfer", {"from": src, "to": dst, "amount": amount}, transfer)

    @staticmethod
    def _read(cur: Any, committing: list[bool]) -> dict[str, int]:
        cur.execute("SELECT id, balance FROM bank.accounts")
        return {str(i): int(b) for i, b in cur.fetchall()}


# --------------------------------------------------------------------------- list-append

class ListAppend:
    """Elle's list-append over one table of (k, v text) rows: appends with CONCAT, reads of
    several keys, in transactions. Keys rotate (each takes at most ``appends_per_key_max``
    appends) so lists stay short and reads stay cheap."""

    name = "list-append"
    database = "la"

    def __init__(self, active_keys: int = 5, appends_per_key_max: int = 40) -> None:
        self.active_keys = active_keys
        self.appends_per_key_max = appends_per_key_max
        self._lock = threading.Lock()
        self._keys = list(range(active_keys))
        self._next_key = active_keys
        self._appends: dict[int, int] = {}
        self._next_value = 1

    def setup(self, cur: Any) -> None:
        cur.execute("CREATE DATABASE IF NOT EXISTS la")
        cur.execute("CREATE TABLE la.lists (k INT PRIMARY KEY, v TEXT NOT NULL)")

    def _pick(self, rng: random.Random, append: bool) -> tuple[int, int | None]:
        with self._lock:
            k = rng.choice(self._keys)
            if not append:
                return k, None
            v = self._next_value
            self._next_value += 1
            self._appends[k] = self._appends.get(k, 0) + 1
            if self._appends[k] >= self.appends_per_key_max:
                self._keys[self._keys.index(k)] = self._next_key
                self._next_key += 1
            return k, v

    def step(self, client: Client) -> Op:
        rng = client.rng
        read_only = rng.random() < 0.3
        mops: list[list[Any]] = []
        for _ in range(rng.randint(1, 4)):
            append = not read_only and rng.random() < 0.6
            k, v = self._pick(rng, append)
            mops.append(["append", k, v] if append else ["r", k, None])

        def txn(cur: Any, committing: list[bool]) -> Any:
            cur.execute("START TRANSACTION READ ONLY" if read_only else "BEGIN")
            done = []
            for f, k, v in mops:
                if f == "append":
                    cur.execute("INSERT INTO la.lists (k, v) VALUES (%s, %s) "
                                "ON DUPLICATE KEY UPDATE v = CONCAT(v, ',', %s)", (k, str(v), str(v)))
                    done.append([f, k, v])
                else:
                    cur.execute("SELECT v FROM la.lists WHERE k = %s", (k,))
                    row = cur.fetchone()
                    done.append([f, k, parse_list(row[0]) if row else []])
            committing[0] = not read_only
            cur.execute("COMMIT")
            return done

        return client.perform("txn", mops, txn)


def parse_list(text: str | bytes | None) -> list[int]:
    if text is None:
        return []
    if isinstance(text, bytes):
        text = text.decode()
    return [int(x) for x in text.split(",") if x != ""]
