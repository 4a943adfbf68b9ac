"""CDC tasks on a real PostgreSQL: the setup check's errors and the snapshot/stream boundary.

The DAG-level behaviour (delivery, re-delivery, acknowledgement) is in
``tests/dags/test_services_requests_cdc_e2e.py``; here the tasks are called directly.
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from devkit.seed import create_source_table, insert_rows
from services_sync.cdc import tasks as cdc_tasks
from tests.dags.test_services_requests_cdc_e2e import rows, writer

DAG_ID = "services_requests_cdc"


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_API",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http"}),
    )


@pytest.fixture
def slot(source_db, monkeypatch):
    name = f"ss_slot_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SERVICES_SYNC_CDC_SLOT", name)
    monkeypatch.setenv("SERVICES_SYNC_CDC_PUBLICATION", f"ss_pub_{uuid.uuid4().hex[:8]}")
    yield name
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (name,),
        )


def test_setup_is_idempotent(source_db, api, slot):
    with writer(source_db) as conn:
        conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
    first = cdc_tasks.check_cdc_setup(DAG_ID)
    assert (first["publication_created"], first["slot_created"]) == (True, True)
    assert first["wal_level"] == "logical"
    second = cdc_tasks.check_cdc_setup(DAG_ID)
    assert (second["publication_created"], second["slot_created"]) == (False, False)


def test_setup_refuses_a_table_without_replica_identity(source_db, api, slot):
    with pytest.raises(AirflowFailException, match="REPLICA IDENTITY FULL") as info:
        cdc_tasks.check_cdc_setup(DAG_ID)
    assert "UPDATEs and DELETEs would fail" in str(info.value)
    with psycopg.connect(source_db) as conn:  # nothing was created
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0


def test_status_deletes_need_the_full_old_row(source_db, api, slot, monkeypatch):
    monkeypatch.setenv("SERVICES_SYNC_CDC_DELETES", "status")
    with writer(source_db) as conn:
        conn.execute("ALTER TABLE service_requests ADD PRIMARY KEY (service_id, request_id)")
    with pytest.raises(AirflowFailException, match="SERVICES_SYNC_CDC_DELETES=skip") as info:
        cdc_tasks.check_cdc_setup(DAG_ID)
    assert "REPLICA IDENTITY FULL" in str(info.value)


def test_without_auto_create_a_missing_slot_names_the_setup_command(
    source_db, api, slot, monkeypatch
):
    monkeypatch.setenv("SERVICES_SYNC_CDC_CREATE_SLOT", "off")
    with writer(source_db) as conn:
        conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
    with pytest.raises(AirflowFailException, match="make cdc-setup"):
        cdc_tasks.check_cdc_setup(DAG_ID)


def test_setup_on_a_server_without_logical_decoding_names_the_fix(api, monkeypatch):
    from devkit.pgcluster import PostgresCluster

    cluster = PostgresCluster(settings={"wal_level": "replica"}).start()
    try:
        dsn = cluster.create_database("cdc_replica")
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_source_table(conn)
            conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
        monkeypatch.setenv("AIRFLOW_CONN_SERVICES_SOURCE_DB", dsn)
        with pytest.raises(AirflowFailException, match="wal_level=replica") as info:
            cdc_tasks.check_cdc_setup(DAG_ID)
        assert "ALTER SYSTEM SET wal_level = logical" in str(info.value)
    finally:
        cluster.destroy()


def deliver(window: dict, receiver, run_id: str) -> None:
    """Build the window and send it through the real delivery lanes to the receiver."""
    from types import SimpleNamespace

    from services_sync.core.config import load_settings
    from services_sync.delivery.lanes import DeliveryLaneOperator

    cdc_tasks.build_change_batches(
        dag_id=DAG_ID, run_id=run_id, window_id=window["window_id"], interval=None
    )
    settings = load_settings()
    context = {
        "dag": SimpleNamespace(dag_id=DAG_ID),
        "run_id": run_id,
        "ti": SimpleNamespace(try_number=1),
        "data_interval_start": None,
    }
    for lane in range(settings.lanes):
        DeliveryLaneOperator(
            task_id=f"post_batches_{lane}",
            lane=lane,
            lanes=settings.lanes,
            http_conn_id=settings.api_conn_id,
            endpoint=settings.endpoint,
        ).execute(context)


def staged(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT op, request_id FROM services_sync.cdc_changes ORDER BY commit_lsn, position"
        ).fetchall()


def test_a_transaction_open_during_the_snapshot_comes_with_the_stream(source_db, receiver, slot):
    with writer(source_db) as conn:
        conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
        insert_rows(conn, rows("BEFORE", 2))
    cdc_tasks.check_cdc_setup(DAG_ID)
    params = {"batch_size": 100, "initial_snapshot": True}
    with writer(source_db) as open_txn, writer(source_db) as other:
        open_txn.execute("BEGIN")
        insert_rows(open_txn, rows("OPEN", 1))  # started before the snapshot, commits after
        insert_rows(other, rows("SLOT", 1))  # committed after the slot: snapshot AND stream
        window = cdc_tasks.capture_changes(DAG_ID, "run-1", params)
        assert window["records"] == 3
        # In the snapshot once; its streamed copy was skipped; the open one is not there.
        assert staged(source_db) == [
            ("snapshot", "BEFORE-0000"),
            ("snapshot", "BEFORE-0001"),
            ("snapshot", "SLOT-0000"),
        ]
        deliver(window, receiver, "run-1")
        cdc_tasks.acknowledge_changes(window["window_id"], dag_id=DAG_ID)
        open_txn.execute("COMMIT")
    window = cdc_tasks.capture_changes(DAG_ID, "run-2", {"batch_size": 100})
    assert staged(source_db) == [("insert", "OPEN-0000")]
    assert window["records"] == 1


def test_a_resumed_window_keeps_its_batch_size(source_db, api, slot):
    with writer(source_db) as conn:
        conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
    cdc_tasks.check_cdc_setup(DAG_ID)
    with writer(source_db) as conn:
        insert_rows(conn, rows("R", 5))
    first = cdc_tasks.capture_changes(DAG_ID, "run-1", {"batch_size": 2})
    with writer(source_db) as conn:
        insert_rows(conn, rows("LATER", 3))  # not in the open window
    # Same batches even when the next run asks for another batch size: the keys repeat.
    assert cdc_tasks.capture_changes(DAG_ID, "run-2", {"batch_size": 4}) == first
    with pytest.raises(AirflowFailException, match="not acknowledged yet"):
        cdc_tasks.capture_changes(DAG_ID, "run-3", {"batch_size": 2, "initial_snapshot": True})


def test_the_setup_command_creates_then_reports_and_names_fixes(source_db, slot):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def setup_command():
        return subprocess.run(
            [sys.executable, "-m", "services_sync.cdc.setup"],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root / "plugins")},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    refused = setup_command()
    assert refused.returncode == 1
    assert "ALTER TABLE service_requests REPLICA IDENTITY FULL" in refused.stderr
    with writer(source_db) as conn:
        conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
    created = setup_command()
    assert created.returncode == 0, created.stderr
    assert f"slot                    {slot}: created" in created.stdout
    assert "max_slot_wal_keep_size is unlimited" in created.stdout
    again = setup_command()
    assert f"slot                    {slot}: already there" in again.stdout


def test_a_role_that_does_not_own_the_table_is_told_who_creates_the_publication(
    source_db, api, slot, pg_cluster, monkeypatch
):
    role = f"ss_repl_{uuid.uuid4().hex[:6]}"
    with writer(source_db) as conn:
        conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
        conn.execute(f"CREATE ROLE {role} LOGIN REPLICATION")
        conn.execute(f"GRANT SELECT ON service_requests TO {role}")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_SOURCE_DB", pg_cluster.dsn(source_db.rsplit("/", 1)[1], role)
    )
    monkeypatch.setenv("SERVICES_SYNC_STATE_CONN_ID", "services_state_db")
    monkeypatch.setenv("AIRFLOW_CONN_SERVICES_STATE_DB", source_db)
    with pytest.raises(AirflowFailException, match="only the table's owner can") as info:
        cdc_tasks.check_cdc_setup(DAG_ID)
    assert "CREATE PUBLICATION" in str(info.value)


def test_a_commit_between_opening_a_snapshot_window_and_its_snapshot_is_sent_once(
    source_db, receiver, slot, monkeypatch
):
    from services_sync.cdc import source as cdc_source

    with writer(source_db) as conn:
        conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
    cdc_tasks.check_cdc_setup(DAG_ID)
    with writer(source_db) as conn:
        opened_at = cdc_source.current_wal_lsn(conn)
        insert_rows(conn, rows("BETWEEN", 1))  # after the window's end, before its snapshot
    with monkeypatch.context() as patch:
        patch.setattr(cdc_source, "current_wal_lsn", lambda conn: opened_at)
        params = {"batch_size": 100, "initial_snapshot": True}
        window = cdc_tasks.capture_changes(DAG_ID, "run-1", params)
    assert staged(source_db) == [("snapshot", "BETWEEN-0000")]
    deliver(window, receiver, "run-1")
    cdc_tasks.acknowledge_changes(window["window_id"], dag_id=DAG_ID)
    assert cdc_tasks.capture_changes(DAG_ID, "run-2", {"batch_size": 100})["records"] == 0
    assert staged(source_db) == []  # not again in the next window
