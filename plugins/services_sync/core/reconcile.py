"""Why a row now in the interval is missing from what a run sent. Pure: no Airflow, no I/O.

The reconciliation (``reconcile_interval``) asks PostgreSQL which rows now in the interval the
read of their batch could not see: their current version was committed after the batch's
snapshot. That is a late commit only if the version was never sent. Against the records the
batch sent, each such row is one of:

* **late commit**: its key was not sent, or was sent with another ``last_modified_date`` (a
  version committed after the read, with a stamp inside the interval). Never sent: an alarm.
* **updated in place**: its key was sent with the same ``last_modified_date`` but other
  content. The writer changed the row without touching ``last_modified_date``, so no later
  interval will carry it either: a warning that names the cause and the fix, not an alarm.
* **unchanged**: sent with exactly this content (an update that changed no field the contract
  carries, such as another column of the table). Nothing to do.
* **quarantined**: this very row version (by fingerprint) is quarantined for the interval; it
  is not sendable, and the quarantine alert reports it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any

from services_sync.core.transform import (
    FIELDS,
    InvalidRow,
    format_timestamp,
    json_safe_row,
    row_fingerprint,
    to_record,
)

#: How many rows of each kind a message names one by one.
NAMED = 20

RecordKey = tuple[str, str]


@dataclass(frozen=True)
class LateRow:
    """A row the read could not see, as the messages name it."""

    service_id: Any
    request_id: Any
    last_modified_date: Any
    #: Updated in place: what differs from the sent record (``status_id 1 -> 7``).
    changes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``R002 (water) at 2025-05-14T10:02:00+00:00``."""
        return f"{self.request_id} ({self.service_id}) at {self.last_modified_date}"


@dataclass
class LateRows:
    """The rows the read could not see, sorted by why."""

    late_commits: list[LateRow] = field(default_factory=list)
    updated_in_place: list[LateRow] = field(default_factory=list)
    unchanged: list[LateRow] = field(default_factory=list)
    quarantined: list[LateRow] = field(default_factory=list)
    #: Rows found beyond the ones classified (the query returns a bounded number): they count
    #: as late commits, the safe side.
    unclassified: int = 0

    @property
    def late_commit_count(self) -> int:
        """Late commits, the unclassified rows included."""
        return len(self.late_commits) + self.unclassified


def fingerprint(row: Sequence[Any] | Mapping[str, Any]) -> str:
    """The quarantine's identity of a raw row version (as ``transform_rows`` computes it)."""
    return row_fingerprint(json_safe_row(row))


def record_key(record: Mapping[str, Any]) -> RecordKey:
    """``(service_id, request_id)`` of a contract record, or of a raw row's JSON-safe copy."""
    return (str(record["service_id"]), str(record["request_id"]))


def sent_records(bodies_records: Iterable[Iterable[Mapping[str, Any]]]) -> dict[RecordKey, dict]:
    """The sent records by key (``bodies_records``: the records of each sent body)."""
    return {record_key(r): dict(r) for records in bodies_records for r in records}


def classify_late_rows(
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
    sent: Mapping[RecordKey, Mapping[str, Any]],
    quarantined: Collection[str],
    *,
    total: int | None = None,
    naive_timezone: tzinfo = UTC,
) -> LateRows:
    """Sort the rows the read could not see by why (see the module docstring).

    Args:
        rows: raw source rows (``fetch_batch.sql``'s columns, or mappings) the read missed.
        sent: the records the run sent for the batches holding them, by key.
        quarantined: fingerprints quarantined for the interval.
        total: how many such rows there are in all (``rows`` may be the first of them); the
            rest count as late commits.
        naive_timezone: the zone naive timestamps are read in, as when the batch was built.
    """
    result = LateRows()
    count = 0
    for row in rows:
        count += 1
        safe = json_safe_row(row)
        named = LateRow(
            safe.get("service_id"), safe.get("request_id"), safe.get("last_modified_date")
        )
        if row_fingerprint(safe) in quarantined:
            result.quarantined.append(named)
            continue
        try:
            record: dict[str, Any] | None = to_record(row, naive_timezone)
            problem = ""
        except InvalidRow as exc:
            record, problem = None, str(exc)
        ids_known = safe.get("service_id") is not None and safe.get("request_id") is not None
        was_sent = sent.get(record_key(safe)) if ids_known else None
        if was_sent is None:
            result.late_commits.append(named)
        elif record == dict(was_sent):
            result.unchanged.append(named)
        elif _stamp(row, record, naive_timezone) != was_sent.get("last_modified_date"):
            result.late_commits.append(named)  # a newer version, stamped inside the interval
        else:
            changes = (
                tuple(
                    f"{name} {was_sent.get(name)} -> {record[name]}"
                    for name in FIELDS
                    if record[name] != was_sent.get(name)
                )
                if record is not None
                else (f"now breaks the contract: {problem}",)
            )
            result.updated_in_place.append(
                LateRow(named.service_id, named.request_id, named.last_modified_date, changes)
            )
    if total is not None:
        result.unclassified = max(total - count, 0)
    return result


def _stamp(row: Sequence[Any] | Mapping[str, Any], record: Mapping[str, Any] | None, zone: tzinfo):
    if record is not None:
        return record["last_modified_date"]
    value = row.get("last_modified_date") if isinstance(row, Mapping) else row[-1]
    try:
        return format_timestamp(value, "last_modified_date", zone)
    except InvalidRow:
        return None


def _named(rows: Sequence[LateRow], *, with_changes: bool = False) -> str:
    parts = [
        row.label + (f" ({'; '.join(row.changes)})" if with_changes and row.changes else "")
        for row in rows[:NAMED]
    ]
    return ", ".join(parts)


def late_commit_problem(late: LateRows) -> str | None:
    """The alarm for rows committed after the read and never sent; None if there are none."""
    count = late.late_commit_count
    if not count:
        return None
    more = count - min(len(late.late_commits), NAMED)
    named = _named(late.late_commits) + (f" and {more} more" if more else "")
    return (
        f"{count} row(s) in the interval were committed after it was read and were not sent: "
        f"{named}. A writer's transaction or clock escaped the late-commit gate (an unrelated "
        "writer the gate stopped waiting for: raise SERVICES_SYNC_UNRELATED_WRITER_WAIT_S; a "
        "clock behind the skew margin: raise SERVICES_SYNC_CLOCK_SKEW_S); clear this run to "
        "send them"
    )


def in_place_warning(late: LateRows) -> str | None:
    """The warning for rows updated in place after the read; None if there are none."""
    rows = late.updated_in_place
    if not rows:
        return None
    more = f" and {len(rows) - NAMED} more" if len(rows) > NAMED else ""
    return (
        f"{len(rows)} row(s) were updated in place without touching last_modified_date after "
        f"the interval was read: {_named(rows, with_changes=True)}{more}. Not a late commit: "
        "the receiver holds the content these rows had when they were read, and no later "
        "interval will send the new one (their last_modified_date did not move). Fix the "
        "writer so that every update sets last_modified_date (e.g. a BEFORE UPDATE trigger "
        "setting it to now()); clear this run to send their current content"
    )


def quiet_notes(late: LateRows) -> list[str]:
    """What the log says about the rows that need nothing done (unchanged, quarantined)."""
    notes = []
    if late.unchanged:
        notes.append(
            f"{len(late.unchanged)} row(s) were rewritten after the read with the content that "
            f"was sent (an update that changed no field of the contract): "
            f"{_named(late.unchanged)}"
        )
    if late.quarantined:
        notes.append(
            f"{len(late.quarantined)} row(s) touched after the read are quarantined (not "
            f"sendable; the quarantine alert reports them): {_named(late.quarantined)}"
        )
    return notes
