"""Which chaos fault scenarios a run collects: all of them with GRPROXY_CHAOS_FAULTS=1 (`make
chaos`), else only those marked `chaos_short` (the short version inside `make test`). The others
are deselected — reported as deselected, never as skipped."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("GRPROXY_CHAOS_FAULTS") == "1":
        return
    keep, drop = [], []
    for item in items:
        long_run = item.get_closest_marker("chaos_faults") is not None and item.get_closest_marker("chaos_short") is None
        (drop if long_run else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
