from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services_sync.core.transform import (
    FIELDS,
    InvalidRow,
    Unloadable,
    format_status,
    format_timestamp,
    to_record,
    transform_rows,
)

UTC = UTC
T = datetime(2025, 5, 14, 12, 34, 56, 789_000, tzinfo=UTC)


def row(**overrides):
    base = {
        "service_id": "water",
        "request_id": "REQ-1",
        "opening_date": T - timedelta(days=1),
        "status_id": 1,
        "last_modified_date": T,
    }
    base.update(overrides)
    return tuple(base[f] for f in FIELDS)


def test_valid_row_matches_the_contract_exactly():
    assert to_record(row()) == {
        "service_id": "water",
        "request_id": "REQ-1",
        "opening_date": "2025-05-13T12:34:56Z",
        "status_id": 1,
        "last_modified_date": "2025-05-14T12:34:56Z",
    }


def test_record_keys_are_in_contract_order():
    assert tuple(to_record(row())) == FIELDS


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            datetime(2025, 5, 14, 14, 34, 56, tzinfo=ZoneInfo("Europe/Paris")),
            "2025-05-14T12:34:56Z",
        ),
        (
            datetime(2025, 5, 14, 7, 34, 56, tzinfo=timezone(timedelta(hours=-5))),
            "2025-05-14T12:34:56Z",
        ),
        (datetime(2025, 5, 14, 12, 34, 56, 999_999, tzinfo=UTC), "2025-05-14T12:34:56Z"),
        (datetime(2025, 5, 14, 12, 34, 56), "2025-05-14T12:34:56Z"),  # naive -> UTC by default
        ("2025-05-14T12:34:56Z", "2025-05-14T12:34:56Z"),
        ("2025-05-14 14:34:56+02:00", "2025-05-14T12:34:56Z"),
    ],
    ids=["paris", "minus5", "microseconds-truncated", "naive", "iso-z", "iso-offset"],
)
def test_timestamps_become_utc_seconds_with_z(value, expected):
    assert format_timestamp(value, "opening_date") == expected


def test_naive_timestamps_use_the_configured_zone():
    naive = datetime(2025, 1, 14, 13, 0, 0)
    assert format_timestamp(naive, "x", ZoneInfo("Europe/Paris")) == "2025-01-14T12:00:00Z"


@pytest.mark.parametrize(
    ("wall", "expected"),
    [
        # clocks go back at 03:00 CEST: 02:30 happens twice; PostgreSQL reads the later one (CET)
        (datetime(2025, 10, 26, 2, 30), "2025-10-26T01:30:00Z"),
        # clocks go forward at 02:00 CET: 02:30 never happens; PostgreSQL keeps the CET offset
        (datetime(2025, 3, 30, 2, 30), "2025-03-30T01:30:00Z"),
        (datetime(2025, 10, 26, 1, 59, 59), "2025-10-25T23:59:59Z"),
        (datetime(2025, 10, 26, 3, 0), "2025-10-26T02:00:00Z"),
    ],
    ids=["repeated-hour", "skipped-hour", "before-change", "after-change"],
)
def test_naive_timestamps_at_a_dst_change_resolve_as_postgresql_does(wall, expected):
    # The expected values are what PostgreSQL 15 returns for
    # SET TIME ZONE 'Europe/Madrid'; SELECT '<wall>'::timestamp::timestamptz AT TIME ZONE 'UTC'
    # (the e2e test tests/dags/test_naive_timestamps_e2e.py checks it on the real server).
    assert format_timestamp(wall, "x", ZoneInfo("Europe/Madrid")) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "opening_date is NULL"),
        ("yesterday", "not an ISO 8601 timestamp"),
        (date(2025, 5, 14), "date without a time"),
        (1747225496, "expected a timestamp"),
    ],
)
def test_bad_timestamps_are_rejected_with_the_field(value, reason):
    with pytest.raises(InvalidRow, match=reason):
        format_timestamp(value, "opening_date")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), (Decimal("4"), 4), (Decimal("4.000"), 4), (5.0, 5), ("6", 6), (" 7 ", 7), ("-2", -2)],
)
def test_integral_statuses_become_integers(value, expected):
    assert format_status(value) == expected
    assert type(format_status(value)) is int


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "NULL"),
        (True, "boolean"),
        (2.5, "not an integer"),
        (Decimal("2.5"), "not an integer"),
        (Decimal("NaN"), "not a finite number"),
        (float("inf"), "not a finite number"),
        ("open", "not an integer"),
        ("", "not an integer"),
        (2**63, "64-bit"),
        ([1], "expected an integer"),
    ],
)
def test_non_integer_statuses_are_rejected(value, reason):
    with pytest.raises(InvalidRow, match=reason):
        format_status(value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("service_id", 42, "42"),
        ("request_id", uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ("request_id", "REQ-é", "REQ-é"),
    ],
)
def test_ids_are_strings(field, value, expected):
    assert to_record(row(**{field: value}))[field] == expected


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"request_id": None}, "request_id is NULL"),
        ({"service_id": None}, "service_id is NULL"),
        ({"service_id": "  "}, "service_id is empty"),
        ({"request_id": True}, "request_id is a boolean"),
        ({"request_id": 1.5}, "request_id has type float"),
        ({"last_modified_date": None}, "last_modified_date is NULL"),
    ],
)
def test_bad_ids_and_dates_are_rejected(overrides, reason):
    with pytest.raises(InvalidRow, match=reason):
        to_record(row(**overrides))


def test_values_the_driver_could_not_load_are_rejected_with_its_reason():
    infinite = Unloadable("infinity", "timestamp too large (after year 10K): 'infinity'")
    result = transform_rows(
        [row(request_id="A"), row(request_id="B", opening_date=infinite), row(request_id="C")]
    )
    assert [r["request_id"] for r in result.records] == ["A", "C"]
    assert [r.reason for r in result.rejected] == [
        "opening_date cannot be read as a contract value:"
        " timestamp too large (after year 10K): 'infinity'"
    ]
    assert result.rejected[0].row["opening_date"] == "infinity"
    for field in ("request_id", "status_id"):
        with pytest.raises(InvalidRow, match=f"^{field} cannot be read as a contract value: bad"):
            to_record(row(**{field: Unloadable("x", "bad")}))


@pytest.mark.parametrize(
    ("wall", "zone"),
    [(datetime(1, 1, 1), "Europe/Berlin"), (datetime(9999, 12, 31, 23), "America/New_York")],
)
def test_naive_timestamps_whose_utc_instant_leaves_years_1_to_9999_are_rejected(wall, zone):
    with pytest.raises(InvalidRow, match=r"^opening_date is outside the years 1-9999 in UTC"):
        to_record(row(opening_date=wall), ZoneInfo(zone))


def test_ids_with_a_nul_character_are_quarantined_in_a_form_jsonb_can_store():
    result = transform_rows([row(request_id="REQ\x001")])
    assert result.records == []
    assert result.rejected[0].reason == "request_id contains a NUL character: 'REQ\\x001'"
    assert result.rejected[0].row["request_id"] == "REQ\\x001"


def test_every_problem_of_a_row_is_reported():
    with pytest.raises(InvalidRow) as info:
        to_record(row(request_id=None, status_id="open", opening_date=None))
    assert str(info.value) == (
        "request_id is NULL; opening_date is NULL; status_id is not an integer: 'open'"
    )


def test_wrong_column_count_is_rejected():
    with pytest.raises(InvalidRow, match="expected 5"):
        to_record(("a", "b"))


def test_bad_rows_are_quarantined_and_never_block_good_ones():
    rows = [
        row(request_id="A"),
        row(request_id=None),
        row(request_id="B", status_id="x"),
        row(request_id="C"),
    ]
    result = transform_rows(rows)
    assert [r["request_id"] for r in result.records] == ["A", "C"]
    assert [r.reason for r in result.rejected] == [
        "request_id is NULL",
        "status_id is not an integer: 'x'",
    ]
    assert result.rejected[0].row["opening_date"] == (T - timedelta(days=1)).isoformat()
    assert len({r.fingerprint for r in result.rejected}) == 2


def test_fingerprint_is_stable_for_the_same_row_version():
    first = transform_rows([row(request_id=None)]).rejected[0]
    again = transform_rows([row(request_id=None)]).rejected[0]
    changed = transform_rows([row(request_id=None, status_id=2)]).rejected[0]
    assert first.fingerprint == again.fingerprint != changed.fingerprint


_any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC))),
    st.dates(),
    st.uuids(),
)


@given(st.lists(st.tuples(*[_any_value] * 5), max_size=20))
def test_any_row_is_either_a_valid_record_or_quarantined_with_a_reason(rows):
    result = transform_rows(rows)
    assert len(result.records) + len(result.rejected) == len(rows)
    for record in result.records:
        assert tuple(record) == FIELDS
        assert isinstance(record["service_id"], str) and record["service_id"].strip()
        assert isinstance(record["request_id"], str) and record["request_id"].strip()
        assert type(record["status_id"]) is int
        for field in ("opening_date", "last_modified_date"):
            datetime.strptime(record[field], "%Y-%m-%dT%H:%M:%SZ")
    for rejected in result.rejected:
        assert rejected.reason
        assert any(field in rejected.reason for field in (*FIELDS, "columns"))
