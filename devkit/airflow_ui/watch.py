"""Watching the running stack: unpausing the query-mode DAG, one line per run state change."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from devkit.airflow_stack import DAG_ID, AirflowStack, Component
from devkit.airflow_ui.stack import Stack
from devkit.workspace import SetupError


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


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


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
