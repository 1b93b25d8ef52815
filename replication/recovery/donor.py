"""The donor side of distributed recovery: what a member serves to joiners on its member port
(`/* grproxy */ RECOVERY …` and `CLONE …`, admin logins only; replication/member_session.py
hands the words over).

* `RECOVERY STATE <epoch> <number>` → the group's uuid and the engine state taken when that
  view was installed (kept for the last RECOVERY_POINTS_MAX views that admitted someone);
* `RECOVERY CACHE` → the lowest seq the transaction cache holds, and how many it holds;
* `RECOVERY TRANSACTIONS <seq>,<seq>,…` → (seq, kind, payload) of each cached seq;
* `CLONE BEGIN` → (clone id, group uuid, the snapshot's positions): a consistent snapshot of
  the backend, kept open on a connection of its own (replication/recovery/clone.py);
* `CLONE OBJECTS <id>` → one row per object of the snapshot's user schemas, its fields
  CloneObject.WIRE_COLUMNS (kind, schema, name, sql_mode, create statement, insert columns,
  time zone, client character set, connection collation, schema collation);
* `CLONE ROWS <id> <schema hex> <table hex>` → the table's next chunk of rows;
* `CLONE END <id>` → closes the snapshot.

Bounds: CLONE_SESSIONS_MAX clones at once (one more is refused: the joiner tries another
donor), each closed after CLONE_IDLE_TIMEOUT_S without a command.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
import structlog

from replication.gcs.interface import ViewId
from replication.protocol.backend import BackendConnection
from replication.protocol.errors import NotSupported, ParseError
from replication.protocol.results import TYPE_LONGLONG, Column

from ..positions import AppliedSet
from .cache import TransactionCache
from .clone import CLONE_IDLE_TIMEOUT_S, CLONE_SESSIONS_MAX, CloneError, CloneObject, CloneSnapshot

log = structlog.get_logger("grproxy.recovery.donor")

RECOVERY_POINTS_MAX = 8  # engine states kept for joiners (one per view that admitted someone)
RECOVERY_SEQS_PER_REQUEST_MAX = 10_000
RECOVERY_STATE_MAGIC = b"GRPX1"

Answer = tuple[Sequence[Column], Sequence[Sequence[object]]]


def pack_recovery_state(group_uuid: str, engine_state: bytes) -> bytes:
    """What a donor sends a joiner: the group's uuid, then the engine's state."""
    g = group_uuid.encode()
    return RECOVERY_STATE_MAGIC + len(g).to_bytes(2, "little") + g + engine_state


def unpack_recovery_state(blob: bytes) -> tuple[str, bytes]:
    """Inverse of pack_recovery_state. Raises ValueError."""
    head = len(RECOVERY_STATE_MAGIC)
    if not blob.startswith(RECOVERY_STATE_MAGIC) or len(blob) < head + 2:
        raise ValueError("donor's recovery state has an unknown format")
    n = int.from_bytes(blob[head : head + 2], "little")
    return blob[head + 2 : head + 2 + n].decode(), blob[head + 2 + n :]


class Donor:
    """One per member. `connect` opens a connection to the member's backend; `group_uuid`,
    `applied` and `committing` read the member's identity, its applied set and its local
    commits between position and XA COMMIT."""

    def __init__(self, cache: TransactionCache, connect: Callable[[], Awaitable[BackendConnection]],
                 group_uuid: Callable[[], str | None], applied: Callable[[], AppliedSet],
                 committing: Callable[[], Collection[int]]) -> None:
        self.cache = cache
        self._connect = connect
        self._group_uuid = group_uuid
        self._applied = applied
        self._committing = committing
        self.points: OrderedDict[ViewId, bytes] = OrderedDict()
        self.clones: dict[int, CloneSnapshot] = {}
        self._clone_ids = itertools.count(1)
        self.stats_clones_served = 0

    # --- recovery points --------------------------------------------------------------------------

    def keep_point(self, view_id: ViewId, engine_state: bytes) -> None:
        self.points[view_id] = engine_state
        while len(self.points) > RECOVERY_POINTS_MAX:
            self.points.popitem(last=False)

    def recovery_state(self, view_id: ViewId) -> bytes | None:
        """The group's uuid and the engine state taken when `view_id` was installed (None if
        not kept)."""
        state = self.points.get(view_id)
        group_uuid = self._group_uuid()
        if state is None or group_uuid is None:
            return None
        return pack_recovery_state(group_uuid, state)

    def reset(self) -> None:
        """A new incarnation: states of the old one's views are of no use."""
        self.points.clear()

    # --- the commands -----------------------------------------------------------------------------

    async def answer(self, words: list[str], owner: object = None) -> Answer:
        """Answer a RECOVERY / CLONE command (see the module docstring) from session `owner`
        (a clone it begins ends with it: `release`). Raises ParseError for an unknown one,
        NotSupported for what this donor cannot serve."""
        match words:
            case ["RECOVERY", "STATE", epoch, number] if epoch.isdigit() and number.isdigit():
                state = self.recovery_state(ViewId(int(epoch), int(number)))
                if state is None:
                    raise NotSupported(f"this member kept no recovery state for view {epoch}:{number}")
                return [Column("state", length=1 << 24)], [(state,)]
            case ["RECOVERY", "CACHE"]:
                cols = [Column("lowest_seq", TYPE_LONGLONG, 20), Column("seqs", TYPE_LONGLONG, 20)]
                return cols, [(self.cache.lowest(), len(self.cache))]
            case ["RECOVERY", "TRANSACTIONS", listed]:
                seqs = [int(x) for x in listed.split(",") if x.isdigit()][:RECOVERY_SEQS_PER_REQUEST_MAX]
                rows = []
                for seq in seqs:
                    item = self.cache.get(seq)
                    if item is not None:
                        rows.append((seq, item[0], item[1]))
                return [Column("seq", TYPE_LONGLONG, 20), Column("kind", length=1),
                        Column("payload", length=1 << 24)], rows
            case ["CLONE", "BEGIN"]:
                return await self._clone_begin(owner)
            case ["CLONE", "OBJECTS", clone_id]:
                snap = self._clone(clone_id)
                cols = [Column(n, length=1 << 24) for n in CloneObject.WIRE_COLUMNS]
                return cols, [obj.row() for obj in snap.objects]
            case ["CLONE", "ROWS", clone_id, schema_hex, table_hex]:
                snap = self._clone(clone_id)
                try:
                    schema, table = bytes.fromhex(schema_hex).decode(), bytes.fromhex(table_hex).decode()
                except ValueError:
                    raise ParseError("CLONE ROWS takes the schema and table names in hex") from None
                if snap.busy:
                    raise NotSupported(f"clone {clone_id} is busy with another command")
                snap.busy = True
                try:
                    rows = await snap.rows(schema, table)
                except CloneError as exc:
                    raise NotSupported(str(exc)) from None
                finally:
                    snap.busy = False
                    self._touch(snap)
                return [Column("row", length=1 << 24)], [(r,) for r in rows]
            case ["CLONE", "END", clone_id]:
                snap = self.clones.pop(int(clone_id), None) if clone_id.isdigit() else None
                if snap is not None:
                    snap.close()
                return [Column("closed", TYPE_LONGLONG, 1)], [(int(snap is not None),)]
        raise ParseError(f"Unknown grproxy recovery command: {' '.join(words)[:80]}")

    async def _clone_begin(self, owner: object) -> Answer:
        group_uuid = self._group_uuid()
        if group_uuid is None:
            raise NotSupported("this member belongs to no group yet")
        if len(self.clones) >= CLONE_SESSIONS_MAX:
            raise NotSupported(f"this donor already serves {CLONE_SESSIONS_MAX} clone(s); try another donor")
        clone_id = next(self._clone_ids)
        try:
            snap = await CloneSnapshot.open(clone_id, self._connect, lambda: AppliedSet(self._applied().intervals()),
                                            self._committing)
        except CloneError as exc:
            raise NotSupported(str(exc)) from None
        if len(self.clones) >= CLONE_SESSIONS_MAX:  # another began while this one opened
            snap.close()
            raise NotSupported(f"this donor already serves {CLONE_SESSIONS_MAX} clone(s); try another donor")
        snap.owner = owner
        self.clones[clone_id] = snap
        self.stats_clones_served += 1
        self._touch(snap)
        log.info("clone_begin", clone_id=clone_id, positions=str(snap.positions), objects=len(snap.objects))
        cols = [Column("clone_id", TYPE_LONGLONG, 20), Column("group_uuid", length=64),
                Column("positions", length=1 << 20)]
        return cols, [(clone_id, group_uuid, str(snap.positions))]

    def _clone(self, clone_id: str) -> CloneSnapshot:
        snap = self.clones.get(int(clone_id)) if clone_id.isdigit() else None
        if snap is None:
            raise NotSupported(f"no clone {clone_id} on this donor (ended, or idle for {CLONE_IDLE_TIMEOUT_S:g}s)")
        self._touch(snap)
        return snap

    def _touch(self, snap: CloneSnapshot) -> None:
        """(Re)arm the session's idle timeout."""
        if snap.idle_timer is not None:
            snap.idle_timer.cancel()

        def expire() -> None:
            if snap.busy:
                self._touch(snap)
                return
            if self.clones.get(snap.clone_id) is snap:
                del self.clones[snap.clone_id]
                log.warning("clone_idle_closed", clone_id=snap.clone_id)
            snap.close()

        snap.idle_timer = asyncio.get_running_loop().call_later(CLONE_IDLE_TIMEOUT_S, expire)

    def release(self, owner: object) -> None:
        """Session `owner` ended: the clones it began end with it (the joiner is gone)."""
        for clone_id, snap in list(self.clones.items()):
            if snap.owner is owner:
                del self.clones[clone_id]
                snap.close()

    def close(self) -> None:
        for snap in self.clones.values():
            snap.close()
        self.clones.clear()
