"""Writes made on a member's backend around grproxy, found from MariaDB's GTIDs (pure).

GR refuses a member whose server executed transactions the group does not have (errant
GTIDs). grproxy's equivalent: every connection a member opens to its backend — its clients'
sessions, the applier, its bookkeeping — runs with `gtid_domain_id = GRPROXY_GTID_DOMAIN`, and
clients may not change it. A transaction the backend logs in any other domain was written
around grproxy: directly on the backend, by an event, by a replication channel into it. The
member records the backend's GTID state outside its domain when it first takes the backend (and
after every clone, which replaces the data); at every start and rejoin it compares: a
(domain, server) whose sequence number grew, or a new one, is a write the group never saw,
and the member refuses to join until the backend is rebuilt from the group (a clone). A state
that went backwards (RESET MASTER, a binlog removed by hand) cannot be judged: the member takes
it as the new record and says so.

What the running member's binlog reader finds (local_commit's stray writes, which may also be
in grproxy's domain: a session's write that the classifier took for a read) is kept as a
`diverged` mark with the same effect.

MySQL backends have no GTID domains: there only the running reader and the mark apply.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The MariaDB GTID domain of everything a member writes on its backend (a 32-bit number that
#: other replication setups are unlikely to use).
GRPROXY_GTID_DOMAIN = 7707

#: Prefix of the grproxy.meta rows that hold the recorded state: `outside_gtid:<domain>-<server>`
#: = last sequence number.
META_PREFIX = "outside_gtid:"

#: The grproxy.meta row saying a state was recorded (an empty state has no other row).
META_RECORDED = "outside_gtids_recorded"

#: What an operator deletes to have the current state taken as the record at the next start.
META_LIKE = "outside_gtid%"

#: The grproxy.meta row that marks a backend on which the running member saw a stray write.
DIVERGED_META = "diverged"

GtidState = dict[tuple[int, int], int]


def session_sql() -> str:
    """What a member runs on each new backend connection (and after a session reset)."""
    return f"SET SESSION gtid_domain_id = {GRPROXY_GTID_DOMAIN}"


def parse_state(text: str) -> GtidState:
    """MariaDB's `@@gtid_binlog_state` ('0-1-55,7707-1-9') → {(domain, server): seq}.
    Raises ValueError on anything else."""
    out: GtidState = {}
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        domain, server, seq = (int(x) for x in part.split("-"))
        if min(domain, server, seq) < 0:
            raise ValueError(f"negative GTID part in {part!r}")
        out[(domain, server)] = max(seq, out.get((domain, server), 0))
    return out


def outside(state: Mapping[tuple[int, int], int]) -> GtidState:
    """The part of a backend's state that grproxy did not write."""
    return {k: v for k, v in state.items() if k[0] != GRPROXY_GTID_DOMAIN}


def meta_rows(state: Mapping[tuple[int, int], int]) -> dict[str, str]:
    return {f"{META_PREFIX}{d}-{s}": str(seq) for (d, s), seq in state.items()}


def from_meta_rows(rows: Mapping[str, str]) -> GtidState:
    """The inverse of meta_rows (rows not under META_PREFIX are ignored). Raises ValueError."""
    out: GtidState = {}
    for name, value in rows.items():
        if name.startswith(META_PREFIX):
            d, s = name[len(META_PREFIX):].split("-")
            out[(int(d), int(s))] = int(value)
    return out


def written_since(recorded: Mapping[tuple[int, int], int], current: Mapping[tuple[int, int], int]) -> list[str]:
    """The transactions in `current` that `recorded` lacks, as MariaDB GTID ranges
    ('0-1-56..58'), in order; [] when none."""
    out = []
    for key in sorted(current):
        before, now = recorded.get(key, 0), current[key]
        if now > before:
            d, s = key
            out.append(f"{d}-{s}-{before + 1}" + (f"..{now}" if now > before + 1 else ""))
    return out


def went_back(recorded: Mapping[tuple[int, int], int], current: Mapping[tuple[int, int], int]) -> bool:
    """Whether the backend's binlog lost history the record has (reset or removed)."""
    return any(current.get(key, 0) < seq for key, seq in recorded.items())
