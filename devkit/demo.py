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
   or ``DEMO_HOURS``) from the fixed hour :data:`FIRST_HOUR`, so every demo shows the same data,
   including three malformed legacy rows the pipeline must quarantine;
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
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
"""The repository: ``dags/``, ``plugins/`` and ``include/`` live here."""

FIRST_HOUR = datetime(2026, 11, 28, 9, tzinfo=UTC)
"""First demo interval: a fixed past hour, so every demo sends the same rows and keys."""

DEFAULT_HOURS = 3
MAX_HOURS = 48
DEFAULT_WORKDIR = ROOT / ".demo"
DAG_ID = "services_requests_sync"
SOURCE_DATABASE = "services"
STATE_SCHEMA = "services_sync"
SOURCE_CONN_ID = "services_source_db"
API_CONN_ID = "services_api"

_MARKER = ".services-sync-demo"
_HTTP_TIMEOUT = 10
_INHERITED_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")
_INHERITED_NAMES = (
    "AIRFLOW_HOME",
    "AIRFLOW_CONFIG",
    # Settings that say where the DAG reads, writes and sends; the demo sets its own. The
    # others (batch size, retries, timeouts) are inherited, e.g. SERVICES_SYNC_BATCH_SIZE=10.
    "SERVICES_SYNC_START_DATE",
    "SERVICES_SYNC_SOURCE_CONN_ID",
    "SERVICES_SYNC_API_CONN_ID",
    "SERVICES_SYNC_STATE_CONN_ID",
    "SERVICES_SYNC_STATE_SCHEMA",
    "SERVICES_SYNC_ENDPOINT",
    "SERVICES_SYNC_SQL_DIR",
)


class DemoError(Exception):
    """The demo cannot be set up; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Workspace and environment
# --------------------------------------------------------------------------------------------


def prepare_workspace(workdir: Path) -> Path:
    """Wipe and recreate the demo workspace.

    A directory is only wiped if it is the default ``.demo/``, is empty, or carries the marker
    file an earlier demo left there, so ``--workdir ~`` cannot delete a home directory.

    Args:
        workdir: The workspace directory.

    Returns:
        The absolute workspace path.

    Raises:
        DemoError: If the directory exists, is not empty and is not a demo workspace.
    """
    workdir = workdir.resolve()
    if workdir.exists():
        if not workdir.is_dir():
            raise DemoError(f"--workdir {workdir} exists and is not a directory")
        is_demo = workdir == DEFAULT_WORKDIR or (workdir / _MARKER).exists()
        if not is_demo and any(workdir.iterdir()):
            raise DemoError(
                f"--workdir {workdir} is not empty and was not made by the demo; "
                "pick another directory (the demo wipes its workspace on every start)"
            )
        stop_stale_postgres(workdir / "pg" / "data")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / _MARKER).write_text("Workspace of python -m devkit.demo; wiped on every run.\n")
    return workdir


def stop_stale_postgres(data_dir: Path) -> None:
    """Stop a cluster an interrupted run left running in ``data_dir`` (killed with SIGKILL)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if _process_name(pid) != "postgres":
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown
    deadline = time.monotonic() + 10
    while _process_name(pid) == "postgres" and time.monotonic() < deadline:
        time.sleep(0.1)


def _process_name(pid: int) -> str | None:
    """The command name of a running process, or None if there is none."""
    proc = Path(f"/proc/{pid}/comm")
    if Path("/proc").is_dir():
        try:
            return proc.read_text().strip()
        except OSError:
            return None
    result = subprocess.run(
        ["ps", "-o", "comm=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    name = result.stdout.strip()
    return Path(name).name if result.returncode == 0 and name else None


def configure_environment(workdir: Path, first_hour: datetime) -> None:
    """Point Airflow and the DAG at the workspace; must run before anything imports airflow.

    Args:
        workdir: The demo workspace.
        first_hour: Start of the first demo interval, used as the DAG's start date (Airflow
            creates no task instances for runs before it).
    """
    if "airflow" in sys.modules:  # pragma: no cover - a programming error, not a user error
        raise RuntimeError("configure_environment() must run before airflow is imported")
    for name in list(os.environ):
        if name.startswith(_INHERITED_PREFIXES) or name in _INHERITED_NAMES:
            del os.environ[name]
    airflow_home = workdir / "airflow"
    airflow_home.mkdir()
    # XDG_RUNTIME_DIR must be private (0700) or platformdirs warns and falls back to /tmp; the
    # workspace itself cannot be, because as root PostgreSQL runs as another user below it.
    runtime_dir = workdir / "run"
    runtime_dir.mkdir(mode=0o700)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
            "XDG_RUNTIME_DIR": str(runtime_dir),
            "SERVICES_SYNC_START_DATE": first_hour.isoformat(),
            "SERVICES_SYNC_SOURCE_CONN_ID": SOURCE_CONN_ID,
            "SERVICES_SYNC_API_CONN_ID": API_CONN_ID,
            "SERVICES_SYNC_STATE_CONN_ID": SOURCE_CONN_ID,
            "SERVICES_SYNC_STATE_SCHEMA": STATE_SCHEMA,
        }
    )
    for path in (str(ROOT / "plugins"), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)


@contextlib.contextmanager
def redirect_output(log_path: Path) -> Iterator[None]:
    """Send everything written to file descriptors 1 and 2 to ``log_path`` for a while.

    Works at the descriptor level, so it also catches handlers that hold their own reference to
    the original stdout/stderr (Airflow's logging, structlog, warnings, child processes).

    Args:
        log_path: File to append to.

    Yields:
        Nothing; output is restored when the block exits, also on an exception.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with log_path.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: unwind like Ctrl-C so the ``finally`` blocks clean up."""
    raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# What the demo starts: source database, receiver
# --------------------------------------------------------------------------------------------


@dataclass
class Services:
    """What the demo started, so it can be stopped (and only that).

    Attributes:
        workdir: The demo workspace.
        dsn: URL of the source database.
        external: True when the source database comes from ``SOURCE_DB_URL``.
        cluster: The embedded PostgreSQL cluster, if the demo started one.
        receiver: The reference receiver, once started.
    """

    workdir: Path
    dsn: str = ""
    external: bool = False
    cluster: Any = None
    receiver: Any = None

    def start_source_db(self) -> None:
        """Use ``SOURCE_DB_URL`` if set, else start the embedded cluster with database services.

        Raises:
            DemoError: If ``SOURCE_DB_URL`` is not a PostgreSQL URL or the cluster fails to start.
        """
        url = os.environ.get("SOURCE_DB_URL", "").strip()
        if url:
            if urlsplit(url).scheme not in {"postgresql", "postgres"}:
                raise DemoError(
                    "SOURCE_DB_URL must be a URL like postgresql://user:password@host:5432/db "
                    f"(got scheme {urlsplit(url).scheme or 'none'!r})"
                )
            self.dsn, self.external = url, True
            return
        from devkit.pgcluster import PostgresCluster

        pg_dir = self.workdir / "pg"
        pg_dir.mkdir(exist_ok=True)
        self.cluster = PostgresCluster(base_dir=pg_dir)
        try:
            self.cluster.start()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            raise DemoError(f"the embedded PostgreSQL did not start: {exc}") from None
        self.dsn = self.cluster.create_database(SOURCE_DATABASE)

    def start_receiver(self) -> None:
        """Start the reference receiver on a free loopback port."""
        from devkit.receiver import ReceiverServer

        self.receiver = ReceiverServer(host="127.0.0.1").start()

    def connection_env(self) -> dict[str, str]:
        """The ``AIRFLOW_CONN_*`` variables of the source database and the receiver."""
        return {
            f"AIRFLOW_CONN_{SOURCE_CONN_ID.upper()}": self.dsn,
            f"AIRFLOW_CONN_{API_CONN_ID.upper()}": json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": self.receiver.port,
                    "schema": "http",
                }
            ),
        }

    def stop(self) -> None:
        """Stop the receiver and the embedded cluster; keep its log, delete its data."""
        if self.receiver is not None:
            with contextlib.suppress(Exception):
                self.receiver.stop()
            self.receiver = None
        if self.cluster is not None:
            pg_dir = Path(self.cluster.base_dir)
            with contextlib.suppress(Exception):
                self.cluster.stop()
            with contextlib.suppress(OSError):
                shutil.move(pg_dir / "postgres.log", self.workdir / "postgres.log")
            shutil.rmtree(pg_dir, ignore_errors=True)
            self.cluster = None


# --------------------------------------------------------------------------------------------
# Seed, migrate, run
# --------------------------------------------------------------------------------------------


def seed_source(dsn: str, first_hour: datetime, hours: int, *, external: bool) -> tuple[int, int]:
    """Create ``service_requests`` if needed and insert the demo changes.

    Args:
        dsn: URL of the source database.
        first_hour: Start of the first demo interval.
        hours: How many hours of changes to insert.
        external: Whether the database is the user's (``SOURCE_DB_URL``): then refuse to add
            to a table that already has rows, unless ``DEMO_FORCE=1``.

    Returns:
        ``(rows inserted, how many of them break the API contract on purpose)``.

    Raises:
        DemoError: If the table already has rows in an external database, or the insert fails.
    """
    import psycopg

    from devkit.seed import create_source_table, demo_changes, insert_rows
    from services_sync.core.transform import transform_rows

    rows = demo_changes(first_hour, hours)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            if external:
                exists = conn.execute("SELECT to_regclass('service_requests')").fetchone()
                count = 0
                if exists and exists[0]:
                    count = conn.execute("SELECT count(*) FROM service_requests").fetchone()[0]
                if count and os.environ.get("DEMO_FORCE") != "1":
                    raise DemoError(
                        f"service_requests in SOURCE_DB_URL already holds {count} rows; the "
                        "demo only adds to an empty table. Set DEMO_FORCE=1 to insert the demo "
                        "rows anyway, or unset SOURCE_DB_URL to use the embedded PostgreSQL."
                    )
                print(
                    f"WARNING: SOURCE_DB_URL is set: inserting {len(rows)} demo rows into its "
                    f"service_requests; the DAG writes its state to schema {STATE_SCHEMA} there. "
                    "Nothing is deleted.",
                    flush=True,
                )
            create_source_table(conn)
            with conn.transaction():
                inserted = insert_rows(conn, rows)
    except psycopg.Error as exc:
        raise DemoError(f"could not seed the source database: {_first_line(exc)}") from None
    return inserted, len(transform_rows(rows).rejected)


def migrate_airflow_db(log_path: Path) -> None:
    """Create the SQLite metadata database with ``airflow db migrate``.

    Args:
        log_path: Where the command's output goes.

    Raises:
        DemoError: If the migration fails.
    """
    print("migrating Airflow metadata DB… ", end="", flush=True)
    started = time.monotonic()
    with log_path.open("ab") as log:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            check=False,
        )
    if result.returncode != 0:
        print("failed")
        raise DemoError(f"airflow db migrate exited {result.returncode}; see {show_path(log_path)}")
    print(f"done ({time.monotonic() - started:.1f} s)")


def load_dag(log_path: Path, dag_id: str = DAG_ID) -> Any:
    """Import the DAG the way Airflow does (``DagBag``), with Airflow's output in ``log_path``.

    Args:
        log_path: Where Airflow's import-time output goes.
        dag_id: The DAG to return.

    Returns:
        The DAG (default ``services_requests_sync``).

    Raises:
        DemoError: If the DAG folder has import errors or lacks the DAG.
    """
    with redirect_output(log_path):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        errors = "\n".join(f"{path}: {err}" for path, err in bag.import_errors.items())
        raise DemoError(f"the DAG folder has import errors:\n{errors}")
    if dag_id not in bag.dags:
        raise DemoError(f"no DAG {dag_id} in {ROOT / 'dags'}")
    return bag.dags[dag_id]


@dataclass
class RunResult:
    """How one hourly run went.

    Attributes:
        start: Start of the data interval.
        state: The DAG run's final state (``success``, ``failed``) or ``error``.
        log_path: File with Airflow's output of this run.
        seconds: Wall time of the run.
        run_id: The DAG run id (None if ``dag.test()`` raised).
        error: What went wrong outside the tasks, if anything.
    """

    start: datetime
    state: str
    log_path: Path
    seconds: float
    run_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.state == "success"


def run_hour(
    dag: Any, start: datetime, log_path: Path, conf: dict[str, Any] | None = None
) -> RunResult:
    """Run the DAG for the interval ``[start, start + 1h)`` with ``dag.test()``.

    A manual run's data interval is the hour before its logical date, so the logical date is
    the end of the interval.

    Args:
        dag: The DAG.
        start: Start of the interval.
        log_path: Where Airflow's output of the run goes.
        conf: The run's params (every one: ``dag.test()`` keeps an earlier run's conf).

    Returns:
        The outcome; a failure never raises (only Ctrl-C does).
    """
    end = start + timedelta(hours=1)
    started = time.monotonic()
    try:
        with redirect_output(log_path):
            run = dag.test(logical_date=end, run_conf=conf)
    except Exception as exc:
        with log_path.open("a", encoding="utf-8") as log:
            traceback.print_exc(file=log)
        return RunResult(
            start,
            "error",
            log_path,
            time.monotonic() - started,
            error=f"{type(exc).__name__}: {_first_line(exc)}",
        )
    state = str(getattr(run.state, "value", run.state))
    result = RunResult(start, state, log_path, time.monotonic() - started, run_id=run.run_id)
    if (run.data_interval_start, run.data_interval_end) != (start, end):
        result.state = "error"
        result.error = (
            f"the run covered [{run.data_interval_start}, {run.data_interval_end}), "
            f"not [{start}, {end})"
        )
    elif not result.ok:
        with contextlib.suppress(Exception):  # only a nicer message; the log has the details
            failed = [
                ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
                for ti in run.get_task_instances()
                if str(getattr(ti.state, "value", ti.state)) == "failed"
            ]
            if failed:
                result.error = "failed task(s): " + ", ".join(sorted(failed))
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class IntervalReport:
    """One line of the per-interval table.

    Attributes:
        label: The interval, e.g. ``2026-11-28T09:00Z/2026-11-28T10:00Z``.
        run_ok: Whether the DAG run of the interval succeeded.
        extracted: Rows read from the source (None if the run recorded no summary).
        batches: Batches planned.
        sent: Rows in the batches the receiver acknowledged.
        acked: Sum of ``accepted`` over the acknowledged batches of the ledger.
        quarantined: Rows set aside as malformed.
        at_receiver: Records the receiver holds under this interval's idempotency keys.
    """

    label: str
    run_ok: bool
    extracted: int | None = None
    batches: int | None = None
    sent: int | None = None
    acked: int | None = None
    quarantined: int | None = None
    at_receiver: int = 0

    @property
    def match(self) -> bool:
        """Whether the run succeeded and sent, acknowledged and received rows agree."""
        return self.run_ok and self.sent is not None and self.sent == self.acked == self.at_receiver


@dataclass
class Report:
    """Everything the demo prints after the runs.

    Attributes:
        intervals: One entry per demo hour.
        quarantined: ``(interval label, request_id, service_id, reason)`` rows.
        stats: The receiver's ``/inspect/stats``.
        sample: One delivered record and its batch key, if any.
    """

    intervals: list[IntervalReport]
    quarantined: list[tuple[str, str | None, str | None, str]]
    stats: dict[str, int]
    sample: dict[str, Any] | None = field(default=None)


def collect_report(dsn: str, receiver_url: str, runs: Sequence[RunResult]) -> Report:
    """Compare the DAG's state tables (this demo's runs only) with what the receiver holds.

    Args:
        dsn: URL of the source database (which also holds the state tables).
        receiver_url: Base URL of the receiver.
        runs: The demo's runs, one per hour.

    Returns:
        The report.
    """
    import psycopg
    from psycopg import sql

    from services_sync.core.payload import KEY_NAMESPACE, Interval

    labels = {r.start: Interval(r.start, r.start + timedelta(hours=1)).label for r in runs}
    run_ids = [r.run_id for r in runs if r.run_id]
    summaries: dict[datetime, tuple[int, ...]] = {}
    quarantined: list[tuple[str, str | None, str | None, str]] = []
    schema = sql.Identifier(STATE_SCHEMA)
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        try:
            for row in conn.execute(
                sql.SQL(
                    "SELECT r.interval_start, r.rows_extracted, r.batches, r.rows_sent,"
                    " (SELECT coalesce(sum(l.accepted), 0) FROM {s}.delivery_ledger l"
                    "   WHERE l.dag_id = r.dag_id AND l.run_id = r.run_id"
                    "     AND l.acked_at IS NOT NULL),"
                    " r.rows_quarantined"
                    " FROM {s}.delivery_runs r WHERE r.dag_id = %s AND r.run_id = ANY(%s)"
                ).format(s=schema),
                (DAG_ID, run_ids),
            ):
                summaries[row[0]] = tuple(int(v) for v in row[1:])
            for start, request_id, service_id, reason in conn.execute(
                sql.SQL(
                    "SELECT interval_start, row_data->>'request_id', row_data->>'service_id',"
                    " reason FROM {s}.quarantined_requests"
                    " WHERE dag_id = %s AND interval_start = ANY(%s)"
                    " ORDER BY interval_start, row_data->>'request_id' NULLS FIRST"
                ).format(s=schema),
                (DAG_ID, list(labels)),
            ):
                quarantined.append((labels.get(start, str(start)), request_id, service_id, reason))
        except psycopg.errors.UndefinedTable:
            pass  # no run got as far as creating the state tables

    batches = _get_json(f"{receiver_url}/inspect/batches")
    intervals = []
    for run in runs:
        prefix = f"{KEY_NAMESPACE}:{labels[run.start]}:"
        line = IntervalReport(
            labels[run.start],
            run.ok,
            at_receiver=sum(b["count"] for b in batches if b["idempotency_key"].startswith(prefix)),
        )
        if run.start in summaries:
            (line.extracted, line.batches, line.sent, line.acked, line.quarantined) = summaries[
                run.start
            ]
        intervals.append(line)
    sample = None
    if batches and batches[0]["requests"]:
        sample = {"key": batches[0]["idempotency_key"], "record": batches[0]["requests"][0]}
    stats = _get_json(f"{receiver_url}/inspect/stats")
    return Report(intervals, quarantined, stats, sample)


def print_report(report: Report) -> None:
    """Print the per-interval table, the quarantined rows, the receiver totals and a sample.

    Args:
        report: What :func:`collect_report` found.
    """
    ok, bad = ("✓", "✗")
    rows = [
        [
            line.label,
            *(_cell(v) for v in (line.extracted, line.batches, line.sent, line.acked)),
            _cell(line.quarantined),
            str(line.at_receiver),
            ok if line.match else bad,
        ]
        for line in report.intervals
    ]
    headers = [
        "interval",
        "extracted",
        "batches",
        "sent",
        "acked",
        "quarantined",
        "at receiver",
        "match",
    ]
    print()
    print("Per interval: the DAG's state tables vs. the records at the receiver")
    _print_table(headers, rows, right={1, 2, 3, 4, 5, 6})

    print()
    if report.quarantined:
        print(
            f"Quarantined rows ({len(report.quarantined)}, never sent; "
            f"{STATE_SCHEMA}.quarantined_requests):"
        )
        _print_table(
            ["interval", "request_id", "service_id", "reason"],
            [
                [label, rid if rid is not None else "NULL", sid if sid is not None else "NULL", why]
                for label, rid, sid, why in report.quarantined
            ],
        )
    else:
        print("Quarantined rows: none")

    stats = report.stats
    print()
    print(
        f"receiver holds {stats['records']} records in {_plural(stats['batches'], 'batch')}, "
        f"{stats['duplicates']} duplicates ({stats['rejected']} requests rejected)"
    )
    if report.sample:
        print(f"a delivered record (batch {report.sample['key']}):")
        print(json.dumps(report.sample["record"], indent=2))


def _print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: frozenset[int] | set[int] = frozenset(),
) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]

    def fmt(cells: Sequence[str]) -> str:
        parts = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(parts).rstrip()

    print(fmt(headers))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("ch") else "s")


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT) as response:  # noqa: S310 - our URL
        return json.load(response)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def conclude(status: int, logs: str, started: float, *, keep: bool, stops: str) -> int:
    """The end of a demo: where the Airflow logs are, OK or FAILED, and ``--keep``'s wait.

    ``logs``: the log files, as a path pattern to show; ``stops``: what Ctrl-C then stops.
    """
    print(f"\nAirflow logs: {logs}")
    print(f"demo {'OK' if status == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
    if keep:
        print(f"--keep: Ctrl-C stops {stops}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return status


def show_path(path: Path) -> str:
    """A path relative to the current directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _redact(url: str) -> str:
    """A database URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _hours(value: str) -> int:
    try:
        hours = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= hours <= MAX_HOURS:
        raise argparse.ArgumentTypeError(f"{hours} is not between 1 and {MAX_HOURS}")
    return hours


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
        type=_hours,
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
            args.hours = _hours(os.environ.get("DEMO_HOURS", "").strip() or str(DEFAULT_HOURS))
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
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    started = time.monotonic()
    first_hour = FIRST_HOUR
    hours = [first_hour + timedelta(hours=i) for i in range(args.hours)]
    services: Services | None = None
    try:
        workdir = prepare_workspace(args.workdir)
        configure_environment(workdir, first_hour)
        services = Services(workdir)
        print(
            f"services-sync demo: {args.hours} hourly interval(s) from "
            f"{first_hour:%Y-%m-%dT%H:%MZ}, workspace {show_path(workdir)}/"
        )
        services.start_source_db()
        if services.external:
            print(f"source DB    SOURCE_DB_URL {_redact(services.dsn)}")
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
        print(f"receiver     {services.receiver.url}")
        os.environ.update(services.connection_env())

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
                print(f"      {result.error or 'the run failed'}; log: {show_path(log_path)}")

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
    except DemoError as exc:
        print(f"\ndemo could not run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        if services is not None:
            services.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
