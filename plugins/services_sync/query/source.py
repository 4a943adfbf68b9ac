"""Reads from the source table: one planned batch at a time, so memory is bounded by batch size."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.adapt import Loader
from psycopg.pq import Format

from services_sync.core.payload import BatchBounds, Interval
from services_sync.core.sql import load_sql
from services_sync.core.transform import Unloadable

#: What psycopg raises for a value it cannot load ('infinity' or year 10000 timestamps: DataError;
#: bytes that are not valid in the client encoding: UnicodeDecodeError, a ValueError).
_LOAD_ERRORS = (psycopg.DataError, ValueError, OverflowError)


def read_planned_batches(
    conn: psycopg.Connection, interval: Interval, plan: Sequence[BatchBounds]
) -> Iterator[tuple[BatchBounds, list[tuple], str]]:
    """Each planned batch's rows, all read in one REPEATABLE READ snapshot, one batch at a time.

    Yields ``(batch, rows, snapshot)``: memory holds one batch. The snapshot (``pg_snapshot`` as
    text) lets the reconciliation tell which rows of the interval this read could not see.
    """
    conn.commit()  # the isolation level can only change between transactions
    previous = conn.isolation_level
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_current_snapshot()::text")
            snapshot = cur.fetchone()[0]
            fetch = load_sql("fetch_batch.sql")
            for batch in plan:
                rows = fetch_rows(cur, fetch, batch_params(interval, batch.lower, batch.upper))
                yield batch, rows, snapshot
    finally:
        if not conn.broken:  # a lost connection (a source restart) has nothing to restore
            conn.isolation_level = previous


def fetch_rows(cur: psycopg.Cursor, query: str, params: dict[str, Any]) -> list[tuple]:
    """All rows of ``query``; a value the driver cannot load becomes :class:`Unloadable`.

    The fast path is psycopg's C loaders. Only when one of them fails (a rare batch) is the query
    run again, in the same transaction and so the same snapshot, with loaders that hand such a
    value over as its text: the transform quarantines that row and the rest of the batch goes.
    """
    cur.execute(query, params)
    try:
        return cur.fetchall()
    except _LOAD_ERRORS:
        type_oids = {column.type_code for column in cur.description or ()}
    with cur.connection.cursor() as lenient:
        for oid in type_oids:
            loader = psycopg.adapters.get_loader(oid, Format.TEXT)
            if loader is not None:
                lenient.adapters.register_loader(oid, _tolerant(loader))
        lenient.execute(query, params)
        return lenient.fetchall()


def _tolerant(loader: type[Loader]) -> type[Loader]:
    """``loader``, but a value it cannot load comes back as :class:`Unloadable`."""

    class Tolerant(Loader):
        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._inner = loader(oid, context)

        def load(self, data: Any) -> Any:
            try:
                return self._inner.load(data)
            except _LOAD_ERRORS as exc:
                return Unloadable(bytes(data).decode("utf-8", "replace"), str(exc))

    return Tolerant


def batch_params(
    interval: Interval,
    lower: Sequence[str],
    upper: Sequence[str],
    stamp: Callable[[datetime], Any] = lambda value: value,
) -> dict[str, Any]:
    """The bind parameters of ``fetch_batch.sql`` (either dialect) for one planned batch.

    ``stamp``: how the interval bounds are bound (PostgreSQL takes the aware datetimes,
    MySQL their UTC wall times).
    """
    return {
        "window_start": stamp(interval.start),
        "window_end": stamp(interval.end),
        "lower_lmd": lower[0],
        "lower_rid": lower[1],
        "lower_sid": lower[2],
        "upper_lmd": upper[0],
        "upper_rid": upper[1],
        "upper_sid": upper[2],
    }


def current_versions(
    conn: psycopg.Connection, start: datetime, end: datetime
) -> list[tuple[Any, Any, Any]]:
    """``(service_id, request_id, last_modified_date)`` of the rows now in ``[start, end)``."""
    with conn.cursor() as cur:
        cur.execute(load_sql("current_versions.sql"), {"window_start": start, "window_end": end})
        return cur.fetchall()


def newer_versions(
    conn: psycopg.Connection, records: Sequence[dict[str, Any]]
) -> set[tuple[str, str]]:
    """``(service_id, request_id)`` of the records whose row now has a newer version.

    ``records`` are contract records (ids as sent, ``last_modified_date`` as ``...Z``).
    """
    if not records:
        return set()
    stamps = [r["last_modified_date"] for r in records]
    with conn.cursor() as cur:
        cur.execute(
            load_sql("newer_versions.sql"),
            {
                "service_ids": [r["service_id"] for r in records],
                "request_ids": [r["request_id"] for r in records],
                "stamps": stamps,
                "since": min(stamps),
            },
        )
        return {(sid, rid) for sid, rid in cur.fetchall()}


def find_late_rows(
    conn: psycopg.Connection,
    interval: Interval,
    batches: Sequence[dict[str, Any]],
    limit: int = 1000,
) -> tuple[int, list[tuple[int | None, tuple]]]:
    """Rows now in the interval that the read of their batch could not see (``find_late_rows.sql``).

    ``batches``: the run's current ledger rows (keyset bounds and read snapshot). Returns how
    many such rows there are, and the first ``limit`` of them in sort-key order, each as
    ``(batch_index of the batch whose range holds it, row in fetch_batch.sql's columns)``.
    With no batch at all (an interval read empty), every row now in the interval is returned,
    with batch_index None.
    """
    with conn.cursor() as cur:
        # Loaded as the build loads them: a value the driver cannot load is quarantined there,
        # so here it must come back the same way (same fingerprint), not fail the task.
        found = fetch_rows(
            cur,
            load_sql("find_late_rows.sql"),
            {
                "window_start": interval.start,
                "window_end": interval.end,
                "lower_lmd": [b["lower_bound"][0] for b in batches],
                "lower_rid": [b["lower_bound"][1] for b in batches],
                "lower_sid": [b["lower_bound"][2] for b in batches],
                "upper_lmd": [b["upper_bound"][0] for b in batches],
                "upper_rid": [b["upper_bound"][1] for b in batches],
                "upper_sid": [b["upper_bound"][2] for b in batches],
                "snapshots": [b["read_snapshot"] for b in batches],
                "limit": limit,
            },
        )
    total = int(found[0][-1]) if found else 0
    return total, [
        (batches[row[0] - 1]["batch_index"] if row[0] is not None else None, tuple(row[1:-1]))
        for row in found
    ]


def check_source_access(conn: psycopg.Connection) -> None:
    """Fail if the table or a column is missing or the role may not read it."""
    with conn.cursor() as cur:
        cur.execute(load_sql("check_source_access.sql"))
