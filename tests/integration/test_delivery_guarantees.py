"""Send-time stale filter, 413 splitting and reconciliation, on real PostgreSQL and the receiver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowFailException

from devkit.seed import insert_rows
from services_sync import outbox, state
from services_sync.config import load_settings
from services_sync.db import connect
from services_sync.lanes import drop_superseded_records
from services_sync.payload import Interval, body_records, build_body, idempotency_key
from services_sync.tasks import reconcile_interval
from services_sync.transform import transform_rows

H = datetime(2025, 5, 14, 10, tzinfo=UTC)
INTERVAL = Interval(H, H + timedelta(hours=1))
DAG_ID = "services_requests_sync"


def rows(n, hour=H, prefix="R"):
    return [
        ("water", f"{prefix}{i:03d}", hour - timedelta(days=1), "1", hour + timedelta(minutes=i))
        for i in range(n)
    ]


@pytest.fixture
def state_db(source_db):
    settings = load_settings()
    with connect(settings.state_conn_id) as conn:
        state.ensure_state_tables(conn, settings.state_schema)
    return source_db


def seed_batch(dsn, run_id, source_rows, interval=INTERVAL):
    """A batch built for ``interval`` by ``run_id``, pending in the outbox; the lane's view of it."""
    body = build_body(transform_rows(source_rows).records)
    settings = load_settings()
    key = idempotency_key(interval, body)
    with connect(settings.state_conn_id) as conn:
        outbox.store_batch(
            conn,
            settings.state_schema,
            outbox.BuiltBatch(
                batch_index=0,
                lane=0,
                rows_extracted=len(source_rows),
                rows_quarantined=0,
                records=len(source_rows),
                body=body,
                key=key,
                lower_bound=[interval.start.isoformat(), "", ""],
                upper_bound=[interval.end.isoformat(), "", ""],
            ),
            dag_id=DAG_ID,
            run_id=run_id,
            interval=interval,
        )
    return body, outbox.PendingBatch(
        DAG_ID, run_id, 0, interval.start, interval.end, None, key, b""
    )


def later_interval_built(batch):
    settings = load_settings()
    with connect(settings.state_conn_id) as conn:
        return outbox.later_interval_built(
            conn, settings.state_schema, dag_id=DAG_ID, interval_start=batch.interval_start
        )


def test_only_a_batch_older_than_the_newest_built_interval_is_checked_for_newer_versions(
    state_db,
):
    source_rows = rows(5)
    with psycopg.connect(state_db, autocommit=True) as conn:
        insert_rows(conn, source_rows)
    _body, batch = seed_batch(state_db, "run-1", source_rows)
    # While this interval is the newest built, nothing newer can reach the receiver before it:
    # the lane sends it exactly as built (same key on every retry).
    assert later_interval_built(batch) is False
    seed_batch(state_db, "run-2", rows(1, H + timedelta(hours=1), "N"), INTERVAL.next())
    assert later_interval_built(batch) is True


def test_records_superseded_by_a_later_version_are_dropped_at_send_time(state_db):
    source_rows = rows(5)
    with psycopg.connect(state_db, autocommit=True) as conn:
        insert_rows(conn, source_rows)
        body, batch = seed_batch(state_db, "run-1", source_rows)
        conn.execute(
            "UPDATE service_requests SET status_id = '5', last_modified_date = %s"
            " WHERE request_id = 'R002'",
            (H + timedelta(hours=1, minutes=5),),
        )
    fresh, superseded = drop_superseded_records(body, batch, load_settings())
    assert superseded == 1
    assert [r["request_id"] for r in body_records(fresh)] == ["R000", "R001", "R003", "R004"]
    # Stable: the same check on the refreshed body keeps it, and so its key, as it is.
    assert drop_superseded_records(fresh, batch, load_settings()) == (fresh, 0)


def test_a_record_whose_row_left_its_slice_without_a_newer_version_is_still_sent(state_db):
    """Absent from the batch's time slice is not superseded: before, every such record was
    dropped, so a slice read empty (rows deleted, or a naive column read in another zone)
    skipped the whole batch silently."""
    source_rows = rows(4)
    with psycopg.connect(state_db, autocommit=True) as conn:
        insert_rows(conn, source_rows)
        body, batch = seed_batch(state_db, "run-1", source_rows)
        conn.execute("DELETE FROM service_requests WHERE request_id IN ('R000', 'R001')")
        conn.execute(  # set back to an older time: not a newer version either
            "UPDATE service_requests SET last_modified_date = %s WHERE request_id = 'R002'",
            (H - timedelta(hours=3),),
        )
        conn.execute(
            "UPDATE service_requests SET last_modified_date = %s WHERE request_id = 'R003'",
            (H + timedelta(hours=2),),
        )
    fresh, superseded = drop_superseded_records(body, batch, load_settings())
    assert superseded == 1
    assert [r["request_id"] for r in body_records(fresh)] == ["R000", "R001", "R002"]

    with psycopg.connect(state_db, autocommit=True) as conn:
        conn.execute("DELETE FROM service_requests")
    assert drop_superseded_records(body, batch, load_settings()) == (body, 0)


def test_a_newer_version_within_a_second_of_the_sent_one_is_not_mistaken_for_it(state_db):
    """Sent stamps are whole seconds: a row at 10:05:00.4 was sent as 10:05:00Z; moved to
    10:05:00.9 it still formats the same and stays; moved to 10:05:01 it is newer."""
    source_rows = [("water", "S1", H, "1", H + timedelta(minutes=5, microseconds=400_000))]
    with psycopg.connect(state_db, autocommit=True) as conn:
        insert_rows(conn, source_rows)
        body, batch = seed_batch(state_db, "run-1", source_rows)
        conn.execute(
            "UPDATE service_requests SET last_modified_date = %s",
            (H + timedelta(minutes=5, microseconds=900_000),),
        )
        assert drop_superseded_records(body, batch, load_settings()) == (body, 0)
        conn.execute(
            "UPDATE service_requests SET last_modified_date = %s",
            (H + timedelta(minutes=5, seconds=1),),
        )
    assert drop_superseded_records(body, batch, load_settings()) == (None, 1)


def send_lane(run_id: str, interval_start) -> dict:
    """One try of delivery lane 1 of 1, as a task would run it."""
    from types import SimpleNamespace

    from services_sync.lanes import DeliveryLaneOperator

    settings = load_settings()
    lane = DeliveryLaneOperator(
        task_id="post_batches",
        lane=0,
        lanes=1,
        drop_superseded=True,
        http_conn_id=settings.api_conn_id,
        endpoint=settings.endpoint,
        extra_options={"timeout": 5, "check_response": False},
    )
    return lane.execute(
        {
            "dag": SimpleNamespace(dag_id=DAG_ID),
            "run_id": run_id,
            "ti": SimpleNamespace(try_number=1),
            "data_interval_start": interval_start,
        }
    )


def test_a_lane_retry_after_dropping_superseded_records_sends_the_same_smaller_body(
    state_db, receiver, monkeypatch
):
    """Regression: a retry after the stale filter had rebuilt a batch sent the stored (older,
    unfiltered) gzip bytes under the new key, and counted the superseded rows twice."""
    import json

    from services_sync.delivery import TransientDeliveryFailure

    port = int(receiver.url.rsplit(":", 1)[1])
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_API",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http",
                    "extra": {"Content-Encoding": "gzip"}}),
    )  # fmt: skip
    source_rows = rows(5)
    with psycopg.connect(state_db, autocommit=True) as conn:
        insert_rows(conn, source_rows)
        seed_batch(state_db, "run-1", source_rows)
        conn.execute(
            "UPDATE service_requests SET status_id = '5', last_modified_date = %s"
            " WHERE request_id = 'R002'",
            (H + timedelta(hours=1, minutes=5),),
        )
    seed_batch(state_db, "run-2", rows(1, H + timedelta(hours=1), "N"), INTERVAL.next())
    requests.post(f"{receiver.url}/faults", json={"faults": [{"status": 503}]}, timeout=5)

    with pytest.raises(TransientDeliveryFailure, match="HTTP 503"):
        send_lane("run-3", INTERVAL.start)
    send_lane("run-3", INTERVAL.start)  # the retry

    (batch,) = [
        b
        for b in requests.get(f"{receiver.url}/inspect/batches", timeout=5).json()
        if b["requests"][0]["request_id"].startswith("R")
    ]
    assert [r["request_id"] for r in batch["requests"]] == ["R000", "R001", "R003", "R004"]
    with psycopg.connect(state_db) as conn:
        row = conn.execute(
            "SELECT status, rows_sent, rows_superseded, idempotency_key, delivered_by_run"
            " FROM services_sync.delivery_ledger WHERE run_id = 'run-1'"
        ).fetchone()
    assert row == ("acked", 4, 1, batch["idempotency_key"], "run-3")


@pytest.fixture(scope="module")
def dag():
    return DagBag(dag_folder="dags").dags[DAG_ID]


def run_hour(dag, start, **conf):
    return dag.test(
        logical_date=pendulum.instance(start) + timedelta(hours=1), run_conf=conf or None
    )


def test_a_413_splits_the_batch_until_the_receiver_accepts_it(dag, airflow_db, source_db, receiver):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(8))
    requests.post(
        f"{receiver.url}/faults", json={"faults": [{"status": 413}, {"status": 413}]}, timeout=5
    ).raise_for_status()
    run = run_hour(dag, H)
    assert run.state == "success"
    batches = requests.get(f"{receiver.url}/inspect/batches", timeout=5).json()
    # 8 -> 413 -> 4 + 4; the first 4 -> 413 -> 2 + 2; then 2, 2, 4 are accepted.
    assert sorted(b["count"] for b in batches) == [2, 2, 4]
    assert len({b["idempotency_key"] for b in batches}) == 3
    with psycopg.connect(source_db) as conn:
        assert conn.execute(
            "SELECT accepted, parts FROM services_sync.delivery_ledger"
        ).fetchall() == [(8, 3)]


def test_reconciliation_names_rows_committed_after_the_interval_was_read(
    dag, airflow_db, source_db, receiver
):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(6))
    run = run_hour(dag, H, batch_size=4)
    assert run.state == "success"
    run_id = run.run_id
    kwargs = {
        "dag_id": DAG_ID,
        "run_id": run_id,
        "data_interval_start": H,
        "data_interval_end": H + timedelta(hours=1),
    }
    assert reconcile_interval(**kwargs)["rows_acknowledged"] == 6
    with psycopg.connect(source_db, autocommit=True) as conn:
        # A row that moves out of the interval (a later update) is not a loss ...
        conn.execute(
            "UPDATE service_requests SET last_modified_date = %s WHERE request_id = 'R001'",
            (H + timedelta(hours=2),),
        )
        assert reconcile_interval(**kwargs)["late_rows"] == 0
        # ... a row committed into the interval after it was read is.
        insert_rows(conn, [("roads", "LATE-1", H, "2", H + timedelta(minutes=59))])
    with pytest.raises(AirflowFailException) as info:
        reconcile_interval(**kwargs)
    assert "1 row(s) in the interval were committed after it was read" in str(info.value)
    assert "LATE-1 (roads)" in str(info.value)
