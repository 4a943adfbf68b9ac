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
from services_sync import cdc_source
from services_sync.transform import transform_rows

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
    """One run of the CDC DAG (a new hour each time: runs are labelled by their interval)."""
    logical_date = pendulum.datetime(2025, 6, 1, tz="UTC") + timedelta(hours=next(_HOURS))
    return dag.test(logical_date=logical_date, run_conf=conf or None)


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
        ({k: v for k, v in r.items() if k != "idempotency_key"} for r in inspect(receiver, "state")),
        key=lambda r: r["request_id"],
    )


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
    # Collapsed: the newest version of each request only, 30 records in ceil(30/7) batches.
    assert inspect(receiver, "stats")["records"] == 30
    assert sorted(b["count"] for b in inspect(receiver, "batches")) == [2, 7, 7, 7, 7]
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
