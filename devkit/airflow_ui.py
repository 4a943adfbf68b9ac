"""The real Airflow UI on this repository's DAG, with data to sync: ``make airflow``.

Run it with ``make airflow`` or ``python -m devkit.airflow_ui [--port N] [--hours N]
[--receiver-port N] [--home DIR]``. It:

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
   ``.airflow/standalone.log``;
6. writes ``.airflow/airflow.env``, the environment of the stack as shell exports, so the
   Airflow CLI reaches this stack (``make airflow-cli ARGS='dags list-runs ...'``);
7. prints the URL (``http://localhost:8080``, or a free port if 8080 is taken), the login
   (``admin`` / ``admin``), the CLI command and then one line per DAG run state change;
8. on Ctrl-C (or SIGTERM) stops ``airflow standalone`` (SIGINT to its process group, then
   SIGTERM, then SIGKILL), the receiver and PostgreSQL, and deletes the cluster's data; the
   logs stay in ``.airflow/``.

The exit status is 0 after Ctrl-C, 1 if Airflow stopped by itself or never became healthy, 2 if
the setup failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
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

from devkit.demo import (
    DemoError,
    raise_keyboard_interrupt,
    seed_source,
    show_path,
    stop_stale_postgres,
)
from devkit.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = ROOT / ".airflow"
DEFAULT_PORT = 8080
DEFAULT_RECEIVER_PORT = 8000
DEFAULT_HOURS = 3
MAX_HOURS = 48
DAG_ID = "services_requests_sync"
USERNAME = "admin"
PASSWORD = "admin"  # noqa: S105 - a local development UI on loopback
STARTUP_TIMEOUT_S = 300
STOP_TIMEOUT_S = 45

_MARKER = ".services-sync-airflow-ui"
_INHERITED_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")
_INHERITED_NAMES = (
    "AIRFLOW_HOME",
    "AIRFLOW_CONFIG",
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
    for name in list(os.environ):
        if name.startswith(_INHERITED_PREFIXES) or name in _INHERITED_NAMES:
            del os.environ[name]


def airflow_environment(
    home: Path,
    *,
    metadata_url: str,
    source_url: str,
    receiver_port: int,
    api_port: int,
    start_date: datetime,
) -> dict[str, str]:
    """The environment of ``airflow standalone`` and every component it starts.

    Args:
        home: The workspace (``AIRFLOW_HOME`` is ``home/airflow``).
        metadata_url: libpq URL of the metadata database.
        source_url: libpq URL of the source database (the DAG's state tables go there too).
        receiver_port: Port of the reference receiver on 127.0.0.1.
        api_port: Port of the api-server (UI, REST API and the tasks' Execution API).
        start_date: The DAG's start date (first interval).

    Returns:
        The environment (a copy of ``os.environ`` plus these settings).
    """
    airflow_home = home / "airflow"
    passwords = airflow_home / "simple_auth_manager_passwords.json.generated"
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Paused until told otherwise; main() unpauses the query-mode DAG only.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg"
            + metadata_url[len("postgresql") :],
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
            # Login admin / admin: the simple auth manager keeps the passwords it knows in
            # this file and only generates one for a user missing from it.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            # Tasks find the Execution API at [api] base_url, default http://localhost:8080.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            # Log servers of the scheduler and the triggerer: free ports, not 8793/8794, so a
            # second Airflow on this machine does not collide.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW_CONN_SERVICES_SOURCE_DB": source_url,
            "AIRFLOW_CONN_SERVICES_API": json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": receiver_port, "schema": "http"}
            ),
            "SERVICES_SYNC_START_DATE": start_date.isoformat(),
            "SERVICES_SYNC_SOURCE_CONN_ID": "services_source_db",
            "SERVICES_SYNC_API_CONN_ID": "services_api",
            "SERVICES_SYNC_STATE_CONN_ID": "services_source_db",
            "SERVICES_SYNC_STATE_SCHEMA": "services_sync",
            # `airflow standalone` starts its components as `airflow ...` found on PATH.
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    airflow_home.mkdir(parents=True, exist_ok=True)
    passwords.write_text(json.dumps({USERNAME: PASSWORD}) + "\n")
    passwords.chmod(0o600)
    return env


# --------------------------------------------------------------------------------------------
# What the tool starts
# --------------------------------------------------------------------------------------------


class Stack:
    """PostgreSQL, the receiver and ``airflow standalone``, and how to stop them (only them)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.workdir = home / "cwd"  # every Airflow process runs here: how leftovers are found
        self.workdir.mkdir(exist_ok=True)
        self.log_path = home / "standalone.log"
        self.cluster: Any = None
        self.receiver: Any = None
        self.standalone: subprocess.Popen[bytes] | None = None
        self.metadata_url = ""
        self.source_url = ""
        self.external_source = False

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

    def start_airflow(self, env: dict[str, str]) -> None:
        """``airflow standalone`` in a process group of its own, output to the log file."""
        with self.log_path.open("ab") as log:
            self.standalone = subprocess.Popen(
                [sys.executable, "-m", "airflow", "standalone"],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> list[str]:
        """Stop Airflow, the receiver and PostgreSQL; delete the cluster's data.

        Returns:
            What did not stop by itself and was killed (empty when all went well).
        """
        killed: list[str] = []
        if self.standalone is not None:
            killed = self._stop_airflow()
            self.standalone = None
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

    def _stop_airflow(self) -> list[str]:
        assert self.standalone is not None
        pgid = self.standalone.pid
        # SIGINT to `airflow standalone` alone: it sends SIGTERM to each component and waits
        # for them. Signalling the whole group instead hits every component twice (SIGINT,
        # then SIGTERM), and a scheduler interrupted in its own shutdown leaves its
        # LocalExecutor workers behind (they ignore SIGINT and survive SIGTERM).
        stages = (
            (lambda: os.kill(pgid, signal.SIGINT), STOP_TIMEOUT_S),
            (lambda: os.killpg(pgid, signal.SIGTERM), 15),
        )
        for send, wait_s in stages:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send()
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if self.standalone.poll() is not None and not self.leftovers():
                    return []
                time.sleep(0.2)
        killed = []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        for pid, cmdline in self.leftovers():
            killed.append(f"{pid} {cmdline}")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.standalone.wait(timeout=10)
        return killed

    def leftovers(self) -> list[tuple[int, str]]:
        """Running processes started from :attr:`workdir` (Airflow and its task processes).

        Task processes get process groups of their own, so the process group alone does not
        find them; their working directory does (Airflow never changes it).
        """
        if not Path("/proc").is_dir():
            return []
        target = str(self.workdir.resolve())
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if os.readlink(entry / "cwd") != target:
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except (OSError, IndexError, UnicodeDecodeError):
                continue
            if state not in {"Z", "X"}:
                found.append((int(entry.name), cmdline))
        return found


# --------------------------------------------------------------------------------------------
# Watching
# --------------------------------------------------------------------------------------------


def health(api_url: str) -> dict[str, Any] | None:
    """``/api/v2/monitor/health`` of the api-server, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{api_url}/api/v2/monitor/health", timeout=5) as response:  # noqa: S310
            return json.load(response)
    except (OSError, ValueError):
        return None


def is_healthy(status: dict[str, Any] | None) -> bool:
    """Whether the metadata DB, the scheduler and the dag-processor are healthy."""
    return bool(status) and all(
        (status.get(part) or {}).get("status") == "healthy"
        for part in ("metadatabase", "scheduler", "dag_processor")
    )


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
        stack = Stack(home)
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

        env = airflow_environment(
            home,
            metadata_url=stack.metadata_url,
            source_url=stack.source_url,
            receiver_port=stack.receiver.port,
            api_port=api_port,
            start_date=first_hour,
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
        stack.start_airflow(env)
        api_url = f"http://127.0.0.1:{api_port}"
        print(
            f"starting     airflow standalone (log: {show_path(stack.log_path)}) … ",
            end="",
            flush=True,
        )
        started = time.monotonic()
        while not is_healthy(health(api_url)):
            if stack.standalone is not None and stack.standalone.poll() is not None:
                print("failed")
                print(_tail(stack.log_path), file=sys.stderr)
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
        unpause_query_mode(env)
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
        follow_runs(stack)
        print("\nairflow standalone stopped by itself; see " + show_path(stack.log_path))
        print(_tail(stack.log_path), file=sys.stderr)
        status = 1
    except (SetupError, DemoError) as exc:
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


def unpause_query_mode(env: dict[str, str], timeout_s: float = 120) -> None:
    """Unpause the query-mode DAG once the dag-processor has registered it (CDC stays paused)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "unpause", DAG_ID],
            env=env,
            cwd=env["AIRFLOW_HOME"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise SetupError(f"could not unpause {DAG_ID}: {result.stderr.strip()[-500:]}")
        time.sleep(2)


def follow_runs(stack: Stack) -> None:
    """Print each DAG run state change until ``airflow standalone`` exits (or Ctrl-C)."""
    seen: dict[str, str] = {}
    while stack.standalone is not None and stack.standalone.poll() is None:
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


if __name__ == "__main__":
    sys.exit(main())
