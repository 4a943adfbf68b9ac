"""``airflow dags test`` through the real CLI, with the default settings (stuck-run alert on).

Regression test for the DeadlineAlert crash of ``DAG.test()`` in Airflow 3.3.2 (``'dict'
object has no attribute 'hex'`` at the end of a successful run): the suite used to switch the
alert off and never saw it. See ``services_sync.dag_factory.allow_dag_test``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.seed import insert_rows

pytestmark = pytest.mark.e2e

H = pendulum.datetime(2025, 5, 14, 10, tz="UTC")


def test_the_dag_carries_the_stuck_run_alert_by_default():
    assert "SERVICES_SYNC_RUN_DEADLINE_MIN" not in os.environ
    dag = DagBag(dag_folder="dags").dags["services_requests_sync"]
    (alert,) = dag.deadline
    assert alert.interval == timedelta(minutes=120)


def test_airflow_dags_test_sends_the_hour_before_its_date(airflow_db, source_db, receiver):
    rows = [
        ("water", f"IN-{i}", H - timedelta(days=1), "1", H + timedelta(minutes=i)) for i in range(4)
    ]
    after = [("water", "AFTER", H, "1", H + timedelta(hours=1))]
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows + after)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "dags",
            "test",
            "services_requests_sync",
            (H + timedelta(hours=1)).isoformat(),
        ],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "state=success" in result.stdout + result.stderr
    received = requests.get(f"{receiver.url}/inspect/requests", timeout=5).json()
    assert sorted(r["request_id"] for r in received) == [f"IN-{i}" for i in range(4)]
