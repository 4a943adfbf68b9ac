"""Running Airflow: the ``airflow`` CLI and long-lived components, and stopping all of it.

:class:`AirflowStack` runs the ``airflow`` CLI and long-lived components (scheduler,
dag-processor, api-server, triggerer, Celery workers, or ``airflow standalone``) as
subprocesses, each in its own process group with its output in a log file, and stops
everything it started: SIGTERM (or SIGINT) to each component, SIGTERM to what is left of its
process group, then SIGKILL to whatever remains (found by working directory, see
:mod:`devkit.airflow_stack.processes`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from devkit.airflow_stack.checks import (
    HEALTHY_PARTS,
    StackError,
    health,
    is_healthy,
    rows,
    wait_until,
)
from devkit.airflow_stack.env import AIRFLOW, DAG_ID, metadata_dsn
from devkit.airflow_stack.processes import ProcessInfo, group_alive, processes_in


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
                if component.process.poll() is None or group_alive(pgid):
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
