"""The delivery buffer end to end: bodies stay in the outbox, XCom stays small, the number of
task instances does not grow with the volume, and unchanged batches keep their keys on reruns.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.seed import insert_rows
from services_sync.core.config import load_settings

pytestmark = pytest.mark.e2e

H = pendulum.datetime(2025, 5, 14, 10, tz="UTC")
XCOM_BUDGET = 64 * 1024  # bytes per run, whatever the volume (issue: delivery buffer)


@pytest.fixture(scope="module")
def dag():
    return DagBag(dag_folder="dags").dags["services_requests_sync"]


def rows_for(hour, n, prefix):
    step = 3600 / n
    return [
        ("water", f"{prefix}-{i:06d}", hour - timedelta(days=1), str(1 + i % 5),
         hour + timedelta(seconds=i * step))
        for i in range(n)
    ]  # fmt: skip


def xcom_of(run) -> list[tuple[str, int, int]]:
    """(task_id, map_index, bytes of the stored value) of every XCom row of a run."""
    from airflow import settings
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    with settings.Session() as session:
        found = session.execute(
            select(XComModel.task_id, XComModel.map_index, XComModel.value).where(
                XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id
            )
        ).all()
    return [(task, index, len(json.dumps(value))) for task, index, value in found]


def test_a_100k_row_hour_keeps_xcom_small_and_the_task_count_constant(
    dag, airflow_db, source_db, receiver
):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows_for(H, 100_000, "BIG"))
    small = dag.test(logical_date=H + timedelta(hours=2))  # [11:00, 12:00): no changes
    run = dag.test(logical_date=H + timedelta(hours=1))
    assert (small.state, run.state) == ("success", "success")
    assert requests.get(f"{receiver.url}/inspect/stats", timeout=30).json()["records"] == 100_000

    xcom = xcom_of(run)
    total = sum(size for _, _, size in xcom)
    assert total <= XCOM_BUDGET, sorted(xcom, key=lambda x: -x[2])[:5]
    # No body crossed XCom: the largest value is a small summary, not a batch.
    assert max(size for _, _, size in xcom) < 1024, xcom
    with psycopg.connect(source_db) as conn:
        stored, batches = conn.execute(
            "SELECT sum(octet_length(o.body)), count(*) FROM services_sync.outbox o"
        ).fetchone()
    assert batches == 100 and stored > 10 * total  # the bodies are in the outbox

    lanes = load_settings().lanes
    assert len(run.get_task_instances()) == len(small.get_task_instances()) == 6 + lanes


def test_a_rerun_after_one_row_moved_out_of_the_hour_rekeys_only_its_batch(
    dag, airflow_db, source_db, receiver
):
    """Regression (keys of unchanged rows): batches were cut by row number, so one row leaving
    the hour shifted every later batch and re-keyed records that had not changed."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows_for(H, 50, "K"))
    first = dag.test(logical_date=H + timedelta(hours=1), run_conf={"batch_size": 10})
    assert first.state == "success"
    before = {
        b["idempotency_key"]
        for b in requests.get(f"{receiver.url}/inspect/batches", timeout=30).json()
    }
    assert len(before) == 5
    with psycopg.connect(source_db, autocommit=True) as conn:  # K-000012 (batch 2) moves on
        conn.execute(
            "UPDATE service_requests SET last_modified_date = %s WHERE request_id = 'K-000012'",
            (H + timedelta(hours=1, minutes=5),),
        )
    rerun = dag.test(logical_date=H + timedelta(hours=1), run_conf={"batch_size": 10})
    assert rerun.state == "success"
    batches = requests.get(f"{receiver.url}/inspect/batches", timeout=30).json()
    after = {b["idempotency_key"] for b in batches}
    assert len(after - before) == 1, "only the batch that held the moved row has a new key"
    assert len(before - after) == 0
    new = next(b for b in batches if b["idempotency_key"] in after - before)
    assert new["count"] == 9 and "K-000012" not in {r["request_id"] for r in new["requests"]}
    stats = requests.get(f"{receiver.url}/inspect/stats", timeout=30).json()
    assert stats["duplicates"] == 4  # the four unchanged batches, recognised by their keys
