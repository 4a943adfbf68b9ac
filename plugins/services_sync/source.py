"""Reads from the source table: one planned batch at a time, so memory is bounded by batch size."""

from __future__ import annotations

from typing import Any

import psycopg

from services_sync.payload import BatchBounds, Interval
from services_sync.sql import load_sql


def fetch_batch(conn: psycopg.Connection, interval: Interval, bounds: BatchBounds) -> list[tuple]:
    """Rows of one keyset batch, in sort-key order (see ``fetch_batch.sql``)."""
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
    with conn.cursor() as cur:
        cur.execute(load_sql("fetch_batch.sql"), params)
        return cur.fetchall()


def check_source_access(conn: psycopg.Connection) -> None:
    """Fail if the table or a column is missing or the role may not read it."""
    with conn.cursor() as cur:
        cur.execute(load_sql("check_source_access.sql"))
