"""Distributed recovery (DESIGN §8): a joiner gets the group's state at its join view and the
transactions its backend lacks from a donor — from the donor's transaction cache, or by a clone
of the donor's data when the cache does not reach back — applies what the group delivered
meanwhile, and only then announces ONLINE.

* `phases`: the joiner's phases and their one transition table;
* `joiner`: the joiner driving those phases (donor choice, bounded donor calls, progress);
* `donor`: what a member serves to joiners on its member port (RECOVERY / CLONE commands);
* `cache`: the donor's transaction cache (message_cache_size);
* `clone`: consistent-snapshot clone, both sides.
"""

from .cache import CACHE_DDL, CACHE_DDL_PENDING, CACHE_DDL_SKIPPED, CACHE_TXN, TransactionCache, ddl_blob, ddl_kind
from .donor import Donor, pack_recovery_state, unpack_recovery_state
from .joiner import Joiner, JoinerRefused
from .phases import Phase

__all__ = ["CACHE_DDL", "CACHE_DDL_PENDING", "CACHE_DDL_SKIPPED", "CACHE_TXN", "Donor", "Joiner", "JoinerRefused", "Phase", "TransactionCache", "ddl_blob", "ddl_kind",
           "pack_recovery_state", "unpack_recovery_state"]
