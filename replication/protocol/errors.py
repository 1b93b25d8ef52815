"""One error tree for everything grproxy reports to a MySQL client.

Each class knows its MySQL errno and SQLSTATE; `to_payload()` builds the ERR packet payload.
The translation to an ERR packet happens at one boundary (the client session). Errors that come
from a backend are never wrapped: their packets are relayed as they are (`BackendError` keeps
the original errno, SQLSTATE and message for the rare case the proxy must re-send one).
"""

from __future__ import annotations

import struct
from typing import ClassVar

_registry: dict[int, type["MySQLError"]] = {}


class MySQLError(Exception):
    """An error with a MySQL errno and SQLSTATE, shown to clients as an ERR packet."""

    errno: ClassVar[int] = 1105  # ER_UNKNOWN_ERROR
    sqlstate: ClassVar[str] = "HY000"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        errno = cls.__dict__.get("errno")
        if errno is not None:
            other = _registry.get(errno)
            if other is not None and other is not cls:
                raise TypeError(f"errno {errno} given to both {other.__name__} and {cls.__name__}")
            _registry[errno] = cls

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_payload(self) -> bytes:
        """ERR packet payload (protocol 4.1: marker, errno, '#', SQLSTATE, message)."""
        return err_payload(self.errno, self.sqlstate, self.message)


def err_payload(errno: int, sqlstate: str, message: str) -> bytes:
    msg = message.encode("utf-8", "replace")[:1024]
    return b"\xff" + struct.pack("<H", errno) + b"#" + sqlstate.encode("ascii")[:5].ljust(5, b"0") + msg


class BackendError(MySQLError):
    """An error a backend returned, carried with its own errno/SQLSTATE/message."""

    def __init__(self, errno: int, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.backend_errno = errno
        self.backend_sqlstate = sqlstate

    def to_payload(self) -> bytes:
        return err_payload(self.backend_errno, self.backend_sqlstate, self.message)

    def __str__(self) -> str:
        return f"({self.backend_errno}, {self.backend_sqlstate}) {self.message}"


class TooManyConnections(MySQLError):
    errno = 1040
    sqlstate = "08004"


class UnknownStatementHandler(MySQLError):
    errno = 1243  # ER_UNKNOWN_STMT_HANDLER


class HandshakeError(MySQLError):
    errno = 1043  # ER_HANDSHAKE_ERROR
    sqlstate = "08S01"


class AccessDenied(MySQLError):
    errno = 1045
    sqlstate = "28000"


class UnknownCommand(MySQLError):
    errno = 1047
    sqlstate = "08S01"


class ParseError(MySQLError):
    errno = 1064
    sqlstate = "42000"


class UnknownThread(MySQLError):
    errno = 1094


class KillDenied(MySQLError):
    errno = 1095  # ER_KILL_DENIED_ERROR


class SpecificAccessDenied(MySQLError):
    errno = 1227  # ER_SPECIFIC_ACCESS_DENIED_ERROR
    sqlstate = "42000"


class PacketTooLarge(MySQLError):
    errno = 1153
    sqlstate = "08S01"


class PacketsOutOfOrder(MySQLError):
    errno = 1156
    sqlstate = "08S01"


class MalformedPacket(MySQLError):
    errno = 1835
    sqlstate = "HY000"


class InsecureTransport(MySQLError):
    errno = 3159  # ER_SECURE_TRANSPORT_REQUIRED


class NotSupported(MySQLError):
    errno = 1235  # ER_NOT_SUPPORTED_YET
    sqlstate = "42000"


class CantResetMaster(MySQLError):
    errno = 3190  # ER_CANT_RESET_MASTER: "RESET MASTER is not allowed because %s."
    sqlstate = "HY000"


class ConnectionKilled(MySQLError):
    errno = 1927  # MariaDB ER_CONNECTION_KILLED
    sqlstate = "70100"


# Client-library codes (2xxx): a proxy is the only "server" its clients see, so losing the real
# server is reported with the codes a client library would use itself.
class BackendUnavailable(MySQLError):
    errno = 2003  # CR_CONN_HOST_ERROR


class BackendGone(MySQLError):
    errno = 2006  # CR_SERVER_GONE_ERROR


class BackendLost(MySQLError):
    errno = 2013  # CR_SERVER_LOST


# --- Group Replication's codes (DESIGN §11) ----------------------------------------------------


class ReadOnly(MySQLError):
    """A write on a member that may not take writes (secondary, not ONLINE, ERROR)."""

    errno = 1290  # ER_OPTION_PREVENTS_STATEMENT
    sqlstate = "HY000"


class ServerOffline(MySQLError):
    """A member in ERROR with exit_state_action = OFFLINE_MODE refuses client sessions."""

    errno = 3032  # ER_SERVER_OFFLINE_MODE
    sqlstate = "HY000"


class BeforeDmlValidation(MySQLError):
    """A write to a table unfit for replication (no primary key, …)."""

    errno = 3098  # ER_BEFORE_DML_VALIDATION_ERROR
    sqlstate = "HY000"


class HookError(MySQLError):
    """Commit blocked and rolled back (no majority, transaction over transaction_size_limit)."""

    errno = 3100  # ER_RUN_HOOK_ERROR
    sqlstate = "HY000"


class CertificationConflict(MySQLError):
    """Certification failed at COMMIT: another member's transaction won."""

    errno = 3101  # ER_TRANSACTION_ROLLBACK_DURING_COMMIT
    sqlstate = "40000"


class GroupFull(MySQLError):
    errno = 3191  # ER_GROUP_REPLICATION_MAX_GROUP_SIZE


class HoldWaitTimeout(MySQLError):
    errno = 3781  # ER_GR_HOLD_WAIT_TIMEOUT


class HoldKilled(MySQLError):
    errno = 3782  # ER_GR_HOLD_KILLED


class HoldMemberStatus(MySQLError):
    errno = 3783  # ER_GR_HOLD_MEMBER_STATUS_ERROR
