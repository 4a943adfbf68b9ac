"""What each task of the CDC DAG (``services_requests_cdc``) does.

A run captures the slot's pending changes up to the flushed end of WAL into a *window*
(staged in the state database), delivers the window in batches through the same transform,
quarantine, ``HttpOperator`` and ledger as query mode, and only after every batch was
acknowledged advances the slot past the window. A run that fails leaves the window
unfinished; the next run delivers the same staged changes in the same batches with the same
``Idempotency-Key`` (keys come from commit LSN + position), then acknowledges it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from airflow.sdk.exceptions import AirflowFailException
from psycopg.rows import dict_row

from services_sync.cdc import source as cdc_source
from services_sync.cdc.changes import (
    Snapshot,
    chunks,
    is_source_table,
    key_scope,
    record_row,
    records_per_batch,
    snapshot_change,
    staged_change,
)
from services_sync.cdc.pgoutput import Change, ChangeDecoder, lsn_to_int
from services_sync.core import alerts, state
from services_sync.core.alerts import Alert
from services_sync.core.checks import check_connections, first_line, log_quarantined
from services_sync.core.config import Settings, load_settings
from services_sync.core.db import connect, state_sql
from services_sync.core.payload import Interval, build_body, scoped_key
from services_sync.core.sql import load_sql
from services_sync.core.transform import Rejected, transform_rows

log = logging.getLogger(__name__)

#: Rows per COPY flush and per server-side cursor fetch while staging (memory bound).
_STAGE_CHUNK = 5000


def check_cdc_setup(dag_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """First task: connections, server settings, publication, slot and state tables.

    Creates the publication and the slot when missing (idempotent; off with
    ``SERVICES_SYNC_CDC_CREATE_SLOT=off``, then ``make cdc-setup`` does it). Fails, naming the
    fix, when the server cannot do logical decoding or the delete policy needs a replica
    identity the table lacks.
    """
    settings = settings or load_settings()
    check_connections(settings)
    try:
        # Autocommit: creating a slot must not run in a transaction that wrote.
        with connect(settings.source_conn_id, autocommit=True) as conn:
            report = ensure_cdc_objects(conn, settings)
    except ValueError as exc:
        raise AirflowFailException(f"{dag_id} cannot capture changes: {exc}") from None
    with connect(settings.state_conn_id) as conn:
        state.ensure_state_tables(conn, settings.state_schema, cdc=True)
    log.info(
        "CDC set up: publication %s (%s), slot %s (%s), wal_level=%s",
        settings.cdc_publication,
        "created" if report["publication_created"] else "exists",
        settings.cdc_slot,
        "created" if report["slot_created"] else "exists",
        report["wal_level"],
    )
    return report


def ensure_cdc_objects(conn: psycopg.Connection, settings: Settings) -> dict[str, Any]:
    """Check the server and create the publication and slot if allowed (``make cdc-setup``).

    Raises:
        ValueError: with the fix, when something CDC needs is missing.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(load_sql("cdc/server_settings.sql"))
        server = cur.fetchone()
        cur.execute(load_sql("cdc/replica_identity.sql"))
        identity = cur.fetchone()
    assert server is not None
    if server["wal_level"] != "logical":
        raise ValueError(
            f"the source server runs with wal_level={server['wal_level']}; logical decoding "
            "needs wal_level=logical: ALTER SYSTEM SET wal_level = logical; then restart "
            "PostgreSQL (on a managed service, set the parameter, e.g. "
            "rds.logical_replication=1 / cloudsql.logical_decoding=on)"
        )
    if identity is None:
        raise ValueError(
            "table service_requests is not visible to the source connection "
            "(check the database, or the search_path in the connection extra)"
        )
    if settings.cdc_deletes == "status" and identity["replica_identity"] != "f":
        raise ValueError(
            "SERVICES_SYNC_CDC_DELETES=status sends a deleted request with its opening_date, "
            "which the log only carries under REPLICA IDENTITY FULL: run ALTER TABLE "
            "service_requests REPLICA IDENTITY FULL, or set SERVICES_SYNC_CDC_DELETES=skip"
        )
    if not settings.cdc_create_slot:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(load_sql("cdc/find_slot.sql"), {"slot_name": settings.cdc_slot})
            slot = cur.fetchone()
            cur.execute(
                load_sql("cdc/find_publication.sql"), {"publication": settings.cdc_publication}
            )
            publication = cur.fetchone()
        if slot is None or publication is None:
            raise ValueError(
                f"publication {settings.cdc_publication!r} or slot {settings.cdc_slot!r} does "
                "not exist and SERVICES_SYNC_CDC_CREATE_SLOT=off: run `make cdc-setup` (or "
                "`python -m services_sync.cdc.setup`) with the source connection"
            )
        publication_created = slot_created = False
    else:
        # Publication first: pgoutput looks publications up as of each change, and a change
        # older than the publication would fail every peek.
        try:
            publication_created = cdc_source.create_publication(conn, settings.cdc_publication)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ValueError(
                f"the role may not create publication {settings.cdc_publication!r} "
                f"({first_line(exc)}): only the table's owner can. Have the owner run "
                f"CREATE PUBLICATION {settings.cdc_publication} FOR TABLE service_requests; "
                "(or `make cdc-setup` with the owner's connection)"
            ) from None
        slot_created = cdc_source.create_slot(conn, settings.cdc_slot)
    if server["max_slot_wal_keep_size"] in ("-1", "-1MB"):
        log.warning(
            "max_slot_wal_keep_size is unset (-1): if this pipeline stops acknowledging, the "
            "slot keeps WAL until the source's disk is full. Set it (e.g. ALTER SYSTEM SET "
            "max_slot_wal_keep_size = '50GB') so PostgreSQL drops the slot instead"
        )
    return {
        "wal_level": server["wal_level"],
        "max_slot_wal_keep_size": server["max_slot_wal_keep_size"],
        "replica_identity": identity["replica_identity"],
        "publication_created": publication_created,
        "slot_created": slot_created,
    }


def check_slot_health(dag_id: str, run_id: str, settings: Settings | None = None) -> dict:
    """Measure the slot, alert when it retains too much WAL, write a heartbeat.

    Fails (no use capturing) when the slot is lost: PostgreSQL removed WAL it still needed.
    """
    settings = settings or load_settings()
    with connect(settings.source_conn_id, autocommit=True) as conn:
        try:
            cdc_source.emit_heartbeat(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning("No heartbeat (%s): an idle table can keep WAL longer", first_line(exc))
        try:
            health = cdc_source.slot_health(conn, settings.cdc_slot)
        except ValueError:
            raise AirflowFailException(
                f"replication slot {settings.cdc_slot!r} does not exist: it was dropped after "
                "check_cdc_setup ran. Clear the run to recreate it, then trigger a run with "
                "initial_snapshot=true to resend the current state"
            ) from None
    retained = int(health["retained_wal_bytes"] or 0)
    summary = {
        "slot": settings.cdc_slot,
        "retained_wal_bytes": retained,
        "pending_wal_bytes": int(health["pending_wal_bytes"] or 0),
        "wal_status": health["wal_status"],
        "safe_wal_size": health["safe_wal_size"],
        "max_slot_wal_keep_size": health["max_slot_wal_keep_size"],
    }
    log.info("Slot health: %s", json.dumps(summary))
    if health["wal_status"] == "lost":
        raise AirflowFailException(
            f"replication slot {settings.cdc_slot!r} is lost: PostgreSQL removed WAL it still "
            "needed (max_slot_wal_keep_size exceeded), so some changes cannot be captured. "
            f"Drop it (SELECT pg_drop_replication_slot('{settings.cdc_slot}')), clear this run "
            "to recreate it, and trigger a run with initial_snapshot=true"
        )
    reasons = []
    if retained > settings.cdc_max_retained_wal_bytes:
        reasons.append(
            f"retains {retained / 2**20:.1f} MiB of WAL (threshold "
            f"{settings.cdc_max_retained_wal_bytes / 2**20:.1f} MiB, "
            "SERVICES_SYNC_CDC_MAX_RETAINED_WAL_MB)"
        )
    if health["wal_status"] == "unreserved":
        reasons.append("wal_status is unreserved: the slot will be lost at the next checkpoint")
    if reasons:
        log.warning("Slot %s %s", settings.cdc_slot, "; ".join(reasons))
        alerts.send_alert(slot_lag_alert(dag_id, run_id, summary, reasons), settings)
    summary["alerted"] = bool(reasons)
    return summary


def slot_lag_alert(
    dag_id: str, run_id: str, summary: Mapping[str, Any], reasons: Sequence[str]
) -> Alert:
    """The alert for a slot that keeps too much WAL on the source (its disk is at risk)."""
    return Alert(
        title=f"[services-sync] replication slot {summary['slot']} is lagging",
        facts=[
            ("DAG", dag_id),
            ("Run", run_id),
            ("Problem", "; ".join(reasons)),
            ("Retained WAL", f"{summary['retained_wal_bytes'] / 2**20:.1f} MiB"),
            ("wal_status", str(summary["wal_status"])),
            ("safe_wal_size", str(summary["safe_wal_size"])),
            (
                "What to do",
                "find why runs fail or stop (paused DAG, receiver down); if the pipeline is "
                "retired, drop the slot",
            ),
        ],
    )


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
    stage = stage or _stage_window
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


def _stage_window(
    state_conn: psycopg.Connection, window: dict[str, Any], settings: Settings
) -> None:
    """Peek the slot up to the window's end and COPY its changes into ``cdc_changes``."""
    schema = settings.state_schema
    window_id = window["window_id"]
    floor = lsn_to_int(window["floor_lsn"]) if window["floor_lsn"] else None
    with state_conn.cursor() as cur:
        cur.execute(state_sql("cdc_clear_window.sql", schema), {"window_id": window_id})
    snapshot: Snapshot | None = None
    read_snapshot = None
    counts = {"snapshot_rows": 0, "changes": 0, "already_acknowledged": 0, "in_snapshot": 0}
    with (
        connect(settings.source_conn_id) as source_conn,
        state_conn.cursor() as out,
        out.copy(state_sql("cdc_stage_changes.sql", schema)) as copy,
    ):
        if window["snapshot"]:
            read_snapshot, rows, upto = _read_table_snapshot(source_conn, window_id, copy)
            snapshot = Snapshot.parse(read_snapshot)
            counts["snapshot_rows"] = rows
            # The window must end after every transaction the snapshot saw, or one committed
            # between opening the window and taking the snapshot would come again, unfiltered,
            # in the next window: end it where WAL was when the snapshot was read.
            _wait_until_flushed(source_conn, upto)
            window["upto_lsn"] = upto
        decoder = ChangeDecoder()
        for _lsn, _xid, data in cdc_source.peek_changes(
            source_conn,
            settings.cdc_slot,
            settings.cdc_publication,
            window["upto_lsn"],
            fetch_rows=_STAGE_CHUNK,
        ):
            for event in decoder.feed(data):
                if not isinstance(event, Change) or not is_source_table(event.relation):
                    continue  # heartbeats, other tables of a shared publication
                if floor is not None and event.end_lsn <= floor:
                    counts["already_acknowledged"] += 1  # an advance undone by a crash
                    continue
                if snapshot is not None and snapshot.sees(event.xid):
                    counts["in_snapshot"] += 1
                    continue
                copy.write_row(_copy_values(staged_change(window_id, event)))
                counts["changes"] += 1
    finish_window(
        state_conn,
        window,
        settings,
        read_snapshot=read_snapshot,
        snapshot_rows=counts["snapshot_rows"],
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
                cur.itersize = _STAGE_CHUNK
                cur.execute(load_sql("cdc/snapshot_rows.sql"))
                for row in cur:
                    copy.write_row(_copy_values(snapshot_change(window_id, count, row, read_at)))
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


def _copy_values(staged: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*staged[:-1], json.dumps(staged[-1]))


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
