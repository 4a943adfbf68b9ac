"""The missing-run alert: on-call hears of it when nothing new has been delivered for too long.

Failure alerts and the stuck-run deadline cover runs that exist. Nothing covers runs that are
never created: a paused DAG, a DAG file that no longer imports, a scheduler that skips the DAG
(a manual run holding the next run's logical date), a scheduler that is down. The watchdog
looks at the outcome instead: how far the delivery ledger says the pipeline has delivered,
whichever capture mode runs. Two ways to run it:

* the ``services_sync_watchdog`` DAG (every 15 minutes) alerts through the same channels as
  the pipeline when the lag passes ``SERVICES_SYNC_MAX_DELIVERY_LAG_MIN``, again every
  ``SERVICES_SYNC_WATCHDOG_REPEAT_MIN`` while it lasts, and once more when delivery is back;
* ``python -m services_sync.core.watchdog`` prints the lag and exits 1 when it is too large, for a
  monitor outside Airflow (cron, Nagios, a Kubernetes probe): the only check that still works
  when the scheduler itself is down.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services_sync.core.alerts import Alert
from services_sync.core.config import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What the watchdog concludes at ``now`` (pure: see :func:`judge`)."""

    lag: timedelta
    late: bool
    alert: str | None  # "late", "recovered" or None
    late_since: datetime | None
    alerted_at: datetime | None


def judge(
    *,
    now: datetime,
    delivered_up_to: datetime | None,
    first_seen: datetime,
    late_since: datetime | None,
    alerted_at: datetime | None,
    max_lag: timedelta,
    repeat: timedelta,
) -> Verdict:
    """Late or not, and whether to alert now.

    The lag runs from the newest delivered point, or, before anything was ever delivered,
    from when the watchdog first looked (a new deployment that never delivers is late too).
    """
    lag = now - (delivered_up_to or first_seen)
    if lag > max_lag:
        due = alerted_at is None or now - alerted_at >= repeat
        return Verdict(
            lag, True, "late" if due else None, late_since or now, now if due else alerted_at
        )
    return Verdict(lag, False, "recovered" if alerted_at is not None else None, None, None)


def delivered_up_to(conn: Any, schema: str) -> datetime | None:
    """How far the pipeline has delivered (``delivered_up_to.sql``), None if nothing yet."""
    from psycopg import sql as pgsql

    from services_sync.core.db import state_sql

    with conn.cursor() as cur:
        table = pgsql.Identifier(schema, "cdc_windows").as_string(conn)
        cur.execute(state_sql("delivered_up_to.sql", schema), {"cdc_windows": table})
        newest, has_cdc = cur.fetchone()
        if has_cdc:
            cur.execute(state_sql("cdc_delivered_up_to.sql", schema))
            cdc = cur.fetchone()[0]
            newest = max((t for t in (newest, cdc) if t is not None), default=None)
    return newest


def check_delivery(settings: Settings | None = None) -> dict[str, Any]:
    """The watchdog DAG's task: judge the lag, remember it, alert when due.

    It never fails because the pipeline is late (that is an alert, not a watchdog failure);
    it fails, and so alerts through the failure callback, when it cannot read the ledger.
    """
    from services_sync.core import state
    from services_sync.core.alerts import send_alert
    from services_sync.core.db import connect, state_sql

    settings = settings or load_settings()
    schema = settings.state_schema
    with connect(settings.state_conn_id) as conn:
        state.ensure_state_tables(conn, schema)
        with conn.cursor() as cur:
            cur.execute(state_sql("watchdog_state.sql", schema))
        newest = delivered_up_to(conn, schema)
        with conn.cursor() as cur:
            cur.execute(state_sql("watchdog_read.sql", schema))
            first_seen, late_since, alerted_at, now = cur.fetchone()
        verdict = judge(
            now=now,
            delivered_up_to=newest,
            first_seen=first_seen,
            late_since=late_since,
            alerted_at=alerted_at,
            max_lag=settings.max_delivery_lag,
            repeat=settings.watchdog_repeat,
        )
        with conn.cursor() as cur:
            cur.execute(
                state_sql("watchdog_write.sql", schema),
                {"late_since": verdict.late_since, "alerted_at": verdict.alerted_at},
            )
    summary = {
        "delivered_up_to": newest.isoformat() if newest else None,
        "lag_min": round(verdict.lag.total_seconds() / 60, 1),
        "late": verdict.late,
        "alert": verdict.alert,
    }
    log.info("%s", _line(newest, verdict, settings))
    if verdict.alert:
        send_alert(watchdog_alert(verdict, newest, settings), settings)
    return summary


def watchdog_alert(verdict: Verdict, newest: datetime | None, settings: Settings) -> Alert:
    """The late (or recovered) alert."""
    delivered = newest.isoformat() if newest else "nothing yet"
    if verdict.alert == "recovered":
        return Alert(
            title="[services-sync] delivery is on time again",
            facts=[("Delivered up to", delivered), ("Lag", _duration(verdict.lag))],
        )
    return Alert(
        title=f"[services-sync] nothing delivered for {_duration(verdict.lag)}",
        facts=[
            ("Delivered up to", delivered),
            ("Lag", _duration(verdict.lag)),
            ("Threshold", _duration(settings.max_delivery_lag)),
            ("Late since", verdict.late_since.isoformat() if verdict.late_since else "?"),
            (
                "What to check",
                "Is the DAG paused (airflow dags list)? Does it import (airflow dags "
                "list-import-errors)? Are its runs failing or stuck (airflow dags list-runs "
                "services_requests_sync)? Is a manual run holding the next run's logical date "
                "(the scheduler logs 'run already exists')? Is the scheduler up "
                "(GET /api/v2/monitor/health)?",
            ),
        ],
    )


def _duration(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _line(newest: datetime | None, verdict: Verdict, settings: Settings) -> str:
    state = "LATE" if verdict.late else "ok"
    delivered = newest.isoformat() if newest else "nothing yet"
    return (
        f"{state}: delivered up to {delivered}, lag {_duration(verdict.lag)} "
        f"(threshold {_duration(settings.max_delivery_lag)})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print how far delivery is; exit 1 when the lag passes the threshold (read-only)."""
    import psycopg

    from services_sync.core.db import connect

    parser = argparse.ArgumentParser(
        prog="python -m services_sync.core.watchdog",
        description="Exit 1 when the pipeline has delivered nothing new for too long.",
    )
    parser.add_argument(
        "--max-lag-min",
        type=float,
        help="threshold in minutes (default: SERVICES_SYNC_MAX_DELIVERY_LAG_MIN, 180)",
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    max_lag = timedelta(minutes=args.max_lag_min) if args.max_lag_min else settings.max_delivery_lag
    try:
        with connect(settings.state_conn_id) as conn:
            newest = delivered_up_to(conn, settings.state_schema)
            now = conn.execute("SELECT now()").fetchone()[0]
    except psycopg.errors.UndefinedTable:
        newest = None  # the state tables do not exist: no run ever started
    if newest is None:
        print("LATE: nothing delivered yet")
        return 1
    verdict = judge(
        now=now,
        delivered_up_to=newest,
        first_seen=newest,
        late_since=None,
        alerted_at=None,
        max_lag=max_lag,
        repeat=settings.watchdog_repeat,
    )
    print(_line(newest, verdict, dataclasses.replace(settings, max_delivery_lag=max_lag)))
    return 1 if verdict.late else 0


if __name__ == "__main__":
    sys.exit(main())
