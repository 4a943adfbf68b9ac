"""Real Airflow components in the background, for the operate tests.

:class:`AirflowStack` runs the ``airflow`` CLI and long-lived components (scheduler,
dag-processor, api-server, or ``airflow standalone``) as subprocesses, each in its own process
group with its output in a log file, and stops everything it started: SIGTERM (or SIGINT) to
each component, SIGTERM to what is left of its process group, then SIGKILL to whatever remains.

Finding "whatever is left" is the hard part. Airflow puts every task process in a process group
of its own (``os.setpgid`` in the task supervisor), and ``setproctitle`` overwrites the memory
``/proc/<pid>/environ`` reads, so neither the process group nor an environment marker finds all
descendants. The working directory does: every process is started in a directory of its own
(:attr:`AirflowStack.workdir`) and Airflow never changes directory, so a process whose
``/proc/<pid>/cwd`` is that directory was started by this stack.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "services_requests_sync"

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    from devkit.pgcluster import free_port as _free_port

    return _free_port()


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
        AssertionError: On timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{diagnostics()}" if diagnostics else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def metadata_dsn(sql_alchemy_conn: str) -> str:
    """The libpq URL of a ``postgresql+psycopg://`` SQLAlchemy URL."""
    scheme, rest = sql_alchemy_conn.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def airflow_env(
    home: Path,
    sql_alchemy_conn: str,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every Airflow process of a stack.

    Starts from ``os.environ`` (so ``AIRFLOW_CONN_*`` and ``SERVICES_SYNC_*`` set by fixtures
    reach the components), drops inherited ``AIRFLOW__*`` settings, and points Airflow at
    ``home``, this repository's ``dags/`` and ``plugins/`` and the metadata database.

    Args:
        home: ``AIRFLOW_HOME``.
        sql_alchemy_conn: Metadata database URL.
        overrides: Extra variables, applied last.

    Returns:
        The environment.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AIRFLOW__") and name not in {"AIRFLOW_HOME", "AIRFLOW_CONFIG"}
    }
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # The scheduler and the api-server must share the JWT secret (task tokens), and
            # the log servers of the scheduler and triggerer must not collide with another
            # Airflow on this machine.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # `airflow standalone` starts its components as `airflow ...` from PATH.
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides or {})
    return env


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


def scheduler_stack_env(
    home: Path, metadata_dsn_: str, api_port: int, extra: Mapping[str, str]
) -> dict[str, str]:
    """Environment of a scheduler + dag-processor + api-server stack (LocalExecutor).

    The scheduler creates no run of its own (``use_job_schedule`` off): the tests create runs
    with the CLI. ``extra`` adds or overrides settings (the DAG's ``SERVICES_SYNC_*`` ones).
    """
    return airflow_env(
        home,
        "postgresql+psycopg" + metadata_dsn_[len("postgresql") :],
        {
            # LocalExecutor's task processes report to the Execution API of an api-server.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
            "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": ",".join(FORKSERVER_PRELOAD),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "SERVICES_SYNC_CATCHUP": "off",
            "SERVICES_SYNC_GATE_POKE_S": "1",
            **extra,
        },
    )


#: The Celery deployment that docker-compose.yaml describes and the Celery stack test runs
#: (tests/operate/test_celery_stack.py): the same components, each in a process (a container) of
#: its own, the worker :data:`CELERY_WORKERS` times, and the same :data:`CELERY_SETTINGS`.
#: tests/test_compose.py holds docker-compose.yaml to these, so the file is exercised by proxy.
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
#: URL schemes: the broker is Redis, Celery's results go to the metadata database (PostgreSQL)
#: through SQLAlchemy, and Airflow reaches that database with psycopg 3.
CELERY_BROKER_SCHEME = "redis"
CELERY_RESULT_BACKEND_SCHEME = "db+postgresql"
METADATA_DB_SCHEME = "postgresql+psycopg"


def celery_stack_env(
    home: Path,
    metadata_dsn_: str,
    api_port: int,
    broker_url: str,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """Environment of a CeleryExecutor stack: :func:`scheduler_stack_env` plus Celery.

    :data:`CELERY_SETTINGS`, the broker, Celery's result backend on the metadata database.
    The LocalExecutor's forkserver settings are dropped. ``extra`` comes last.
    """
    env = scheduler_stack_env(home, metadata_dsn_, api_port, {})
    for name in ("AIRFLOW__SCHEDULER__MP_START_METHOD", "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD"):
        env.pop(name)
    env.update(CELERY_SETTINGS)
    env.update(
        {
            # As many executor slots as the workers have. The executor counts a task as
            # running until Celery's result backend reports it done, seconds after it is: with
            # LocalExecutor's 4 the scheduler waited on finished tasks.
            "AIRFLOW__CORE__PARALLELISM": str(
                CELERY_WORKERS * int(CELERY_SETTINGS["AIRFLOW__CELERY__WORKER_CONCURRENCY"])
            ),
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": (
                CELERY_RESULT_BACKEND_SCHEME + metadata_dsn_[len("postgresql") :]
            ),
            **extra,
        }
    )
    return env


@contextlib.contextmanager
def redis_server(directory: Path, timeout: float = 30) -> Iterator[str]:
    """A Redis server of our own on a free loopback port, no persistence; yields its URL.

    Started from the ``redis-server`` binary (Debian package ``redis-server``, which
    ``devkit/ensure-os-packages`` installs), never a server the machine may already run.
    """
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise AssertionError(
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
    url = f"redis://127.0.0.1:{port}/0"
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
        raise AssertionError(f"redis-server exited with {process.returncode}:\n{log[-2000:]}")
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


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
        home: ``AIRFLOW_HOME``; logs go to ``home/component-logs``.
        env: The environment, see :func:`airflow_env`.

    Attributes:
        meta_dsn: libpq URL of the metadata database (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``).
        api_url: Base URL of the api-server (from ``AIRFLOW__API__PORT``, default 8080).
    """

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        self.home = home
        self.env = dict(env)
        self.meta_dsn = metadata_dsn(self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        self.api_url = f"http://127.0.0.1:{self.env.get('AIRFLOW__API__PORT', '8080')}"
        self.workdir = home / "cwd"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = home / "component-logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.components: list[Component] = []
        self.force_killed: list[ProcessInfo] = []

    # -- the CLI -------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 180, check: bool = True) -> str:
        """Run ``airflow <args>`` and return its stdout.

        Raises:
            AssertionError: If ``check`` and it exits non-zero (with its output).
        """
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
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
            self._healthy,
            timeout=timeout,
            what="the api-server to report a healthy scheduler and dag-processor",
            diagnostics=self.diagnostics,
        )

    def _dag_serialized(self) -> bool:
        self.check_running()
        errors = rows(self.meta_dsn, "SELECT filename, stacktrace FROM import_error")
        if errors:
            raise AssertionError(f"DAG import errors: {errors}")
        found = rows(self.meta_dsn, "SELECT 1 FROM serialized_dag WHERE dag_id = %s", (DAG_ID,))
        return bool(found)

    def _healthy(self) -> bool:
        import requests

        self.check_running()
        try:
            health = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        return all(
            (health.get(part) or {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "dag_processor")
        )

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
        argv = list(command) or [sys.executable, "-m", "airflow", name]
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
        for component in self.components:
            code = component.process.poll()
            if code is not None and not component.killed:
                raise AssertionError(
                    f"{component.name} exited with {code}:\n{self.log(component.name)[-4000:]}"
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
        self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0
    ) -> list[ProcessInfo]:
        """Stop every component, newest first, then kill whatever is left.

        Each component gets ``sig`` and up to ``timeout`` seconds to exit with everything in
        its process group; what is left of the group then gets SIGTERM and 10 more seconds.
        Finally every process still running from :attr:`workdir` gets SIGKILL.

        Only the component itself gets ``sig`` at first, not its whole group: a scheduler
        stops its LocalExecutor workers (and their forkserver) itself, and signalling them at
        the same time can leave some behind.

        Returns:
            What had to be killed with SIGKILL (also kept in :attr:`force_killed`).
        """
        for component in reversed(self.components):
            if component.killed:
                continue
            pgid = component.process.pid
            stages = (
                (lambda pgid=pgid: os.kill(pgid, sig), timeout),
                (lambda pgid=pgid: os.killpg(pgid, signal.SIGTERM), 10.0),
            )
            for send, wait_s in stages:
                if component.process.poll() is not None and not _group_alive(pgid):
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    send()
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    if component.process.poll() is not None and not _group_alive(pgid):
                        break
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
