"""The sync status view: per hour, what was extracted, delivered and quarantined, and how late.

Read by the Airflow UI plugin ``plugins/services_sync_status.py`` (the "Sync status" entry of
the nav) and served by the API server under ``/services-sync``: an HTML page with a table and a
bar chart of the last 48 intervals, and the same data as JSON at ``/services-sync/api/intervals``.

Layers, so that most of it is testable without Airflow:

* :func:`build_intervals`, :func:`totals`, :func:`report_json`, :func:`render_page` are pure:
  they turn the ledger's rows (``status_intervals.sql``) and, when available, Airflow's run
  states into the view;
* :func:`fetch_interval_rows` runs the read-only ledger query on a psycopg connection;
* :func:`open_read_only`, :func:`airflow_runs` and :func:`load_report` reach Airflow (connections,
  metadata database) and import it only when called, since every Airflow component, task
  runners included, imports the plugin module;
* :func:`create_app` builds the FastAPI app (FastAPI too is imported only when it is built).

The page is self-contained (inline CSS and SVG, no script, no external resource): the API server
may have no internet access, and its Content-Security-Policy forbids anything else.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import psycopg
from psycopg.rows import dict_row

from services_sync.core.config import ConfigError, load_settings
from services_sync.core.db import state_sql

log = logging.getLogger(__name__)

#: The DAG whose ledger the view shows (``dags/services_requests_sync.py``).
DAG_ID = "services_requests_sync"
#: How many hourly intervals the view shows.
WINDOW = 48
#: Where the plugin mounts the app in the API server, and the nav entry's route in the UI.
URL_PREFIX = "/services-sync"

#: Every DAG with a view of its own: ``dag_id -> (url prefix, nav name, url route)``. The
#: MySQL / MariaDB DAGs keep their ledger in the same state database (``dag_id`` tells them
#: apart), so each view is the same page on another DAG's rows.
VIEWS = {
    DAG_ID: (URL_PREFIX, "Sync status", "sync-status"),
    "services_requests_cdc": (f"{URL_PREFIX}-cdc", "Sync status (CDC)", "sync-status-cdc"),
    "services_requests_mysql_sync": (
        f"{URL_PREFIX}-mysql",
        "Sync status (MySQL)",
        "sync-status-mysql",
    ),
    "services_requests_mysql_cdc": (
        f"{URL_PREFIX}-mysql-cdc",
        "Sync status (MySQL CDC)",
        "sync-status-mysql-cdc",
    ),
}
#: A state database that does not answer must not hold an API server thread for minutes.
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 10_000

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
# Aggregation (pure)
# --------------------------------------------------------------------------------------------


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
        interval_start=_utc(row["interval_start"]),
        interval_end=_utc(row["interval_end"]),
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
        last_acked_at=_utc(row["last_acked_at"]),
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
        start, end = _utc(run.interval_start), _utc(run.interval_end)
        if start is None or end is None or start in by_start:
            continue
        run = RunInfo(run.run_id, run.state, start, end, run.failed_tasks, _utc(run.queued_at))
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
# JSON (pure)
# --------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(value: timedelta | None) -> float | None:
    return round(value.total_seconds(), 3) if value is not None else None


def interval_json(item: IntervalStatus) -> dict[str, Any]:
    """One interval as JSON (timestamps ISO 8601 UTC, lag in seconds)."""
    return {
        "interval_start": _iso(item.interval_start),
        "interval_end": _iso(item.interval_end),
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
        "last_acked_at": _iso(item.last_acked_at),
        "delivery_lag_s": _seconds(item.lag),
        "last_error": item.last_error,
    }


def report_json(report: StatusReport) -> dict[str, Any]:
    """The JSON answer of ``/services-sync/api/intervals``."""
    sums = totals(report.intervals)
    median_lag, max_lag = sums.pop("median_lag"), sums.pop("max_lag")
    return {
        "dag_id": report.dag_id,
        "generated_at": _iso(report.generated_at),
        "state_conn_id": report.state_conn_id,
        "state_schema": report.state_schema,
        "problem": report.problem,
        "notes": list(report.notes),
        "totals": {**sums, "median_lag_s": _seconds(median_lag), "max_lag_s": _seconds(max_lag)},
        "intervals": [interval_json(i) for i in report.intervals],
    }


# --------------------------------------------------------------------------------------------
# HTML (pure)
# --------------------------------------------------------------------------------------------


def format_duration(value: timedelta | None) -> str:
    """``42s``, ``4m 05s``, ``2h 07m``, ``3d 4h``; ``-`` for none; negative as ``-4m 05s``."""
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d {hours}h"
    elif hours:
        text = f"{hours}h {minutes:02d}m"
    elif minutes:
        text = f"{minutes}m {secs:02d}s"
    else:
        text = f"{secs}s"
    return sign + text


def interval_label(item: IntervalStatus) -> str:
    """``2025-05-14 10:00\u201311:00`` (UTC, en dash); the end's date shows when it differs."""
    start, end = item.interval_start, item.interval_end
    end_text = end.strftime("%H:%M") if end.date() == start.date() else end.strftime("%m-%d %H:%M")
    if end.time() == datetime.min.time() and end - start <= timedelta(days=1):
        end_text = "24:00"
    return f"{start:%Y-%m-%d %H:%M}\u2013{end_text}"


def _n(value: int) -> str:
    return f"{value:,}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_chart(intervals: Sequence[IntervalStatus]) -> str:
    """An inline SVG: delivered rows up, quarantined rows down (own scale), oldest on the left.

    Quarantined rows get their own scale because a handful of them next to thousands delivered
    would not show on a shared one. A marker under each bar shows the interval's status.
    """
    items = list(reversed(intervals))
    width, height = 960, 236
    left, right, top = 64, 12, 14
    up_h, down_h, gap = 118, 46, 14
    base = top + up_h  # delivered bars grow up from here
    q_base = base + gap  # quarantined bars grow down from here
    plot_w = width - left - right
    slot = plot_w / max(len(items), 1)
    bar_w = max(slot * 0.7, 1.0)
    max_up = max((i.rows_delivered for i in items), default=0) or 1
    max_down = max((i.rows_quarantined for i in items), default=0) or 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        'aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Rows delivered (up) and quarantined (down) per interval, '
        "oldest on the left</title>",
        f'<line class="axis" x1="{left}" y1="{base}" x2="{width - right}" y2="{base}"/>',
        f'<line class="axis" x1="{left}" y1="{q_base}" x2="{width - right}" y2="{q_base}"/>',
        f'<text class="tick" x="{left - 6}" y="{top + 4}" text-anchor="end">{_n(max_up)}</text>',
        f'<text class="tick" x="{left - 6}" y="{base}" text-anchor="end">0</text>',
        f'<text class="tick q" x="{left - 6}" y="{q_base + down_h - 2}" text-anchor="end">'
        f"{_n(max_down)}</text>",
        f'<text class="tick" x="4" y="{top + up_h / 2}">delivered</text>',
        f'<text class="tick q" x="4" y="{q_base + down_h / 2 + 4}">quarantined</text>',
    ]
    label_y = q_base + down_h + 18
    for index, item in enumerate(items):
        x = left + index * slot + (slot - bar_w) / 2
        tip = (
            f"{interval_label(item)} UTC: {item.status}, {_n(item.rows_delivered)} delivered, "
            f"{_n(item.rows_quarantined)} quarantined"
        )
        parts.append(f'<g class="slot {item.tone}"><title>{_e(tip)}</title>')
        if item.rows_delivered:
            h = max(item.rows_delivered / max_up * up_h, 1.5)
            parts.append(
                f'<rect class="delivered" x="{x:.1f}" y="{base - h:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"/>'
            )
        if item.rows_quarantined:
            h = max(item.rows_quarantined / max_down * down_h, 1.5)
            parts.append(
                f'<rect class="quarantined" x="{x:.1f}" y="{q_base:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"/>'
            )
        # The status marker sits in the gap between the two panels.
        parts.append(
            f'<rect class="marker" x="{x:.1f}" y="{base + 4}" width="{bar_w:.1f}" '
            f'height="{gap - 8}"/>'
        )
        parts.append("</g>")
        start = item.interval_start
        if index == 0 or start.hour == 0 or (start.hour % 6 == 0 and len(items) > 12):
            text = f"{start:%m-%d %H:%M}" if index == 0 or start.hour == 0 else f"{start:%H:%M}"
            parts.append(
                f'<text class="tick" x="{x + bar_w / 2:.1f}" y="{label_y}" '
                f'text-anchor="middle">{text}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
:root { color-scheme: light dark; --fg: #1a202c; --muted: #64748b; --bg: #ffffff;
  --panel: #f8fafc; --line: #e2e8f0; --ok: #15803d; --info: #1d4ed8; --warn: #b45309;
  --bad: #b91c1c; --delivered: #16a34a; --quarantined: #ea580c; --none: #cbd5e1; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e2e8f0; --muted: #94a3b8; --bg: #0f172a; --panel: #1e293b; --line: #334155;
    --ok: #4ade80; --info: #93c5fd; --warn: #fbbf24; --bad: #f87171; --none: #475569; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 20px 24px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 20px; margin: 0 0 2px; }
h2 { font-size: 15px; margin: 22px 0 8px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.sub a { color: inherit; }
code { font: 12px/1.3 ui-monospace, "DejaVu Sans Mono", monospace; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 8px 14px; min-width: 140px; }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 12px; }
.card.attention .v { color: var(--bad); }
.problem { border: 1px solid var(--warn); background: var(--panel); border-radius: 8px;
  padding: 12px 16px; max-width: 900px; }
.problem.down { border-color: var(--bad); }
.problem strong { display: block; margin-bottom: 4px; }
.chart { width: 100%; max-width: 1100px; height: auto; display: block; }
.chart .axis { stroke: var(--line); stroke-width: 1; }
.chart .tick { fill: var(--muted); font-size: 11px; }
.chart .tick.q { fill: var(--quarantined); }
.chart .delivered { fill: var(--delivered); }
.chart .quarantined { fill: var(--quarantined); }
.chart .marker { fill: var(--none); }
.chart .ok .marker { fill: var(--ok); opacity: .35; }
.chart .info .marker { fill: var(--info); }
.chart .warn .marker { fill: var(--warn); }
.chart .bad .marker { fill: var(--bad); }
.chart .muted .marker { fill: none; stroke: var(--none); stroke-dasharray: 2 2; }
.legend { color: var(--muted); font-size: 12px; display: flex; gap: 16px; flex-wrap: wrap;
  margin: 4px 0 0; }
.sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 5px; vertical-align: -1px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; white-space: nowrap; }
th { color: var(--muted); font-weight: 600; font-size: 12px; white-space: normal;
  position: sticky; top: 0; background: var(--bg); }
.scroll { overflow-x: auto; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.err { white-space: normal; min-width: 160px; max-width: 320px; color: var(--bad); }
td.run { white-space: normal; max-width: 200px; }
td.run code { color: var(--muted); font-size: 11px; white-space: nowrap; }
td.run .state { font-size: 11px; color: var(--muted); }
.st { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px;
  border: 1px solid currentColor; }
.st.ok { color: var(--ok); } .st.info { color: var(--info); } .st.warn { color: var(--warn); }
.st.bad { color: var(--bad); } .st.muted { color: var(--muted); border-style: dashed; }
tr.muted td { color: var(--muted); }
td.zero { color: var(--muted); }
td.q { color: var(--quarantined); font-weight: 600; }
.notes { color: var(--muted); font-size: 12px; }
"""


def _num(value: int, *, warn: bool = False) -> str:
    cls = "num zero" if not value else ("num q" if warn else "num")
    return f'<td class="{cls}">{_n(value)}</td>'


def _row(item: IntervalStatus) -> str:
    batches = f"{item.batches_acked}/{item.batches}" if item.batches else "-"
    if len(item.lanes) > 1:
        per_lane = ", ".join(f"lane {lane}: {k}/{n}" for lane, n, k in item.lanes)
        batches = f'<span title="{_e(per_lane)}">{batches}</span>'
    run = "-"
    if item.run_id:
        # Break a long run id after its type (scheduled__, backfill__, manual__).
        shown = "__<wbr>".join(_e(part) for part in item.run_id.split("__", 1))
        run = f'<code title="{_e(item.run_id)}">{shown}</code>'
        if item.run_state:
            run += f' <span class="state">{_e(item.run_state)}</span>'

    return (
        f'<tr class="{item.tone}" data-interval-start="{_e(_iso(item.interval_start))}">'
        f"<td>{_e(interval_label(item))}</td>"
        f'<td><span class="st {item.tone}">{_e(item.status)}</span></td>'
        f"{_num(item.rows_extracted)}{_num(item.rows_delivered)}"
        f"{_num(item.rows_quarantined, warn=True)}{_num(item.duplicates_avoided)}"
        f'<td class="num">{_e(format_duration(item.lag))}</td>'
        f'<td class="num">{batches}</td>'
        f'<td class="num">{item.run_count or "-"}</td>'
        f'<td class="run">{run}</td>'
        f'<td class="err">{_e(item.last_error or "")}</td>'
        "</tr>"
    )


def _cards(report: StatusReport) -> str:
    sums = totals(report.intervals)
    newest = report.intervals[0].interval_end if report.intervals else None
    cards = [
        ("delivered", _n(sums["rows_delivered"]), "rows delivered", ""),
        ("quarantined", _n(sums["rows_quarantined"]), "rows quarantined", ""),
        (
            "duplicates",
            _n(sums["duplicates_avoided"]),
            "batches the receiver already had (latest runs)",
            "",
        ),
        (
            "attention",
            _n(sums["needs_attention"]),
            "intervals needing attention",
            " attention" if sums["needs_attention"] else "",
        ),
        ("median-lag", format_duration(sums["median_lag"]), "median delivery lag", ""),
        ("max-lag", format_duration(sums["max_lag"]), "worst delivery lag", ""),
        (
            "newest",
            format_duration(report.generated_at - newest) if newest else "-",
            "since the newest interval ended",
            "",
        ),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card{extra}" id="card-{key}"><div class="v">{_e(value)}</div>'
            f'<div class="k">{_e(label)}</div></div>'
            for key, value, label, extra in cards
        )
        + "</div>"
    )


def render_page(report: StatusReport) -> str:
    """The whole HTML page (self-contained: inline CSS and SVG, no script)."""
    where = (
        f"ledger <code>{_e(report.state_schema)}.delivery_ledger</code> via connection "
        f"<code>{_e(report.state_conn_id)}</code>"
        if report.state_schema
        else "delivery ledger"
    )
    head = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Sync status · {_e(report.dag_id)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Sync status: <code>{_e(report.dag_id)}</code></h1>"
        f'<p class="sub">Last {WINDOW} hourly intervals from the {where}, UTC. Generated '
        f"{report.generated_at:%Y-%m-%d %H:%M:%S} UTC · "
        '<a href="./">refresh</a> · <a href="api/intervals">JSON</a></p>'
    )
    body: list[str] = []
    if report.problem:
        tone = "" if report.available else " down"
        title = "No data to show" if report.available else "The delivery ledger cannot be read"
        body.append(
            f'<div class="problem{tone}" id="problem"><strong>{title}</strong>'
            f"{_e(report.problem)}</div>"
        )
    elif not report.intervals:
        body.append(
            '<div class="problem" id="problem"><strong>No runs yet</strong>'
            f"The ledger has no interval of <code>{_e(report.dag_id)}</code> yet: it fills as "
            "runs build and deliver batches.</div>"
        )
    else:
        body.append(_cards(report))
        body.append(f"<h2>Rows per interval ({len(report.intervals)} shown)</h2>")
        body.append(render_chart(report.intervals))
        body.append(
            '<p class="legend">'
            '<span><i class="sw" style="background: var(--delivered)"></i>delivered (sent and '
            "acknowledged)</span>"
            '<span><i class="sw" style="background: var(--quarantined)"></i>quarantined (own '
            "scale)</span>"
            '<span><i class="sw" style="background: var(--bad)"></i>failed / unacknowledged</span>'
            '<span><i class="sw" style="background: var(--info)"></i>in progress</span>'
            '<span><i class="sw" style="border: 1px dashed var(--none)"></i>no run</span></p>'
        )
        body.append("<h2>Intervals, newest first</h2>")
        body.append(
            '<div class="scroll"><table id="intervals"><thead><tr><th>Interval (UTC)</th>'
            "<th>Status</th>"
            '<th class="num">Extracted</th><th class="num">Delivered</th>'
            '<th class="num">Quarantined</th><th class="num" title="Batches of the latest run '
            "the receiver already had (same Idempotency-Key). The receiver's own duplicate count "
            'also counts resends within a try and earlier runs, so it is at least this">'
            "Already there</th>"
            '<th class="num" title="Last acknowledgment of the latest run minus the interval end '
            '(a rerun shows its own, later lag)">Lag</th>'
            '<th class="num">Batches acked</th><th class="num">Runs</th><th>Latest run</th>'
            "<th>Last error</th></tr></thead><tbody>"
            + "".join(_row(i) for i in report.intervals)
            + "</tbody></table></div>"
        )
    if report.notes:
        body.append('<p class="notes">' + "<br>".join(_e(note) for note in report.notes) + "</p>")
    return head + "".join(body) + "</body></html>"


_HTTP_HINTS = {
    401: "Sign in to Airflow, then open Sync status again.",
    403: f"Reading the sync status needs permission to read the runs of DAG {DAG_ID}.",
}


def render_message(title: str, text: str | None = None) -> str:
    """A small page with one message (errors shown to a browser)."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Sync status: {_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<div class="problem down" id="problem"><strong>{_e(title)}</strong>'
        f"{_e(text or '')}</div></body></html>"
    )


# --------------------------------------------------------------------------------------------
# Reading (psycopg, Airflow)
# --------------------------------------------------------------------------------------------


def fetch_interval_rows(
    conn: psycopg.Connection, schema: str, *, dag_id: str = DAG_ID, window: int = WINDOW
) -> list[dict[str, Any]]:
    """The ledger's latest run per interval (``status_intervals.sql``), newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            state_sql("status_intervals.sql", schema), {"dag_id": dag_id, "window_hours": window}
        )
        return cur.fetchall()


@cache
def _libpq_keywords() -> frozenset[str]:
    return frozenset(opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults())


@contextmanager
def open_read_only(conn_id: str) -> Iterator[psycopg.Connection]:
    """A read-only, UTC, time-boxed psycopg connection for an Airflow connection id.

    Why ``airflow.sdk.BaseHook.get_connection`` works here, outside any task: in Airflow 3.3
    it goes through ``airflow.sdk.execution_time.context._get_connection``, which asks the
    secrets backends that ``ensure_secrets_backend_loaded()``
    (``airflow/sdk/execution_time/supervisor.py``) picks by process context. The API server's
    entry point (``airflow/api_fastapi/main.py``) sets ``_AIRFLOW_PROCESS_CONTEXT=server``
    before anything else, which selects the server chain: ``AIRFLOW_CONN_*`` environment
    variables, the configured secrets backend and the metadata database (``MetastoreBackend``,
    i.e. Admin → Connections). Only task processes need the supervisor's execution API. Outside
    both (a test process) the fallback chain still reads environment variables.

    We build the psycopg connection ourselves rather than through ``PostgresHook.get_conn()``
    to add what a web request needs and the hook cannot be told: a connect timeout (unless the
    connection's extra sets one), a statement timeout and a read-only transaction. Extras that
    are libpq parameters (``sslmode``, ``sslrootcert``, ``options``, ...) are passed on; hook
    specific ones (``iam``, ``cursor``) are not supported here.
    """
    from airflow.sdk import BaseHook

    airflow_conn = BaseHook.get_connection(conn_id)
    params: dict[str, Any] = {
        "host": airflow_conn.host,
        "port": airflow_conn.port,
        "dbname": airflow_conn.schema,
        "user": airflow_conn.login,
        "password": airflow_conn.password,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "services-sync status view",
    }
    params.update(
        (key, value) for key, value in airflow_conn.extra_dejson.items() if key in _libpq_keywords()
    )
    conn = psycopg.connect(**{k: v for k, v in params.items() if v not in (None, "")})
    try:
        with conn.cursor() as cur:
            # Plain statements, not startup options: they also pass through PgBouncer.
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
        yield conn
    finally:
        conn.close()  # nothing to commit: the transaction was read-only


def airflow_runs(dag_id: str, run_ids: Sequence[str], window: int = WINDOW) -> dict[str, RunInfo]:
    """Airflow's runs of the DAG: those in the ledger, and the latest ``window`` by interval.

    The API server reads the metadata database directly (its own ORM session), as its routes
    do. A run that failed before building a batch (say at the commit gate) is only known here.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        # Two queries, not IN (SELECT ... LIMIT): MySQL metadata databases refuse the latter.
        latest = session.scalars(
            select(DagRun.run_id)
            .where(DagRun.dag_id == dag_id, DagRun.data_interval_start.is_not(None))
            .order_by(DagRun.data_interval_start.desc())
            .limit(window)
        ).all()
        run_rows = session.execute(
            select(
                DagRun.run_id,
                DagRun.state,
                DagRun.data_interval_start,
                DagRun.data_interval_end,
                DagRun.queued_at,
            ).where(DagRun.dag_id == dag_id, DagRun.run_id.in_(sorted({*run_ids, *latest})))
        ).all()
        found = [row.run_id for row in run_rows]
        failed: dict[str, list[str]] = {}
        if found:
            ti_rows = session.execute(
                select(
                    TaskInstance.run_id,
                    TaskInstance.task_id,
                    TaskInstance.map_index,
                    TaskInstance.try_number,
                )
                .where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id.in_(found),
                    TaskInstance.state == "failed",
                )
                .order_by(TaskInstance.task_id, TaskInstance.map_index)
            ).all()
            for ti in ti_rows:
                name = ti.task_id + (f" lane {ti.map_index + 1}" if ti.map_index >= 0 else "")
                failed.setdefault(ti.run_id, []).append(f"{name} (try {ti.try_number})")
    return {
        row.run_id: RunInfo(
            run_id=row.run_id,
            state=str(row.state) if row.state is not None else None,
            interval_start=_utc(row.data_interval_start),
            interval_end=_utc(row.data_interval_end),
            failed_tasks=tuple(failed.get(row.run_id, ())),
            queued_at=_utc(row.queued_at),
        )
        for row in run_rows
    }


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_report(
    *,
    dag_id: str = DAG_ID,
    window: int = WINDOW,
    env: Mapping[str, str] | None = None,
    connect: Callable[[str], Any] = open_read_only,
    runs: Callable[[str, Sequence[str], int], Mapping[str, RunInfo]] | None = airflow_runs,
    now: datetime | None = None,
) -> StatusReport:
    """Read the ledger (and Airflow's run states) into a report; never raises.

    A missing schema or table is "no data yet" (the first run's ``check_run_setup`` creates
    them); a state database that cannot be reached or read, or a missing connection, is a
    report with ``available=False`` and the reason, which the app answers with a 503.
    """
    generated_at = now or datetime.now(UTC)
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        return StatusReport(dag_id, generated_at, problem=str(exc), available=False)
    base = {
        "dag_id": dag_id,
        "generated_at": generated_at,
        "state_conn_id": settings.state_conn_id,
        "state_schema": settings.state_schema,
    }
    try:
        with connect(settings.state_conn_id) as conn:
            rows = fetch_interval_rows(conn, settings.state_schema, dag_id=dag_id, window=window)
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return StatusReport(
            **base,
            problem=(
                f"The state tables do not exist yet in schema {settings.state_schema} of "
                f"connection {settings.state_conn_id}: the first run of {dag_id} creates them "
                "(check_run_setup)."
            ),
        )
    except psycopg.errors.InsufficientPrivilege as exc:
        return StatusReport(
            **base,
            available=False,
            problem=(
                f"The role of connection {settings.state_conn_id} may not read the ledger "
                f"({_one_line(exc)}). Grant it USAGE on schema {settings.state_schema} and "
                "SELECT on its tables."
            ),
        )
    except psycopg.Error as exc:
        log.warning("Sync status: cannot read the ledger: %s", _one_line(exc))
        return StatusReport(
            **base,
            available=False,
            problem=(
                f"The state database of connection {settings.state_conn_id} cannot be read: "
                f"{_one_line(exc)}"
            ),
        )
    except Exception as exc:  # connection not defined, bad extra, ...: say so, never a 500
        log.warning("Sync status: cannot read the ledger", exc_info=True)
        return StatusReport(
            **base,
            available=False,
            problem=(
                f"Cannot read the ledger through connection {settings.state_conn_id}: "
                f"{type(exc).__name__}: {_one_line(exc)}"
            ),
        )
    notes: list[str] = []
    run_infos: Mapping[str, RunInfo] = {}
    if runs is not None:
        try:
            run_infos = runs(dag_id, [row["run_id"] for row in rows], window)
        except Exception as exc:  # the ledger alone still makes a useful view
            log.warning("Sync status: cannot read Airflow's run states", exc_info=True)
            notes.append(f"Airflow run states unavailable ({type(exc).__name__}); ledger only.")
    return StatusReport(
        **base, intervals=tuple(build_intervals(rows, run_infos, window)), notes=tuple(notes)
    )


# --------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------

#: Nothing but inline styles and data: images may load; framing only by the Airflow UI itself.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}


def create_app(
    report: Callable[[], StatusReport],
    *,
    dependencies: Sequence[Any] = (),
    login_url: Callable[[str], str] | None = None,
) -> Any:
    """The FastAPI app: ``/`` (HTML page) and ``/api/intervals`` (JSON).

    ``dependencies`` guard both routes (the plugin passes Airflow's DAG read permission);
    ``login_url(next_url)`` is where a browser without a session is sent (an API client gets
    the 401).
    """
    from fastapi import FastAPI, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(
        title="services-sync status",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=list(dependencies),
    )

    @app.get("/", response_class=HTMLResponse)
    def status_page() -> HTMLResponse:
        result = report()
        return HTMLResponse(
            render_page(result),
            status_code=200 if result.available else 503,
            headers=SECURITY_HEADERS,
        )

    @app.get("/api/intervals")
    def status_intervals() -> JSONResponse:
        result = report()
        return JSONResponse(
            report_json(result),
            status_code=200 if result.available else 503,
            headers=SECURITY_HEADERS,
        )

    @app.exception_handler(HTTPException)
    async def for_browsers(request: Request, exc: HTTPException) -> Any:
        if "text/html" not in request.headers.get("accept", ""):
            return await http_exception_handler(request, exc)  # JSON, as Airflow's API
        if exc.status_code == 401 and login_url is not None:
            return RedirectResponse(login_url(str(request.url)), status_code=303)
        return HTMLResponse(
            render_message(f"{exc.status_code}: {exc.detail}", _HTTP_HINTS.get(exc.status_code)),
            status_code=exc.status_code,
            headers=SECURITY_HEADERS,
        )

    return app
