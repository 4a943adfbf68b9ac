"""What the sync status view reads: the delivery ledger and Airflow's runs of the DAG.

* :func:`fetch_interval_rows` runs ``include/sql/services_sync/ui/status_intervals.sql`` on a
  connection that :func:`begin_read_only` made read-only and time-boxed
  (:func:`services_sync.ui.app.open_read_only` opens it);
* :func:`airflow_runs` reads the runs' states and failed tasks from Airflow's metadata
  database, for the API server process that serves the view.

Airflow is imported only when :func:`airflow_runs` is called: every Airflow component, task
runners included, imports the plugin module that reaches this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from services_sync.core.sql import load_sql
from services_sync.ui.model import DAG_ID, WINDOW, RunInfo, as_utc, failed_task_label

#: A state database that does not answer must not hold an API server thread for minutes.
STATEMENT_TIMEOUT_MS = 10_000


def begin_read_only(conn: psycopg.Connection) -> None:
    """Make the connection's transaction read-only, UTC and time-boxed (before any read)."""
    with conn.cursor() as cur:
        cur.execute(load_sql("ui/begin_read_only.sql"))
        cur.execute(
            load_sql("ui/limit_session.sql"), {"statement_timeout_ms": STATEMENT_TIMEOUT_MS}
        )


def status_intervals_sql(schema: str) -> pgsql.Composed:
    """``ui/status_intervals.sql`` on the state tables of ``schema`` (a validated identifier)."""
    return pgsql.SQL(load_sql("ui/status_intervals.sql")).format(schema=pgsql.Identifier(schema))


def fetch_interval_rows(
    conn: psycopg.Connection, schema: str, *, dag_id: str = DAG_ID, window: int = WINDOW
) -> list[dict[str, Any]]:
    """The ledger's latest run per interval (``status_intervals.sql``), newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(status_intervals_sql(schema), {"dag_id": dag_id, "window_hours": window})
        return cur.fetchall()


def airflow_runs(dag_id: str, run_ids: Sequence[str], window: int = WINDOW) -> dict[str, RunInfo]:
    """Airflow's runs of the DAG: those in the ledger, and the latest ``window`` by interval.

    A run that failed before building a batch (say at the commit gate) is only known here.
    """
    run_rows, failed_rows = _read_metadata_db(dag_id, run_ids, window)
    failed: dict[str, list[str]] = {}
    for ti in failed_rows:
        failed.setdefault(ti.run_id, []).append(
            failed_task_label(ti.task_id, ti.map_index, ti.try_number)
        )
    return {
        row.run_id: RunInfo(
            run_id=row.run_id,
            state=str(row.state) if row.state is not None else None,
            interval_start=as_utc(row.data_interval_start),
            interval_end=as_utc(row.data_interval_end),
            failed_tasks=tuple(failed.get(row.run_id, ())),
            queued_at=as_utc(row.queued_at),
        )
        for row in run_rows
    }


def _read_metadata_db(
    dag_id: str, run_ids: Sequence[str], window: int
) -> tuple[Sequence[Any], Sequence[Any]]:
    """The runs (ledger's and latest ``window`` by interval) and their failed task instances.

    The one place the view uses Airflow's internal ORM (``airflow.models``, ``create_session``),
    a deliberate choice over the public REST API of Airflow 3.3, because:

    * ``GET /api/v2/dags/{dag_id}/dagRuns`` and ``POST /api/v2/dags/~/dagRuns/list`` can
      neither filter by a set of run ids nor sort by ``data_interval_start`` (their sort keys are
      ``id``, ``run_id``, ``logical_date``, ``run_after``, dates, ``state``, ``conf``...). The view
      needs the ledger's runs plus the latest ``window`` by data interval: through the API that
      is one ``GET .../dagRuns/{run_id}`` per ledger run (up to 48 per page view), or a window
      by ``run_after``, which for manual runs is the trigger time, not the interval: other runs.
    * The mounted app has no public way to call the API server it runs in: Airflow hands
      plugins no reference to its root app, and ``[api] base_url`` is the browser's address
      (often a proxy), not one this process can be sure to reach.

    This is the API server's own process and metadata database, read as its routes read it;
    the route that calls it already required the DAG's run read permission. Two queries, not
    ``IN (SELECT ... LIMIT)``: MySQL metadata databases refuse the latter.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
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
        if not found:
            return run_rows, []
        failed_rows = session.execute(
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
    return run_rows, failed_rows
