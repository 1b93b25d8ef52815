"""Where does a backend's response end? A sans-IO scanner over the raw byte stream.

Theory of operation. grproxy relays a backend's answer to the client byte for byte; it never
decodes rows. To know when the answer is complete (and the connection free for the next
command) it follows the packet headers: 4 bytes of (length, sequence id) per packet, plus the
first bytes of the few packets that steer the framing — the first packet of a result (OK, ERR,
LOCAL INFILE request or column count), the EOF packets after column definitions and rows, and
the prepare-OK packet with its parameter and column counts. Row and column-definition payloads
are skipped by count. Payloads of MAX_PAYLOAD bytes continue in the next packet, which is
skipped as a continuation, never read as a new packet.

Result-set framing assumes CLIENT_DEPRECATE_EOF is off (grproxy never offers it), so an EOF
packet is 0xFE with a payload shorter than 9 bytes, and a row can never look like one.

The scanner is fed chunks as they arrive (`feed`); it keeps at most one short incomplete
packet head between chunks (bounded by `HEAD_BYTES_MAX`), so its memory does not grow with the
size of a result.
"""

from __future__ import annotations

from enum import IntEnum

from .constants import MAX_PAYLOAD, Status
from .errors import MalformedPacket
from .packets import read_lenenc_int


class Expect(IntEnum):
    """What kind of response the command that was sent produces."""

    NONE = 0  # COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT: no answer at all
    SIMPLE = 1  # one OK / EOF / ERR packet (PING, INIT_DB, RESET_CONNECTION, STMT_RESET, SET_OPTION)
    SINGLE = 2  # one packet of any content (COM_STATISTICS)
    QUERY = 3  # text results, possibly several; LOCAL INFILE possible
    EXECUTE = 4  # binary results, possibly several; a cursor ends it after the metadata
    PREPARE = 5  # prepare-OK + parameter and column definitions
    FETCH = 6  # binary rows of an open cursor, then EOF
    FIELD_LIST = 7  # column definitions until EOF


# Scanner states.
_FIRST, _COLS, _COLS_EOF, _ROWS, _SIMPLE, _SINGLE, _PREPARE = range(7)
_P_PARAMS, _P_PARAMS_EOF, _P_COLS, _P_COLS_EOF, _FIELDS, _AFTER_INFILE, _IDLE = range(7, 14)

HEAD_BYTES_MAX = 4 + 512  # header + the longest prefix ever read (of an ERR packet)
_PREFIX = 32  # enough for any OK / EOF / prepare-OK / column-count prefix
_ERR_PREFIX = 512  # ERR packets: keep the message for logs and metrics

_START = {
    Expect.SIMPLE: _SIMPLE,
    Expect.SINGLE: _SINGLE,
    Expect.QUERY: _FIRST,
    Expect.EXECUTE: _FIRST,
    Expect.PREPARE: _PREPARE,
    Expect.FETCH: _ROWS,
    Expect.FIELD_LIST: _FIELDS,
}
_MORE_RESULTS = int(Status.MORE_RESULTS_EXISTS)
_CURSOR_EXISTS = int(Status.CURSOR_EXISTS)


class ResponseScanner:
    """Follows one response at a time. Not thread-safe; one per backend connection.

    After `start(expect)`, call `feed(chunk)` with every chunk received. It returns how many
    bytes of the chunk belong to this response; when `done` is True the response is complete
    and any remaining bytes of the chunk are not part of it. When `infile` is True the backend
    has asked for a LOCAL INFILE: the response is paused until `resume_after_infile()`.

    After completion: `status` holds the server status flags of the last OK/EOF seen, and
    `status_seen` whether this response had any (an ERR, or a prepare without parameter or
    column definitions, has none: `status` is then a previous response's, stale),
    `error` the (errno, sqlstate, message) of a terminating ERR packet or None (`error_len`: that
    packet's length on the wire, header included), `ok_prefix` the
    first bytes of the last OK packet, `prepared` (stmt_id, columns, params) for a prepare.
    """

    __slots__ = (
        "expect", "done", "infile", "status", "status_seen", "error", "error_len", "ok_prefix", "prepared", "packets",
        "_state", "_skip", "_cont", "_final", "_remaining", "_ncols", "_carry",
    )

    def __init__(self) -> None:
        self.expect = Expect.NONE
        self.done = True
        self.infile = False
        self.status = 0
        self.status_seen = False  # the answer carried server status flags (an ERR does not)
        self.error: tuple[int, str, str] | None = None
        self.error_len = 0
        self.ok_prefix = b""
        self.prepared: tuple[int, int, int] | None = None
        self.packets = 0
        self._state = _IDLE
        self._skip = 0
        self._cont = False
        self._final = False
        self._remaining = 0
        self._ncols = 0
        self._carry = b""

    def start(self, expect: Expect) -> None:
        """Begin following the response to a command that produces `expect`."""
        if not self.done:
            raise RuntimeError(f"[BUG] scanner started for {expect.name} while {self.expect.name} is in progress")
        self.expect = expect
        self.status_seen = False
        self.error = None
        self.error_len = 0
        self.prepared = None
        self.infile = False
        self.packets = 0
        self._skip = 0
        self._cont = False
        self._final = False
        self._carry = b""
        if expect == Expect.NONE:
            self.done = True
            self._state = _IDLE
        else:
            self.done = False
            self._state = _START[expect]

    def resume_after_infile(self) -> None:
        """The client has sent its file (ending with an empty packet); an OK or ERR follows."""
        if not self.infile:
            raise RuntimeError("[BUG] resume_after_infile without a LOCAL INFILE request")
        self.infile = False
        self.done = False
        self._final = False
        self._state = _AFTER_INFILE

    def feed(self, chunk: bytes) -> int:
        """Scan the next bytes of the backend stream; see the class docstring."""
        if self.done:
            return 0
        n = len(chunk)
        if self._carry:
            data = self._carry + chunk
            offset = len(self._carry)
            self._carry = b""
        else:
            data = chunk
            offset = 0
        end = len(data)
        pos = 0
        # Hot loop: state lives in locals and is written back on every exit.
        skip = self._skip
        cont = self._cont
        state = self._state
        count = 0
        while True:
            if skip:
                if skip > end - pos:
                    self._skip = skip - (end - pos)
                    self._cont = cont
                    self._state = state
                    self.packets += count
                    return n
                pos += skip
                skip = 0
            if self._final and not cont:
                self.packets += count
                self._skip = 0
                self._cont = False
                self.done = True
                self._state = _IDLE
                return pos - offset
            if end - pos < 4:
                self._carry = data[pos:]
                break
            length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
            pos += 4
            skip = length
            if cont:
                # Continuation of a payload of MAX_PAYLOAD bytes: pure data.
                cont = length == MAX_PAYLOAD
                continue
            cont = length == MAX_PAYLOAD
            # Hot states inline (rows, column definitions, the EOFs around them, a small
            # column count); everything else goes through _on_packet.
            if state == _ROWS:
                if length and end > pos:
                    first = data[pos]
                    if first != 0xFE and first != 0xFF:
                        count += 1
                        continue
                    if first == 0xFE and 5 <= length < 9 and end - pos >= 5:
                        count += 1
                        status = data[pos + 3] | (data[pos + 4] << 8)
                        self.status = status
                        self.status_seen = True
                        if status & _MORE_RESULTS and self.expect != Expect.FETCH:
                            state = _FIRST
                        else:
                            self._final = True
                        continue
            elif state == _COLS:
                count += 1
                self._remaining -= 1
                if self._remaining == 0:
                    state = _COLS_EOF
                continue
            elif state == _COLS_EOF:
                if length == 5 and end - pos >= 5 and data[pos] == 0xFE:
                    count += 1
                    status = data[pos + 3] | (data[pos + 4] << 8)
                    self.status = status
                    self.status_seen = True
                    if status & _CURSOR_EXISTS and self.expect == Expect.EXECUTE:
                        self._final = True
                    else:
                        state = _ROWS
                    continue
            elif state == _FIRST:
                if length and end > pos and 0 < data[pos] < 0xFB:
                    count += 1
                    self._remaining = data[pos]
                    state = _COLS
                    continue
            elif state == _P_PARAMS or state == _P_COLS or state == _SINGLE:
                count += 1
                if state == _SINGLE:
                    self._final = True
                else:
                    self._remaining -= 1
                    if self._remaining == 0:
                        state = _P_PARAMS_EOF if state == _P_PARAMS else _P_COLS_EOF
                continue
            # Everything else: a packet whose first bytes decide what follows.
            if length == 0:
                raise MalformedPacket("empty packet where a response packet was expected")
            need = length if length < _PREFIX else _PREFIX
            if end > pos and data[pos] == 0xFF:
                need = length if length < _ERR_PREFIX else _ERR_PREFIX
            if end - pos < need:
                pos -= 4  # carry the whole packet head; it is read again with the next chunk
                skip = 0
                cont = False  # continuations never get here
                self._carry = data[pos:]
                if len(self._carry) > HEAD_BYTES_MAX:  # cannot happen: need <= _ERR_PREFIX
                    raise RuntimeError("[BUG] scanner carry over its bound")
                break
            self._state = state
            self._on_packet(state, data[pos : pos + need], length)
            state = self._state
            count += 1
        # Incomplete packet head carried to the next chunk.
        self._skip = 0
        self._cont = cont
        self._state = state
        self.packets += count
        return n

    # --- per-packet rules ----------------------------------------------------------------------

    def _on_packet(self, state: int, head: bytes, length: int) -> None:
        first = head[0]
        if first == 0xFF:
            self._on_err(head)
            self.error_len = 4 + length
            return
        if state == _ROWS:
            if first == 0xFE and length < 9:
                self.status = _eof_status(head)
                self.status_seen = True
                if self.expect != Expect.FETCH and self.status & _MORE_RESULTS:
                    self._state = _FIRST
                else:
                    self._final = True
            return
        if state == _FIRST or state == _AFTER_INFILE:
            if first == 0x00:
                self._on_ok(head)
            elif first == 0xFB and state == _FIRST and self.expect == Expect.QUERY:
                self.infile = True
                self._final = True  # pause here until the client's file has been relayed
            elif state == _AFTER_INFILE:
                raise MalformedPacket(f"unexpected packet 0x{first:02x} after LOCAL INFILE data")
            else:
                count, _ = read_lenenc_int(head, 0)
                if count == 0:
                    raise MalformedPacket("result set with zero columns")
                self._remaining = count
                self._state = _COLS
            return
        if state == _COLS_EOF:
            self._expect_eof(first, length)
            self.status = _eof_status(head)
            self.status_seen = True
            if self.expect == Expect.EXECUTE and self.status & _CURSOR_EXISTS:
                self._final = True  # rows come with COM_STMT_FETCH
            else:
                self._state = _ROWS
            return
        if state == _SIMPLE:
            if first == 0x00:
                self._on_ok(head)
            elif first == 0xFE and length < 9:
                self.status = _eof_status(head)
                self.status_seen = True
                self._final = True
            else:
                raise MalformedPacket(f"unexpected packet 0x{first:02x} for a simple command")
            self._final = True
            return
        if state == _PREPARE:
            if first != 0x00 or len(head) < 9:
                raise MalformedPacket("malformed COM_STMT_PREPARE response")
            stmt_id = int.from_bytes(head[1:5], "little")
            ncols = head[5] | (head[6] << 8)
            nparams = head[7] | (head[8] << 8)
            self.prepared = (stmt_id, ncols, nparams)
            self._ncols = ncols
            if nparams:
                self._remaining = nparams
                self._state = _P_PARAMS
            elif ncols:
                self._remaining = ncols
                self._state = _P_COLS
            else:
                self._final = True
            return
        if state == _P_PARAMS_EOF:
            self._expect_eof(first, length)
            self.status = _eof_status(head)
            self.status_seen = True
            if self._ncols:
                self._remaining = self._ncols
                self._state = _P_COLS
            else:
                self._final = True
            return
        if state == _P_COLS_EOF:
            self._expect_eof(first, length)
            self.status = _eof_status(head)
            self.status_seen = True
            self._final = True
            return
        if state == _FIELDS:
            if first == 0xFE and length < 9:
                self._final = True
            return
        raise RuntimeError(f"[BUG] scanner received a packet in state {state}")

    def _on_ok(self, head: bytes) -> None:
        _, pos = read_lenenc_int(head, 1)
        _, pos = read_lenenc_int(head, pos)
        if len(head) < pos + 2:
            raise MalformedPacket("truncated OK packet")
        self.status = head[pos] | (head[pos + 1] << 8)
        self.status_seen = True
        self.ok_prefix = bytes(head)
        if self.status & _MORE_RESULTS and self.expect in (Expect.QUERY, Expect.EXECUTE):
            self._state = _FIRST
        else:
            self._final = True

    def _on_err(self, head: bytes) -> None:
        errno = head[1] | (head[2] << 8) if len(head) >= 3 else 0
        if len(head) >= 9 and head[3:4] == b"#":
            self.error = (errno, head[4:9].decode("ascii", "replace"), head[9:].decode("utf-8", "replace"))
        else:
            self.error = (errno, "HY000", head[3:].decode("utf-8", "replace"))
        self._final = True

    @staticmethod
    def _expect_eof(first: int, length: int) -> None:
        if first != 0xFE or length >= 9:
            raise MalformedPacket(f"expected an EOF packet, got 0x{first:02x} ({length} bytes)")


def _eof_status(head: bytes) -> int:
    if len(head) < 5:
        return 0  # pre-4.1 EOF: no status
    return head[3] | (head[4] << 8)
