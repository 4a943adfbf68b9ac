"""The floor: the least work that moves an interval from PostgreSQL to the receiver.

``python -m bench.floor --dsn DSN --url URL --start ISO [--batch-size N]`` prints one JSON line.

Two timed phases, nothing else counted:

1. ``COPY (the interval query) TO STDOUT`` read to a null sink (bytes counted, then dropped);
2. the POST of the same payload bytes the DAG sends, with a tight client: ``http.client`` on
   one keep-alive connection, bodies pre-encoded. The bodies are built beforehand, untimed,
   with the project's own functions, in the DAG's batch sizes (``plan_batches.sql``), so they
   are byte-identical to the DAG's (the harness checks the sha256 digests against what the
   receiver recorded for the DAG run). The receiver caps one body at 10,000 records and
   64 MiB, so above one batch "one POST" is one POST per DAG batch, back to back.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import sys
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from services_sync.core.payload import Interval, build_body, idempotency_key
from services_sync.core.sql import load_sql
from services_sync.core.transform import transform_rows

INTERVAL_QUERY = (
    "SELECT service_id, request_id, opening_date, status_id, last_modified_date "
    "FROM service_requests "
    "WHERE last_modified_date >= {start} AND last_modified_date < {end}"
)
DATA_PATH = "/services-data/requests"


def build_bodies(dsn: str, interval: Interval, batch_size: int) -> list[tuple[str, bytes, int]]:
    """``(idempotency key, body bytes, records)`` per batch, exactly as the DAG builds them."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        plan = conn.execute(
            load_sql("plan_batches.sql"),
            {
                "window_start": interval.start,
                "window_end": interval.end,
                "batch_size": batch_size,
                "max_batch_bytes": 1024 * 1024,
            },
        ).fetchall()
        if not plan:
            return []
        per_batch = int(plan[0][8])
        rows = conn.execute(
            load_sql("fetch_batch.sql"),
            {
                "window_start": interval.start,
                "window_end": interval.end,
                "lower_lmd": interval.start,
                "lower_rid": "",
                "lower_sid": "",
                "upper_lmd": interval.end,
                "upper_rid": "",
                "upper_sid": "",
            },
        ).fetchall()
    bodies = []
    for i in range(0, len(rows), per_batch):
        records = transform_rows(rows[i : i + per_batch]).records
        body = build_body(records)
        bodies.append((idempotency_key(interval, body), body.encode("ascii"), len(records)))
    return bodies


def copy_to_null(dsn: str, interval: Interval) -> tuple[float, int]:
    """Seconds and bytes of ``COPY (interval query) TO STDOUT`` into a null sink."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        query = sql.SQL(INTERVAL_QUERY).format(
            start=sql.Literal(interval.start), end=sql.Literal(interval.end)
        )
        started = time.perf_counter()
        size = 0
        statement = sql.SQL("COPY ({}) TO STDOUT").format(query)
        with conn.cursor() as cur, cur.copy(statement) as copy:
            for block in copy:
                size += len(block)
        return time.perf_counter() - started, size


def post_all(url: str, bodies: list[tuple[str, bytes, int]]) -> tuple[float, list[int]]:
    """Seconds to POST every body on one keep-alive connection; the HTTP statuses."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    statuses = []
    started = time.perf_counter()
    for key, body, count in bodies:
        conn.request(
            "POST",
            DATA_PATH,
            body=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
        )
        response = conn.getresponse()
        payload = response.read()
        statuses.append(response.status)
        if response.status != 200 or json.loads(payload).get("accepted") != count:
            break
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed, statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--url", required=True, help="receiver base URL")
    parser.add_argument("--start", required=True, help="interval start, ISO 8601 with offset")
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args(argv)
    start = datetime.fromisoformat(args.start)
    interval = Interval(start, start + timedelta(hours=1))

    prep = time.perf_counter()
    bodies = build_bodies(args.dsn, interval, args.batch_size)
    prep_s = time.perf_counter() - prep
    copy_s, copy_bytes = copy_to_null(args.dsn, interval)
    post_s, statuses = post_all(args.url, bodies)
    ok = len(statuses) == len(bodies) and all(s == 200 for s in statuses)
    digest = hashlib.sha256(
        "\n".join(sorted(hashlib.sha256(b).hexdigest() for _, b, _ in bodies)).encode()
    ).hexdigest()
    print(
        json.dumps(
            {
                "ok": ok,
                "rows": sum(n for _, _, n in bodies),
                "batches": len(bodies),
                "body_bytes": sum(len(b) for _, b, _ in bodies),
                "bodies_digest": digest,
                "copy_s": copy_s,
                "copy_bytes": copy_bytes,
                "post_s": post_s,
                "floor_s": copy_s + post_s,
                "prep_s": prep_s,
                "statuses": sorted(set(statuses)),
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
