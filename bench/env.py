"""Environments, processes and services the benchmark starts (and stops).

Airflow's environment and processes come from :mod:`devkit.airflow_stack`; this module adds
what only the benchmark needs: a cleaner environment (no inherited connections, DAG settings or
Python paths; a bytecode cache), SQLite homes for ``airflow dags test``, receiver processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devkit.airflow_stack import (
    AIRFLOW,
    DEPLOYMENT_VARIABLES,
    api_connection,
    free_port,
    inherited_env,
)
from devkit.airflow_stack import airflow_env as stack_env

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PYTHON = sys.executable

#: Dropped besides what :func:`devkit.airflow_stack.inherited_env` always drops.
_DROPPED = (
    *DEPLOYMENT_VARIABLES,
    "SERVICES_SYNC_",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONPYCACHEPREFIX",
)

#: Where child processes keep bytecode (None: as inherited); see :func:`set_bytecode_cache`.
_PYCACHE: Path | None = None


def set_bytecode_cache(path: Path | None) -> None:
    """Give every child process a bytecode cache in ``path`` (``PYTHONPYCACHEPREFIX``).

    A deployed Airflow imports from ``.pyc`` files. A venv installed by uv holds none, and with
    ``PYTHONDONTWRITEBYTECODE=1`` in the environment every process would compile Airflow from
    source on each start (about 13 s per ``airflow`` process on the reference machine), which
    is not what a deployment pays. The cache lives outside the venv, so the venv is not touched.
    """
    global _PYCACHE
    _PYCACHE = path


def clean_env() -> dict[str, str]:
    """This process' environment without anything that could point Airflow or the DAG elsewhere."""
    env = inherited_env(drop=_DROPPED)
    if _PYCACHE is None:
        for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"):
            if name in os.environ:
                env[name] = os.environ[name]
    else:
        env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE)
    return env


def python_env() -> dict[str, str]:
    """For the benchmark's own helper processes: the repository and ``plugins/`` importable."""
    return {**clean_env(), "PYTHONPATH": f"{ROOT / 'plugins'}{os.pathsep}{ROOT}"}


def airflow_env(
    home: Path,
    dags_folder: Path,
    *,
    source_dsn: str,
    api_port: int,
    start_date: str,
    plugins_folder: Path = ROOT / "plugins",
    gzip: bool = False,
) -> dict[str, str]:
    """A clean ``AIRFLOW_HOME`` (SQLite metadata), one DAGs folder, the two connections.

    The DAG's own settings are the benchmark's: the start date before every benchmark hour, no
    clock-skew wait (the hours are long past) and a 1 s gate poke. Everything else (lanes,
    batch size, the stuck-run DeadlineAlert, which ``dags test`` tolerates through
    ``services_sync.dag_factory.allow_dag_test``) is the DAG's default. ``gzip``: see
    :func:`devkit.airflow_stack.api_connection`.
    """
    runtime = home / "run"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    return stack_env(
        home,
        f"sqlite:///{home / 'airflow.db'}",
        {
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "XDG_RUNTIME_DIR": str(runtime),
            "AIRFLOW_CONN_SERVICES_SOURCE_DB": source_dsn,
            "AIRFLOW_CONN_SERVICES_API": api_connection(api_port, gzip=gzip),
            "SERVICES_SYNC_START_DATE": start_date,
            "SERVICES_SYNC_CLOCK_SKEW_S": "0",
            "SERVICES_SYNC_GATE_POKE_S": "1",
        },
        base=clean_env(),
        dags_folder=dags_folder,
        plugins_folder=plugins_folder,
    )


def http_json(method: str, url: str, timeout: float = 600) -> object:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - our own loopback URL
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.load(response)


class Receiver:
    """The reference receiver as its own process (it must not share a GIL with the harness)."""

    def __init__(self, module: str, log_path: Path) -> None:
        self.module = module
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Receiver:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(PYTHON, "-m", self.module, "--host", "127.0.0.1"),
                    *("--port", str(self.port), "--log-level", "warning"),
                ],
                env=python_env(),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited {self.proc.returncode}: {self.log_path}")
            with contextlib.suppress(OSError):
                http_json("GET", f"{self.url}/healthz", timeout=2)
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.module} did not come up on {self.url}")

    def reset(self) -> None:
        http_json("DELETE", f"{self.url}/inspect")

    def stats(self) -> dict:
        return http_json("GET", f"{self.url}/inspect/stats")  # type: ignore[return-value]

    def body_digests(self) -> list[str]:
        batches = http_json("GET", f"{self.url}/inspect/batches?include_requests=false")
        return [b["body_sha256"] for b in batches]  # type: ignore[union-attr]

    def rss(self) -> int:
        import psutil

        try:
            return psutil.Process(self.proc.pid).memory_info().rss if self.proc else 0
        except psutil.Error:
            return 0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def migrate(env: dict[str, str], log_path: Path) -> float:
    """``airflow db migrate`` into the env's SQLite file; returns seconds."""
    started = time.perf_counter()
    with log_path.open("ab") as log:
        subprocess.run(
            [*AIRFLOW, "db", "migrate"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return time.perf_counter() - started


def clone_home(migrated: Path, home: Path) -> None:
    """Another clean AIRFLOW_HOME from an already migrated metadata DB (faster than migrating)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy2(migrated / "airflow.db", home / "airflow.db")
