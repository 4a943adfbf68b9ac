"""Property: whatever mix of good and malformed rows an hour holds, the good ones arrive and
every bad one is quarantined with a reason, never sent."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import requests
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from devkit.seed import create_source_table
from services_sync.core.transform import transform_rows
from tests.reliability.harness import (
    SERVICES,
    H,
    insert,
    interval,
    quarantined,
    run_interval,
)
from tests.reliability.reconcile import reconcile

pytestmark = pytest.mark.e2e

#: Ways a legacy row breaks the API contract (``null_lmd`` rows belong to no interval at all).
BAD_KINDS = (
    "null_request_id",
    "null_service_id",
    "blank_service_id",
    "null_opening_date",
    "text_status",
    "decimal_status",
    "blank_status",
    "null_status",
    "huge_status",
    "null_lmd",
)
KINDS = ("good", "good", "good", *BAD_KINDS)


def make_row(index: int, kind: str, second: int, status: int, service: str) -> tuple[Any, ...]:
    """One source row of ``kind`` in hour H."""
    row: dict[str, Any] = {
        "service_id": service,
        "request_id": f"P-{index:04d}",
        "opening_date": H - timedelta(days=2, seconds=second),
        "status_id": str(status),
        "last_modified_date": H + timedelta(seconds=second, microseconds=index),
    }
    broken = {
        "null_request_id": {"request_id": None},
        "null_service_id": {"service_id": None},
        "blank_service_id": {"service_id": "  "},
        "null_opening_date": {"opening_date": None},
        "text_status": {"status_id": "open"},
        "decimal_status": {"status_id": "1.5"},
        "blank_status": {"status_id": ""},
        "null_status": {"status_id": None},
        "huge_status": {"status_id": str(2**63)},
        "null_lmd": {"last_modified_date": None},
    }
    row.update(broken.get(kind, {}))
    return tuple(row.values())


@st.composite
def hours(draw: st.DrawFn) -> tuple[list[tuple[Any, ...]], int]:
    """Rows of one hour (a random mix of kinds) and a batch size."""
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=40))
    rows = [
        make_row(
            index,
            kind,
            draw(st.integers(0, 3599)),
            draw(st.integers(-3, 10**6)),
            draw(st.sampled_from(SERVICES)),
        )
        for index, kind in enumerate(kinds)
    ]
    return rows, draw(st.integers(3, 15))


EVERY_KIND = (
    [make_row(i, kind, 60 * i, i, SERVICES[i % 5]) for i, kind in enumerate(BAD_KINDS)]
    + [make_row(100 + i, "good", 7 * i, i, SERVICES[i % 5]) for i in range(12)],
    4,
)


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,  # the same examples on every run
    database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: each example is a DAG run
    suppress_health_check=[HealthCheck.too_slow],
)
@example(EVERY_KIND)
@given(hour=hours())
def test_malformed_rows_are_quarantined_and_good_rows_delivered(
    dag, airflow_db, pg_cluster, receiver_server, hour
):
    rows, batch_size = hour
    dsn = pg_cluster.create_database(f"prop_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_source_table(conn)
    insert(dsn, rows)
    requests.delete(f"{receiver_server.url}/inspect", timeout=5).raise_for_status()
    api = {"conn_type": "http", "host": "127.0.0.1", "port": receiver_server.port}

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_SERVICES_SOURCE_DB", dsn)
        mp.setenv("AIRFLOW_CONN_SERVICES_API", json.dumps({**api, "schema": "http"}))
        run = run_interval(dag, H, batch_size=batch_size)

    assert run.state == "success"
    result = reconcile(dsn, receiver_server.url, [interval(H)])
    in_hour = [row for row in rows if row[4] is not None]
    assert len(result.expected) == len(transform_rows(in_hour).records)
    # Every bad row of the hour is quarantined, with the reason the contract code gives.
    held = {q["row_fingerprint"]: q["reason"] for q in quarantined(dsn)}
    assert held == {r.fingerprint: r.reason for r in result.rejected}
    assert all(held.values())
    # A row without last_modified_date is in no interval: never sent.
    never = {row[1] for row in rows if row[4] is None}
    assert never.isdisjoint(r["request_id"] for r in result.received)
