"""What each task of the query-mode DAGs does: the DAG files call these one-liners.

Everything here runs inside a task (never at parse time), takes plain values from the task
context and returns small, JSON-serialisable values for XCom. Both query-mode DAGs run the same
functions: the source (PostgreSQL or MySQL / MariaDB) comes in as a
:class:`~services_sync.delivery.capture.QuerySource`.

DAG files import this module when they are parsed, so psycopg and the modules built on it
(``source``, ``state``, ``db``) are imported inside the functions that use them: parsing stays
cheap (``make bench`` measures it).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from services_sync.core.checks import (
    log_quarantined,
    require_hourly_interval,
)
from services_sync.core.config import Settings, load_settings
from services_sync.core.gate import (
    POSTGRES_END_COMMAND,
    GateReading,
    fatal_problem,
    unrelated_writers_ignored,
    waiting_for,
)
from services_sync.core.payload import body_records, build_body, idempotency_key
from services_sync.core.transform import transform_rows
from services_sync.delivery.capture import QuerySource, RunBatches
from services_sync.query.mode import POSTGRES_QUERY

log = logging.getLogger(__name__)


def keep_plan(
    results: list[Any], descriptions: Any, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """``output_processor`` of ``plan_batches``: keep the interval's first plan, push a summary.

    The plan (one row of keyset bounds per batch) goes to the state database, never to XCom;
    a rerun or backfill of the interval reuses the stored plan, so a row that moved out of the
    hour changes only the batch that held it and every other batch keeps its key.
    """
    from airflow.sdk import get_current_context

    from services_sync.core.db import connect
    from services_sync.query import plans

    settings = settings or load_settings()
    context = get_current_context()
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    interval = require_hourly_interval(
        dag_id, context.get("data_interval_start"), context.get("data_interval_end")
    )
    rows = results[0] if results else []
    with connect(settings.state_conn_id) as conn:
        plan, reused = plans.keep_plan(
            conn, settings.state_schema, dag_id=dag_id, run_id=run_id, interval=interval, rows=rows
        )
    summary = {
        "interval": interval.label,
        "batches": len(plan),
        "planned_rows": sum(b.planned_rows for b in plan),
        "rows_now": int(rows[0][9]) if rows else 0,
        "plan": "reused" if reused else "new",
    }
    log.info(
        "Interval %s: %d batches (%s plan), %d rows in the interval now",
        interval.label,
        summary["batches"],
        summary["plan"],
        summary["rows_now"],
    )
    return [summary]


def build_batches(
    *,
    dag_id: str,
    run_id: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    settings: Settings | None = None,
    source: QuerySource = POSTGRES_QUERY,
) -> dict[str, Any]:
    """Read the interval batch by batch (one snapshot), transform, quarantine, fill the outbox.

    Each planned batch is fetched on its own keyset range, so memory holds one batch, never the
    hour; its ledger row and gzip body are written in the build's one transaction, so the lanes
    never see half a build. Unsent batches that earlier runs built for this interval are
    replaced by this build. ``source``: the table the DAG reads. Returns counts (XCom).
    """
    from services_sync.core import outbox, state
    from services_sync.core.db import connect
    from services_sync.query import plans

    settings = settings or load_settings()
    interval = require_hourly_interval(dag_id, data_interval_start, data_interval_end)
    schema = settings.state_schema
    totals = outbox.BuildTotals()
    with connect(settings.state_conn_id) as conn:
        plan = plans.stored_plan(conn, schema, dag_id=dag_id, interval=interval)
    with source.connect(settings) as source_conn, connect(settings.state_conn_id) as conn:
        reads = source.reads()
        for planned, rows, snapshot in reads.read_planned_batches(source_conn, interval, plan):
            result = transform_rows(rows, settings.naive_timezone)
            body = build_body(result.records) if result.records else None
            state.quarantine_rows(
                conn,
                schema,
                dag_id=dag_id,
                run_id=run_id,
                interval_start=interval.start,
                interval_end=interval.end,
                rejected=result.rejected,
            )
            built = outbox.BuiltBatch(
                batch_index=planned.index,
                lane=planned.index % settings.lanes,
                rows_extracted=len(rows),
                rows_quarantined=len(result.rejected),
                records=len(result.records),
                body=body,
                key=idempotency_key(interval, body) if body is not None else None,
                lower_bound=list(planned.lower),
                upper_bound=list(planned.upper),
                read_snapshot=snapshot,
            )
            totals.add(
                built,
                outbox.store_batch(
                    conn, schema, built, dag_id=dag_id, run_id=run_id, interval=interval
                ),
            )
            log_quarantined(result.rejected)
        outbox.finish_build(
            conn,
            schema,
            dag_id=dag_id,
            run_id=run_id,
            interval=interval,
            totals=totals,
            replace_earlier=True,
        )
    log.info(
        "Interval %s: %d rows in %d batches, %d records to send (%.1f KiB, %.1f KiB stored), "
        "%d quarantined",
        interval.label,
        totals.rows,
        totals.batches,
        totals.records,
        totals.bytes / 1024,
        totals.stored / 1024,
        totals.quarantined,
    )
    return {"interval": interval.label, **dataclasses.asdict(totals)}


def commit_gate_failed(
    row: Sequence[Any],
    settings: Settings | None = None,
    *,
    end_command: str = POSTGRES_END_COMMAND,
) -> bool:
    """``SqlSensor.failure`` of the late-commit gate: raise, naming the fix, instead of waiting.

    Fails (no retries) when the role cannot see other sessions or a transaction that has written
    ``service_requests`` and may still commit rows into the interval has been open past
    ``SERVICES_SYNC_MAX_OPEN_TRANSACTION_S``. Unrelated writers never fail it (see
    :func:`commit_gate_open`). ``end_command``: how to end such a transaction on the source.
    """
    settings = settings or load_settings()
    if not settings.commit_gate:
        return False
    problem = fatal_problem(GateReading.from_row(row), settings.max_open_transaction, end_command)
    if problem:
        raise AirflowFailException(problem)
    return False


def commit_gate_open(row: Sequence[Any], settings: Settings | None = None) -> bool:
    """``SqlSensor.success`` of the late-commit gate: may the interval be read now?

    Waits for the transactions that have written ``service_requests``; waits for other old write
    transactions only up to the run's ``unrelated_wait_s`` and then opens with a WARNING naming
    the oldest (reconciliation catches a row one of them writes late).
    """
    settings = settings or load_settings()
    reading = GateReading.from_row(row)
    if not settings.commit_gate:
        log.warning(
            "Late-commit gate is off (SERVICES_SYNC_COMMIT_GATE=off): late commits can be missed"
        )
        return True
    reason = waiting_for(reading)
    if reason:
        log.info("Interval not readable yet: %s", reason)
        return False
    ignored = unrelated_writers_ignored(reading)
    if ignored:
        log.warning("Interval readable, without waiting longer: %s", ignored)
        return True
    log.info(
        "Interval readable: its end has passed and no write transaction from before it is open"
    )
    return True


def reconcile_interval(
    *,
    dag_id: str,
    run_id: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    settings: Settings | None = None,
    source: QuerySource = POSTGRES_QUERY,
) -> dict[str, Any]:
    """Last task: prove the interval was delivered whole, or fail loudly (no retries).

    Judges the run's current batches, the ones ``record_delivery`` judged: a batch a later
    build of the interval replaced is that build's to deliver (counted as replaced).

    * every batch's ack count equals what it sent, and every extracted row was sent,
      quarantined, or superseded by a newer version;
    * no row now in the interval was committed after the batch covering it read the table and
      never sent (a late commit that escaped the gate: a writer's clock beyond the skew margin,
      or a timestamp set by the application). Such rows are named; clearing the run sends them.
      A row the read could not see is compared with what its batch sent
      (:mod:`services_sync.core.reconcile`): updated in place without touching
      ``last_modified_date`` is a warning naming the cause and the fix, not a failure; sent
      with the same content, or quarantined, needs nothing.

    ``source`` (the table the DAG reads) finds the rows its reads could not have sent.
    """
    from services_sync.core import outbox, reconcile, state
    from services_sync.core.db import connect

    settings = settings or load_settings()
    schema = settings.state_schema
    interval = require_hourly_interval(dag_id, data_interval_start, data_interval_end)
    with connect(settings.state_conn_id) as conn:
        batches, replaced = outbox.current_batches(conn, schema, dag_id=dag_id, run_id=run_id)
    problems = []
    for b in batches:
        if b["rows_sent"] and b["accepted"] != b["rows_sent"]:
            problems.append(
                f"batch {b['batch_index'] + 1}: sent {b['rows_sent']}, acknowledged {b['accepted']}"
            )
        accounted = b["rows_sent"] + b["rows_quarantined"] + b["rows_superseded"]
        if accounted != b["rows_extracted"]:
            problems.append(
                f"batch {b['batch_index'] + 1}: extracted {b['rows_extracted']} but sent, "
                f"quarantined and superseded {accounted}"
            )
    if replaced:
        log.info(
            "%d batch(es) of this run were replaced by a later build of %s (another run of the "
            "interval), which sends and reconciles them: %s",
            len(replaced),
            interval.label,
            ", ".join(str(b["batch_index"] + 1) for b in replaced[:20]),
        )
    late = reconcile.LateRows()
    if batches or not replaced:  # every batch replaced: the later build answers for the interval
        total, found = source.find_late_rows(
            settings, RunBatches(dag_id, run_id, interval, batches)
        )
        if found:
            with connect(settings.state_conn_id) as conn:
                quarantined = state.quarantined_fingerprints(
                    conn,
                    schema,
                    dag_id=dag_id,
                    interval_start=interval.start,
                    fingerprints=[reconcile.fingerprint(row) for _, row in found],
                )
                holding = sorted({index for index, _ in found if index is not None})
                sent = reconcile.sent_records(
                    body_records(body)
                    for _, body in outbox.batch_bodies(
                        conn, schema, dag_id=dag_id, run_id=run_id, batch_indexes=holding
                    )
                )
        else:
            quarantined, sent = set(), {}
        late = reconcile.classify_late_rows(
            [row for _, row in found],
            sent,
            quarantined,
            total=total,
            naive_timezone=settings.naive_timezone,
        )
    for note in reconcile.quiet_notes(late):
        log.info("Reconciliation of %s: %s", interval.label, note)
    in_place = reconcile.in_place_warning(late)
    late_commits = reconcile.late_commit_problem(late)
    if late_commits:
        problems.append(late_commits)
    if problems:
        if in_place:
            problems.append(in_place)
        raise AirflowFailException(
            f"Reconciliation of {interval.label} failed:\n- " + "\n- ".join(problems)
        )
    if in_place:
        log.warning("Reconciliation of %s: %s", interval.label, in_place)
    result = {
        "interval": interval.label,
        "batches": len(batches),
        "replaced_batches": len(replaced),
        "rows_acknowledged": sum(b["accepted"] or 0 for b in batches),
        "late_rows": 0,
        "updated_in_place_rows": len(late.updated_in_place),
        "unchanged_late_rows": len(late.unchanged),
        "quarantined_late_rows": len(late.quarantined),
    }
    log.info(
        "Reconciled %s: %d batches (%d replaced by a later build), %d rows acknowledged, no late "
        "commits, %d row(s) updated in place",
        interval.label,
        result["batches"],
        result["replaced_batches"],
        result["rows_acknowledged"],
        result["updated_in_place_rows"],
    )
    return result
