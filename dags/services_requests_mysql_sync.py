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

# The dag-processor imports the airflow.* modules a DAG file names once, before it forks the
# process that parses the file; named here, the delivery lanes' HTTP provider is not imported
# again on every parse (about 0.13 s a parse: bench/results.md, "Parse time").
import airflow.providers.http.operators.http  # noqa: F401
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.common.sql.sensors.sql import SqlSensor
from airflow.sdk import CronDataIntervalTimetable, chain, dag, task

from services_sync.core.config import load_settings
from services_sync.dag_factory import (
    allow_dag_test,
    batch_params,
    deliver_interval,
    gate_args,
    hourly_dag_args,
    plan_args,
)
from services_sync.mysql import tasks as mysql_tasks
from services_sync.mysql.mode import MYSQL_QUERY as SOURCE
from services_sync.query import run_setup, tasks

DAG_ID = "services_requests_mysql_sync"
SETTINGS = load_settings()


@dag(
    dag_id=DAG_ID,
    # Not "@hourly": a bare cron string is a zero-width interval in Airflow 3.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    catchup=SETTINGS.catchup,
    params=batch_params(SETTINGS),
    tags=["services", "sync", "hourly", "mysql"],
    doc_md=__doc__,
    **hourly_dag_args(SETTINGS, source=SOURCE),  # one run at a time, retries, alerts
)
def services_requests_mysql_sync():
    """check_run_setup → gate → plan_batches → build_batches → post_batches[lanes] → record."""

    @task
    def check_run_setup(**context) -> str:
        """Fail fast, naming the fix, on a wrong interval, connection, grant or column type."""
        return run_setup.check_run_setup_from_context(DAG_ID, SOURCE, context)

    wait_for_open_transactions = SqlSensor(
        task_id="wait_for_open_transactions",
        success=tasks.commit_gate_open,
        failure=mysql_tasks.commit_gate_failed,  # names KILL, not pg_terminate_backend
        **gate_args(SETTINGS, SOURCE),  # InnoDB: every old write transaction is waited for
    )

    plan_batches = SQLExecuteQueryOperator(
        task_id="plan_batches",
        output_processor=tasks.keep_plan,  # the plan goes to the state DB (PostgreSQL)
        **plan_args(SETTINGS, SOURCE),
    )

    chain(
        check_run_setup(),
        wait_for_open_transactions,
        plan_batches,
        *deliver_interval(DAG_ID, SETTINGS, SOURCE),
    )


allow_dag_test(services_requests_mysql_sync())  # `airflow dags test` with the DeadlineAlert on
