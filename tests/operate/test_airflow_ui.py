"""``make airflow`` as users run it: ``python -m devkit.airflow_ui`` in a subprocess, for real.

It starts ``airflow standalone`` (or, ``make airflow EXECUTOR=celery``, a private Redis and the
Celery components) on an embedded PostgreSQL with seeded changes and the reference receiver; the
test logs in through the REST API like the UI does, checks the DAG is there as documented, waits
for a caught-up run to succeed, then presses "Ctrl-C" (SIGINT to the process group) and checks
that nothing it started is left running.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from devkit.airflow_stack import (
    DAG_ID,
    ROOT,
    free_port,
    health,
    is_healthy,
    processes_in,
    wait_until,
)

pytestmark = pytest.mark.e2e

STARTUP_TIMEOUT_S = 300
RUN_TIMEOUT_S = 300
STOP_TIMEOUT_S = 120
DAG_FILE = ROOT / "dags" / "services_requests_sync.py"


@dataclass
class UI:
    """The running tool."""

    process: subprocess.Popen[bytes]
    home: Path
    output_path: Path
    url: str
    executor: str

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def diagnostics(self) -> str:
        parts = [f"--- output:\n{self.output()}"]
        for log in sorted(self.home.glob("*.log")):  # standalone.log, or one per component
            parts.append(f"--- {log.name} (tail):\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise AssertionError(f"devkit.airflow_ui exited with {code}\n{self.diagnostics()}")


@pytest.fixture(params=["local", "celery"])
def ui(request, tmp_path) -> Iterator[UI]:
    """``make airflow`` and ``make airflow EXECUTOR=celery``."""
    home = tmp_path / "airflow-ui"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SOURCE_DB_URL", "DEMO_FORCE", "AIRFLOW_UI_PORT"}
    }
    env["PYTHONIOENCODING"] = "utf-8"
    output_path = tmp_path / "airflow-ui.out"
    with output_path.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devkit.airflow_ui",
                "--home",
                str(home),
                "--port",
                str(port),
                "--receiver-port",
                "0",
                "--hours",
                "2",
                "--executor",
                request.param,
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = UI(process, home, output_path, f"http://127.0.0.1:{port}", request.param)
    try:
        yield running
    finally:
        if process.poll() is None:  # the test failed before stopping it: clean up hard
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT_S)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        pids = [p.pid for p in processes_in(home / "cwd", subdirectories=True)]
        pids += [p.pid for p in processes_in(home / "redis")] + [p for p, _ in _postgres_of(home)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_make_airflow_serves_the_dag_logs_in_and_stops_cleanly_on_ctrl_c(ui):
    wait_until(
        lambda: ui.alive() or is_healthy(health(ui.url)),
        timeout=STARTUP_TIMEOUT_S,
        what="Airflow to report healthy components",
        interval=1,
        diagnostics=ui.diagnostics,
    )
    wait_until(
        lambda: ui.alive() or "login        admin / admin" in ui.output(),
        timeout=30,
        what="the URL and login to be printed",
        diagnostics=ui.diagnostics,
    )
    output = ui.output()
    assert f"Airflow UI   http://localhost:{ui.url.rsplit(':', 1)[1]}" in output
    assert "Ctrl-C" in output

    login = requests.post(
        f"{ui.url}/auth/token", json={"username": "admin", "password": "admin"}, timeout=30
    )
    assert login.status_code == 201, login.text
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    assert (
        requests.post(
            f"{ui.url}/auth/token", json={"username": "admin", "password": "wrong"}, timeout=30
        ).status_code
        == 401
    )

    dag = api.get(f"{ui.url}/api/v2/dags/{DAG_ID}/details", timeout=30)
    assert dag.status_code == 200, dag.text
    details = dag.json()
    assert details["is_paused"] is False
    # One mode per table: the CDC DAG stays paused (both on would send every change twice).
    cdc = api.get(f"{ui.url}/api/v2/dags/services_requests_cdc/details", timeout=30).json()
    assert cdc["is_paused"] is True
    watchdog = api.get(f"{ui.url}/api/v2/dags/services_sync_watchdog/details", timeout=30)
    assert watchdog.json()["is_paused"] is False
    assert details["doc_md"] == ast.get_docstring(ast.parse(DAG_FILE.read_text())), "doc_md"
    assert set(details["params"]) == {"batch_size", "max_batch_bytes", "unrelated_wait_s"}
    for name, param in details["params"].items():
        assert param["description"], f"param {name} has no description"
        assert param["schema"]["type"] == "integer"

    def a_run_succeeded() -> int:
        ui.alive()
        response = api.get(
            f"{ui.url}/api/v2/dags/{DAG_ID}/dagRuns", params={"state": "success"}, timeout=30
        )
        response.raise_for_status()
        return response.json()["total_entries"]

    wait_until(
        a_run_succeeded,
        timeout=RUN_TIMEOUT_S,
        what="a caught-up run to succeed",
        interval=2,
        diagnostics=ui.diagnostics,
    )
    # The CLI command it prints reaches this stack (not an empty SQLite in ~/airflow).
    assert f"make airflow-cli ARGS='dags list-runs {DAG_ID}'" in ui.output()
    cli = subprocess.run(
        ["make", "--no-print-directory", "airflow-cli", f"AIRFLOW_STACK={ui.home}",
         f"ARGS=dags list-runs {DAG_ID} -o json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    runs = json.loads(next(x for x in cli.stdout.splitlines() if x.startswith("[")))
    assert any(r["state"] == "success" for r in runs), runs

    receiver = re.search(r"^receiver\s+(http://\S+)", ui.output(), re.MULTILINE)
    assert receiver, ui.output()
    stats = requests.get(f"{receiver.group(1)}/inspect/stats", timeout=30).json()
    assert stats["records"] > 0
    assert stats["rejected"] == 0

    # "Ctrl-C": SIGINT to the process group, as a terminal does.
    os.killpg(ui.process.pid, signal.SIGINT)
    try:
        code = ui.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"devkit.airflow_ui did not stop on SIGINT\n{ui.diagnostics()}")
    output = ui.output()
    assert code == 0, ui.diagnostics()
    assert "stopped; logs in" in output
    assert "killed what did not stop in time" not in output, output
    assert processes_in(ui.home / "cwd") == [], "Airflow processes left running"
    assert _postgres_of(ui.home) == [], "PostgreSQL left running"
    assert not (ui.home / "pg").exists()
    assert processes_in(ui.home / "redis") == [], "redis-server left running"
    if ui.executor == "local":
        assert (ui.home / "standalone.log").exists()
    else:
        assert "redis        redis://127.0.0.1:" in output
        # The tasks ran on the Celery worker (the executor is not LocalExecutor in disguise).
        assert "Executing workload in Celery" in (ui.home / "celery-worker.log").read_text()


def _postgres_of(home: Path) -> list[tuple[int, str]]:
    """Running processes whose command line names the tool's embedded cluster."""
    needle = str(home / "pg").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmdline and state not in {"Z", "X"}:
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found
