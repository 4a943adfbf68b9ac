"""CDC demo: the real ``services_requests_cdc`` DAG streams changes from the log to the receiver.

Run it with ``make demo-cdc`` or ``python -m devkit.demo.cdc [--keep] [--workdir DIR]``. It
sets up like ``make demo`` (same workspace rules, embedded PostgreSQL with
``wal_level=logical`` or ``SOURCE_DB_URL``, reference receiver, SQLite metadata DB; see
:mod:`devkit.demo.query`), then runs the DAG four times with ``dag.test()``:

1. **snapshot**: rows that existed before the slot are sent once with ``initial_snapshot``;
2. **changes**: inserts, updates (several per request: only the newest is sent), deletes
   (sent as ``status_id = -1``, policy ``SERVICES_SYNC_CDC_DELETES=status``) and a malformed
   row (quarantined);
3. **open transaction**: a transaction still open when the run captures is not in its window…
4. **…committed**: …and the next run delivers it.

It then compares the receiver's state with the table (every row identical, every deleted
request flagged) and shows the slot's position and retained WAL. Exit status: 0 when every run
succeeded and the states match, 1 otherwise, 2 if the demo could not be set up, 130 when
interrupted. On ``SOURCE_DB_URL`` the demo drops the slot and publication it created.
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

DAG_ID = "services_requests_cdc"
SLOT = "services_sync_demo"
PUBLICATION = "services_sync_demo_pub"
DESCRIPTION = (
    "Run the services_requests_cdc DAG against a throwaway PostgreSQL "
    "(wal_level=logical) and the reference receiver, and show what arrived."
)


def seed_existing(conn: Any) -> int:
    """The table before CDC starts: rows only an initial snapshot can send."""
    from devkit.seed import create_source_table, insert_rows

    create_source_table(conn)
    # Deletes carry the whole old row only under REPLICA IDENTITY FULL (the tombstone needs
    # its opening_date), and UPDATE/DELETE of a published table need some replica identity.
    conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
    return insert_rows(conn, [change_row(f"SNAP-{i:03d}", 1 + i % 3, i) for i in range(12)])


def write_changes(conn: Any) -> str:
    """Inserts, repeated updates, deletes and one malformed row; returns a description."""
    from devkit.seed import insert_rows

    insert_rows(conn, [change_row(f"NEW-{i:03d}", 1, 30 + i, "roads") for i in range(20)])
    for status in (2, 3, 4):  # three updates each: only the newest version is sent
        conn.execute(
            "UPDATE service_requests SET status_id = %s, last_modified_date = now() "
            "WHERE request_id IN ('NEW-000', 'NEW-001', 'SNAP-000')",
            (str(status),),
        )
    conn.execute("DELETE FROM service_requests WHERE request_id IN ('SNAP-001', 'NEW-019')")
    insert_rows(conn, [change_row("BAD-STATUS", "open", 55)])
    return "20 inserts, 9 updates of 3 requests, 2 deletes, 1 malformed row"


def _run(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    """Set up, stream four runs of changes, compare; what it starts stops with ``cleanup``."""
    started = time.monotonic()
    workdir = start_demo(args.workdir)
    os.environ.update(
        {
            "SERVICES_SYNC_CDC_SLOT": SLOT,
            "SERVICES_SYNC_CDC_PUBLICATION": PUBLICATION,
            **DELETES_AS_STATUS,
        }
    )
    services = Services(workdir)
    cleanup.callback(services.stop)
    cleanup.callback(_drop_slot_on_external_db, services)
    print(f"services-sync CDC demo, workspace {show_path(workdir)}/")
    services.start_source_db()
    print(f"source DB    {'SOURCE_DB_URL' if services.external else 'embedded PostgreSQL'}")
    import psycopg

    with psycopg.connect(services.dsn, autocommit=True) as conn:
        existing = seed_existing(conn)
    print(f"seeded       {existing} rows before CDC starts (only a snapshot has them)")
    services.start_receiver()
    setup_log = workdir / "airflow-setup.log"
    migrate_airflow_db(setup_log)
    dag = load_dag(setup_log, DAG_ID)

    steps = RunSteps(
        workdir, "airflow-cdc-run", services.dsn, {"batch_size": 10, "initial_snapshot": False}
    )
    hour = iter(FIRST_HOUR + timedelta(hours=i) for i in range(10))
    print(f"running {DAG_ID} with dag.test():")
    steps.run(
        dag, next(hour), "initial snapshot (sets up publication + slot)", initial_snapshot=True
    )
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        what = write_changes(conn)
    steps.run(dag, next(hour), what[:46])
    with psycopg.connect(services.dsn, autocommit=True) as open_txn:
        open_txn.execute("BEGIN")
        from devkit.seed import insert_rows

        insert_rows(open_txn, [change_row(f"LATE-{i}", 1, 58) for i in range(3)])
        steps.run(dag, next(hour), "3 inserts in a transaction still open")
        open_txn.execute("COMMIT")
    steps.run(dag, next(hour), "the same transaction, now committed")

    status = report(services, steps)
    logs = f"{show_path(workdir)}/airflow-cdc-run-*.log"
    return conclude(status, logs, started, keep=args.keep, stops="PostgreSQL and the receiver")


def report(services: Services, steps: RunSteps) -> int:
    """Compare the receiver with the table; print the slot; return 0 when all is well."""
    import psycopg

    with psycopg.connect(services.dsn) as conn:
        table = conn.execute(
            "SELECT service_id, request_id, opening_date, status_id, last_modified_date "
            "FROM service_requests"
        ).fetchall()
        slot = conn.execute(
            "SELECT confirmed_flush_lsn::text, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (SLOT,),
        ).fetchone()
    matches = compare_with_receiver(table, services.receiver.url)
    if slot is not None:
        print(f"slot         {SLOT} acknowledged up to {slot[0]}, retains {slot[1] / 1024:.0f} KiB")
    return 0 if steps.ok and matches else 1


def _drop_slot_on_external_db(services: Services) -> None:
    """On ``SOURCE_DB_URL``, drop the slot and publication the demo created (they keep WAL).

    The embedded cluster takes them along when it is deleted.
    """
    if not services.external or not services.dsn:
        return
    import psycopg

    with contextlib.suppress(Exception), psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (SLOT,),
        )
        conn.execute(f"DROP PUBLICATION IF EXISTS {PUBLICATION}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CDC demo; return the exit status (see the module docstring)."""
    return run_change_demo(_run, argv, prog="python -m devkit.demo.cdc", description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())
