"""Checks every DAG's first task shares: the run's interval and params, connections, state tables.

They fail the task without retries (``AirflowFailException``) and name the fix: a misconfiguration
is found at the first task, not in the middle of a delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from services_sync.core.config import Settings
from services_sync.core.payload import (
    Interval,
    hourly_interval,
    logical_date_problem,
    resend_recipe,
)
from services_sync.core.transform import Rejected

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

    See :func:`services_sync.core.payload.logical_date_problem`; the message names the recipe
    that sends exactly the intended hour.
    """
    interval = require_hourly_interval(dag_id, start, end)
    problem = logical_date_problem(logical_date, interval, test_run=test_run)
    if problem:
        raise AirflowFailException(f"{dag_id} refuses this run: {problem}. {resend_recipe(dag_id)}")
    return interval


def require_batch_size(params: Mapping[str, Any]) -> int:
    """The run's ``batch_size`` param; fail the task (no retries) unless a positive integer."""
    batch_size = params.get("batch_size")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AirflowFailException(f"param batch_size={batch_size!r} must be a positive integer")
    return batch_size


def ensure_state(settings: Settings, *, cdc: bool = False) -> None:
    """Create the state tables if missing; fail, naming the fix, if the role may not."""
    import psycopg

    from services_sync.core import state
    from services_sync.core.db import connect

    try:
        with connect(settings.state_conn_id) as conn:
            state.ensure_state_tables(conn, settings.state_schema, cdc=cdc)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise AirflowFailException(
            f"The role of connection '{settings.state_conn_id}' cannot create the state tables "
            f"in schema {settings.state_schema} ({first_line(exc)}). Create the schema for it "
            f"(CREATE SCHEMA {settings.state_schema} AUTHORIZATION <role>), or point "
            "SERVICES_SYNC_STATE_CONN_ID / SERVICES_SYNC_STATE_SCHEMA elsewhere."
        ) from None


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


PG_EXAMPLE = "postgresql://<user>:<password>@<host>:5432/<database>"


HTTP_EXAMPLE = (
    '{"conn_type": "http", "host": "<api host>", "schema": "https", '
    '"extra": {"Authorization": "Bearer <token>"}}'
)


def check_connections(settings: Settings) -> None:
    """Fail (no retries), naming each fix, when a connection is missing or malformed."""
    problems = [
        *connection_problems(settings.source_conn_id, "postgres", PG_EXAMPLE),
        *connection_problems(settings.api_conn_id, "http", HTTP_EXAMPLE),
    ]
    if settings.state_conn_id != settings.source_conn_id:
        problems += connection_problems(settings.state_conn_id, "postgres", PG_EXAMPLE)
    if problems:
        raise AirflowFailException("Misconfigured connections:\n- " + "\n- ".join(problems))


def connection_problems(conn_id: str, conn_type: str, example: str) -> list[str]:
    """What is wrong with connection ``conn_id`` (missing, wrong type, no host), with the fix."""
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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (database errors run to several)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
