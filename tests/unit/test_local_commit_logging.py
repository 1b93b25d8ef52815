"""local_commit's prepare-time check: a transaction whose session logged it without rows
(sql_log_bin=0) or as statements is refused (3098) rather than committed on its member only.
(The server refuses to change either setting inside a transaction and the member session
refuses the SET itself; this is the net under both.)"""

from __future__ import annotations

import pytest

from replication.local_commit import _check_logging
from replication.protocol.errors import BeforeDmlValidation


@pytest.mark.parametrize("row", [(1, "ROW"), (b"1", b"ROW"), ("ON", "row")])
def test_rows_logged_in_full_pass(row: tuple[object, object]) -> None:
    _check_logging(row)


@pytest.mark.parametrize(("row", "says"), [
    ((0, "ROW"), "sql_log_bin is 0"),
    ((b"0", b"ROW"), "sql_log_bin is 0"),
    ((1, "STATEMENT"), "this session's is STATEMENT"),
    ((1, b"MIXED"), "this session's is MIXED"),
    (None, "could not be read"),
    ((1,), "could not be read"),
])
def test_a_transaction_the_capture_cannot_see_whole_is_refused(row: object, says: str) -> None:
    with pytest.raises(BeforeDmlValidation) as info:
        _check_logging(row)
    assert info.value.errno == 3098
    assert says in str(info.value)
