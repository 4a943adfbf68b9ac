"""One function per thing the benchmark measures; each returns a plain dict for results.json."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import statistics
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql

from bench.env import PYTHON, ROOT, Receiver, python_env
from bench.procmon import MIB, ProcStats, run_measured

DAG_ID = "services_requests_sync"
NAIVE_DAG_ID = "services_requests_naive"
HOUR = timedelta(hours=1)


def _load() -> float:
    return os.getloadavg()[0]


def _proc_fields(stats: ProcStats) -> dict[str, Any]:
    return {
        "wall_s": stats.wall_s,
        "returncode": stats.returncode,
        "timed_out": stats.timed_out,
        "peak_rss_mb": stats.peak_rss / MIB,
        "peak_rss_tree_mb": stats.peak_rss_tree / MIB,
        "largest_process": stats.largest,
        "processes": stats.processes,
        "rss_samples": stats.samples,
    }


def _last_json_line(path: Path) -> dict[str, Any]:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


# --------------------------------------------------------------------------------------------
# Airflow DAG runs
# --------------------------------------------------------------------------------------------


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def dag_run_facts(db: Path, dag_id: str) -> dict[str, Any]:
    """The newest run of ``dag_id`` in a SQLite metadata DB: state and its task instances."""
    with sqlite3.connect(db) as con:
        run = con.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
            (dag_id,),
        ).fetchone()
        if run is None:
            return {"run_id": None, "state": "no run", "task_instances": 0, "tasks": {}}
        rows = con.execute(
            "SELECT task_id, map_index, state, start_date, end_date, try_number"
            " FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run[0]),
        ).fetchall()
    tasks: dict[str, dict[str, Any]] = {}
    starts, ends = [], []
    for task_id, _map_index, state, start, end, tries in rows:
        item = tasks.setdefault(task_id, {"count": 0, "seconds": 0.0, "states": {}, "tries": 0})
        item["count"] += 1
        item["tries"] += tries or 0
        item["states"][state or "none"] = item["states"].get(state or "none", 0) + 1
        s, e = _ts(start), _ts(end)
        if s and e:
            item["seconds"] += (e - s).total_seconds()
            starts.append(s)
            ends.append(e)
    span = (max(ends) - min(starts)).total_seconds() if starts else 0.0
    return {
        "run_id": run[0],
        "state": run[1],
        "task_instances": len(rows),
        "tasks": tasks,
        "task_span_s": span,
    }


def xcom_sqlite(db: Path, dag_id: str, run_id: str | None) -> dict[str, int]:
    """Rows and bytes (JSON text) of the XComs a run stored in a SQLite metadata DB."""
    if run_id is None:
        return {"rows": 0, "bytes": 0}
    with sqlite3.connect(db) as con:
        n, size = con.execute(
            "SELECT count(*), coalesce(sum(length(CAST(value AS BLOB))), 0) FROM xcom"
            " WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        ).fetchone()
    return {"rows": int(n), "bytes": int(size)}


def outbox_footprint(dsn: str, schema: str, dag_id: str, run_id: str | None) -> dict[str, Any]:
    """What a run left in the delivery buffer: outbox bodies (gzip) and their JSON size.

    ``outbox_bytes``: ``sum(octet_length(body))`` of the run's rows in ``<schema>.outbox``;
    ``json_bytes``: ``sum(body_bytes)`` of its ledger rows (the uncompressed JSON bodies);
    ``stored_bytes``: ``sum(stored_bytes)`` of the ledger (the gzip size as written, also
    after the retention deleted a body). Empty when the state tables do not exist.
    """
    if run_id is None:
        return {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"{schema}.outbox",)).fetchone()[0] is None:
            return {}
        bodies, outbox_bytes = conn.execute(
            pgsql.SQL(
                "SELECT count(*), coalesce(sum(octet_length(body)), 0) FROM {}.outbox"
                " WHERE dag_id = %s AND run_id = %s"
            ).format(pgsql.Identifier(schema)),
            (dag_id, run_id),
        ).fetchone()
        batches, json_bytes, stored, sent, lanes = conn.execute(
            pgsql.SQL(
                "SELECT count(*), coalesce(sum(body_bytes), 0), coalesce(sum(stored_bytes), 0),"
                " coalesce(sum(rows_sent), 0), count(DISTINCT lane) FROM {}.delivery_ledger"
                " WHERE dag_id = %s AND run_id = %s"
            ).format(pgsql.Identifier(schema)),
            (dag_id, run_id),
        ).fetchone()
    return {
        "schema": schema,
        "batches": int(batches),
        "bodies": int(bodies),
        "outbox_bytes": int(outbox_bytes),
        "json_bytes": int(json_bytes),
        "stored_bytes": int(stored),
        "rows_sent": int(sent),
        "lanes_used": int(lanes),
    }


def state_schema(env: dict[str, str]) -> str:
    """The DAG's state schema in an environment (``SERVICES_SYNC_STATE_SCHEMA``)."""
    return env.get("SERVICES_SYNC_STATE_SCHEMA", "services_sync")


def run_dag(
    *,
    env: dict[str, str],
    home: Path,
    dag_id: str,
    interval_start: datetime,
    rows: int,
    receiver: Receiver,
    log_path: Path,
    timeout: float,
    profile_path: Path | None = None,
    conf: dict[str, Any] | None = None,
    state_dsn: str | None = None,
) -> dict[str, Any]:
    """``airflow dags test <dag_id> <interval end>`` in a subprocess, measured.

    Besides time and memory: the run's task instances and XCom bytes (metadata DB) and, with
    ``state_dsn``, what it left in the outbox (:func:`outbox_footprint`).
    """
    logical_date = (interval_start + HOUR).isoformat()
    argv = [PYTHON, "-m", "airflow", "dags", "test", dag_id, logical_date]
    if conf:
        argv += ["--conf", json.dumps(conf)]
    if profile_path is not None and profile_path.suffix == ".prof":
        argv = [PYTHON, "-m", "cProfile", "-o", str(profile_path), *argv[1:]]
    elif profile_path is not None:
        argv = [PYTHON, "-m", "bench.stackprof", "-o", str(profile_path), *argv[1:]]
    receiver.reset()
    load = _load()
    stats = run_measured(argv, env=env, cwd=ROOT, log_path=log_path, timeout=timeout)
    facts = dag_run_facts(home / "airflow.db", dag_id)
    facts["xcom"] = xcom_sqlite(home / "airflow.db", dag_id, facts["run_id"])
    if state_dsn is not None:
        facts["outbox"] = outbox_footprint(state_dsn, state_schema(env), dag_id, facts["run_id"])
    received = receiver.stats()
    ok = stats.ok and facts["state"] == "success" and received["records"] == rows
    detail = ""
    if not ok:
        detail = _dag_failure(log_path, stats, facts, received, rows)
    return {
        "rows": rows,
        "ok": ok,
        "detail": detail,
        "conf": conf or {},
        "load_1m": load,
        **_proc_fields(stats),
        **facts,
        "received": received,
        "receiver_digests": receiver.body_digests() if ok else [],
        "log": str(log_path),
    }


_REASON = re.compile(r'"reason":\s*"([^"]{1,160})')
_STATUS = re.compile(r"\b(4\d\d|5\d\d):? ?(?:Client|Server)? ?Error[^\n]{0,80}")
_EXCEPTION = re.compile(r"\b([A-Za-z_.]*(?:Error|Exception)): ([^\n]{1,160})")


def _dag_failure(log_path: Path, stats: ProcStats, facts: dict, received: dict, rows: int) -> str:
    if stats.timed_out:
        return "timed out"
    text = log_path.read_text(errors="replace")[-400_000:]
    failed = sorted(t for t, v in facts.get("tasks", {}).items() if v["states"].get("failed"))
    why = ""
    match = _REASON.search(text)
    if match:
        why = match.group(1)
    else:
        status = _STATUS.search(text)
        exceptions = _EXCEPTION.findall(text)
        if status:
            why = status.group(0).strip()
        elif exceptions:
            why = ": ".join(exceptions[-1])
    where = f"failed task {', '.join(failed)}" if failed else f"run {facts.get('state')}"
    got = f"receiver holds {received.get('records')} of {rows} rows"
    return "; ".join(x for x in (where, why, got) if x)


def task_rss(
    *,
    env: dict[str, str],
    dag_id: str,
    interval_start: datetime,
    tasks: list[tuple[str, int | None]],
    log_dir: Path,
    label: str,
    timeout: float,
) -> dict[str, Any]:
    """Each task alone in its own process (``airflow tasks test``), as a worker runs it.

    Run after the measured ``dags test`` of the same interval, so upstream XComs exist. The
    peak RSS of each process is what one task instance costs a worker (Airflow's own footprint
    included: ``wait_for_open_transactions`` is the baseline, it holds no data).
    """
    logical_date = (interval_start + HOUR).isoformat()
    out: dict[str, Any] = {}
    for task_id, map_index in tasks:
        argv = [PYTHON, "-m", "airflow", "tasks", "test", dag_id, task_id, logical_date]
        name = task_id
        if map_index is not None:
            argv += ["--map-index", str(map_index)]
            name = f"{task_id}[{map_index}]"
        stats = run_measured(
            argv,
            env=env,
            cwd=ROOT,
            log_path=log_dir / f"task-{label}-{name.replace('[', '-').rstrip(']')}.log",
            timeout=timeout,
        )
        out[name] = {
            "ok": stats.ok,
            "wall_s": stats.wall_s,
            "peak_rss_mb": stats.peak_rss / MIB,
        }
    return out


# --------------------------------------------------------------------------------------------
# Floor and peer script
# --------------------------------------------------------------------------------------------


def run_floor(
    *, dsn: str, receiver: Receiver, interval_start: datetime, batch_size: int, log_path: Path
) -> dict[str, Any]:
    """``python -m bench.floor``: COPY to a null sink + tight POSTs of the DAG's bytes."""
    receiver.reset()
    out = log_path.with_suffix(".json")
    argv = [PYTHON, "-m", "bench.floor", "--dsn", dsn, "--url", receiver.url]
    argv += ["--start", interval_start.isoformat(), "--batch-size", str(batch_size)]
    load = _load()
    stats = run_measured(argv, env=python_env(), cwd=ROOT, log_path=log_path, stdout_path=out)
    result = _last_json_line(out)
    ok = stats.ok and bool(result.get("ok"))
    return {
        "ok": ok,
        "detail": "" if ok else f"statuses {result.get('statuses')}; see {log_path}",
        "load_1m": load,
        **_proc_fields(stats),
        **result,
    }


def run_peer_script(
    *, dsn: str, receiver: Receiver, interval_start: datetime, rows: int, log_path: Path
) -> dict[str, Any]:
    """``python -m bench.peer_script``: one query, one ``requests.post(json=…)``."""
    receiver.reset()
    out = log_path.with_suffix(".json")
    argv = [PYTHON, "-m", "bench.peer_script", "--dsn", dsn, "--url", receiver.url]
    argv += ["--start", interval_start.isoformat()]
    load = _load()
    stats = run_measured(argv, env=python_env(), cwd=ROOT, log_path=log_path, stdout_path=out)
    result = _last_json_line(out)
    received = receiver.stats()
    ok = stats.ok and bool(result.get("ok")) and received["records"] == rows
    detail = ""
    if not ok:
        detail = f"HTTP {result.get('status', '?')}"
        if result.get("reason"):
            detail += f": {result['reason']}"
        if result.get("body_bytes"):
            detail += f" (one body of {result['body_bytes'] / MIB:.1f} MiB)"
    return {
        "rows": rows,
        "ok": ok,
        "detail": detail,
        "load_1m": load,
        **_proc_fields(stats),
        "task_instances": 0,
        "result": result,
        "received": received,
    }


# --------------------------------------------------------------------------------------------
# Source cost
# --------------------------------------------------------------------------------------------

_SCAN = re.compile(r"(Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan)(?: using| on) (\S+)")
_BUFFERS = re.compile(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?")
_EXEC = re.compile(r"Execution Time: ([\d.]+) ms")


def _explain(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> dict[str, Any]:
    lines = [r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, SETTINGS) {query}", params)]
    text = "\n".join(lines)
    scans = sorted({f"{m.group(1)} {m.group(2)}" for m in _SCAN.finditer(text)})
    buffers = _BUFFERS.search(text)
    execution = _EXEC.search(text)
    return {
        "text": text,
        "scans": scans,
        "index_range_scan": any(
            "service_requests_last_modified_idx" in s and "Seq Scan" not in s for s in scans
        )
        and not any(s.startswith("Seq Scan") for s in scans),
        "shared_hit": int(buffers.group(1) or 0) if buffers else 0,
        "shared_read": int(buffers.group(2) or 0) if buffers else 0,
        "execution_ms": float(execution.group(1)) if execution else None,
    }


def source_cost(dsn: str, interval_start: datetime, repeats: int) -> dict[str, Any]:
    """Extraction time (the DAG's own plan + fetch code) and EXPLAIN of its queries."""
    from services_sync.core.payload import BatchBounds, Interval
    from services_sync.core.sql import load_sql
    from services_sync.query import source

    interval = Interval(interval_start, interval_start + HOUR)
    plan_params = {
        "window_start": interval.start,
        "window_end": interval.end,
        "batch_size": 1000,
        "max_batch_bytes": 1024 * 1024,
    }
    fetch_params = {
        "window_start": interval.start,
        "window_end": interval.end,
        "lower_lmd": interval.start,
        "lower_rid": "",
        "lower_sid": "",
        "upper_lmd": interval.end,
        "upper_rid": "",
        "upper_sid": "",
    }
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        total_rows = conn.execute("SELECT count(*) FROM service_requests").fetchone()[0]
        size = conn.execute("SELECT pg_total_relation_size('service_requests')").fetchone()[0]
        conn.commit()
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            plan = conn.execute(load_sql("plan_batches.sql"), plan_params).fetchall()
            conn.commit()
            planned = time.perf_counter()
            bounds = [BatchBounds.from_plan_row(row) for row in plan]
            fetched = sum(
                len(rows)
                for _b, rows, _snapshot in source.read_planned_batches(conn, interval, bounds)
            )
            runs.append((planned - started, time.perf_counter() - planned, fetched))
        explains = {
            "plan_batches.sql": _explain(conn, load_sql("plan_batches.sql"), plan_params),
            "fetch_batch.sql": _explain(conn, load_sql("fetch_batch.sql"), fetch_params),
        }
        conn.rollback()
    totals = [p + f for p, f, _ in runs]
    return {
        "table_rows": total_rows,
        "table_mb": size / MIB,
        "changed_rows": runs[0][2] if runs else 0,
        "repeats": repeats,
        "first_ms": totals[0] * 1000,
        "median_ms": statistics.median(totals) * 1000,
        "min_ms": min(totals) * 1000,
        "plan_median_ms": statistics.median(p for p, _, _ in runs) * 1000,
        "fetch_median_ms": statistics.median(f for _, f, _ in runs) * 1000,
        "explain": explains,
        "index_range_scan": all(e["index_range_scan"] for e in explains.values()),
    }


# --------------------------------------------------------------------------------------------
# Parse time
# --------------------------------------------------------------------------------------------


def _seconds(duration: str) -> float:
    """``0:00:00.123456`` (a timedelta's str) in seconds."""
    h, m, s = duration.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def dags_report(env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """``airflow dags report -o json``: parse duration per DAG file of the env's DAGs folder."""
    started = time.perf_counter()
    result = subprocess.run(
        [PYTHON, "-m", "airflow", "dags", "report", "-o", "json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    wall = time.perf_counter() - started
    log_path.write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    line = next((x for x in result.stdout.splitlines() if x.startswith("[")), "[]")
    files = {
        str(Path(row["file"]).name): {
            "file": row["file"],
            "seconds": _seconds(str(row["duration"])),
            "dags": row["dags"],
            "tasks": row["task_num"],
        }
        for row in json.loads(line)
    }
    return {"ok": result.returncode == 0 and bool(files), "wall_s": wall, "files": files}


_FORKED_PARSE_PROBE = """
import importlib, json, os, runpy, statistics, sys, time
sys.path[:0] = [sys.argv[2]]
import airflow.models  # the dag-processor's own process has Airflow's core loaded
from airflow.utils.file import iter_airflow_imports
path, repeats = sys.argv[1], int(sys.argv[3])
for module in iter_airflow_imports(path):  # [dag_processor] parsing_pre_import_modules
    importlib.import_module(module)
times = []
for _ in range(repeats):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        started = time.perf_counter()
        runpy.run_path(path, run_name="dag_file")
        os.write(write, str(time.perf_counter() - started).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        times.append(float(pipe.read()))
    os.waitpid(pid, 0)
print(json.dumps({"median_s": statistics.median(times), "times_s": times}))
"""


def dag_processor_parse(env: dict[str, str], dags_folder: Path, repeats: int = 3) -> dict[str, Any]:
    """Each DAG file parsed as the dag-processor parses it, once per ``min_file_process_interval``.

    Airflow 3.3's dag-processor imports the ``airflow.*`` modules a DAG file names itself
    (``iter_airflow_imports``), then forks the process that parses the file: what the file
    imports beyond those, the child imports again on every parse. ``airflow dags report``
    parses every file in one process, so only its first file pays the shared imports. Median
    of ``repeats`` forked parses per file.
    """
    plugins = dags_folder.parent / "plugins"
    files = {}
    for dag_file in sorted(dags_folder.glob("*.py")):
        result = subprocess.run(
            [PYTHON, "-c", _FORKED_PARSE_PROBE, str(dag_file), str(plugins), str(repeats)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        line = next((x for x in reversed(result.stdout.splitlines()) if x.startswith("{")), "")
        files[dag_file.name] = json.loads(line) if line else {"error": result.stderr[-500:]}
    return {"ok": all("median_s" in f for f in files.values()), "files": files}


_IMPORT_PROBE = """
import sys, time
sys.path[:0] = [sys.argv[2]]
import airflow.sdk  # loaded before any DAG file in every Airflow parser process
import runpy
started = time.perf_counter()
runpy.run_path(sys.argv[1])
print(f"parse_s={time.perf_counter() - started:.3f}")
"""


def import_profile(env: dict[str, str], dag_file: Path, limit: int = 15) -> dict[str, Any]:
    """``python -X importtime`` of one DAG file after ``airflow.sdk``: what its parse imports."""
    plugins = dag_file.parents[1] / "plugins"
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", _IMPORT_PROBE, str(dag_file), str(plugins)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    lines = result.stderr.splitlines()
    marks = [i for i, line in enumerate(lines) if line.rstrip().endswith("| airflow.sdk")]
    rows = []
    for line in lines[(marks[-1] + 1 if marks else 0) :]:
        if not line.startswith("import time:"):
            continue
        own, cumulative, name = line.split(":", 1)[1].split("|", 2)
        with contextlib.suppress(ValueError):
            rows.append((int(cumulative) / 1e6, int(own) / 1e6, name.rstrip()))
    parse = re.search(r"parse_s=([\d.]+)", result.stdout)
    top = [
        {"module": n.strip(), "depth": (len(n) - len(n.lstrip())) // 2, "cumulative_s": c}
        for c, _own, n in sorted(rows, reverse=True)[:limit]
    ]
    return {
        "file": dag_file.name,
        "parse_s": float(parse.group(1)) if parse else None,
        "imports_s": sum(own for _c, own, _n in rows),
        "top": top,
    }
