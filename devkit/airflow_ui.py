"""The real Airflow UI on this repository's DAG, with data to sync: ``make airflow``.

Run it with ``make airflow`` or ``python -m devkit.airflow_ui [--port N] [--hours N]
[--receiver-port N] [--home DIR] [--executor local|celery]``. Airflow's environment and
processes come from :mod:`devkit.airflow_stack`, as in the operate tests and the benchmark. It:

1. wipes and recreates its workspace (default ``.airflow/`` in the repository, gitignored; a
   directory is only wiped if it is the default one, is empty or carries the marker file an
   earlier run left there) and drops inherited ``AIRFLOW__*``, ``AIRFLOW_CONN_*``,
   ``AIRFLOW_VAR_*``, ``AIRFLOW_HOME`` and ``AIRFLOW_CONFIG`` variables and the
   ``SERVICES_SYNC_*`` settings that say where the DAG reads, writes and sends;
2. starts a throwaway PostgreSQL cluster (:mod:`devkit.pgcluster`, in ``.airflow/pg``) with
   the Airflow metadata database ``airflow`` and the source database ``services``, or uses
   ``SOURCE_DB_URL`` as the source (same rules as ``make demo``: it only adds to an empty
   ``service_requests`` unless ``DEMO_FORCE=1``);
3. seeds ``service_requests`` with :func:`devkit.seed.demo_changes` for the last ``N`` whole
   hours (default 3), three malformed rows included;
4. starts the reference receiver (:class:`devkit.receiver.ReceiverServer`) on
   ``127.0.0.1:8000``, or a free port if 8000 is taken;
5. runs ``airflow standalone`` (scheduler, dag-processor, triggerer, api-server, LocalExecutor)
   with the DAG's start date ``N`` hours ago on the hour; once the DAGs are parsed it unpauses
   the query-mode DAG only (the CDC DAG stays paused: both on would send every change twice,
   under different keys), so the scheduler catches up ``N`` runs at once. Its output goes to
   ``.airflow/standalone.log``. With ``--executor celery`` (``make airflow EXECUTOR=celery``)
   it starts a private ``redis-server`` and the Celery deployment of ``docker-compose.yaml``
   instead (api-server, scheduler, dag-processor, triggerer and one Celery worker, CeleryExecutor,
   logs in ``.airflow/<component>.log``);
6. writes ``.airflow/airflow.env``, the environment of the stack as shell exports, so the
   Airflow CLI reaches this stack (``make airflow-cli ARGS='dags list-runs ...'``);
7. prints the URL (``http://localhost:8080``, or a free port if 8080 is taken), the login
   (``admin`` / ``admin``), the CLI command and then one line per DAG run state change;
8. on Ctrl-C (or SIGTERM) stops ``airflow standalone`` (SIGINT, then SIGTERM to its process
   group, then SIGKILL; each Celery component gets SIGTERM instead), Redis, the receiver and
   PostgreSQL, and deletes the cluster's data; the logs stay in ``.airflow/``.

The exit status is 0 after Ctrl-C, 1 if Airflow stopped by itself or never became healthy, 2 if
the setup failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devkit.airflow_stack import (
    AIRFLOW,
    DAG_ID,
    DEPLOYMENT_VARIABLES,
    ROOT,
    AirflowStack,
    Component,
    StackError,
    airflow_env,
    api_connection,
    api_settings,
    celery_settings,
    free_port,
    health,
    inherited_env,
    is_healthy,
    redis_server,
    sqlalchemy_url,
)
from devkit.demo import (
    DemoError,
    raise_keyboard_interrupt,
    seed_source,
    show_path,
    stop_stale_postgres,
)

DEFAULT_HOME = ROOT / ".airflow"
DEFAULT_PORT = 8080
DEFAULT_RECEIVER_PORT = 8000
DEFAULT_HOURS = 3
MAX_HOURS = 48
USERNAME = "admin"
PASSWORD = "admin"  # noqa: S105 - a local development UI on loopback
STARTUP_TIMEOUT_S = 300
STOP_TIMEOUT_S = 45
EXECUTORS = ("local", "celery")
#: What ``--executor celery`` starts, in this order (stopped in the reverse one): the Celery
#: deployment of docker-compose.yaml with one worker. The worker is named ``celery-worker``.
CELERY_COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer", "celery-worker")

_MARKER = ".services-sync-airflow-ui"
#: Dropped from this process' environment on start (besides what every stack drops).
_DROPPED = (
    *DEPLOYMENT_VARIABLES,
    "SERVICES_SYNC_START_DATE",
    "SERVICES_SYNC_SOURCE_CONN_ID",
    "SERVICES_SYNC_API_CONN_ID",
    "SERVICES_SYNC_STATE_CONN_ID",
    "SERVICES_SYNC_STATE_SCHEMA",
    "SERVICES_SYNC_ENDPOINT",
    "SERVICES_SYNC_SQL_DIR",
)


class SetupError(Exception):
    """Something could not be set up; the message says what and what to do."""


# --------------------------------------------------------------------------------------------
# Workspace, ports, environment
# --------------------------------------------------------------------------------------------


def prepare_home(home: Path) -> Path:
    """Wipe and recreate the workspace; refuse a non-empty directory it did not make."""
    home = home.resolve()
    if home.exists():
        if not home.is_dir():
            raise SetupError(f"--home {home} exists and is not a directory")
        ours = home == DEFAULT_HOME or (home / _MARKER).exists()
        if not ours and any(home.iterdir()):
            raise SetupError(
                f"--home {home} is not empty and was not made by devkit.airflow_ui; pick "
                "another directory (it is wiped on every start)"
            )
        stop_stale_postgres(home / "pg" / "data")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / _MARKER).write_text("Workspace of python -m devkit.airflow_ui; wiped on every run.\n")
    return home


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` and it can be bound."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(requested: int | None, default: int, what: str) -> int:
    """``requested`` if given (it must be free), else ``default`` or a free port.

    Raises:
        SetupError: If the requested port is taken.
    """
    if requested == 0:
        return free_port()
    if requested is not None:
        if not port_is_free(requested):
            raise SetupError(f"port {requested} for the {what} is taken; pick another one")
        return requested
    if port_is_free(default):
        return default
    port = free_port()
    print(f"note         port {default} is taken; the {what} uses {port}")
    return port


def clean_environment() -> None:
    """Drop inherited Airflow settings and the DAG settings this tool sets itself."""
    kept = inherited_env(drop=_DROPPED)
    for name in set(os.environ) - set(kept):
        del os.environ[name]


def airflow_environment(
    home: Path,
    *,
    metadata_url: str,
    source_url: str,
    receiver_port: int,
    api_port: int,
    start_date: datetime,
    broker_url: str | None = None,
) -> dict[str, str]:
    """The environment of ``airflow standalone`` (or the Celery components) and their tasks.

    Args:
        home: The workspace (``AIRFLOW_HOME`` is ``home/airflow``).
        metadata_url: libpq URL of the metadata database.
        source_url: libpq URL of the source database (the DAG's state tables go there too).
        receiver_port: Port of the reference receiver on 127.0.0.1.
        api_port: Port of the api-server (UI, REST API and the tasks' Execution API).
        start_date: The DAG's start date (first interval).
        broker_url: The Celery broker: CeleryExecutor (else LocalExecutor).

    Returns:
        The environment (:func:`devkit.airflow_stack.airflow_env` plus these settings).
    """
    airflow_home = home / "airflow"
    passwords = airflow_home / "simple_auth_manager_passwords.json.generated"
    env = airflow_env(
        airflow_home,
        sqlalchemy_url(metadata_url),
        {
            **api_settings(api_port),
            # Paused until told otherwise; main() unpauses the query-mode DAG only.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # Login admin / admin: the simple auth manager keeps the passwords it knows in
            # this file and only generates one for a user missing from it.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__PARALLELISM": "8",
            **({} if broker_url is None else celery_settings(metadata_url, broker_url, 1)),
            "AIRFLOW_CONN_SERVICES_SOURCE_DB": source_url,
            "AIRFLOW_CONN_SERVICES_API": api_connection(receiver_port),
            "SERVICES_SYNC_START_DATE": start_date.isoformat(),
            "SERVICES_SYNC_SOURCE_CONN_ID": "services_source_db",
            "SERVICES_SYNC_API_CONN_ID": "services_api",
            "SERVICES_SYNC_STATE_CONN_ID": "services_source_db",
            "SERVICES_SYNC_STATE_SCHEMA": "services_sync",
        },
    )
    airflow_home.mkdir(parents=True, exist_ok=True)
    passwords.write_text(json.dumps({USERNAME: PASSWORD}) + "\n")
    passwords.chmod(0o600)
    return env


# --------------------------------------------------------------------------------------------
# What the tool starts
# --------------------------------------------------------------------------------------------


class Stack:
    """PostgreSQL, the receiver, Redis (Celery) and Airflow, and how to stop them (only them).

    Airflow runs as a :class:`devkit.airflow_stack.AirflowStack` in ``home``: every process
    in ``home/cwd`` (how leftovers are found), logs in ``home/<component>.log``.
    """

    def __init__(self, home: Path, executor: str = "local") -> None:
        self.home = home
        self.executor = executor
        self.components = ("standalone",) if executor == "local" else CELERY_COMPONENTS
        self.cluster: Any = None
        self.receiver: Any = None
        self.broker_url: str | None = None
        self.airflow: AirflowStack | None = None
        self.metadata_url = ""
        self.source_url = ""
        self.external_source = False
        self._services = contextlib.ExitStack()

    @property
    def log_path(self) -> Path:
        """The log of ``airflow standalone``, or of the scheduler."""
        return self.home / ("standalone.log" if self.executor == "local" else "scheduler.log")

    def start_postgres(self) -> None:
        """Start the embedded cluster with the databases ``airflow`` and ``services``."""
        from devkit.pgcluster import PostgresCluster

        pg_dir = self.home / "pg"
        pg_dir.mkdir(exist_ok=True)
        self.cluster = PostgresCluster(base_dir=pg_dir)
        try:
            self.cluster.start()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            raise SetupError(f"the embedded PostgreSQL did not start: {exc}") from None
        self.metadata_url = self.cluster.create_database("airflow")
        url = os.environ.get("SOURCE_DB_URL", "").strip()
        if url:
            if not url.startswith(("postgresql://", "postgres://")):
                raise SetupError("SOURCE_DB_URL must look like postgresql://user:pw@host:5432/db")
            self.source_url, self.external_source = url, True
        else:
            self.source_url = self.cluster.create_database("services")

    def start_receiver(self, port: int) -> None:
        """The reference receiver on 127.0.0.1:``port``."""
        from devkit.receiver import ReceiverServer

        self.receiver = ReceiverServer(host="127.0.0.1", port=port).start()

    def start_broker(self) -> None:
        """A private ``redis-server`` (Celery only), data and log in ``home/redis``."""
        if self.executor == "celery":
            self.broker_url = self._services.enter_context(redis_server(self.home / "redis"))

    def start_airflow(self, env: dict[str, str]) -> None:
        """``airflow standalone``, or migrate and the Celery components, in the background."""
        self.airflow = AirflowStack(self.home, env, log_dir=self.home)
        if self.executor == "celery":
            self.airflow.cli("db", "migrate", timeout=STARTUP_TIMEOUT_S)
        for name in self.components:
            command = [*AIRFLOW, "celery", "worker"] if name == "celery-worker" else []
            self.airflow.start(name, *command)

    def exited(self) -> Component | None:
        """An Airflow component that stopped by itself, or None."""
        return None if self.airflow is None else self.airflow.exited()

    def stop(self) -> list[str]:
        """Stop Airflow, Redis, the receiver and PostgreSQL; delete the cluster's data.

        Returns:
            What did not stop by itself and was killed (empty when all went well).
        """
        killed: list[str] = []
        if self.airflow is not None:
            # SIGINT to `airflow standalone` alone: it sends SIGTERM to each component and
            # waits for them. Signalling the whole group instead hits every component twice
            # (SIGINT, then SIGTERM), and a scheduler interrupted in its own shutdown leaves its
            # LocalExecutor workers behind (they ignore SIGINT and survive SIGTERM).
            sig = signal.SIGINT if self.executor == "local" else signal.SIGTERM
            stopped = self.airflow.stop(sig, STOP_TIMEOUT_S, group_timeout=15)
            killed = [f"{info.pid} {info.cmdline}" for info in stopped]
        with contextlib.suppress(Exception):
            self._services.close()
        if self.receiver is not None:
            with contextlib.suppress(Exception):
                self.receiver.stop()
            self.receiver = None
        if self.cluster is not None:
            pg_dir = Path(self.cluster.base_dir)
            with contextlib.suppress(Exception):
                self.cluster.stop()
            with contextlib.suppress(OSError):
                shutil.move(pg_dir / "postgres.log", self.home / "postgres.log")
            shutil.rmtree(pg_dir, ignore_errors=True)
            self.cluster = None
        return killed


# --------------------------------------------------------------------------------------------
# Watching
# --------------------------------------------------------------------------------------------


def run_states(metadata_url: str) -> dict[str, tuple[str, datetime | None, datetime | None]]:
    """``run_id -> (state, data interval start, end)`` of the DAG's runs."""
    import psycopg

    try:
        with psycopg.connect(metadata_url, connect_timeout=5, autocommit=True) as conn:
            found = conn.execute(
                "SELECT run_id, state, data_interval_start, data_interval_end FROM dag_run"
                " WHERE dag_id = %s ORDER BY id",
                (DAG_ID,),
            ).fetchall()
    except psycopg.Error:
        return {}
    return {run_id: (state, start, end) for run_id, state, start, end in found}


def _receiver_records(url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{url}/inspect/stats", timeout=5) as response:  # noqa: S310
            return int(json.load(response)["records"])
    except (OSError, ValueError, KeyError):
        return None


def _interval(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "(no interval)"
    return f"{start.astimezone(UTC):%Y-%m-%dT%H:%MZ} → {end.astimezone(UTC):%H:%MZ}"


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


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


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number")
    return port


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m devkit.airflow_ui",
        description="Run the Airflow UI (airflow standalone) on this repository's DAG, with an "
        "embedded PostgreSQL, seeded changes and the reference receiver. Ctrl-C stops it all.",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"port of the UI and API (default: $AIRFLOW_UI_PORT, else {DEFAULT_PORT} or a free "
        "port if it is taken; 0 = any free port)",
    )
    parser.add_argument(
        "--receiver-port",
        type=_port,
        default=None,
        help=f"port of the reference receiver (default {DEFAULT_RECEIVER_PORT} or a free port "
        "if it is taken; 0 = any free port)",
    )
    parser.add_argument(
        "--hours",
        type=_hours,
        default=DEFAULT_HOURS,
        help=f"whole past hours to seed and catch up (default {DEFAULT_HOURS})",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=DEFAULT_HOME,
        help="workspace, wiped on start (default: .airflow/ in the repository)",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: airflow standalone (LocalExecutor, the default); celery: a private "
        "redis-server, the api-server, scheduler, dag-processor, triggerer and a Celery worker",
    )
    args = parser.parse_args(argv)
    if args.port is None and os.environ.get("AIRFLOW_UI_PORT", "").strip():
        try:
            args.port = _port(os.environ["AIRFLOW_UI_PORT"].strip())
        except argparse.ArgumentTypeError as exc:
            parser.error(f"AIRFLOW_UI_PORT: {exc}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Start everything, print how to log in, follow the runs until Ctrl-C, stop everything."""
    args = parse_args(argv)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace", line_buffering=True)  # type: ignore[union-attr]
    # Ctrl-C and SIGTERM unwind through the cleanup below. Installing the handler also matters
    # when this process was started with SIGINT ignored (a background job of a script): it
    # would pass that on to `airflow standalone`, which then could not be stopped with SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    stack: Stack | None = None
    status = 0
    try:
        home = prepare_home(args.home)
        clean_environment()
        # A private runtime dir (0700), or platformdirs warns; not the workspace itself, which
        # PostgreSQL (run as another user when we are root) must be able to traverse.
        (home / "run").mkdir(mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(home / "run")
        for path in (str(ROOT / "plugins"), str(ROOT)):  # services_sync, for the seed
            if path not in sys.path:
                sys.path.insert(0, path)
        stack = Stack(home, args.executor)
        now = datetime.now(UTC)
        first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=args.hours)
        print(
            f"services-sync on Airflow: {args.hours} hourly run(s) to catch up from "
            f"{first_hour:%Y-%m-%dT%H:%MZ}, workspace {show_path(home)}/"
        )
        api_port = pick_port(args.port, DEFAULT_PORT, "Airflow UI")
        receiver_port = pick_port(args.receiver_port, DEFAULT_RECEIVER_PORT, "receiver")

        stack.start_postgres()
        print(f"PostgreSQL   metadata DB {stack.metadata_url}")
        print(
            "             source DB "
            + ("SOURCE_DB_URL" if stack.external_source else stack.source_url)
        )
        inserted, malformed = seed_source(
            stack.source_url, first_hour, args.hours, external=stack.external_source
        )
        print(f"seeded       {inserted} changed rows ({malformed} malformed on purpose)")
        stack.start_receiver(receiver_port)
        print(f"receiver     {stack.receiver.url}  (GET /inspect/stats, /inspect/batches)")
        stack.start_broker()
        if stack.broker_url:
            print(f"redis        {stack.broker_url}  (the Celery broker)")

        env = airflow_environment(
            home,
            metadata_url=stack.metadata_url,
            source_url=stack.source_url,
            receiver_port=stack.receiver.port,
            api_port=api_port,
            start_date=first_hour,
            broker_url=stack.broker_url,
        )
        if stack.external_source:
            # The CDC DAG must not leave a replication slot (which keeps WAL) on a database
            # this command does not own: without one it fails, naming `make cdc-setup`.
            env["SERVICES_SYNC_CDC_CREATE_SLOT"] = "off"
        else:
            import psycopg

            with psycopg.connect(stack.source_url, autocommit=True) as conn:
                # What CDC mode needs of the table (README, CDC mode); the slot goes with the
                # embedded cluster.
                conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
        if stack.executor == "local":
            what = f"airflow standalone (log: {show_path(stack.log_path)})"
        else:
            what = f"{', '.join(stack.components)} (logs: {show_path(home)}/<name>.log)"
        print(f"starting     {what} … ", end="", flush=True)
        started = time.monotonic()
        stack.start_airflow(env)
        api_url = f"http://127.0.0.1:{api_port}"
        while not is_healthy(health(api_url)):
            exited = stack.exited()
            if exited is not None:
                print("failed")
                print(f"airflow {exited.name} exited", file=sys.stderr)
                print(_tail(exited.log_path), file=sys.stderr)
                return 1
            if time.monotonic() - started > STARTUP_TIMEOUT_S:
                print("failed")
                print(
                    f"Airflow did not become healthy in {STARTUP_TIMEOUT_S} s; see "
                    f"{show_path(stack.log_path)}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(1)
        unpause_query_mode(stack.airflow)
        env_file = write_cli_env(home, env)
        print(f"ready ({time.monotonic() - started:.0f} s)")
        print()
        print(f"  Airflow UI   http://localhost:{api_port}")
        print(f"  login        {USERNAME} / {PASSWORD}")
        print(f"  DAG          http://localhost:{api_port}/dags/{DAG_ID} (CDC DAG paused)")
        print(f"  receiver     {stack.receiver.url}/inspect/stats")
        print(f"  CLI          make airflow-cli ARGS='dags list-runs {DAG_ID}'")
        print(f"               (or: set -a; source {show_path(env_file)}; set +a; airflow ...)")
        print("  stop         Ctrl-C (stops Airflow, the receiver and PostgreSQL)")
        print()
        exited = follow_runs(stack)
        print(f"\nairflow {exited.name} stopped by itself; see " + show_path(exited.log_path))
        print(_tail(exited.log_path), file=sys.stderr)
        status = 1
    except (SetupError, DemoError, StackError) as exc:
        print(f"\ncould not start: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("\nstopping Airflow, the receiver and PostgreSQL …")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack is not None:
            killed = stack.stop()
            if killed:
                print("killed what did not stop in time: " + "; ".join(killed), file=sys.stderr)
            print(f"stopped; logs in {show_path(stack.home)}/")
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return status


#: The environment variables a CLI needs to reach the stack (everything else is inherited).
_CLI_ENV_PREFIXES = ("AIRFLOW_HOME", "AIRFLOW__", "AIRFLOW_CONN_", "SERVICES_SYNC_")


def write_cli_env(home: Path, env: dict[str, str]) -> Path:
    """``home/airflow.env``: the stack's settings as shell exports, for the Airflow CLI.

    Without them ``airflow ...`` would read ``~/airflow`` (an empty SQLite database), not this
    stack. ``make airflow-cli ARGS='...'`` sources it.
    """
    import shlex

    lines = [
        f"export {name}={shlex.quote(value)}"
        for name, value in sorted(env.items())
        if name.startswith(_CLI_ENV_PREFIXES)
    ]
    path = home / "airflow.env"
    path.write_text("# The `make airflow` stack, for the Airflow CLI (written on start).\n")
    with path.open("a") as out:
        out.write("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def unpause_query_mode(airflow: AirflowStack, timeout_s: float = 120) -> None:
    """Unpause the query-mode DAG once the dag-processor has registered it (CDC stays paused)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = airflow.run("dags", "unpause", DAG_ID)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise SetupError(f"could not unpause {DAG_ID}: {result.stderr.strip()[-500:]}")
        time.sleep(2)


def follow_runs(stack: Stack) -> Component:
    """Print each DAG run state change until an Airflow component exits (or Ctrl-C).

    Returns:
        The component that exited.
    """
    seen: dict[str, str] = {}
    while (exited := stack.exited()) is None:
        for run_id, (state, start, end) in run_states(stack.metadata_url).items():
            if seen.get(run_id) == state:
                continue
            seen[run_id] = state
            line = f"  run {_interval(start, end)}  {state:<8} {run_id}"
            if state == "success" and stack.receiver is not None:
                records = _receiver_records(stack.receiver.url)
                if records is not None:
                    line += f"  (receiver holds {records} records)"
            print(line)
        time.sleep(2)
    return exited


if __name__ == "__main__":
    sys.exit(main())
