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
from services_sync.core import outbox, state
from services_sync.core.config import load_settings
from services_sync.core.db import connect
from services_sync.core.payload import Interval, body_records, build_body, idempotency_key
from services_sync.core.transform import transform_rows
from services_sync.delivery.lanes import drop_superseded_records
from services_sync.query.mode import POSTGRES_QUERY
from services_sync.query.tasks import reconcile_interval

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
    fresh, superseded = drop_superseded_records(body, batch, load_settings(), POSTGRES_QUERY)
    assert superseded == 1
    assert [r["request_id"] for r in body_records(fresh)] == ["R000", "R001", "R003", "R004"]
    # Stable: the same check on the refreshed body keeps it, and so its key, as it is.
    assert drop_superseded_records(fresh, batch, load_settings(), POSTGRES_QUERY) == (fresh, 0)


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
    fresh, superseded = drop_superseded_records(body, batch, load_settings(), POSTGRES_QUERY)
    assert superseded == 1
    assert [r["request_id"] for r in body_records(fresh)] == ["R000", "R001", "R002"]

    with psycopg.connect(state_db, autocommit=True) as conn:
        conn.execute("DELETE FROM service_requests")
    assert drop_superseded_records(body, batch, load_settings(), POSTGRES_QUERY) == (body, 0)


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
        assert drop_superseded_records(body, batch, load_settings(), POSTGRES_QUERY) == (body, 0)
        conn.execute(
            "UPDATE service_requests SET last_modified_date = %s",
            (H + timedelta(minutes=5, seconds=1),),
        )
    assert drop_superseded_records(body, batch, load_settings(), POSTGRES_QUERY) == (None, 1)


def send_lane(run_id: str, interval_start) -> dict:
    """One try of delivery lane 1 of 1, as a task would run it."""
    from types import SimpleNamespace

    from services_sync.delivery.lanes import DeliveryLaneOperator

    settings = load_settings()
    lane = DeliveryLaneOperator(
        task_id="post_batches",
        lane=0,
        lanes=1,
        source=POSTGRES_QUERY,
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

    from services_sync.core.ack import TransientDeliveryFailure

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


def reconcile_kwargs(run):
    return {
        "dag_id": DAG_ID,
        "run_id": run.run_id,
        "data_interval_start": H,
        "data_interval_end": H + timedelta(hours=1),
    }


def ledger_statuses(dsn, run_id):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT batch_index, status FROM services_sync.delivery_ledger WHERE run_id = %s"
            " ORDER BY batch_index",
            (run_id,),
        ).fetchall()


@pytest.mark.parametrize(
    ("fault", "replaced"),
    [
        pytest.param({"status": 400, "match": "R004"}, [1], id="one-batch-replaced"),
        pytest.param({"status": 400, "times": 2}, [0, 1], id="every-batch-replaced"),
    ],
)
def test_a_run_whose_batches_a_later_build_replaced_reconciles_without_a_false_alarm(
    dag, airflow_db, source_db, receiver, fault, replaced
):
    """Regression (issue 13, item 4): the run's ledger rows that a later build of the interval
    replaced were read by the reconciliation (never acknowledged: "sent 3, acknowledged None")
    while record_delivery ignores them, so clearing the failed run alarmed on a delivered hour."""
    from services_sync.delivery.record import record_delivery

    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(6))
    requests.post(f"{receiver.url}/faults", json={"faults": [fault]}, timeout=5).raise_for_status()
    first = run_hour(dag, H, batch_size=3)
    assert first.state == "failed"  # the receiver refused a batch
    rerun = run_hour(dag, H, batch_size=3)  # the rebuild of the hour delivers it
    assert rerun.state == "success"
    assert [
        i for i, status in ledger_statuses(source_db, first.run_id) if status == "replaced"
    ] == (replaced)
    stats = requests.get(f"{receiver.url}/inspect/stats", timeout=5).json()
    assert stats["records"] == 6

    # Clearing the failed run's tasks afterwards: both tasks read the same (current) batches.
    result = reconcile_interval(**reconcile_kwargs(first))
    assert result["replaced_batches"] == len(replaced)
    assert result["batches"] == 2 - len(replaced)
    assert result["rows_acknowledged"] == 3 * (2 - len(replaced))
    assert result["late_rows"] == 0
    summary = record_delivery(dag_id=DAG_ID, run_id=first.run_id, interval=INTERVAL)
    assert summary["batches"] == 2 - len(replaced)
    assert summary["replaced_batches"] == len(replaced)
    assert reconcile_interval(**reconcile_kwargs(rerun))["replaced_batches"] == 0
    with psycopg.connect(source_db) as conn:
        summaries = conn.execute(
            "SELECT run_id, batches FROM services_sync.delivery_runs"
            " WHERE finished_at IS NOT NULL ORDER BY finished_at"
        ).fetchall()
    # A run left with no batch of its own is not recorded as finished (the status view would
    # show its empty summary for the hour): the rerun speaks for it.
    kept = [(first.run_id, 2 - len(replaced))] if len(replaced) < 2 else []
    assert summaries == [(rerun.run_id, 2), *kept]


def test_a_row_updated_in_place_without_touching_last_modified_date_is_a_warning_not_an_alarm(
    dag, airflow_db, source_db, receiver, caplog
):
    """Regression (issue 13, item 4): an UPDATE that leaves last_modified_date alone made the
    row's version newer than the read's snapshot, and the reconciliation failed the run with a
    late-commit alarm. Now: the in-place update is a warning naming the cause and the fix, an
    update that changes nothing the contract carries is no alarm at all."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(6))
    run = run_hour(dag, H, batch_size=4)
    assert run.state == "success"
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("UPDATE service_requests SET status_id = '7' WHERE request_id = 'R002'")
        conn.execute("UPDATE service_requests SET status_id = status_id WHERE request_id = 'R004'")
    with caplog.at_level("WARNING", logger="services_sync"):
        result = reconcile_interval(**reconcile_kwargs(run))
    assert result["late_rows"] == 0
    assert result["updated_in_place_rows"] == 1
    assert result["unchanged_late_rows"] == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "updated in place without touching last_modified_date" in warning
    assert "R002 (water)" in warning and "status_id 1 -> 7" in warning
    assert "R004" not in warning
    assert "clear this run" in warning


def test_a_quarantined_row_touched_after_the_read_is_reported_as_quarantined_not_late(
    dag, airflow_db, source_db, receiver
):
    """BAD-2's opening date cannot be loaded by the driver ('infinity'): the reconciliation
    reads it the way the build did, so it matches its quarantined version and does not fail."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(
            conn,
            [
                *rows(3),
                ("water", "BAD-1", H, "open", H + timedelta(minutes=30)),
                ("water", "BAD-2", "infinity", "1", H + timedelta(minutes=31)),
            ],
        )
    run = run_hour(dag, H)
    assert run.state == "success"
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "UPDATE service_requests SET status_id = status_id WHERE request_id LIKE 'BAD-%'"
        )
    result = reconcile_interval(**reconcile_kwargs(run))
    assert (result["late_rows"], result["quarantined_late_rows"]) == (0, 2)


def test_a_late_commit_still_alarms_next_to_an_in_place_update_and_says_which_is_which(
    dag, airflow_db, source_db, receiver
):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(6))
    run = run_hour(dag, H, batch_size=4)
    assert run.state == "success"
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("UPDATE service_requests SET status_id = '7' WHERE request_id = 'R002'")
        # A new version inside the interval, committed after the read: a late commit too.
        conn.execute(
            "UPDATE service_requests SET status_id = '3', last_modified_date = %s"
            " WHERE request_id = 'R005'",
            (H + timedelta(minutes=50),),
        )
        insert_rows(conn, [("roads", "LATE-1", H, "2", H + timedelta(minutes=59))])
    with pytest.raises(AirflowFailException) as info:
        reconcile_interval(**reconcile_kwargs(run))
    message = str(info.value)
    assert "2 row(s) in the interval were committed after it was read" in message
    assert "LATE-1 (roads)" in message and "R005 (water)" in message
    assert "1 row(s) were updated in place without touching last_modified_date" in message
    late_part = message.split("committed after it was read")[1].split("\n")[0]
    assert "R002" not in late_part


def test_a_row_committed_into_an_interval_read_empty_is_a_late_commit(
    dag, airflow_db, source_db, receiver
):
    run = run_hour(dag, H)
    assert run.state == "success"
    assert reconcile_interval(**reconcile_kwargs(run))["late_rows"] == 0
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, [("roads", "LATE-1", H, "2", H + timedelta(minutes=59))])
    with pytest.raises(
        AirflowFailException, match=r"1 row\(s\) in the interval .*LATE-1 \(roads\)"
    ):
        reconcile_interval(**reconcile_kwargs(run))
