"""Running Airflow in the demo's own process: migrate, load the DAG, one ``dag.test()`` per hour.

Airflow's output goes to log files (:func:`redirect_output`), so the terminal shows only the
demo's lines. A run never raises (:func:`run_hour` returns how it went), only Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from devkit.demo.services import DAG_ID
from devkit.terminal import first_line, show_path
from devkit.workspace import ROOT, SetupError


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


def migrate_airflow_db(log_path: Path) -> None:
    """Create the SQLite metadata database with ``airflow db migrate``.

    Args:
        log_path: Where the command's output goes.

    Raises:
        SetupError: If the migration fails.
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
        raise SetupError(
            f"airflow db migrate exited {result.returncode}; see {show_path(log_path)}"
        )
    print(f"done ({time.monotonic() - started:.1f} s)")


def load_dag(log_path: Path, dag_id: str = DAG_ID) -> Any:
    """Import the DAG the way Airflow does (``DagBag``), with Airflow's output in ``log_path``.

    Args:
        log_path: Where Airflow's import-time output goes.
        dag_id: The DAG to return.

    Returns:
        The DAG (default ``services_requests_sync``).

    Raises:
        SetupError: If the DAG folder has import errors or lacks the DAG.
    """
    with redirect_output(log_path):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        errors = "\n".join(f"{path}: {err}" for path, err in bag.import_errors.items())
        raise SetupError(f"the DAG folder has import errors:\n{errors}")
    if dag_id not in bag.dags:
        raise SetupError(f"no DAG {dag_id} in {ROOT / 'dags'}")
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

    @property
    def problem(self) -> str:
        """What went wrong and where the log is, for the line under a failed run."""
        return f"{self.error or 'the run failed'}; log: {show_path(self.log_path)}"


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
            error=f"{type(exc).__name__}: {first_line(exc)}",
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
