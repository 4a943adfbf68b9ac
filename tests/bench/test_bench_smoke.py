"""``make bench-smoke`` keeps working: the benchmark's smoke mode fills every column of its table.

Benchmarks report, they do not assert times: this only checks that the smoke run (1k rows,
every variant: ``dags test``, the gzip connection extra, the production path on a scheduler +
LocalExecutor, both peers) finishes and writes complete tables, including the per-run task
instances, XCom bytes and outbox bytes, so the benchmark cannot rot.
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

    markdown = out.read_text()
    header, rows = _table(markdown, "## Results")
    assert header[:3] == ["changed rows", "variant", "result"]
    variants = [row[1] for row in rows]
    for name in (
        "floor",
        "**DAG** (",
        "DAG, `Content-Encoding: gzip`",
        "**DAG, production path**",
        "peer (a)",
        "peer (b)",
    ):
        assert any(v.startswith(name) for v in variants), (name, variants)
    for row in rows:
        assert len(row) == len(header), row
        assert all(cell and cell != "n/a" for cell in row), row
        assert row[0] == "1,000"
        assert row[2] == "ok", row  # at 1k rows every variant delivers

    # Per run: task instances, XCom bytes and outbox bytes of every DAG variant.
    header, rows = _table(markdown, "## Per run: task instances, XCom, outbox")
    assert header[2:5] == ["task instances per run", "XCom rows", "XCom bytes"]
    dag_rows = [row for row in rows if not row[1].startswith("peer")]
    assert len(dag_rows) == 3, rows  # dags test, gzip, production path
    for row in dag_rows:
        assert all(cell and cell not in ("n/a", "0") for cell in row), row
    header, rows = _table(markdown, "## Production path: scheduler + LocalExecutor")
    assert [(row[0], row[2]) for row in rows] == [("1,000", "ok")]
    assert all(cell and cell != "n/a" for cell in rows[0]), rows

    raw = json.loads(out.with_suffix(".json").read_text())
    runs = raw["runs"]["1000"]
    assert runs["dag"]["same_bytes_as_floor"] is True
    assert runs["dag_gzip"]["same_bytes_as_floor"] is True  # gzip on the wire, same JSON
    for name in ("dag", "dag_gzip", "dag_sched"):
        run = runs[name]
        assert run["ok"], (name, run.get("detail"))
        assert run["task_instances"] <= 12, (name, run["tasks"])
        assert 0 < run["xcom"]["bytes"] < 64 * 1024, (name, run["xcom"])
        box = run["outbox"]
        assert box["bodies"] == box["batches"] == 1, (name, box)
        assert 0 < box["outbox_bytes"] < box["json_bytes"], (name, box)
    sched = runs["dag_sched"]
    assert sched["wall_s"] > 0 and sched["peak_rss_mb"] > 0
    assert raw["scheduler"]["dag_sched"]["force_killed"] == []  # the stack stopped cleanly
    assert raw["source_cost"] and raw["parse"]["project"]["files"]

    # Parse time as the dag-processor pays it, for every DAG file, next to `dags report`'s.
    header, rows = _table(markdown, "## Parse time")
    assert header[4:6] == ["`dags report` s", "dag-processor s"]
    project = [row for row in rows if row[0] == "dags/"]
    assert sorted(row[1] for row in project) == sorted(p.name for p in (ROOT / "dags").glob("*.py"))
    assert all(float(row[5]) > 0 for row in project), project
