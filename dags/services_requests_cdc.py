"""### Service requests → downstream API, every hour (CDC mode: PostgreSQL logical decoding)

Sends every committed change of PostgreSQL `service_requests` since the last run, read from the
write-ahead log through a logical replication slot (plugin `pgoutput`), to
`POST /services-data/requests` as JSON batches. Unlike query mode it sees late commits and
deletes, and it never scans the table.

| task | what it does |
|---|---|
| `check_cdc_setup` | fails at once, naming the fix, on a missing connection, `wal_level` not `logical` or a missing replica identity; creates the publication, the slot and the state tables if missing |
| `check_slot_health` | measures the WAL the slot retains, alerts above `SERVICES_SYNC_CDC_MAX_RETAINED_WAL_MB` or when `wal_status` is `unreserved`, fails when the slot is lost; writes a heartbeat |
| `capture_changes` | opens a window up to the flushed end of WAL (or resumes the unfinished one), peeks the slot **without consuming it**, stages the changes in the state database, keeps the newest per request, spreads requests over the delivery lanes |
| `build_change_batches` | cuts each lane's changes into batches: converts them to the API contract, quarantines bad rows, writes each body and its `Idempotency-Key` (from commit LSN + position) to the outbox; a resumed window is not built again |
| `post_batches` | `SERVICES_SYNC_LANES` delivery lanes (`HttpOperator`), each request's changes in one lane, in commit order: 30 s timeout, every ack recorded as it comes, retried with backoff + jitter + `Retry-After`, a retry resumes at the first unacknowledged batch |
| `record_delivery` | checks in the ledger that every batch of the window was acknowledged (one alert naming those that were not) |
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
run leaves the window open with its batches in the outbox; the next run (or clearing this one)
sends those not acknowledged yet, with the same keys, then acknowledges. A run's data interval
only labels it: what a run sends is what the slot holds, so there is nothing to backfill, and
a run triggered by hand needs no logical date (`initial_snapshot` resends the table).

**Alerts:** once per failed run, on a lagging slot, and when a run is not finished
`SERVICES_SYNC_RUN_DEADLINE_MIN` (120) minutes after it was queued (a stuck CDC run is WAL
piling up on the source).

**Owner:** data-platform
"""

from __future__ import annotations

# The dag-processor imports the airflow.* modules a DAG file names once, before it forks the
# process that parses the file; named here, the delivery lanes' HTTP provider is not imported
# again on every parse (about 0.13 s a parse: bench/results.md, "Parse time").
import airflow.providers.http.operators.http  # noqa: F401
from airflow.sdk import CronDataIntervalTimetable, chain, dag, task

# services_sync.cdc.tasks is imported inside each task: it pulls in psycopg and the pgoutput
# decoder, which parsing this file does not need.
from services_sync.cdc.mode import POSTGRES_CDC
from services_sync.core.config import load_settings
from services_sync.dag_factory import allow_dag_test, deliver_window, hourly_dag_args, window_params

DAG_ID = "services_requests_cdc"
SETTINGS = load_settings()


@dag(
    dag_id=DAG_ID,
    # Not "@hourly": a bare cron string is a zero-width interval in Airflow 3.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    catchup=False,  # each run takes everything the slot holds: missed hours need no runs
    params=window_params(
        SETTINGS,
        "Also send every row of the table as of one snapshot, exactly once "
        "together with the changes (first load, or to resynchronise the receiver).",
    ),
    tags=["services", "sync", "hourly", "cdc"],
    doc_md=__doc__,
    **hourly_dag_args(SETTINGS),  # one window at a time, acknowledged in order; alerts
)
def services_requests_cdc():
    """check_cdc_setup → check_slot_health → capture → build → post_batches[lanes] → ack."""

    @task
    def check_cdc_setup():
        """Fail fast, naming the fix; create the publication, slot and state tables if missing."""
        from services_sync.cdc import tasks as cdc_tasks

        return cdc_tasks.check_cdc_setup(DAG_ID)

    @task
    def check_slot_health(run_id=None):
        """Alert when the slot retains too much WAL; write a heartbeat."""
        from services_sync.cdc import tasks as cdc_tasks

        return cdc_tasks.check_slot_health(DAG_ID, run_id)

    @task
    def capture_changes(params=None, run_id=None):
        """Stage the slot's pending changes (or resume the open window); spread them over lanes."""
        from services_sync.cdc import tasks as cdc_tasks

        return cdc_tasks.capture_changes(DAG_ID, run_id, params)

    window = capture_changes()
    chain(
        check_cdc_setup(),
        check_slot_health(),
        window,
        *deliver_window(DAG_ID, SETTINGS, window, POSTGRES_CDC),
    )


allow_dag_test(services_requests_cdc())  # `airflow dags test` with the DeadlineAlert on
