"""`queue_assets.db` helpers on the real test database."""

from __future__ import annotations

import pytest

from queue_assets.db import one_row


def test_one_row_returns_the_row_a_statement_returns(conn):
    assert one_row(conn.execute("SELECT 1, 'a'"), "a constant") == (1, "a")


def test_one_row_raises_naming_the_statement_when_there_is_no_row(conn):
    with pytest.raises(RuntimeError, match="the database returned no row for the empty select"):
        one_row(conn.execute("SELECT 1 WHERE false"), "the empty select")
