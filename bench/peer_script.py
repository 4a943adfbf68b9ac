"""Peer (a), the seed's approach: read the interval, send it all with one ``requests.post(json=…)``.

What a user writes without the project: one query, the rows turned into the contract's
records, one POST of the whole hour. No batching, no quarantine, no ledger; a malformed row
fails the whole hour. Run by the benchmark as

    python -m bench.peer_script --dsn DSN --url URL --start 2026-06-01T01:00:00+00:00

and prints one JSON line (rows read, HTTP status, the receiver's reason when it refuses).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import requests

QUERY = """
SELECT service_id, request_id, opening_date, status_id, last_modified_date
FROM service_requests
WHERE last_modified_date >= %s AND last_modified_date < %s
ORDER BY last_modified_date
"""


def utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_script")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--url", required=True, help="receiver base URL")
    parser.add_argument("--start", required=True, help="interval start, ISO 8601")
    args = parser.parse_args(argv)
    start = datetime.fromisoformat(args.start)
    end = start + timedelta(hours=1)
    started = time.perf_counter()

    with psycopg.connect(args.dsn) as conn:
        rows = conn.execute(QUERY, (start, end)).fetchall()
    records = [
        {
            "service_id": str(service_id),
            "request_id": str(request_id),
            "opening_date": utc(opening_date),
            "status_id": int(status_id),
            "last_modified_date": utc(last_modified_date),
        }
        for service_id, request_id, opening_date, status_id, last_modified_date in rows
    ]
    ok, status, reason, sent = False, 0, "", 0
    try:
        response = requests.post(
            f"{args.url}/services-data/requests",
            json={"requests": records},
            headers={"Idempotency-Key": f"peer-script:{start.isoformat()}"},
            timeout=600,
        )
    except requests.RequestException as exc:  # e.g. the server closed on a huge body
        reason = f"{type(exc).__name__}: {exc}"[:200]
    else:
        ok, status, sent = response.ok, response.status_code, len(response.request.body or b"")
        if not ok:
            try:
                body = response.json()
                reason = str(body.get("reason") or body.get("error") or "")[:200]
            except ValueError:
                reason = response.text[:200]
    print(
        json.dumps(
            {
                "ok": ok,
                "rows": len(rows),
                "status": status,
                "reason": reason,
                "body_bytes": sent,
                "seconds": time.perf_counter() - started,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
