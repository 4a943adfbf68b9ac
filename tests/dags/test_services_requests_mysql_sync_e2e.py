"""The MySQL query-mode DAG end to end: dag.test() on a real MariaDB, PostgreSQL state, receiver."""

from __future__ import annotations

from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.seed import insert_mysql_rows
from services_sync.core.transform import transform_rows

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

    # The status view of this DAG reads the same PostgreSQL ledger.
    from services_sync.ui.app import load_report

    report = load_report(dag_id=DAG_ID, now=H + timedelta(hours=3))
    delivered = {
        i.interval_start: (i.status, i.rows_delivered, i.rows_quarantined)
        for i in report.intervals
        if i.run_id
    }
    assert delivered == {
        H: ("delivered", 8, 2),
        H + timedelta(hours=1): ("delivered", 5, 0),
    }


def test_a_rerun_resends_identical_bodies_and_keys(
    dag, airflow_db, mariadb_server, mysql_db, state_db, receiver
):
    with mariadb_server.connect(mysql_db) as conn:
        insert_mysql_rows(conn, rows_for(H, 25, "R"))
    assert run_interval(dag, H, batch_size=10).state == "success"
    before = inspect(receiver, "batches")
    assert sorted(b["count"] for b in before) == [5, 10, 10]
    assert run_interval(dag, H, batch_size=10).state == "success"
    after = inspect(receiver, "batches")
    assert {(b["idempotency_key"], b["body_sha256"]) for b in after} == {
        (b["idempotency_key"], b["body_sha256"]) for b in before
    }


def test_reconciliation_tells_a_late_commit_from_an_update_in_place(
    dag, airflow_db, mariadb_server, mysql_db, state_db, receiver, caplog
):
    from airflow.sdk.exceptions import AirflowFailException

    from services_sync.mysql.mode import MYSQL_QUERY
    from services_sync.query import tasks

    with mariadb_server.connect(mysql_db) as conn:
        insert_mysql_rows(conn, rows_for(H, 4, "Q"))
    run = run_interval(dag, H)
    assert run.state == "success"
    args = {
        "dag_id": DAG_ID,
        "run_id": run.run_id,
        "data_interval_start": H,
        "data_interval_end": H + timedelta(hours=1),
        "source": MYSQL_QUERY,
    }
    # Updated in place: same last_modified_date, another status. A warning, not a failure.
    with mariadb_server.connect(mysql_db) as conn, conn.cursor() as cur:
        cur.execute("UPDATE service_requests SET status_id = '5' WHERE request_id = 'Q-0001'")
    result = tasks.reconcile_interval(**args)
    assert result["updated_in_place_rows"] == 1
    assert "Q-0001 (water)" in caplog.text and "status_id 2 -> 5" in caplog.text
    # A row committed into the hour after it was read (a clock behind the skew margin).
    with mariadb_server.connect(mysql_db) as conn:
        insert_mysql_rows(conn, [("water", "LATE-1", H, "1", H + timedelta(minutes=30))])
    with pytest.raises(AirflowFailException, match=r"1 row\(s\) in the interval were committed"):
        tasks.reconcile_interval(**args)
