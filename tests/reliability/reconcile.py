"""Source-to-receiver reconciliation: the one verdict every fault test ends with.

``reconcile(source_dsn, receiver_url, intervals)`` reads back the source rows of the delivered
intervals, converts them with the pipeline's own contract code
(:func:`services_sync.core.transform.transform_rows`) and checks the reference receiver's inspection
endpoints against them:

1. **complete and current**: for every source row that passes the contract, the receiver's
   latest state (``/inspect/state``) for its ``(service_id, request_id)`` equals the record;
2. **nothing extra**: the receiver holds no ``(service_id, request_id)`` that is not such a row;
3. **never backwards**: per ``(service_id, request_id)``, the ``last_modified_date`` values the
   receiver stored (``/inspect/requests``, arrival order) never decrease;
4. **duplicates only under one key**: a record version ``(service_id, request_id,
   last_modified_date)`` stored more than once was always stored under the same
   ``Idempotency-Key`` (the receiver stores a repeated key once, so a version stored twice
   under different keys is a resend the receiver could not recognise).

Every violation is collected and reported in one ``AssertionError`` (the first few of each kind
spelled out), so a failing fault test says everything that went wrong at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

import psycopg
import requests

from services_sync.core.transform import Rejected, transform_rows

#: A data interval ``[start, end)`` (timezone-aware).
IntervalBounds = tuple[datetime, datetime]
#: How a record is identified downstream.
RecordKey = tuple[str, str]

_SHOWN = 5
_SOURCE_SQL = (
    "SELECT service_id, request_id, opening_date, status_id, last_modified_date "
    "FROM service_requests "
    "WHERE last_modified_date >= %(start)s AND last_modified_date < %(end)s "
    "ORDER BY last_modified_date"
)


@dataclass(frozen=True)
class Reconciliation:
    """What :func:`reconcile` compared (returned when every check passed).

    Attributes:
        expected: The contract records of the source rows in the intervals, by downstream key
            (the newest version when a key has several rows).
        rejected: Source rows in the intervals that fail the contract (must be quarantined,
            never sent).
        state: The receiver's latest record per key.
        received: Every record the receiver stored, in arrival order, with its key.
        redelivered: Record versions stored more than once (always under one key).
    """

    expected: dict[RecordKey, dict[str, Any]]
    rejected: list[Rejected]
    state: dict[RecordKey, dict[str, Any]]
    received: list[dict[str, Any]]
    redelivered: dict[tuple[str, str, str], int] = field(default_factory=dict)


def reconcile(
    source_dsn: str,
    receiver_url: str,
    intervals: Iterable[IntervalBounds],
    *,
    naive_timezone: tzinfo = UTC,
    timeout_s: float = 10.0,
) -> Reconciliation:
    """Assert that the receiver holds exactly the current contract records of ``intervals``.

    Args:
        source_dsn: libpq URI of the source database (the table ``service_requests``).
        receiver_url: Base URL of the reference receiver (its ``/inspect/*`` endpoints).
        intervals: The data intervals that were delivered, as ``(start, end)`` pairs.
        naive_timezone: How the pipeline reads naive timestamps (its
            ``SERVICES_SYNC_NAIVE_TIMEZONE``).
        timeout_s: HTTP timeout for the inspection calls.

    Returns:
        What was compared, for further test-specific assertions.

    Raises:
        AssertionError: listing every violation of the four checks.
        ValueError: if the source itself is ambiguous (two different rows with the same key and
            the same ``last_modified_date``), so no single record can be expected.
    """
    bounds = list(intervals)
    if not bounds:
        raise ValueError("reconcile needs at least one delivered interval")
    rows = _source_rows(source_dsn, bounds)
    result = transform_rows(rows, naive_timezone)
    expected = _newest_per_key(result.records)

    received: list[dict[str, Any]] = _get(receiver_url, "/inspect/requests", timeout_s)
    state_list: list[dict[str, Any]] = _get(receiver_url, "/inspect/state", timeout_s)
    state = {_key(r): r for r in state_list}

    problems: dict[str, list[str]] = defaultdict(list)
    for key, record in expected.items():
        got = state.get(key)
        if got is None:
            problems["1. missing at the receiver"].append(f"{key}: expected {record}")
        elif got != record:
            problems["1. receiver's latest state differs from the source"].append(
                f"{key}: source {record}, receiver {got}"
            )
    for key in sorted(state.keys() - expected.keys()):
        problems["2. extra at the receiver (no such contract row in the intervals)"].append(
            f"{key}: {state[key]}"
        )

    last_seen: dict[RecordKey, str] = {}
    for position, record in enumerate(received):
        key, lmd = _key(record), record["last_modified_date"]
        previous = last_seen.get(key)
        if previous is not None and lmd < previous:
            problems["3. last_modified_date went backwards"].append(
                f"{key}: {lmd} arrived (position {position}, key "
                f"{record.get('idempotency_key')}) after {previous}"
            )
        last_seen[key] = max(lmd, previous or lmd)

    keys_by_version: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for record in received:
        version = (*_key(record), record["last_modified_date"])
        keys_by_version[version].add(str(record.get("idempotency_key")))
        counts[version] += 1
    for version, keys in keys_by_version.items():
        if len(keys) > 1:
            problems["4. one record version stored under several idempotency keys"].append(
                f"{version}: {counts[version]} times under {sorted(keys)}"
            )

    if problems:
        lines = [
            f"reconcile: {len(expected)} contract rows in {len(bounds)} interval(s), "
            f"{len(state)} keys at the receiver, {len(received)} records received"
        ]
        for check in sorted(problems):
            found = problems[check]
            lines.append(f"{check}: {len(found)}")
            lines += [f"    {item}" for item in found[:_SHOWN]]
            if len(found) > _SHOWN:
                lines.append(f"    ... and {len(found) - _SHOWN} more")
        raise AssertionError("\n".join(lines))
    return Reconciliation(
        expected=expected,
        rejected=result.rejected,
        state=state,
        received=received,
        redelivered={v: n for v, n in counts.items() if n > 1},
    )


def _source_rows(dsn: str, intervals: Sequence[IntervalBounds]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for start, end in intervals:
            if start.tzinfo is None or end.tzinfo is None:
                raise ValueError(f"interval bounds must be timezone-aware: {start}, {end}")
            rows += conn.execute(_SOURCE_SQL, {"start": start, "end": end}).fetchall()
    return rows


def _newest_per_key(records: Iterable[Mapping[str, Any]]) -> dict[RecordKey, dict[str, Any]]:
    newest: dict[RecordKey, dict[str, Any]] = {}
    for record in records:
        key = _key(record)
        current = newest.get(key)
        if current is None or record["last_modified_date"] > current["last_modified_date"]:
            newest[key] = dict(record)
        elif record["last_modified_date"] == current["last_modified_date"] and dict(record) != dict(
            current
        ):
            raise ValueError(
                f"the source holds two different rows for {key} with the same "
                f"last_modified_date ({current} and {dict(record)}): nothing to expect"
            )
    return newest


def _key(record: Mapping[str, Any]) -> RecordKey:
    return (str(record["service_id"]), str(record["request_id"]))


def _get(base_url: str, path: str, timeout_s: float) -> Any:
    response = requests.get(f"{base_url}{path}", timeout=timeout_s)
    response.raise_for_status()
    return response.json()


__all__ = ["IntervalBounds", "Reconciliation", "reconcile"]
