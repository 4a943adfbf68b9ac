"""### Service requests → downstream API, every hour (query mode, MySQL / MariaDB source)

Sends the rows of MySQL / MariaDB `service_requests` whose `last_modified_date` falls in the
run's data interval `[H:00, H+1:00)` UTC to `POST /services-data/requests`, as JSON batches:
query mode (`services_requests_sync`) with a MySQL source. Same contract, quarantine, outbox,
lanes, ledger, keys and reconciliation; only the reads differ.

| task | what it does |
|---|---|
| `check_run_setup` | fails at once, naming the fix, on a wrong interval, a missing connection or client, a missing grant (`SELECT`, `PROCESS` for the gate), a `last_modified_date` that is not DATETIME/TIMESTAMP or a naive zone other than UTC; creates the state tables (PostgreSQL) |
| `wait_for_open_transactions` | late-commit gate on InnoDB: waits until the interval end + clock skew has passed on the database clock and no transaction from `information_schema.INNODB_TRX` that started before it and has written is still open; fails, naming the thread, if one stays open too long |
| `plan_batches` | one SQL query (`include/sql/services_sync/mysql/plan_batches.sql`) plans keyset batches; the interval's first plan is kept and reused by its reruns |
| `build_batches` | reads the planned batches in one consistent snapshot, converts rows to the API contract, quarantines bad rows, writes each body and its `Idempotency-Key` to the outbox |
| `post_batches` | the delivery lanes of query mode |
| `record_delivery` | checks in the ledger that every batch was acknowledged |
| `reconcile_interval` | reads each batch's key range again and fails on a row in the interval that was neither sent as it is nor quarantined (a late commit); warns about rows updated in place |

**Connections:** `services_mysql_db` (mysql, extra `{"client": "mysql-connector-python"}`;
`SELECT` on `service_requests`, `PROCESS` for the gate), `services_api` (http), and the
PostgreSQL state database `SERVICES_SYNC_STATE_CONN_ID` (ledger, outbox, plans, quarantine).

**Time zone:** sessions run in UTC; a TIMESTAMP column is read in UTC, a DATETIME column must
hold UTC.

**Owner:** data-platform
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.common.sql.sensors.sql import SqlSensor
from airflow.sdk import CronDataIntervalTimetable, chain, dag, task

from services_sync.core.config import load_settings, mysql_hook_params
from services_sync.dag_defaults import (
    allow_dag_test,
    batch_params,
    default_args,
    is_test_run,
    stuck_run_deadline,
)
from services_sync.dag_parts import deliver_interval
from services_sync.mysql import tasks as mysql_tasks
from services_sync.query import tasks

DAG_ID = "services_requests_mysql_sync"
SETTINGS = load_settings()


@dag(
    dag_id=DAG_ID,
    # Not "@hourly": a bare cron string is a zero-width interval in Airflow 3.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=SETTINGS.start_date,
    catchup=SETTINGS.catchup,
    max_active_runs=1,  # intervals are delivered in order
    template_searchpath=[str(SETTINGS.sql_dir)],
    user_defined_macros={"mysql_utc": mysql_tasks.utc_macro},  # bounds as UTC wall times
    default_args=default_args(SETTINGS),
    deadline=stuck_run_deadline(SETTINGS),
    params=batch_params(SETTINGS),
    tags=["services", "sync", "hourly", "mysql"],
    doc_md=__doc__,
)
def services_requests_mysql_sync():
    """check_run_setup → gate → plan_batches → build_batches → post_batches[lanes] → record."""

    @task
    def check_run_setup(
        params=None,
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
        dag_run=None,
    ) -> str:
        """Fail fast, naming the fix, on a wrong interval, connection, grant or column type."""
        return mysql_tasks.check_mysql_run_setup(
            DAG_ID,
            data_interval_start,
            data_interval_end,
            params,
            logical_date=logical_date,
            test_run=is_test_run(dag_run),
        )

    wait_for_open_transactions = SqlSensor(
        task_id="wait_for_open_transactions",
        conn_id=SETTINGS.mysql_source_conn_id,
        hook_params=mysql_hook_params(),  # session in UTC
        sql="services_sync/mysql/check_open_transactions.sql",
        parameters={
            "window_end": "{{ mysql_utc(data_interval_end) }}",
            "clock_skew_s": SETTINGS.clock_skew.total_seconds(),
            "unrelated_wait_s": 0,
        },
        selector=list,
        success=tasks.commit_gate_open,
        failure=mysql_tasks.commit_gate_failed,
        mode="poke",  # see services_requests_sync: reschedule + retries can crash 3.3's scheduler
        poke_interval=SETTINGS.gate_poke_interval,
        timeout=SETTINGS.max_open_transaction + SETTINGS.clock_skew + timedelta(minutes=10),
    )

    plan_batches = SQLExecuteQueryOperator(
        task_id="plan_batches",
        conn_id=SETTINGS.mysql_source_conn_id,
        hook_params=mysql_hook_params(),  # session in UTC
        sql="services_sync/mysql/plan_batches.sql",
        parameters={
            "window_start": "{{ mysql_utc(data_interval_start) }}",
            "window_end": "{{ mysql_utc(data_interval_end) }}",
            "batch_size": "{{ params.batch_size }}",
            "max_batch_bytes": "{{ params.max_batch_bytes }}",
        },
        output_processor=mysql_tasks.keep_plan,  # the plan goes to the state DB
    )

    chain(
        check_run_setup(),
        wait_for_open_transactions,
        plan_batches,
        *deliver_interval(DAG_ID, SETTINGS, "services_sync.mysql.tasks", source_dialect="mysql"),
    )


allow_dag_test(services_requests_mysql_sync())  # `airflow dags test` with the DeadlineAlert on
