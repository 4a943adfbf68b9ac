"""Reads from a MySQL / MariaDB ``service_requests`` table: query mode's source side.

The same reads as :mod:`services_sync.query.source` (planned batches in one snapshot, the versions
now in a slice, newer versions of sent records, the rows a reconciliation must explain), on the
SQL dialect files in ``include/sql/services_sync/mysql``, through the mysql provider's
``MySqlHook`` (the ``mysql-connector-python`` client: wheels only, no C headers).

**Time zone rule.** Every session runs in UTC (``SET time_zone = '+00:00'``, the hook's
``init_command``), whatever the server's ``time_zone``: a ``TIMESTAMP`` column is compared and
returned in UTC, and a ``DATETIME`` column is taken to hold UTC (``UTC_TIMESTAMP(6)``, not
``NOW(6)``, on a server in another zone). A DATETIME in a local zone with daylight saving time
cannot say which of two equal wall times it was; ``check_run_setup`` refuses a
``SERVICES_SYNC_NAIVE_TIMEZONE`` other than UTC for a MySQL source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from services_sync.core.config import MYSQL_INIT_COMMAND
from services_sync.core.payload import BatchBounds, Interval
from services_sync.core.sql import load_sql


@contextmanager
def connect(conn_id: str) -> Iterator[Any]:
    """A DB-API connection for a ``mysql`` Airflow Connection, session in UTC; closed after.

    Committed on success, rolled back on error. The client comes from the connection's
    ``client`` extra (``mysql-connector-python``; ``check_run_setup`` names it).
    """
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    from services_sync.core.db import finishing

    with finishing(
        MySqlHook(mysql_conn_id=conn_id, init_command=MYSQL_INIT_COMMAND).get_conn()
    ) as conn:
        yield conn


def utc_text(value: datetime) -> str:
    """An aware instant as the UTC wall time MySQL compares with (``CAST(... AS DATETIME(6))``)."""
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def query(conn: Any, name: str, params: dict[str, Any] | None = None) -> list[tuple]:
    """All rows of ``include/sql/services_sync/mysql/<name>``."""
    cur = conn.cursor()
    try:
        if params:
            cur.execute(load_sql(f"mysql/{name}"), params)
        else:  # no substitution at all: a literal % (LIKE 'binlog_%') stays as it is
            cur.execute(load_sql(f"mysql/{name}"))
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()


def _bounds(interval: Interval, lower: Sequence[str], upper: Sequence[str]) -> dict[str, Any]:
    from services_sync.query.source import batch_params

    return batch_params(interval, lower, upper, stamp=utc_text)


def read_planned_batches(
    conn: Any, interval: Interval, plan: Sequence[BatchBounds]
) -> Iterator[tuple[BatchBounds, list[tuple], str | None]]:
    """Each planned batch's rows, all read in one consistent snapshot, one batch at a time.

    ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` under REPEATABLE READ: every batch sees the
    table as of one instant, like PostgreSQL's REPEATABLE READ read. Yields ``(batch, rows,
    None)``: InnoDB has no snapshot value to keep, so the reconciliation compares the rows with
    what was sent instead (:func:`unexplained_rows`).
    """
    conn.rollback()
    cur = conn.cursor()
    try:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        fetch = load_sql("mysql/fetch_batch.sql")
        for batch in plan:
            cur.execute(fetch, _bounds(interval, batch.lower, batch.upper))
            yield batch, list(cur.fetchall()), None
        cur.execute("COMMIT")
    finally:
        cur.close()


def batch_rows(conn: Any, interval: Interval, lower: Sequence[str], upper: Sequence[str]):
    """The rows now in one keyset range of the interval (``fetch_batch.sql``)."""
    return query(conn, "fetch_batch.sql", _bounds(interval, lower, upper))


def current_versions(conn: Any, start: datetime, end: datetime) -> list[tuple[Any, Any, Any]]:
    """``(service_id, request_id, last_modified_date)`` of the rows now in ``[start, end)``.

    ``last_modified_date`` comes back naive (UTC); it is made aware here so the callers that
    format it need no MySQL rule of their own.
    """
    rows = query(
        conn,
        "current_versions.sql",
        {"window_start": utc_text(start), "window_end": utc_text(end)},
    )
    return [(sid, rid, _aware(lmd)) for sid, rid, lmd in rows]


def newer_versions(conn: Any, records: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    """``(service_id, request_id)`` of the contract records whose row now has a newer version."""
    if not records:
        return set()
    keys = [
        [r["service_id"], r["request_id"], _contract_stamp(r["last_modified_date"])]
        for r in records
    ]
    rows = query(
        conn,
        "newer_versions.sql",
        {"records": json.dumps(keys), "since": min(k[2] for k in keys)},
    )
    return {(str(sid), str(rid)) for sid, rid in rows}


def check_source_access(conn: Any) -> list[tuple[str, str, int]]:
    """Read nothing from the table, but fail if it, a column or the grant is missing.

    Returns ``(column, data type, whether an index starts with last_modified_date)``.
    """
    cur = conn.cursor()
    try:
        cur.execute(load_sql("check_source_access.sql"))
        cur.fetchall()
    finally:
        cur.close()
    return [(str(c), str(t).lower(), int(i)) for c, t, i in query(conn, "source_columns.sql")]


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _contract_stamp(stamp: str) -> str:
    """``2025-05-14T10:02:00Z`` (the contract) as ``2025-05-14 10:02:00`` (MySQL, UTC)."""
    return stamp.replace("T", " ").removesuffix("Z")
