"""Create and fill the source table for the demo, the tests and the benchmarks."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

SQL_DIR = Path(__file__).resolve().parents[1] / "include" / "sql" / "services_sync"
COLUMNS = ("service_id", "request_id", "opening_date", "status_id", "last_modified_date")


def create_source_table(conn: psycopg.Connection) -> None:
    """Create ``service_requests`` and its ``last_modified_date`` index (idempotent)."""
    conn.execute((SQL_DIR / "dev" / "create_source_table.sql").read_text())


def insert_rows(conn: psycopg.Connection, rows: Iterable[Sequence[Any]]) -> int:
    """Bulk-load rows (in :data:`COLUMNS` order) with COPY; returns how many."""
    count = 0
    with conn.cursor() as cur:
        columns = ", ".join(COLUMNS)
        with cur.copy(f"COPY service_requests ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([None if value is None else _copy_text(value) for value in row])
                count += 1
    return count


def demo_changes(
    first_hour: datetime, hours: int, per_hour: int = 40, seed: int = 7
) -> list[tuple[Any, ...]]:
    """Realistic changes over ``hours`` hours: requests opened and moved through statuses.

    Each request's row holds its latest state (the table is current state, not history), so
    a request touched in several hours shows up in the last one. A few legacy rows break the
    API contract on purpose (NULL id, non-integer status, missing opening date), as real tables
    do; the pipeline must quarantine them and still send the rest.
    """
    rng = random.Random(seed)
    services = ["water", "roads", "waste", "parks", "lighting"]
    rows: list[tuple[Any, ...]] = []
    serial = 0
    for hour in range(hours):
        start = first_hour + timedelta(hours=hour)
        for _ in range(per_hour):
            serial += 1
            opened = start - timedelta(days=rng.randint(0, 20), minutes=rng.randint(0, 600))
            modified = start + timedelta(
                seconds=rng.randint(0, 3599), microseconds=rng.randint(0, 999_999)
            )
            rows.append(
                (
                    rng.choice(services),
                    f"REQ-{serial:06d}",
                    opened,
                    str(rng.choice([1, 2, 3, 4, 5])),
                    modified,
                )
            )
        # The edges of the interval: exactly on the hour belongs to this hour, not the previous.
        serial += 1
        rows.append(("roads", f"REQ-{serial:06d}", start - timedelta(days=1), "2", start))
    malformed_hour = first_hour + timedelta(hours=min(1, hours - 1))
    rows += [
        (
            "water",
            None,
            malformed_hour - timedelta(days=2),
            "1",
            malformed_hour + timedelta(minutes=5),
        ),
        (
            "roads",
            "REQ-LEGACY-1",
            malformed_hour - timedelta(days=3),
            "open",
            malformed_hour + timedelta(minutes=17),
        ),
        ("parks", "REQ-LEGACY-2", None, "3", malformed_hour + timedelta(minutes=42)),
    ]
    return rows


def _copy_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def create_mysql_source_table(conn: Any) -> None:
    """Create the MySQL / MariaDB ``service_requests`` (DATETIME(6) in UTC) and its index."""
    with conn.cursor() as cur:
        cur.execute((SQL_DIR / "mysql" / "dev" / "create_source_table.sql").read_text())


def insert_mysql_rows(conn: Any, rows: Iterable[Sequence[Any]]) -> int:
    """Insert rows (in :data:`COLUMNS` order) into a MySQL table; aware times go in as UTC.

    ``conn`` is a PyMySQL connection; the rows commit with it.
    """
    from datetime import UTC

    def value(item: Any) -> Any:
        if isinstance(item, datetime) and item.tzinfo is not None:
            return item.astimezone(UTC).replace(tzinfo=None)
        return item

    batch = [tuple(value(v) for v in row) for row in rows]
    if batch:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO service_requests ({', '.join(COLUMNS)}) VALUES (%s, %s, %s, %s, %s)",
                batch,
            )
    return len(batch)
