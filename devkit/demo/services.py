"""What every demo sets up and tears down: workspace, environment, source database, receiver.

:func:`run_demo` runs a demo's body with the exit statuses and the cleanup all demos share:
what the body starts it registers on the exit stack it is given, and that is stopped in all
cases, Ctrl-C and SIGTERM included. :func:`start_demo` wipes the workspace and points Airflow at
it; :class:`Services` starts the source database and the reference receiver; :func:`conclude`
is the end of a change-stream demo.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devkit.terminal import first_line, raise_keyboard_interrupt
from devkit.workspace import (
    ROOT,
    WHERE_THE_DAG_GOES,
    SetupError,
    add_repository_to_sys_path,
    prepare_workspace,
    start_embedded_postgres,
    stop_started,
    use_private_runtime_dir,
)

FIRST_HOUR = datetime(2026, 11, 28, 9, tzinfo=UTC)
"""First demo interval: a fixed past hour, so every demo sends the same rows and keys."""

DEFAULT_WORKDIR = ROOT / ".demo"
DAG_ID = "services_requests_sync"
SOURCE_DATABASE = "services"
STATE_SCHEMA = "services_sync"
SOURCE_CONN_ID = "services_source_db"
API_CONN_ID = "services_api"

_MARKER = ".services-sync-demo"
_INHERITED_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")
_INHERITED_NAMES = ("AIRFLOW_HOME", "AIRFLOW_CONFIG", *WHERE_THE_DAG_GOES)


def run_demo(body: Callable[[contextlib.ExitStack], int]) -> int:
    """Run a demo's ``body`` with the exit statuses and cleanup every demo shares.

    Args:
        body: The demo. What it starts it registers on the exit stack it gets (e.g.
            ``cleanup.callback(services.stop)``); it returns the demo's exit status.

    Returns:
        What ``body`` returns; 2 if it raised :class:`SetupError`, 130 on Ctrl-C or SIGTERM.
    """
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    cleanup = contextlib.ExitStack()
    try:
        return body(cleanup)
    except SetupError as exc:
        print(f"\ndemo could not run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        cleanup.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)


def start_demo(workdir: Path, first_hour: datetime = FIRST_HOUR) -> Path:
    """Wipe and recreate the demo workspace and point Airflow and the DAG at it.

    Must run before anything imports airflow.

    Args:
        workdir: The demo workspace (wiped: see :func:`devkit.workspace.prepare_workspace`).
        first_hour: Start of the first demo interval, used as the DAG's start date (Airflow
            creates no task instances for runs before it).

    Returns:
        The absolute workspace path.

    Raises:
        SetupError: If ``workdir`` is not the demo's to wipe.
    """
    workdir = prepare_workspace(
        workdir, default=DEFAULT_WORKDIR, marker=_MARKER, option="--workdir", owner="the demo"
    )
    configure_environment(workdir, first_hour)
    return workdir


def configure_environment(workdir: Path, first_hour: datetime) -> None:
    """Point Airflow and the DAG at the workspace; must run before anything imports airflow.

    Args:
        workdir: The demo workspace.
        first_hour: The DAG's start date.
    """
    if "airflow" in sys.modules:  # pragma: no cover - a programming error, not a user error
        raise RuntimeError("configure_environment() must run before airflow is imported")
    for name in list(os.environ):
        if name.startswith(_INHERITED_PREFIXES) or name in _INHERITED_NAMES:
            del os.environ[name]
    airflow_home = workdir / "airflow"
    airflow_home.mkdir()
    use_private_runtime_dir(workdir)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
            "SERVICES_SYNC_START_DATE": first_hour.isoformat(),
            "SERVICES_SYNC_SOURCE_CONN_ID": SOURCE_CONN_ID,
            "SERVICES_SYNC_API_CONN_ID": API_CONN_ID,
            "SERVICES_SYNC_STATE_CONN_ID": SOURCE_CONN_ID,
            "SERVICES_SYNC_STATE_SCHEMA": STATE_SCHEMA,
        }
    )
    add_repository_to_sys_path()


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
            SetupError: If ``SOURCE_DB_URL`` is not a PostgreSQL URL or the cluster fails to start.
        """
        url = os.environ.get("SOURCE_DB_URL", "").strip()
        if url:
            if urlsplit(url).scheme not in {"postgresql", "postgres"}:
                raise SetupError(
                    "SOURCE_DB_URL must be a URL like postgresql://user:password@host:5432/db "
                    f"(got scheme {urlsplit(url).scheme or 'none'!r})"
                )
            self.dsn, self.external = url, True
            return
        self.cluster = start_embedded_postgres(self.workdir)
        self.dsn = self.cluster.create_database(SOURCE_DATABASE)

    def start_receiver(self) -> None:
        """Start the reference receiver on a free loopback port and point the DAG at both.

        Sets the ``AIRFLOW_CONN_*`` variables of the source database and the receiver.
        """
        from devkit.receiver import ReceiverServer

        self.receiver = ReceiverServer(host="127.0.0.1").start()
        print(f"receiver     {self.receiver.url}")
        os.environ.update(
            {
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
        )

    def stop(self) -> None:
        """Stop the receiver and the embedded cluster; keep its log, delete its data."""
        stop_started(self.receiver, self.cluster, self.workdir)
        self.receiver = self.cluster = None


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
        SetupError: If the table already has rows in an external database, or the insert fails.
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
                    raise SetupError(
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
        raise SetupError(f"could not seed the source database: {first_line(exc)}") from None
    return inserted, len(transform_rows(rows).rejected)


def conclude(status: int, logs: str, started: float, *, keep: bool, stops: str) -> int:
    """The end of a change-stream demo: where the logs are, OK or FAILED, ``--keep``'s wait.

    Args:
        status: The demo's exit status so far.
        logs: The Airflow log files, as a path pattern to show.
        started: ``time.monotonic()`` at the demo's start.
        keep: Whether to wait for Ctrl-C with the services up.
        stops: What Ctrl-C then stops, for the message.

    Returns:
        ``status``.
    """
    print(f"\nAirflow logs: {logs}")
    print(f"demo {'OK' if status == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
    if keep:
        print(f"--keep: Ctrl-C stops {stops}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return status
