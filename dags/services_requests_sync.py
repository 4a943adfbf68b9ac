"""### Service requests → downstream API, every hour (query mode)

Sends the rows of PostgreSQL `service_requests` whose `last_modified_date` falls in the run's
data interval `[H:00, H+1:00)` UTC to `POST /services-data/requests`, as JSON batches.

| task | what it does |
|---|---|
| `check_run_setup` | fails at once, naming the fix, on a missing interval, connection or grant; creates the state tables |
| `wait_for_open_transactions` | late-commit gate: waits until the interval end + clock skew has passed on the database clock and no write transaction that started before it is still open; fails, naming the pid, if one stays open too long |
| `plan_batches` | one SQL query plans keyset batches of at most `batch_size` rows (only the bounds cross XCom) |
| `build_batch` | one per batch: fetches its rows, converts them to the API contract, quarantines bad rows, builds the JSON body and its `Idempotency-Key` |
| `post_batch` | one per batch: `HttpOperator` POST, 30 s timeout, retried with backoff + jitter, honors `Retry-After`, fails fast on 4xx, splits on 413; checks the ack |
| `record_delivery` | stores the acks in the delivery ledger, checks every batch was acked, logs the run summary |
| `reconcile_interval` | fails loudly if an ack count differs from what was sent, or a row now in the interval was committed after it was read |

**Connections:** `services_source_db` (postgres; `SELECT` on `service_requests`),
`services_api` (http; host, scheme and auth header of the receiver). State tables (ledger,
quarantine) go to schema `services_sync` of `SERVICES_SYNC_STATE_CONN_ID` (default: the source).

**Params:** `batch_size` (rows per POST, default 1000).

**Ordering, no stale overwrite.** `max_active_runs=1` delivers hours in order while they
succeed. When an hour fails past its retry budget, later hours go on; if the failed hour is
retried after them, `post_batch` drops (at send time) every record whose source row changed since
the batch was built, because the newer version was delivered by a later hour. We chose this over
blocking later hours behind a failed one: a poison batch stops only itself.

**Alerts** go to e-mail (connection `services_alerts_smtp`, recipients in
`SERVICES_SYNC_ALERT_EMAIL_TO`) and Slack (incoming-webhook connection `services_alerts_slack`),
each only if its connection exists: when a task fails after its last try, when rows are
quarantined, and when a run is not finished `SERVICES_SYNC_RUN_DEADLINE_MIN` (120; 0 = off)
minutes after it was queued.

**Reruns and backfills** are safe: each run reads exactly its data interval, and a batch's
`Idempotency-Key` comes from the interval and the body (never the run id), so resending the same
data sends the same key and the receiver keeps it once. Backfill with
`airflow backfill create --dag-id services_requests_sync --from-date … --to-date … --max-active-runs 1`.
A run without a data interval (triggered without a logical date) fails in `check_run_setup`.

**Owner:** data-platform
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.common.sql.sensors.sql import SqlSensor
from airflow.sdk import CronDataIntervalTimetable, dag, task

from services_sync import tasks
from services_sync.config import load_settings
from services_sync.dag_defaults import (
    allow_dag_test,
    batch_params,
    default_args,
    is_test_run,
    stuck_run_deadline,
)
from services_sync.operators import RequestBatchHttpOperator, post_batch_args

DAG_ID = "services_requests_sync"
SETTINGS = load_settings()


@dag(
    dag_id=DAG_ID,
    # Not "@hourly": a bare cron string is a zero-width interval in Airflow 3.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=SETTINGS.start_date,
    catchup=SETTINGS.catchup,  # on: an hour missed while the scheduler was down is still sent
    max_active_runs=1,  # intervals are delivered in order
    template_searchpath=[str(SETTINGS.sql_dir)],
    default_args=default_args(SETTINGS),  # retries, failure alert (e-mail / Slack)
    deadline=stuck_run_deadline(SETTINGS),  # alert on a run still unfinished after 2 h
    params=batch_params(SETTINGS),
    tags=["services", "sync", "hourly"],
    doc_md=__doc__,
)
def services_requests_sync():
    """check_run_setup → plan_batches → build_batch[n] → post_batch[n] → record_delivery."""

    @task
    def check_run_setup(
        params=None,
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
        dag_run=None,
    ) -> str:
        """Fail fast, naming the fix, on a wrong interval, a missing connection or grant."""
        return tasks.check_run_setup(
            DAG_ID,
            data_interval_start,
            data_interval_end,
            params,
            logical_date=logical_date,
            test_run=is_test_run(dag_run),
        )

    wait_for_open_transactions = SqlSensor(
        task_id="wait_for_open_transactions",
        conn_id=SETTINGS.source_conn_id,
        sql="services_sync/check_open_transactions.sql",
        parameters={
            "window_end": "{{ data_interval_end }}",
            "clock_skew_s": SETTINGS.clock_skew.total_seconds(),
        },
        selector=list,
        success=tasks.commit_gate_open,
        failure=tasks.commit_gate_failed,
        # Poke, not reschedule: a rescheduling sensor with retries can crash the scheduler in
        # Airflow 3.3 (ForeignKeyViolation on task_reschedule_ti_fkey, apache/airflow#71923).
        mode="poke",
        poke_interval=SETTINGS.gate_poke_interval,
        timeout=SETTINGS.max_open_transaction + SETTINGS.clock_skew + timedelta(minutes=10),
    )

    plan_batches = SQLExecuteQueryOperator(
        task_id="plan_batches",
        conn_id=SETTINGS.source_conn_id,
        sql="services_sync/plan_batches.sql",
        parameters={
            "window_start": "{{ data_interval_start }}",
            "window_end": "{{ data_interval_end }}",
            "batch_size": "{{ params.batch_size }}",
            "max_batch_bytes": "{{ params.max_batch_bytes }}",
            "max_batches": SETTINGS.max_batches,
        },
        output_processor=tasks.check_plan,
    )

    @task(map_index_template="batch {{ task.op_kwargs['plan_row'][0] + 1 }}")
    def build_batch(plan_row, run_id=None, data_interval_start=None, data_interval_end=None):
        """Fetch, transform and quarantine one batch; return its JSON body and headers."""
        return tasks.build_batch(
            plan_row,
            dag_id=DAG_ID,
            run_id=run_id,
            data_interval_start=data_interval_start,
            data_interval_end=data_interval_end,
        )

    post_batch = RequestBatchHttpOperator.partial(
        task_id="post_batch",
        # POST, 30 s timeout, ack check, retries with backoff + jitter + Retry-After
        **post_batch_args(SETTINGS),
    ).expand_kwargs(build_batch.expand(plan_row=plan_batches.output).map(tasks.as_post_kwargs))

    @task(trigger_rule="none_failed", multiple_outputs=False)
    def record_delivery(
        plan, results, run_id=None, data_interval_start=None, data_interval_end=None
    ):
        """Store the acks in the delivery ledger and log the run summary."""
        return tasks.record_delivery(
            plan,
            results,
            dag_id=DAG_ID,
            run_id=run_id,
            data_interval_start=data_interval_start,
            data_interval_end=data_interval_end,
        )

    @task(retries=0, multiple_outputs=False)
    def reconcile_interval(run_id=None, data_interval_start=None, data_interval_end=None):
        """Fail loudly unless every row of the interval was acked, quarantined or superseded."""
        return tasks.reconcile_interval(
            dag_id=DAG_ID,
            run_id=run_id,
            data_interval_start=data_interval_start,
            data_interval_end=data_interval_end,
        )

    check_run_setup() >> wait_for_open_transactions >> plan_batches
    record_delivery(plan_batches.output, post_batch.output) >> reconcile_interval()


allow_dag_test(services_requests_sync())  # `airflow dags test` with the DeadlineAlert on
