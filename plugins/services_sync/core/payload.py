"""Request bodies, batch plans and idempotency keys. Pure: no Airflow, no I/O.

Every function here is deterministic in its inputs, which is what makes reruns and backfills
safe: the same interval with the same data produces byte-identical bodies and the same
``Idempotency-Key``, so the receiver can de-duplicate whatever Airflow resends.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

#: Prefix of every key this pipeline sends; bump the version if the body format ever changes.
KEY_NAMESPACE = "services-requests.v1"


@dataclass(frozen=True)
class Interval:
    """A half-open data interval ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("interval bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty interval [{self.start}, {self.end})")

    @property
    def label(self) -> str:
        """``2025-05-14T10:00Z/2025-05-14T11:00Z``: how intervals are named in keys and logs."""
        return f"{_utc_label(self.start)}/{_utc_label(self.end)}"

    def next(self) -> Interval:
        """The interval of the same length right after this one."""
        return Interval(self.end, self.end + (self.end - self.start))


def hourly_interval(start: datetime | None, end: datetime | None) -> Interval:
    """The run's data interval, if it is exactly one whole UTC hour ``[H:00, H+1:00)``.

    Raises:
        ValueError: saying what is wrong with the interval (missing, zero-width, not an hour).
    """
    if start is None or end is None:
        raise ValueError("the run has no data interval (it was triggered without a logical date)")
    if end == start:
        raise ValueError(
            f"the data interval [{start}, {end}) is zero-width: the DAG must be scheduled with "
            "CronDataIntervalTimetable, not a bare cron string"
        )
    interval = Interval(start, end)
    aligned = start.astimezone(UTC)
    if end - start != timedelta(hours=1) or (
        aligned.minute,
        aligned.second,
        aligned.microsecond,
    ) != (
        0,
        0,
        0,
    ):
        raise ValueError(f"the data interval {interval.label} is not one whole hour")
    return interval


def logical_date_problem(
    logical_date: datetime | None, interval: Interval, *, test_run: bool = False
) -> str | None:
    """Why a run's logical date and data interval disagree, or None when they agree.

    Scheduled and backfill runs of the hourly timetable have ``logical_date == start``. Two
    kinds of run break that, and both are refused:

    * a run holding a logical date **on the hour** that is not its interval start: it holds
      the logical date of the scheduled run of ``[logical_date, +1h)``. If that run already
      exists Airflow refuses the trigger; if not, the scheduler can never create it (it logs
      "run already exists; skipping dagrun creation" and stops scheduling the DAG). That is
      ``airflow dags trigger --logical-date H:00``, which in Airflow 3.3 takes the interval
      from the time of triggering, not from the logical date;
    * a run whose interval ends after its logical date: the interval came from a later time
      than the logical date (``dags trigger --logical-date`` of an older time), so it is not
      the hour that was asked for.

    A manual run off the hour whose interval lies before its logical date (the UI's trigger
    form, with the pre-filled logical date or a manual data interval) agrees. ``dag.test()``
    runs (``airflow dags test``) are let through: their interval is the hour before the
    logical date by design (see the README's warning about running it on a live database).
    """
    if logical_date is None or logical_date == interval.start or test_run:
        return None
    utc = logical_date.astimezone(UTC)
    if (utc.minute, utc.second, utc.microsecond) == (0, 0, 0):
        return (
            f"its logical date {_utc_label(logical_date)} is the logical date of the scheduled "
            f"run of [{_utc_label(logical_date)}, {_utc_label(logical_date + timedelta(hours=1))})"
            f" but its data interval is {interval.label}: while this run exists the scheduler "
            "cannot create that run and stops scheduling this DAG. Delete this run (UI: the run "
            "> Delete; REST: DELETE /api/v2/dags/<dag_id>/dagRuns/<run_id>)"
        )
    if interval.end > logical_date:
        return (
            f"its data interval {interval.label} ends after its logical date "
            f"{_utc_label(logical_date)}: the interval was taken from the time the run was "
            "triggered (`airflow dags trigger --logical-date` does that in Airflow 3.3), not "
            "from the logical date, so it is not the hour that was asked for"
        )
    return None


def resend_recipe(dag_id: str, start: datetime | None = None) -> str:
    """How to send exactly one hour (again): a one-hour backfill that reprocesses a done run."""
    if start is None:
        hour, what = "<S>", "the hour starting at S (e.g. 2025-05-14T10:00:00+00:00)"
    else:
        hour, what = _iso_hour(start), "this hour"
    return (
        f"To send {what} again: `airflow backfill create --dag-id {dag_id} --from-date {hour} "
        f"--to-date {hour} --reprocess-behavior completed --max-active-runs 1` (in the UI: "
        f"Trigger > Backfill, {hour} as start and end, Reprocess Behavior 'All Runs', Max "
        "Active Runs 1)"
    )


@dataclass(frozen=True)
class BatchBounds:
    """One keyset batch planned by ``plan_batches.sql``: sort keys ``[lower, upper)``.

    A sort key is ``(last_modified_date, request_id, service_id)`` with NULL ids as ``''``; the
    first batch starts at the interval start and the last one ends at the interval end, so the
    batches tile the whole interval even if rows change between planning and fetching.
    """

    index: int
    count: int
    lower: tuple[str, str, str]
    upper: tuple[str, str, str]
    planned_rows: int
    interval_rows: int

    @classmethod
    def from_plan_row(cls, row: Sequence[Any]) -> BatchBounds:
        """Build from one row of ``plan_batches.sql`` (it crosses XCom as a list)."""
        (index, count, lo_ts, lo_rid, lo_sid, hi_ts, hi_rid, hi_sid, planned, total) = row
        return cls(
            index=int(index),
            count=int(count),
            lower=(str(lo_ts), str(lo_rid), str(lo_sid)),
            upper=(str(hi_ts), str(hi_rid), str(hi_sid)),
            planned_rows=int(planned),
            interval_rows=int(total),
        )

    @property
    def label(self) -> str:
        """``batch 3/12``, 1-based, for logs and the UI's map index."""
        return f"batch {self.index + 1}/{self.count}"


def build_body(records: Sequence[Mapping[str, Any]]) -> str:
    """The POST body as a compact JSON string.

    ASCII-only on purpose: ``requests`` encodes a ``str`` body as Latin-1, so escaping non-ASCII
    characters keeps any id intact on the wire. A string (not a dict) because ``HttpOperator``
    form-encodes a dict ``data=``.
    """
    return json.dumps({"requests": list(records)}, separators=(",", ":"), ensure_ascii=True)


def body_sha256(body: str) -> str:
    """Hex sha256 of the exact bytes we send."""
    return hashlib.sha256(body.encode("ascii")).hexdigest()


def pack_body(body: str) -> bytes:
    """A body as the outbox stores it: gzip (level 6) of its bytes.

    No timestamp in the gzip header, so the same body always packs to the same bytes. Compressed
    once here; sent as is with ``Content-Encoding: gzip`` when the receiver takes it.
    """
    return gzip.compress(body.encode("ascii"), compresslevel=6, mtime=0)


def unpack_body(stored: bytes) -> str:
    """The JSON body of a stored (gzip) body."""
    return gzip.decompress(stored).decode("ascii")


def part_key(batch_key: str, part: str) -> str:
    """The key of a body derived from a batch: a 413 half, or the batch minus superseded records.

    The batch key's namespace and scope, and the digest of the part's own bytes.
    """
    return f"{batch_key.rsplit(':', 1)[0]}:{body_sha256(part)[:40]}"


def idempotency_key(interval: Interval, body: str, namespace: str = KEY_NAMESPACE) -> str:
    """Key of one batch: the interval plus a digest of the body, never the run id.

    ``run_id`` differs between scheduled, manual and backfill runs of the same interval, and
    the logical date means different intervals for manual and scheduled runs; the data interval
    and the content are what identify a delivery.
    """
    return f"{namespace}:{interval.label}:{body_sha256(body)[:40]}"


#: Idempotency-Key namespace of CDC batches.
CDC_KEY_NAMESPACE = "services-requests.cdc.v1"


def scoped_key(scope: str, body: str) -> str:
    """Key of a CDC batch: its change positions (``scope``, see ``cdc.key_scope``) + a digest.

    ``(commit_lsn, position)`` identifies a change for the slot's lifetime, so a window
    delivered again after a crash sends the same keys; the digest tells apart the halves of a
    batch split on HTTP 413. Never the run id.
    """
    return f"{CDC_KEY_NAMESPACE}:{scope}:{body_sha256(body)[:40]}"


def request_headers(key: str) -> dict[str, str]:
    """Headers of every POST: JSON body and the batch's idempotency key."""
    return {"Content-Type": "application/json", "Idempotency-Key": key}


def _utc_label(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _iso_hour(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:00:00+00:00")


def split_body(body: str) -> tuple[str, str]:
    """Split a body's records in two halves (for a 413); deterministic, so keys stay stable.

    Raises:
        ValueError: if the body holds a single record and cannot be split.
    """
    records = json.loads(body)["requests"]
    if len(records) < 2:
        raise ValueError("a single record is larger than the receiver accepts")
    middle = len(records) // 2
    return build_body(records[:middle]), build_body(records[middle:])


def body_records(body: str) -> list[dict[str, Any]]:
    """The records of a body built by :func:`build_body`."""
    return json.loads(body)["requests"]
