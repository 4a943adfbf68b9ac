"""MySQL / MariaDB query mode's source side on a real MariaDB: SQL, time zones, gate, checks."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from airflow.sdk.exceptions import AirflowFailException

from devkit.seed import insert_mysql_rows
from services_sync.core.config import load_settings, mysql_settings
from services_sync.core.gate import GateReading, waiting_for
from services_sync.core.payload import BatchBounds, Interval
from services_sync.core.transform import transform_rows
from services_sync.mysql import source as mysql_source
from services_sync.mysql import tasks as mysql_tasks

H = datetime(2025, 3, 30, 1, tzinfo=UTC)  # Europe's spring-forward hour, in UTC
OPENED = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_API",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http"}),
    )


@pytest.fixture
def settings():
    return mysql_settings(load_settings())


def plan(conn, interval, batch_size, max_batch_bytes=1_000_000):
    rows = mysql_source.query(
        conn,
        "plan_batches.sql",
        {
            "window_start": mysql_source.utc_text(interval.start),
            "window_end": mysql_source.utc_text(interval.end),
            "batch_size": batch_size,
            "max_batch_bytes": max_batch_bytes,
        },
    )
    return [BatchBounds.from_plan_row(row) for row in rows]


def test_planned_batches_tile_the_half_open_hour_in_one_total_order(mariadb_server, mysql_db):
    interval = Interval(H, H + timedelta(hours=1))
    inside = [
        ("water", f"R{i:02d}", OPENED, "1", H + timedelta(minutes=i % 3)) for i in range(10)
    ] + [
        ("water", None, OPENED, "1", H),  # NULL id sorts as ''
        ("ruta", "Ñ-1", OPENED, "1", H),  # non-ASCII ids compare as UTF-8 bytes
        ("water", "END", OPENED, "1", H + timedelta(hours=1) - timedelta(microseconds=1)),
    ]
    outside = [
        ("water", "BEFORE", OPENED, "1", H - timedelta(microseconds=1)),
        ("water", "NEXT", OPENED, "1", H + timedelta(hours=1)),
    ]
    with mariadb_server.connect(mysql_db) as conn:
        insert_mysql_rows(conn, inside + outside)
    with mysql_source.connect("services_mysql_db") as conn:
        batches = plan(conn, interval, batch_size=4)
        assert [b.planned_rows for b in batches] == [4, 4, 4, 1]
        assert batches[0].lower[0] == "2025-03-30 01:00:00.000000"
        assert batches[-1].upper[0] == "2025-03-30 02:00:00.000000"
        read = [
            row
            for _, rows, _ in mysql_source.read_planned_batches(conn, interval, batches)
            for row in rows
        ]
    assert len(read) == len(inside)
    assert sorted(map(repr, read)) == sorted(
        map(
            repr,
            [
                (s, r, o.replace(tzinfo=None), st, m.replace(tzinfo=None))
                for s, r, o, st, m in inside
            ],
        )
    )
    keys = [(row[4], (row[1] or "").encode(), (row[0] or "").encode()) for row in read]
    assert keys == sorted(keys)  # one total order across batches


def test_datetime_holds_utc_whatever_the_server_and_dst(mariadb_server, mysql_db):
    """The server runs at -05:00 and the hour is Europe's DST change: neither moves a row."""
    assert mariadb_server.execute("SELECT @@global.time_zone")[0][0] == "-05:00"
    stamps = [
        H - timedelta(seconds=1),
        H,
        H + timedelta(minutes=59, seconds=59),
        H + timedelta(hours=1),
    ]
    with mariadb_server.connect(mysql_db) as conn:
        insert_mysql_rows(conn, [("w", f"T{i}", OPENED, "1", s) for i, s in enumerate(stamps)])
    interval = Interval(H, H + timedelta(hours=1))
    with mysql_source.connect("services_mysql_db") as conn:
        rows = [
            r
            for _, rs, _ in mysql_source.read_planned_batches(
                conn, interval, plan(conn, interval, 100)
            )
            for r in rs
        ]
    records = transform_rows(rows, ZoneInfo("UTC")).records
    assert [(r["request_id"], r["last_modified_date"]) for r in records] == [
        ("T1", "2025-03-30T01:00:00Z"),
        ("T2", "2025-03-30T01:59:59Z"),
    ]


def test_a_timestamp_column_is_read_in_utc_whatever_the_writer_session_zone(
    mariadb_server, mysql_db
):
    mariadb_server.execute(
        "ALTER TABLE service_requests MODIFY last_modified_date TIMESTAMP(6) NULL",
        database=mysql_db,
    )
    with mariadb_server.connect(mysql_db) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+09:00'")  # a writer in Tokyo: 10:30 there is 01:30 UTC
        cur.execute(
            "INSERT INTO service_requests VALUES ('w', 'TOKYO', NULL, '1', '2025-03-30 10:30:00')"
        )
    interval = Interval(H, H + timedelta(hours=1))
    with mysql_source.connect("services_mysql_db") as conn:
        rows = [
            r
            for _, rs, _ in mysql_source.read_planned_batches(
                conn, interval, plan(conn, interval, 100)
            )
            for r in rs
        ]
    assert [(r[1], r[4]) for r in rows] == [("TOKYO", datetime(2025, 3, 30, 1, 30))]


def test_gate_waits_for_a_write_transaction_from_before_the_end(mariadb_server, mysql_db):
    end = datetime.now(UTC) + timedelta(seconds=1)
    with mariadb_server.connect(mysql_db) as writer:
        writer.begin()
        insert_mysql_rows(writer, [("w", "LATE", OPENED, "1", end - timedelta(seconds=1))])
        with mariadb_server.connect(mysql_db) as reader, reader.cursor() as cur:
            cur.execute("START TRANSACTION READ ONLY")
            cur.execute("SELECT COUNT(*) FROM service_requests")  # a reader: never waited for
            time.sleep(2.2)
            with mysql_source.connect("services_mysql_db") as conn:
                row = gate(conn, end)
            reading = GateReading.from_row(row)
            assert reading.end_passed and reading.open_writers == 1
            assert reading.oldest_pid == writer.thread_id()
            assert 1 <= reading.oldest_age_s < 60  # trx_started is read on the UTC clock
            assert "waiting for 1 open" in waiting_for(reading)
            with pytest.raises(AirflowFailException, match=r"KILL <thread id>"):
                mysql_tasks.commit_gate_failed(
                    row,
                    load_settings(
                        {
                            "SERVICES_SYNC_MAX_OPEN_TRANSACTION_S": "1",
                            "SERVICES_SYNC_UNRELATED_WRITER_WAIT_S": "0",
                        }
                    ),
                )
        writer.commit()
    time.sleep(0.2)  # InnoDB refreshes its information_schema cache every 0.1 s
    with mysql_source.connect("services_mysql_db") as conn:
        reading = GateReading.from_row(gate(conn, end))
    assert reading.open_writers == 0 and waiting_for(reading) is None


def gate(conn, end, skew=0):
    return mysql_source.query(
        conn,
        "check_open_transactions.sql",
        {"window_end": mysql_source.utc_text(end), "clock_skew_s": skew, "unrelated_wait_s": 0},
    )[0]


def test_gate_waits_for_the_interval_end_plus_skew_on_the_database_clock(mariadb_server, mysql_db):
    end = datetime.now(UTC)
    with mysql_source.connect("services_mysql_db") as conn:
        reading = GateReading.from_row(gate(conn, end, skew=60))
    assert not reading.end_passed and 56 < reading.seconds_to_end <= 61


def limited_user(mariadb_server, mysql_db, monkeypatch, *grants):
    user = f"u{uuid.uuid4().hex[:8]}"
    mariadb_server.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw'")
    for grant in grants:
        mariadb_server.execute(grant.format(db=mysql_db, user=user))
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_MYSQL_DB", mariadb_server.airflow_uri(mysql_db, user, "pw")
    )
    return user


def test_setup_names_the_grant_the_gate_needs(
    mariadb_server, mysql_db, state_db, api, monkeypatch, settings
):
    limited_user(
        mariadb_server,
        mysql_db,
        monkeypatch,
        "GRANT SELECT ON `{db}`.service_requests TO '{user}'@'127.0.0.1'",
    )
    mysql_tasks.check_source(settings)  # SELECT is enough for the reads
    with pytest.raises(AirflowFailException, match=r"GRANT PROCESS ON \*\.\* TO"):
        mysql_tasks.check_gate_privilege(settings)


def test_setup_names_the_select_grant(mariadb_server, mysql_db, monkeypatch, settings):
    limited_user(
        mariadb_server, mysql_db, monkeypatch, "GRANT PROCESS ON *.* TO '{user}'@'127.0.0.1'"
    )
    with pytest.raises(AirflowFailException, match=r"GRANT SELECT ON <database>\.service_requests"):
        mysql_tasks.check_source(settings)


def test_setup_refuses_a_local_naive_zone_and_a_missing_client(
    mariadb_server, mysql_db, state_db, api, monkeypatch
):
    madrid = mysql_settings(load_settings({"SERVICES_SYNC_NAIVE_TIMEZONE": "Europe/Madrid"}))
    with pytest.raises(AirflowFailException, match="DATETIME columns must hold UTC"):
        mysql_tasks.check_source(madrid)
    uri = json.loads(mariadb_server.airflow_uri(mysql_db))
    uri["extra"] = {}
    monkeypatch.setenv("AIRFLOW_CONN_SERVICES_MYSQL_DB", json.dumps(uri))
    with pytest.raises(AirflowFailException, match='"client": "mysql-connector-python"'):
        mysql_tasks.check_mysql_connections(mysql_settings(load_settings()))
    uri["extra"], uri["schema"] = {"client": "mysql-connector-python"}, ""
    monkeypatch.setenv("AIRFLOW_CONN_SERVICES_MYSQL_DB", json.dumps(uri))
    with pytest.raises(AirflowFailException, match="names no database"):
        mysql_tasks.check_mysql_connections(mysql_settings(load_settings()))


def test_newer_versions_finds_only_rows_that_moved_on(mariadb_server, mysql_db):
    with mariadb_server.connect(mysql_db) as conn:
        insert_mysql_rows(
            conn,
            [
                ("w", "MOVED", OPENED, "1", H + timedelta(hours=2)),
                ("w", "SAME", OPENED, "1", H + timedelta(minutes=1)),
            ],
        )
    records = [
        {"service_id": "w", "request_id": "MOVED", "last_modified_date": "2025-03-30T01:01:00Z"},
        {"service_id": "w", "request_id": "SAME", "last_modified_date": "2025-03-30T01:01:00Z"},
        {"service_id": "w", "request_id": "GONE", "last_modified_date": "2025-03-30T01:01:00Z"},
    ]
    with mysql_source.connect("services_mysql_db") as conn:
        assert mysql_source.newer_versions(conn, records) == {("w", "MOVED")}
        current = mysql_source.current_versions(conn, H, H + timedelta(hours=1))
    assert current == [("w", "SAME", H + timedelta(minutes=1))]


def test_a_concurrent_writer_does_not_change_what_one_build_reads(mariadb_server, mysql_db):
    """All batches of a build come from one consistent snapshot."""
    with mariadb_server.connect(mysql_db) as conn:
        insert_mysql_rows(
            conn, [("w", f"S{i}", OPENED, "1", H + timedelta(seconds=i)) for i in range(6)]
        )
    interval = Interval(H, H + timedelta(hours=1))
    with mysql_source.connect("services_mysql_db") as conn:
        batches = plan(conn, interval, batch_size=2)
        reads = mysql_source.read_planned_batches(conn, interval, batches)
        first = next(reads)
        done = threading.Event()

        def write():
            with mariadb_server.connect(mysql_db) as other:
                insert_mysql_rows(other, [("w", "S5b", OPENED, "1", H + timedelta(seconds=5))])
                with other.cursor() as cur:
                    cur.execute("DELETE FROM service_requests WHERE request_id = 'S3'")
            done.set()

        threading.Thread(target=write).start()
        assert done.wait(10)
        rest = [row for _, rows, _ in reads for row in rows]
    assert [r[1] for r in first[1] + rest] == [f"S{i}" for i in range(6)]
