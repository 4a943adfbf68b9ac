"""MySQL / MariaDB demo: both MySQL DAGs against a MariaDB server the demo starts itself.

Run it with ``make demo-mysql`` or ``python -m devkit.demo.mysql [--keep] [--workdir DIR]``.
It starts a private MariaDB (``mariadbd`` from the Debian ``mariadb-server`` package, binlog on,
on a free loopback port: never a server already running on the machine), the embedded
PostgreSQL that holds the pipeline's state (ledger, outbox, quarantine, binlog windows), the
reference receiver and a SQLite metadata DB (see :mod:`devkit.demo.query`), then:

1. **query mode** (``services_requests_mysql_sync``): two hours of changes, one malformed row
   (quarantined), each hour sent with ``dag.test()``;
2. **binlog CDC** (``services_requests_mysql_cdc``), the receiver emptied first: an initial
   snapshot of the table, then inserts, repeated updates and deletes (sent as
   ``status_id = -1``), then a transaction still open when a run captures (a late commit: not
   in that window) and the run after it commits, which delivers it.

It then compares the receiver with the table and shows the saved binlog position. Exit status:
0 when every run succeeded and the states match, 1 otherwise, 2 if the demo could not be set
up, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from devkit.demo.airflow_runs import load_dag, migrate_airflow_db
from devkit.demo.changes import (
    DELETES_AS_STATUS,
    RunSteps,
    change_row,
    compare_with_receiver,
    run_change_demo,
)
from devkit.demo.services import FIRST_HOUR, Services, conclude, start_demo
from devkit.terminal import show_path
from devkit.workspace import SetupError

QUERY_DAG_ID = "services_requests_mysql_sync"
CDC_DAG_ID = "services_requests_mysql_cdc"
DATABASE = "services"
DESCRIPTION = (
    "Run the MySQL / MariaDB DAGs against a private MariaDB server and the "
    "reference receiver, and show what arrived."
)


def _run(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    """Set up, run both DAGs, compare; what it starts stops with ``cleanup``."""
    started = time.monotonic()
    from devkit import mariadb as mariadb_kit

    if not mariadb_kit.available():
        raise SetupError(
            "the MariaDB server binaries are missing: run devkit/ensure-os-packages mariadb "
            "(apt-get install mariadb-server), or set MARIADB_BIN_DIR"
        )
    workdir = start_demo(args.workdir)
    os.environ.update({**DELETES_AS_STATUS, "SERVICES_SYNC_CLOCK_SKEW_S": "0"})
    services = Services(workdir)
    print(f"services-sync MySQL / MariaDB demo, workspace {show_path(workdir)}/")
    mariadb = mariadb_kit.MariaDBServer(base_dir=workdir / "mariadb")
    cleanup.callback(mariadb.stop)
    cleanup.callback(services.stop)
    mariadb.start()
    version = mariadb.execute("SELECT VERSION()")[0][0]
    print(f"source DB    MariaDB {version} on 127.0.0.1:{mariadb.port} (binlog ROW/FULL)")
    mariadb.create_database(DATABASE)
    from devkit.seed import create_mysql_source_table, insert_mysql_rows

    with mariadb.connect(DATABASE) as conn:
        create_mysql_source_table(conn)
        hour_rows = [change_row(f"Q-{i:03d}", 1 + i % 4, i * 5) for i in range(12)]
        hour_rows += [change_row(f"R-{i:03d}", 2, 60 + i * 4) for i in range(8)]
        hour_rows.append(change_row("BAD-STATUS", "open", 30))
        insert_mysql_rows(conn, hour_rows)
    services.start_source_db()
    print("state DB     embedded PostgreSQL (ledger, outbox, quarantine, binlog windows)")
    services.start_receiver()
    os.environ["AIRFLOW_CONN_SERVICES_MYSQL_DB"] = mariadb.airflow_uri(DATABASE)
    setup_log = workdir / "airflow-setup.log"
    migrate_airflow_db(setup_log)
    steps = RunSteps(workdir, "airflow-mysql-run", services.dsn, {"batch_size": 10})

    query = load_dag(setup_log, QUERY_DAG_ID)
    print(f"running {QUERY_DAG_ID} (query mode) with dag.test():")
    steps.run(query, FIRST_HOUR, f"hour {FIRST_HOUR:%H:00} (12 rows, 1 malformed)")
    second = FIRST_HOUR + timedelta(hours=1)
    steps.run(query, second, f"hour {second:%H:00} (8 rows)")

    import requests

    requests.delete(f"{services.receiver.url}/inspect", timeout=10).raise_for_status()
    cdc = load_dag(setup_log, CDC_DAG_ID)
    hours = iter(FIRST_HOUR + timedelta(hours=10 + i) for i in range(10))
    print(f"running {CDC_DAG_ID} (binlog CDC), receiver emptied first:")
    steps.run(
        cdc, next(hours), "initial snapshot (records the start position)", initial_snapshot=True
    )
    with mariadb.connect(DATABASE) as conn, conn.cursor() as cur:
        insert_mysql_rows(
            conn, [change_row(f"NEW-{i:03d}", 1, 100 + i, "roads") for i in range(10)]
        )
        for status in (2, 3, 4):  # three updates each: only the newest version is sent
            cur.execute(
                "UPDATE service_requests SET status_id = %s, "
                "last_modified_date = UTC_TIMESTAMP(6) "
                "WHERE request_id IN ('NEW-000', 'Q-000')",
                (str(status),),
            )
        cur.execute("DELETE FROM service_requests WHERE request_id IN ('Q-001', 'NEW-009')")
    steps.run(
        cdc, next(hours), "10 inserts, 6 updates of 2 requests, 2 deletes", initial_snapshot=False
    )
    with mariadb.connect(DATABASE) as open_txn:
        open_txn.begin()
        insert_mysql_rows(open_txn, [change_row(f"LATE-{i}", 1, 130) for i in range(3)])
        steps.run(cdc, next(hours), "3 inserts in a transaction still open", initial_snapshot=False)
        open_txn.commit()
    steps.run(cdc, next(hours), "the same transaction, now committed", initial_snapshot=False)

    status = report(services, mariadb, steps)
    logs = f"{show_path(workdir)}/airflow-mysql-run-*.log"
    stops = "MariaDB, PostgreSQL and the receiver"
    return conclude(status, logs, started, keep=args.keep, stops=stops)


def report(services: Services, mariadb: Any, steps: RunSteps) -> int:
    """Compare the receiver with the table; print the saved position; 0 when all is well."""
    import psycopg

    table = mariadb.execute(
        "SELECT service_id, request_id, opening_date, status_id, last_modified_date "
        "FROM service_requests",
        database=DATABASE,
    )
    with psycopg.connect(services.dsn) as conn:
        saved = conn.execute(
            "SELECT w.upto_lsn::text, w.upto_gtid FROM services_sync.cdc_windows AS w "
            "WHERE w.status = 'acknowledged' ORDER BY w.upto_lsn DESC LIMIT 1"
        ).fetchone()
    matches = compare_with_receiver(table, services.receiver.url)
    if saved is not None:
        from services_sync.mysql.binlog import BinlogPosition

        print(f"position     saved at {BinlogPosition.from_lsn(saved[0])}, GTID {saved[1]}")
    return 0 if steps.ok and matches else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the MySQL demo; return the exit status (see the module docstring)."""
    return run_change_demo(_run, argv, prog="python -m devkit.demo.mysql", description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())
