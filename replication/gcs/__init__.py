"""Group communication: membership, views, total-order broadcast (knows nothing of SQL)."""
