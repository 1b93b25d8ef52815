"""MySQL client/server protocol constants used by grproxy (both directions).

Only what the proxy reads or writes is listed; values are the protocol's own.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class Cap(IntFlag):
    """Capability flags (protocol 4.1)."""

    LONG_PASSWORD = 1 << 0
    FOUND_ROWS = 1 << 1
    LONG_FLAG = 1 << 2
    CONNECT_WITH_DB = 1 << 3
    NO_SCHEMA = 1 << 4
    COMPRESS = 1 << 5
    ODBC = 1 << 6
    LOCAL_FILES = 1 << 7
    IGNORE_SPACE = 1 << 8
    PROTOCOL_41 = 1 << 9
    INTERACTIVE = 1 << 10
    SSL = 1 << 11
    IGNORE_SIGPIPE = 1 << 12
    TRANSACTIONS = 1 << 13
    RESERVED = 1 << 14
    SECURE_CONNECTION = 1 << 15
    MULTI_STATEMENTS = 1 << 16
    MULTI_RESULTS = 1 << 17
    PS_MULTI_RESULTS = 1 << 18
    PLUGIN_AUTH = 1 << 19
    CONNECT_ATTRS = 1 << 20
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    SESSION_TRACK = 1 << 23
    DEPRECATE_EOF = 1 << 24
    OPTIONAL_RESULTSET_METADATA = 1 << 25
    ZSTD_COMPRESSION = 1 << 26
    QUERY_ATTRIBUTES = 1 << 27


# What grproxy can relay faithfully. Deliberately absent:
# - DEPRECATE_EOF: result sets keep their EOF packets, so where a response ends is decided by
#   packet headers and first bytes alone (an OK-as-EOF and a row starting with 0xFE need the
#   packet length to tell apart); every client must support the classic framing.
# - COMPRESS / ZSTD: relaying compressed streams would mean re-framing every packet.
# - QUERY_ATTRIBUTES, OPTIONAL_RESULTSET_METADATA: change COM_QUERY / result framing; MariaDB
#   does not support them anyway.
# - SSL is added per listener when TLS is configured.
PROXY_CAPABILITIES = (
    Cap.LONG_PASSWORD
    | Cap.FOUND_ROWS
    | Cap.LONG_FLAG
    | Cap.CONNECT_WITH_DB
    | Cap.NO_SCHEMA
    | Cap.ODBC
    | Cap.LOCAL_FILES
    | Cap.IGNORE_SPACE
    | Cap.PROTOCOL_41
    | Cap.INTERACTIVE
    | Cap.IGNORE_SIGPIPE
    | Cap.TRANSACTIONS
    | Cap.SECURE_CONNECTION
    | Cap.MULTI_STATEMENTS
    | Cap.MULTI_RESULTS
    | Cap.PS_MULTI_RESULTS
    | Cap.PLUGIN_AUTH
    | Cap.CONNECT_ATTRS
    | Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Cap.CAN_HANDLE_EXPIRED_PASSWORDS
    | Cap.SESSION_TRACK
)

# The proxy's own backend connections (probes, KILL, members, applier): no client-specific
# choices such as NO_SCHEMA (forbids db.table), FOUND_ROWS or IGNORE_SPACE.
OWN_CAPABILITIES = (
    Cap.LONG_PASSWORD
    | Cap.LONG_FLAG
    | Cap.PROTOCOL_41
    | Cap.TRANSACTIONS
    | Cap.SECURE_CONNECTION
    | Cap.MULTI_STATEMENTS
    | Cap.MULTI_RESULTS
    | Cap.PS_MULTI_RESULTS
    | Cap.PLUGIN_AUTH
    | Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA
)

# Capabilities the proxy always needs from a backend connection, whatever the client chose.
BACKEND_REQUIRED = Cap.PROTOCOL_41 | Cap.SECURE_CONNECTION | Cap.PLUGIN_AUTH | Cap.TRANSACTIONS

# Client choices that change how the backend frames its answers: the backend connection must
# carry exactly the client's choice for these, because answers are relayed byte for byte.
FRAMING_CAPABILITIES = (
    Cap.FOUND_ROWS
    | Cap.LONG_FLAG
    | Cap.NO_SCHEMA
    | Cap.ODBC
    | Cap.LOCAL_FILES
    | Cap.IGNORE_SPACE
    | Cap.INTERACTIVE
    | Cap.MULTI_STATEMENTS
    | Cap.MULTI_RESULTS
    | Cap.PS_MULTI_RESULTS
    | Cap.SESSION_TRACK
    | Cap.CAN_HANDLE_EXPIRED_PASSWORDS
)


class Status(IntFlag):
    """Server status flags, as carried by OK and EOF packets."""

    IN_TRANS = 0x0001
    AUTOCOMMIT = 0x0002
    MORE_RESULTS_EXISTS = 0x0008
    NO_GOOD_INDEX_USED = 0x0010
    NO_INDEX_USED = 0x0020
    CURSOR_EXISTS = 0x0040
    LAST_ROW_SENT = 0x0080
    DB_DROPPED = 0x0100
    NO_BACKSLASH_ESCAPES = 0x0200
    METADATA_CHANGED = 0x0400
    QUERY_WAS_SLOW = 0x0800
    PS_OUT_PARAMS = 0x1000
    IN_TRANS_READONLY = 0x2000
    SESSION_STATE_CHANGED = 0x4000


class Command(IntEnum):
    SLEEP = 0x00
    QUIT = 0x01
    INIT_DB = 0x02
    QUERY = 0x03
    FIELD_LIST = 0x04
    CREATE_DB = 0x05
    DROP_DB = 0x06
    REFRESH = 0x07
    SHUTDOWN = 0x08
    STATISTICS = 0x09
    PROCESS_INFO = 0x0A
    CONNECT = 0x0B
    PROCESS_KILL = 0x0C
    DEBUG = 0x0D
    PING = 0x0E
    TIME = 0x0F
    DELAYED_INSERT = 0x10
    CHANGE_USER = 0x11
    BINLOG_DUMP = 0x12
    TABLE_DUMP = 0x13
    CONNECT_OUT = 0x14
    REGISTER_SLAVE = 0x15
    STMT_PREPARE = 0x16
    STMT_EXECUTE = 0x17
    STMT_SEND_LONG_DATA = 0x18
    STMT_CLOSE = 0x19
    STMT_RESET = 0x1A
    SET_OPTION = 0x1B
    STMT_FETCH = 0x1C
    DAEMON = 0x1D
    BINLOG_DUMP_GTID = 0x1E
    RESET_CONNECTION = 0x1F


MAX_PAYLOAD = 0xFFFFFF  # a payload of exactly this size continues in the next packet
UTF8MB4_GENERAL_CI = 45
