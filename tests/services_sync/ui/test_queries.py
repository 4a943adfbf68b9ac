"""The status view's SQL files: present, and their bind parameters what the code passes."""

from __future__ import annotations

import re

from services_sync.core.sql import load_sql
from services_sync.ui import queries


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"%\((\w+)\)s", text))


def test_the_interval_query_takes_the_dag_and_the_window():
    text = queries.status_intervals_sql("services_sync").as_string(None)
    assert _placeholders(text) == {"dag_id", "window_hours"}
    assert '"services_sync".delivery_ledger' in text


def test_the_session_statements_take_only_the_timeout():
    assert _placeholders(load_sql("ui/begin_read_only.sql")) == set()
    assert _placeholders(load_sql("ui/limit_session.sql")) == {"statement_timeout_ms"}
