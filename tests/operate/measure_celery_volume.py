"""One hour of many changed rows, end to end, on the Celery stack: a measurement, opt-in.

Not part of ``make test`` (pytest collects ``test_*.py`` only; name this file to run it): it
measures, it asserts only that everything arrived. It boots the same stack as
test_celery_stack.py (api-server, scheduler, dag-processor, triggerer, two Celery workers, a
Redis of its own, PostgreSQL metadata) with the DAG's defaults for batches and lanes (1,000
records per POST, 4 lanes), puts N rows in the last whole hour, makes that hour the start
date, unpauses the DAG and lets the scheduler run it. It prints the run's wall time (run start
to end, and queued to end) and the task latencies; the README's Deploying section quotes them::

    .venv/bin/python -m pytest -s tests/operate/measure_celery_volume.py

``SERVICES_SYNC_CELERY_VOLUME_ROWS`` sets the number of rows (default 100,000).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta

import pendulum
import psycopg
import pytest

from devkit.airflow_stack import DAG_ID, rows
from devkit.seed import create_source_table, insert_rows
from tests.operate.test_backfill_scheduler import inspect
from tests.operate.test_celery_stack import (
    celery_stack,
    task_latencies,
    wait_for_run_of,
    wait_for_state,
)

pytestmark = pytest.mark.e2e

HOUR = pendulum.now("UTC").start_of("hour") - timedelta(hours=1)


def test_one_hour_of_many_rows_end_to_end(pg_cluster, receiver_server, tmp_path):
    count = int(os.environ.get("SERVICES_SYNC_CELERY_VOLUME_ROWS") or 100_000)
    source = pg_cluster.create_database(f"src_{uuid.uuid4().hex[:10]}")
    step = 3600 / count
    with psycopg.connect(source, autocommit=True) as conn:
        create_source_table(conn)
        insert_rows(
            conn,
            (
                (
                    f"svc-{i % 7}",
                    f"REQ-{i:09d}",
                    HOUR - timedelta(days=1),
                    str(1 + i % 5),
                    HOUR + timedelta(seconds=i * step),
                )
                for i in range(count)
            ),
        )
    with celery_stack(
        tmp_path,
        pg_cluster,
        source,
        receiver_server,
        {"SERVICES_SYNC_START_DATE": HOUR.isoformat(), "SERVICES_SYNC_HTTP_TIMEOUT_S": "60"},
    ) as stack:
        stack.cli("dags", "unpause", DAG_ID)
        run_id = wait_for_run_of(stack, HOUR)
        wait_for_state(stack, run_id, "success")
        ((queued, started, ended),) = rows(
            stack.meta_dsn,
            "SELECT queued_at, start_date, end_date FROM dag_run WHERE dag_id = %s AND run_id = %s",
            (DAG_ID, run_id),
        )
        durations = rows(
            stack.meta_dsn,
            "SELECT task_id, max(extract(epoch FROM end_date - start_date)) FROM task_instance"
            " WHERE dag_id = %s AND run_id = %s GROUP BY task_id",
            (DAG_ID, run_id),
        )
        stats = inspect(receiver_server, "stats")
        assert stats["records"] == count, stats
        figures = {
            "rows": count,
            "batches": stats["batches"],
            "run_start_to_end_s": round((ended - started).total_seconds(), 1),
            "queued_to_end_s": round((ended - queued).total_seconds(), 1),
            "task_max_s": {task: round(float(s), 2) for task, s in sorted(durations)},
            "latencies": task_latencies(stack),
        }
        print(f"celery volume figures: {json.dumps(figures)}")
