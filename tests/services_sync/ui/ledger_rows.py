"""Rows and reports for the status view's unit tests: what ``status_intervals.sql`` returns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services_sync.ui.model import DAG_ID, StatusReport

H = datetime(2025, 5, 14, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)


def row(start: datetime, **values):
    """A ``status_intervals.sql`` row: a delivered interval unless told otherwise."""
    base = {
        "interval_start": start,
        "interval_end": start + HOUR,
        "run_id": f"scheduled__{start.isoformat()}",
        "run_count": 1,
        "recorded": True,
        "finished_at": start + HOUR + timedelta(minutes=3),
        "batches": 2,
        "batches_acked": 2,
        "unacked_batches": [],
        "miscounted_batches": [],
        "duplicate_batches": 0,
        "rows_extracted": 120,
        "rows_delivered": 118,
        "rows_quarantined": 2,
        "rows_superseded": 0,
        "last_acked_at": start + HOUR + timedelta(minutes=2, seconds=30),
        "max_attempts": 1,
        "drained_batches": 0,
        "lanes": [{"lane": 1, "batches": 1, "acked": 1}, {"lane": 2, "batches": 1, "acked": 1}],
    }
    return {**base, **values}


def unacked(start: datetime, **values):
    """An interval whose run built three batches and has no acknowledgment."""
    defaults = {
        "recorded": False,
        "finished_at": None,
        "batches": 3,
        "batches_acked": 0,
        "unacked_batches": [1, 2, 3],
        "rows_delivered": 0,
        "last_acked_at": None,
    }
    return row(start, **{**defaults, **values})


def report(intervals, **values) -> StatusReport:
    return StatusReport(
        dag_id=DAG_ID,
        generated_at=H + 5 * HOUR,
        intervals=tuple(intervals),
        state_conn_id="services_source_db",
        state_schema="services_sync",
        **values,
    )
