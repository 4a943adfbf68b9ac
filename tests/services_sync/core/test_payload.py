from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services_sync.core.payload import (
    BatchBounds,
    Interval,
    body_sha256,
    build_body,
    hourly_interval,
    idempotency_key,
    logical_date_problem,
    request_headers,
    resend_recipe,
)

UTC = UTC
H = datetime(2025, 5, 14, 10, tzinfo=UTC)
RECORDS = [
    {
        "service_id": "water",
        "request_id": "R1",
        "opening_date": "2025-05-14T09:00:00Z",
        "status_id": 1,
        "last_modified_date": "2025-05-14T10:00:00Z",
    },
    {
        "service_id": "roads",
        "request_id": "R-é",
        "opening_date": "2025-05-14T09:00:00Z",
        "status_id": 2,
        "last_modified_date": "2025-05-14T10:30:00Z",
    },
]


def test_body_is_a_compact_ascii_json_string_with_the_requests_key():
    body = build_body(RECORDS)
    assert isinstance(body, str)
    assert body.isascii()
    assert json.loads(body) == {"requests": RECORDS}
    assert " " not in body


def test_key_is_stable_for_the_same_interval_and_body():
    interval = Interval(H, H + timedelta(hours=1))
    body = build_body(RECORDS)
    assert idempotency_key(interval, body) == idempotency_key(
        Interval(H, H + timedelta(hours=1)), build_body([dict(r) for r in RECORDS])
    )
    assert idempotency_key(interval, body).startswith(
        "services-requests.v1:2025-05-14T10:00Z/2025-05-14T11:00Z:"
    )


def test_key_changes_with_the_data_or_the_interval():
    interval = Interval(H, H + timedelta(hours=1))
    body = build_body(RECORDS)
    changed = build_body([RECORDS[0], {**RECORDS[1], "status_id": 3}])
    later = Interval(H + timedelta(hours=1), H + timedelta(hours=2))
    keys = {
        idempotency_key(interval, body),
        idempotency_key(interval, changed),
        idempotency_key(later, body),
    }
    assert len(keys) == 3


def test_key_is_independent_of_the_timezone_the_interval_is_given_in():
    paris = timezone(timedelta(hours=2))
    body = build_body(RECORDS)
    assert idempotency_key(Interval(H, H + timedelta(hours=1)), body) == idempotency_key(
        Interval(H.astimezone(paris), (H + timedelta(hours=1)).astimezone(paris)), body
    )


def test_headers_carry_json_content_type_and_key():
    assert request_headers("k") == {"Content-Type": "application/json", "Idempotency-Key": "k"}


def test_body_hash_is_sha256_of_the_sent_bytes():
    import hashlib

    body = build_body(RECORDS)
    assert body_sha256(body) == hashlib.sha256(body.encode()).hexdigest()


def test_hourly_interval_accepts_one_whole_hour():
    assert hourly_interval(H, H + timedelta(hours=1)) == Interval(H, H + timedelta(hours=1))


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (None, None, "no data interval"),
        (H, H, "zero-width"),
        (H, H + timedelta(hours=2), "not one whole hour"),
        (H + timedelta(minutes=30), H + timedelta(minutes=90), "not one whole hour"),
    ],
)
def test_hourly_interval_rejects_anything_else(start, end, message):
    with pytest.raises(ValueError, match=message):
        hourly_interval(start, end)


def test_interval_requires_aware_bounds():
    with pytest.raises(ValueError, match="timezone-aware"):
        Interval(datetime(2025, 1, 1), datetime(2025, 1, 1, 1))


def test_batch_bounds_from_a_plan_row_as_it_crosses_xcom():
    bounds = BatchBounds.from_plan_row(
        [
            2,
            5,
            "2025-05-14 10:10:00.5+00",
            "R9",
            "water",
            "2025-05-14 10:20:00+00",
            "",
            "",
            1000,
            4321,
        ]
    )
    assert bounds.index == 2
    assert bounds.label == "batch 3/5"
    assert bounds.lower == ("2025-05-14 10:10:00.5+00", "R9", "water")
    assert bounds.planned_rows == 1000
    assert bounds.interval_rows == 4321


HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("logical_date", "start", "test_run"),
    [
        pytest.param(H, H, False, id="scheduled-or-backfill"),
        pytest.param(H + timedelta(minutes=23, seconds=5), H - HOUR, False, id="ui-prefilled-now"),
        pytest.param(H + timedelta(days=2, minutes=7), H, False, id="ui-manual-interval"),
        pytest.param(H + HOUR, H, True, id="dags-test"),
    ],
)
def test_runs_whose_logical_date_and_interval_agree(logical_date, start, test_run):
    assert (
        logical_date_problem(logical_date, Interval(start, start + HOUR), test_run=test_run) is None
    )


def test_a_run_on_the_hour_that_is_not_its_interval_start_is_refused():
    """`airflow dags trigger --logical-date 11:00` at 11:35: interval [10:00, 11:00) from now."""
    problem = logical_date_problem(H + HOUR, Interval(H, H + HOUR))
    assert "logical date of the scheduled run of [2025-05-14T11:00Z, 2025-05-14T12:00Z)" in problem
    assert "Delete this run" in problem


def test_a_run_whose_interval_was_taken_from_a_later_time_is_refused():
    """`airflow dags trigger --logical-date 2025-05-14T10:30` a year later: the latest hour."""
    later = H + timedelta(days=400)
    problem = logical_date_problem(H + timedelta(minutes=30), Interval(later, later + HOUR))
    assert "ends after its logical date 2025-05-14T10:30Z" in problem


def test_the_resend_recipe_is_a_one_hour_backfill_that_reprocesses():
    recipe = resend_recipe("services_requests_sync", H)
    assert (
        "airflow backfill create --dag-id services_requests_sync --from-date "
        "2025-05-14T10:00:00+00:00 --to-date 2025-05-14T10:00:00+00:00 "
        "--reprocess-behavior completed --max-active-runs 1"
    ) in recipe
