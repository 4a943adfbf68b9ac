"""``record_delivery``, the task after the delivery lanes in both DAGs.

It runs whatever the tasks before it did (``trigger_rule="all_done"``) and reads only the
ledger, where each lane checkpointed its acknowledgments as they arrived; nothing it records
comes from a task's XCom. If a batch is not acknowledged it fails, once for the whole run,
naming the batches: the lanes send no alert of their own, so an outage is one alert per run,
not one per batch. If an earlier task failed before anything was built, it fails quietly (that
task alerted), so the run still ends failed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from services_sync.core import alerts
from services_sync.core.config import Settings, load_settings
from services_sync.core.payload import Interval, resend_recipe

log = logging.getLogger(__name__)

#: How many unacknowledged batches the failure message names one by one.
_NAMED = 8


def record_delivery(
    *,
    dag_id: str,
    run_id: str,
    interval: Interval | None,
    window_id: int | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Summarize the run's batches from the ledger; fail, naming them, unless all were acked.

    ``window_id`` (CDC mode): the run delivers a capture window, whose batches an earlier run
    may have built. Also prunes old outbox bodies and alerts on quarantined rows.
    """
    from services_sync.core import outbox, state
    from services_sync.core.db import connect

    settings = settings or load_settings()
    schema = settings.state_schema
    with connect(settings.state_conn_id) as conn:
        if not outbox.run_was_built(conn, schema, dag_id=dag_id, run_id=run_id):
            # The run must end failed, not green; the task that failed has alerted already.
            raise alerts.AlreadyAlerted(
                "this run built no batches: an earlier task failed (its alert says why)"
            )
        if window_id is not None:
            batches, replaced = outbox.window_batches(conn, schema, window_id=window_id), []
        else:
            # The batches reconcile_interval judges too: not those a later build replaced.
            batches, replaced = outbox.current_batches(conn, schema, dag_id=dag_id, run_id=run_id)
        summary = summarize(batches, label=interval.label if interval else f"window {window_id}")
        summary["replaced_batches"] = len(replaced)
        pruned = outbox.prune_bodies(
            conn,
            schema,
            dag_id=dag_id,
            retention_h=settings.outbox_retention.total_seconds() / 3600,
        )
        if pruned:
            log.info("Outbox: %d acknowledged bodies older than the retention deleted", pruned)
        open_batches = [b for b in batches if b["status"] in ("pending", "rejected")]
        # Every batch replaced: the later build's run answers for the interval; a summary of
        # zero batches written now, after it, would speak for the hour in the status view.
        if not open_batches and (batches or not replaced):
            state.record_run(
                conn,
                schema,
                dag_id=dag_id,
                run_id=run_id,
                interval_start=interval.start if interval else None,
                interval_end=interval.end if interval else None,
                **{k: summary[k] for k in _RUN_COLUMNS},
            )
    log.info("%s", format_summary(summary, batches))
    if replaced:
        log.info(
            "%d batch(es) of this run were replaced by a later build of the interval before they "
            "were acknowledged: that build sends them",
            len(replaced),
        )
    if open_batches:
        raise AirflowFailException(
            unacknowledged_message(dag_id, summary["interval"], interval, open_batches, batches)
        )
    if summary["rows_quarantined"]:
        alerts.send_alert(
            alerts.quarantine_alert(
                dag_id, run_id, summary["interval"], summary["rows_quarantined"], _log_url()
            ),
            settings,
        )
    return summary


_RUN_COLUMNS = (
    "rows_extracted",
    "batches",
    "batches_posted",
    "rows_sent",
    "rows_quarantined",
    "duplicates",
)


def summarize(batches: Sequence[Mapping[str, Any]], *, label: str) -> dict[str, Any]:
    """The run's totals over its ledger rows."""
    acked = [b for b in batches if b["status"] == "acked"]
    return {
        "interval": label,
        "rows_extracted": sum(b["rows_extracted"] for b in batches),
        "batches": len(batches),
        "batches_posted": len(acked),
        "rows_sent": sum(b["rows_sent"] for b in acked),
        "rows_quarantined": sum(b["rows_quarantined"] for b in batches),
        "rows_superseded": sum(b["rows_superseded"] for b in batches),
        "duplicates": sum(1 for b in acked if b["duplicate"]),
        "bytes": sum(b["body_bytes"] for b in batches),
        "stored_bytes": sum(b["stored_bytes"] or 0 for b in batches),
    }


def unacknowledged_message(
    dag_id: str,
    label: str,
    interval: Interval | None,
    open_batches: Sequence[Mapping[str, Any]],
    batches: Sequence[Mapping[str, Any]],
) -> str:
    """The one alert of a run that did not deliver everything: which batches, why, what next."""
    rejected = [b for b in open_batches if b["status"] == "rejected"]
    pending = [b for b in open_batches if b["status"] == "pending"]
    parts = [f"{label}: {len(open_batches)} of {len(batches)} batch(es) not acknowledged."]
    if pending:
        parts.append(
            f"Not delivered ({_numbers(pending)}): the receiver did not acknowledge them within "
            "the retry budget. They stay in the outbox; the next run sends them first, oldest "
            "first (clear this run's failed post_batches tasks to send them now)."
        )
    if rejected:
        reasons = "; ".join(
            f"batch {b['batch_index'] + 1}: {b['error'] or 'rejected'}" for b in rejected[:_NAMED]
        )
        recipe = resend_recipe(dag_id, interval.start if interval else None)
        parts.append(
            f"Rejected by the receiver ({_numbers(rejected)}), not resent: {reasons}. Fix the "
            f"cause, then rebuild the interval. {recipe}."
        )
    return " ".join(parts)


def _numbers(batches: Sequence[Mapping[str, Any]]) -> str:
    numbers = [str(b["batch_index"] + 1) for b in batches[:_NAMED]]
    more = f" and {len(batches) - _NAMED} more" if len(batches) > _NAMED else ""
    return "batch " + ", ".join(numbers) + more


def format_summary(summary: Mapping[str, Any], batches: Sequence[Mapping[str, Any]]) -> str:
    """The run summary as a small text table for the task log."""
    if not summary["batches"]:
        if summary.get("replaced_batches"):
            return (
                f"Interval {summary['interval']}: all {summary['replaced_batches']} batch(es) of "
                "this run were replaced by a later build of the interval, which sends them."
            )
        return f"Interval {summary['interval']}: 0 changes, nothing to send."
    lines = [
        f"{summary['interval']}: {summary['rows_extracted']} rows extracted, "
        f"{summary['batches']} batches ({summary['batches_posted']} acknowledged), "
        f"{summary['rows_sent']} sent, {summary['rows_quarantined']} quarantined, "
        f"{summary['rows_superseded']} superseded by a later interval, "
        f"{summary['duplicates']} already at the receiver; {summary['bytes'] / 1024:.1f} KiB "
        f"of JSON, {summary['stored_bytes'] / 1024:.1f} KiB in the outbox",
        f"{'batch':>9} {'lane':>4} {'rows':>7} {'sent':>7} {'quar.':>6} {'KiB':>8} {'HTTP':>5} "
        f"{'tries':>5} {'status':>9}  key",
    ]
    count = summary["batches"]
    for b in batches:
        lines.append(
            f"{b['batch_index'] + 1:>4}/{count:<4} {b['lane'] + 1:>4} {b['rows_extracted']:>7} "
            f"{b['rows_sent']:>7} {b['rows_quarantined']:>6} {b['body_bytes'] / 1024:>8.1f} "
            f"{b['http_status'] or '-':>5} {b['attempts'] or '-':>5} {b['status']:>9}  "
            f"{b['idempotency_key'] or '(nothing to send)'}"
        )
    return "\n".join(lines)


def interval_or_none(start: datetime | None, end: datetime | None) -> Interval | None:
    """The run's data interval, if it has one.

    A CDC run triggered by hand has none; a query-mode run without one fails in
    check_run_setup, and record_delivery then fails quietly (nothing was built).
    """
    return Interval(start, end) if start is not None and end is not None and end > start else None


def _log_url() -> str:
    from airflow.sdk import get_current_context

    try:
        return str(get_current_context()["ti"].log_url)
    except Exception:  # outside a task (tests, scripts): no log to point at
        return ""
