"""The pipeline's own tables: their creation, the quarantine and the per-run summary.

The ledger and the outbox (built batches and their acknowledgments) are in
:mod:`services_sync.core.outbox`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from services_sync.core.db import state_sql
from services_sync.core.transform import Rejected


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
    interval_start: datetime,
    interval_end: datetime,
    rejected: Iterable[Rejected],
) -> None:
    """Keep rejected rows with their reasons; a row already quarantined is kept once.

    Query mode files them under the run's data interval; CDC mode under the run's interval, or
    the capture window's opening time for a run triggered by hand.
    """
    params = [
        {
            "dag_id": dag_id,
            "interval_start": interval_start,
            "interval_end": interval_end,
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


def record_run(conn: psycopg.Connection, schema: str, **values: Any) -> None:
    """Finish the summary row of a run whose batches were all acknowledged (``record_run.sql``)."""
    with conn.cursor() as cur:
        cur.execute(state_sql("record_run.sql", schema), values)


def quarantined_fingerprints(
    conn: psycopg.Connection,
    schema: str,
    *,
    dag_id: str,
    interval_start: datetime,
    fingerprints: Sequence[str],
) -> set[str]:
    """Which of these row versions (``row_fingerprint``) are quarantined for the interval."""
    if not fingerprints:
        return set()
    with conn.cursor() as cur:
        cur.execute(
            state_sql("quarantined_fingerprints.sql", schema),
            {
                "dag_id": dag_id,
                "interval_start": interval_start,
                "fingerprints": list(fingerprints),
            },
        )
        return {row[0] for row in cur.fetchall()}
