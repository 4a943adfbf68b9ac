"""A realistic delivery ledger for the sync status view's tests and its screenshot.

48 hourly intervals of ``services_requests_sync`` ending at ``newest_end``, as the DAG writes
them: daytime peaks and quiet nights, a few quarantined rows, an hour of a bad upstream deploy
(many quarantined), a receiver outage drained hours late, a night hour without changes, an hour
rerun by a backfill (every batch a duplicate at the receiver), an hour whose run failed (its
batches built, none acknowledged) and the newest hour still in progress.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

DAG_ID = "services_requests_sync"
HOUR = timedelta(hours=1)
BATCH_SIZE = 250

# Hours ago (0 = the newest interval) of the special cases.
IN_PROGRESS = 0
FAILED = 5
OUTAGE = (9, 10, 11)
BAD_DEPLOY = 20
QUIET = 27
RERUN = 31


@dataclass
class Ledger:
    """Rows for ``delivery_ledger`` and ``delivery_runs``, and what the view should show."""

    newest_end: datetime
    batches: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    #: interval start -> (status without Airflow run states, latest run id)
    expected: dict[datetime, tuple[str, str]] = field(default_factory=dict)

    def start(self, hours_ago: int) -> datetime:
        """Start of the interval ``hours_ago`` hours before the newest one."""
        return self.newest_end - HOUR * (hours_ago + 1)

    def run_id(self, hours_ago: int) -> str:
        """The latest run of that interval."""
        return self.expected[self.start(hours_ago)][1]


def _volume(rng: random.Random, hour: int) -> int:
    day = max(0.0, math.sin(math.pi * (hour - 6) / 16)) if 6 <= hour <= 22 else 0.0
    return int(rng.randint(20, 60) + 780 * day * rng.uniform(0.8, 1.15))


def build_ledger(newest_end: datetime, hours: int = 48, seed: int = 11) -> Ledger:
    """The ledger of ``hours`` intervals ending at ``newest_end`` (deterministic for a seed)."""
    rng = random.Random(seed)
    ledger = Ledger(newest_end)
    for ago in range(hours - 1, -1, -1):
        start = ledger.start(ago)
        end = start + HOUR
        extracted = 0 if ago == QUIET else _volume(rng, start.hour)
        quarantined = 0
        if ago == BAD_DEPLOY:
            quarantined = min(extracted // 2, max(12, extracted * 6 // 100))  # a bad deploy
        elif extracted and rng.random() < 0.15:
            quarantined = rng.randint(1, 3)
        scheduled = f"scheduled__{start.isoformat()}"
        if ago in (IN_PROGRESS, FAILED):
            # Batches built, none acknowledged. Manual runs (triggered for the interval), so that
            # a test can create them in Airflow: the API reserves scheduled__ ids.
            manual = f"manual__{end.isoformat()}"
            _run(ledger, manual, start, extracted, quarantined, built=end + timedelta(minutes=2))
            ledger.expected[start] = ("unacknowledged", manual)
            continue
        if ago in OUTAGE:
            # The receiver was down: retried with backoff, drained after it came back.
            acked = end + timedelta(hours=1, minutes=10) + HOUR * (ago - min(OUTAGE))
            attempts = 11 + 3 * (ago - min(OUTAGE))
        else:
            acked = end + timedelta(seconds=rng.randint(75, 260))
            attempts = 1 if rng.random() < 0.9 else 2
        _run(
            ledger,
            scheduled,
            start,
            extracted,
            quarantined,
            built=end + timedelta(seconds=70),
            acked=acked,
            attempts=attempts,
        )
        latest = scheduled
        if ago == RERUN:
            # A backfill with --reprocess-behavior completed, 14 h later: same keys, all duplicates.
            latest = f"backfill__{start.isoformat()}"
            _run(
                ledger,
                latest,
                start,
                extracted,
                quarantined,
                built=end + timedelta(hours=14),
                acked=end + timedelta(hours=14, seconds=50),
                attempts=1,
                duplicate=True,
            )
        ledger.expected[start] = ("no changes" if not extracted else "delivered", latest)
    return ledger


def _run(
    ledger: Ledger,
    run_id: str,
    start: datetime,
    extracted: int,
    quarantined: int,
    *,
    built: datetime,
    acked: datetime | None = None,
    attempts: int = 1,
    duplicate: bool = False,
) -> None:
    end = start + HOUR
    count = math.ceil(extracted / BATCH_SIZE)
    bad = [quarantined // count + (1 if i < quarantined % count else 0) for i in range(count)]
    for index in range(count):
        rows = min(BATCH_SIZE, extracted - index * BATCH_SIZE)
        sent = rows - bad[index]
        digest = hashlib.sha256(f"{start}:{index}:{sent}".encode()).hexdigest()
        ledger.batches.append(
            {
                "dag_id": DAG_ID,
                "run_id": run_id,
                "batch_index": index,
                "interval_start": start,
                "interval_end": end,
                "idempotency_key": f"services-requests.v1:{start:%Y%m%dT%H}:{digest}",
                "rows_extracted": rows,
                "rows_quarantined": bad[index],
                "rows_sent": sent,
                "body_bytes": sent * 171,
                "body_sha256": digest,
                "built_at": built + timedelta(seconds=3 * index),
                "http_status": (200 if duplicate else 201) if acked else None,
                "accepted": sent if acked else None,
                "duplicate": duplicate if acked else None,
                "attempts": attempts if acked else None,
                "acked_at": acked + timedelta(seconds=4 * (index - count + 1)) if acked else None,
                "parts": 1 if acked else None,
            }
        )
    if acked is not None or count == 0:
        ledger.runs.append(
            {
                "dag_id": DAG_ID,
                "run_id": run_id,
                "interval_start": start,
                "interval_end": end,
                "rows_extracted": extracted,
                "batches": count,
                "batches_posted": count,
                "rows_sent": extracted - quarantined,
                "rows_quarantined": quarantined,
                "duplicates": count if duplicate else 0,
                "finished_at": (acked or built) + timedelta(seconds=2),
            }
        )


def insert_ledger(dsn: str, ledger: Ledger, schema: str = "services_sync") -> None:
    """Create the state tables (as the DAG does) and load the ledger into them."""
    from psycopg import sql

    from services_sync.core.state import ensure_state_tables

    with psycopg.connect(dsn) as conn:
        ensure_state_tables(conn, schema)
        for table, rows in (("delivery_ledger", ledger.batches), ("delivery_runs", ledger.runs)):
            if not rows:
                continue
            columns = list(rows[0])
            statement = sql.SQL("INSERT INTO {}.{} ({}) VALUES ({})").format(
                sql.Identifier(schema),
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
            )
            with conn.cursor() as cur:
                cur.executemany(statement, rows)
