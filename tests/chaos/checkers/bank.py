"""Bank: transfers move money between accounts inside transactions, so every read of all
accounts must sum to the initial total and (transfers refuse to overdraw) show no negative
balance.

History shape: ``f="read"`` operations whose ``ok`` value is ``{account: balance}`` (JSON keys
are strings; accounts are compared as strings). Transfers (``f="transfer"``) are not examined:
their effects are judged through the reads. A read that misses an account or shows one that
does not exist is reported too (a read that saw a partial state is as wrong as a bad sum).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..history import Op, complete
from .result import Anomaly, CheckResult, result


def check_bank(ops: Sequence[Op], *, total: int, accounts: Iterable[object]) -> CheckResult:
    """Check every ok read against ``total`` and the account set.

    Kinds: ``wrong-total`` (sum differs), ``negative-balance``, ``wrong-accounts``.
    """
    expected = {str(a) for a in accounts}
    found: list[Anomaly] = []
    reads = 0
    for c in complete(ops):
        if c.f != "read" or c.type != "ok":
            continue
        reads += 1
        balances = {str(k): v for k, v in (c.value or {}).items()}
        i = c.invoke.index
        if set(balances) != expected:
            found.append(Anomaly("wrong-accounts", (i,), f"read saw accounts {sorted(balances)}",
                                 {"missing": sorted(expected - set(balances)),
                                  "extra": sorted(set(balances) - expected)}))
        s = sum(int(v) for v in balances.values() if v is not None)
        if s != total:
            found.append(Anomaly("wrong-total", (i,), f"read sums to {s}, not {total}", {"balances": balances}))
        negative = {k: v for k, v in balances.items() if v is not None and int(v) < 0}
        if negative:
            found.append(Anomaly("negative-balance", (i,), f"negative balances {negative}", {"balances": balances}))
    return result("bank", found, stats={"reads": reads, "total": total})
