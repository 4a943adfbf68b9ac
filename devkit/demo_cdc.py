"""CDC demo: the real ``services_requests_cdc`` DAG streams changes from the log to the receiver.

Run it with ``make demo-cdc`` or ``python -m devkit.demo_cdc [--keep] [--workdir DIR]``. It
sets up like ``make demo`` (same workspace rules, embedded PostgreSQL with
``wal_level=logical`` or ``SOURCE_DB_URL``, reference receiver, SQLite metadata DB; see
:mod:`devkit.demo`), then runs the DAG four times with ``dag.test()``:

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
import signal
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from devkit.demo import (
    DEFAULT_WORKDIR,
    FIRST_HOUR,
    DemoError,
    Services,
    conclude,
    configure_environment,
    load_dag,
    migrate_airflow_db,
    prepare_workspace,
    raise_keyboard_interrupt,
    run_hour,
    show_path,
)

DAG_ID = "services_requests_cdc"
SLOT = "services_sync_demo"
PUBLICATION = "services_sync_demo_pub"
DELETED_STATUS = -1

_OPENED = FIRST_HOUR - timedelta(days=2)


def _row(rid: str, status: Any, minute: int, service: str = "water") -> tuple:
    return (service, rid, _OPENED, str(status), FIRST_HOUR + timedelta(minutes=minute))


def seed_existing(conn: Any) -> int:
    """The table before CDC starts: rows only an initial snapshot can send."""
    from devkit.seed import create_source_table, insert_rows

    create_source_table(conn)
    # Deletes carry the whole old row only under REPLICA IDENTITY FULL (the tombstone needs
    # its opening_date), and UPDATE/DELETE of a published table need some replica identity.
    conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
    return insert_rows(conn, [_row(f"SNAP-{i:03d}", 1 + i % 3, i) for i in range(12)])


def write_changes(conn: Any) -> str:
    """Inserts, repeated updates, deletes and one malformed row; returns a description."""
    from devkit.seed import insert_rows

    insert_rows(conn, [_row(f"NEW-{i:03d}", 1, 30 + i, "roads") for i in range(20)])
    for status in (2, 3, 4):  # three updates each: only the newest version is sent
        conn.execute(
            "UPDATE service_requests SET status_id = %s, last_modified_date = now() "
            "WHERE request_id IN ('NEW-000', 'NEW-001', 'SNAP-000')",
            (str(status),),
        )
    conn.execute("DELETE FROM service_requests WHERE request_id IN ('SNAP-001', 'NEW-019')")
    insert_rows(conn, [_row("BAD-STATUS", "open", 55)])
    return "20 inserts, 9 updates of 3 requests, 2 deletes, 1 malformed row"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CDC demo; return the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m devkit.demo_cdc",
        description="Run the services_requests_cdc DAG against a throwaway PostgreSQL "
        "(wal_level=logical) and the reference receiver, and show what arrived.",
    )
    parser.add_argument("--keep", action="store_true", help="keep the services up until Ctrl-C")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="wiped on start")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    started = time.monotonic()
    services: Services | None = None
    try:
        workdir = prepare_workspace(args.workdir)
        configure_environment(workdir, FIRST_HOUR)
        os.environ.update(
            {
                "SERVICES_SYNC_CDC_SLOT": SLOT,
                "SERVICES_SYNC_CDC_PUBLICATION": PUBLICATION,
                "SERVICES_SYNC_CDC_DELETES": "status",
                "SERVICES_SYNC_CDC_DELETED_STATUS_ID": str(DELETED_STATUS),
            }
        )
        services = Services(workdir)
        print(f"services-sync CDC demo, workspace {show_path(workdir)}/")
        services.start_source_db()
        print(f"source DB    {'SOURCE_DB_URL' if services.external else 'embedded PostgreSQL'}")
        import psycopg

        with psycopg.connect(services.dsn, autocommit=True) as conn:
            existing = seed_existing(conn)
        print(f"seeded       {existing} rows before CDC starts (only a snapshot has them)")
        services.start_receiver()
        print(f"receiver     {services.receiver.url}")
        os.environ.update(services.connection_env())
        setup_log = workdir / "airflow-setup.log"
        migrate_airflow_db(setup_log)
        dag = load_dag(setup_log, DAG_ID)

        runs = []
        hour = iter(FIRST_HOUR + timedelta(hours=i) for i in range(10))

        def step(title: str, **conf: Any) -> None:
            start = next(hour)
            log_path = workdir / f"airflow-cdc-run-{len(runs) + 1}.log"
            params = {"batch_size": 10, "initial_snapshot": False, **conf}
            result = run_hour(dag, start, log_path, params)
            runs.append(result)
            sent = _sent(services.dsn, result.run_id) if result.run_id else (0, 0, 0)
            print(
                f"  run {len(runs)}  {title:<46} {result.state:<8} {sent[0]:>3} records in "
                f"{sent[1]} batch(es), {sent[2]} quarantined ({result.seconds:.1f} s)"
            )
            if not result.ok:
                print(f"      {result.error or 'the run failed'}; log: {show_path(log_path)}")

        print(f"running {DAG_ID} with dag.test():")
        step("initial snapshot (sets up publication + slot)", initial_snapshot=True)
        with psycopg.connect(services.dsn, autocommit=True) as conn:
            what = write_changes(conn)
        step(what[:46])
        with psycopg.connect(services.dsn, autocommit=True) as open_txn:
            open_txn.execute("BEGIN")
            from devkit.seed import insert_rows

            insert_rows(open_txn, [_row(f"LATE-{i}", 1, 58) for i in range(3)])
            step("3 inserts in a transaction still open")
            open_txn.execute("COMMIT")
        step("the same transaction, now committed")

        status = report(services, runs)
        logs = f"{show_path(workdir)}/airflow-cdc-run-*.log"
        return conclude(status, logs, started, keep=args.keep, stops="PostgreSQL and the receiver")
    except DemoError as exc:
        print(f"\ndemo could not run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if services is not None:
            if services.external and services.dsn:
                _drop_slot(services.dsn)
            services.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _sent(dsn: str, run_id: str) -> tuple[int, int, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(accepted), 0), count(*) FILTER (WHERE rows_sent > 0), "
            "coalesce(sum(rows_quarantined), 0) FROM services_sync.delivery_ledger "
            "WHERE dag_id = %s AND run_id = %s",
            (DAG_ID, run_id),
        ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def report(services: Services, runs: Sequence[Any]) -> int:
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
    return 0 if all(r.ok for r in runs) and matches else 1


def compare_with_receiver(table: Sequence[Sequence[Any]], url: str, deleted: int = 2) -> bool:
    """Print the receiver's state next to the table's; True when they match.

    Every valid row must be at the receiver as it is in the table, and the receiver may hold
    nothing else but the ``deleted`` requests flagged with ``DELETED_STATUS``.
    """
    import requests

    from services_sync.core.transform import transform_rows

    expected = {(r["service_id"], r["request_id"]): r for r in transform_rows(table).records}
    received = {
        (r["service_id"], r["request_id"]): {k: v for k, v in r.items() if k != "idempotency_key"}
        for r in requests.get(f"{url}/inspect/state", timeout=10).json()
    }
    stats = requests.get(f"{url}/inspect/stats", timeout=10).json()
    flagged = {k for k, r in received.items() if r["status_id"] == DELETED_STATUS}
    missing = [k for k, r in expected.items() if received.get(k) != r]
    extra = [k for k in received if k not in expected and k not in flagged]
    print()
    print(
        f"receiver     {len(received)} requests ({len(flagged)} flagged deleted), "
        f"{stats['records']} records in {stats['batches']} batches, "
        f"{stats['duplicates']} duplicate batches"
    )
    print(
        f"table        {len(table)} rows, {len(expected)} valid: "
        f"{len(expected) - len(missing)} identical at the receiver"
    )
    if missing or extra:
        print(f"MISMATCH: missing/different {missing[:5]}, unexpected {extra[:5]}")
    return not missing and not extra and len(flagged) == deleted


def _drop_slot(dsn: str) -> None:
    import psycopg

    with contextlib.suppress(Exception), psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (SLOT,),
        )
        conn.execute(f"DROP PUBLICATION IF EXISTS {PUBLICATION}")


if __name__ == "__main__":
    sys.exit(main())
