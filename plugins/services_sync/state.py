"""The pipeline's own tables: quarantine, per-batch delivery ledger and per-run summary."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from services_sync.db import state_sql
from services_sync.payload import Interval
from services_sync.transform import Rejected


def ensure_state_tables(conn: psycopg.Connection, schema: str, *, cdc: bool = False) -> None:
    """Create the state schema (only if missing) and tables if they do not exist (idempotent).

    ``cdc``: also CDC mode's capture windows and staged changes.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if cur.fetchone() is None:
            cur.execute(state_sql("create_state_schema.sql", schema))
        cur.execute(state_sql("create_state_tables.sql", schema))
        if cdc:
            cur.execute(state_sql("create_cdc_tables.sql", schema))


def quarantine_rows(
    conn: psycopg.Connection,
    schema: str,
    *,
    dag_id: str,
    run_id: str,
    interval: Interval,
    rejected: Iterable[Rejected],
) -> None:
    """Keep rejected rows with their reasons; a row already quarantined is kept once."""
    params = [
        {
            "dag_id": dag_id,
            "interval_start": interval.start,
            "interval_end": interval.end,
            "row_fingerprint": item.fingerprint,
            "reason": item.reason,
            "row_data": json.dumps(item.row),
            "run_id": run_id,
        }
        for item in rejected
    ]
    if params:
        with conn.cursor() as cur:
            cur.executemany(state_sql("quarantine_row.sql", schema), params)


def record_batch_built(conn: psycopg.Connection, schema: str, **values: Any) -> None:
    """Upsert the ledger row of a built batch (see ``record_batch_built.sql`` for the fields)."""
    with conn.cursor() as cur:
        cur.execute(state_sql("record_batch_built.sql", schema), values)


def record_batch_refreshed(conn: psycopg.Connection, schema: str, **values: Any) -> None:
    """Record a batch whose superseded records were dropped at send time."""
    with conn.cursor() as cur:
        cur.execute(state_sql("record_batch_refreshed.sql", schema), values)


def later_interval_delivered(
    conn: psycopg.Connection, schema: str, *, dag_id: str, interval_start: datetime
) -> bool:
    """Whether this DAG has delivered an interval after the one starting at ``interval_start``."""
    with conn.cursor() as cur:
        cur.execute(
            state_sql("later_interval_delivered.sql", schema),
            {"dag_id": dag_id, "interval_start": interval_start},
        )
        return bool(cur.fetchone()[0])


def record_batch_acks(
    conn: psycopg.Connection, schema: str, *, dag_id: str, run_id: str, results: Iterable[Mapping]
) -> None:
    """Store the receiver's acknowledgments (the ``post_batch`` results) in the ledger.

    A result is ``{"batch_index": i, "parts": [ack, ...]}``: one ack per body part (more than one
    when a 413 split the batch).
    """
    params = []
    for result in results:
        parts = result["parts"]
        params.append(
            {
                "dag_id": dag_id,
                "run_id": run_id,
                "batch_index": result["batch_index"],
                "http_status": parts[-1]["status"],
                "accepted": sum(p["accepted"] for p in parts),
                "duplicate": all(p["duplicate"] for p in parts),
                "parts": len(parts),
                "attempts": max((p["attempts"] or 1) for p in parts),
                "acked_at": max(datetime.fromisoformat(p["acked_at"]) for p in parts),
            }
        )
    if params:
        with conn.cursor() as cur:
            cur.executemany(state_sql("record_batch_acked.sql", schema), params)


def run_batches(conn: psycopg.Connection, schema: str, *, dag_id: str, run_id: str) -> list[dict]:
    """The ledger rows of one run, in batch order."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(state_sql("run_batches.sql", schema), {"dag_id": dag_id, "run_id": run_id})
        return cur.fetchall()


def record_run(conn: psycopg.Connection, schema: str, **values: Any) -> None:
    """Upsert the summary row of a run (see ``record_run.sql`` for the fields)."""
    with conn.cursor() as cur:
        cur.execute(state_sql("record_run.sql", schema), values)
