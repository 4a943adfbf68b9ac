"""### Service requests → downstream API, every hour (CDC mode: MySQL / MariaDB binary log)

Sends every committed change of MySQL / MariaDB `service_requests` since the last acknowledged
position, read from the binary log as a replica reads it (`binlog_format=ROW`,
`binlog_row_image=FULL`, `binlog_row_metadata=FULL`), to `POST /services-data/requests` as
JSON batches. Sees late commits and deletes, never scans the table.

| task | what it does |
|---|---|
| `check_binlog_setup` | fails at once, naming every fix: connections, the table and grants, `log_bin`, format, row image, row metadata, `server_id`, `REPLICATION SLAVE` / `REPLICATION CLIENT`; creates the state tables; records where reading starts the first time |
| `check_binlog_retention` | fails at once, with the re-snapshot command, when the binary log at the saved position was purged; warns and alerts when the server's oldest kept log is close to it |
| `capture_changes` | opens a window up to the binlog's end (or resumes the unfinished one), stages its committed row events in the state database (transactions whole), keeps the newest per request, spreads requests over the lanes |
| `build_change_batches` | CDC mode's build: batches, quarantine, outbox, keys from commit position + index |
| `post_batches` | the delivery lanes |
| `record_delivery` | checks in the ledger that every batch of the window was acknowledged |
| `acknowledge_changes` | only now saves the position (window end: file + offset, and the GTID position) |

**Connections:** `services_mysql_db` (mysql, extra `{"client": "mysql-connector-python"}`; a
user with `SELECT` on `service_requests`, `REPLICATION SLAVE` and `REPLICATION CLIENT`),
`services_api` (http), and the PostgreSQL state database `SERVICES_SYNC_STATE_CONN_ID`.

**Params:** `batch_size`, `max_batch_bytes`, `initial_snapshot` (the whole table as of a
consistent snapshot, and the stream from the snapshot's own binlog position: no gap, no double).

**Deletes:** `SERVICES_SYNC_CDC_DELETES` (`skip` or `status`) and `SERVICES_SYNC_CDC_COLLAPSE`,
as in the PostgreSQL CDC DAG.

**Owner:** data-platform
"""

from __future__ import annotations

# The dag-processor imports the airflow.* modules a DAG file names once, before it forks the
# process that parses the file; named here, the delivery lanes' HTTP provider is not imported
# again on every parse (about 0.13 s a parse: bench/results.md, "Parse time").
import airflow.providers.http.operators.http  # noqa: F401
from airflow.sdk import CronDataIntervalTimetable, chain, dag, task

# services_sync.mysql.binlog_tasks is imported inside each task: it pulls in the binlog reader and
# psycopg, which parsing this file does not need.
from services_sync.core.config import load_settings
from services_sync.dag_factory import allow_dag_test, deliver_window, hourly_dag_args, window_params
from services_sync.mysql.mode import MYSQL_BINLOG

DAG_ID = "services_requests_mysql_cdc"
SETTINGS = load_settings()


@dag(
    dag_id=DAG_ID,
    # Not "@hourly": a bare cron string is a zero-width interval in Airflow 3.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    catchup=False,  # each run takes everything since the saved position: missed hours need none
    params=window_params(
        SETTINGS,
        "Also send every row of the table as of one consistent snapshot, exactly "
        "once together with the changes (first load, after a purged binlog, or to "
        "resynchronise the receiver).",
    ),
    tags=["services", "sync", "hourly", "cdc", "mysql"],
    doc_md=__doc__,
    **hourly_dag_args(SETTINGS),  # one window at a time, acknowledged in order; alerts
)
def services_requests_mysql_cdc():
    """check_binlog_setup → retention → capture → build → post_batches[lanes] → record → acknowledge."""

    @task(retries=0)
    def check_binlog_setup(run_id=None):
        """Fail fast, naming every fix; create the state tables; record the start position."""
        from services_sync.mysql import binlog_tasks

        return binlog_tasks.check_binlog_setup(DAG_ID, run_id)

    @task(retries=0)
    def check_binlog_retention(params=None, run_id=None):
        """Fail when the saved position's binlog was purged; warn when it is close."""
        from services_sync.mysql import binlog_tasks

        return binlog_tasks.check_binlog_retention(DAG_ID, run_id, params)

    @task
    def capture_changes(params=None, run_id=None):
        """Stage the binlog's committed changes (or resume the open window); spread over lanes."""
        from services_sync.mysql import binlog_tasks

        return binlog_tasks.capture_changes(DAG_ID, run_id, params)

    window = capture_changes()
    chain(
        check_binlog_setup(),
        check_binlog_retention(),
        window,
        *deliver_window(DAG_ID, SETTINGS, window, MYSQL_BINLOG),
    )


allow_dag_test(services_requests_mysql_cdc())  # `airflow dags test` with the DeadlineAlert on
