"""The Airflow UI and the "Sync status" view in a real browser (headless Chromium).

A real ``airflow api-server`` (SQLite metadata database, this repository's dags and plugins,
``simple_auth_manager_all_admins`` so no login is needed) serves the React UI and the plugin;
the ledger is a realistic one in a PostgreSQL database that ``services_source_db`` points at,
and two of its runs exist in Airflow (one queued, one failed) so that the view's run states come
from the metadata database as in production.

Chromium is required, not optional: ``.ci/run`` installs it (``apt-get install chromium``).
``SERVICES_SYNC_STATUS_SCREENSHOT=docs/status-view.png`` saves the screenshot of the view
inside the Airflow UI there (how ``docs/status-view.png`` is made).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from devkit.airflow_stack import DAG_ID, AirflowStack, airflow_env, free_port, wait_until
from tests.status_ledger import FAILED, HOUR, IN_PROGRESS, Ledger, build_ledger, insert_ledger

CHROMIUM = Path("/usr/bin/chromium")
STARTUP_TIMEOUT_S = 240
BROWSER_TIMEOUT_S = 120
#: Virtual time the React UI gets to fetch its data and render before the DOM is dumped.
VIRTUAL_TIME_MS = 15_000


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary; the test fails (not skips) without it."""
    path = shutil.which("chromium") or (str(CHROMIUM) if CHROMIUM.exists() else None)
    if path is None:
        pytest.fail(
            "install chromium (apt-get install chromium): the UI tests drive headless Chromium"
        )
    return path


@dataclass
class UI:
    """A running api-server and the ledger it shows."""

    url: str
    ledger: Ledger
    stack: AirflowStack


@pytest.fixture(scope="module")
def ui(pg_cluster, tmp_path_factory) -> Iterator[UI]:
    """An api-server with the plugin, on a migrated SQLite metadata DB, and a seeded ledger."""
    dsn = pg_cluster.create_database(f"status_{uuid.uuid4().hex[:10]}")
    now = datetime.now(UTC)
    ledger = build_ledger(now.replace(minute=0, second=0, microsecond=0))
    insert_ledger(dsn, ledger)

    home = tmp_path_factory.mktemp("airflow-ui")
    port = free_port()
    env = airflow_env(
        home,
        f"sqlite:///{home / 'airflow.db'}",
        {
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW_CONN_SERVICES_SOURCE_DB": dsn,
            "SERVICES_SYNC_START_DATE": "2025-01-01T00:00:00+00:00",
        },
    )
    stack = AirflowStack(home, env)
    try:
        stack.cli("db", "migrate", timeout=300)
        # The api-server does not parse DAGs: put services_requests_sync in the database.
        stack.cli("dags", "reserialize", timeout=300)
        stack.start("api-server")
        wait_until(
            lambda: _get(f"{stack.api_url}/api/v2/monitor/health"),
            timeout=STARTUP_TIMEOUT_S,
            what="the api-server",
            diagnostics=stack.diagnostics,
        )
        _create_runs(stack.api_url, ledger)
        yield UI(stack.api_url, ledger, stack)
    finally:
        stack.stop()


def _get(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _create_runs(url: str, ledger: Ledger) -> None:
    """The newest interval's run queued, the failed interval's run failed, as Airflow runs."""
    token = requests.get(f"{url}/auth/token", timeout=30).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    for ago, state in ((IN_PROGRESS, None), (FAILED, "failed")):
        run_id = ledger.run_id(ago)
        # A manual run covers the hour before its logical date (CronDataIntervalTimetable).
        logical_date = ledger.start(ago) + HOUR
        response = requests.post(
            f"{url}/api/v2/dags/{DAG_ID}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": logical_date.isoformat()},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["data_interval_start"].startswith(
            ledger.start(ago).strftime("%Y-%m-%dT%H:%M")
        )
        if state:
            response = requests.patch(
                f"{url}/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}",
                json={"state": state},
                headers=headers,
                timeout=30,
            )
            assert response.status_code == 200, response.text


def _chromium(binary: str, profile: Path, *args: str) -> str:
    """Run headless Chromium once and return its stdout (kills its whole group on timeout)."""
    argv = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
        raise AssertionError(f"chromium timed out after {BROWSER_TIMEOUT_S} s: {args}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # helpers (zygote, utility) of this run
    assert process.returncode == 0, err.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


def _dom(binary: str, profile: Path, url: str, *markers: str, attempts: int = 3) -> str:
    """The rendered DOM of ``url`` once it contains every marker (the SPA renders late)."""
    dom = ""
    for _ in range(attempts):
        dom = _chromium(
            binary,
            profile,
            "--window-size=1280,900",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}",
            "--dump-dom",
            url,
        )
        if all(marker in dom for marker in markers):
            return dom
    missing = [m for m in markers if m not in dom]
    raise AssertionError(f"{url}: {missing} not in the rendered page:\n{dom[-3000:]}")


def test_the_airflow_ui_shows_the_dag_and_the_sync_status_nav_entry(chromium, ui, tmp_path):
    dom = _dom(
        chromium,
        tmp_path / "profile",
        f"{ui.url}/dags/{DAG_ID}",
        f"<title>{DAG_ID} - Airflow</title>",
        'data-testid="task-check_run_setup"',
        'aria-label="Sync status"',
    )
    assert 'data-testid="task-reconcile_interval"' in dom
    assert 'href="/plugin/sync-status"' in dom  # the plugin's nav entry (external_views)


def test_the_status_view_renders_the_ledger(chromium, ui, tmp_path):
    profile = tmp_path / "profile"
    dom = _dom(chromium, profile, f"{ui.url}/services-sync/", '<table id="intervals">')
    assert dom.count('<tr class="') == 48
    for start, (_, run_id) in ui.ledger.expected.items():
        assert f'data-interval-start="{start.isoformat()}"' in dom
        assert f'title="{run_id}"' in dom
    # Run states from Airflow's metadata database, next to the ledger's figures.
    assert '<span class="st info">in progress</span>' in dom
    assert '<span class="st bad">failed</span>' in dom
    assert "not acknowledged" in dom
    assert dom.count('<g class="slot') == 48

    # Inside the Airflow UI: the nav entry's page frames the view.
    embedded = _dom(
        chromium, profile, f"{ui.url}/plugin/sync-status", 'src="/services-sync/"', "Sync status"
    )
    assert 'title="Sync status"' in embedded
    screenshot = tmp_path / "status-view.png"
    _chromium(
        chromium,
        profile,
        "--window-size=1400,1000",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
        f"--screenshot={screenshot}",
        f"{ui.url}/plugin/sync-status",
    )
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 50_000  # a rendered page, not a blank one
    if target := os.environ.get("SERVICES_SYNC_STATUS_SCREENSHOT"):
        shutil.copyfile(screenshot, target)


def test_the_status_json_is_served_by_the_api_server(ui):
    data = requests.get(f"{ui.url}/services-sync/api/intervals", timeout=60).json()
    assert data["problem"] is None
    statuses = {i["run_id"]: (i["status"], i["run_state"]) for i in data["intervals"]}
    assert statuses[ui.ledger.run_id(IN_PROGRESS)] == ("in progress", "queued")
    assert statuses[ui.ledger.run_id(FAILED)] == ("failed", "failed")
