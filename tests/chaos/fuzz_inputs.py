"""Fuzz inputs: valid MySQL packets and group-port frames, and the ways to break them.

Everything here is pure and driven by one ``random.Random``: the same generator state gives the
same bytes, so a failing input is replayed from its seed and index (tests/chaos/fuzz.py).

MySQL side
----------
* :func:`handshake_response` — a HandshakeResponse41 with random capability bits, user,
  auth data, schema, plugin name and connection attributes (valid unless mutated);
* :func:`command` — one command payload of any kind: COM_QUERY over a small corpus of safe
  statements (and corrupted ones), COM_STMT_PREPARE / EXECUTE (parameter counts, null bitmaps,
  type codes and values that may lie), SEND_LONG_DATA, FETCH, RESET, CLOSE, COM_CHANGE_USER,
  COM_FIELD_LIST, COM_BINLOG_DUMP(_GTID), COM_REGISTER_SLAVE, COM_SET_OPTION, COM_PROCESS_KILL,
  COM_INIT_DB, COM_REFRESH, COM_SHUTDOWN, the obsolete ones, random command bytes, COM_QUIT;
* :func:`mutate_stream` — framing-level damage over a list of packets: payload mutations (the
  stream stays in sync), wrong sequence ids, random command bytes, splices of two packets,
  length fields that lie, huge lengths, truncation, a TLS request or COM_QUIT in the middle.
  It says whether the result is still *in sync* (every packet complete and well framed), which
  decides what the driver may expect from the server.

Group side
----------
* :func:`message` — a random core message of every type (replication/gcs/xcom/messages.py),
  with member ids taken from a pool that mixes the real members (forged references), the
  sender and strangers;
* :func:`frames` — wire frames (frames.py): HELLO / WELCOME / REJECT, DATA (plain, LZ4,
  fragmented), then envelope-level damage (magic, version, kind, flags, reserved byte, body and
  raw lengths that lie, LZ4 garbage, fragment headers that lie) or byte-level mutation.

The one thing never generated: a well-formed JoinRequest from the fuzzer's own identity is
filtered out by :func:`is_join_request` — joining is the group's open door (any dialer the
ip_allowlist admits may ask to join, as in GR); it is not garbage, and a fuzzer that joined
would make every later frame a member's.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from replication.gcs.interface import MemberId, Slot, ViewId
from replication.gcs.xcom import frames as fr
from replication.gcs.xcom import messages as m
from replication.gcs.xcom.types import Ballot
from replication.protocol.constants import Cap, Command
from replication.protocol.packets import handshake_response as build_handshake_response
from replication.protocol.packets import lenenc_int

INTERESTING8 = (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF)
INTERESTING16 = (0, 1, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
INTERESTING32 = (0, 1, 0xFF, 0xFFFF, 0xFFFFFF, 0x1000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
INTERESTING64 = (0, 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1)
FUZZ_PAYLOAD_TAG = b"FUZZ:"  # every application payload a fuzzer frame carries starts with it


# --------------------------------------------------------------------------- byte mutations


def _u(rng: random.Random, choices: Sequence[int], bits: int) -> int:
    return rng.choice(choices) if rng.random() < 0.6 else rng.getrandbits(bits)


def mutate_bytes(rng: random.Random, data: bytes, rounds: int | None = None) -> bytes:
    """1..4 random byte-level edits: bit flips, interesting bytes and words, inserted, deleted
    and duplicated ranges, truncation, appended garbage."""
    out = bytearray(data)
    for _ in range(rounds if rounds is not None else rng.randint(1, 4)):
        n = len(out)
        op = rng.randrange(10)
        if n == 0 or op == 0:
            out[rng.randint(0, n):rng.randint(0, n)] = rng.randbytes(rng.randint(1, 16))
        elif op == 1:
            i = rng.randrange(n)
            out[i] ^= 1 << rng.randrange(8)
        elif op == 2:
            out[rng.randrange(n)] = rng.choice(INTERESTING8)
        elif op == 3:
            out[rng.randrange(n)] = rng.getrandbits(8)
        elif op == 4 and n >= 2:
            i = rng.randrange(n - 1)
            out[i:i + 2] = struct.pack(rng.choice("<>") + "H", rng.choice(INTERESTING16))
        elif op == 5 and n >= 4:
            i = rng.randrange(n - 3)
            out[i:i + 4] = struct.pack(rng.choice("<>") + "I", rng.choice(INTERESTING32))
        elif op == 6:
            i = rng.randrange(n)
            del out[i:i + rng.randint(1, max(1, n // 4))]
        elif op == 7:
            del out[rng.randrange(n):]
        elif op == 8:
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 32))
            k = rng.randint(0, n)
            out[k:k] = out[i:j] * rng.randint(1, 4)
        else:
            out += rng.randbytes(rng.randint(1, 24))
    return bytes(out)


# --------------------------------------------------------------------------- MySQL: login

CLIENT_CAPS = (Cap.LONG_PASSWORD | Cap.FOUND_ROWS | Cap.LONG_FLAG | Cap.CONNECT_WITH_DB | Cap.ODBC
               | Cap.IGNORE_SPACE | Cap.PROTOCOL_41 | Cap.INTERACTIVE | Cap.IGNORE_SIGPIPE | Cap.TRANSACTIONS
               | Cap.SECURE_CONNECTION | Cap.MULTI_STATEMENTS | Cap.MULTI_RESULTS | Cap.PS_MULTI_RESULTS
               | Cap.PLUGIN_AUTH | Cap.CONNECT_ATTRS | Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA | Cap.SESSION_TRACK)
# Never asked for by the fuzzer's *valid* logins: the proxy does not offer them, and a client
# that set them anyway would then expect another framing (compression, no EOF packets).
_ODD_CAPS = (Cap.COMPRESS, Cap.DEPRECATE_EOF, Cap.NO_SCHEMA, Cap.LOCAL_FILES, Cap.SSL, Cap.QUERY_ATTRIBUTES,
             Cap.OPTIONAL_RESULTSET_METADATA, Cap.ZSTD_COMPRESSION, Cap.CAN_HANDLE_EXPIRED_PASSWORDS)
PLUGINS = ("mysql_native_password", "caching_sha2_password", "mysql_clear_password", "client_ed25519",
           "sha256_password", "", "dialog", "x" * 300)


def login_capabilities(rng: random.Random, *, valid: bool = True) -> int:
    caps = Cap.PROTOCOL_41 | Cap.SECURE_CONNECTION | Cap.PLUGIN_AUTH | Cap.TRANSACTIONS
    for flag in Cap:
        if flag & CLIENT_CAPS and rng.random() < 0.5:
            caps |= flag
    if not valid:
        for flag in _ODD_CAPS:
            if rng.random() < 0.15:
                caps |= flag
        if rng.random() < 0.2:
            caps = rng.getrandbits(32)
    return int(caps)


def random_attrs(rng: random.Random) -> dict[str, str]:
    attrs = {"_client_name": rng.choice(["libmariadb", "pymysql", "fuzz"]), "_pid": str(rng.randrange(99999))}
    for _ in range(rng.randint(0, 4)):
        attrs[rng.choice(["program_name", "_os", "k" * rng.randint(1, 40), "é"])] = "v" * rng.randint(0, 300)
    return attrs


@dataclass(frozen=True, slots=True)
class Login:
    """What a fuzzer login says: the server's nonce is only known after its greeting, so the
    bytes are made by :meth:`payload` then."""

    capabilities: int
    user: str
    password_ok: bool
    database: str | None
    plugin: str
    attrs: dict[str, str]
    mariadb_capabilities: int

    def payload(self, scramble: Callable[[bytes], bytes], nonce: bytes) -> bytes:
        auth = scramble(nonce) if self.password_ok else bytes(20)
        return build_handshake_response(
            capabilities=self.capabilities, collation=45, user=self.user, auth_response=auth,
            database=self.database, plugin=self.plugin, connect_attrs=self.attrs,
            mariadb_capabilities=self.mariadb_capabilities)


def login(rng: random.Random, *, user: str = "root", valid: bool = True) -> Login:
    """A login as `user` (the fuzzer's account); `valid=False` also picks unknown users, wrong
    passwords, odd capability bits and plugin names."""
    caps = login_capabilities(rng, valid=valid)
    if valid:
        return Login(caps, user, True, rng.choice([None, "fuzz", "mysql"]) if caps & Cap.CONNECT_WITH_DB else None,
                     rng.choice(["mysql_native_password", "mysql_native_password", "caching_sha2_password"]),
                     random_attrs(rng) if caps & Cap.CONNECT_ATTRS else {},
                     rng.choice([0, 0, 1 << 3]))
    return Login(caps, rng.choice([user, user, "nobody", "", "r" * 200, "root\x00x", "ü"]), rng.random() < 0.7,
                 rng.choice([None, "fuzz", "no_such_db", "", "`x", "d" * 300]), rng.choice(PLUGINS),
                 random_attrs(rng), rng.getrandbits(32) if rng.random() < 0.3 else 0)


def handshake_response(rng: random.Random, nonce: bytes = b"01234567890123456789") -> bytes:
    """A random, mostly valid HandshakeResponse41 payload (for the in-process parsers)."""
    from replication.protocol.packets import scramble_native

    spec = login(rng, valid=rng.random() < 0.6)
    return spec.payload(lambda n: scramble_native("pw", n), nonce)


def ssl_request(rng: random.Random) -> bytes:
    """The 32-byte SSL request a client sends instead of its login to start TLS."""
    caps = login_capabilities(rng) | Cap.SSL
    return struct.pack("<IIB", caps, 1 << 24, 45) + bytes(23)


def change_user_body(rng: random.Random, *, user: str = "root", capabilities: int | None = None) -> bytes:
    """COM_CHANGE_USER's body (after the command byte): empty auth for a password-less `user`."""
    caps = CLIENT_CAPS if capabilities is None else capabilities
    name = user if rng.random() < 0.7 else rng.choice(["nobody", "", "u" * 100])
    auth = b"" if rng.random() < 0.7 else rng.randbytes(rng.choice([1, 20, 255]))
    out = name.encode() + b"\x00"
    out += bytes((len(auth),)) + auth if caps & Cap.SECURE_CONNECTION else auth + b"\x00"
    if rng.random() < 0.9:
        out += rng.choice([b"", b"fuzz", b"mysql", b"no_such_db"]) + b"\x00"
        if rng.random() < 0.8:
            out += struct.pack("<H", rng.choice([45, 33, 8, 0, 0xFFFF]))
            out += rng.choice(PLUGINS[:4]).encode() + b"\x00"
            attrs = b"".join(lenenc_int(len(k.encode())) + k.encode() + lenenc_int(len(v.encode())) + v.encode()
                             for k, v in random_attrs(rng).items())
            out += lenenc_int(len(attrs)) + attrs
    return out


# --------------------------------------------------------------------------- MySQL: commands

# Statements the fuzzer's commands start from: cheap, bounded, and with no effect beyond the
# `fuzz` schema (nothing that changes the group, the backends' globals or other sessions).
SQL = (
    "SELECT 1", "SELECT ?", "SELECT ? + ?, ?", "SELECT id, v FROM fuzz.t WHERE id = ?", "SELECT * FROM fuzz.t",
    "SELECT COUNT(*) FROM fuzz.t", "SELECT v FROM fuzz.t WHERE id IN (1, 2, 3) FOR UPDATE",
    "INSERT INTO fuzz.t (id, v) VALUES (?, ?)", "INSERT INTO fuzz.t (id, v) VALUES (1000001, 'x') "
    "ON DUPLICATE KEY UPDATE v = CONCAT(v, 'y')", "REPLACE INTO fuzz.t (id, v) VALUES (1000002, 'z')",
    "UPDATE fuzz.t SET v = ? WHERE id = ?", "DELETE FROM fuzz.t WHERE id = ?", "BEGIN", "START TRANSACTION",
    "START TRANSACTION READ ONLY", "COMMIT", "ROLLBACK", "SAVEPOINT s1", "ROLLBACK TO SAVEPOINT s1",
    "SET autocommit = 0", "SET autocommit = 1", "SET @a = ?", "SET NAMES utf8mb4", "SET sql_mode = 'ANSI_QUOTES'",
    "SET SESSION group_replication_consistency = 'BEFORE'", "SET SESSION group_replication_consistency = 'AFTER'",
    "SET SESSION group_replication_consistency = 'EVENTUAL'", "SHOW VARIABLES LIKE 'group_replication%'",
    "SHOW WARNINGS", "SHOW STATUS LIKE 'Threads%'", "SELECT * FROM performance_schema.replication_group_members",
    "SELECT * FROM performance_schema.replication_group_member_stats", "SELECT @@group_replication_group_name",
    "SELECT CONNECTION_ID()", "SELECT ROW_COUNT()", "SELECT LAST_INSERT_ID()", "USE fuzz", "USE no_such_db",
    "KILL 999999999", "KILL QUERY 999999999", "KILL CONNECTION 268435999", "KILL USER root", "KILL QUERY ID 5",
    "XA START 'fz'", "XA END 'fz'", "XA ROLLBACK 'fz'", "CREATE TEMPORARY TABLE fuzz_tmp (a INT)",
    "DROP TEMPORARY TABLE IF EXISTS fuzz_tmp", "DO 1", "SELECT 1; SELECT 2", "SELECT 1; INSERT INTO fuzz.t "
    "(id, v) VALUES (1000003, 'm')", "CALL fuzz.no_such_proc()", "SELECT NEXTVAL(fuzz.no_seq)", "LOCK TABLES fuzz.t READ",
    "UNLOCK TABLES", "ANALYZE TABLE fuzz.t", "SELECT * FROM fuzz.t_myisam", "INSERT INTO fuzz.t_myisam VALUES (1)",
    "CREATE TABLE IF NOT EXISTS fuzz.t2 (id INT PRIMARY KEY)", "DROP TABLE IF EXISTS fuzz.t2_gone",
    "/* grproxy */ MEMBER STATS", "/* grproxy */ ROUTER MEMBERS", "/* grproxy */ bogus", "/*!50000 SELECT 1 */",
    "SELECT '\\'", "SELECT 'unterminated", "SELECT `", "", " ", ";", "\x00", "SELECT 0x" + "ff" * 64,
    "SELECT REPEAT('a', 1000)", "SELECT * FROM information_schema.tables LIMIT 1", "HELP 'x'",
    "SELECT group_replication_get_communication_protocol()", "SELECT ? FROM DUAL WHERE ? = ?",
    "RESET MASTER", "FLUSH BINARY LOGS", "SET sql_log_bin = 1",
)
_STATEMENT_ID_CHOICES = (0, 1, 2, 3, 0xFFFFFFFF, 0x7FFFFFFF, 12345)
_TYPE_CODES = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0F, 0x10, 0xF5, 0xF6,
               0xFC, 0xFD, 0xFE, 0xFF, 0x00, 0x20, 0x80)


def sql_text(rng: random.Random) -> bytes:
    text = rng.choice(SQL).encode()
    r = rng.random()
    if r < 0.25:
        text = mutate_bytes(rng, text)
    elif r < 0.30:
        text = rng.randbytes(rng.randint(0, 64))
    elif r < 0.35:
        text = rng.choice(SQL).encode() + b" " + rng.choice(SQL).encode()
    return text


def _param_values(rng: random.Random, types: list[int]) -> bytes:
    out = bytearray()
    for t in types:
        t &= 0xFF
        if t in (0x01,):
            out += rng.randbytes(1)
        elif t in (0x02, 0x0D):
            out += rng.randbytes(2)
        elif t in (0x03, 0x04, 0x09):
            out += rng.randbytes(4)
        elif t in (0x05, 0x08):
            out += rng.randbytes(8)
        elif t in (0x07, 0x0A, 0x0B, 0x0C):
            n = rng.choice([0, 4, 7, 11, 12, 255])
            out += bytes((n,)) + rng.randbytes(min(n, 12))
        else:
            n = rng.choice([0, 1, 5, 250, 251, 300, 0xFFFFFF])
            data = rng.randbytes(min(n, 64))
            out += lenenc_int(n) + data
    return bytes(out)


def stmt_execute(rng: random.Random, params: int | None = None) -> bytes:
    """COM_STMT_EXECUTE: statement id, flags, iteration count, then (maybe lying) parameter
    block: null bitmap for `params` parameters, new-params-bound flag, types, values."""
    n = params if params is not None else rng.choice([0, 0, 1, 2, 3, 7, 8, 9, 300])
    out = bytearray((Command.STMT_EXECUTE,))
    out += struct.pack("<IBI", rng.choice(_STATEMENT_ID_CHOICES), rng.choice([0, 0, 1, 2, 4, 8, 0xFF]),
                       rng.choice([1, 1, 0, 2, 0xFFFFFFFF]))
    if n and rng.random() < 0.95:
        out += rng.randbytes((n + 7) // 8) if rng.random() < 0.3 else bytes((n + 7) // 8)
        bound = rng.choice([1, 1, 0, 2])
        out.append(bound)
        if bound == 1:
            types = [rng.choice(_TYPE_CODES) | (0x80 << 8 if rng.random() < 0.2 else 0) for _ in range(n)]
            out += b"".join(struct.pack("<H", t) for t in types)
            out += _param_values(rng, types)
    if rng.random() < 0.2:
        out = bytearray(out[:rng.randint(1, len(out))])
    return bytes(out)


def command(rng: random.Random, *, user: str = "root") -> bytes:
    """One command payload (command byte first)."""
    r = rng.random()
    sid = struct.pack("<I", rng.choice(_STATEMENT_ID_CHOICES))
    if r < 0.30:
        return bytes((Command.QUERY,)) + sql_text(rng)
    if r < 0.40:
        return bytes((Command.STMT_PREPARE,)) + sql_text(rng)
    if r < 0.52:
        return stmt_execute(rng)
    if r < 0.56:
        return bytes((Command.STMT_SEND_LONG_DATA,)) + sid + struct.pack("<H", rng.choice([0, 1, 2, 0xFFFF])) \
            + rng.randbytes(rng.choice([0, 1, 100, 4000]))
    if r < 0.59:
        return bytes((Command.STMT_FETCH,)) + sid + struct.pack("<I", rng.choice([0, 1, 100, 0xFFFFFFFF]))
    if r < 0.61:
        return bytes((rng.choice([Command.STMT_RESET, Command.STMT_CLOSE]),)) + sid
    if r < 0.66:
        return bytes((Command.CHANGE_USER,)) + change_user_body(rng, user=user)
    if r < 0.69:
        table = rng.choice([b"t", b"fuzz.t", b"no_such", b"", b"`x`", b"t" * 300])
        return bytes((Command.FIELD_LIST,)) + table + b"\x00" + rng.choice([b"", b"%", b"v%"])
    if r < 0.72:
        cmd = rng.choice([Command.BINLOG_DUMP, Command.BINLOG_DUMP_GTID, Command.REGISTER_SLAVE, Command.TABLE_DUMP])
        return bytes((cmd,)) + struct.pack("<IHI", rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32)) \
            + rng.choice([b"", b"mysql-bin.000001", b"\x00" * 40])
    if r < 0.75:
        return bytes((Command.SET_OPTION,)) + struct.pack("<H", rng.choice([0, 1, 2, 0xFFFF]))[:rng.choice([2, 2, 1, 0])]
    if r < 0.77:
        return bytes((Command.PROCESS_KILL,)) + struct.pack("<I", rng.choice([0, 999999999, 0xFFFFFFFF,
                                                                              (1 << 28) + 99999]))[:rng.choice([4, 4, 2])]
    if r < 0.80:
        return bytes((Command.INIT_DB,)) + rng.choice([b"fuzz", b"no_such_db", b"", b"`", b"a" * 300])
    if r < 0.83:
        return bytes((rng.choice([Command.PING, Command.STATISTICS, Command.PROCESS_INFO, Command.DEBUG,
                                  Command.RESET_CONNECTION, Command.SLEEP, Command.TIME, Command.CONNECT,
                                  Command.DELAYED_INSERT, Command.DAEMON, Command.CONNECT_OUT]),))
    if r < 0.85:
        return bytes((Command.REFRESH, rng.getrandbits(8)))  # REFRESH_MASTER included: members refuse it (3190)
    if r < 0.87:
        return bytes((rng.choice([Command.CREATE_DB, Command.DROP_DB, Command.SHUTDOWN]),)) \
            + rng.choice([b"fuzz_never", b"", b"\x00"])
    if r < 0.97:
        return bytes((rng.randrange(0x20, 0x100),)) + rng.randbytes(rng.randint(0, 16))
    return bytes((Command.QUIT,))


# Statements a session prepares first so that what follows names a statement the server knows
# (ids count from 1 per connection on a server and per session on the router).
PREPARABLE = (
    "SELECT ?", "SELECT ? + ?, ?", "SELECT id, v FROM fuzz.t WHERE id = ?", "SELECT * FROM fuzz.t",
    "INSERT INTO fuzz.t (id, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
    "UPDATE fuzz.t SET v = ? WHERE id = ?", "SELECT ? FROM DUAL WHERE ? = ?", "DO ?", "SET @a = ?",
    "SELECT * FROM performance_schema.replication_group_members WHERE MEMBER_ID = ?",
)


def prepared_followup(rng: random.Random, params: int) -> bytes:
    """A command for the statement prepared first (id 1, or MariaDB's 'last prepared'):
    executes with the right parameter count or a lying one, with any types, long data, a
    cursor and fetches, a reset, a close."""
    sid = struct.pack("<I", rng.choice([1, 1, 1, 0xFFFFFFFF, 2]))
    r = rng.random()
    if r < 0.55:
        out = bytearray(stmt_execute(rng, params if rng.random() < 0.7 else None))
        if len(out) >= 5:
            out[1:5] = sid
        return bytes(out)
    if r < 0.7:
        return bytes((Command.STMT_SEND_LONG_DATA,)) + sid + struct.pack("<H", rng.randint(0, max(0, params))) \
            + rng.randbytes(rng.choice([0, 10, 5000]))
    if r < 0.8:
        return bytes((Command.STMT_FETCH,)) + sid + struct.pack("<I", rng.choice([1, 10, 0]))
    if r < 0.9:
        return bytes((Command.STMT_RESET,)) + sid
    return bytes((Command.STMT_CLOSE,)) + sid


def commands(rng: random.Random, *, user: str = "root") -> list[bytes]:
    """1..5 commands for one session: often a valid prepare and commands on that statement."""
    if rng.random() < 0.4:
        sql = rng.choice(PREPARABLE)
        return [bytes((Command.STMT_PREPARE,)) + sql.encode()] + \
            [prepared_followup(rng, sql.count("?")) for _ in range(rng.randint(1, 4))]
    return [command(rng, user=user) for _ in range(rng.randint(1, 4))]


# --------------------------------------------------------------------------- MySQL: framing


def frame_packet(payload: bytes, seq: int, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return (n & 0xFFFFFF).to_bytes(3, "little") + bytes((seq & 0xFF,)) + payload


@dataclass(frozen=True, slots=True)
class Stream:
    """Bytes to send after login, and whether they still frame complete packets (`in_sync`)."""

    data: bytes
    in_sync: bool
    ops: tuple[str, ...]


def mutate_stream(rng: random.Random, payloads: list[bytes], *, first_seq: int = 0) -> Stream:
    """Frame `payloads` (each a command with sequence id `first_seq`) and damage them."""
    packets = [[p, first_seq] for p in payloads]
    ops: list[str] = []
    in_sync = True
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        op = rng.choice(("payload", "payload", "seq", "cmd", "splice", "dup", "tls", "quit", "length", "huge",
                         "truncate"))
        ops.append(op)
        i = rng.randrange(len(packets))
        if op == "payload":
            packets[i][0] = mutate_bytes(rng, packets[i][0]) or b"\x0e"
        elif op == "seq":
            packets[i][1] = rng.choice([1, 2, 255, rng.getrandbits(8)])
        elif op == "cmd":
            packets[i][0] = bytes((rng.getrandbits(8),)) + packets[i][0][1:]
        elif op == "splice":
            other = command(rng)
            a, b = packets[i][0], other
            packets[i][0] = a[:rng.randint(0, len(a))] + b[rng.randint(0, len(b)):] or b"\x0e"
        elif op == "dup":
            packets.insert(i, list(packets[i]))
        elif op == "tls":
            packets.insert(i, [ssl_request(rng), rng.choice([0, 1, 2])])
        elif op == "quit":
            packets.insert(i, [bytes((Command.QUIT,)), 0])
    data = bytearray()
    for payload, seq in packets:
        data += frame_packet(payload, seq)
    for op in ops:
        if op == "length":
            in_sync = False
            pos = _packet_offsets(bytes(data))
            at = rng.choice(pos)
            true_len = int.from_bytes(data[at:at + 3], "little")
            lie = max(0, true_len + rng.choice([-3, -1, 1, 2, 50, 4096])) if rng.random() < 0.7 else rng.getrandbits(24)
            data[at:at + 3] = (lie & 0xFFFFFF).to_bytes(3, "little")
        elif op == "huge":
            in_sync = False
            at = rng.choice(_packet_offsets(bytes(data)))
            data[at:at + 3] = rng.choice([0xFFFFFF, 0xFFFFFE, 1 << 23, 70 << 20 & 0xFFFFFF]).to_bytes(3, "little")
        elif op == "truncate":
            in_sync = False
            del data[rng.randrange(max(1, len(data))):]
    return Stream(bytes(data), in_sync, tuple(ops))


def _packet_offsets(data: bytes) -> list[int]:
    out = [0]
    pos = 0
    while pos + 4 <= len(data):
        pos += 4 + int.from_bytes(data[pos:pos + 3], "little")
        if pos + 4 <= len(data):
            out.append(pos)
    return out


# --------------------------------------------------------------------------- group: messages


def _slot(rng: random.Random) -> Slot:
    return Slot(rng.choice(INTERESTING64) if rng.random() < 0.3 else rng.randint(0, 5000))


def _ballot(rng: random.Random) -> Ballot:
    if rng.random() < 0.3:
        return Ballot(rng.choice(INTERESTING64))
    return Ballot((rng.randint(0, 3) << 32) | (rng.randint(0, 5) << 8) | rng.randint(0, 9))


def _view(rng: random.Random) -> ViewId:
    if rng.random() < 0.2:
        return ViewId(rng.getrandbits(32), rng.getrandbits(64))
    return ViewId(rng.randint(0, 3), rng.randint(0, 50))


def _payload(rng: random.Random) -> bytes:
    return FUZZ_PAYLOAD_TAG + rng.randbytes(rng.choice([0, 1, 16, 200]))


def _run(rng: random.Random, pool: Sequence[MemberId]) -> m.Run:
    return m.Run(rng.choice(pool), rng.choice([1, 1, 2, 100, 2**64 - 1]),
                 tuple(_payload(rng) for _ in range(rng.randint(1, 3))))


def _value(rng: random.Random, pool: Sequence[MemberId]) -> m.Value:
    r = rng.random()
    if r < 0.2:
        return m.NOOP
    if r < 0.8:
        return m.Batch(tuple(_run(rng, pool) for _ in range(rng.randint(1, 3))))
    return m.Reconfig(rng.choice(list(m.ReconfigOp)), tuple(rng.sample(list(pool), rng.randint(1, min(3, len(pool))))))


def _config(rng: random.Random, pool: Sequence[MemberId]) -> m.ConfigRecord:
    members = tuple(dict.fromkeys(rng.sample(list(pool), rng.randint(1, min(4, len(pool))))))
    return m.ConfigRecord(_view(rng), _slot(rng), members)


def message(rng: random.Random, pool: Sequence[MemberId], *, target: MemberId, sender: MemberId) -> m.Message:
    """A random core message; member ids come from `pool` (real members, the sender, strangers).
    Messages that name the receiver (`target`) do so on purpose half the time: a Welcome, a
    NotMember or a ForceInstall that concerns it is the one that could do harm."""
    tag = rng.randint(1, 21)
    s = _slot
    if tag == 21:
        return m.Learn(s(rng), _ballot(rng))
    if tag == 1:
        return m.Accept(s(rng), _ballot(rng), _value(rng, pool))
    if tag == 2:
        return m.Accepted(s(rng), _ballot(rng))
    if tag == 3:
        return m.Nack(s(rng), _ballot(rng), _ballot(rng))
    if tag == 4:
        return m.Prepare(_ballot(rng), tuple(s(rng) for _ in range(rng.randint(1, 4))))
    if tag == 5:
        return m.Promise(_ballot(rng), tuple(s(rng) for _ in range(rng.randint(0, 3))),
                         tuple(m.AcceptedValue(s(rng), _ballot(rng), _value(rng, pool)) for _ in range(rng.randint(0, 2))))
    if tag == 6:
        return m.Decide(s(rng), _ballot(rng), _value(rng, pool))
    if tag == 7:
        a, b = sorted((s(rng), s(rng)))
        return m.Skip(Slot(a), Slot(b), _ballot(rng))
    if tag == 8:
        a, b = sorted((s(rng), s(rng)))
        return m.Fetch(Slot(a), Slot(b))
    if tag == 9:
        return m.Forgotten(s(rng))
    if tag == 10:
        return m.Heartbeat(_view(rng), s(rng))
    if tag == 11:  # a JoinRequest for someone else's identity is as close as it gets (see module doc)
        return m.Heartbeat(_view(rng), s(rng))
    about = target if rng.random() < 0.5 else rng.choice(pool)
    if tag == 12:
        return m.Welcome(about, s(rng), tuple(_config(rng, pool) for _ in range(rng.randint(1, 3))),
                         tuple(m.OriginSeq(rng.choice(pool), rng.randint(0, 99)) for _ in range(rng.randint(0, 3))))
    if tag == 13:
        return m.JoinRefused(about, "fuzz")
    if tag == 14:
        return m.NotMember(about, _view(rng))
    if tag == 15:
        return m.ForceQuery(rng.getrandbits(16), _view(rng))
    if tag == 16:
        return m.ForceState(rng.getrandbits(16), s(rng), tuple(s(rng) for _ in range(rng.randint(0, 3))), s(rng))
    if tag == 17:
        members = tuple(dict.fromkeys([about, sender] + rng.sample(list(pool), rng.randint(0, 2))))
        record = m.ConfigRecord(_view(rng) if rng.random() < 0.3 else ViewId(rng.randint(1, 9), rng.randint(1, 99)),
                                Slot(rng.randint(0, 5000)), members)
        gaps = tuple(m.SlotRange(Slot(a), Slot(a + rng.randint(0, 20))) for a in
                     (rng.randint(0, 5000) for _ in range(rng.randint(0, 2))))
        return m.ForceInstall(rng.getrandbits(16), record, gaps)
    if tag == 18:
        return m.ForceAck(rng.getrandbits(16))
    if tag == 19:
        return m.Forward(_run(rng, pool))
    return m.ForwardReconfig(m.Reconfig(rng.choice(list(m.ReconfigOp)), (rng.choice(pool),)))


def is_join_request(body: bytes) -> bool:
    """Whether `body` decodes as a JoinRequest (the one message the fuzzer never sends: joining
    is the group's open door, see the module docstring)."""
    return body == m.encode_message(m.JoinRequest())


def message_bytes(rng: random.Random, pool: Sequence[MemberId], *, target: MemberId, sender: MemberId) -> bytes:
    """An encoded message, mutated at the byte level with probability 0.5; never a JoinRequest."""
    body = m.encode_message(message(rng, pool, target=target, sender=sender))
    if rng.random() < 0.5:
        body = mutate_bytes(rng, body)
    if is_join_request(body):
        body += b"\x00"  # trailing byte: undecodable
    return body


# --------------------------------------------------------------------------- group: frames


def node_pool(rng: random.Random, members: Sequence[fr.NodeId]) -> list[fr.NodeId]:
    """Dialer identities that are not members: strangers, older and newer incarnations of a
    member's name, a member's address under another name. (Never a member's exact identity:
    impersonation is what ip_allowlist and TLS identity checks stop, as in GR.)"""
    out = [fr.NodeId(f"fuzz-{rng.getrandbits(32):08x}", f"127.0.0.1:{rng.randint(1, 65535)}", rng.randint(1, 2**32 - 1))]
    for node in members:
        if node.incarnation > 1:
            out.append(fr.NodeId(node.name, node.address, node.incarnation - rng.randint(1, min(9, node.incarnation - 1))))
        out.append(fr.NodeId(node.name, node.address, node.incarnation + rng.randint(1, 9)))
        out.append(fr.NodeId(f"fuzz-{node.name[:8]}", node.address, node.incarnation))
    return out


def hello(rng: random.Random, group_name: str, sender: fr.NodeId, target: fr.NodeId | None) -> bytes:
    vmin, vmax = (fr.PROTOCOL_VERSION_MIN, fr.PROTOCOL_VERSION_MAX) if rng.random() < 0.8 else \
        sorted((rng.randint(1, 0xFFFF), rng.randint(1, 0xFFFF)))
    tgt = target if target is not None and rng.random() < 0.5 else fr.NodeId("", sender.address, 0)
    return fr.encode_control(fr.Hello(group_name if rng.random() < 0.9 else "other-group", vmin, vmax, sender, tgt))


def control_frame(rng: random.Random, pool: Sequence[fr.NodeId], group_name: str) -> bytes:
    node = rng.choice(pool)
    r = rng.random()
    if r < 0.4:
        return hello(rng, group_name, node, rng.choice(pool))
    if r < 0.7:
        return fr.encode_control(fr.Welcome(rng.randint(1, 0xFFFF), node))
    return fr.encode_control(fr.Reject(rng.choice(list(fr.RejectReason)), "fuzz" * rng.randint(0, 5)))


def data_frames(rng: random.Random, body: bytes) -> list[bytes]:
    """`body` as the wire has it: plain, LZ4-compressed and/or fragmented."""
    encoder = fr.MessageEncoder(compression_threshold=rng.choice([0, 0, 1, 64]),
                                max_message_size=rng.choice([0, 0, 8, 32, 1000]))
    encoded = encoder.encode(body * rng.choice([1, 1, 1, 8]))
    return [b"".join(bytes(b) for b in f) for f in encoded.frames]


def damage_frame(rng: random.Random, frame: bytes) -> bytes:
    """Envelope- or body-level damage to one frame."""
    out = bytearray(frame)
    op = rng.randrange(11)
    if op == 0:
        out[0:2] = rng.choice([b"GY", b"\x00\x00", b"XG"])
    elif op == 1:
        out[2] = rng.choice([0, 2, 255])
    elif op == 2:
        out[3] = rng.choice([0, 1, 2, 3, 4, 5, 255])
    elif op == 3:
        out[4] = rng.choice([1, 2, 3, 4, 0x80, 0xFF])
    elif op == 4:
        out[5] = rng.randint(1, 255)
    elif op == 5:  # body length lies: short (the rest is read as the next envelope) or long (stall)
        true = struct.unpack_from("!I", out, 6)[0]
        struct.pack_into("!I", out, 6, max(0, true + rng.choice([-5, -1, 1, 3, 100])) & 0xFFFFFFFF)
    elif op == 6:
        struct.pack_into("!I", out, 6, rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 512 * 1024 * 1024 + 17]))
    elif op == 7:  # raw length lies (huge: a decompression bomb's claim)
        struct.pack_into("!I", out, 10, rng.choice([0, 1, 512 * 1024 * 1024, 512 * 1024 * 1024 + 1, 0xFFFFFFFF,
                                                    rng.getrandbits(20)]))
    elif op == 8:  # flagged LZ4 but not compressed (or the reverse)
        out[4] ^= 0x01
    elif op == 9 and len(out) >= 30:  # fragment header lies
        struct.pack_into("!QII", out, 14, rng.getrandbits(64), rng.choice([0, 1, 2**31, 2**32 - 1]),
                         rng.choice([0, 1, 2**32 - 1]))
    else:
        return mutate_bytes(rng, frame)
    return bytes(out)


def frames(rng: random.Random, pool: Sequence[MemberId], nodes: Sequence[fr.NodeId], group_name: str, *,
           target: MemberId, sender: MemberId, count: int | None = None) -> bytes:
    """A stream of frames for after the handshake (or instead of it), some of them damaged."""
    out = bytearray()
    for _ in range(count if count is not None else rng.randint(1, 6)):
        if rng.random() < 0.1:
            parts = [control_frame(rng, nodes, group_name)]
        else:
            parts = data_frames(rng, message_bytes(rng, pool, target=target, sender=sender))
        if rng.random() < 0.4:
            i = rng.randrange(len(parts))
            parts[i] = damage_frame(rng, parts[i])
        if len(parts) > 1 and rng.random() < 0.1:
            rng.shuffle(parts)
        out += b"".join(parts)
    return bytes(out)
