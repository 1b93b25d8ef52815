"""The routing policy: which member a client statement goes to (DESIGN §7).

`route(stmt, state, topology, *, local, load, spread)` is a pure function: the same inputs give
the same `Decision`, it reads no clock, does no I/O and changes nothing. The I/O side sends the
statement to `decision.target` (after bringing that member connection to the session's settings
with `SessionState.replay_sql(since=…)`), or answers the client with `decision.refusal`, then
feeds the outcome to `SessionState.apply`.

Theory of operation
-------------------

Two questions, asked in order: *must* the statement go to one particular member (stickiness),
and if not, *what kind* of member may run it (the rule), then *which one* (the pick).

1. **Stickiness.** A session whose state lives on one member connection goes there, whatever the
   statement:
   - an open transaction → its member, from BEGIN (or the first statement under autocommit=0) to
     COMMIT / ROLLBACK / an implicit commit. One exception: a statement that implicitly commits
     and needs the write member, inside a read-only transaction on a member that cannot write
     (START TRANSACTION READ ONLY; …; START TRANSACTION), goes to the write member with
     `finish_on` naming the read member: the driver commits the read-only transaction there
     first. A read-write transaction never moves.
   - a pinned session (temporary tables, locks, unreplayable variables, …) → the pinned member;
   - pending `SET TRANSACTION` characteristics → the member that holds them.
   The sticky member must be ONLINE, else the statement is refused with 2013 (the client's "lost
   connection": the state it relied on is gone) and `lost` names the member, so the driver can
   close that connection and call `SessionState.member_gone`. A write the sticky member cannot
   take (a SECONDARY, a demoted primary) is refused by the router with the server's own error
   (1792 in a read-only transaction, else 1290), so a write never reaches a SECONDARY.

2. **Rules** for a free session, first match wins:
   - diagnostics (SHOW WARNINGS, @@warning_count, GET DIAGNOSTICS) → the member of the previous
     statement;
   - session statements (SET of session/user variables, USE, DEALLOCATE, COMMIT/ROLLBACK outside a
     transaction) → the session's current member (the last one, or the write member under
     autocommit=0); they are tracked and replayed elsewhere. One that would pin the session
     (`SET @x = NOW()`) or sets next-transaction characteristics goes to the write member, so that
     what it leaves behind sits where writes can follow;
   - BEGIN / START TRANSACTION → the write member; START TRANSACTION READ ONLY (or a session whose
     transactions are read-only by default) → a read member;
   - any statement under autocommit=0 → the write member (it opens a transaction);
   - writes, locking reads, locking functions, CALL, DDL, statements not understood, and
     multi-statement texts with any part that is not a read → the write member;
   - a read that pins (LAST_INSERT_ID(), SELECT … INTO @x, PREPARE) → the write member;
   - any other read → a read member.

3. **Picks.** The *write member*: the ONLINE primary (single-primary). A *read member*: the
   least loaded ONLINE secondary, or the ONLINE primary when no secondary is ONLINE. In
   multi-primary mode both are the *session's member*: the previous statement's member if it is
   ONLINE, else the `local` member if it is ONLINE, else the least loaded ONLINE member. (Spread
   across members from one session, its second write could reach a member that has not applied
   its first, and fail certification against itself; sessions are spread when they start.)
   "Least loaded" compares `load` (outstanding statements per member; absent = 0). The previous
   statement's member keeps the pick while it has at most LOAD_SLACK more outstanding than the
   least loaded (its connection is already in sync, and a session flipping between members on
   every statement costs CPU for nothing); otherwise the `spread`-th of the least loaded members
   in id order wins (the driver passes e.g. its connection id, so idle sessions spread out). Where the rule allows it, a statement that may
   run on a read member falls back to one when no write member is ONLINE. Only ONLINE members
   are ever picked: a RECOVERING member is behind, the others cannot be relied on.

4. **Refusals** carry the error a MySQL client already handles: 1290 (super-read-only wording)
   when a write finds no ONLINE primary, or when the table shows two PRIMARY members in
   single-primary mode (the primary is ambiguous: no write goes anywhere, even inside an open
   transaction, until one remains; reads still go to secondaries), 3783 when no member at all is ONLINE, 2013 when the
   member holding the session's transaction or pinned state is not ONLINE, 1792 for a write in a
   read-only transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from replication.protocol.errors import BackendLost, HoldMemberStatus, ReadOnly, err_payload
from replication.statements import Kind, Scope, Statement

from router.state import PinReason, SessionState, is_diagnostics
from router.topology import MemberId, MemberInfo, Mode, Topology

__all__ = [
    "ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION",
    "Rule",
    "Pick",
    "Refusal",
    "Decision",
    "route",
    "is_write",
]

ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792
LOAD_SLACK = 1  # the previous member stays the pick while it has at most this many more in flight
_READ_ONLY_TRANSACTION_SQLSTATE = "25006"
_SUPER_READ_ONLY = "The MySQL server is running with the --super-read-only option so it cannot execute this statement"

_TRANSACTION_CONTROL = frozenset({Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK, Kind.SAVEPOINT, Kind.RELEASE_SAVEPOINT,
                                  Kind.ROLLBACK_TO_SAVEPOINT})
_ENDING_CONTROL = frozenset({Kind.COMMIT, Kind.ROLLBACK})
_SESSION_KINDS = frozenset({Kind.SET, Kind.USE, Kind.EMPTY, Kind.DEALLOCATE})
_FLAG_KINDS = frozenset({Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK, Kind.MULTI})  # may start/end one with autocommit=1


class Rule(enum.Enum):
    """Why the statement needs the kind of member it got."""

    IN_TRANSACTION = "in a transaction"
    PINNED = "pinned session"
    NEXT_TRANSACTION_PENDING = "next transaction's characteristics are set on one member"
    DIAGNOSTICS = "reads the previous statement's diagnostics"
    SESSION = "session statement, tracked and replayed"
    NEXT_TRANSACTION = "SET TRANSACTION for the next transaction"
    BEGIN = "starts a read-write transaction"
    BEGIN_READ_ONLY = "starts a read-only transaction"
    IMPLICIT_TRANSACTION = "autocommit=0 opens a transaction"
    MULTI = "multi-statement text with a part that is not a read"
    LOCKING_READ = "locking read"
    LOCKING_FUNCTION = "locking function"
    CALL = "CALL"
    DDL = "DDL"
    UNKNOWN = "statement not understood"
    WRITE = "writes"
    PINS = "pins the session"
    READ = "read"


class Pick(enum.Enum):
    """How the member was chosen, or why none was."""

    TRANSACTION_MEMBER = "the transaction's member"
    PINNED_MEMBER = "the pinned member"
    NEXT_TRANSACTION_MEMBER = "the member holding the next transaction's characteristics"
    LAST_MEMBER = "the previous statement's member"
    PRIMARY = "the ONLINE primary"
    LOCAL = "the local member"
    LEAST_LOADED_WRITER = "the least loaded ONLINE member (no ONLINE local member)"
    LEAST_LOADED_SECONDARY = "the least loaded ONLINE secondary"
    PRIMARY_NO_SECONDARY = "the primary (no ONLINE secondary)"
    LEAST_LOADED_MEMBER = "the least loaded ONLINE member"
    REFUSED_NO_PRIMARY = "refused: no ONLINE primary"
    REFUSED_AMBIGUOUS_PRIMARY = "refused: several members say PRIMARY in single-primary mode"
    REFUSED_NOTHING_ONLINE = "refused: no ONLINE member"
    REFUSED_MEMBER_LOST = "refused: the member holding the session's state is not ONLINE"
    REFUSED_READ_ONLY_TRANSACTION = "refused: write in a read-only transaction"
    REFUSED_NOT_WRITABLE = "refused: the session's member cannot take writes"


@dataclass(frozen=True, slots=True)
class Refusal:
    """An error to answer the client with instead of running the statement."""

    errno: int
    sqlstate: str
    message: str

    def to_payload(self) -> bytes:
        """The ERR packet payload."""
        return err_payload(self.errno, self.sqlstate, self.message)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a statement goes, and what it does to the session.

    Exactly one of `target` (run it there) and `refusal` (answer with this error) is set.
    `starts_transaction` / `ends_transaction`: the statement opens / closes a transaction (a
    prediction from the text and the state; the server's status flags have the last word in
    `SessionState.apply`). `pins`: pin reasons it would add on success. `finish_on`: before
    running it on `target`, commit the session's (read-only) transaction on this member.
    `lost`: the refusal is because this member, which holds the session's transaction or pinned
    state, is not ONLINE.
    """

    target: MemberId | None
    rule: Rule
    pick: Pick
    refusal: Refusal | None = None
    starts_transaction: bool = False
    ends_transaction: bool = False
    pins: frozenset[PinReason] = frozenset()
    finish_on: MemberId | None = None
    lost: MemberId | None = None

    def __post_init__(self) -> None:
        if (self.target is None) == (self.refusal is None):
            raise ValueError("a Decision has exactly one of target and refusal")
        if self.finish_on is not None and (self.target is None or self.finish_on == self.target):
            raise ValueError("finish_on names another member than the target")

    @property
    def reason(self) -> str:
        return f"{self.rule.value}: {self.pick.value}"


def is_write(stmt: Statement) -> bool:
    """Whether `stmt` may change data, schema, files, locks or server-wide settings: everything
    not read-only except transaction control (COMMIT of a read-only transaction runs where it
    is). A multi-statement text is a write if any part is."""
    if stmt.kind is Kind.MULTI:
        return any(is_write(p) for p in stmt.parts)
    return not stmt.is_read_only and stmt.kind not in _TRANSACTION_CONTROL


def _parts(stmt: Statement) -> tuple[Statement, ...]:
    return stmt.parts if stmt.kind is Kind.MULTI else (stmt,)


def _is_session_statement(stmt: Statement, in_transaction: bool) -> bool:
    """SET (session and user scope), USE, DEALLOCATE, empty, and transaction control with no
    transaction open: statements that touch nothing but the session."""
    for p in _parts(stmt):
        if p.kind in _SESSION_KINDS:
            if not p.is_read_only:
                return False
        elif not (p.kind in _TRANSACTION_CONTROL and p.kind is not Kind.BEGIN and not in_transaction):
            return False
    return True


def _sets_next_transaction(stmt: Statement) -> bool:
    return any(a.scope is Scope.NEXT_TRANSACTION for p in _parts(stmt) for a in p.assignments)


def _read_only_by_default(state: SessionState) -> bool:
    """Whether a plain BEGIN would open a read-only transaction."""
    nxt = state.next_transaction
    if nxt is not None and nxt.read_only is not None:
        return nxt.read_only
    return state.session_read_only


def _begins_read_write(stmt: Statement, state: SessionState) -> bool:
    if stmt.kind is not Kind.BEGIN and stmt.kind is not Kind.MULTI:
        return False
    return any(
        p.kind is Kind.BEGIN and not p.begin_read_only and (p.begin_read_write or not _read_only_by_default(state))
        for p in _parts(stmt)
    )


def _implicitly_commits(stmt: Statement) -> bool:
    parts = _parts(stmt)
    return bool(parts) and (parts[0].implicit_commit or parts[0].kind is Kind.BEGIN)


class _Picker:
    """Member choice over one topology snapshot (see the module docstring, point 3)."""

    __slots__ = ("topology", "load", "last", "spread", "local")

    def __init__(self, topology: Topology, load: Mapping[MemberId, int], last: MemberId | None, spread: int,
                 local: MemberId | None) -> None:
        self.topology = topology
        self.load = load
        self.last = last
        self.spread = spread
        self.local = local

    def least_loaded(self, candidates: tuple[MemberInfo, ...]) -> MemberId:
        if len(candidates) == 1:
            return candidates[0].member_id
        load = self.load
        loads = [load.get(m.member_id, 0) for m in candidates] if load else [0] * len(candidates)
        best = min(loads)
        last = self.last
        if last is not None and (load.get(last, 0) if load else 0) <= best + LOAD_SLACK:
            for m in candidates:
                if m.member_id == last:
                    return last
        tied = [m.member_id for m, n in zip(candidates, loads) if n == best]
        if len(tied) > 1:
            tied.sort()
        return tied[self.spread % len(tied)]

    def writer(self) -> tuple[MemberId, Pick] | None:
        writers = self.topology.writers()
        if not writers:
            return None
        if self.topology.mode is Mode.SINGLE_PRIMARY:
            return writers[0].member_id, Pick.PRIMARY
        return self.session_member(writers, Pick.LEAST_LOADED_WRITER)

    def session_member(self, candidates: tuple[MemberInfo, ...], fallback: Pick) -> tuple[MemberId, Pick]:
        """Multi-primary: the member the session already uses (the previous statement's), else
        the local one, else the least loaded. A session's statements stay on one member, so its
        writes never certify against its own earlier writes that the member has not applied yet,
        and it reads what it wrote (what one connection to a GR member gives)."""
        if self.last is not None and self.topology.member(self.last) in candidates:
            return self.last, Pick.LAST_MEMBER
        if self.local is not None and self.topology.member(self.local) in candidates:
            return self.local, Pick.LOCAL
        return self.least_loaded(candidates), fallback

    def reader(self) -> tuple[MemberId, Pick] | None:
        online = self.topology.online()
        if not online:
            return None
        if self.topology.mode is Mode.MULTI_PRIMARY:
            return self.session_member(online, Pick.LEAST_LOADED_MEMBER)
        secondaries = self.topology.online_secondaries()
        if secondaries:
            return self.least_loaded(secondaries), Pick.LEAST_LOADED_SECONDARY
        primaries = self.topology.writers()
        if primaries:
            return primaries[0].member_id, Pick.PRIMARY_NO_SECONDARY
        return None

    def no_member(self, rule: Rule) -> Decision:
        """The refusal when no member fits: 3783 if nothing is ONLINE, else 1290 (no writer, or
        an ambiguous primary)."""
        if self.topology.ambiguous_primary:
            return _ambiguous(rule, self.topology)
        if not self.topology.online():
            return _refused(rule, Pick.REFUSED_NOTHING_ONLINE, HoldMemberStatus.errno, HoldMemberStatus.sqlstate,
                            "No member of the group is ONLINE: grproxy cannot run the statement anywhere")
        return _refused(rule, Pick.REFUSED_NO_PRIMARY, ReadOnly.errno, ReadOnly.sqlstate,
                        f"{_SUPER_READ_ONLY} (no ONLINE primary in the group)")


def _refused(rule: Rule, pick: Pick, errno: int, sqlstate: str, message: str, *,
             lost: MemberId | None = None) -> Decision:
    return Decision(None, rule, pick, refusal=Refusal(errno, sqlstate, message), lost=lost)


def _ambiguous(rule: Rule, topology: Topology) -> Decision:
    ids = ", ".join(m.member_id for m in topology.primaries())
    return _refused(rule, Pick.REFUSED_AMBIGUOUS_PRIMARY, ReadOnly.errno, ReadOnly.sqlstate,
                    f"{_SUPER_READ_ONLY} (the primary is ambiguous: members {ids} are all PRIMARY in a "
                    "single-primary group; writes wait until one remains)")


def _lost(rule: Rule, member: MemberId, topology: Topology, what: str, *, connection_lost: bool = False) -> Decision:
    info = topology.member(member)
    if connection_lost:
        where = "was reached through a connection that is gone"
    else:
        where = "has left the group" if info is None else f"is {info.state.value}"
    return _refused(rule, Pick.REFUSED_MEMBER_LOST, BackendLost.errno, BackendLost.sqlstate,
                    f"Lost connection to MySQL server during query ({what} on member {member}, which {where}; "
                    "the session must start over)", lost=member)


def _not_writable(rule: Rule, member: MemberId, read_only_transaction: bool, why: str) -> Decision:
    if read_only_transaction:
        return _refused(rule, Pick.REFUSED_READ_ONLY_TRANSACTION, ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION,
                        _READ_ONLY_TRANSACTION_SQLSTATE, "Cannot execute statement in a READ ONLY transaction.")
    return _refused(rule, Pick.REFUSED_NOT_WRITABLE, ReadOnly.errno, ReadOnly.sqlstate,
                    f"{_SUPER_READ_ONLY} ({why} on member {member}, which cannot take writes)")


def route(
    stmt: Statement,
    state: SessionState,
    topology: Topology,
    *,
    local: MemberId | None = None,
    load: Mapping[MemberId, int] | None = None,
    spread: int = 0,
) -> Decision:
    """Decide where `stmt` runs for a session in `state` over `topology`.

    Args:
        stmt: the statement's classification (`replication.statements.classify`).
        state: the session's state before the statement.
        topology: the group snapshot to route over.
        local: the member beside this router (multi-primary writes prefer it), if any.
        load: outstanding statements per member (absent = 0); must be >= 0.
        spread: breaks ties between equally loaded members (e.g. the client connection id).
    Returns: a Decision (see its docstring); never None.
    Raises ValueError for a negative load.
    """
    load = load if load is not None else {}
    if load and min(load.values()) < 0:
        member_id = min(load, key=lambda m: load[m])
        raise ValueError(f"load of member {member_id} is {load[member_id]} < 0")
    picker = _Picker(topology, load, state.last_member, spread, local)
    if (state.transaction is None and state.pin is None and state.next_transaction is None and state.autocommit
            and _is_plain_read(stmt)):
        # The common case, decided without the general rules (same result: a property test
        # compares the two): a read that touches no session state, in a free session.
        chosen = picker.reader()
        if chosen is None:
            return picker.no_member(Rule.READ)
        return _read_decision(chosen[0], chosen[1])
    return _route_by_rules(stmt, state, topology, picker, local, load, spread)


def _route_by_rules(stmt: Statement, state: SessionState, topology: Topology, picker: _Picker,
                    local: MemberId | None, load: Mapping[MemberId, int], spread: int) -> Decision:
    """`route` without its plain-read shortcut: the rules of the module docstring, in order."""
    write = is_write(stmt)
    needs_writer = write or _begins_read_write(stmt, state)
    pins = state.pins_for(stmt)
    flags = _TransactionFlags(stmt, state)
    if needs_writer and topology.ambiguous_primary:
        return _ambiguous(_write_rule(stmt) if write else Rule.BEGIN, topology)

    txn = state.transaction
    if txn is not None:
        info = topology.member(txn.member)
        if info is None or not info.online:
            return _lost(Rule.IN_TRANSACTION, txn.member, topology, "the session's transaction ran")
        if needs_writer and not info.writable:
            if _implicitly_commits(stmt) and state.pin is None:
                # The read-only transaction ends here anyway: route the statement as if it were
                # over, and have the driver commit it on its member first.
                free = route(stmt, replace(state, transaction=None), topology, local=local, load=load, spread=spread)
                if free.target is None or free.target == txn.member:
                    return free
                return replace(free, finish_on=txn.member, ends_transaction=True)
            return _not_writable(Rule.IN_TRANSACTION, txn.member, txn.read_only, "the session's transaction is")
        return flags.decision(txn.member, Rule.IN_TRANSACTION, Pick.TRANSACTION_MEMBER, pins)

    pin = state.pin
    if pin is not None:
        what = f"the session's pinned state ({pin.describe()}) is"
        if pin.lost or not topology.is_online(pin.member):
            return _lost(Rule.PINNED, pin.member, topology, what, connection_lost=pin.lost)
        info = topology.member(pin.member)
        assert info is not None
        if needs_writer and not info.writable:
            return _not_writable(Rule.PINNED, pin.member, False, what)
        return flags.decision(pin.member, Rule.PINNED, Pick.PINNED_MEMBER, pins)

    nxt = state.next_transaction
    if nxt is not None:
        what = "the next transaction's characteristics are"
        info = topology.member(nxt.member)
        if info is None or not info.online:
            return _lost(Rule.NEXT_TRANSACTION_PENDING, nxt.member, topology, what)
        if needs_writer and not info.writable:
            return _not_writable(Rule.NEXT_TRANSACTION_PENDING, nxt.member, bool(nxt.read_only), what)
        return flags.decision(nxt.member, Rule.NEXT_TRANSACTION_PENDING, Pick.NEXT_TRANSACTION_MEMBER, pins)

    return _route_free(stmt, state, picker, flags, write, pins)


def _route_free(stmt: Statement, state: SessionState, picker: _Picker, flags: _TransactionFlags, write: bool,
                pins: frozenset[PinReason]) -> Decision:
    """Routing of a session with no transaction, pin or pending characteristics."""

    def to_writer(rule: Rule, *, fallback: bool) -> Decision:
        chosen = picker.writer() or (picker.reader() if fallback else None)
        if chosen is None:
            return picker.no_member(rule)
        return flags.decision(chosen[0], rule, chosen[1], pins)

    def to_reader(rule: Rule) -> Decision:
        chosen = picker.reader()
        if chosen is None:
            return picker.no_member(rule)
        return flags.decision(chosen[0], rule, chosen[1], pins)

    def to_last(rule: Rule) -> Decision:
        last = state.last_member
        if last is not None and picker.topology.is_online(last):
            return flags.decision(last, rule, Pick.LAST_MEMBER, pins)
        return to_reader(rule)

    if is_diagnostics(stmt) and not write:
        return to_last(Rule.DIAGNOSTICS)
    if _is_session_statement(stmt, False):
        if _sets_next_transaction(stmt):
            return to_writer(Rule.NEXT_TRANSACTION, fallback=True)
        if pins:
            return to_writer(Rule.PINS, fallback=True)
        if not state.autocommit:
            return to_writer(Rule.SESSION, fallback=True)
        return to_last(Rule.SESSION)
    if stmt.kind is Kind.BEGIN:
        if _begins_read_write(stmt, state):
            return to_writer(Rule.BEGIN, fallback=False)
        return to_reader(Rule.BEGIN_READ_ONLY)
    if not state.autocommit:
        return to_writer(Rule.IMPLICIT_TRANSACTION, fallback=not write)
    if write:
        return to_writer(_write_rule(stmt), fallback=False)
    if pins:
        return to_writer(Rule.PINS, fallback=True)
    if _begins_read_write(stmt, state):  # a read-only text that opens a read-write transaction
        return to_writer(Rule.BEGIN, fallback=False)
    return to_reader(Rule.READ)


def _is_plain_read(stmt: Statement) -> bool:
    """A SELECT that writes nothing, locks nothing and reads or sets no session state."""
    return (stmt.kind is Kind.SELECT and stmt.is_read_only and not stmt.session_functions
            and not stmt.assigns_user_variables and not stmt.uses_locking_functions and not stmt.temporary_table
            and not stmt.locking_read)


_READ_DECISIONS: dict[tuple[MemberId, Pick], Decision] = {}
_READ_DECISIONS_MAX = 1024  # (member, pick) pairs: a few per member, members come and go


def _read_decision(target: MemberId, pick: Pick) -> Decision:
    """Decisions are immutable: the plain-read ones are made once per (member, pick)."""
    d = _READ_DECISIONS.get((target, pick))
    if d is None:
        if len(_READ_DECISIONS) >= _READ_DECISIONS_MAX:
            _READ_DECISIONS.clear()
        d = _READ_DECISIONS[(target, pick)] = Decision(target, Rule.READ, pick)
    return d


def _write_rule(stmt: Statement) -> Rule:
    if stmt.kind is Kind.MULTI:
        return Rule.MULTI
    if stmt.locking_read:
        return Rule.LOCKING_READ
    if stmt.uses_locking_functions:
        return Rule.LOCKING_FUNCTION
    if stmt.kind is Kind.CALL:
        return Rule.CALL
    if stmt.kind is Kind.DDL:
        return Rule.DDL
    if stmt.kind is Kind.OTHER:
        return Rule.UNKNOWN
    return Rule.WRITE


class _TransactionFlags:
    """starts_transaction / ends_transaction of a statement for a session (Decision's contract)."""

    __slots__ = ("starts", "ends")

    def __init__(self, stmt: Statement, state: SessionState) -> None:
        if state.autocommit and not state.in_transaction and stmt.kind not in _FLAG_KINDS:
            self.starts = self.ends = False  # the common case: nothing to look at
            return
        parts = _parts(stmt)
        in_txn = state.in_transaction
        begins = any(p.kind is Kind.BEGIN or (p.kind in _ENDING_CONTROL and p.chain) for p in parts)
        implicit = (not in_txn and not state.autocommit and not _is_session_statement(stmt, in_txn)
                    and not is_diagnostics(stmt))
        self.starts = begins or implicit
        # Ends one that is open, or one this very text opens (BEGIN; …; COMMIT).
        self.ends = (in_txn or begins) and (
            any(p.kind in _ENDING_CONTROL for p in parts)
            or (in_txn and any(p.implicit_commit or p.kind is Kind.BEGIN for p in parts)))

    def decision(self, target: MemberId, rule: Rule, pick: Pick, pins: frozenset[PinReason]) -> Decision:
        return Decision(target, rule, pick, starts_transaction=self.starts, ends_transaction=self.ends, pins=pins)
