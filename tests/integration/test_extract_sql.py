"""The interval SQL on a real PostgreSQL: half-open windows, keyset batches, index use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from devkit.seed import insert_rows
from services_sync.core.payload import BatchBounds, Interval, build_body
from services_sync.core.sql import load_sql
from services_sync.core.transform import transform_rows
from services_sync.query.source import read_planned_batches

UTC = UTC
H = datetime(2025, 5, 14, 10, tzinfo=UTC)
INTERVAL = Interval(H, H + timedelta(hours=1))


def plan(conn, interval=INTERVAL, batch_size=1000, max_batch_bytes=1024 * 1024):
    # Parameters exactly as SQLExecuteQueryOperator renders them: strings from Jinja.
    params = {
        "window_start": str(interval.start.isoformat()),
        "window_end": str(interval.end.isoformat()),
        "batch_size": str(batch_size),
        "max_batch_bytes": str(max_batch_bytes),
    }
    rows = conn.execute(load_sql("plan_batches.sql"), params).fetchall()
    return [BatchBounds.from_plan_row(list(r)) for r in rows]


def read(conn, batches, interval=INTERVAL):
    """Each planned batch's rows, read as build_batches reads them (one snapshot)."""
    return [rows for _, rows, _ in read_planned_batches(conn, interval, batches)]


def fetch_all(conn, interval=INTERVAL, batch_size=1000):
    return read(conn, plan(conn, interval, batch_size), interval)


def req(rid, lmd, sid="water", status="1"):
    return (sid, rid, lmd - timedelta(days=1), status, lmd)


@pytest.fixture
def conn(source_db):
    with psycopg.connect(source_db, autocommit=True) as connection:
        yield connection


def test_the_interval_is_half_open_at_microsecond_precision(conn):
    insert_rows(
        conn,
        [
            req("before", H - timedelta(microseconds=1)),
            req("at-start", H),
            req("inside", H + timedelta(minutes=30)),
            req("last-microsecond", H + timedelta(hours=1) - timedelta(microseconds=1)),
            req("at-end", H + timedelta(hours=1)),
        ],
    )
    got = [r[1] for batch in fetch_all(conn) for r in batch]
    assert got == ["at-start", "inside", "last-microsecond"]
    previous = Interval(H - timedelta(hours=1), H)
    assert [r[1] for b in fetch_all(conn, previous) for r in b] == ["before"]
    following = Interval(H + timedelta(hours=1), H + timedelta(hours=2))
    assert [r[1] for b in fetch_all(conn, following) for r in b] == ["at-end"]


def test_an_empty_interval_plans_no_batch(conn):
    insert_rows(conn, [req("elsewhere", H + timedelta(hours=3))])
    assert plan(conn) == []


def test_2500_rows_make_3_batches_that_return_every_row_once_in_order(conn):
    rows = [req(f"R{i:05d}", H + timedelta(seconds=i)) for i in range(2500)]
    insert_rows(conn, rows)
    batches = plan(conn)
    assert [(b.index, b.count, b.planned_rows, b.interval_rows) for b in batches] == [
        (0, 3, 1000, 2500),
        (1, 3, 1000, 2500),
        (2, 3, 500, 2500),
    ]
    fetched = fetch_all(conn)
    assert [len(b) for b in fetched] == [1000, 1000, 500]
    assert [r[1] for b in fetched for r in b] == [r[1] for r in rows]


def test_rows_sharing_a_timestamp_are_split_by_request_id_without_loss(conn):
    same = H + timedelta(minutes=1)
    insert_rows(conn, [req(f"R{i:03d}", same) for i in range(25)])
    fetched = fetch_all(conn, batch_size=10)
    assert [len(b) for b in fetched] == [10, 10, 5]
    assert sorted(r[1] for b in fetched for r in b) == [f"R{i:03d}" for i in range(25)]


def test_identical_keys_are_never_split_across_batches(conn):
    same = H + timedelta(minutes=1)
    insert_rows(conn, [req("DUP", same, sid="water")] * 3 + [req(f"R{i}", same) for i in range(3)])
    fetched = fetch_all(conn, batch_size=2)
    assert sum(len(b) for b in fetched) == 6
    assert sum(1 for b in fetched if any(r[1] == "DUP" for r in b)) == 1


def test_null_ids_are_fetched_so_they_can_be_quarantined(conn):
    insert_rows(conn, [req(None, H + timedelta(minutes=5)), req("ok", H + timedelta(minutes=6))])
    fetched = [r[1] for b in fetch_all(conn, batch_size=1) for r in b]
    assert fetched == [None, "ok"]  # NULL sorts as '' in the batch key


def test_batches_tile_the_interval_when_rows_change_after_planning(conn):
    insert_rows(conn, [req(f"R{i:03d}", H + timedelta(minutes=i)) for i in range(30)])
    batches = plan(conn, batch_size=10)
    # After planning: a late commit lands in the middle, another before the first planned key,
    # and one row moves out of the interval.
    insert_rows(conn, [req("late-middle", H + timedelta(minutes=15, seconds=30))])
    conn.execute(
        "UPDATE service_requests SET last_modified_date = %s WHERE request_id = 'R000'",
        (H + timedelta(seconds=1),),
    )
    insert_rows(conn, [req("late-first", H)])
    conn.execute(
        "UPDATE service_requests SET last_modified_date = %s WHERE request_id = 'R020'",
        (H + timedelta(hours=2),),
    )
    got = [r[1] for rows in read(conn, batches) for r in rows]
    expected = {f"R{i:03d}" for i in range(30)} - {"R020"} | {"late-middle", "late-first"}
    assert sorted(got) == sorted(expected)
    assert len(got) == len(set(got))


def test_the_interval_query_is_an_index_range_scan(conn):
    rows = [
        req(f"R{i:06d}", H - timedelta(hours=40) + timedelta(seconds=i * 3)) for i in range(60_000)
    ]
    insert_rows(conn, rows)
    conn.execute("ANALYZE service_requests")
    params = {
        "window_start": INTERVAL.start,
        "window_end": INTERVAL.end,
        "batch_size": 1000,
        "max_batch_bytes": 1048576,
    }
    text = load_sql("plan_batches.sql")
    explain = "\n".join(r[0] for r in conn.execute("EXPLAIN " + text, params).fetchall())
    assert "service_requests_last_modified_idx" in explain, explain
    assert "Seq Scan" not in explain, explain


@pytest.mark.parametrize("max_bytes", [1024, 4096, 20_000])
def test_batches_shrink_so_no_body_exceeds_the_byte_bound(conn, max_bytes):
    # Long and non-ASCII ids, JSON-escaped characters: the worst cases for the estimate.
    long_ids = [
        req("R" + "é" * 60 + str(i), H + timedelta(seconds=i), sid='svc "quoted" \\ ' + "𝄞" * 10)
        for i in range(120)
    ]
    insert_rows(conn, long_ids)
    batches = plan(conn, batch_size=1000, max_batch_bytes=max_bytes)
    assert len(batches) > 1
    fetched = read(conn, batches)
    assert sum(len(b) for b in fetched) == 120
    for rows in fetched:
        body = build_body(transform_rows(rows).records)
        assert len(body.encode()) <= max_bytes


def test_the_row_limit_still_applies_when_bytes_allow_more(conn):
    insert_rows(conn, [req(f"R{i:03d}", H + timedelta(seconds=i)) for i in range(50)])
    assert [b.planned_rows for b in plan(conn, batch_size=20)] == [20, 20, 10]
