"""Values PostgreSQL holds but the contract (or Python) cannot: quarantined, never a failed batch.

`'infinity'` and years past 9999 are valid PostgreSQL timestamps that psycopg cannot load into a
Python datetime: before the reader handed them over as text, one such row failed the read of its
whole batch, and with it every good row of the hour. A `numeric` status with a fraction, NaN or
beyond the 64-bit range loads, and must be quarantined, not truncated.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.seed import insert_rows

pytestmark = pytest.mark.e2e

H = pendulum.datetime(2025, 5, 14, 10, tz="UTC")
OPENED = "2025-05-13 09:00:00+00"


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder="dags")
    assert bag.import_errors == {}
    return bag.dags["services_requests_sync"]


@pytest.fixture
def numeric_status_source(source_db):
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE service_requests ALTER status_id TYPE numeric USING NULL")
    return source_db


def at(seconds: int) -> str:
    return (H + timedelta(seconds=seconds)).isoformat()


def test_rows_the_driver_cannot_load_are_quarantined_and_their_batch_is_delivered(
    dag, airflow_db, numeric_status_source, receiver
):
    good = [("water", f"OK-{i}", OPENED, str(i % 3 + 1), at(i)) for i in range(4)]
    odd = [
        ("water", "INF-OPEN", "infinity", "1", at(10)),
        ("water", "NEG-INF-OPEN", "-infinity", "1", at(11)),
        ("water", "YEAR-10000", "10000-01-01 00:00:00+00", "1", at(12)),
        ("water", "BC", "0044-03-15 12:00:00+00 BC", "1", at(13)),
        ("water", "FRACTION", OPENED, "1.5", at(14)),
        ("water", "NAN", OPENED, "NaN", at(15)),
        ("water", "HUGE", OPENED, "1e30", at(16)),
    ]
    with psycopg.connect(numeric_status_source, autocommit=True) as conn:
        insert_rows(conn, good + odd)  # one batch: the good rows share it with the odd ones

    run = dag.test(logical_date=H + timedelta(hours=1))

    assert run.state == "success"
    records = requests.get(f"{receiver.url}/inspect/requests", timeout=5).json()
    assert sorted((r["request_id"], r["status_id"]) for r in records) == [
        ("OK-0", 1),
        ("OK-1", 2),
        ("OK-2", 3),
        ("OK-3", 1),
    ]
    with psycopg.connect(numeric_status_source) as conn:
        quarantined = dict(
            conn.execute(
                "SELECT row_data->>'request_id', reason FROM services_sync.quarantined_requests"
            ).fetchall()
        )
        batches = conn.execute("SELECT count(*) FROM services_sync.delivery_ledger").fetchone()[0]
    assert batches == 1
    assert quarantined == {
        "INF-OPEN": "opening_date cannot be read as a contract value:"
        " timestamp too large (after year 10K): 'infinity'",
        "NEG-INF-OPEN": "opening_date cannot be read as a contract value:"
        " timestamp too small (before year 1): '-infinity'",
        "YEAR-10000": "opening_date cannot be read as a contract value:"
        " timestamp too large (after year 10K): '10000-01-01 00:00:00+00'",
        "BC": "opening_date cannot be read as a contract value:"
        " timestamp too small (before year 1): '0044-03-15 12:00:00+00 BC'",
        "FRACTION": "status_id is not an integer: 1.5",
        "NAN": "status_id is not a finite number: NaN",
        "HUGE": "status_id is out of the 64-bit integer range: 1000000000000000000000000000000",
    }
