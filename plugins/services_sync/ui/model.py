"""What the sync status view shows, and the rules that decide it: no Airflow, no I/O.

The ledger's rows (``include/sql/services_sync/ui/status_intervals.sql``, the latest run of each
interval) and, when available, Airflow's run states become :class:`IntervalStatus` items
(:func:`build_intervals`), their sums (:func:`totals`) and the JSON answer
(:func:`report_json`). :mod:`services_sync.ui.queries` reads the rows, :mod:`services_sync.ui.page`
draws the page and :mod:`services_sync.ui.app` serves both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: The DAG whose ledger the view shows (``dags/services_requests_sync.py``).
DAG_ID = "services_requests_sync"
#: How many hourly intervals the view shows.
WINDOW = 48

# Interval statuses, and the CSS class (tone) each is shown with.
DELIVERED = "delivered"
NO_CHANGES = "no changes"
IN_PROGRESS = "in progress"
FAILED = "failed"
UNACKNOWLEDGED = "unacknowledged"
NOT_IN_LEDGER = "not in ledger"
NO_RUN = "no run"
TONES = {
    DELIVERED: "ok",
    NO_CHANGES: "ok",
    IN_PROGRESS: "info",
    FAILED: "bad",
    UNACKNOWLEDGED: "bad",
    NOT_IN_LEDGER: "warn",
    NO_RUN: "muted",
}
NEEDS_ATTENTION = {FAILED, UNACKNOWLEDGED, NOT_IN_LEDGER, NO_RUN}


@dataclass(frozen=True)
class RunInfo:
    """What Airflow's metadata database knows of a run: its state and its failed tasks."""

    run_id: str
    state: str | None
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    failed_tasks: tuple[str, ...] = ()
    queued_at: datetime | None = None


@dataclass(frozen=True)
class IntervalStatus:
    """One row of the view: a data interval and what its latest run did with it."""

    interval_start: datetime
    interval_end: datetime
    status: str
    run_id: str | None = None
    run_count: int = 0
    run_state: str | None = None
    rows_extracted: int = 0
    rows_delivered: int = 0
    rows_quarantined: int = 0
    rows_superseded: int = 0
    duplicates_avoided: int = 0
    batches: int = 0
    batches_acked: int = 0
    drained_batches: int = 0
    lanes: tuple[tuple[int, int, int], ...] = ()  # (lane, batches, acknowledged)
    last_acked_at: datetime | None = None
    last_error: str | None = None

    @property
    def lag(self) -> timedelta | None:
        """Delivery lag of the latest run: its last acknowledgment minus the interval end.

        A rerun (clear, backfill) is the latest run, so an hour resent a day later shows a
        day's lag: the lag of what the receiver last got, not of the first delivery.
        """
        if self.last_acked_at is None:
            return None
        return self.last_acked_at - self.interval_end

    @property
    def tone(self) -> str:
        """``ok``, ``info``, ``warn``, ``bad`` or ``muted``: how the status is shown."""
        return TONES.get(self.status, "warn")


@dataclass(frozen=True)
class StatusReport:
    """Everything the page and the JSON show; ``problem`` says why there are no intervals."""

    dag_id: str
    generated_at: datetime
    intervals: tuple[IntervalStatus, ...] = ()
    state_conn_id: str | None = None
    state_schema: str | None = None
    problem: str | None = None
    #: False when the ledger could not be read (the answer is then a 503, not a 500).
    available: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# Status rules
# --------------------------------------------------------------------------------------------


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` in UTC; a naive timestamp is read as UTC (databases without a zone)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def failed_task_label(task_id: str, map_index: int, try_number: int) -> str:
    """``post_batches lane 3 (try 21)``: a failed task as the view names it (lanes from 1)."""
    name = task_id + (f" lane {map_index + 1}" if map_index >= 0 else "")
    return f"{name} (try {try_number})"


def _batch_list(numbers: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    more = f" and {len(numbers) - limit} more" if len(numbers) > limit else ""
    return f"batch {shown}{more}" if len(numbers) == 1 else f"batches {shown}{more}"


def _from_ledger(row: Mapping[str, Any], run: RunInfo | None) -> IntervalStatus:
    """The status of an interval from its latest run's ledger row (and Airflow's run state)."""
    unacked = list(row.get("unacked_batches") or [])
    miscounted = list(row.get("miscounted_batches") or [])
    problems = []
    if unacked:
        problems.append(
            f"{len(unacked)} of {row['batches']} batches not acknowledged ({_batch_list(unacked)})"
        )
    if miscounted:
        problems.append(f"acknowledged count differs from rows sent ({_batch_list(miscounted)})")
    # A run that failed past its retry budget whose batches a later run's lanes then sent
    # (they drain the outbox first): the hour is delivered, by another run.
    drained = int(row.get("drained_batches") or 0)
    drained_whole = (
        drained > 0
        and int(row["batches_acked"]) == int(row["batches"])
        and not (unacked or miscounted)
    )
    complete = (bool(row["recorded"]) or drained_whole) and not unacked and not miscounted
    state = run.state if run else None
    if drained_whole:
        problems.append(f"{drained} batch(es) delivered by a later run after this one failed")
    elif run and run.failed_tasks:
        problems.append("failed task: " + ", ".join(run.failed_tasks))
    if state == "failed" and not drained_whole:
        status = FAILED
    elif state in {"queued", "running"} and not complete:
        status = IN_PROGRESS
    elif complete:
        status = DELIVERED if row["batches"] or row["rows_extracted"] else NO_CHANGES
    else:
        status = UNACKNOWLEDGED
        if not problems:
            problems.append("delivery not recorded: record_delivery has not succeeded")
    return IntervalStatus(
        interval_start=as_utc(row["interval_start"]),
        interval_end=as_utc(row["interval_end"]),
        status=status,
        run_id=row["run_id"],
        run_count=int(row["run_count"]),
        run_state=state,
        rows_extracted=int(row["rows_extracted"]),
        rows_delivered=int(row["rows_delivered"]),
        rows_quarantined=int(row["rows_quarantined"]),
        rows_superseded=int(row["rows_superseded"]),
        duplicates_avoided=int(row["duplicate_batches"]),
        batches=int(row["batches"]),
        batches_acked=int(row["batches_acked"]),
        drained_batches=drained,
        lanes=tuple(
            (int(x["lane"]), int(x["batches"]), int(x["acked"])) for x in row.get("lanes") or ()
        ),
        last_acked_at=as_utc(row["last_acked_at"]),
        last_error="; ".join(problems) if problems and status != IN_PROGRESS else None,
    )


def _from_airflow(run: RunInfo, run_count: int) -> IntervalStatus:
    """The status of an interval whose runs never reached the ledger (e.g. stopped at the gate)."""
    if run.state == "failed":
        status = FAILED
        error = "failed before any batch was built" + (
            f"; failed task: {', '.join(run.failed_tasks)}" if run.failed_tasks else ""
        )
    elif run.state in {"queued", "running"}:
        status, error = IN_PROGRESS, None
    else:
        status = NOT_IN_LEDGER
        error = f"run {run.state or 'in an unknown state'} but nothing in the ledger"
    assert run.interval_start is not None
    assert run.interval_end is not None
    return IntervalStatus(
        interval_start=run.interval_start,
        interval_end=run.interval_end,
        status=status,
        run_id=run.run_id,
        run_count=run_count,
        run_state=run.state,
        last_error=error,
    )


def build_intervals(
    rows: Iterable[Mapping[str, Any]],
    runs: Mapping[str, RunInfo] | None = None,
    window: int = WINDOW,
) -> list[IntervalStatus]:
    """The view's intervals, newest first: at most ``window`` consecutive hours.

    ``rows`` are ``status_intervals.sql`` rows (the latest run of each interval), ``runs``
    Airflow's runs of the DAG by run id (optional: the view works from the ledger alone). An
    hour between the oldest and the newest known interval with neither is a ``no run`` gap;
    one with only an Airflow run (failed or still waiting at the gate) shows that run.
    """
    runs = runs or {}
    by_start: dict[datetime, IntervalStatus] = {}
    for row in rows:
        item = _from_ledger(row, runs.get(row["run_id"]))
        by_start[item.interval_start] = item
    airflow_only: dict[datetime, list[RunInfo]] = {}
    for run in runs.values():
        start, end = as_utc(run.interval_start), as_utc(run.interval_end)
        if start is None or end is None or start in by_start:
            continue
        run = RunInfo(run.run_id, run.state, start, end, run.failed_tasks, as_utc(run.queued_at))
        airflow_only.setdefault(start, []).append(run)
    for start, candidates in airflow_only.items():
        latest = max(candidates, key=lambda r: r.queued_at or datetime.min.replace(tzinfo=UTC))
        by_start[start] = _from_airflow(latest, len(candidates))
    if not by_start:
        return []
    newest = by_start[max(by_start)]
    oldest_start = min(by_start)
    step = newest.interval_end - newest.interval_start
    if step <= timedelta(0):
        return sorted(by_start.values(), key=lambda i: i.interval_start, reverse=True)[:window]
    result = []
    start = newest.interval_start
    while len(result) < window and start >= oldest_start:
        result.append(by_start.get(start) or IntervalStatus(start, start + step, NO_RUN))
        start -= step
    return result


def totals(intervals: Sequence[IntervalStatus]) -> dict[str, Any]:
    """Sums over the shown intervals, and the worst and median delivery lag."""
    lags = sorted(i.lag for i in intervals if i.lag is not None)
    return {
        "intervals": len(intervals),
        "rows_extracted": sum(i.rows_extracted for i in intervals),
        "rows_delivered": sum(i.rows_delivered for i in intervals),
        "rows_quarantined": sum(i.rows_quarantined for i in intervals),
        "duplicates_avoided": sum(i.duplicates_avoided for i in intervals),
        "needs_attention": sum(1 for i in intervals if i.status in NEEDS_ATTENTION),
        "median_lag": lags[len(lags) // 2] if lags else None,
        "max_lag": lags[-1] if lags else None,
    }


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """ISO 8601, or None."""
    return value.isoformat() if value is not None else None


def _seconds(value: timedelta | None) -> float | None:
    return round(value.total_seconds(), 3) if value is not None else None


def interval_json(item: IntervalStatus) -> dict[str, Any]:
    """One interval as JSON (timestamps ISO 8601 UTC, lag in seconds)."""
    return {
        "interval_start": iso(item.interval_start),
        "interval_end": iso(item.interval_end),
        "status": item.status,
        "run_id": item.run_id,
        "run_count": item.run_count,
        "run_state": item.run_state,
        "rows_extracted": item.rows_extracted,
        "rows_delivered": item.rows_delivered,
        "rows_quarantined": item.rows_quarantined,
        "rows_superseded": item.rows_superseded,
        "duplicates_avoided": item.duplicates_avoided,
        "batches": item.batches,
        "batches_acked": item.batches_acked,
        "drained_batches": item.drained_batches,
        "lanes": [{"lane": lane, "batches": n, "acked": k} for lane, n, k in item.lanes],
        "last_acked_at": iso(item.last_acked_at),
        "delivery_lag_s": _seconds(item.lag),
        "last_error": item.last_error,
    }


def report_json(report: StatusReport) -> dict[str, Any]:
    """The JSON answer of ``/services-sync/api/intervals``."""
    sums = totals(report.intervals)
    median_lag, max_lag = sums.pop("median_lag"), sums.pop("max_lag")
    return {
        "dag_id": report.dag_id,
        "generated_at": iso(report.generated_at),
        "state_conn_id": report.state_conn_id,
        "state_schema": report.state_schema,
        "problem": report.problem,
        "notes": list(report.notes),
        "totals": {**sums, "median_lag_s": _seconds(median_lag), "max_lag_s": _seconds(max_lag)},
        "intervals": [interval_json(i) for i in report.intervals],
    }
