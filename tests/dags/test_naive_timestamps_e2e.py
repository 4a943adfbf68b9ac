"""A `timestamp without time zone` source, end to end: one zone for selection and formatting.

The table holds Madrid wall-clock times (`SERVICES_SYNC_NAIVE_TIMEZONE=Europe/Madrid`) on a
server whose sessions default to New York. Before every connection (the SQL operators' too)
ran in the naive zone, the operators selected the hour in New York time: the run for
[09:00Z, 10:00Z) sent nothing and reconciliation blamed an unrelated row.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.seed import insert_rows

pytestmark = pytest.mark.e2e


@pytest.fixture
def dag(madrid_source):
    bag = DagBag(dag_folder="dags")  # parsed with the Madrid setting
    assert bag.import_errors == {}
    return bag.dags["services_requests_sync"]


def run_hour(dag, start):
    run = dag.test(logical_date=start + timedelta(hours=1))
    assert (run.data_interval_start, run.data_interval_end) == (start, start + timedelta(hours=1))
    return run


def received(receiver):
    records = requests.get(f"{receiver.url}/inspect/requests", timeout=5).json()
    return sorted((r["request_id"], r["last_modified_date"], r["opening_date"]) for r in records)


def wall(text):
    return datetime.fromisoformat(text)  # naive: a Madrid wall-clock time


def test_an_hour_is_selected_and_stamped_in_the_naive_zone(
    dag, airflow_db, madrid_source, receiver
):
    opened = wall("2025-05-13 08:00:00")
    with psycopg.connect(madrid_source, autocommit=True) as conn:
        insert_rows(
            conn,
            [
                ("water", "BEFORE", opened, "1", wall("2025-05-14 10:59:59")),  # 08:59:59Z
                ("water", "IN-1", opened, "1", wall("2025-05-14 11:00:00")),  # 09:00:00Z
                ("water", "IN-2", opened, "2", wall("2025-05-14 11:59:59.5")),  # 09:59:59Z
                ("water", "AFTER", opened, "1", wall("2025-05-14 12:00:00")),  # 10:00:00Z
            ],
        )
    assert run_hour(dag, pendulum.datetime(2025, 5, 14, 9, tz="UTC")).state == "success"
    assert received(receiver) == [
        ("IN-1", "2025-05-14T09:00:00Z", "2025-05-13T06:00:00Z"),
        ("IN-2", "2025-05-14T09:59:59Z", "2025-05-13T06:00:00Z"),
    ]


def test_across_dst_changes_every_row_goes_out_once_in_the_hour_postgresql_puts_it(
    dag, airflow_db, madrid_source, receiver
):
    """Clocks go back at 03:00 CEST on 2025-10-26: the wall times 02:00-02:59 happen twice and
    a naive column cannot tell which; PostgreSQL reads them as the second (CET, 01:xxZ), so the
    UTC hour 00:00-01:00 gets none of them and 01:00-02:00 gets both. Clocks go forward at
    02:00 CET on 2025-03-30: 02:30 never happens; PostgreSQL reads it with the CET offset."""
    opened = wall("2025-01-01 00:00:00")
    with psycopg.connect(madrid_source, autocommit=True) as conn:
        insert_rows(
            conn,
            [
                ("water", "CEST-0130", opened, "1", wall("2025-10-26 01:30:00")),  # 23:30Z
                ("water", "TWICE-0215", opened, "1", wall("2025-10-26 02:15:00")),
                ("water", "TWICE-0245", opened, "1", wall("2025-10-26 02:45:00")),
                ("water", "CET-0310", opened, "1", wall("2025-10-26 03:10:00")),  # 02:10Z
                ("water", "SKIPPED-0230", opened, "1", wall("2025-03-30 02:30:00")),
            ],
        )
    fall_back = pendulum.datetime(2025, 10, 26, 0, tz="UTC")
    assert run_hour(dag, fall_back).state == "success"
    assert received(receiver) == []  # no naive wall time means 00:00-01:00Z that day
    assert run_hour(dag, fall_back + timedelta(hours=1)).state == "success"
    assert run_hour(dag, fall_back + timedelta(hours=2)).state == "success"
    assert run_hour(dag, pendulum.datetime(2025, 3, 30, 1, tz="UTC")).state == "success"

    assert [(rid, lmd) for rid, lmd, _ in received(receiver)] == [
        ("CET-0310", "2025-10-26T02:10:00Z"),
        ("SKIPPED-0230", "2025-03-30T01:30:00Z"),
        ("TWICE-0215", "2025-10-26T01:15:00Z"),
        ("TWICE-0245", "2025-10-26T01:45:00Z"),
    ]
    stats = requests.get(f"{receiver.url}/inspect/stats", timeout=5).json()
    assert stats["duplicates"] == 0
