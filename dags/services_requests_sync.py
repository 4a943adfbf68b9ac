"""### Service requests → downstream API, every hour (query mode)

Sends the rows of PostgreSQL `service_requests` whose `last_modified_date` falls in the run's
data interval `[H:00, H+1:00)` UTC to `POST /services-data/requests`, as JSON batches.

| task | what it does |
|---|---|
| `check_run_setup` | fails at once, naming the fix, on a wrong interval, a missing connection or grant; creates the state tables |
| `wait_for_open_transactions` | late-commit gate: waits until the interval end + clock skew has passed on the database clock and no transaction that started before it and wrote `service_requests` (holds a lock on it or a partition, prepared ones included) is still open; fails, naming the pid, if one stays open too long. Other old write transactions are waited for at most `unrelated_wait_s` past the end + skew, then the gate opens with a warning naming them |
| `plan_batches` | one SQL query plans keyset batches of at most `batch_size` rows; the interval's first plan is kept and reused by its reruns |
| `build_batches` | reads the interval batch by batch, converts rows to the API contract, quarantines bad rows, and writes each JSON body and its `Idempotency-Key` to the outbox |
| `post_batches` | `SERVICES_SYNC_LANES` delivery lanes (`HttpOperator`): each POSTs its batches in order over one session, 30 s timeout, records every ack as it comes; retried with backoff + jitter + `Retry-After`, a retry resumes at the first unacknowledged batch |
| `record_delivery` | checks in the ledger that every batch was acknowledged (one alert naming those that were not), logs the run summary |
| `reconcile_interval` | over the run's current batches (not those a later build replaced): fails loudly if an ack count differs from what was sent, or a row now in the interval was committed after it was read and never sent; warns, naming the fix, about rows updated in place without touching `last_modified_date` |

**Connections:** `services_source_db` (postgres; `SELECT` on `service_requests`),
`services_api` (http; host, scheme and auth header of the receiver; extra
`{"Content-Encoding": "gzip"}` sends compressed bodies). State tables (ledger, outbox,
quarantine) go to schema `services_sync` of `SERVICES_SYNC_STATE_CONN_ID` (default: the source).
A `timestamp without time zone` source is read in `SERVICES_SYNC_NAIVE_TIMEZONE` by every task
(selection and formatting); rows holding values the contract cannot carry (`'infinity'`, a year
past 9999, a fractional status) are quarantined and never fail their batch.

**Params:** `batch_size` (records per POST, default 1000), `max_batch_bytes` (default 1 MiB),
`unrelated_wait_s` (how long the gate waits for old write transactions that hold no lock on
`service_requests`; default `SERVICES_SYNC_UNRELATED_WRITER_WAIT_S`, 300).

**Buffer, order, no stale overwrite.** Bodies wait in the outbox until acknowledged. An hour
that fails past its retry budget does not block later hours: the next run's lanes send its
batches first, oldest first, and drop (at send time) every record whose source row changed
since, because the newer version goes out with a later hour.

**Alerts** go to e-mail (connection `services_alerts_smtp`, recipients in
`SERVICES_SYNC_ALERT_EMAIL_TO`) and Slack (incoming-webhook connection `services_alerts_slack`),
each only if its connection exists: once per failed run, when rows are quarantined, and when a
run is not finished `SERVICES_SYNC_RUN_DEADLINE_MIN` (120; 0 = off) minutes after it was queued.

**Reruns and backfills** are safe: a rerun reads exactly its data interval with the interval's
first plan, and a batch's `Idempotency-Key` comes from the interval and the body (never the run
id), so unchanged batches go out with the same keys and the receiver keeps them once. To send one
past hour again: `airflow backfill create --dag-id services_requests_sync --from-date S
--to-date S --reprocess-behavior completed --max-active-runs 1` (S = the hour's start). Never
`airflow dags trigger --logical-date`: in Airflow 3.3 it takes the interval from the time of
triggering, and `check_run_setup` refuses such a run.

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
    gate_params,
    hourly_dag_args,
    plan_args,
)
from services_sync.query import run_setup, tasks
from services_sync.query.mode import POSTGRES_QUERY as SOURCE

DAG_ID = "services_requests_sync"
SETTINGS = load_settings()


@dag(
    dag_id=DAG_ID,
    # Not "@hourly": a bare cron string is a zero-width interval in Airflow 3.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    catchup=SETTINGS.catchup,  # on: an hour missed while the scheduler was down is still sent
    params={**batch_params(SETTINGS), **gate_params(SETTINGS)},
    tags=["services", "sync", "hourly"],
    doc_md=__doc__,
    **hourly_dag_args(SETTINGS, source=SOURCE),  # one run at a time, retries, alerts
)
def services_requests_sync():
    """check_run_setup → gate → plan_batches → build_batches → post_batches[lanes] → record."""

    @task
    def check_run_setup(**context) -> str:
        """Fail fast, naming the fix, on a wrong interval, a missing connection or grant."""
        return run_setup.check_run_setup_from_context(DAG_ID, SOURCE, context)

    wait_for_open_transactions = SqlSensor(
        task_id="wait_for_open_transactions",
        success=tasks.commit_gate_open,
        failure=tasks.commit_gate_failed,
        # Poke mode, bounded; old writers that never touched the table: up to this run's param.
        **gate_args(SETTINGS, SOURCE, unrelated_wait_s="{{ params.unrelated_wait_s }}"),
    )

    plan_batches = SQLExecuteQueryOperator(
        task_id="plan_batches",
        output_processor=tasks.keep_plan,  # the plan goes to the state DB, a summary to XCom
        **plan_args(SETTINGS, SOURCE),
    )

    chain(
        check_run_setup(),
        wait_for_open_transactions,
        plan_batches,
        *deliver_interval(DAG_ID, SETTINGS, SOURCE),
    )


allow_dag_test(services_requests_sync())  # `airflow dags test` with the DeadlineAlert on
