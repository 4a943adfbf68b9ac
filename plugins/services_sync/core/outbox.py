"""The delivery buffer: built batches (ledger row + stored body) and the lanes that send them.

A build task writes each batch once, its ledger row and its gzip body (the outbox) in one
transaction; delivery lanes then read the oldest pending batch of their lane, send it, and
record the acknowledgment the moment it arrives. Only ids, counts and acks cross XCom.

Query mode's interval plans, which decide the batches a build writes here, are
:mod:`services_sync.query.plans`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from services_sync.core.db import state_sql
from services_sync.core.payload import Interval, body_sha256, pack_body, unpack_body


@dataclass(frozen=True)
class BuiltBatch:
    """What a build task knows of one batch it built (``body`` None: nothing to send)."""

    batch_index: int
    lane: int
    rows_extracted: int
    rows_quarantined: int
    records: int
    body: str | None
    key: str | None
    lower_bound: list[str]
    upper_bound: list[str]
    read_snapshot: str | None = None


@dataclass
class BuildTotals:
    """What a build task wrote, summed over its batches (its XCom and its log line)."""

    batches: int = 0
    rows: int = 0
    records: int = 0
    quarantined: int = 0
    bytes: int = 0
    stored: int = 0

    def add(self, batch: BuiltBatch, stored: int) -> None:
        """Count one stored batch (``stored``: what :func:`store_batch` returned)."""
        self.batches += 1
        self.rows += batch.rows_extracted
        self.records += batch.records
        self.quarantined += batch.rows_quarantined
        self.bytes += len(batch.body) if batch.body is not None else 0
        self.stored += stored


def store_batch(
    conn: psycopg.Connection,
    schema: str,
    batch: BuiltBatch,
    *,
    dag_id: str,
    run_id: str,
    interval: Interval | None,
    window_id: int | None = None,
) -> int:
    """Write a batch's ledger row and its outbox body (one transaction: the caller commits).

    Returns:
        The stored (compressed) size of the body in bytes, 0 when there is nothing to send.
    """
    stored = pack_body(batch.body) if batch.body is not None else None
    ids = {"dag_id": dag_id, "run_id": run_id, "batch_index": batch.batch_index}
    with conn.cursor() as cur:
        cur.execute(
            state_sql("record_batch_built.sql", schema),
            {
                **ids,
                "interval_start": interval.start if interval else None,
                "interval_end": interval.end if interval else None,
                "window_id": window_id,
                "lane": batch.lane,
                "status": "pending" if stored is not None else "empty",
                "idempotency_key": batch.key,
                "rows_extracted": batch.rows_extracted,
                "rows_quarantined": batch.rows_quarantined,
                "rows_sent": batch.records,
                "body_bytes": len(batch.body) if batch.body is not None else 0,
                "stored_bytes": len(stored) if stored is not None else 0,
                "body_sha256": body_sha256(batch.body) if batch.body is not None else None,
                "lower_bound": batch.lower_bound,
                "upper_bound": batch.upper_bound,
                "read_snapshot": batch.read_snapshot,
            },
        )
        if stored is not None:
            cur.execute(state_sql("store_outbox_body.sql", schema), {**ids, "body": stored})
        else:
            cur.execute(state_sql("drop_outbox_body.sql", schema), ids)
    return len(stored) if stored is not None else 0


def finish_build(
    conn: psycopg.Connection,
    schema: str,
    *,
    dag_id: str,
    run_id: str,
    interval: Interval | None,
    totals: BuildTotals,
    replace_earlier: bool,
) -> None:
    """Close a build: its summary row (built, not finished) and the ledger around it.

    Drops what an earlier build of this run left beyond its last batch, and (``replace_earlier``)
    retires the unsent batches earlier runs built for the same interval.
    """
    with conn.cursor() as cur:
        cur.execute(
            state_sql("drop_batches_from.sql", schema),
            {"dag_id": dag_id, "run_id": run_id, "from_index": totals.batches},
        )
        if replace_earlier and interval is not None:
            cur.execute(
                state_sql("replace_earlier_builds.sql", schema),
                {"dag_id": dag_id, "run_id": run_id, "interval_start": interval.start},
            )
        cur.execute(
            state_sql("record_run_built.sql", schema),
            {
                "dag_id": dag_id,
                "run_id": run_id,
                "interval_start": interval.start if interval else None,
                "interval_end": interval.end if interval else None,
                "rows_extracted": totals.rows,
                "batches": totals.batches,
                "rows_quarantined": totals.quarantined,
            },
        )


def run_was_built(conn: psycopg.Connection, schema: str, *, dag_id: str, run_id: str) -> bool:
    """Whether this run's build task finished (its summary row exists).

    False too when the state tables do not exist yet (the run failed before creating them).
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT to_regclass(%s) IS NOT NULL",
            (pgsql.Identifier(schema, "delivery_runs").as_string(conn),),
        )
        if not cur.fetchone()[0]:
            return False
        cur.execute(state_sql("run_built.sql", schema), {"dag_id": dag_id, "run_id": run_id})
        row = cur.fetchone()
    return row is not None and row[0] is not None


# -- sending -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingBatch:
    """A batch waiting in the outbox, as a lane reads it."""

    dag_id: str
    run_id: str
    batch_index: int
    interval_start: datetime | None
    interval_end: datetime | None
    window_id: int | None
    key: str
    stored_body: bytes

    @property
    def label(self) -> str:
        """``batch 3 of <run>`` for logs and errors."""
        return f"batch {self.batch_index + 1} of {self.run_id}"


@contextmanager
def lane_lock(conn: psycopg.Connection, schema: str, *, dag_id: str, lane: int) -> Iterator[None]:
    """Hold the lane's advisory lock (on an autocommit connection) while sending."""
    with conn.cursor() as cur:
        cur.execute(state_sql("lock_lane.sql", schema), {"dag_id": dag_id, "lane": lane})
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute(state_sql("unlock_lane.sql", schema), {"dag_id": dag_id, "lane": lane})


def next_pending(
    conn: psycopg.Connection,
    schema: str,
    *,
    dag_id: str,
    lane: int,
    lanes: int,
    up_to: datetime | None,
) -> PendingBatch | None:
    """The oldest batch this lane still has to send (``next_pending_batch.sql``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            state_sql("next_pending_batch.sql", schema),
            {"dag_id": dag_id, "lane": lane, "lanes": lanes, "up_to": up_to},
        )
        row = cur.fetchone()
    if row is None:
        return None
    return PendingBatch(
        dag_id=dag_id,
        run_id=row["run_id"],
        batch_index=row["batch_index"],
        interval_start=row["interval_start"],
        interval_end=row["interval_end"],
        window_id=row["window_id"],
        key=row["idempotency_key"],
        stored_body=bytes(row["body"]),
    )


def later_interval_built(
    conn: psycopg.Connection, schema: str, *, dag_id: str, interval_start: datetime
) -> bool:
    """Whether this DAG built batches for an interval after ``interval_start``."""
    with conn.cursor() as cur:
        cur.execute(
            state_sql("later_interval_built.sql", schema),
            {"dag_id": dag_id, "interval_start": interval_start},
        )
        return bool(cur.fetchone()[0])


def _ids(batch: PendingBatch) -> dict[str, Any]:
    return {"dag_id": batch.dag_id, "run_id": batch.run_id, "batch_index": batch.batch_index}


def record_ack(
    conn: psycopg.Connection,
    schema: str,
    batch: PendingBatch,
    *,
    acks: Sequence[Mapping[str, Any]],
    attempts: int,
    delivered_by_run: str,
) -> None:
    """Checkpoint one acknowledged batch (``acks``: one per body part) in the ledger, now."""
    with conn.cursor() as cur:
        cur.execute(
            state_sql("record_batch_acked.sql", schema),
            {
                **_ids(batch),
                "http_status": acks[-1]["status"],
                "accepted": sum(a["accepted"] for a in acks),
                "duplicate": all(a["duplicate"] for a in acks),
                "parts": len(acks),
                "attempts": attempts,
                "delivered_by_run": delivered_by_run,
            },
        )


def record_rejection(
    conn: psycopg.Connection,
    schema: str,
    batch: PendingBatch,
    *,
    http_status: int | None,
    attempts: int,
    error: str,
) -> None:
    """Mark a batch the receiver refused for good: retries skip it, a rerun rebuilds it."""
    with conn.cursor() as cur:
        cur.execute(
            state_sql("record_batch_rejected.sql", schema),
            {**_ids(batch), "http_status": http_status, "attempts": attempts, "error": error},
        )


def record_refreshed(
    conn: psycopg.Connection,
    schema: str,
    batch: PendingBatch,
    *,
    body: str | None,
    key: str | None,
    rows_sent: int,
    rows_superseded: int,
) -> None:
    """Record the body a batch is sent with after its superseded records were dropped."""
    with conn.cursor() as cur:
        cur.execute(
            state_sql("record_batch_refreshed.sql", schema),
            {
                **_ids(batch),
                "idempotency_key": key,
                "rows_sent": rows_sent,
                "rows_superseded": rows_superseded,
                "body_bytes": len(body) if body is not None else 0,
                "body_sha256": body_sha256(body) if body is not None else None,
                "status": "pending" if body is not None else "empty",
            },
        )


# -- reading the ledger ------------------------------------------------------------------------


def run_batches(conn: psycopg.Connection, schema: str, *, dag_id: str, run_id: str) -> list[dict]:
    """The ledger rows a run built, in batch order."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(state_sql("run_batches.sql", schema), {"dag_id": dag_id, "run_id": run_id})
        return cur.fetchall()


def current_batches(
    conn: psycopg.Connection, schema: str, *, dag_id: str, run_id: str
) -> tuple[list[dict], list[dict]]:
    """A run's current ledger rows, and those a later build of its interval replaced.

    A batch a later build replaced (status ``replaced``: another run of the interval rebuilt it
    before it was acknowledged) is that build's to send and to account for; this run neither
    sends it nor answers for it. ``record_delivery`` and ``reconcile_interval`` both read a run
    through here, so they judge the same batches.
    """
    batches = run_batches(conn, schema, dag_id=dag_id, run_id=run_id)
    return (
        [b for b in batches if b["status"] != "replaced"],
        [b for b in batches if b["status"] == "replaced"],
    )


def batch_bodies(
    conn: psycopg.Connection, schema: str, *, dag_id: str, run_id: str, batch_indexes: Sequence[int]
) -> Iterator[tuple[int, str]]:
    """``(batch_index, JSON body)`` of these batches of a run, one stored body at a time.

    A body the retention deleted is left out.
    """
    with conn.cursor() as cur:
        cur.execute(
            state_sql("batch_bodies.sql", schema),
            {"dag_id": dag_id, "run_id": run_id, "batch_indexes": list(batch_indexes)},
        )
        while (row := cur.fetchone()) is not None:
            yield row[0], unpack_body(bytes(row[1]))


def window_batches(conn: psycopg.Connection, schema: str, *, window_id: int) -> list[dict]:
    """CDC mode: the ledger rows of a capture window, in batch order."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(state_sql("window_batches.sql", schema), {"window_id": window_id})
        return cur.fetchall()


def prune_bodies(
    conn: psycopg.Connection, schema: str, *, dag_id: str, retention_h: float, limit: int = 5000
) -> int:
    """Delete up to ``limit`` outbox bodies older than the retention that need no sending."""
    with conn.cursor() as cur:
        cur.execute(
            state_sql("prune_outbox.sql", schema),
            {"dag_id": dag_id, "retention_h": retention_h, "limit": limit},
        )
        return cur.rowcount
