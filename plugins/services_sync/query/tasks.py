"""What each task of the DAGs does: the DAG files call these one-liners.

Everything here runs inside a task (never at parse time), takes plain values from the task
context and returns small, JSON-serialisable values for XCom.

DAG files import this module when they are parsed, so psycopg and the modules built on it
(``source``, ``state``, ``db``) are imported inside the functions that use them: parsing stays
cheap (``make bench`` measures it).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from airflow.sdk.exceptions import (
    AirflowFailException,
)

from services_sync.core.checks import (
    check_connections,
    ensure_state,
    first_line,
    log_quarantined,
    require_batch_size,
    require_hourly_interval,
    require_run_interval,
)
from services_sync.core.config import Settings, load_settings, source_hook_params
from services_sync.core.gate import (
    GateReading,
    fatal_problem,
    unrelated_writers_ignored,
    waiting_for,
)
from services_sync.core.payload import (
    BatchBounds,
    Interval,
    body_records,
    build_body,
    idempotency_key,
)
from services_sync.core.transform import transform_rows

log = logging.getLogger(__name__)


def check_run_setup(
    dag_id: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    params: Mapping[str, Any],
    settings: Settings | None = None,
    *,
    logical_date: datetime | None = None,
    test_run: bool = False,
) -> str:
    """First task: fail fast, with the fix, on anything that would make the run useless.

    Checks the data interval (one whole hour that agrees with the logical date), the params,
    both connections and read access to the source table, then creates the state tables if
    needed. Returns the interval label. ``test_run``: a ``dag.test()`` run (see
    :func:`services_sync.core.payload.logical_date_problem`).
    """
    import psycopg

    from services_sync.core.db import connect
    from services_sync.query import source

    settings = settings or load_settings()
    interval = require_run_interval(
        dag_id, logical_date, data_interval_start, data_interval_end, test_run=test_run
    )
    batch_size = require_batch_size(params)

    check_connections(settings)

    try:
        with connect(settings.source_conn_id) as conn:
            source.check_source_access(conn)
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        raise AirflowFailException(
            f"The source connection '{settings.source_conn_id}' does not see the table "
            f"service_requests with the expected columns ({first_line(exc)}). Point the "
            "connection at the right database, or set the schema with the connection extra "
            '{"options": "-c search_path=<schema>"}.'
        ) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise AirflowFailException(
            f"The role of connection '{settings.source_conn_id}' may not read service_requests "
            f"({first_line(exc)}). Run: GRANT SELECT ON service_requests TO <that role>;"
        ) from None

    check_session_zone(settings)
    ensure_state(settings)
    log.info("Run set up for interval %s (batch size %d)", interval.label, batch_size)
    return interval.label


def check_session_zone(settings: Settings) -> None:
    """Fail, naming the fix, if the SQL operators would select a naive column in another zone.

    The operators' sessions get ``-c TimeZone=<naive zone>`` (``source_hook_params``), but an
    ``options`` extra on the source connection replaces it: the plan would then select a
    ``timestamp without time zone`` column in the server's zone, and the records would carry
    instants of another hour. Opened the way the operators open it.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from services_sync.core.sql import load_sql

    zone = settings.naive_timezone.key
    hook = PostgresHook(postgres_conn_id=settings.source_conn_id, **source_hook_params(settings))
    conn = hook.get_conn()
    try:
        with conn.cursor() as cur:
            cur.execute(load_sql("check_session_zone.sql"), {"zone": zone})
            column_type, session_zone, zones_agree = cur.fetchone()
    finally:
        conn.close()
    if column_type == "timestamp without time zone" and not zones_agree:
        raise AirflowFailException(
            f"service_requests.last_modified_date is a timestamp without time zone, read in "
            f"SERVICES_SYNC_NAIVE_TIMEZONE={zone}, but the SQL operators' sessions on "
            f"'{settings.source_conn_id}' run in {session_zone}: the 'options' extra of the "
            f"connection replaces the session settings the DAG sets. Add -c TimeZone={zone} to "
            f'it (e.g. {{"options": "-c search_path=<schema> -c TimeZone={zone}"}}).'
        )


def keep_plan(
    results: list[Any], descriptions: Any, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """``output_processor`` of ``plan_batches``: keep the interval's first plan, push a summary.

    The plan (one row of keyset bounds per batch) goes to the state database, never to XCom;
    a rerun or backfill of the interval reuses the stored plan, so a row that moved out of the
    hour changes only the batch that held it and every other batch keeps its key.
    """
    from airflow.sdk import get_current_context

    from services_sync.core import outbox
    from services_sync.core.db import connect

    settings = settings or load_settings()
    context = get_current_context()
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    interval = require_hourly_interval(
        dag_id, context.get("data_interval_start"), context.get("data_interval_end")
    )
    rows = results[0] if results else []
    with connect(settings.state_conn_id) as conn:
        plan, reused = outbox.keep_plan(
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


#: Reads an interval's planned batches from the source, all in one snapshot:
#: ``reader(interval, plan)`` is a context manager over ``(batch, rows, snapshot)`` triples.
#: PostgreSQL's is :func:`postgres_batches`, MySQL's ``services_sync.mysql.tasks.mysql_batches``.
BatchReader = Callable[
    [Interval, Sequence[BatchBounds]],
    AbstractContextManager[Iterable[tuple[BatchBounds, list[tuple], str | None]]],
]

#: Finds the rows now in an interval that its run's reads could not have sent:
#: ``finder(interval, current_batches)`` returns ``(how many, [(batch_index, row), ...])``.
LateRowFinder = Callable[[Interval, list[dict[str, Any]]], tuple[int, list[tuple[Any, tuple]]]]


def postgres_batches(settings: Settings) -> BatchReader:
    """The PostgreSQL reader of planned batches (one REPEATABLE READ snapshot)."""

    @contextmanager
    def read(interval: Interval, plan: Sequence[BatchBounds]) -> Iterator[Iterable]:
        from services_sync.core.db import connect
        from services_sync.query import source

        with connect(settings.source_conn_id) as conn:
            yield source.read_planned_batches(conn, interval, plan)

    return read


def postgres_late_rows(settings: Settings) -> LateRowFinder:
    """PostgreSQL's late rows: those each batch's snapshot could not see (row ``xmin``)."""

    def find(interval: Interval, batches: list[dict[str, Any]]):
        from services_sync.core.db import connect
        from services_sync.query import source

        with connect(settings.source_conn_id) as conn:
            return source.find_late_rows(conn, interval, batches)

    return find


def build_batches(
    *,
    dag_id: str,
    run_id: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    settings: Settings | None = None,
    reader: BatchReader | None = None,
) -> dict[str, Any]:
    """Read the interval batch by batch (one snapshot), transform, quarantine, fill the outbox.

    Each planned batch is fetched on its own keyset range, so memory holds one batch, never the
    hour; its ledger row and gzip body are written in the build's one transaction, so the lanes
    never see half a build. Unsent batches that earlier runs built for this interval are
    replaced by this build. Returns counts (XCom).
    """
    from services_sync.core import outbox, state
    from services_sync.core.db import connect

    settings = settings or load_settings()
    reader = reader or postgres_batches(settings)
    interval = require_hourly_interval(dag_id, data_interval_start, data_interval_end)
    schema = settings.state_schema
    totals = outbox.BuildTotals()
    with connect(settings.state_conn_id) as conn:
        plan = outbox.stored_plan(conn, schema, dag_id=dag_id, interval=interval)
    with reader(interval, plan) as batches, connect(settings.state_conn_id) as conn:
        for planned, rows, snapshot in batches:
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


def commit_gate_failed(row: Sequence[Any], settings: Settings | None = None) -> bool:
    """``SqlSensor.failure`` of the late-commit gate: raise, naming the fix, instead of waiting.

    Fails (no retries) when the role cannot see other sessions or a transaction that has written
    ``service_requests`` and may still commit rows into the interval has been open past
    ``SERVICES_SYNC_MAX_OPEN_TRANSACTION_S``. Unrelated writers never fail it (see
    :func:`commit_gate_open`).
    """
    settings = settings or load_settings()
    if not settings.commit_gate:
        return False
    problem = fatal_problem(GateReading.from_row(row), settings.max_open_transaction)
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
    late_rows: LateRowFinder | None = None,
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
    """
    from services_sync.core import outbox, reconcile, state
    from services_sync.core.db import connect

    settings = settings or load_settings()
    late_rows = late_rows or postgres_late_rows(settings)
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
        total, found = late_rows(interval, batches)
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
