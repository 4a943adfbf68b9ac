"""The watchdog on real PostgreSQL: how far delivery is, one alert per late spell, its command."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from services_sync.core import state, watchdog
from services_sync.core.config import load_settings
from services_sync.core.db import connect
from tests.smtp_inbox import smtp_inbox

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def inbox(monkeypatch):
    with smtp_inbox(monkeypatch) as inbox:
        yield inbox


@pytest.fixture
def ledger(source_db):
    with connect(load_settings().state_conn_id) as conn:
        state.ensure_state_tables(conn, "services_sync")
    return source_db


def delivered(dsn: str, interval_end: datetime, *, finished: bool = True) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO services_sync.delivery_runs (dag_id, run_id, interval_start, interval_end,"
            " rows_extracted, batches, batches_posted, rows_sent, rows_quarantined, duplicates,"
            " built_at, finished_at) VALUES ('services_requests_sync', %s, %s, %s, 1, 1, 1, 1, 0,"
            " 0, now(), %s)",
            (
                f"run-{interval_end.isoformat()}",
                interval_end - timedelta(hours=1),
                interval_end,
                datetime.now(UTC) if finished else None,
            ),
        )


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services_sync.core.watchdog", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_late_delivery_alerts_once_and_recovery_once(ledger, inbox, monkeypatch):
    monkeypatch.setenv("SERVICES_SYNC_MAX_DELIVERY_LAG_MIN", "60")
    now = datetime.now(UTC)
    delivered(ledger, now - timedelta(hours=5))
    delivered(ledger, now - timedelta(minutes=30), finished=False)  # built, never finished

    first = watchdog.check_delivery()
    assert (first["late"], first["alert"]) == (True, "late")
    assert first["lag_min"] >= 299
    again = watchdog.check_delivery()  # within SERVICES_SYNC_WATCHDOG_REPEAT_MIN: quiet
    assert (again["late"], again["alert"]) == (True, None)
    (mail,) = inbox.messages
    assert mail["Subject"].startswith("[services-sync] nothing delivered for 5 h")

    delivered(ledger, now - timedelta(minutes=10))
    back = watchdog.check_delivery()
    assert (back["late"], back["alert"]) == (False, "recovered")
    assert [m["Subject"] for m in inbox.messages][1] == "[services-sync] delivery is on time again"
    assert watchdog.check_delivery()["alert"] is None


def test_an_acknowledged_cdc_window_counts_as_delivered(ledger, monkeypatch):
    monkeypatch.setenv("SERVICES_SYNC_MAX_DELIVERY_LAG_MIN", "60")
    delivered(ledger, datetime.now(UTC) - timedelta(hours=6))
    with connect(load_settings().state_conn_id) as conn:
        state.ensure_state_tables(conn, "services_sync", cdc=True)
        conn.execute(
            "INSERT INTO services_sync.cdc_windows (slot_name, upto_lsn, status, opened_by_run)"
            " VALUES ('s', '0/1', 'acknowledged', 'manual')"
        )
    assert watchdog.check_delivery()["late"] is False


def test_the_command_for_when_the_scheduler_is_down(source_db, monkeypatch):
    """README, Operate → Alerts: exit 1 when late (or nothing delivered), 0 when on time."""
    nothing = command()
    assert (nothing.returncode, nothing.stdout.strip()) == (1, "LATE: nothing delivered yet")
    with connect(load_settings().state_conn_id) as conn:
        state.ensure_state_tables(conn, "services_sync")
    delivered(source_db, datetime.now(UTC) - timedelta(hours=4))
    late = command()
    assert late.returncode == 1, late.stderr
    assert late.stdout.startswith("LATE: delivered up to ")
    assert "(threshold 3 h 00 min)" in late.stdout
    ok = command("--max-lag-min", "300")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: delivered up to ")
