"""Source rows -> request records of the API contract. Pure: no Airflow, no I/O.

The contract (``POST /services-data/requests``)::

    {"service_id": "string", "request_id": "string", "opening_date": "2025-05-14T12:34:56Z",
     "status_id": 1, "last_modified_date": "2025-05-14T12:34:56Z"}

This module is the single source of truth for it: a row either becomes exactly that shape or is
rejected with a reason that names the field, so it can be quarantined without blocking the
rows next to it.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any

#: Column order of the extract SQL and of every record we send.
FIELDS: tuple[str, ...] = (
    "service_id",
    "request_id",
    "opening_date",
    "status_id",
    "last_modified_date",
)

_INTEGER_TEXT = re.compile(r"^[+-]?\d+$")
#: Status ids travel as JSON integers; keep them inside a signed 64-bit range so every consumer
#: (Java long, Postgres bigint) can hold them.
_INT64 = 2**63


class InvalidRow(ValueError):
    """A source row that cannot be expressed in the API contract."""


@dataclass(frozen=True)
class Unloadable:
    """A source value the database driver could not turn into a Python value.

    ``'infinity'`` and years outside 1..9999 fit a PostgreSQL timestamp but no Python datetime;
    the reader hands such a value over as its text so that the row is quarantined with a reason
    instead of failing every row read with it.
    """

    text: str
    error: str


@dataclass(frozen=True)
class Rejected:
    """A row that was not sent, with the reason and a JSON-safe copy of what it held."""

    fingerprint: str
    reason: str
    row: dict[str, Any]


@dataclass(frozen=True)
class TransformResult:
    """Records to send, in source order, and the rows that were quarantined."""

    records: list[dict[str, Any]]
    rejected: list[Rejected]


def format_timestamp(value: object, field: str, naive_timezone: tzinfo = UTC) -> str:
    """Render a timestamp as UTC ``YYYY-MM-DDTHH:MM:SSZ`` (sub-seconds are truncated).

    Naive datetimes (``timestamp without time zone`` columns) are read in ``naive_timezone``.
    ISO 8601 strings are accepted for legacy text columns.
    """
    if value is None:
        raise InvalidRow(f"{field} is NULL")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRow(f"{field} is not an ISO 8601 timestamp: {value[:40]!r}") from None
    if not isinstance(value, datetime):
        if isinstance(value, Unloadable):
            raise InvalidRow(_unloadable_reason(field, value))
        if isinstance(value, date):
            raise InvalidRow(f"{field} is a date without a time: {value.isoformat()}")
        raise InvalidRow(f"{field} has type {type(value).__name__}, expected a timestamp")
    try:
        if value.tzinfo is None or value.utcoffset() is None:
            value = localize_naive(value, naive_timezone)
        # isoformat (C, zero-padded 4-digit year) rather than strftime: several times faster.
        return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"
    except OverflowError:
        # 0001-01-01 east of UTC or 9999-12-31 west of it: the UTC instant has no 4-digit year.
        reason = f"{field} is outside the years 1-9999 in UTC: {value.isoformat()}"
        raise InvalidRow(reason) from None


def localize_naive(value: datetime, zone: tzinfo) -> datetime:
    """A naive wall-clock time in ``zone``, resolved the way PostgreSQL resolves it.

    The interval is selected by PostgreSQL (a ``timestamp`` column compared with ``timestamptz``
    bounds in the session's zone, which every connection sets to the naive zone), so the record
    must carry the instant PostgreSQL saw: a wall time that occurs twice (clocks go back) is the
    *later* instant; a wall time that never occurred (clocks go forward) takes the offset from
    before the change. Python's default (``fold=0``) would pick the earlier instant of a repeated
    hour and stamp the record with a time outside the interval that selected it.
    """
    first = value.replace(tzinfo=zone, fold=0)
    second = value.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    exists = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == value
    return second if exists else first


def format_identifier(value: object, field: str) -> str:
    """Render an id as a non-empty string; integers and UUIDs are stringified."""
    if value is None:
        raise InvalidRow(f"{field} is NULL")
    if isinstance(value, bool):
        raise InvalidRow(f"{field} is a boolean, expected a string")
    if isinstance(value, int | uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        if isinstance(value, Unloadable):
            raise InvalidRow(_unloadable_reason(field, value))
        raise InvalidRow(f"{field} has type {type(value).__name__}, expected a string")
    if not value.strip():
        raise InvalidRow(f"{field} is empty")
    if "\x00" in value:
        # JSON can carry U+0000 but PostgreSQL text/jsonb and many receivers cannot store it.
        raise InvalidRow(f"{field} contains a NUL character: {value[:40]!r}")
    return value


def format_status(value: object, field: str = "status_id") -> int:
    """Render the status as a JSON integer; integral decimals and digit strings are accepted."""
    if value is None:
        raise InvalidRow(f"{field} is NULL")
    if isinstance(value, bool):
        raise InvalidRow(f"{field} is a boolean, expected an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, Decimal | float):
        if not (isinstance(value, Decimal) and value.is_finite()) and not (
            isinstance(value, float) and value == value and abs(value) != float("inf")
        ):
            raise InvalidRow(f"{field} is not a finite number: {value}")
        if value != int(value):
            raise InvalidRow(f"{field} is not an integer: {value}")
        number = int(value)
    elif isinstance(value, str):
        if not _INTEGER_TEXT.match(value.strip()):
            raise InvalidRow(f"{field} is not an integer: {value[:40]!r}")
        number = int(value.strip())
    elif isinstance(value, Unloadable):
        raise InvalidRow(_unloadable_reason(field, value))
    else:
        raise InvalidRow(f"{field} has type {type(value).__name__}, expected an integer")
    if not -_INT64 <= number < _INT64:
        raise InvalidRow(f"{field} is out of the 64-bit integer range: {number}")
    return number


_FIELD_KINDS = (
    ("service_id", "id"),
    ("request_id", "id"),
    ("opening_date", "timestamp"),
    ("status_id", "status"),
    ("last_modified_date", "timestamp"),
)


def to_record(row: Sequence[Any] | Mapping[str, Any], naive_timezone: tzinfo = UTC) -> dict:
    """Convert one source row (in :data:`FIELDS` order, or a mapping) to a contract record.

    Raises:
        InvalidRow: with every problem of the row, field by field, joined by ``"; "``.
    """
    values = _as_mapping(row)
    record: dict[str, Any] = {}
    problems: list[str] = []
    # A plain loop over module constants: this runs once per row of every batch (make bench).
    for field, kind in _FIELD_KINDS:
        value = values.get(field)
        try:
            if kind == "id":
                record[field] = format_identifier(value, field)
            elif kind == "timestamp":
                record[field] = format_timestamp(value, field, naive_timezone)
            else:
                record[field] = format_status(value, field)
        except InvalidRow as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidRow("; ".join(problems))
    return record


def transform_rows(
    rows: Iterable[Sequence[Any] | Mapping[str, Any]], naive_timezone: tzinfo = UTC
) -> TransformResult:
    """Split rows into contract records and rejected rows; one bad row never stops the rest."""
    records: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    for row in rows:
        try:
            records.append(to_record(row, naive_timezone))
        except InvalidRow as exc:
            safe = json_safe_row(row)
            rejected.append(Rejected(fingerprint=row_fingerprint(safe), reason=str(exc), row=safe))
    return TransformResult(records=records, rejected=rejected)


def json_safe_row(row: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-serialisable copy of a raw row, for the quarantine table and logs."""
    return {field: _json_safe(value) for field, value in _as_mapping(row).items()}


def row_fingerprint(safe_row: Mapping[str, Any]) -> str:
    """Stable identity of a raw row version: the same bad row quarantined twice is one entry."""
    canonical = json.dumps(safe_row, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _as_mapping(row: Sequence[Any] | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(row, Mapping):
        return row
    if len(row) != len(FIELDS):
        raise InvalidRow(f"row has {len(row)} columns, expected {len(FIELDS)}: {', '.join(FIELDS)}")
    return dict(zip(FIELDS, row, strict=True))


def _unloadable_reason(field: str, value: Unloadable) -> str:
    return f"{field} cannot be read as a contract value: {value.error[:200]}"


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        # The quarantine table is jsonb, which rejects U+0000: keep it visible as the text \x00.
        return value.replace("\x00", "\\x00") if "\x00" in value else value
    if isinstance(value, Unloadable):
        return value.text
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)
