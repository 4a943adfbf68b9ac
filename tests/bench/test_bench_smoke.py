"""``make bench-smoke`` keeps working: the benchmark's smoke mode fills every column of its table.

Benchmarks report, they do not assert times: this only checks that the smoke run (1k rows,
every variant) finishes and writes a complete results table, so the benchmark cannot rot.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def _table(markdown: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """Header and body rows of the first table below ``heading`` (``\\|`` is not a border)."""
    table = []
    for line in markdown.split(f"\n{heading}\n", 1)[1].splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])])
        elif table:
            break
    return table[0], table[2:]


def test_the_smoke_benchmark_fills_every_column(tmp_path):
    out = tmp_path / "results.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SERVICES_SYNC_"))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--smoke",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    header, rows = _table(out.read_text(), "## Results")
    assert header[:3] == ["changed rows", "variant", "result"]
    variants = [row[1] for row in rows]
    for name in ("floor", "**DAG**", "peer (a)", "peer (b)"):
        assert any(v.startswith(name) for v in variants), (name, variants)
    for row in rows:
        assert len(row) == len(header), row
        assert all(cell and cell != "n/a" for cell in row), row
        assert row[0] == "1,000"
        assert row[2] == "ok", row  # at 1k rows every variant delivers

    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["runs"]["1000"]["dag"]["same_bytes_as_floor"] is True
    assert raw["source_cost"] and raw["parse"]["project"]["files"]
