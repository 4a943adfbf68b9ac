"""The demo, run as users run it: ``python -m devkit.demo`` in a subprocess, for real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TABLE_ROW = re.compile(r"^\s+(\d{4}-\d\d-\d\dT\d\d:00Z/\d{4}-\d\d-\d\dT\d\d:00Z)\s.*\s(\S+)$")


def test_demo_runs_two_hours_end_to_end_and_reports_a_match(tmp_path):
    workdir = tmp_path / "demo"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SOURCE_DB_URL", "DEMO_HOURS", "DEMO_FORCE"}
    }
    env["PYTHONIOENCODING"] = "utf-8"
    result = subprocess.run(
        [sys.executable, "-m", "devkit.demo", "--hours", "2", "--workdir", str(workdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, f"stdout:\n{output}\nstderr:\n{result.stderr}"

    rows = [m.groups() for m in map(TABLE_ROW.match, output.splitlines()) if m]
    table = [(interval, mark) for interval, mark in rows if mark in {"✓", "✗"}]
    assert table == [
        ("2026-11-28T09:00Z/2026-11-28T10:00Z", "✓"),
        ("2026-11-28T10:00Z/2026-11-28T11:00Z", "✓"),
    ], output
    for reason in (
        "request_id is NULL",
        "status_id is not an integer: 'open'",
        "opening_date is NULL",
    ):
        assert reason in output
    assert "receiver holds 82 records in 2 batches, 0 duplicates" in output
    assert "demo OK" in output

    # Airflow's chatter went to the logs, and the embedded cluster's data is gone.
    assert "[info" not in output
    assert sorted(p.name for p in workdir.glob("airflow-run-*.log")) == [
        "airflow-run-2026-11-28T0900Z.log",
        "airflow-run-2026-11-28T1000Z.log",
    ]
    assert not (workdir / "pg").exists()


def test_demo_refuses_to_wipe_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "keep-me").write_text("precious")
    result = subprocess.run(
        [sys.executable, "-m", "devkit.demo", "--workdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "not made by the demo" in result.stderr
    assert (tmp_path / "keep-me").read_text() == "precious"


def test_cdc_demo_streams_snapshot_changes_deletes_and_a_late_commit(tmp_path):
    workdir = tmp_path / "demo-cdc"
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DB_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "devkit.demo.cdc", "--workdir", str(workdir)],
        cwd=ROOT,
        env={**env, "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, f"stdout:\n{output}\nstderr:\n{result.stderr}"
    runs = re.findall(r"run (\d)\s.*\s(success|failed)\s+(\d+) records", output)
    # snapshot, changes (20 new + 1 updated old row + 2 tombstones - the deleted new row's
    # insert), the open transaction (nothing yet), then its commit.
    assert runs == [
        ("1", "success", "12"),
        ("2", "success", "22"),
        ("3", "success", "0"),
        ("4", "success", "3"),
    ], output
    assert "receiver     35 requests (2 flagged deleted)" in output
    assert "33 valid: 33 identical at the receiver" in output
    assert "demo OK" in output
    assert not (workdir / "pg").exists()


def test_mysql_demo_runs_both_modes_on_its_own_mariadb(tmp_path):
    """`make demo-mysql`: a private mariadbd, query mode, binlog CDC, deletes, a late commit."""
    workdir = tmp_path / "demo-mysql"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["PYTHONIOENCODING"] = "utf-8"
    result = subprocess.run(
        [sys.executable, "-m", "devkit.demo.mysql", "--workdir", str(workdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, f"stdout:\n{output}\nstderr:\n{result.stderr}"
    assert "1 quarantined" in output  # the malformed row of query mode
    assert re.search(r"3 inserts in a transaction still open\s+success\s+0 records", output)
    assert re.search(r"the same transaction, now committed\s+success\s+3 records", output)
    assert "(2 flagged deleted)" in output
    assert "0 duplicate batches" in output
    assert re.search(r"position\s+saved at binlog\.\d{6}:\d+, GTID 0-7-\d+", output)
    assert output.rstrip().splitlines()[-1].startswith("demo OK")
