"""What each task of the binlog CDC DAG (``services_requests_mysql_cdc``) does.

Binlog CDC is CDC mode with another log reader. A run opens a *window* up to the binary log's
end (``SHOW MASTER STATUS``), stages the row events of ``service_requests`` committed in it in
the state database, and from there on the window is CDC mode's own: the same collapse, lanes,
batches and keys (commit position + index), outbox, ``HttpOperator`` lanes and ledger
(:mod:`services_sync.cdc.capture`, :mod:`services_sync.cdc.batches`). Only after every batch of
the window is acknowledged is the window marked acknowledged: that *is* saving the position
(its end, file + offset, and the GTID position where the server has one), so a crash at any
point before resends the same staged changes under the same keys, and the next window starts at
the saved position.

The DAG file calls the task entry points here; the setup and retention checks are
:mod:`services_sync.mysql.binlog_setup`.

Where the state lives: the PostgreSQL state database (``SERVICES_SYNC_STATE_CONN_ID``), next to
the ledger and outbox the delivery needs anyway; see the README.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from airflow.sdk.exceptions import AirflowFailException

from services_sync.cdc import batches, capture
from services_sync.cdc.capture import finish_window
from services_sync.cdc.changes import copy_row, snapshot_change
from services_sync.core.config import Settings
from services_sync.core.db import connect, state_sql
from services_sync.mysql.binlog import BinlogPosition, read_changes
from services_sync.mysql.binlog_setup import (
    binlog_settings,
    check_binlog_retention,
    check_binlog_setup,
    gtid_position,
    log_basename,
    master_position,
    server_facts,
)

__all__ = [
    "acknowledge_changes",
    "build_change_batches",
    "capture_changes",
    "check_binlog_retention",
    "check_binlog_setup",
]

#: Rows per fetch while reading an initial snapshot (memory bound).
_SNAPSHOT_CHUNK = 5000


def binlog_end(settings: Settings) -> str:
    """``PositionReader`` of binlog CDC: the binlog's end now, encoded as ``pg_lsn``."""
    from services_sync.mysql import source as mysql_source

    with mysql_source.connect(settings.mysql_source_conn_id) as conn:
        return master_position(conn).lsn


def stage_binlog_window(
    state_conn: psycopg.Connection, window: dict[str, Any], settings: Settings
) -> None:
    """``WindowStager`` of binlog CDC: COPY the window's row events into ``cdc_changes``.

    Reads from the saved position (the window's ``floor_lsn``) to its end; a snapshot window
    first stages the whole table as of a consistent snapshot and reads from the snapshot's own
    binlog position instead, so every change is in exactly one of the two.
    """
    from services_sync.mysql import source as mysql_source

    schema = settings.state_schema
    window_id = window["window_id"]
    with state_conn.cursor() as cur:
        cur.execute(state_sql("cdc_clear_window.sql", schema), {"window_id": window_id})
    with mysql_source.connect(settings.mysql_source_conn_id) as conn:
        server, _, _ = server_facts(conn)
    upto = BinlogPosition.from_lsn(window["upto_lsn"])
    snapshot_rows, read_snapshot, changes = 0, None, 0
    with (
        state_conn.cursor() as out,
        out.copy(state_sql("cdc_stage_changes.sql", schema)) as copy,
    ):
        if window["snapshot"]:
            start, snapshot_rows = _read_table_snapshot(settings, window_id, copy)
            read_snapshot = str(start)
            if start > upto:
                upto = start
                window["upto_lsn"] = upto.lsn
        elif window["floor_lsn"]:
            start = BinlogPosition.from_lsn(window["floor_lsn"])
        else:
            raise AirflowFailException(
                f"binlog CDC of {settings.mysql_source_conn_id} has no start position: clear the "
                "run so its first task records one"
            )
        base = log_basename(server)
        start = BinlogPosition(start.number, start.offset, base)
        upto = BinlogPosition(upto.number, upto.offset, base)
        for change in read_changes(
            settings.mysql_source_conn_id,
            server_id=settings.mysql_cdc_server_id,
            start=start,
            upto=upto,
        ):
            copy.write_row(copy_row(change.staged(window_id)))
            changes += 1
    if window["snapshot"]:
        with state_conn.cursor() as cur:
            cur.execute(
                state_sql("cdc_window_end.sql", schema),
                {"window_id": window_id, "upto_lsn": window["upto_lsn"]},
            )
    finish_window(
        state_conn,
        window,
        settings,
        read_snapshot=read_snapshot,
        snapshot_rows=snapshot_rows,
        skipped=f"read {start} up to {upto}",
    )


def _read_table_snapshot(settings: Settings, window_id: int, copy: Any) -> tuple[Any, int]:
    """Stage the whole table as of one consistent snapshot; return its binlog position.

    MariaDB reports the binlog position of a ``START TRANSACTION WITH CONSISTENT SNAPSHOT``
    (``Binlog_snapshot_file`` / ``_position``) without locking anything: the snapshot holds
    exactly the transactions committed before that position.
    """
    from services_sync.core.sql import load_sql
    from services_sync.mysql import source as mysql_source

    read_at = datetime.now(UTC)
    count = 0
    with mysql_source.connect(settings.mysql_source_conn_id) as conn:
        conn.rollback()
        cur = conn.cursor()
        try:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            cur.execute(load_sql("mysql/cdc/snapshot_position.sql"))
            status = {_text(name).lower(): _text(value) for name, value in cur.fetchall()}
            if not status.get("binlog_snapshot_file"):
                raise AirflowFailException(
                    "the server does not report the binlog position of a consistent snapshot "
                    "(Binlog_snapshot_file: a MariaDB feature), so an initial snapshot cannot "
                    "be matched with the log without locking the table"
                )
            position = BinlogPosition.parse(
                status["binlog_snapshot_file"], int(status["binlog_snapshot_position"])
            )
            cur.execute(load_sql("cdc/snapshot_rows.sql"))
            while rows := cur.fetchmany(_SNAPSHOT_CHUNK):
                for row in rows:
                    copy.write_row(copy_row(snapshot_change(window_id, count, row, read_at)))
                    count += 1
            cur.execute("COMMIT")
        finally:
            cur.close()
    return position, count


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def capture_changes(dag_id: str, run_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """CDC mode's capture, reading the binary log (see :func:`stage_binlog_window`)."""
    return capture.capture_changes(
        dag_id,
        run_id,
        params,
        binlog_settings(),
        current_position=binlog_end,
        stage=stage_binlog_window,
    )


def build_change_batches(
    *, dag_id: str, run_id: str, window_id: int, interval: Any
) -> dict[str, Any]:
    """CDC mode's build, on this source's windows."""
    return batches.build_change_batches(
        dag_id=dag_id,
        run_id=run_id,
        window_id=window_id,
        interval=interval,
        settings=binlog_settings(),
    )


def save_position(settings: Settings, window: Mapping[str, Any]) -> str:
    """``advance`` of binlog CDC: keep the window end's GTID; the source has nothing to move.

    The position itself is saved by marking the window acknowledged (the caller, right after).
    """
    from services_sync.mysql import source as mysql_source

    with mysql_source.connect(settings.mysql_source_conn_id) as conn:
        server, _, _ = server_facts(conn)
        position = BinlogPosition.from_lsn(window["upto_lsn"])
        position = BinlogPosition(position.number, position.offset, log_basename(server))
        gtid = gtid_position(conn, position, server)
    with connect(settings.state_conn_id) as conn, conn.cursor() as cur:
        cur.execute(
            state_sql("binlog_window_gtid.sql", settings.state_schema),
            {"window_id": window["window_id"], "gtid": gtid},
        )
    return f"{position} (GTID {gtid})" if gtid else str(position)


def acknowledge_changes(window_id: int | None, *, dag_id: str) -> dict[str, Any]:
    """CDC mode's acknowledgment: save the position only after every batch was acknowledged."""
    return batches.acknowledge_changes(
        window_id, dag_id=dag_id, settings=binlog_settings(), advance=save_position
    )
