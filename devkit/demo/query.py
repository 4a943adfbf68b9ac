"""End-to-end demo: the real DAG moves three hours of changes from PostgreSQL to the receiver.

Run it with ``make demo`` or ``python -m devkit.demo [--hours N] [--keep] [--workdir DIR]``.
Nothing needs to run beforehand; on a fresh machine the demo:

1. wipes and recreates its private workspace (default ``.demo/`` in the repository, gitignored)
   and points Airflow at it: ``AIRFLOW_HOME`` with a SQLite metadata DB, the repository's
   ``dags/`` and ``plugins/`` folders, no example DAGs. Inherited ``AIRFLOW__*``,
   ``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*`` and ``AIRFLOW_CONFIG`` variables are dropped first,
   so a shell set up for a real Airflow cannot leak into the demo (nor the demo migrate its
   metadata DB), and so are the ``SERVICES_SYNC_*`` settings naming connections, schema,
   endpoint and start date. The DAG's other settings are inherited:
   ``SERVICES_SYNC_BATCH_SIZE=10 make demo`` shows several batches per hour;
2. starts a throwaway PostgreSQL cluster from the bundled binaries (``.demo/pg``) with a
   database ``services``, or uses ``SOURCE_DB_URL`` if set (see below);
3. seeds ``service_requests`` with :func:`devkit.seed.demo_changes` for ``N`` hours (default 3,
   or ``DEMO_HOURS``) from the fixed hour :data:`~devkit.demo.services.FIRST_HOUR`, so every
   demo shows the same data, including three malformed legacy rows the pipeline must quarantine;
4. starts the reference receiver (:class:`devkit.receiver.ReceiverServer`) on a free loopback
   port and defines the connections ``services_source_db`` and ``services_api`` as
   ``AIRFLOW_CONN_*`` environment variables;
5. runs ``airflow db migrate`` and then the DAG once per hour with ``dag.test()``, in this
   process, like the end-to-end tests do. Airflow's own output goes to
   ``.demo/airflow-run-<hour>.log`` (``.demo/airflow-setup.log`` for the migration and the DAG
   import), so the terminal shows only the demo's lines;
6. prints, per interval, what the DAG's state tables say (rows extracted, batches, rows sent,
   rows acknowledged, rows quarantined) next to what the receiver actually holds, the
   quarantined rows with their reasons, the receiver's totals and one delivered record;
7. cleans up in all cases, Ctrl-C and SIGTERM included: stops the receiver, stops the embedded
   cluster and deletes its data (``.demo/`` keeps the logs, including ``postgres.log``).

Setup, exit statuses and cleanup are :mod:`devkit.demo.services`'s, the runs
:mod:`devkit.demo.airflow_runs`'s, the report :mod:`devkit.demo.report`'s.

The exit status is honest: 0 only if every run succeeded and, for every interval, the rows
sent, the rows acknowledged and the records at the receiver agree; 1 otherwise; 2 if the demo
could not be set up; 130 when interrupted.

``--keep`` leaves PostgreSQL and the receiver up after the report (they live in this process,
so it stays in the foreground) and prints their URLs; Ctrl-C then stops and cleans up.

``SOURCE_DB_URL`` (a ``postgresql://`` URL) makes the demo use an existing database instead of
the embedded cluster. The demo then refuses to run if ``service_requests`` already holds rows
(set ``DEMO_FORCE=1`` to insert anyway), creates the table if it is missing, and writes
nothing else there but the demo rows; the DAG, as in production, creates and fills its state
tables in schema ``services_sync``. The demo never deletes, updates or drops anything in that
database, and never stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from devkit.demo.airflow_runs import load_dag, migrate_airflow_db, run_hour
from devkit.demo.report import collect_report, print_report
from devkit.demo.services import (
    DAG_ID,
    DEFAULT_WORKDIR,
    FIRST_HOUR,
    Services,
    run_demo,
    seed_source,
    start_demo,
)
from devkit.terminal import MAX_HOURS, hours_option, redact, show_path

DEFAULT_HOURS = 3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        The parsed options: ``hours``, ``keep`` and ``workdir``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m devkit.demo",
        description="Run the services_requests_sync DAG end to end against a throwaway "
        "PostgreSQL and the reference receiver, and show what arrived.",
    )
    parser.add_argument(
        "--hours",
        type=hours_option,
        default=None,
        help=f"hours of changes to send, one DAG run each (default: $DEMO_HOURS or "
        f"{DEFAULT_HOURS}; at most {MAX_HOURS})",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave PostgreSQL and the receiver running after the report, until Ctrl-C",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="workspace, wiped on start (default: .demo/ in the repository)",
    )
    args = parser.parse_args(argv)
    if args.hours is None:
        try:
            args.hours = hours_option(
                os.environ.get("DEMO_HOURS", "").strip() or str(DEFAULT_HOURS)
            )
        except argparse.ArgumentTypeError as exc:
            parser.error(f"DEMO_HOURS: {exc}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo.

    Args:
        argv: Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns:
        0 if every run succeeded and every interval matches, 1 if not, 2 if the demo could not
        be set up, 130 if interrupted.
    """
    args = parse_args(argv)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    return run_demo(lambda cleanup: _run(args, cleanup))


def _run(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    """Set up, run the DAG once per hour, report; what it starts stops with ``cleanup``."""
    started = time.monotonic()
    first_hour = FIRST_HOUR
    hours = [first_hour + timedelta(hours=i) for i in range(args.hours)]
    workdir = start_demo(args.workdir, first_hour)
    services = Services(workdir)
    cleanup.callback(services.stop)
    print(
        f"services-sync demo: {args.hours} hourly interval(s) from "
        f"{first_hour:%Y-%m-%dT%H:%MZ}, workspace {show_path(workdir)}/"
    )
    services.start_source_db()
    if services.external:
        print(f"source DB    SOURCE_DB_URL {redact(services.dsn)}")
    else:
        print(f"source DB    embedded PostgreSQL on {services.dsn}")
    inserted, malformed = seed_source(
        services.dsn, first_hour, args.hours, external=services.external
    )
    print(
        f"seeded       {inserted} changed rows into service_requests "
        f"({malformed} malformed on purpose)"
    )
    services.start_receiver()

    setup_log = workdir / "airflow-setup.log"
    migrate_airflow_db(setup_log)
    print("loading the DAG… ", end="", flush=True)
    loading = time.monotonic()
    dag = load_dag(setup_log)
    print(f"done ({time.monotonic() - loading:.1f} s)")

    print(f"running {DAG_ID} with dag.test(), one run per hour:")
    runs = []
    for start in hours:
        log_path = workdir / f"airflow-run-{start:%Y-%m-%dT%H%MZ}.log"
        print(
            f"  {start:%Y-%m-%dT%H:%MZ} → {start + timedelta(hours=1):%H:%MZ}  ",
            end="",
            flush=True,
        )
        result = run_hour(dag, start, log_path)
        runs.append(result)
        print(f"{result.state:<8} ({result.seconds:.1f} s)")
        if not result.ok:
            print(f"      {result.problem}")

    report = collect_report(services.dsn, services.receiver.url, runs)
    print_report(report)

    failed = [r for r in runs if not r.ok]
    mismatched = [line for line in report.intervals if not line.match]
    print()
    if failed or mismatched:
        print(
            f"DEMO FAILED: {len(failed)} failed run(s), {len(mismatched)} interval(s) "
            f"that do not match. Logs in {show_path(workdir)}/"
        )
        status = 1
    else:
        print(
            f"demo OK in {time.monotonic() - started:.0f} s: every interval sent, "
            f"acknowledged and received the same rows. Airflow logs: "
            f"{show_path(workdir)}/airflow-run-*.log"
        )
        status = 0
    if args.keep:
        with contextlib.suppress(KeyboardInterrupt):
            _keep_running(services)
        print("\nstopping PostgreSQL and the receiver")
    return status


def _keep_running(services: Services) -> None:
    """Print how to reach the running services, then wait for Ctrl-C."""
    print()
    print("--keep: PostgreSQL and the receiver stay up until you press Ctrl-C:")
    if services.cluster is not None:
        psql = Path(services.cluster.bin_dir) / "psql"
        print(f"  source DB  {services.dsn}")
        print(f"             {psql} {services.dsn}")
    print(f"  receiver   {services.receiver.url}/inspect/stats")
    print(
        f"             also /inspect/batches, /inspect/requests, /inspect/state, "
        f"POST {services.receiver.url}/services-data/requests"
    )
    print(f"  Airflow    AIRFLOW_HOME={os.environ['AIRFLOW_HOME']}")
    print("Press Ctrl-C (or send SIGTERM) to stop them; the embedded cluster's data is removed.")
    sys.stdout.flush()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
