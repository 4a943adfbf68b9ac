"""``make bench-binlog`` keeps working: both holds read the whole transaction and are reported.

Benchmarks report, they do not assert times or memory: this runs the make target as users do, on
12,000 rows (more than the product's hold), and checks that it fills its table, so the
benchmark cannot rot.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_the_binlog_hold_benchmark_reads_every_row_with_both_holds(tmp_path):
    out = tmp_path / "binlog_hold.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SERVICES_SYNC_"))}
    subprocess.run(
        ["make", "--no-print-directory", "bench-binlog", f"BENCH_ARGS=--rows 12000 --out {out}"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    facts = json.loads(out.with_suffix(".json").read_text())
    reads = facts["reads"]
    assert [reads[name]["rows"] for name in ("bounded", "whole")] == [12_000, 12_000]
    assert reads["bounded"]["hold_rows"] < 12_000 < reads["whole"]["hold_rows"]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # header + one row per hold
    assert all(cell.strip() for row in rows for cell in row.strip("|").split("|"))
