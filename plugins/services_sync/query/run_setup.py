"""``check_run_setup``, the first task of both query-mode DAGs, and PostgreSQL's source checks.

The task fails the run at once (no retries), with a message that says what to do, on anything
that would make it useless: an interval that is not one whole hour or disagrees with the logical
date, bad params, a missing or wrong connection, a source table it cannot read; then it creates
the state tables. The source-specific checks come from the run's
:class:`~services_sync.delivery.capture.QuerySource`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from services_sync.core.checks import (
    check_connections,
    ensure_state,
    first_line,
    require_batch_size,
    require_run_interval,
)
from services_sync.core.config import Settings, load_settings, source_hook_params
from services_sync.delivery.capture import QuerySource
from services_sync.query.mode import POSTGRES_QUERY

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
    source: QuerySource = POSTGRES_QUERY,
) -> str:
    """First task: fail fast, with the fix, on anything that would make the run useless.

    Checks the data interval (one whole hour that agrees with the logical date), the params,
    the connections and read access to the source table (``source.check_source``), then
    creates the state tables if needed. Returns the interval label. ``test_run``: a
    ``dag.test()`` run (see :func:`services_sync.core.payload.logical_date_problem`).
    """
    settings = settings or load_settings()
    interval = require_run_interval(
        dag_id, logical_date, data_interval_start, data_interval_end, test_run=test_run
    )
    batch_size = require_batch_size(params)
    source.check_source(settings)
    ensure_state(settings)
    log.info("Run set up for interval %s (batch size %d)", interval.label, batch_size)
    return interval.label


def check_run_setup_from_context(
    dag_id: str, source: QuerySource, context: Mapping[str, Any]
) -> str:
    """:func:`check_run_setup` for the task context the ``check_run_setup`` task receives."""
    dag_run = context.get("dag_run")
    return check_run_setup(
        dag_id,
        context.get("data_interval_start"),
        context.get("data_interval_end"),
        context["params"],
        logical_date=context.get("logical_date"),
        # DAG.test() (``airflow dags test``) marks the runs it makes.
        test_run=getattr(dag_run, "triggering_user_name", None) == "dag_test",
        source=source,
    )


def check_postgres_source(settings: Settings) -> None:
    """Fail, naming the fix, unless the connections work and the PostgreSQL table is readable.

    Also checks that the SQL operators' sessions read a naive column in the configured zone
    (:func:`check_session_zone`).
    """
    import psycopg

    from services_sync.core.db import connect
    from services_sync.query import source

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
