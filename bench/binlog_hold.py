"""Binlog CDC's reader on one large transaction: peak memory and time, bounded hold vs whole hold.

``make bench-binlog`` (``python -m bench.binlog_hold``) starts a private MariaDB (binlog on, the
server package's binaries, like the tests), commits one transaction of ``--rows`` inserts into
``service_requests`` and reads it with :func:`services_sync.mysql.binlog.read_changes` twice,
each in a fresh process: with the product's hold (:data:`~services_sync.mysql.binlog.HOLD_ROWS`
rows; a larger transaction is read a second time) and with a hold larger than the transaction
(every row held until the commit, as the reader did before). Each process reports its peak RSS
before and after the read and the read's wall time. Writes ``bench/binlog_hold.md`` (or
``--out``). Nothing here asserts a number: it reports them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.env import python_env

ROOT = Path(__file__).resolve().parents[1]
CONN_ID = "services_mysql_db"
READER_ID = 4_243


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_once(start: str, upto: str, hold_rows: int) -> dict[str, float]:
    """Read ``[start, upto)`` (``file:offset``) in this process; count rows, time, memory."""
    from services_sync.mysql.binlog import BinlogPosition, read_changes

    def position(text: str) -> BinlogPosition:
        file, offset = text.rsplit(":", 1)
        return BinlogPosition.parse(file, int(offset))

    def read(upto: BinlogPosition) -> int:
        return sum(
            1
            for _ in read_changes(
                CONN_ID, server_id=READER_ID, start=position(start), upto=upto, hold_rows=hold_rows
            )
        )

    read(position(start))  # empty: imports, the connection and the stream's set-up, unmeasured
    before = _peak_rss_mb()
    began = time.perf_counter()
    rows = read(position(upto))
    return {
        "rows": rows,
        "seconds": time.perf_counter() - began,
        "rss_before_mb": before,
        "rss_peak_mb": _peak_rss_mb(),
    }


def _one_transaction(server, database: str, rows: int) -> tuple[str, str]:
    from devkit.seed import create_mysql_source_table, insert_mysql_rows
    from services_sync.mysql.binlog_setup import master_position

    def master(conn) -> str:
        return str(master_position(conn))

    t0 = datetime(2025, 5, 14, 12, 0, tzinfo=UTC)
    with server.connect(database) as conn:
        create_mysql_source_table(conn)
        start = master(conn)
        conn.begin()
        for first in range(0, rows, 10_000):
            insert_mysql_rows(
                conn,
                (
                    (f"svc-{i % 97}", f"req-{i:09d}", t0, "1", t0 + timedelta(microseconds=i))
                    for i in range(first, min(first + 10_000, rows))
                ),
            )
        conn.commit()
        return start, master(conn)


def measure(rows: int) -> dict:
    """Start MariaDB, write the transaction, read it with both holds; the facts as a dict."""
    from devkit.mariadb import MariaDBServer
    from services_sync.mysql.binlog import HOLD_ROWS

    started = datetime.now(UTC).isoformat(timespec="seconds")
    with MariaDBServer() as server:
        database = server.create_database("bench_binlog")
        began = time.perf_counter()
        start, upto = _one_transaction(server, database, rows)
        written_s = time.perf_counter() - began
        env = {**python_env(), "AIRFLOW_CONN_SERVICES_MYSQL_DB": server.airflow_uri(database)}
        reads = {}
        for name, hold in (("bounded", HOLD_ROWS), ("whole", rows + 1)):
            done = subprocess.run(
                [sys.executable, "-m", "bench.binlog_hold", "--read", start, upto, str(hold)],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            reads[name] = {"hold_rows": hold, **json.loads(done.stdout.strip().splitlines()[-1])}
            if reads[name]["rows"] != rows:
                raise SystemExit(f"{name} hold read {reads[name]['rows']} of {rows} rows")
    return {
        "rows": rows,
        "written_s": written_s,
        "started": started,
        "reads": reads,
    }


def report(facts: dict) -> str:
    lines = [
        "# Benchmark: binlog CDC's reader on one large transaction",
        "",
        f"Command: `python -m bench.binlog_hold --rows {facts['rows']}` (`make bench-binlog`), "
        f"started {facts['started']}. One transaction of {facts['rows']:,} inserts on a private "
        f"MariaDB (written in {facts['written_s']:.1f} s), read by "
        "`services_sync.mysql.binlog.read_changes` in a fresh process per hold.",
        "",
        "| hold | rows held at most | rows read | wall s | peak RSS before the read MB "
        "| peak RSS after MB | growth MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "bounded": "the product's (`HOLD_ROWS`): read twice",
        "whole": "whole transaction (the reader before)",
    }
    for name, read in facts["reads"].items():
        growth = read["rss_peak_mb"] - read["rss_before_mb"]
        lines.append(
            f"| {labels[name]} | {read['hold_rows']:,} | {read['rows']:,} | {read['seconds']:.2f} "
            f"| {read['rss_before_mb']:.0f} | {read['rss_peak_mb']:.0f} | {growth:.0f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the one transaction")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "binlog_hold.md")
    parser.add_argument(
        "--read", nargs=3, metavar=("START", "UPTO", "HOLD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.read:
        start, upto, hold = args.read
        print(json.dumps(read_once(start, upto, int(hold))))
        return 0
    if str(ROOT / "plugins") not in sys.path:
        sys.path.insert(0, str(ROOT / "plugins"))
    facts = measure(args.rows)
    text = report(facts)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(facts, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
