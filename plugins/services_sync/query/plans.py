"""Query mode's interval plans: the first plan of an interval is kept, and its reruns reuse it.

A plan cuts an interval into batches by key range (``plan_batches.sql``). Keeping the first one
means a rerun rebuilds the same batches: those whose rows did not change keep their bodies and
``Idempotency-Key``s, so the receiver sees duplicates, not new batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from services_sync.core.db import state_sql
from services_sync.core.payload import BatchBounds, Interval


def keep_plan(
    conn: psycopg.Connection,
    schema: str,
    *,
    dag_id: str,
    run_id: str,
    interval: Interval,
    rows: Sequence[Sequence[Any]],
) -> tuple[list[BatchBounds], bool]:
    """The interval's plan: the stored one if it has one, else ``rows`` (``plan_batches.sql``).

    Returns:
        The plan, and whether it was reused (True) or stored now (False). The caller commits.
    """
    key = {"dag_id": dag_id, "interval_start": interval.start}
    with conn.cursor() as cur:
        cur.execute(state_sql("lock_interval_plan.sql", schema), key)
        cur.execute(state_sql("interval_plan.sql", schema), key)
        stored = cur.fetchall()
        if stored:
            return _bounds(stored), True
        plan = [BatchBounds.from_plan_row(row) for row in rows]
        cur.executemany(
            state_sql("store_interval_plan.sql", schema),
            [
                {
                    **key,
                    "interval_end": interval.end,
                    "batch_index": b.index,
                    "lower_bound": list(b.lower),
                    "upper_bound": list(b.upper),
                    "planned_rows": b.planned_rows,
                    "run_id": run_id,
                }
                for b in plan
            ],
        )
    return plan, False


def stored_plan(
    conn: psycopg.Connection, schema: str, *, dag_id: str, interval: Interval
) -> list[BatchBounds]:
    """The plan kept for an interval (empty: no changes when it was planned)."""
    with conn.cursor() as cur:
        cur.execute(
            state_sql("interval_plan.sql", schema),
            {"dag_id": dag_id, "interval_start": interval.start},
        )
        return _bounds(cur.fetchall())


def _bounds(stored: Sequence[Sequence[Any]]) -> list[BatchBounds]:
    total = sum(row[3] for row in stored)
    return [
        BatchBounds(index, len(stored), tuple(lower), tuple(upper), planned, total)
        for index, lower, upper, planned, _by in stored
    ]
