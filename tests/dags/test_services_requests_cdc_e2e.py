"""The CDC DAG end to end: dag.test() on a wal_level=logical PostgreSQL and the real receiver.

Each test gets its own source database, slot and publication (random names, slot dropped
after). Writers commit with ``synchronous_commit = on``: the test cluster runs with it off, and
a peek decodes only flushed WAL.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.seed import insert_rows
from services_sync.cdc import source as cdc_source
from services_sync.core.transform import transform_rows

pytestmark = pytest.mark.e2e

OPENED = pendulum.datetime(2025, 5, 13, 9, tz="UTC")
T = pendulum.datetime(2025, 5, 14, 10, 15, tz="UTC")
_HOURS = itertools.count()


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder="dags")
    assert bag.import_errors == {}
    return bag.dags["services_requests_cdc"]


@pytest.fixture
def cdc(source_db, monkeypatch):
    """Slot and publication names for this test; REPLICA IDENTITY FULL; the slot dropped after."""
    slot = f"ss_slot_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SERVICES_SYNC_CDC_SLOT", slot)
    monkeypatch.setenv("SERVICES_SYNC_CDC_PUBLICATION", f"ss_pub_{uuid.uuid4().hex[:8]}")
    with writer(source_db) as conn:
        conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
    yield slot
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        )


def writer(dsn: str) -> psycopg.Connection:
    """Autocommit, and each commit flushed before it returns (see the module docstring)."""
    return psycopg.connect(dsn, autocommit=True, options="-c synchronous_commit=on")


def run(dag, **conf):
    """One run of the CDC DAG (a new hour each time: runs are labelled by their interval).

    Every param is passed: dag.test() keeps the conf of an earlier run in the DAG's params.
    """
    logical_date = pendulum.datetime(2025, 6, 1, tz="UTC") + timedelta(hours=next(_HOURS))
    conf = {"batch_size": 1000, "initial_snapshot": False, **conf}
    return dag.test(logical_date=logical_date, run_conf=conf)


def rows(prefix: str, n: int, status: int = 1) -> list[tuple]:
    return [
        ("water", f"{prefix}-{i:04d}", OPENED, str(status), T + timedelta(seconds=i))
        for i in range(n)
    ]


def inspect(receiver, what):
    return requests.get(f"{receiver.url}/inspect/{what}", timeout=5).json()


def source_state(dsn: str) -> list[dict]:
    """What the receiver should hold: the contract record of every valid source row."""
    with psycopg.connect(dsn) as conn:
        table = conn.execute(
            "SELECT service_id, request_id, opening_date, status_id, last_modified_date "
            "FROM service_requests"
        ).fetchall()
    return sorted(transform_rows(table).records, key=lambda r: r["request_id"])


def receiver_state(receiver) -> list[dict]:
    return sorted(
        (
            {k: v for k, v in r.items() if k != "idempotency_key"}
            for r in inspect(receiver, "state")
        ),
        key=lambda r: r["request_id"],
    )


def ledger_keys(dsn: str) -> list[str]:
    """Idempotency keys of every batch the CDC DAG built."""
    with psycopg.connect(dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT idempotency_key FROM services_sync.delivery_ledger"
                " WHERE dag_id = 'services_requests_cdc' ORDER BY window_id, batch_index"
            )
        ]


def assert_lane_batches(dsn: str, batches: list[dict], per_batch: int) -> None:
    """Each lane's records were cut in batches of ``per_batch`` (the last one may be shorter)."""
    with psycopg.connect(dsn) as conn:
        lanes = conn.execute(
            "SELECT lane, rows_sent FROM services_sync.delivery_ledger"
            " WHERE dag_id = 'services_requests_cdc' ORDER BY window_id, batch_index"
        ).fetchall()
    assert sorted(b["count"] for b in batches) == sorted(n for _, n in lanes)
    by_lane: dict[int, list[int]] = {}
    for lane, n in lanes:
        by_lane.setdefault(lane, []).append(n)
    for sizes in by_lane.values():
        assert all(n == per_batch for n in sizes[:-1]) and 0 < sizes[-1] <= per_batch, by_lane


def slot_position(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn) as conn:
        return cdc_source.slot_health(conn, slot)["confirmed_flush_lsn"]


def test_inserts_updates_and_multi_row_statements_reach_the_receiver(
    dag, airflow_db, source_db, receiver, cdc
):
    assert run(dag).state == "success"  # sets up the slot; nothing to send yet
    assert inspect(receiver, "stats")["records"] == 0
    with writer(source_db) as conn:
        insert_rows(conn, rows("A", 30))  # one multi-row statement
        conn.execute(
            "UPDATE service_requests SET status_id = '3', last_modified_date = %s "
            "WHERE request_id IN ('A-0001', 'A-0002')",
            (T + timedelta(minutes=5),),
        )
        conn.execute("UPDATE service_requests SET status_id = '4' WHERE request_id = 'A-0001'")
    before = slot_position(source_db, cdc)

    assert run(dag, batch_size=7).state == "success"

    assert receiver_state(receiver) == source_state(source_db)
    # Collapsed: the newest version of each request only, 30 records, each lane's in
    # batches of at most 7.
    assert inspect(receiver, "stats")["records"] == 30
    assert_lane_batches(source_db, inspect(receiver, "batches"), per_batch=7)
    assert all(
        b["idempotency_key"].startswith("services-requests.cdc.v1:")
        for b in inspect(receiver, "batches")
    )
    assert slot_position(source_db, cdc) > before  # acknowledged only now

    assert run(dag).state == "success"  # nothing new
    assert inspect(receiver, "stats")["records"] == 30


def test_every_transition_in_commit_order_when_collapse_is_off(
    dag, airflow_db, source_db, receiver, cdc, monkeypatch
):
    monkeypatch.setenv("SERVICES_SYNC_CDC_COLLAPSE", "off")
    assert run(dag).state == "success"
    with writer(source_db) as conn:
        insert_rows(conn, rows("B", 1))
        for status in (2, 3, 4):
            conn.execute("UPDATE service_requests SET status_id = %s", (str(status),))
    assert run(dag).state == "success"
    received = inspect(receiver, "requests")
    assert [r["status_id"] for r in received] == [1, 2, 3, 4]
    assert receiver_state(receiver) == source_state(source_db)


def window_status(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0] for r in conn.execute("SELECT status FROM services_sync.cdc_windows ORDER BY 1")
        ]


def test_a_transaction_open_across_the_window_end_is_delivered_by_the_next_run(
    dag, airflow_db, source_db, receiver, cdc
):
    assert run(dag).state == "success"
    with writer(source_db) as open_txn, writer(source_db) as other:
        open_txn.execute("BEGIN")
        insert_rows(open_txn, rows("LATE", 3))
        insert_rows(other, rows("EARLY", 2))
        assert run(dag).state == "success"
        assert sorted(r["request_id"] for r in inspect(receiver, "requests")) == [
            "EARLY-0000",
            "EARLY-0001",
        ]
        open_txn.execute("COMMIT")
    assert run(dag).state == "success"
    assert receiver_state(receiver) == source_state(source_db)
    assert len(source_state(source_db)) == 5


def test_a_large_transaction_is_delivered_whole_in_batches(
    dag, airflow_db, source_db, receiver, cdc
):
    assert run(dag).state == "success"
    with writer(source_db) as conn, conn.transaction():
        for chunk in range(5):
            insert_rows(conn, rows(f"BIG{chunk}", 1000))
    assert run(dag, batch_size=1000).state == "success"
    assert_lane_batches(source_db, inspect(receiver, "batches"), per_batch=1000)
    assert inspect(receiver, "stats")["records"] == 5000
    assert receiver_state(receiver) == source_state(source_db)


def test_deletes_are_skipped_by_default(dag, airflow_db, source_db, receiver, cdc):
    assert run(dag).state == "success"
    with writer(source_db) as conn:
        insert_rows(conn, rows("D", 3))
    assert run(dag).state == "success"
    with writer(source_db) as conn:
        conn.execute("DELETE FROM service_requests WHERE request_id = 'D-0001'")
        # Inserted and deleted in the same window: nothing reaches the receiver.
        insert_rows(conn, rows("GONE", 1))
        conn.execute("DELETE FROM service_requests WHERE request_id = 'GONE-0000'")
    assert run(dag).state == "success"
    assert inspect(receiver, "stats")["records"] == 3


def test_deletes_as_a_status_flag(dag, airflow_db, source_db, receiver, cdc, monkeypatch):
    monkeypatch.setenv("SERVICES_SYNC_CDC_DELETES", "status")
    monkeypatch.setenv("SERVICES_SYNC_CDC_DELETED_STATUS_ID", "-9")
    assert run(dag).state == "success"
    with writer(source_db) as conn:
        insert_rows(conn, rows("D", 2))
    assert run(dag).state == "success"
    with writer(source_db) as conn:
        deleted_at = conn.execute(
            "DELETE FROM service_requests WHERE request_id = 'D-0001' RETURNING now()"
        ).fetchone()[0]
    assert run(dag).state == "success"
    tombstone = receiver_state(receiver)[1]
    assert tombstone == {
        "service_id": "water",
        "request_id": "D-0001",
        "opening_date": "2025-05-13T09:00:00Z",
        "status_id": -9,
        "last_modified_date": deleted_at.astimezone(pendulum.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def test_initial_snapshot_sends_existing_rows_once_with_the_stream(
    dag, airflow_db, source_db, receiver, cdc
):
    with writer(source_db) as conn:
        insert_rows(conn, rows("OLD", 4))  # before the slot exists: only a snapshot has them
    assert run(dag).state == "success"
    assert inspect(receiver, "stats")["records"] == 0
    with writer(source_db) as conn:
        insert_rows(conn, rows("NEW", 3))  # in the slot AND in the coming snapshot
        conn.execute("UPDATE service_requests SET status_id = '5' WHERE request_id = 'OLD-0000'")
    assert run(dag, initial_snapshot=True).state == "success"
    received = sorted(r["request_id"] for r in inspect(receiver, "requests"))
    assert received == sorted({r["request_id"] for r in source_state(source_db)})  # each once
    assert receiver_state(receiver) == source_state(source_db)
    with writer(source_db) as conn:
        insert_rows(conn, rows("AFTER", 1))
    assert run(dag).state == "success"
    assert receiver_state(receiver) == source_state(source_db)
    assert inspect(receiver, "stats")["duplicates"] == 0


def test_receiver_outage_after_part_of_a_window_redelivers_with_the_same_keys(
    dag, airflow_db, source_db, receiver, cdc
):
    assert run(dag).state == "success"
    with writer(source_db) as conn:
        insert_rows(conn, rows("O", 9))
    position = slot_position(source_db, cdc)
    # The first POST goes through, then the receiver is down for longer than the retries.
    requests.post(
        f"{receiver.url}/faults",
        json={"faults": [{"delay_s": 0.0}, {"status": 503, "times": 100}]},
        timeout=5,
    ).raise_for_status()
    assert run(dag, batch_size=3).state == "failed"
    first_keys = {b["idempotency_key"] for b in inspect(receiver, "batches")}
    assert len(first_keys) == 1
    assert slot_position(source_db, cdc) == position  # not acknowledged
    assert window_status(source_db) == ["acknowledged", "captured"]

    requests.delete(f"{receiver.url}/faults", timeout=5).raise_for_status()
    assert run(dag, batch_size=3).state == "success"
    keys = {b["idempotency_key"] for b in inspect(receiver, "batches")}
    assert first_keys < keys
    assert keys == set(ledger_keys(source_db))  # the window's batches, each once
    # The next run sent only what was not acknowledged: the outbox kept the rest.
    assert inspect(receiver, "stats")["duplicates"] == 0
    assert receiver_state(receiver) == source_state(source_db)
    assert slot_position(source_db, cdc) > position


def test_a_crash_before_the_slot_advances_sends_nothing_twice_and_advances_next_time(
    dag, airflow_db, source_db, receiver, cdc, monkeypatch
):
    assert run(dag).state == "success"
    with writer(source_db) as conn:
        insert_rows(conn, rows("C", 5))
    position = slot_position(source_db, cdc)

    def crash(*args, **kwargs):
        raise ConnectionError("server closed the connection unexpectedly")

    with monkeypatch.context() as patch:
        patch.setattr(cdc_source, "advance_slot", crash)
        assert run(dag, batch_size=2).state == "failed"
    delivered = inspect(receiver, "batches")
    assert {b["idempotency_key"] for b in delivered} == set(ledger_keys(source_db))
    assert slot_position(source_db, cdc) == position

    # Every batch of the window is acknowledged in the ledger: the next run resumes the window,
    # sends nothing again and advances the slot.
    assert run(dag, batch_size=2).state == "success"
    assert inspect(receiver, "batches") == delivered
    assert inspect(receiver, "stats")["duplicates"] == 0
    assert slot_position(source_db, cdc) > position


def test_an_acknowledgement_lost_by_the_server_does_not_resend_the_window(
    dag, airflow_db, source_db, receiver, cdc, monkeypatch
):
    """The slot position reaches disk at a checkpoint: a crash can undo an advance."""
    assert run(dag).state == "success"
    with writer(source_db) as conn:
        insert_rows(conn, rows("U", 4))
    position = slot_position(source_db, cdc)
    with monkeypatch.context() as patch:  # an advance that the server then forgot
        patch.setattr(cdc_source, "advance_slot", lambda conn, slot, lsn: lsn)
        assert run(dag).state == "success"
    assert slot_position(source_db, cdc) == position
    first = inspect(receiver, "batches")
    assert sum(b["count"] for b in first) == 4

    with writer(source_db) as conn:
        insert_rows(conn, rows("V", 1))
    assert run(dag).state == "success"
    batches = inspect(receiver, "batches")
    assert batches[: len(first)] == first
    assert [b["count"] for b in batches[len(first) :]] == [1]
    assert receiver_state(receiver) == source_state(source_db)
    assert slot_position(source_db, cdc) > position


def test_slot_lag_alert_fires_above_the_threshold(
    dag, airflow_db, source_db, receiver, cdc, monkeypatch, slack_webhook
):
    monkeypatch.setenv("SERVICES_SYNC_CDC_MAX_RETAINED_WAL_MB", "0")
    assert run(dag).state == "success"  # an alert is not a failure: the run still delivers
    texts = [p["json"]["text"] for p in slack_webhook]
    assert any(f"replication slot {cdc} is lagging" in t for t in texts), texts
    assert any("SERVICES_SYNC_CDC_MAX_RETAINED_WAL_MB" in t for t in texts)

    slack_webhook.clear()
    monkeypatch.setenv("SERVICES_SYNC_CDC_MAX_RETAINED_WAL_MB", "1024")
    assert run(dag).state == "success"
    assert slack_webhook == []


def test_a_run_triggered_without_a_logical_date_takes_the_initial_snapshot(
    dag, airflow_db, source_db, receiver, cdc
):
    """Regression: the initial-snapshot recipe (`airflow dags trigger services_requests_cdc
    --conf '{"initial_snapshot": true}'`, no logical date, so no data interval) staged the
    whole table and then failed: the build required an hourly interval."""
    with writer(source_db) as conn:
        insert_rows(conn, rows("EXISTING", 5))
    run = dag.test(logical_date=None, run_conf={"batch_size": 1000, "initial_snapshot": True})
    assert run.data_interval_start is None
    assert run.state == "success"
    assert receiver_state(receiver) == source_state(source_db)
    assert inspect(receiver, "stats")["records"] == 5
    with psycopg.connect(source_db) as conn:
        assert conn.execute(
            "SELECT count(*), count(interval_start) FROM services_sync.delivery_ledger"
        ).fetchone() == (len(ledger_keys(source_db)), 0)


def test_a_rejected_batch_keeps_the_slot_and_the_next_run_tries_it_again(
    dag, airflow_db, source_db, receiver, cdc
):
    assert run(dag).state == "success"
    with writer(source_db) as conn:
        insert_rows(conn, rows("P", 6))
    position = slot_position(source_db, cdc)
    requests.post(
        f"{receiver.url}/faults", json={"faults": [{"status": 422, "match": "P-0003"}]}, timeout=5
    ).raise_for_status()
    assert run(dag, batch_size=2).state == "failed"
    assert slot_position(source_db, cdc) == position
    assert window_status(source_db) == ["acknowledged", "captured"]
    # The receiver is fixed; the next run resumes the window and tries the rejected batch again.
    assert run(dag, batch_size=2).state == "success"
    assert receiver_state(receiver) == source_state(source_db)
    assert slot_position(source_db, cdc) > position
    assert inspect(receiver, "stats")["duplicates"] == 0
