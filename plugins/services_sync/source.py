"""Reads from the source table: one planned batch at a time, so memory is bounded by batch size."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg

from services_sync.payload import BatchBounds, Interval
from services_sync.sql import load_sql


def read_planned_batches(
    conn: psycopg.Connection, interval: Interval, plan: Sequence[BatchBounds]
) -> Iterator[tuple[BatchBounds, list[tuple], str]]:
    """Each planned batch's rows, all read in one REPEATABLE READ snapshot, one batch at a time.

    Yields ``(batch, rows, snapshot)``: memory holds one batch. The snapshot (``pg_snapshot`` as
    text) lets the reconciliation tell which rows of the interval this read could not see.
    """
    conn.commit()  # the isolation level can only change between transactions
    previous = conn.isolation_level
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_current_snapshot()::text")
            snapshot = cur.fetchone()[0]
            fetch = load_sql("fetch_batch.sql")
            for batch in plan:
                cur.execute(fetch, _bounds(interval, batch.lower, batch.upper))
                yield batch, cur.fetchall(), snapshot
    finally:
        if not conn.broken:  # a lost connection (a source restart) has nothing to restore
            conn.isolation_level = previous


def _bounds(interval: Interval, lower: Sequence[str], upper: Sequence[str]) -> dict[str, Any]:
    return {
        "window_start": interval.start,
        "window_end": interval.end,
        "lower_lmd": lower[0],
        "lower_rid": lower[1],
        "lower_sid": lower[2],
        "upper_lmd": upper[0],
        "upper_rid": upper[1],
        "upper_sid": upper[2],
    }


def current_versions(
    conn: psycopg.Connection, start: datetime, end: datetime
) -> list[tuple[Any, Any, Any]]:
    """``(service_id, request_id, last_modified_date)`` of the rows now in ``[start, end)``."""
    with conn.cursor() as cur:
        cur.execute(load_sql("current_versions.sql"), {"window_start": start, "window_end": end})
        return cur.fetchall()


def newer_versions(
    conn: psycopg.Connection, records: Sequence[dict[str, Any]]
) -> set[tuple[str, str]]:
    """``(service_id, request_id)`` of the records whose row now has a newer version.

    ``records`` are contract records (ids as sent, ``last_modified_date`` as ``...Z``).
    """
    if not records:
        return set()
    stamps = [r["last_modified_date"] for r in records]
    with conn.cursor() as cur:
        cur.execute(
            load_sql("newer_versions.sql"),
            {
                "service_ids": [r["service_id"] for r in records],
                "request_ids": [r["request_id"] for r in records],
                "stamps": stamps,
                "since": min(stamps),
            },
        )
        return {(sid, rid) for sid, rid in cur.fetchall()}


def find_late_rows(
    conn: psycopg.Connection,
    interval: Interval,
    batches: list[dict[str, Any]],
    limit: int = 20,
) -> tuple[int, list[dict[str, Any]]]:
    """Rows now in the interval that no batch's read could see (see ``find_late_rows.sql``).

    With no batch at all (an empty interval), every row now in the interval is late.
    """
    with conn.cursor() as cur:
        if not batches:
            cur.execute(
                load_sql("current_versions.sql"),
                {"window_start": interval.start, "window_end": interval.end},
            )
            rows = cur.fetchall()
            sample = [
                {"service_id": r[0], "request_id": r[1], "last_modified_date": r[2].isoformat()}
                for r in rows[:limit]
            ]
            return len(rows), sample
        cur.execute(
            load_sql("find_late_rows.sql"),
            {
                "window_start": interval.start,
                "window_end": interval.end,
                "lower_lmd": [b["lower_bound"][0] for b in batches],
                "lower_rid": [b["lower_bound"][1] for b in batches],
                "lower_sid": [b["lower_bound"][2] for b in batches],
                "upper_lmd": [b["upper_bound"][0] for b in batches],
                "upper_rid": [b["upper_bound"][1] for b in batches],
                "upper_sid": [b["upper_bound"][2] for b in batches],
                "snapshots": [b["read_snapshot"] for b in batches],
                "limit": limit,
            },
        )
        late_rows, sample = cur.fetchone()
        return int(late_rows), list(sample)


def check_source_access(conn: psycopg.Connection) -> None:
    """Fail if the table or a column is missing or the role may not read it."""
    with conn.cursor() as cur:
        cur.execute(load_sql("check_source_access.sql"))
