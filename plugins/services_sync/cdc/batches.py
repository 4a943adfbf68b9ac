"""CDC mode's delivery side of a window: its batches into the outbox, then its acknowledgment.

:func:`build_change_batches` cuts a captured window's staged changes into batches per lane
(keys from commit positions, never the run id); :func:`acknowledge_changes` advances the
source's position past the window once the ledger holds an acknowledgment for every batch.
Both serve every log reader (PostgreSQL's slot, a MySQL binary log).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from psycopg.rows import dict_row

from services_sync.cdc import source as cdc_source
from services_sync.cdc.changes import chunks, key_scope, record_row
from services_sync.core import state
from services_sync.core.checks import log_quarantined
from services_sync.core.config import Settings, load_settings
from services_sync.core.db import connect, state_sql
from services_sync.core.payload import Interval, build_body, scoped_key
from services_sync.core.transform import Rejected, transform_rows

log = logging.getLogger(__name__)


def build_change_batches(
    *,
    dag_id: str,
    run_id: str,
    window_id: int,
    interval: Interval | None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Cut the window's staged changes into batches, lane by lane, into the outbox.

    Each lane's changes are read in commit order through a server-side cursor and cut every
    ``per_batch`` records, so memory holds one batch. Keys come from the first and last change
    positions of a batch (never the run id), so the same window always gives the same keys. A
    window whose batches were built by an earlier run is not built again: its lanes send what
    is left in the outbox, batches the receiver rejected included (once per run: the slot
    cannot move past the window before they are acknowledged).
    """
    from services_sync.core import outbox

    settings = settings or load_settings()
    schema = settings.state_schema
    totals = outbox.BuildTotals()
    with connect(settings.state_conn_id) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                state_sql("cdc_unfinished_window.sql", schema), {"slot_name": settings.cdc_slot}
            )
            window = cur.fetchone()
        if window is None or window["window_id"] != window_id or window["status"] != "captured":
            raise AirflowFailException(
                f"window {window_id} is not the slot's captured window any more "
                f"({window and (window['window_id'], window['status'])})"
            )
        if window["built_at"] is not None:
            with conn.cursor() as cur:
                cur.execute(state_sql("cdc_retry_rejected.sql", schema), {"window_id": window_id})
                if cur.rowcount:
                    log.warning(
                        "Window %s: %d rejected batch(es) tried again", window_id, cur.rowcount
                    )
            built = outbox.window_batches(conn, schema, window_id=window_id)
            log.info(
                "Window %s was built by an earlier run: %d batches, %d still to send",
                window_id,
                len(built),
                sum(1 for b in built if b["status"] == "pending"),
            )
            totals.batches, totals.rows = len(built), sum(b["rows_extracted"] for b in built)
        else:
            for lane in range(window["lanes"]):
                with conn.cursor(
                    name=f"services_sync_lane_{window_id}_{lane}", row_factory=dict_row
                ) as changes:
                    changes.itersize = window["per_batch"]
                    changes.execute(
                        state_sql("cdc_lane_changes.sql", schema),
                        {"window_id": window_id, "lane": lane},
                    )
                    for chunk in chunks(changes, window["per_batch"]):
                        built, rejected = _build_change_batch(
                            chunk, index=totals.batches, lane=lane, settings=settings
                        )
                        state.quarantine_rows(
                            conn,
                            schema,
                            dag_id=dag_id,
                            run_id=run_id,
                            interval_start=interval.start if interval else window["opened_at"],
                            interval_end=interval.end if interval else window["opened_at"],
                            rejected=rejected,
                        )
                        stored = outbox.store_batch(
                            conn,
                            schema,
                            built,
                            dag_id=dag_id,
                            run_id=run_id,
                            interval=interval,
                            window_id=window_id,
                        )
                        totals.add(built, stored)
            with conn.cursor() as cur:
                cur.execute(state_sql("cdc_window_built.sql", schema), {"window_id": window_id})
        outbox.finish_build(
            conn,
            schema,
            dag_id=dag_id,
            run_id=run_id,
            interval=interval,
            totals=totals,
            replace_earlier=False,
        )
    log.info(
        "Window %s: %d changes in %d batches, %d records to send (%.1f KiB), %d quarantined",
        window_id,
        totals.rows,
        totals.batches,
        totals.records,
        totals.bytes / 1024,
        totals.quarantined,
    )
    return {"window_id": window_id, **dataclasses.asdict(totals)}


def _build_change_batch(
    changes: Sequence[Mapping[str, Any]], *, index: int, lane: int, settings: Settings
) -> tuple[Any, list[Rejected]]:
    """One batch of a lane's changes: its body and key, and the rows to quarantine."""
    from services_sync.core import outbox

    rows = [
        record_row(
            c["op"],
            c["commit_time"],
            c["row_data"],
            deleted_status_id=settings.cdc_deleted_status_id,
        )
        for c in changes
    ]
    result = transform_rows(rows, settings.naive_timezone)
    first = (changes[0]["commit_lsn"], changes[0]["position"])
    last = (changes[-1]["commit_lsn"], changes[-1]["position"])
    body = build_body(result.records) if result.records else None
    log_quarantined(result.rejected)
    built = outbox.BuiltBatch(
        batch_index=index,
        lane=lane,
        rows_extracted=len(changes),
        rows_quarantined=len(result.rejected),
        records=len(result.records),
        body=body,
        key=scoped_key(key_scope(first, last), body) if body is not None else None,
        lower_bound=list(map(str, first)),
        upper_bound=list(map(str, last)),
    )
    return built, result.rejected


def _advance_slot(settings: Settings, window: Mapping[str, Any]) -> str:
    with connect(settings.source_conn_id, autocommit=True) as conn:
        return cdc_source.advance_slot(conn, settings.cdc_slot, window["upto_lsn"])


def acknowledge_changes(
    window_id: int | None,
    *,
    dag_id: str,
    settings: Settings | None = None,
    advance: Callable[[Settings, Mapping[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Last task: every batch of the window was acknowledged, so advance the slot past it.

    Checks the ledger itself (any batch pending or rejected keeps the slot where it is). No
    ``CHECKPOINT`` is forced (an I/O spike on the source every hour): the new position reaches
    disk at the next regular checkpoint. If the source crashes before, the slot comes back
    behind this window, and the next window starts above it (``floor_lsn``), so those
    transactions are not sent again.

    ``advance(settings, window)`` moves the source's position and returns it for the log:
    PostgreSQL's slot by default; a MySQL binary log has nothing to move on the source (its
    position is the acknowledged window's end, saved in the state database by this task).
    """
    from services_sync.core import outbox

    settings = settings or load_settings()
    advance = advance or _advance_slot
    schema = settings.state_schema
    with connect(settings.state_conn_id) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                state_sql("cdc_unfinished_window.sql", schema), {"slot_name": settings.cdc_slot}
            )
            window = cur.fetchone()
        if window is None or window["status"] != "captured" or window["window_id"] != window_id:
            raise AirflowFailException(
                f"window {window_id} is not the captured window of slot {settings.cdc_slot} "
                f"(found {window and (window['window_id'], window['status'])}): not advancing"
            )
        open_batches = [
            b["batch_index"] + 1
            for b in outbox.window_batches(conn, schema, window_id=window_id)
            if b["status"] in ("pending", "rejected")
        ]
    if window["built_at"] is None or open_batches:
        raise AirflowFailException(
            f"window {window_id} is not delivered (batches not acknowledged: "
            f"{open_batches or 'not built'}): not advancing the slot"
        )
    position = advance(settings, window)
    with connect(settings.state_conn_id) as conn, conn.cursor() as cur:
        cur.execute(state_sql("cdc_window_acknowledged.sql", schema), {"window_id": window_id})
    log.info(
        "Acknowledged window %s: slot %s advanced to %s", window_id, settings.cdc_slot, position
    )
    return {"window_id": window_id, "slot_position": position, "records": window["records"]}
