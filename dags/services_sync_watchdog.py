"""### Watchdog: alert when nothing new has been delivered for too long

Failure alerts and the stuck-run deadline fire for runs that exist. This DAG catches the runs
that are never created: a paused DAG, a DAG file that no longer imports, a scheduler that
skips the DAG (a manual run holding the next run's logical date). Every 15 minutes it reads how
far the delivery ledger says the pipeline has delivered (either capture mode) and alerts when
that is older than `SERVICES_SYNC_MAX_DELIVERY_LAG_MIN` (180), again every
`SERVICES_SYNC_WATCHDOG_REPEAT_MIN` (60) while it lasts, and once when delivery is back.

| task | what it does |
|---|---|
| `check_delivery` | reads the newest delivered interval (query mode) or acknowledged window (CDC) from the ledger, compares it with the database clock, alerts (e-mail / Slack) when it is late |

It is unpaused when it first appears, so it watches from the start; a new deployment that
never delivers is late too. **When the scheduler itself is down** this DAG cannot run either:
monitor from outside Airflow with `python -m services_sync.core.watchdog` (exit 1 when late) or
`GET /api/v2/monitor/health` of the API server.

**Connections:** the state database (`SERVICES_SYNC_STATE_CONN_ID`, default
`services_source_db`); alert connections as for the pipeline.

**Owner:** data-platform
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, dag, task

from services_sync.core import watchdog
from services_sync.core.config import load_settings
from services_sync.dag_factory import default_args

SETTINGS = load_settings()


@dag(
    dag_id="services_sync_watchdog",
    # A trigger timetable: the watchdog reads the ledger as it is now, it has no data interval.
    schedule=CronTriggerTimetable("*/15 * * * *", timezone="UTC"),
    start_date=SETTINGS.start_date,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,  # a watchdog nobody has to remember to switch on
    default_args=default_args(SETTINGS),  # it alerts if it cannot read the ledger itself
    tags=["services", "sync", "watchdog"],
    doc_md=__doc__,
)
def services_sync_watchdog():
    """check_delivery."""

    @task
    def check_delivery():
        """Alert when the newest delivery is older than the threshold (or is back on time)."""
        return watchdog.check_delivery()

    check_delivery()


services_sync_watchdog()
