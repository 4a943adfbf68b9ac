"""Waiting for a stack and looking at it: polling with a deadline, health, metadata queries."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


class StackError(AssertionError):
    """A stack did not start, answer or stop as it should; the message says what.

    An AssertionError, so that the tests report it as a failed check.
    """


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds.

    Args:
        predicate: Called repeatedly; an exception it raises propagates (fail fast).
        timeout: Upper bound in seconds.
        what: What is awaited, for the failure message.
        interval: Pause between polls.
        diagnostics: Called on timeout; its text is appended to the failure message.

    Returns:
        The first truthy value.

    Raises:
        StackError: On timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{diagnostics()}" if diagnostics else ""
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


#: What ``airflow standalone`` and a scheduler stack need healthy before they run anything.
HEALTHY_PARTS = ("metadatabase", "scheduler", "dag_processor")


def health(api_url: str) -> dict[str, Any] | None:
    """``/api/v2/monitor/health`` of the api-server, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{api_url}/api/v2/monitor/health", timeout=5) as response:  # noqa: S310
            return json.load(response)
    except (OSError, ValueError):
        return None


def is_healthy(status: dict[str, Any] | None, parts: Iterable[str] = HEALTHY_PARTS) -> bool:
    """Whether every one of ``parts`` of a :func:`health` answer is healthy."""
    return bool(status) and all(
        (status.get(part) or {}).get("status") == "healthy" for part in parts
    )


def rows(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of a query on a PostgreSQL database (a fresh connection each time)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        return conn.execute(sql, params).fetchall()
