"""Reads from the source table: one planned batch at a time, so memory is bounded by batch size."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from services_sync.payload import BatchBounds, Interval
from services_sync.sql import load_sql


def fetch_batch(conn: psycopg.Connection, interval: Interval, bounds: BatchBounds) -> list[tuple]:
    """Rows of one keyset batch, in sort-key order (see ``fetch_batch.sql``)."""
    return read_batch(conn, interval, bounds)[0]


def read_batch(
    conn: psycopg.Connection, interval: Interval, bounds: BatchBounds
) -> tuple[list[tuple], str]:
    """Rows of one keyset batch and the snapshot they were read in (``pg_snapshot`` as text).

    Both come from one REPEATABLE READ transaction, so the reconciliation can later tell which
    rows of the batch's key range this read could not see.
    """
    params: dict[str, Any] = {
        "window_start": interval.start,
        "window_end": interval.end,
        "lower_lmd": bounds.lower[0],
        "lower_rid": bounds.lower[1],
        "lower_sid": bounds.lower[2],
        "upper_lmd": bounds.upper[0],
        "upper_rid": bounds.upper[1],
        "upper_sid": bounds.upper[2],
    }
    conn.commit()  # the isolation level can only change between transactions
    previous = conn.isolation_level
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_current_snapshot()::text")
            snapshot = cur.fetchone()[0]
            cur.execute(load_sql("fetch_batch.sql"), params)
            rows = cur.fetchall()
    finally:
        conn.isolation_level = previous
    return rows, snapshot


def current_versions(
    conn: psycopg.Connection, start: datetime, end: datetime
) -> list[tuple[Any, Any, Any]]:
    """``(service_id, request_id, last_modified_date)`` of the rows now in ``[start, end)``."""
    with conn.cursor() as cur:
        cur.execute(load_sql("current_versions.sql"), {"window_start": start, "window_end": end})
        return cur.fetchall()


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
