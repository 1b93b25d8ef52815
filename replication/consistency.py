"""Group Replication's consistency levels (DESIGN §6), as values and their rules.

| level | before a transaction starts | after a read-write COMMIT |
|---|---|---|
| EVENTUAL | nothing | returns after the local commit |
| BEFORE_ON_PRIMARY_FAILOVER | a newly elected primary holds it until the old primary's backlog is applied | — |
| BEFORE | + a sync point through the group, then wait until this member applied it | — |
| AFTER | (failover hold) | waits until every ONLINE member applied it |
| BEFORE_AND_AFTER | BEFORE | AFTER |

Every level but EVENTUAL includes the failover hold, as in GR. Waits are bounded by the
session's wait_timeout (GR's rule) and fail with 3781; a member that is not ONLINE answers 3783.
"""

from __future__ import annotations

import enum

VARIABLE = "group_replication_consistency"


class Level(enum.IntEnum):
    EVENTUAL = 0
    BEFORE_ON_PRIMARY_FAILOVER = 1
    BEFORE = 2
    AFTER = 3
    BEFORE_AND_AFTER = 4

    @property
    def waits_before(self) -> bool:
        return self in (Level.BEFORE, Level.BEFORE_AND_AFTER)

    @property
    def waits_after(self) -> bool:
        return self in (Level.AFTER, Level.BEFORE_AND_AFTER)

    @property
    def holds_on_failover(self) -> bool:
        return self is not Level.EVENTUAL


class InvalidLevel(ValueError):
    pass


def parse_level(value: object) -> Level:
    """A level from SET's literal: a name (any case) or its number. Raises InvalidLevel."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        try:
            return Level(value)
        except ValueError:
            raise InvalidLevel(f"Variable '{VARIABLE}' can't be set to the value of '{value}'") from None
    if isinstance(value, str):
        try:
            return Level[value.strip().upper()]
        except KeyError:
            raise InvalidLevel(f"Variable '{VARIABLE}' can't be set to the value of '{value}'") from None
    raise InvalidLevel(f"Variable '{VARIABLE}' can't be set to the value of '{value}'")
