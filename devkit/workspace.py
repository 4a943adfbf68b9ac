"""The workspace of a terminal tool (the demos, ``make airflow``) and what it starts there.

Each tool owns one directory (``.demo/``, ``.airflow/``), wiped on every start, and may run an
embedded PostgreSQL cluster in its ``pg/`` subdirectory. :func:`prepare_workspace` wipes only a
directory the tool made (so ``--workdir ~`` cannot delete a home directory) and first stops a
cluster an interrupted run left there; :func:`start_embedded_postgres` and
:func:`stop_embedded_postgres` start that cluster and remove it again, keeping its log. The
tools also prepare their process alike: :data:`WHERE_THE_DAG_GOES` settings dropped,
:func:`use_private_runtime_dir`, :func:`add_repository_to_sys_path`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
"""The repository: ``dags/``, ``plugins/`` and ``include/`` live here."""

WHERE_THE_DAG_GOES = (
    "SERVICES_SYNC_START_DATE",
    "SERVICES_SYNC_SOURCE_CONN_ID",
    "SERVICES_SYNC_API_CONN_ID",
    "SERVICES_SYNC_STATE_CONN_ID",
    "SERVICES_SYNC_STATE_SCHEMA",
    "SERVICES_SYNC_ENDPOINT",
    "SERVICES_SYNC_SQL_DIR",
)
"""The DAG settings that say where it reads, writes and sends: a tool drops the inherited ones
and sets its own. The others (batch size, retries, timeouts) are inherited, so that e.g.
``SERVICES_SYNC_BATCH_SIZE=10 make demo`` shows several batches per hour."""

PG_DIR = "pg"
"""The embedded cluster's directory in a workspace (its data, socket and log)."""


class SetupError(Exception):
    """A tool cannot be set up; the message says why and what to do."""


def prepare_workspace(path: Path, *, default: Path, marker: str, option: str, owner: str) -> Path:
    """Wipe and recreate a tool's workspace.

    A directory is only wiped if it is the tool's default one, is empty, or carries the marker
    file an earlier run of the tool left there.

    Args:
        path: The workspace directory.
        default: The tool's default workspace.
        marker: Name of the marker file the tool leaves in its workspace.
        option: The command-line option naming the workspace, for messages (``--workdir``).
        owner: Who makes the workspace, for messages (``the demo``).

    Returns:
        The absolute workspace path.

    Raises:
        SetupError: If the directory exists, is not empty and is not the tool's workspace.
    """
    path = path.resolve()
    if path.exists():
        if not path.is_dir():
            raise SetupError(f"{option} {path} exists and is not a directory")
        ours = path == default or (path / marker).exists()
        if not ours and any(path.iterdir()):
            raise SetupError(
                f"{option} {path} is not empty and was not made by {owner}; pick another "
                "directory (it is wiped on every start)"
            )
        stop_stale_postgres(path / PG_DIR / "data")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / marker).write_text(f"Workspace of {owner}; wiped on every run.\n")
    return path


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


def use_private_runtime_dir(workspace: Path) -> None:
    """Point ``XDG_RUNTIME_DIR`` at ``workspace/run``, created private (0700).

    Else platformdirs warns and falls back to /tmp. The workspace itself cannot be private:
    as root, PostgreSQL runs as another user below it and must be able to traverse it.
    """
    runtime_dir = workspace / "run"
    runtime_dir.mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)


def add_repository_to_sys_path() -> None:
    """Make ``services_sync`` (in ``plugins/``) and ``devkit`` importable in this process."""
    for path in (str(ROOT / "plugins"), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)


def stop_started(receiver: Any, cluster: Any, workspace: Path) -> None:
    """Stop the reference receiver and the embedded cluster, those of them that were started.

    The cluster's log is kept in ``workspace/postgres.log``, its data deleted.
    """
    if receiver is not None:
        with contextlib.suppress(Exception):
            receiver.stop()
    if cluster is not None:
        stop_embedded_postgres(cluster, workspace)


def start_embedded_postgres(workspace: Path) -> Any:
    """Start a throwaway PostgreSQL cluster in ``workspace/pg``.

    Returns:
        The running :class:`devkit.pgcluster.PostgresCluster`.

    Raises:
        SetupError: If it does not start (what it left is removed, its log kept).
    """
    from devkit.pgcluster import PostgresCluster

    pg_dir = workspace / PG_DIR
    pg_dir.mkdir(exist_ok=True)
    cluster = PostgresCluster(base_dir=pg_dir)
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        stop_embedded_postgres(cluster, workspace)
        raise SetupError(f"the embedded PostgreSQL did not start: {exc}") from None
    return cluster


def stop_embedded_postgres(cluster: Any, workspace: Path) -> None:
    """Stop the cluster, move its log to ``workspace/postgres.log`` and delete its data."""
    pg_dir = Path(cluster.base_dir)
    with contextlib.suppress(Exception):
        cluster.stop()
    with contextlib.suppress(OSError):
        shutil.move(pg_dir / "postgres.log", workspace / "postgres.log")
    shutil.rmtree(pg_dir, ignore_errors=True)
