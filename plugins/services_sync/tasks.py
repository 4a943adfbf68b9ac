"""What each task of the DAGs does: the DAG files call these one-liners.

Everything here runs inside a task (never at parse time), takes plain values from the task
context and returns small, JSON-serialisable values for XCom.

DAG files import this module when they are parsed, so psycopg and the modules built on it
(``source``, ``state``, ``db``) are imported inside the functions that use them: parsing stays
cheap (``make bench`` measures it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowNotFoundException,
    AirflowSkipException,
)

from services_sync import alerts
from services_sync.config import Settings, load_settings
from services_sync.delivery import PayloadTooLargeError, RejectedDeliveryError, check_ack
from services_sync.gate import GateReading, fatal_problem, waiting_for
from services_sync.payload import (
    BatchBounds,
    Interval,
    body_sha256,
    build_body,
    hourly_interval,
    idempotency_key,
    logical_date_problem,
    request_headers,
    resend_recipe,
)
from services_sync.transform import Rejected, TransformResult, transform_rows

if TYPE_CHECKING:  # psycopg is imported at run time only (see the module docstring)
    import psycopg

log = logging.getLogger(__name__)

#: How many quarantined rows of a batch are spelled out in the task log.
_LOGGED_REJECTS = 5


def require_hourly_interval(dag_id: str, start: datetime | None, end: datetime | None) -> Interval:
    """The run's ``[start, end)``; fail the task (no retries) with how to send an hour instead."""
    try:
        return hourly_interval(start, end)
    except ValueError as exc:
        raise AirflowFailException(f"{dag_id} cannot run: {exc}. {resend_recipe(dag_id)}") from None


def require_run_interval(
    dag_id: str,
    logical_date: datetime | None,
    start: datetime | None,
    end: datetime | None,
    *,
    test_run: bool = False,
) -> Interval:
    """The run's interval, refusing a run whose logical date and data interval disagree.

    See :func:`services_sync.payload.logical_date_problem`; the message names the recipe
    that sends exactly the intended hour.
    """
    interval = require_hourly_interval(dag_id, start, end)
    problem = logical_date_problem(logical_date, interval, test_run=test_run)
    if problem:
        raise AirflowFailException(f"{dag_id} refuses this run: {problem}. {resend_recipe(dag_id)}")
    return interval


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
    :func:`services_sync.payload.logical_date_problem`).
    """
    import psycopg

    from services_sync import source, state
    from services_sync.db import connect

    settings = settings or load_settings()
    interval = require_run_interval(
        dag_id, logical_date, data_interval_start, data_interval_end, test_run=test_run
    )
    batch_size = params.get("batch_size")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AirflowFailException(f"param batch_size={batch_size!r} must be a positive integer")

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

    try:
        with connect(settings.state_conn_id) as conn:
            state.ensure_state_tables(conn, settings.state_schema)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise AirflowFailException(
            f"The role of connection '{settings.state_conn_id}' cannot create the state tables "
            f"in schema {settings.state_schema} ({first_line(exc)}). Create the schema for it "
            f"(CREATE SCHEMA {settings.state_schema} AUTHORIZATION <role>), or point "
            "SERVICES_SYNC_STATE_CONN_ID / SERVICES_SYNC_STATE_SCHEMA elsewhere."
        ) from None
    log.info("Run set up for interval %s (batch size %d)", interval.label, batch_size)
    return interval.label


def check_plan(
    results: list[Any], descriptions: Any, settings: Settings | None = None
) -> list[Any]:
    """``SQLExecuteQueryOperator.output_processor`` of ``plan_batches``: refuse an unmappable plan.

    Each batch becomes one mapped task; Airflow refuses more than ``[core] max_map_length``.
    """
    settings = settings or load_settings()
    for plan in results:
        if plan and len(plan) > settings.max_batches:
            rows, per_batch = plan[0][9], plan[0][8]
            raise AirflowFailException(
                f"The interval holds {rows} changed rows and only {per_batch} fit one body of "
                f"max_batch_bytes, so it needs {len(plan)} batches, more than the "
                f"{settings.max_batches} mapped tasks Airflow allows. Raise the max_batch_bytes "
                "param (and the receiver's limit), or [core] max_map_length together with "
                "SERVICES_SYNC_MAX_BATCHES."
            )
    return results


def commit_gate_failed(row: Sequence[Any], settings: Settings | None = None) -> bool:
    """``SqlSensor.failure`` of the late-commit gate: raise, naming the fix, instead of waiting.

    Fails (no retries) when the role cannot see other sessions or a transaction that may still
    write into the interval has been open past ``SERVICES_SYNC_MAX_OPEN_TRANSACTION_S``.
    """
    settings = settings or load_settings()
    if not settings.commit_gate:
        return False
    problem = fatal_problem(GateReading.from_row(row), settings.max_open_transaction)
    if problem:
        raise AirflowFailException(problem)
    return False


def commit_gate_open(row: Sequence[Any], settings: Settings | None = None) -> bool:
    """``SqlSensor.success`` of the late-commit gate: may the interval be read now?"""
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
    log.info(
        "Interval readable: its end has passed and no write transaction from before it is open"
    )
    return True


def build_batch(
    plan_row: Sequence[Any],
    *,
    dag_id: str,
    run_id: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    settings: Settings | None = None,
) -> dict[str, Any] | None:
    """Fetch one planned batch, transform it, quarantine bad rows, return the POST kwargs.

    Returns ``{"data": <json body>, "headers": {...}, "batch_index": i}`` for the POST operator,
    or None when every row of the batch was quarantined (nothing to send).
    """
    from services_sync import source
    from services_sync.db import connect, connect_state

    settings = settings or load_settings()
    interval = require_hourly_interval(dag_id, data_interval_start, data_interval_end)
    bounds = BatchBounds.from_plan_row(plan_row)
    with (
        connect(settings.source_conn_id) as source_conn,
        connect_state(settings.state_conn_id, settings.source_conn_id, source_conn) as conn,
    ):
        rows, snapshot = source.read_batch(source_conn, interval, bounds)
        result = transform_rows(rows, settings.naive_timezone)
        body = build_body(result.records) if result.records else None
        key = idempotency_key(interval, body) if body is not None else None
        record_built_batch(
            conn,
            settings,
            dag_id=dag_id,
            run_id=run_id,
            interval=interval,
            batch_index=bounds.index,
            rows_extracted=len(rows),
            result=result,
            body=body,
            key=key,
            lower_bound=list(bounds.lower),
            upper_bound=list(bounds.upper),
            read_snapshot=snapshot,
        )
    log.info(
        "%s of %s: %d rows, %d to send, %d quarantined, %.1f KiB, key %s",
        bounds.label,
        interval.label,
        len(rows),
        len(result.records),
        len(result.rejected),
        (len(body) if body else 0) / 1024,
        key,
    )
    log_quarantined(result.rejected)
    if body is None:
        return None
    return {
        "data": body,
        "headers": request_headers(key),
        "batch_index": bounds.index,
        "batch_count": bounds.count,
    }


def record_built_batch(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    dag_id: str,
    run_id: str,
    interval: Interval,
    batch_index: int,
    rows_extracted: int,
    result: TransformResult,
    body: str | None,
    key: str | None,
    lower_bound: list[str],
    upper_bound: list[str],
    read_snapshot: str | None,
) -> None:
    """Quarantine a built batch's rejected rows and record the batch in the ledger.

    Shared by both modes' build tasks; ``conn`` is a connection to the state database.
    """
    from services_sync import state

    state.quarantine_rows(
        conn,
        settings.state_schema,
        dag_id=dag_id,
        run_id=run_id,
        interval=interval,
        rejected=result.rejected,
    )
    state.record_batch_built(
        conn,
        settings.state_schema,
        dag_id=dag_id,
        run_id=run_id,
        batch_index=batch_index,
        interval_start=interval.start,
        interval_end=interval.end,
        idempotency_key=key,
        rows_extracted=rows_extracted,
        rows_quarantined=len(result.rejected),
        rows_sent=len(result.records),
        body_bytes=len(body) if body else 0,
        body_sha256=body_sha256(body) if body else None,
        lower_bound=lower_bound,
        upper_bound=upper_bound,
        read_snapshot=read_snapshot,
    )


def log_quarantined(rejected: Sequence[Rejected]) -> None:
    """Spell out the first few quarantined rows of a batch in the task log."""
    for item in rejected[:_LOGGED_REJECTS]:
        log.warning(
            "Quarantined request_id=%s service_id=%s: %s",
            item.row.get("request_id"),
            item.row.get("service_id"),
            item.reason,
        )
    if len(rejected) > _LOGGED_REJECTS:
        log.warning("... and %d more quarantined rows", len(rejected) - _LOGGED_REJECTS)


def as_post_kwargs(built: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Map a built batch to ``HttpOperator`` kwargs; a batch with nothing to send is skipped."""
    if built is None:
        raise AirflowSkipException("every row of this batch was quarantined; nothing to send")
    return built


def check_response(response: Any) -> bool:
    """``HttpOperator.response_check``: accept only a proper acknowledgment (README contract).

    A rejection fails the task at once (``AirflowFailException``) with the receiver's reason; a
    transient error raises :class:`~services_sync.delivery.RetryableDeliveryError`, which the
    retry policy turns into a backoff or a ``Retry-After`` wait.
    """
    key = response.request.headers.get("Idempotency-Key", "?")
    try:
        ack = check_ack(
            response.status_code, response.headers, response.text, _sent_count(response)
        )
    except PayloadTooLargeError:
        raise  # the operator splits the batch
    except RejectedDeliveryError as exc:
        raise AirflowFailException(f"Batch {key} was rejected: {exc}") from exc
    log.info(
        "Batch %s acknowledged: HTTP %d, %d accepted%s",
        key,
        ack.status,
        ack.accepted,
        " (duplicate: the receiver already had it)" if ack.duplicate else "",
    )
    return True


def ack_summary(response: Any, ti: Any = None) -> dict[str, Any]:
    """``HttpOperator.response_filter``: the small ack record pushed to XCom (never the body)."""
    ack = check_ack(response.status_code, response.headers, response.text, _sent_count(response))
    return {
        "idempotency_key": response.request.headers.get("Idempotency-Key"),
        "status": ack.status,
        "accepted": ack.accepted,
        "duplicate": ack.duplicate,
        "attempts": getattr(ti, "try_number", None),
        "acked_at": datetime.now(UTC).isoformat(),
    }


def record_delivery(
    plan: Sequence[Sequence[Any]] | None,
    results: Iterable[Mapping[str, Any] | None] | None,
    *,
    dag_id: str,
    run_id: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Final task: store the acks in the ledger, check every batch was acked, log the summary."""
    from services_sync import state
    from services_sync.db import connect

    settings = settings or load_settings()
    interval = require_hourly_interval(dag_id, data_interval_start, data_interval_end)
    batch_count = len(plan or [])
    results = [r for r in (results or []) if r]
    with connect(settings.state_conn_id) as conn:
        state.record_batch_acks(
            conn, settings.state_schema, dag_id=dag_id, run_id=run_id, results=results
        )
        batches = [
            row
            for row in state.run_batches(conn, settings.state_schema, dag_id=dag_id, run_id=run_id)
            if row["batch_index"] < batch_count
        ]
        summary = {
            "interval": interval.label,
            "rows_extracted": sum(b["rows_extracted"] for b in batches),
            "batches": batch_count,
            "batches_posted": sum(1 for b in batches if b["acked_at"] is not None),
            "rows_sent": sum(b["rows_sent"] for b in batches if b["acked_at"] is not None),
            "rows_quarantined": sum(b["rows_quarantined"] for b in batches),
            "rows_superseded": sum(b["rows_superseded"] for b in batches),
            "duplicates": sum(1 for b in batches if b["duplicate"]),
        }
        unacked = [b for b in batches if b["rows_sent"] and b["acked_at"] is None]
        missing = batch_count - len(batches)
        if unacked or missing:
            raise AirflowException(
                f"Interval {interval.label}: {len(unacked)} batch(es) built but not acknowledged "
                f"and {missing} planned batch(es) never built; clear the run to resend them "
                "(same keys, the receiver de-duplicates)."
            )
        state.record_run(
            conn,
            settings.state_schema,
            dag_id=dag_id,
            run_id=run_id,
            interval_start=interval.start,
            interval_end=interval.end,
            **{k: v for k, v in summary.items() if k not in {"interval", "rows_superseded"}},
        )
    log.info("%s", format_summary(summary, batches))
    if summary["rows_quarantined"]:
        alerts.send_alert(
            alerts.quarantine_alert(
                dag_id, run_id, interval.label, summary["rows_quarantined"], _log_url()
            ),
            settings,
        )
    return summary


def reconcile_interval(
    *,
    dag_id: str,
    run_id: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Last task: prove the interval was delivered whole, or fail loudly (no retries).

    * every batch's ack count equals what it sent, and every extracted row was sent,
      quarantined, or superseded by a newer version;
    * no row now in the interval was committed after the batch covering it read the table (a
      late commit that escaped the gate: a writer's clock beyond the skew margin, or a
      timestamp set by the application). Such rows are named; clearing the run sends them.
    """
    from services_sync import source, state
    from services_sync.db import connect

    settings = settings or load_settings()
    interval = require_hourly_interval(dag_id, data_interval_start, data_interval_end)
    with connect(settings.state_conn_id) as conn:
        batches = state.run_batches(conn, settings.state_schema, dag_id=dag_id, run_id=run_id)
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
    with connect(settings.source_conn_id) as conn:
        late_rows, sample = source.find_late_rows(conn, interval, batches)
    if late_rows:
        named = ", ".join(
            f"{r['request_id']} ({r['service_id']}) at {r['last_modified_date']}" for r in sample
        )
        problems.append(
            f"{late_rows} row(s) in the interval were committed after it was read and were not "
            f"sent: {named}. A writer's transaction or clock escaped the late-commit gate "
            "(raise SERVICES_SYNC_CLOCK_SKEW_S); clear this run to send them"
        )
    if problems:
        raise AirflowFailException(
            f"Reconciliation of {interval.label} failed:\n- " + "\n- ".join(problems)
        )
    result = {
        "interval": interval.label,
        "batches": len(batches),
        "rows_acknowledged": sum(b["accepted"] or 0 for b in batches),
        "late_rows": 0,
    }
    log.info(
        "Reconciled %s: %d batches, %d rows acknowledged, no late rows",
        interval.label,
        result["batches"],
        result["rows_acknowledged"],
    )
    return result


def format_summary(summary: Mapping[str, Any], batches: Sequence[Mapping[str, Any]]) -> str:
    """The run summary as a small text table for the task log."""
    if not summary["batches"]:
        return f"Interval {summary['interval']}: 0 changes, nothing to send."
    lines = [
        f"Interval {summary['interval']}: {summary['rows_extracted']} rows extracted, "
        f"{summary['batches']} batches ({summary['batches_posted']} posted), "
        f"{summary['rows_sent']} sent, {summary['rows_quarantined']} quarantined, "
        f"{summary.get('rows_superseded', 0)} superseded by a later interval, "
        f"{summary['duplicates']} already at the receiver",
        f"{'batch':>9} {'rows':>7} {'sent':>7} {'quar.':>6} {'KiB':>8} {'HTTP':>5} "
        f"{'tries':>5}  key",
    ]
    count = summary["batches"]
    for b in batches:
        lines.append(
            f"{b['batch_index'] + 1:>4}/{count:<4} {b['rows_extracted']:>7} {b['rows_sent']:>7} "
            f"{b['rows_quarantined']:>6} {b['body_bytes'] / 1024:>8.1f} "
            f"{b['http_status'] or '-':>5} {b['attempts'] or '-':>5}  "
            f"{b['idempotency_key'] or '(nothing to send)'}"
        )
    return "\n".join(lines)


_PG_EXAMPLE = "postgresql://<user>:<password>@<host>:5432/<database>"
_HTTP_EXAMPLE = (
    '{"conn_type": "http", "host": "<api host>", "schema": "https", '
    '"extra": {"Authorization": "Bearer <token>"}}'
)


def check_connections(settings: Settings) -> None:
    """Fail (no retries), naming each fix, when a connection is missing or malformed."""
    problems = [
        *_connection_problems(settings.source_conn_id, "postgres", _PG_EXAMPLE),
        *_connection_problems(settings.api_conn_id, "http", _HTTP_EXAMPLE),
    ]
    if settings.state_conn_id != settings.source_conn_id:
        problems += _connection_problems(settings.state_conn_id, "postgres", _PG_EXAMPLE)
    if problems:
        raise AirflowFailException("Misconfigured connections:\n- " + "\n- ".join(problems))


def _connection_problems(conn_id: str, conn_type: str, example: str) -> list[str]:
    # Imported here: resolving connections needs the task runtime, not the DAG parser.
    from airflow.sdk import BaseHook

    fix = f"create it in Admin > Connections, or set AIRFLOW_CONN_{conn_id.upper()}='{example}'"
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return [f"connection '{conn_id}' ({conn_type}) is not defined: {fix}"]
    problems = []
    if (conn.conn_type or "").lower() not in {
        conn_type,
        "postgresql" if conn_type == "postgres" else conn_type,
    }:
        problems.append(
            f"connection '{conn_id}' has type {conn.conn_type!r}, expected {conn_type!r}: {fix}"
        )
    if not conn.host:
        problems.append(f"connection '{conn_id}' has no host: {fix}")
    return problems


def _log_url() -> str:
    from airflow.sdk import get_current_context

    try:
        return str(get_current_context()["ti"].log_url)
    except Exception:  # outside a task (tests, scripts): no log to point at
        return ""


def _sent_count(response: Any) -> int:
    body = response.request.body
    if body is None:
        return 0
    try:
        return len(json.loads(body)["requests"])
    except (TypeError, ValueError, KeyError):
        return 0


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (database errors run to several)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
