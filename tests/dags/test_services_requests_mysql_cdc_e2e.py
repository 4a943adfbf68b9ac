"""The binlog CDC DAG end to end: dag.test() on a real MariaDB binlog, PostgreSQL state, receiver.

Every test starts its own binlog CDC pipeline (a fresh database on the session's MariaDB, a
fresh state database: the first run records the binlog's end as the start position), so the
server-wide binary log carries other tests' events too, which the reader must skip.
"""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.seed import insert_mysql_rows
from services_sync.core.transform import transform_rows
from services_sync.mysql.binlog import BinlogPosition

pytestmark = pytest.mark.e2e

DAG_ID = "services_requests_mysql_cdc"
T = pendulum.datetime(2025, 5, 14, 10, tz="UTC")
OPENED = pendulum.datetime(2025, 5, 13, 9, tz="UTC")
_HOURS = itertools.count()


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder="dags")
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


@pytest.fixture
def source(mariadb_server, mysql_db, state_db):
    """PyMySQL connections to the test's database (autocommit; UTC session)."""
    return lambda: mariadb_server.connect(mysql_db)


def run(dag, **conf):
    """One run (a new hour each time); every param passed (dag.test() keeps earlier conf)."""
    logical_date = pendulum.datetime(2025, 7, 1, tz="UTC") + timedelta(hours=next(_HOURS))
    conf = {"batch_size": 1000, "initial_snapshot": False, **conf}
    return dag.test(logical_date=logical_date, run_conf=conf)


def rows(prefix: str, n: int, status: int = 1) -> list[tuple]:
    return [
        ("water", f"{prefix}-{i:04d}", OPENED, str(status), T + timedelta(seconds=i))
        for i in range(n)
    ]


def inspect(receiver, what):
    return requests.get(f"{receiver.url}/inspect/{what}", timeout=5).json()


def source_state(source) -> list[dict]:
    """What the receiver should hold: the contract record of every valid source row."""
    with source() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT service_id, request_id, opening_date, status_id, last_modified_date "
            "FROM service_requests"
        )
        table = cur.fetchall()
    return sorted(transform_rows(table).records, key=lambda r: r["request_id"])


def receiver_state(receiver) -> list[dict]:
    return sorted(
        (
            {k: v for k, v in r.items() if k != "idempotency_key"}
            for r in inspect(receiver, "state")
        ),
        key=lambda r: r["request_id"],
    )


def state_rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def ledger_keys(dsn: str) -> list[str]:
    return [
        r[0]
        for r in state_rows(
            dsn,
            "SELECT idempotency_key FROM services_sync.delivery_ledger"
            f" WHERE dag_id = '{DAG_ID}' ORDER BY window_id, batch_index",
        )
    ]


def saved_position(dsn: str) -> tuple[BinlogPosition, str | None]:
    """The saved binlog position (newest acknowledged window end) and its GTID position."""
    lsn, gtid = state_rows(
        dsn,
        "SELECT w.upto_lsn::text, w.upto_gtid FROM services_sync.cdc_windows AS w"
        " WHERE w.status = 'acknowledged' ORDER BY w.upto_lsn DESC LIMIT 1",
    )[0]
    return BinlogPosition.from_lsn(lsn), gtid


def window_status(dsn: str) -> list[str]:
    return [
        r[0] for r in state_rows(dsn, "SELECT status FROM services_sync.cdc_windows ORDER BY 1")
    ]


def execute(source, *statements, params=None):
    with source() as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, params)


def test_inserts_updates_deletes_and_a_multi_row_transaction_reach_the_receiver(
    dag, airflow_db, source, state_db, receiver
):
    with source() as conn:
        insert_mysql_rows(conn, rows("BEFORE", 2))  # before the start position: never sent
    assert run(dag).state == "success"
    assert inspect(receiver, "stats")["records"] == 0
    start = saved_position(state_db)

    with source() as conn:
        conn.begin()
        insert_mysql_rows(conn, rows("TX", 4))  # one transaction, four rows
        with conn.cursor() as cur:
            cur.execute("UPDATE service_requests SET status_id = '3' WHERE request_id = 'TX-0001'")
        conn.commit()
        insert_mysql_rows(conn, rows("ONE", 1))
    execute(
        source,
        "UPDATE service_requests SET status_id = '4', last_modified_date = %s"
        " WHERE request_id = 'ONE-0000'",
        params=(T.naive() + timedelta(minutes=5),),
    )
    execute(source, "DELETE FROM service_requests WHERE request_id = 'TX-0003'")
    assert run(dag).state == "success"

    received = inspect(receiver, "requests")
    # Collapsed: each request once, newest version; the deleted one not at all (policy skip).
    assert sorted(r["request_id"] for r in received) == [
        "ONE-0000",
        "TX-0000",
        "TX-0001",
        "TX-0002",
    ]
    assert {r["request_id"]: r["status_id"] for r in received}["TX-0001"] == 3
    expected = [r for r in source_state(source) if not r["request_id"].startswith("BEFORE")]
    assert receiver_state(receiver) == expected
    end, gtid = saved_position(state_db)
    assert end > start[0]
    assert gtid and gtid.startswith("0-7-")  # MariaDB GTID domain 0, server 7
    assert window_status(state_db) == ["acknowledged"] * 3

    batches = inspect(receiver, "batches")
    assert run(dag).state == "success"  # nothing new: nothing sent
    assert inspect(receiver, "batches") == batches
    assert inspect(receiver, "stats")["duplicates"] == 0


def test_deletes_as_a_status_flag_follow_the_cdc_policy(
    dag, airflow_db, source, state_db, receiver, monkeypatch
):
    monkeypatch.setenv("SERVICES_SYNC_CDC_DELETES", "status")
    monkeypatch.setenv("SERVICES_SYNC_CDC_DELETED_STATUS_ID", "-9")
    assert run(dag).state == "success"
    with source() as conn:
        insert_mysql_rows(conn, rows("D", 2))
    assert run(dag).state == "success"
    execute(source, "DELETE FROM service_requests WHERE request_id = 'D-0001'")
    assert run(dag).state == "success"
    tombstone = receiver_state(receiver)[1]
    assert {k: v for k, v in tombstone.items() if k != "last_modified_date"} == {
        "service_id": "water",
        "request_id": "D-0001",
        "opening_date": "2025-05-13T09:00:00Z",
        "status_id": -9,
    }
    deleted_at = pendulum.parse(tombstone["last_modified_date"])
    assert abs((pendulum.now("UTC") - deleted_at).total_seconds()) < 120  # the commit time


def test_a_transaction_open_across_the_window_end_is_delivered_whole_by_the_next_run(
    dag, airflow_db, source, receiver
):
    assert run(dag).state == "success"
    with source() as open_txn:
        open_txn.begin()
        insert_mysql_rows(open_txn, rows("LATE", 3))
        with source() as other:
            insert_mysql_rows(other, rows("EARLY", 2))
        assert run(dag).state == "success"
        assert sorted(r["request_id"] for r in inspect(receiver, "requests")) == [
            "EARLY-0000",
            "EARLY-0001",
        ]
        open_txn.commit()
    assert run(dag).state == "success"
    assert receiver_state(receiver) == source_state(source)
    assert len(source_state(source)) == 5


def test_a_crash_before_the_position_is_saved_resends_nothing_under_new_keys(
    dag, airflow_db, source, state_db, receiver
):
    assert run(dag).state == "success"
    with source() as conn:
        insert_mysql_rows(conn, rows("C", 5))
    position = saved_position(state_db)
    # The receiver is down past the retries: the window stays open, the position unsaved.
    requests.post(
        f"{receiver.url}/faults",
        json={"faults": [{"delay_s": 0.0}, {"status": 503, "times": 100}]},
        timeout=5,
    ).raise_for_status()
    assert run(dag, batch_size=2).state == "failed"
    assert saved_position(state_db) == position
    assert window_status(state_db) == ["acknowledged", "acknowledged", "captured"]
    first_keys = {b["idempotency_key"] for b in inspect(receiver, "batches")}
    requests.delete(f"{receiver.url}/faults", timeout=5).raise_for_status()
    with source() as conn:
        insert_mysql_rows(conn, rows("NEXT", 1))  # after the window: the next window's

    # The receiver is back: the open window goes out first, the batches it acknowledged
    # already are not sent again, the rest under the keys they were built with.
    assert run(dag, batch_size=2).state == "success"
    keys = {b["idempotency_key"] for b in inspect(receiver, "batches")}
    assert first_keys < keys
    assert keys == set(ledger_keys(state_db))
    assert inspect(receiver, "stats")["duplicates"] == 0
    assert saved_position(state_db) > position

    with source() as conn:
        insert_mysql_rows(conn, rows("LAST", 2))
    # Every batch is acknowledged, then the process dies before acknowledge_changes saves the
    # position: the task never runs.
    logical_date = pendulum.datetime(2025, 7, 1, tz="UTC") + timedelta(hours=next(_HOURS))
    crashed = dag.test(
        logical_date=logical_date,
        run_conf={"batch_size": 2, "initial_snapshot": False},
        mark_success_pattern="acknowledge_changes",
    )
    assert crashed.state == "success"
    saved = saved_position(state_db)
    assert window_status(state_db)[-1] == "captured"  # delivered, position not saved
    delivered = inspect(receiver, "batches")
    assert run(dag, batch_size=2).state == "success"  # resumes: sends nothing, saves
    assert inspect(receiver, "batches") == delivered
    assert saved_position(state_db) > saved
    assert window_status(state_db).count("captured") == 0
    assert receiver_state(receiver) == source_state(source)


def test_initial_snapshot_with_concurrent_writes_sends_every_row_once(
    dag, airflow_db, source, receiver
):
    with source() as conn:
        insert_mysql_rows(conn, rows("OLD", 50))  # before the start position: snapshot only
    assert run(dag).state == "success"
    assert inspect(receiver, "stats")["records"] == 0

    stop = threading.Event()
    written = []

    def write():
        with source() as conn:
            for i in itertools.count():
                if stop.is_set():
                    return
                insert_mysql_rows(conn, [("roads", f"W-{i:05d}", OPENED, "1", T)])
                written.append(i)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert run(dag, initial_snapshot=True).state == "success"
    finally:
        stop.set()
        thread.join()
    assert written
    assert run(dag).state == "success"  # the writes after the snapshot window
    received = [r["request_id"] for r in inspect(receiver, "requests")]
    assert len(received) == len(set(received)) == 50 + len(written)  # no gap, no double
    assert receiver_state(receiver) == source_state(source)
    assert inspect(receiver, "stats")["duplicates"] == 0


def test_a_purged_binlog_fails_at_once_with_the_resnapshot_command(
    dag, airflow_db, source, state_db, receiver, mariadb_server
):
    assert run(dag).state == "success"
    with source() as conn:
        insert_mysql_rows(conn, rows("P", 3))
    # The server moves on and purges the file the saved position is in.
    mariadb_server.purge_binary_logs()

    failed = run(dag)
    assert failed.state == "failed"
    states = {ti.task_id: ti.state for ti in failed.get_task_instances()}
    assert states["check_binlog_retention"] == "failed"
    assert states["capture_changes"] != "success"
    assert inspect(receiver, "stats")["records"] == 0

    # The command the message names: a snapshot reloads the table and reads on from there.
    assert run(dag, initial_snapshot=True).state == "success"
    assert receiver_state(receiver) == source_state(source)
    assert run(dag).state == "success"
