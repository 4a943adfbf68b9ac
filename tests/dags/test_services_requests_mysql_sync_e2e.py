"""The MySQL query-mode DAG end to end: dag.test() on a real MariaDB, PostgreSQL state, receiver."""

from __future__ import annotations

from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.seed import insert_mysql_rows
from services_sync.transform import transform_rows

pytestmark = pytest.mark.e2e

H = pendulum.datetime(2025, 5, 14, 10, tz="UTC")
DAG_ID = "services_requests_mysql_sync"


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder="dags")
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def run_interval(dag, start, **conf):
    """Run the DAG for [start, start + 1h): a manual run's interval is the hour before its date."""
    run = dag.test(logical_date=start + timedelta(hours=1), run_conf=conf or None)
    assert (run.data_interval_start, run.data_interval_end) == (start, start + timedelta(hours=1))
    return run


def rows_for(hour, n, prefix):
    return [
        (
            "water",
            f"{prefix}-{i:04d}",
            hour - timedelta(days=1),
            str(1 + i % 5),
            hour + timedelta(seconds=i, microseconds=123456),
        )
        for i in range(n)
    ]


def inspect(receiver, what):
    return requests.get(f"{receiver.url}/inspect/{what}", timeout=5).json()


def state_rows(dsn, sql):
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def task_states(run):
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_two_intervals_deliver_exactly_their_records_and_quarantine_bad_rows(
    dag, airflow_db, mariadb_server, mysql_db, state_db, receiver
):
    first = rows_for(H, 7, "A")
    second = rows_for(H + timedelta(hours=1), 5, "B")
    malformed = [
        ("water", None, H - timedelta(days=1), "2", H + timedelta(minutes=20)),
        ("roads", "BAD-STATUS", H - timedelta(days=1), "open", H + timedelta(minutes=21)),
    ]
    # The half-open edges: exactly the end belongs to the next hour, a microsecond before it not.
    edges = [
        ("roads", "EDGE-END", H, "1", H + timedelta(hours=1) - timedelta(microseconds=1)),
        ("roads", "EDGE-NEXT", H, "1", H + timedelta(hours=2)),
    ]
    with mariadb_server.connect(mysql_db) as conn:
        insert_mysql_rows(conn, first + second + malformed + edges)

    assert run_interval(dag, H).state == "success"
    assert run_interval(dag, H + timedelta(hours=1)).state == "success"

    expected = transform_rows(first + second + edges[:1]).records
    received = inspect(receiver, "requests")
    assert {
        r["request_id"]: {k: v for k, v in r.items() if k != "idempotency_key"} for r in received
    } == {r["request_id"]: r for r in expected}
    assert inspect(receiver, "stats")["duplicates"] == 0
    quarantined = state_rows(
        state_db,
        "SELECT row_data->>'request_id', reason FROM services_sync.quarantined_requests ORDER BY 2",
    )
    assert quarantined == [
        (None, "request_id is NULL"),
        ("BAD-STATUS", "status_id is not an integer: 'open'"),
    ]
    runs = state_rows(
        state_db,
        "SELECT dag_id, interval_start, rows_extracted, rows_sent, rows_quarantined"
        " FROM services_sync.delivery_runs ORDER BY interval_start",
    )
    assert runs == [(DAG_ID, H, 10, 8, 2), (DAG_ID, H + timedelta(hours=1), 5, 5, 0)]
