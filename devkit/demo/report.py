"""The query-mode demo's report: the DAG's state tables next to what the receiver holds."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devkit.demo.airflow_runs import RunResult
from devkit.demo.services import DAG_ID, STATE_SCHEMA

_HTTP_TIMEOUT = 10


@dataclass
class IntervalReport:
    """One line of the per-interval table.

    Attributes:
        label: The interval, e.g. ``2026-11-28T09:00Z/2026-11-28T10:00Z``.
        run_ok: Whether the DAG run of the interval succeeded.
        extracted: Rows read from the source (None if the run recorded no summary).
        batches: Batches planned.
        sent: Rows in the batches the receiver acknowledged.
        acked: Sum of ``accepted`` over the acknowledged batches of the ledger.
        quarantined: Rows set aside as malformed.
        at_receiver: Records the receiver holds under this interval's idempotency keys.
    """

    label: str
    run_ok: bool
    extracted: int | None = None
    batches: int | None = None
    sent: int | None = None
    acked: int | None = None
    quarantined: int | None = None
    at_receiver: int = 0

    @property
    def match(self) -> bool:
        """Whether the run succeeded and sent, acknowledged and received rows agree."""
        return self.run_ok and self.sent is not None and self.sent == self.acked == self.at_receiver


@dataclass
class Report:
    """Everything the demo prints after the runs.

    Attributes:
        intervals: One entry per demo hour.
        quarantined: ``(interval label, request_id, service_id, reason)`` rows.
        stats: The receiver's ``/inspect/stats``.
        sample: One delivered record and its batch key, if any.
    """

    intervals: list[IntervalReport]
    quarantined: list[tuple[str, str | None, str | None, str]]
    stats: dict[str, int]
    sample: dict[str, Any] | None = field(default=None)


def collect_report(dsn: str, receiver_url: str, runs: Sequence[RunResult]) -> Report:
    """Compare the DAG's state tables (this demo's runs only) with what the receiver holds.

    Args:
        dsn: URL of the source database (which also holds the state tables).
        receiver_url: Base URL of the receiver.
        runs: The demo's runs, one per hour.

    Returns:
        The report.
    """
    import psycopg
    from psycopg import sql

    from services_sync.core.payload import KEY_NAMESPACE, Interval

    labels = {r.start: Interval(r.start, r.start + timedelta(hours=1)).label for r in runs}
    run_ids = [r.run_id for r in runs if r.run_id]
    summaries: dict[datetime, tuple[int, ...]] = {}
    quarantined: list[tuple[str, str | None, str | None, str]] = []
    schema = sql.Identifier(STATE_SCHEMA)
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        try:
            for row in conn.execute(
                sql.SQL(
                    "SELECT r.interval_start, r.rows_extracted, r.batches, r.rows_sent,"
                    " (SELECT coalesce(sum(l.accepted), 0) FROM {s}.delivery_ledger l"
                    "   WHERE l.dag_id = r.dag_id AND l.run_id = r.run_id"
                    "     AND l.acked_at IS NOT NULL),"
                    " r.rows_quarantined"
                    " FROM {s}.delivery_runs r WHERE r.dag_id = %s AND r.run_id = ANY(%s)"
                ).format(s=schema),
                (DAG_ID, run_ids),
            ):
                summaries[row[0]] = tuple(int(v) for v in row[1:])
            for start, request_id, service_id, reason in conn.execute(
                sql.SQL(
                    "SELECT interval_start, row_data->>'request_id', row_data->>'service_id',"
                    " reason FROM {s}.quarantined_requests"
                    " WHERE dag_id = %s AND interval_start = ANY(%s)"
                    " ORDER BY interval_start, row_data->>'request_id' NULLS FIRST"
                ).format(s=schema),
                (DAG_ID, list(labels)),
            ):
                quarantined.append((labels.get(start, str(start)), request_id, service_id, reason))
        except psycopg.errors.UndefinedTable:
            pass  # no run got as far as creating the state tables

    batches = _get_json(f"{receiver_url}/inspect/batches")
    intervals = []
    for run in runs:
        prefix = f"{KEY_NAMESPACE}:{labels[run.start]}:"
        line = IntervalReport(
            labels[run.start],
            run.ok,
            at_receiver=sum(b["count"] for b in batches if b["idempotency_key"].startswith(prefix)),
        )
        if run.start in summaries:
            (line.extracted, line.batches, line.sent, line.acked, line.quarantined) = summaries[
                run.start
            ]
        intervals.append(line)
    sample = None
    if batches and batches[0]["requests"]:
        sample = {"key": batches[0]["idempotency_key"], "record": batches[0]["requests"][0]}
    stats = _get_json(f"{receiver_url}/inspect/stats")
    return Report(intervals, quarantined, stats, sample)


def print_report(report: Report) -> None:
    """Print the per-interval table, the quarantined rows, the receiver totals and a sample.

    Args:
        report: What :func:`collect_report` found.
    """
    ok, bad = ("✓", "✗")
    rows = [
        [
            line.label,
            *(_cell(v) for v in (line.extracted, line.batches, line.sent, line.acked)),
            _cell(line.quarantined),
            str(line.at_receiver),
            ok if line.match else bad,
        ]
        for line in report.intervals
    ]
    headers = [
        "interval",
        "extracted",
        "batches",
        "sent",
        "acked",
        "quarantined",
        "at receiver",
        "match",
    ]
    print()
    print("Per interval: the DAG's state tables vs. the records at the receiver")
    _print_table(headers, rows, right={1, 2, 3, 4, 5, 6})

    print()
    if report.quarantined:
        print(
            f"Quarantined rows ({len(report.quarantined)}, never sent; "
            f"{STATE_SCHEMA}.quarantined_requests):"
        )
        _print_table(
            ["interval", "request_id", "service_id", "reason"],
            [
                [label, rid if rid is not None else "NULL", sid if sid is not None else "NULL", why]
                for label, rid, sid, why in report.quarantined
            ],
        )
    else:
        print("Quarantined rows: none")

    stats = report.stats
    print()
    print(
        f"receiver holds {stats['records']} records in {_plural(stats['batches'], 'batch')}, "
        f"{stats['duplicates']} duplicates ({stats['rejected']} requests rejected)"
    )
    if report.sample:
        print(f"a delivered record (batch {report.sample['key']}):")
        print(json.dumps(report.sample["record"], indent=2))


def _print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: frozenset[int] | set[int] = frozenset(),
) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]

    def fmt(cells: Sequence[str]) -> str:
        parts = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(parts).rstrip()

    print(fmt(headers))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("ch") else "s")


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT) as response:  # noqa: S310 - our URL
        return json.load(response)
