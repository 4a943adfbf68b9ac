"""Fast seeding in SQL: ``INSERT ... SELECT ... FROM generate_series`` (1M rows in seconds).

Two shapes of ``service_requests`` (the project's DDL: ``include/sql/services_sync/dev``):

* :func:`seed_intervals`, for the end-to-end runs: each benchmark hour gets exactly ``n`` changed
  rows, evenly spread over the hour (sub-second timestamps), appended in time order;
* :func:`seed_source_cost`, for the source-cost case: a table of ``total`` rows of which
  ``changed`` fall in one hour and the rest in the year before it. The changed rows are spread
  evenly through the heap (one every ``total / changed`` rows, so about one per page): the index
  range scan has to visit a page per row, the unfavourable layout.

Every row is valid under the API contract, so every variant sends every row.
"""

from __future__ import annotations

import time
from datetime import datetime

import psycopg

from devkit.seed import create_source_table

SERVICES = "ARRAY['water','roads','waste','parks','lighting']"

_TABLE = """
CREATE TABLE IF NOT EXISTS service_requests (
    service_id         text,
    request_id         text,
    opening_date       timestamptz,
    status_id          text,
    last_modified_date timestamptz
)
"""

_INTERVAL_ROWS = f"""
INSERT INTO service_requests (service_id, request_id, opening_date, status_id, last_modified_date)
SELECT ({SERVICES})[1 + g %% 5],
       %(prefix)s || lpad(g::text, 9, '0'),
       %(start)s::timestamptz - make_interval(days => 1 + g %% 30, secs => g %% 86400),
       (1 + g %% 5)::text,
       %(start)s::timestamptz + make_interval(secs => (g - 1) * 3600.0 / %(n)s)
FROM generate_series(1, %(n)s) AS g
"""

_SOURCE_COST_ROWS = f"""
INSERT INTO service_requests (service_id, request_id, opening_date, status_id, last_modified_date)
SELECT ({SERVICES})[1 + g %% 5],
       'SRC-' || lpad(g::text, 10, '0'),
       %(start)s::timestamptz - make_interval(days => 400 + g %% 30),
       (1 + g %% 5)::text,
       CASE WHEN g %% %(step)s = 0 AND g / %(step)s <= %(changed)s
            THEN %(start)s::timestamptz
                 + make_interval(secs => (g / %(step)s - 1) * 3600.0 / %(changed)s)
            ELSE %(start)s::timestamptz - interval '1 hour'
                 - make_interval(secs => (g::float8 / %(total)s) * 365 * 86400)
       END
FROM generate_series(1, %(total)s) AS g
"""


def seed_intervals(dsn: str, intervals: dict[datetime, int]) -> float:
    """Create the table and give each hour ``start`` its ``n`` changed rows; returns seconds."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_TABLE)
        for i, (start, n) in enumerate(sorted(intervals.items())):
            conn.execute(_INTERVAL_ROWS, {"prefix": f"REQ{i}-", "start": start, "n": n})
        create_source_table(conn)  # the project's DDL: adds the last_modified_date index
        conn.execute("VACUUM ANALYZE service_requests")
    return time.perf_counter() - started


def seed_source_cost(dsn: str, start: datetime, total: int, changed: int) -> float:
    """A ``total``-row table with ``changed`` rows in ``[start, start + 1h)``; returns seconds."""
    started = time.perf_counter()
    step = max(1, total // changed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_TABLE)
        conn.execute(
            _SOURCE_COST_ROWS, {"start": start, "total": total, "changed": changed, "step": step}
        )
        create_source_table(conn)  # index built after the load, as CREATE INDEX would be
        conn.execute("VACUUM ANALYZE service_requests")
    return time.perf_counter() - started
