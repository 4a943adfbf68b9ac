"""### Service requests → downstream API, every hour (CDC mode: PostgreSQL logical decoding)

Sends every committed change of PostgreSQL `service_requests` since the last run, read from the
write-ahead log through a logical replication slot (plugin `pgoutput`), to
`POST /services-data/requests` as JSON batches. Unlike query mode it sees late commits and
deletes, and it never scans the table.

| task | what it does |
|---|---|
| `check_cdc_setup` | fails at once, naming the fix, on a missing connection, `wal_level` not `logical` or a missing replica identity; creates the publication, the slot and the state tables if missing |
| `check_slot_health` | measures the WAL the slot retains, alerts above `SERVICES_SYNC_CDC_MAX_RETAINED_WAL_MB` or when `wal_status` is `unreserved`, fails when the slot is lost; writes a heartbeat |
| `capture_changes` | opens a window up to the flushed end of WAL (or resumes the unfinished one), peeks the slot **without consuming it**, stages the changes in the state database, keeps the newest per request, plans batches |
| `build_change_batch` | one per batch: converts its changes to the API contract, quarantines bad rows, builds the body and its `Idempotency-Key` (from commit LSN + position) |
| `post_change_batch` | one per batch: `HttpOperator` POST, 30 s timeout, retried with backoff + jitter, honors `Retry-After`, fails fast on 4xx, splits on 413; checks the ack |
| `record_delivery` | stores the acks in the delivery ledger, checks every batch was acked |
| `acknowledge_changes` | only now advances the slot past the window |

**Connections:** `services_source_db` (postgres; a role with `REPLICATION` and `SELECT` on
`service_requests`, on a server with `wal_level=logical`), `services_api` (http). State tables
go to schema `services_sync` of `SERVICES_SYNC_STATE_CONN_ID` (default: the source).

**Params:** `batch_size` (records per POST), `max_batch_bytes`, `initial_snapshot` (also send
the whole table as of one snapshot, exactly once with the stream: no gap, no double).

**Deletes** (`SERVICES_SYNC_CDC_DELETES`): `skip` (default; the contract has no delete) or
`status`: a deleted request is sent with `status_id = SERVICES_SYNC_CDC_DELETED_STATUS_ID`
(-1) and `last_modified_date` = the delete's commit time (needs `REPLICA IDENTITY FULL`).
`SERVICES_SYNC_CDC_COLLAPSE=off` sends every transition in commit order instead of the newest.

**Reruns:** the slot moves only after every batch of the window was acknowledged. A failed
run leaves the window open; the next run (or clearing this one) sends the same batches with
the same keys, then acknowledges. A run's data interval only labels it: what a run sends is
what the slot holds, so there is nothing to backfill (use `initial_snapshot` to resend the
table).

**Owner:** data-platform
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

# services_sync.cdc_tasks is imported inside each task: it pulls in psycopg and the pgoutput
# decoder, which parsing this file does not need.
from services_sync import tasks
from services_sync.alerts import SyncFailureNotifier
from services_sync.config import load_settings
from services_sync.operators import RequestBatchHttpOperator, post_batch_args

DAG_ID = "services_requests_cdc"
SETTINGS = load_settings()


@dag(
    dag_id=DAG_ID,
    # Not "@hourly": a bare cron string is a zero-width interval in Airflow 3.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=SETTINGS.start_date,
    catchup=False,  # each run takes everything the slot holds: missed hours need no runs
    max_active_runs=1,  # one window at a time, acknowledged in order
    default_args={
        "owner": "data-platform",
        "retries": SETTINGS.task_retries,
        "retry_delay": SETTINGS.task_retry_delay,
        "on_failure_callback": SyncFailureNotifier(),  # e-mail / Slack, per connection
    },
    params={
        "batch_size": Param(SETTINGS.default_batch_size, type="integer", minimum=1, maximum=50_000),
        "max_batch_bytes": Param(SETTINGS.max_batch_bytes, type="integer", minimum=1024),
        "initial_snapshot": Param(
            False,
            type="boolean",
            title="Initial snapshot",
            description="Also send every row of the table as of one snapshot, exactly once "
            "together with the changes (first load, or to resynchronise the receiver).",
        ),
    },
    tags=["services", "sync", "hourly", "cdc"],
    doc_md=__doc__,
)
def services_requests_cdc():
    """check_cdc_setup → check_slot_health → capture_changes → build/post[n] → acknowledge."""

    @task
    def check_cdc_setup():
        """Fail fast, naming the fix; create the publication, slot and state tables if missing."""
        from services_sync import cdc_tasks

        return cdc_tasks.check_cdc_setup(DAG_ID)

    @task
    def check_slot_health(run_id=None):
        """Alert when the slot retains too much WAL; write a heartbeat."""
        from services_sync import cdc_tasks

        return cdc_tasks.check_slot_health(DAG_ID, run_id)

    @task
    def capture_changes(params=None, run_id=None):
        """Stage the slot's pending changes (or resume the open window); plan its batches."""
        from services_sync import cdc_tasks

        return cdc_tasks.capture_changes(DAG_ID, run_id, params)

    @task(map_index_template="batch {{ task.op_kwargs['plan_row'][1] + 1 }}")
    def build_change_batch(plan_row, run_id=None, data_interval_start=None, data_interval_end=None):
        """Transform and quarantine one batch of changes; return its JSON body and headers."""
        from services_sync import cdc_tasks

        return cdc_tasks.build_change_batch(
            plan_row,
            dag_id=DAG_ID,
            run_id=run_id,
            data_interval_start=data_interval_start,
            data_interval_end=data_interval_end,
        )

    plan = capture_changes()
    post_change_batch = RequestBatchHttpOperator.partial(
        task_id="post_change_batch",
        # POST, 30 s timeout, ack check, retries with backoff + jitter + Retry-After
        **post_batch_args(SETTINGS),
    ).expand_kwargs(build_change_batch.expand(plan_row=plan).map(tasks.as_post_kwargs))

    @task(trigger_rule="none_failed", multiple_outputs=False)
    def record_delivery(
        plan, results, run_id=None, data_interval_start=None, data_interval_end=None
    ):
        """Store the acks in the delivery ledger; fail unless every batch was acknowledged."""
        return tasks.record_delivery(
            plan,
            results,
            dag_id=DAG_ID,
            run_id=run_id,
            data_interval_start=data_interval_start,
            data_interval_end=data_interval_end,
        )

    @task(multiple_outputs=False)
    def acknowledge_changes(plan):
        """Advance the slot past the delivered window (never before every batch is acked)."""
        from services_sync import cdc_tasks

        return cdc_tasks.acknowledge_changes(plan, dag_id=DAG_ID)

    check_cdc_setup() >> check_slot_health() >> plan
    record_delivery(plan, post_change_batch.output) >> acknowledge_changes(plan)


services_requests_cdc()
