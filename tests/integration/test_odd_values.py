"""Values psycopg cannot load, and rows jsonb cannot store, on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from devkit.seed import insert_rows
from services_sync.core import state
from services_sync.core.config import load_settings
from services_sync.core.db import connect
from services_sync.core.payload import BatchBounds, Interval
from services_sync.core.sql import load_sql
from services_sync.core.transform import Unloadable, transform_rows
from services_sync.query.source import read_planned_batches

H = datetime(2025, 5, 14, 10, tzinfo=UTC)
INTERVAL = Interval(H, H + timedelta(hours=1))


def whole_interval_plan(conn) -> list[BatchBounds]:
    params = {
        "window_start": H.isoformat(),
        "window_end": (H + timedelta(hours=1)).isoformat(),
        "batch_size": "1000",
        "max_batch_bytes": str(1024 * 1024),
    }
    rows = conn.execute(load_sql("plan_batches.sql"), params).fetchall()
    return [BatchBounds.from_plan_row(list(r)) for r in rows]


def test_a_value_psycopg_cannot_load_comes_back_as_text_and_its_batch_reads(source_db):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(
            conn,
            [
                ("water", "A", "2025-05-13 09:00:00+00", "1", H + timedelta(minutes=1)),
                ("water", "B", "infinity", "1", H + timedelta(minutes=2)),
                ("water", "C", "2025-05-13 09:00:00+00", "2", H + timedelta(minutes=3)),
            ],
        )
        plan = whole_interval_plan(conn)
    with psycopg.connect(source_db) as conn:
        batches = list(read_planned_batches(conn, INTERVAL, plan))

    assert len(batches) == 1
    rows = batches[0][1]
    assert [r[1] for r in rows] == ["A", "B", "C"]
    assert rows[1][2] == Unloadable("infinity", "timestamp too large (after year 10K): 'infinity'")
    assert rows[0][2] == datetime(2025, 5, 13, 9, tzinfo=UTC)
    assert [r["request_id"] for r in transform_rows(rows).records] == ["A", "C"]


def test_a_row_with_a_nul_character_is_quarantined_in_jsonb(source_db):
    settings = load_settings()
    row = ("water", "REQ\x001", H - timedelta(days=1), 1, H)  # e.g. from a MySQL source
    rejected = transform_rows([row]).rejected
    with connect(settings.state_conn_id) as conn:
        state.ensure_state_tables(conn, settings.state_schema)
        state.quarantine_rows(
            conn,
            settings.state_schema,
            dag_id="services_requests_sync",
            run_id="manual__nul",
            interval_start=INTERVAL.start,
            interval_end=INTERVAL.end,
            rejected=rejected,
        )
        conn.commit()
        stored = conn.execute(
            f"SELECT row_data->>'request_id', reason FROM {settings.state_schema}"
            ".quarantined_requests"
        ).fetchall()
    assert stored == [("REQ\\x001", "request_id contains a NUL character: 'REQ\\x001'")]
