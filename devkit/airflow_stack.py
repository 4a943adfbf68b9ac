"""Airflow processes for this repository: how to build their environment, start and stop them.

The one place that knows it, for the three things that run Airflow here: ``make airflow``
(:mod:`devkit.airflow_ui`), the operate tests (``tests/operate/``) and the benchmark
(``bench/``).

Environment: :func:`inherited_env` (what a stack takes from this process: never inherited
``AIRFLOW__*``, ``AIRFLOW_HOME`` or ``AIRFLOW_CONFIG``), :func:`airflow_env` (DAG and plugins
folders, metadata database, JWT and secret keys, free log-server ports), :func:`api_settings`,
:func:`scheduler_stack_env` (LocalExecutor with a forkserver), :func:`celery_settings` and
:func:`celery_stack_env` (the Celery deployment of ``docker-compose.yaml``).

Processes: :class:`AirflowStack` runs the ``airflow`` CLI and long-lived components (scheduler,
dag-processor, api-server, triggerer, Celery workers, or ``airflow standalone``) as
subprocesses, each in its own process group with its output in a log file, and stops
everything it started: SIGTERM (or SIGINT) to each component, SIGTERM to what is left of its
process group, then SIGKILL to whatever remains. :func:`redis_server` is a private Celery broker.

Finding "whatever is left" is the hard part. Airflow puts every task process in a process group
of its own (``os.setpgid`` in the task supervisor), and ``setproctitle`` overwrites the memory
``/proc/<pid>/environ`` reads, so neither the process group nor an environment marker finds all
descendants. The working directory does: every process is started in a directory of its own
(:attr:`AirflowStack.workdir`) and Airflow never changes directory, so a process whose
``/proc/<pid>/cwd`` is that directory was started by this stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from devkit.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "services_requests_sync"
#: The ``airflow`` command, run by this interpreter (the venv's Airflow, whatever PATH says).
AIRFLOW = (sys.executable, "-m", "airflow")

T = TypeVar("T")


class StackError(AssertionError):
    """A stack did not start, answer or stop as it should; the message says what.

    An AssertionError, so that the tests report it as a failed check.
    """


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds.

    Args:
        predicate: Called repeatedly; an exception it raises propagates (fail fast).
        timeout: Upper bound in seconds.
        what: What is awaited, for the failure message.
        interval: Pause between polls.
        diagnostics: Called on timeout; its text is appended to the failure message.

    Returns:
        The first truthy value.

    Raises:
        StackError: On timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{diagnostics()}" if diagnostics else ""
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------

#: Never inherited: they would point a stack at another home, configuration or settings.
_NEVER_INHERITED = ("AIRFLOW__", "AIRFLOW_HOME", "AIRFLOW_CONFIG")
#: Connections and variables of whatever deployment this process' environment points at.
DEPLOYMENT_VARIABLES = ("AIRFLOW_CONN_", "AIRFLOW_VAR_")

#: The metadata database's SQLAlchemy scheme (psycopg 3), and Celery's result backend on it.
METADATA_DB_SCHEME = "postgresql+psycopg"
CELERY_RESULT_BACKEND_SCHEME = "db+postgresql"
CELERY_BROKER_SCHEME = "redis"


def inherited_env(
    drop: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a stack inherits of ``environ`` (default ``os.environ``).

    Never ``AIRFLOW__*``, ``AIRFLOW_HOME`` or ``AIRFLOW_CONFIG``; nor what ``drop`` names: a
    name ending in ``_`` drops every variable it starts (e.g. :data:`DEPLOYMENT_VARIABLES`),
    any other name only itself. The operate tests keep ``AIRFLOW_CONN_*`` and
    ``SERVICES_SYNC_*`` (their fixtures set them); ``make airflow`` and the benchmark drop them.
    """
    rules = (*_NEVER_INHERITED, *drop)
    prefixes = tuple(rule for rule in rules if rule.endswith("_"))
    names = {rule for rule in rules if not rule.endswith("_")}
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith(prefixes) and k not in names}


def sqlalchemy_url(dsn: str, scheme: str = METADATA_DB_SCHEME) -> str:
    """A ``postgresql://`` libpq URL as a SQLAlchemy URL with ``scheme``."""
    return f"{scheme}://{dsn.split('://', 1)[1]}"


def metadata_dsn(sql_alchemy_conn: str) -> str:
    """The libpq URL of a ``postgresql+psycopg://`` SQLAlchemy URL."""
    scheme, rest = sql_alchemy_conn.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def airflow_env(
    home: Path,
    sql_alchemy_conn: str,
    overrides: Mapping[str, str] | None = None,
    *,
    base: Mapping[str, str] | None = None,
    dags_folder: Path = ROOT / "dags",
    plugins_folder: Path = ROOT / "plugins",
) -> dict[str, str]:
    """The environment of every Airflow process of a stack.

    Starts from ``base`` (default :func:`inherited_env`: ``os.environ``, so ``AIRFLOW_CONN_*``
    and ``SERVICES_SYNC_*`` set by fixtures reach the components) without inherited
    ``AIRFLOW__*`` settings, and points Airflow at ``home``, the DAGs and plugins folders (this
    repository's) and the metadata database.

    Args:
        home: ``AIRFLOW_HOME``.
        sql_alchemy_conn: Metadata database URL.
        overrides: Extra variables, applied last.
        base: The variables to start from.
        dags_folder: ``[core] dags_folder``.
        plugins_folder: ``[core] plugins_folder``.

    Returns:
        The environment.
    """
    env = inherited_env(environ=base)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # The scheduler and the api-server must share the JWT secret (task tokens), and
            # the log servers of the scheduler and triggerer must not collide with another
            # Airflow on this machine (not 8793/8794).
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # `airflow standalone` starts its components as `airflow ...` from PATH.
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides or {})
    return env


def api_connection(port: int, *, gzip: bool = False) -> str:
    """The DAG's ``AIRFLOW_CONN_SERVICES_API``: a receiver on 127.0.0.1:``port``.

    ``gzip``: the connection extra ``{"Content-Encoding": "gzip"}``, with which the delivery
    lanes send the outbox's stored gzip bytes as they are (``Content-Encoding: gzip``).
    """
    conn: dict[str, object] = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": port,
        "schema": "http",
    }
    if gzip:
        conn["extra"] = {"Content-Encoding": "gzip"}
    return json.dumps(conn)


def api_settings(api_port: int) -> dict[str, str]:
    """The api-server on 127.0.0.1:``api_port``, where task processes find the Execution API.

    (Tasks look for it at ``[core] execution_api_server_url``, default localhost:8080.)
    """
    return {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
    }


#: Imported once by the LocalExecutor's forkserver, so each task process (forked from a worker)
#: does not import them again: halves the time of a run on 2 cores. Speed only.
FORKSERVER_PRELOAD = (
    "airflow.executors.local_executor",
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.common.sql.operators.sql",
    "airflow.providers.common.sql.sensors.sql",
    "airflow.providers.http.operators.http",
    "airflow.providers.postgres.hooks.postgres",
)
_FORKSERVER_SETTINGS = {
    "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
    "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": ",".join(FORKSERVER_PRELOAD),
}


def scheduler_stack_env(
    home: Path,
    metadata_dsn_: str,
    api_port: int,
    extra: Mapping[str, str],
    *,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment of a scheduler + dag-processor + api-server stack (LocalExecutor).

    The scheduler creates no run of its own (``use_job_schedule`` off): the tests create runs
    with the CLI. ``extra`` adds or overrides settings (the DAG's ``SERVICES_SYNC_*`` ones);
    ``base``: see :func:`airflow_env`.
    """
    return airflow_env(
        home,
        sqlalchemy_url(metadata_dsn_),
        {
            **api_settings(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__CORE__PARALLELISM": "4",
            **_FORKSERVER_SETTINGS,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "SERVICES_SYNC_CATCHUP": "off",
            "SERVICES_SYNC_GATE_POKE_S": "1",
            **extra,
        },
        base=base,
    )


#: The Celery deployment that docker-compose.yaml describes and the Celery stack test runs
#: (tests/operate/test_celery_stack.py): the same components, each in a process (a container) of
#: its own, the worker :data:`CELERY_WORKERS` times, and the same :data:`CELERY_SETTINGS`.
#: tests/test_compose.py holds docker-compose.yaml to these, so the file is exercised by proxy.
#: ``make airflow EXECUTOR=celery`` runs them too, with one worker.
CELERY_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker")
CELERY_WORKERS = 2
CELERY_SETTINGS = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    # Task slots per worker; the POST lanes of one run (SERVICES_SYNC_LANES) fit in one worker.
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
    # Acks are late: a message a dead worker had taken goes back to the queue after this long.
    # Longer than any task (else a slow task is delivered twice); the provider warns if unset.
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
}


def celery_settings(
    metadata_dsn_: str, broker_url: str, workers: int = CELERY_WORKERS
) -> dict[str, str]:
    """:data:`CELERY_SETTINGS`, the broker, Celery's results in the metadata database."""
    return {
        **CELERY_SETTINGS,
        # As many executor slots as the workers have. The executor counts a task as running
        # until Celery's result backend reports it done, seconds after it is: with
        # LocalExecutor's 4 the scheduler waited on finished tasks.
        "AIRFLOW__CORE__PARALLELISM": str(
            workers * int(CELERY_SETTINGS["AIRFLOW__CELERY__WORKER_CONCURRENCY"])
        ),
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": sqlalchemy_url(
            metadata_dsn_, CELERY_RESULT_BACKEND_SCHEME
        ),
    }


def celery_stack_env(
    home: Path,
    metadata_dsn_: str,
    api_port: int,
    broker_url: str,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """Environment of a CeleryExecutor stack: :func:`scheduler_stack_env` plus Celery.

    :func:`celery_settings`; the LocalExecutor's forkserver settings are dropped. ``extra``
    comes last.
    """
    env = scheduler_stack_env(home, metadata_dsn_, api_port, {})
    for name in _FORKSERVER_SETTINGS:
        env.pop(name)
    env.update(celery_settings(metadata_dsn_, broker_url))
    env.update(extra)
    return env


@contextlib.contextmanager
def redis_server(directory: Path, timeout: float = 30) -> Iterator[str]:
    """A Redis server of our own on a free loopback port, no persistence; yields its URL.

    Started from the ``redis-server`` binary (Debian package ``redis-server``, which
    ``devkit/ensure-os-packages`` installs), never a server the machine may already run.
    """
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise StackError(
            "redis-server is not installed: run devkit/ensure-os-packages "
            "(or apt-get install redis-server)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = directory / "redis.log"
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(directory), "--logfile", str(log_path), "--daemonize", "no"]
    process = subprocess.Popen(
        argv, cwd=directory, stdin=subprocess.DEVNULL, start_new_session=True
    )
    url = f"{CELERY_BROKER_SCHEME}://127.0.0.1:{port}/0"
    try:
        wait_until(
            lambda: _redis_ping(url, process, log_path),
            timeout=timeout,
            interval=0.2,
            what=f"redis-server on port {port}",
        )
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _redis_ping(url: str, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    import redis

    if process.poll() is not None:
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        raise StackError(f"redis-server exited with {process.returncode}:\n{log[-2000:]}")
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


# --------------------------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------------------------

#: What ``airflow standalone`` and a scheduler stack need healthy before they run anything.
HEALTHY_PARTS = ("metadatabase", "scheduler", "dag_processor")


def health(api_url: str) -> dict[str, Any] | None:
    """``/api/v2/monitor/health`` of the api-server, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{api_url}/api/v2/monitor/health", timeout=5) as response:  # noqa: S310
            return json.load(response)
    except (OSError, ValueError):
        return None


def is_healthy(status: dict[str, Any] | None, parts: Iterable[str] = HEALTHY_PARTS) -> bool:
    """Whether every one of ``parts`` of a :func:`health` answer is healthy."""
    return bool(status) and all(
        (status.get(part) or {}).get("status") == "healthy" for part in parts
    )


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@dataclass
class Component:
    """A long-lived process of the stack.

    Attributes:
        name: e.g. ``scheduler``.
        process: The process (leader of its own process group).
        log_path: Its stdout and stderr.
        cwd: Its working directory (:attr:`AirflowStack.workdir` or a subdirectory of it).
        killed: Killed on purpose (:meth:`AirflowStack.kill`): its exit is not a failure.
    """

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    cwd: Path
    killed: bool = False


@dataclass(frozen=True)
class ProcessInfo:
    """A running process started by the stack."""

    pid: int
    pgid: int
    cmdline: str


class AirflowStack:
    """Airflow CLI runs and background components sharing one environment.

    Args:
        home: The stack's directory (``AIRFLOW_HOME`` for the tests): every process runs in
            ``home/cwd``.
        env: The environment, see :func:`airflow_env`.
        log_dir: Where ``<component>.log`` files go (default ``home/component-logs``).

    Attributes:
        meta_dsn: libpq URL of the metadata database (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``).
        api_url: Base URL of the api-server (from ``AIRFLOW__API__PORT``, default 8080).
    """

    def __init__(self, home: Path, env: Mapping[str, str], *, log_dir: Path | None = None) -> None:
        self.home = home
        self.env = dict(env)
        self.meta_dsn = metadata_dsn(self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        self.api_url = f"http://127.0.0.1:{self.env.get('AIRFLOW__API__PORT', '8080')}"
        self.workdir = home / "cwd"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = home / "component-logs" if log_dir is None else log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.components: list[Component] = []
        self.force_killed: list[ProcessInfo] = []

    # -- the CLI -------------------------------------------------------------------------------
    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` in :attr:`workdir`, output captured."""
        return subprocess.run(
            [*AIRFLOW, *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli(self, *args: str, timeout: float = 180, check: bool = True) -> str:
        """Run ``airflow <args>`` and return its stdout.

        Raises:
            StackError: If ``check`` and it exits non-zero (with its output).
        """
        result = self.run(*args, timeout=timeout)
        if check and result.returncode != 0:
            raise StackError(
                f"airflow {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
            )
        return result.stdout

    # -- components ----------------------------------------------------------------------------
    def boot(self, *components: str, timeout: float = 180, migrate: bool = True) -> None:
        """Migrate the metadata DB, start ``components`` and wait until they are ready.

        Ready: the dag-processor has serialized the sync DAG (an import error fails at once)
        and the api-server reports a healthy metadata DB, scheduler and dag-processor.
        ``migrate=False``: the caller has migrated already.
        """
        if migrate:
            self.cli("db", "migrate")
        for component in components:
            self.start(component)
        wait_until(
            self._dag_serialized,
            timeout=timeout,
            what=f"the dag-processor to serialize {DAG_ID}",
            diagnostics=self.diagnostics,
        )
        wait_until(
            self.healthy,
            timeout=timeout,
            what="the api-server to report a healthy scheduler and dag-processor",
            diagnostics=self.diagnostics,
        )

    def _dag_serialized(self) -> bool:
        self.check_running()
        errors = rows(self.meta_dsn, "SELECT filename, stacktrace FROM import_error")
        if errors:
            raise StackError(f"DAG import errors: {errors}")
        found = rows(self.meta_dsn, "SELECT 1 FROM serialized_dag WHERE dag_id = %s", (DAG_ID,))
        return bool(found)

    def healthy(self, parts: Iterable[str] = HEALTHY_PARTS) -> bool:
        """Whether the api-server reports ``parts`` healthy (fails if a component exited)."""
        self.check_running()
        return is_healthy(health(self.api_url), parts)

    def start(
        self,
        name: str,
        *command: str,
        own_cwd: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Component:
        """Start ``command`` (default ``airflow <name>``) in the background, in a new session.

        Args:
            name: The component's name (its log file is ``<name>.log``).
            command: The argv; default ``airflow <name>``.
            own_cwd: Run in ``workdir/<name>`` instead of ``workdir``, so that the processes
                of this component (e.g. one Celery worker and its tasks) can be told apart
                from the others' (:meth:`processes_of`, :meth:`kill`).
            env: Variables added to the stack's environment for this component only.
        """
        argv = list(command) or [*AIRFLOW, name]
        cwd = self.workdir / name if own_cwd else self.workdir
        cwd.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        component = Component(name, process, log_path, cwd)
        self.components.append(component)
        return component

    def component(self, name: str) -> Component:
        """The component started as ``name``."""
        (found,) = [c for c in self.components if c.name == name]
        return found

    def exited(self) -> Component | None:
        """The first component that exited (not killed on purpose), or None."""
        for component in self.components:
            if component.process.poll() is not None and not component.killed:
                return component
        return None

    def processes_of(self, name: str) -> list[ProcessInfo]:
        """Running processes of a component started with ``own_cwd`` (its tasks included)."""
        return processes_in(self.component(name).cwd)

    def kill(self, name: str) -> list[ProcessInfo]:
        """SIGKILL every process of an ``own_cwd`` component at once, as if its host died.

        The component no longer counts as running (:meth:`check_running`); what was killed is
        returned.
        """
        component = self.component(name)
        if component.cwd == self.workdir:
            raise ValueError(f"{name} shares the stack's directory; start it with own_cwd")
        component.killed = True
        victims = processes_in(component.cwd)
        for info in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(info.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.process.wait(timeout=10)
        wait_until(
            lambda: not processes_in(component.cwd),
            timeout=10,
            interval=0.1,
            what=f"every process of {name} to die",
        )
        return victims

    def log(self, name: str) -> str:
        """What a component wrote so far."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def check_running(self) -> None:
        """Fail at once, with its log, if a component exited."""
        component = self.exited()
        if component is not None:
            raise StackError(
                f"{component.name} exited with {component.process.returncode}:\n"
                f"{self.log(component.name)[-4000:]}"
            )

    def diagnostics(self, tail: int = 3000) -> str:
        """Exit codes and the end of every component's log."""
        parts = []
        for component in self.components:
            code = component.process.poll()
            state = "running" if code is None else f"exited {code}"
            if component.killed:
                state += ", killed on purpose"
            parts.append(
                f"--- {component.name} ({state}), {component.log_path}:\n"
                f"{self.log(component.name)[-tail:]}"
            )
        return "\n".join(parts)

    # -- stopping ------------------------------------------------------------------------------
    def processes(self) -> list[ProcessInfo]:
        """Running processes this stack started (directly or not), zombies excluded.

        Those of components with a working directory of their own (a subdirectory of
        :attr:`workdir`) included.
        """
        return processes_in(self.workdir, subdirectories=True)

    def stop(
        self,
        sig: signal.Signals = signal.SIGTERM,
        timeout: float = 30.0,
        *,
        group_timeout: float = 10.0,
    ) -> list[ProcessInfo]:
        """Stop every component, newest first, then kill whatever is left.

        Each component gets ``sig`` and up to ``timeout`` seconds to exit with everything in
        its process group; what is left of the group then gets SIGTERM and ``group_timeout``
        more seconds. The last component running also waits, in both stages, for every process
        of the stack to end (task processes run in process groups of their own). Finally every
        process still running from :attr:`workdir` gets SIGKILL.

        Only the component itself gets ``sig`` at first, not its whole group: a scheduler (or
        ``airflow standalone``) stops its LocalExecutor workers (and their forkserver) itself,
        and signalling them at the same time can leave some behind.

        Returns:
            What had to be killed with SIGKILL (also kept in :attr:`force_killed`).
        """
        for component in reversed(self.components):
            if component.killed:
                continue
            pgid = component.process.pid
            others = [c for c in self.components if c is not component and not c.killed]
            last = all(c.process.poll() is not None for c in others)

            def stopped(component: Component = component, pgid: int = pgid, last: bool = last):
                if component.process.poll() is None or _group_alive(pgid):
                    return False
                return not (last and self.processes())

            stages = (
                (lambda pgid=pgid: os.kill(pgid, sig), timeout),
                (lambda pgid=pgid: os.killpg(pgid, signal.SIGTERM), group_timeout),
            )
            for send, wait_s in stages:
                if stopped():
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    send()
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline and not stopped():
                    time.sleep(0.2)
        killed = self.processes()
        for info in killed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(info.pid, signal.SIGKILL)
        for component in self.components:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.force_killed.extend(killed)
        return killed


def _group_alive(pgid: int) -> bool:
    """Whether a non-zombie process of process group ``pgid`` still runs."""
    for pid in _pids():
        state, group = _stat(pid)
        if group == pgid and state not in {"Z", "X", ""}:
            return True
    return False


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _stat(pid: int) -> tuple[str, int]:
    """``(state, pgid)`` of a process, ``("", -1)`` if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "", -1
    return fields[0], int(fields[2])


def processes_in(workdir: Path, *, subdirectories: bool = False) -> list[ProcessInfo]:
    """Running processes (zombies excluded) whose working directory is ``workdir``.

    With ``subdirectories``, also those whose working directory is below ``workdir``.
    """
    found = []
    target = str(workdir.resolve())
    for pid in _pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if cwd != target and not (subdirectories and cwd.startswith(target + os.sep)):
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        state, pgid = _stat(pid)
        if state in {"Z", "X", ""}:
            continue
        text = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        found.append(ProcessInfo(pid, pgid, text))
    return found


def rows(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of a query on a PostgreSQL database (a fresh connection each time)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        return conn.execute(sql, params).fetchall()
