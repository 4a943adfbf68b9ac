"""The real DAG, end to end: dag.test() against a real PostgreSQL and the real receiver."""

from __future__ import annotations

from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.seed import insert_rows
from services_sync.core.transform import transform_rows

pytestmark = pytest.mark.e2e

H = pendulum.datetime(2025, 5, 14, 10, tz="UTC")


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder="dags")
    assert bag.import_errors == {}
    return bag.dags["services_requests_sync"]


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
            hour + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def inspect(receiver, what):
    return requests.get(f"{receiver.url}/inspect/{what}", timeout=5).json()


def state_rows(dsn, sql):
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def test_two_consecutive_intervals_deliver_exactly_their_records(
    dag, airflow_db, source_db, receiver
):
    first = rows_for(H, 7, "A")
    second = rows_for(H + timedelta(hours=1), 5, "B")
    malformed = [
        ("water", None, H - timedelta(days=1), "2", H + timedelta(minutes=20)),
        ("roads", "BAD-STATUS", H - timedelta(days=1), "open", H + timedelta(minutes=21)),
    ]
    outside = rows_for(H + timedelta(hours=2), 3, "LATER")
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, first + second + malformed + outside)

    assert run_interval(dag, H).state == "success"
    assert run_interval(dag, H + timedelta(hours=1)).state == "success"

    expected = transform_rows(first + second).records
    received = inspect(receiver, "requests")
    assert sorted((r["request_id"], r["last_modified_date"]) for r in received) == sorted(
        (r["request_id"], r["last_modified_date"]) for r in expected
    )
    assert {
        r["request_id"]: {k: v for k, v in r.items() if k != "idempotency_key"} for r in received
    } == {r["request_id"]: r for r in expected}
    assert inspect(receiver, "stats")["duplicates"] == 0

    quarantined = state_rows(
        source_db,
        "SELECT row_data->>'request_id', reason FROM services_sync.quarantined_requests ORDER BY 2",
    )
    assert quarantined == [
        (None, "request_id is NULL"),
        ("BAD-STATUS", "status_id is not an integer: 'open'"),
    ]
    runs = state_rows(
        source_db,
        "SELECT interval_start, rows_extracted, batches, batches_posted, rows_sent, rows_quarantined"
        " FROM services_sync.delivery_runs ORDER BY interval_start",
    )
    assert runs == [(H, 9, 1, 1, 7, 2), (H + timedelta(hours=1), 5, 1, 1, 5, 0)]
    ledger = state_rows(
        source_db,
        "SELECT idempotency_key, http_status, accepted, acked_at IS NOT NULL"
        " FROM services_sync.delivery_ledger ORDER BY interval_start",
    )
    assert [row[1:] for row in ledger] == [(200, 7, True), (200, 5, True)]
    assert sorted(b["idempotency_key"] for b in inspect(receiver, "batches")) == sorted(
        row[0] for row in ledger
    )


def test_rerunning_an_interval_resends_identical_bodies_and_keys(
    dag, airflow_db, source_db, receiver
):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows_for(H, 25, "R"))
    assert run_interval(dag, H, batch_size=10).state == "success"
    before = inspect(receiver, "batches")
    assert sorted(b["count"] for b in before) == [5, 10, 10]
    assert run_interval(dag, H, batch_size=10).state == "success"
    after = inspect(receiver, "batches")
    assert {(b["idempotency_key"], b["body_sha256"]) for b in after} == {
        (b["idempotency_key"], b["body_sha256"]) for b in before
    }
    assert len(after) == 3
    stats = inspect(receiver, "stats")
    assert (stats["records"], stats["duplicates"]) == (25, 3)


def test_an_interval_without_changes_sends_nothing_and_succeeds(
    dag, airflow_db, source_db, receiver
):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows_for(H + timedelta(hours=5), 3, "ELSEWHERE"))
    run = run_interval(dag, H)
    assert run.state == "success"
    assert inspect(receiver, "stats")["batches"] == 0
    runs = state_rows(source_db, "SELECT rows_extracted, batches FROM services_sync.delivery_runs")
    assert runs == [(0, 0)]


def test_a_rejected_batch_fails_the_run_with_the_receivers_reason(
    dag, airflow_db, source_db, receiver
):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows_for(H, 3, "R"))
    requests.post(
        f"{receiver.url}/faults", json={"faults": [{"status": 422}]}, timeout=5
    ).raise_for_status()
    run = run_interval(dag, H)
    assert run.state == "failed"
    lanes = {ti.map_index: ti for ti in run.get_task_instances() if ti.task_id == "post_batches"}
    assert lanes[0].state == "failed"  # batch 1 is lane 1's
    assert lanes[0].try_number == 1, "a 4xx must not be retried"
    assert {lanes[i].state for i in lanes if i} == {"success"}
    assert inspect(receiver, "stats")["records"] == 0
    ledger = state_rows(
        source_db, "SELECT status, http_status, error FROM services_sync.delivery_ledger"
    )
    assert ledger == [("rejected", 422, "HTTP 422 rejected the batch: injected fault")]


def test_a_poison_batch_stops_only_itself_and_the_run_alerts_once(
    dag, airflow_db, source_db, receiver, slack_webhook
):
    """Regression (issue: alert storms, lost acks): one failed batch used to keep every other
    batch's ack out of the ledger, and each failed mapped task sent its own alert."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows_for(H, 80, "P"))
    # 8 batches of 10 over 4 lanes: the third (lane 3, with the seventh) is refused; every lane
    # goes on, lane 3 included.
    requests.post(
        f"{receiver.url}/faults",
        json={"faults": [{"status": 400, "match": "P-0025"}]},
        timeout=5,
    ).raise_for_status()
    run = run_interval(dag, H, batch_size=10)
    assert run.state == "failed"
    ledger = state_rows(
        source_db,
        "SELECT batch_index, status, acked_at IS NOT NULL FROM services_sync.delivery_ledger"
        " ORDER BY batch_index",
    )
    assert ledger == [(i, "acked", True) if i != 2 else (2, "rejected", False) for i in range(8)]
    assert inspect(receiver, "stats")["records"] == 70
    (alert,) = slack_webhook
    assert "record_delivery failed" in alert["json"]["text"]
    assert "batch 3" in alert["json"]["text"]
