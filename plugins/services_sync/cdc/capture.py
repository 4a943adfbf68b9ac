"""CDC mode's capture: open (or resume) a window and stage its changes in the state database.

A window is the slot's pending changes up to a fixed end (the flushed end of WAL when it
opens). :func:`capture_changes` stages them in ``cdc_changes`` and fixes the window's batch
size once, so a resumed window gives the same batches and keys. Staging streams: the peek is
read through a server-side cursor, each decoded change is COPYed at once
(:func:`services_sync.cdc.changes.stage_changes`), and the whole staging is one transaction of
the state database, committed only when the peek was read to its end. The log reader is
pluggable (``current_position``, ``stage``): :mod:`services_sync.mysql.binlog_tasks` reads a
MySQL binary log into the same windows, then shares :func:`finish_window`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from airflow.sdk.exceptions import AirflowFailException
from psycopg.rows import dict_row

from services_sync.cdc import source as cdc_source
from services_sync.cdc.changes import (
    Snapshot,
    copy_row,
    records_per_batch,
    snapshot_change,
    stage_changes,
)
from services_sync.cdc.pgoutput import lsn_to_int
from services_sync.core.config import Settings, load_settings
from services_sync.core.db import connect, state_sql
from services_sync.core.sql import load_sql

log = logging.getLogger(__name__)

#: Rows per COPY flush and per server-side cursor fetch while staging (memory bound).
STAGE_CHUNK = 5000


#: The end of a new window: the source's log position now, as ``pg_lsn`` text.
PositionReader = Callable[[Settings], str]
#: Stages an opened window's changes: ``stage(state_conn, window, settings)``.
WindowStager = Callable[[psycopg.Connection, dict[str, Any], Settings], None]


def _current_wal_lsn(settings: Settings) -> str:
    with connect(settings.source_conn_id) as source_conn:
        return cdc_source.current_wal_lsn(source_conn)


def capture_changes(
    dag_id: str,
    run_id: str,
    params: Mapping[str, Any],
    settings: Settings | None = None,
    *,
    current_position: PositionReader | None = None,
    stage: WindowStager | None = None,
) -> dict[str, Any]:
    """Capture (or resume) the window and fix its batch size; return a summary (XCom).

    An unfinished window is resumed as it is: a captured one keeps its staged changes and batch
    size (same batches, same keys; if its batches are in the outbox already they are only
    sent), a half-staged one is staged again up to the same ``upto_lsn``. Otherwise a new
    window opens up to the flushed end of WAL.

    ``current_position`` and ``stage`` read the source's log: PostgreSQL's slot by default,
    a MySQL binary log for :mod:`services_sync.mysql.binlog_tasks` (positions encoded as
    ``pg_lsn``).
    """
    settings = settings or load_settings()
    current_position = current_position or _current_wal_lsn
    stage = stage or stage_slot_window
    schema = settings.state_schema
    snapshot_wanted = bool(params.get("initial_snapshot"))
    with connect(settings.state_conn_id) as state_conn:
        with state_conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                state_sql("cdc_unfinished_window.sql", schema), {"slot_name": settings.cdc_slot}
            )
            window = cur.fetchone()
        if window is not None and snapshot_wanted and not window["snapshot"]:
            raise AirflowFailException(
                f"window {window['window_id']} (opened by an earlier run) is not acknowledged "
                "yet: let a run without initial_snapshot deliver it first, then trigger the "
                "snapshot"
            )
        if window is None:
            upto = current_position(settings)
            with state_conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    state_sql("cdc_open_window.sql", schema),
                    {
                        "slot_name": settings.cdc_slot,
                        "upto_lsn": upto,
                        "snapshot": snapshot_wanted,
                        "run_id": run_id,
                    },
                )
                window = cur.fetchone()
            state_conn.commit()
            log.info("Opened window %s up to %s", window["window_id"], window["upto_lsn"])
        else:
            log.info(
                "Resuming window %s (%s, up to %s) opened by an earlier run",
                window["window_id"],
                window["status"],
                window["upto_lsn"],
            )
        if window["status"] == "capturing":
            stage(state_conn, window, settings)
            state_conn.commit()
        if window["per_batch"] is None:
            with state_conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    state_sql("cdc_window_size.sql", schema), {"window_id": window["window_id"]}
                )
                size = cur.fetchone()
                # Fixed once per window: a resumed window is cut the same way (same keys).
                window["per_batch"] = records_per_batch(
                    size["max_row_bytes"],
                    batch_size=int(params.get("batch_size") or settings.default_batch_size),
                    max_batch_bytes=int(params.get("max_batch_bytes") or settings.max_batch_bytes),
                )
                cur.execute(
                    state_sql("cdc_window_planned.sql", schema),
                    {"window_id": window["window_id"], "per_batch": window["per_batch"]},
                )
        with state_conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                state_sql("cdc_unfinished_window.sql", schema), {"slot_name": settings.cdc_slot}
            )
            window = cur.fetchone()
    log.info(
        "Window %s: %d records to deliver in %d lanes, batches of up to %d",
        window["window_id"],
        window["records"],
        window["lanes"],
        window["per_batch"],
    )
    return {
        "window_id": window["window_id"],
        "records": window["records"],
        "per_batch": window["per_batch"],
        "lanes": window["lanes"],
        "resumed": window["built_at"] is not None,
    }


def stage_slot_window(
    state_conn: psycopg.Connection, window: dict[str, Any], settings: Settings
) -> None:
    """``WindowStager`` of PostgreSQL: peek the slot up to the window's end, COPY its changes.

    A snapshot window first stages the whole table as of one snapshot and skips the streamed
    transactions that snapshot saw.
    """
    schema = settings.state_schema
    window_id = window["window_id"]
    floor = lsn_to_int(window["floor_lsn"]) if window["floor_lsn"] else None
    with state_conn.cursor() as cur:
        cur.execute(state_sql("cdc_clear_window.sql", schema), {"window_id": window_id})
    snapshot: Snapshot | None = None
    read_snapshot = None
    snapshot_rows = 0
    with (
        connect(settings.source_conn_id) as source_conn,
        state_conn.cursor() as out,
        out.copy(state_sql("cdc_stage_changes.sql", schema)) as copy,
    ):
        if window["snapshot"]:
            read_snapshot, snapshot_rows, upto = _read_table_snapshot(source_conn, window_id, copy)
            snapshot = Snapshot.parse(read_snapshot)
            # The window must end after every transaction the snapshot saw, or one committed
            # between opening the window and taking the snapshot would come again, unfiltered,
            # in the next window: end it where WAL was when the snapshot was read.
            _wait_until_flushed(source_conn, upto)
            window["upto_lsn"] = upto
        messages = (
            data
            for _lsn, _xid, data in cdc_source.peek_changes(
                source_conn,
                settings.cdc_slot,
                settings.cdc_publication,
                window["upto_lsn"],
                fetch_rows=STAGE_CHUNK,
            )
        )
        counts = stage_changes(
            messages, copy.write_row, window_id=window_id, floor_lsn=floor, snapshot=snapshot
        )
    finish_window(
        state_conn,
        window,
        settings,
        read_snapshot=read_snapshot,
        snapshot_rows=snapshot_rows,
        skipped=f"skipped {counts['already_acknowledged']} already acknowledged and "
        f"{counts['in_snapshot']} already in the snapshot",
    )


def finish_window(
    state_conn: psycopg.Connection,
    window: dict[str, Any],
    settings: Settings,
    *,
    read_snapshot: str | None,
    snapshot_rows: int,
    skipped: str,
) -> None:
    """After staging: choose what the window delivers in which lane, mark it captured, log it.

    Shared by every log reader (PostgreSQL's slot, a MySQL binary log): from here on a window
    is the same whatever its source.
    """
    schema = settings.state_schema
    window_id = window["window_id"]
    with state_conn.cursor() as cur:
        if window["snapshot"]:
            cur.execute(
                state_sql("cdc_window_end.sql", schema),
                {"window_id": window_id, "upto_lsn": window["upto_lsn"]},
            )
        cur.execute(
            state_sql("cdc_order_window.sql", schema),
            {
                "window_id": window_id,
                "collapse": settings.cdc_collapse,
                "send_deletes": settings.cdc_deletes == "status",
                "lanes": settings.lanes,
            },
        )
        cur.execute(
            state_sql("cdc_window_captured.sql", schema),
            {"window_id": window_id, "read_snapshot": read_snapshot, "lanes": settings.lanes},
        )
        changes, records, deletes, truncates = cur.fetchone()
    log.info(
        "Captured window %s: %d changes (%d deletes, %d truncates) and %d snapshot rows -> %d "
        "records to deliver (collapse %s, deletes %s); %s",
        window_id,
        changes,
        deletes,
        truncates,
        snapshot_rows,
        records,
        "on" if settings.cdc_collapse else "off",
        settings.cdc_deletes,
        skipped,
    )
    if truncates:
        log.warning(
            "%d TRUNCATE(s) of service_requests in window %s cannot be sent (the contract has "
            "no way to say it): resynchronise the receiver if that was not intended",
            truncates,
            window_id,
        )


def _read_table_snapshot(
    source_conn: psycopg.Connection, window_id: int, copy: psycopg.Copy
) -> tuple[str, int, str]:
    """Stage the whole table as of one snapshot.

    Returns:
        The snapshot (``pg_current_snapshot()``), the row count, and the WAL insert position
        taken inside the snapshot's transaction: every transaction the snapshot sees has its
        commit record before it.
    """
    source_conn.commit()
    previous = source_conn.isolation_level
    source_conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    read_at = datetime.now(UTC)
    count = 0
    try:
        with source_conn.transaction():
            with source_conn.cursor() as cur:
                cur.execute("SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text")
                snapshot, upto = cur.fetchone()
            with source_conn.cursor(name=f"services_sync_snapshot_{window_id}") as cur:
                cur.itersize = STAGE_CHUNK
                cur.execute(load_sql("cdc/snapshot_rows.sql"))
                for row in cur:
                    copy.write_row(copy_row(snapshot_change(window_id, count, row, read_at)))
                    count += 1
    finally:
        if not source_conn.broken:  # else the lost connection's error is the one to see
            source_conn.isolation_level = previous
    return snapshot, count, upto


def _wait_until_flushed(source_conn: psycopg.Connection, lsn: str, timeout_s: float = 60) -> None:
    """Wait until WAL is flushed up to ``lsn``: a peek decodes flushed WAL only.

    Asynchronous commits are flushed by the WAL writer within a few ``wal_writer_delay``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with source_conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (lsn,))
            if cur.fetchone()[0]:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"WAL not flushed up to {lsn} after {timeout_s:.0f} s")
        time.sleep(0.05)
