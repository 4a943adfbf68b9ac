"""``bench/results.md``: the machine, the table of ratios, where each target stands."""

from __future__ import annotations

import collections
import hashlib
import io
import math
import os
import platform
import pstats
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

MIB = 1024 * 1024
TIMES = "\u00d7"  # multiplication sign
MINUS = "\u2212"  # minus sign

#: Display names of the variants, in table order.
VARIANTS = {
    "floor": "floor: COPY → null + tight POSTs",
    "dag": "**DAG** (`services_requests_sync`)",
    "dag_tuned": "DAG‡, `batch_size=10000`, `max_batch_bytes=4 MiB`",
    "peer_script": "peer (a): script, one `requests.post(json=…)`",
    "peer_script_raised": "peer (a)†: same, raised-limit receiver",
    "naive_dag": "peer (b): naive DAG, all rows via XCom",
    "naive_dag_raised": "peer (b)†: same, raised-limit receiver",
}

TARGET_RSS_MB = 300
TARGET_E2E_1M_S = 60
TARGET_MARGINAL_X = 3
TARGET_SOURCE_RATIO = 1.5
TARGET_PARSE_S = 0.2
FIXED_TASKS = 5  # check_run_setup, wait_for_open_transactions, plan_batches, record, reconcile


def count(n: int) -> str:
    """1000 → 1k, 1000000 → 1M, 1500 → 1500."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def digest(body_sha256s: Sequence[str]) -> str:
    """One digest for a set of bodies (order-free), as ``bench.floor`` prints it."""
    return hashlib.sha256("\n".join(sorted(body_sha256s)).encode()).hexdigest()


def machine(dsn: str) -> dict[str, Any]:
    """Cores, memory, CPU model, Python, PostgreSQL and Airflow versions, OS, date."""
    model = platform.processor() or "unknown"
    with_cpuinfo = Path("/proc/cpuinfo")
    if with_cpuinfo.exists():
        for line in with_cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with psycopg.connect(dsn) as conn:
        pg = conn.execute("SELECT version()").fetchone()[0]
    try:
        from importlib.metadata import version

        airflow = version("apache-airflow")
    except Exception:
        airflow = "unknown"
    return {
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": psutil.virtual_memory().total / 1024**3,
        "cpu_model": model,
        "python": platform.python_version(),
        "postgresql": pg.split(" on ")[0],
        "airflow": airflow,
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def profile_summary(prof: Path, limit: int = 25) -> str:
    """The top of a cProfile dump, by cumulative and by own time."""
    if not prof.exists():
        return "(no profile written)"
    if prof.suffix != ".prof":  # bench.stackprof's text report
        return prof.read_text()
    out = io.StringIO()
    stats = pstats.Stats(str(prof), stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _rate(rows: int, seconds: float | None) -> str:
    if not seconds or not rows:
        return "0"
    rate = rows / seconds
    return f"{rate:,.0f}"


def _x(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.1f}{TIMES}" if value >= 10 else f"{value:.2f}{TIMES}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|")
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") or "n/a" for c in row) + " |")
    return "\n".join(lines)


def _time(run: dict[str, Any], name: str) -> float | None:
    """The time a variant is judged by: the floor's own timers, every other variant's wall."""
    if name == "floor":
        return run.get("floor_s")
    return run.get("wall_s")


def _result(run: dict[str, Any]) -> str:
    if run.get("ok"):
        return "ok"
    return f"**FAILED**: {run.get('detail') or 'see log'}"


def _expected_batches(rows: int, runs: dict[str, Any], batch_size: int) -> int:
    floor = runs.get("floor") or {}
    if floor.get("batches"):
        return int(floor["batches"])
    return math.ceil(rows / batch_size) if rows else 0


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _machine_section(results: dict[str, Any]) -> str:
    m = results.get("machine") or {}
    load = results.get("load", {})
    start = load.get("start") or [0, 0, 0]
    end = load.get("end") or start
    shared = max(start[0], end[0]) > 0.5 or bool(results.get("note"))
    rows = [
        ["date", m.get("date", "n/a")],
        [
            "cores",
            f"{m.get('cores_logical')} logical ({m.get('cores_physical')} physical), "
            f"{m.get('cpu_affinity')} usable by this process",
        ],
        ["memory", f"{m.get('memory_gb', 0):.1f} GiB"],
        ["CPU model", m.get("cpu_model", "n/a")],
        ["Python", m.get("python", "n/a")],
        ["PostgreSQL", m.get("postgresql", "n/a")],
        ["Airflow", m.get("airflow", "n/a")],
        ["OS", m.get("os", "n/a")],
        ["code measured", _git_line(results.get("git"))],
        [
            "load average (1/5/15 min)",
            f"start {' / '.join(f'{x:.2f}' for x in start)}, "
            f"end {' / '.join(f'{x:.2f}' for x in end)}",
        ],
    ]
    text = _table(["machine", ""], rows, set())
    if shared:
        text += (
            "\n\n**The machine was shared** while this ran"
            + (f" ({results['note']})" if results.get("note") else "")
            + ": the load averages above include other work. Absolute times are pessimistic;"
            " ratios measured back to back in this run are the robust figures."
        )
    return text


def _git_line(state: dict[str, Any] | None) -> str:
    if not state:
        return "n/a"
    changed = state.get("dag_files_changed", 0)
    dirty = (
        f", {changed} uncommitted change(s) in dags/ plugins/ include/"
        if changed
        else ", dags/ plugins/ include/ as committed"
    )
    return f"commit {state.get('commit')}{dirty}" + (
        f" ({state['note']})" if state.get("note") else ""
    )


def _results_section(results: dict[str, Any]) -> str:
    rows = []
    for size, runs in results.get("runs", {}).items():
        n = int(size)
        floor_s = (runs.get("floor") or {}).get("floor_s")
        for name, title in VARIANTS.items():
            run = runs.get(name)
            if run is None:
                continue
            seconds = _time(run, name)
            tis = run.get("task_instances")
            rows.append(
                [
                    f"{n:,}",
                    title,
                    _result(run),
                    _s(seconds),
                    _rate(n, seconds) if run.get("ok") else "0 (failed)",
                    f"{run.get('peak_rss_mb', 0):.0f}",
                    "0" if tis is None else str(tis),
                    _x(seconds / floor_s) if seconds and floor_s else "n/a",
                ]
            )
    headers = [
        "changed rows",
        "variant",
        "result",
        "wall s",
        "rows/s",
        "peak RSS MB (largest process)",
        "task instances",
        "÷ floor",
    ]
    text = _table(headers, rows, {0, 3, 4, 5, 6, 7})
    text += (
        "\n\n*wall s*: spawn to exit of the variant's process (Python start, Airflow start and "
        "DAG parse included), except the floor, timed inside its process around the COPY and "
        "the POSTs only. *peak RSS*: the largest single process of the variant's tree (kernel "
        "high-water mark, `wait4`); under `airflow dags test` every task runs inside that one "
        "process, so it bounds any task process. † raised-limit receiver: "
        "`bench/receiver_raised.py` lifts the reference receiver's 10,000-record / 64 MiB "
        "per-body caps so the one-POST peers can finish; the real receiver refuses those bodies "
        f"(rows above). ‡ tuning experiment: the same DAG and code with 10{TIMES} larger "
        "batches (run params only), in its own metadata DB and ledger schema."
    )
    return text


def _ratio_section(results: dict[str, Any]) -> str:
    rows = []
    for size, runs in results.get("runs", {}).items():
        dag = runs.get("dag") or {}
        dag_s = dag.get("wall_s")

        def cell(
            name: str, runs: dict[str, Any] = runs, dag_s: float | None = dag_s
        ) -> tuple[str, str]:
            run = runs.get(name)
            if not run:
                return "n/a", "n/a"
            t = _time(run, name)
            shown = _s(t) if run.get("ok") else f"{_s(t)} (failed)"
            return shown, _x(dag_s / t) if dag_s and t else "n/a"

        floor = cell("floor")
        peer = cell("peer_script")
        peer_r = cell("peer_script_raised")
        naive = cell("naive_dag")
        naive_r = cell("naive_dag_raised")
        naive_rss = (runs.get("naive_dag") or {}).get("peak_rss_mb")
        rss_ratio = (
            _x(naive_rss / dag["peak_rss_mb"]) if naive_rss and dag.get("peak_rss_mb") else "n/a"
        )
        rows.append(
            [
                f"{int(size):,}",
                _s(dag_s),
                floor[0],
                floor[1],
                peer[0],
                peer[1],
                peer_r[0],
                peer_r[1],
                naive[0],
                naive[1],
                naive_r[0],
                naive_r[1],
                rss_ratio,
            ]
        )
    headers = [
        "changed rows",
        "DAG s",
        "floor s",
        "DAG ÷ floor",
        "peer (a) s",
        "DAG ÷ (a)",
        "(a)† s",
        "DAG ÷ (a)†",
        "naive DAG s",
        "DAG ÷ naive",
        "naive† s",
        "DAG ÷ naive†",
        "naive ÷ DAG peak RSS",
    ]
    return _table(headers, rows, set(range(len(headers))))


def _marginal(runs: dict[int, Any], name: str) -> tuple[int, int, float] | None:
    """``(small, large, seconds per row)`` between the smallest and largest good run."""
    sizes = sorted(
        n
        for n, r in runs.items()
        if (r.get(name) or {}).get("ok") and (r.get("floor") or {}).get("ok")
    )
    if len(sizes) < 2:
        return None
    lo, hi = sizes[0], sizes[-1]
    return lo, hi, (_time(runs[hi][name], name) - _time(runs[lo][name], name)) / (hi - lo)


def _task_peak(run: dict[str, Any]) -> tuple[float, str] | None:
    per_task = run.get("task_rss") or {}
    if not per_task:
        return None
    name = max(per_task, key=lambda k: per_task[k]["peak_rss_mb"])
    return per_task[name]["peak_rss_mb"], name


def _targets(results: dict[str, Any]) -> list[list[str]]:
    runs = {int(k): v for k, v in results.get("runs", {}).items()}
    batch_size = results.get("batch_size", 1000)
    out: list[list[str]] = []

    # 1. marginal cost per row vs the floor's
    dag_m, floor_m = _marginal(runs, "dag"), _marginal(runs, "floor")
    if dag_m and floor_m:
        lo, hi, per_row = dag_m
        ratio = per_row / floor_m[2] if floor_m[2] > 0 else float("inf")
        noisy = per_row <= 0 or floor_m[2] <= 0
        measured = (
            f"DAG {per_row * 1e6:.0f} µs/row, floor {floor_m[2] * 1e6:.1f} µs/row: "
            f"{ratio:.1f}{TIMES}"
        )
        tuned = _marginal(runs, "dag_tuned")
        if tuned:
            measured += f" (‡ 10k-row batches: {tuned[2] * 1e6:.0f} µs/row, "
            measured += f"{tuned[2] / floor_m[2]:.1f}{TIMES})"
        out.append(
            [
                f"marginal cost per row ≤ 3{TIMES} the floor's",
                f"(T({count(hi)}) {MINUS} T({count(lo)})) / {hi - lo:,} rows",
                measured,
                "inconclusive (noise exceeds the difference; use sizes further apart)"
                if noisy
                else "met"
                if ratio <= TARGET_MARGINAL_X
                else "**missed**",
            ]
        )
    else:
        out.append(
            [
                f"marginal cost per row ≤ 3{TIMES} the floor's",
                "needs two sizes",
                "not measured",
                "n/a",
            ]
        )

    # 2. 1M rows end to end under 60 s
    big = runs.get(1_000_000, {})
    if big.get("dag"):
        dag = big["dag"]
        measured = f"{dag['wall_s']:.1f} s" + ("" if dag.get("ok") else " (failed)")
        if (big.get("dag_tuned") or {}).get("ok"):
            measured += f" (‡ 10k-row batches: {big['dag_tuned']['wall_s']:.1f} s)"
        if (big.get("floor") or {}).get("ok"):
            measured += f"; the floor alone: {big['floor']['floor_s']:.1f} s"
        out.append(
            [
                "1M rows end to end < 60 s on 2 cores",
                "DAG wall at 1M (`airflow dags test`)",
                measured,
                "met" if dag.get("ok") and dag["wall_s"] < TARGET_E2E_1M_S else "**missed**",
            ]
        )
    else:
        out.append(["1M rows end to end < 60 s on 2 cores", "DAG wall at 1M", "not run", "n/a"])

    # 3. peak RSS: each task alone (a worker's task process), and the dags-test process
    task_peaks = {n: _task_peak(r["dag"]) for n, r in runs.items() if r.get("dag")}
    task_peaks = {n: v for n, v in task_peaks.items() if v}
    process = {n: r["dag"]["peak_rss_mb"] for n, r in runs.items() if r.get("dag")}
    bar = "peak RSS of any task ≤ 300 MB at 1M, within 10 % of 100k"
    if 1_000_000 in process:
        bits, good = [], True
        if 1_000_000 in task_peaks:
            peak, name = task_peaks[1_000_000]
            good = peak <= TARGET_RSS_MB
            bit = f"largest task alone: {peak:.0f} MB at 1M (`{name}`)"
            if 100_000 in task_peaks:
                growth = peak / task_peaks[100_000][0] - 1
                good = good and growth <= 0.10
                bit += f", {growth:+.0%} vs {task_peaks[100_000][0]:.0f} MB at 100k"
            bits.append(bit)
        proc_good = process[1_000_000] <= TARGET_RSS_MB
        bit = f"`dags test` process (runs every task): {process[1_000_000]:.0f} MB at 1M"
        if 100_000 in process:
            growth = process[1_000_000] / process[100_000] - 1
            proc_good = proc_good and growth <= 0.10
            bit += f", {growth:+.0%} vs {process[100_000]:.0f} MB at 100k"
        bits.append(bit + (" (within the bar)" if proc_good else " (over the bar)"))
        if 1_000_000 not in task_peaks:
            status = "met" if proc_good else "**missed**"
        elif good and proc_good:
            status = "met"
        elif good:
            status = "met by every task process; **missed** by the `dags test` process"
        else:
            status = "**missed**"
        out.append(
            [
                bar,
                "`airflow tasks test` per task; `airflow dags test` process",
                "; ".join(bits),
                status,
            ]
        )
    else:
        shown = ", ".join(f"{v:.0f} MB at {count(n)}" for n, v in sorted(process.items()))
        out.append([bar, "largest process", shown or "not run", "n/a (1M not run)"])

    # 4. source cost
    cost = {int(k): v for k, v in results.get("source_cost", {}).items()}
    if len(cost) >= 2:
        lo, hi = min(cost), max(cost)
        ratio = cost[hi]["median_ms"] / cost[lo]["median_ms"]
        scans = all(c["index_range_scan"] for c in cost.values())
        out.append(
            [
                f"{count(hi)}-row / {count(lo)}-row extraction time ≤ 1.5",
                "1k changed rows, median of the DAG's plan + fetch",
                f"{cost[hi]['median_ms']:.1f} ms / {cost[lo]['median_ms']:.1f} ms = {ratio:.2f}; "
                f"index range scan: {'yes' if scans else 'NO'}",
                "met" if ratio <= TARGET_SOURCE_RATIO and scans else "**missed**",
            ]
        )
    else:
        out.append(["10M / 100k extraction time ≤ 1.5", "two table sizes", "not run", "n/a"])

    # 5. parse time
    parse = (results.get("parse") or {}).get("project")
    if parse and parse.get("files"):
        worst = max(parse["files"].values(), key=lambda f: f["seconds"])
        shown = ", ".join(f"{k} {v['seconds']:.3f} s" for k, v in sorted(parse["files"].items()))
        out.append(
            [
                "parse time ≤ 0.2 s per DAG file",
                "`airflow dags report`, every file in `dags/`",
                shown,
                "met" if worst["seconds"] <= TARGET_PARSE_S else "**missed**",
            ]
        )
    else:
        out.append(["parse time ≤ 0.2 s per DAG file", "`airflow dags report`", "not run", "n/a"])

    # 6. task instances
    bits, good, any_run = [], True, False
    for n in sorted(runs):
        dag = runs[n].get("dag")
        if not dag:
            continue
        any_run = True
        batches = _expected_batches(n, runs[n], batch_size)
        bar_n = 2 * batches + 4
        actual = dag.get("task_instances", 0)
        good = good and actual <= bar_n
        bits.append(f"{count(n)}: {actual} (= {FIXED_TASKS} + 2·{batches}; bar {bar_n})")
    if any_run:
        out.append(
            [
                "task instances per run ≤ 2·⌈rows / batch⌉ + 4",
                f"metadata DB after the run; batch = {batch_size}",
                "; ".join(bits) + f". Real formula: {FIXED_TASKS} + 2·⌈rows / batch⌉",
                "met" if good else "**missed** by 1 (5 fixed tasks, not 4)",
            ]
        )

    # 7. faster than both peers
    bits, good, any_peer = [], True, False
    for n in sorted(runs):
        dag = runs[n].get("dag")
        if not dag or not dag.get("ok"):
            continue
        for name, short in (("peer_script", "(a)"), ("naive_dag", "(b)")):
            peer = runs[n].get(name)
            if not peer:
                continue
            any_peer = True
            raised = runs[n].get(f"{name}_raised")
            if peer.get("ok"):
                faster = dag["wall_s"] < peer["wall_s"]
                good = good and faster
                bits.append(
                    f"{count(n)} {short}: {dag['wall_s']:.1f} vs {peer['wall_s']:.1f} s, "
                    + ("faster" if faster else "SLOWER")
                )
            else:
                extra = ""
                if raised and raised.get("ok"):
                    faster = dag["wall_s"] < raised["wall_s"]
                    good = good and faster
                    extra = f"; with raised limits {raised['wall_s']:.1f} s, the DAG " + (
                        "faster" if faster else "SLOWER"
                    )
                bits.append(f"{count(n)} {short}: the peer cannot deliver{extra}")
    out.append(
        [
            "faster than both peers at every size",
            "DAG wall vs peer wall, same size",
            "; ".join(bits) or "not run",
            ("met" if good else "**missed**") if any_peer else "n/a",
        ]
    )

    # 8. naive memory blow-up
    bits = []
    for n in sorted(runs):
        naive = runs[n].get("naive_dag")
        dag = runs[n].get("dag")
        if naive and dag:
            bits.append(
                f"{count(n)}: naive {naive['peak_rss_mb']:.0f} MB "
                f"vs DAG {dag['peak_rss_mb']:.0f} MB"
            )
    out.append(
        [
            "the naive DAG's memory blow-up shown",
            "peak RSS of the `dags test` process, same size",
            "; ".join(bits) or "not run",
            "shown" if len(bits) >= 2 else ("one size only" if bits else "n/a"),
        ]
    )
    return out


def _breakdown_section(results: dict[str, Any]) -> str:
    rows = []
    for size, runs in [
        ("0 (warm-up)", {"dag": results.get("warmup")}),
        *results.get("runs", {}).items(),
    ]:
        dag = runs.get("dag")
        if not dag or not dag.get("tasks"):
            continue
        tasks = dag["tasks"]
        busy = sum(t["seconds"] for t in tasks.values())
        span = dag.get("task_span_s", 0.0)
        parts = [
            f"{name} {t['seconds']:.1f} s"
            + (
                f" ({t['count']}{TIMES}, {1000 * t['seconds'] / t['count']:.0f} ms each)"
                if t["count"] > 1
                else ""
            )
            for name, t in sorted(tasks.items(), key=lambda kv: -kv[1]["seconds"])
        ]
        rows.append(
            [
                size if not str(size).isdigit() else f"{int(size):,}",
                _s(dag.get("wall_s")),
                _s(dag.get("wall_s", 0) - span),
                _s(span - busy),
                _s(busy),
                "; ".join(parts),
            ]
        )
    headers = [
        "changed rows",
        "wall s",
        "outside tasks s (start, parse, sync)",
        "between tasks s (dag.test loop)",
        "in tasks s",
        "per task (sum of task instance durations)",
    ]
    return _table(headers, rows, {1, 2, 3, 4})


def _task_rss_section(results: dict[str, Any]) -> str:
    rows, names = [], []
    for size, runs in results.get("runs", {}).items():
        per_task = (runs.get("dag") or {}).get("task_rss")
        if not per_task:
            continue
        for name in per_task:
            base = name.split("[")[0]
            if base not in names:
                names.append(base)
        cells = {name.split("[")[0]: v for name, v in per_task.items()}
        rows.append(
            [f"{int(size):,}", f"{runs['dag']['peak_rss_mb']:.0f}"]
            + [
                f"{cells[n]['peak_rss_mb']:.0f}" + ("" if cells[n]["ok"] else " (failed)")
                if n in cells
                else "n/a"
                for n in names
            ]
        )
    if not rows:
        return "Not run."
    headers = ["changed rows", "`dags test` process (all tasks)"] + [f"`{n}`" for n in names]
    text = _table(headers, rows, set(range(len(headers))))
    return text + (
        "\n\nPeak RSS in MB. Each task column is that task instance alone in a fresh "
        "`airflow tasks test` process, as a worker runs it (mapped tasks: the last batch); "
        "`wait_for_open_transactions` holds no data, so it is Airflow's own footprint. The "
        "`dags test` column is the one process `dag.test()` runs every task instance of the run "
        "in, one after the other."
    )


def _source_section(results: dict[str, Any]) -> str:
    cost = results.get("source_cost") or {}
    if not cost:
        return "Not run."
    rows = []
    for total, c in sorted(cost.items(), key=lambda kv: int(kv[0])):
        ex = c["explain"]
        rows.append(
            [
                f"{int(total):,}",
                f"{c['table_mb']:.0f}",
                f"{c['changed_rows']:,}",
                f"{c['median_ms']:.1f} (min {c['min_ms']:.1f}, first {c['first_ms']:.1f})",
                f"{c['plan_median_ms']:.1f}",
                f"{c['fetch_median_ms']:.1f}",
                "; ".join(f"{k}: {', '.join(v['scans'])}" for k, v in ex.items()),
                "; ".join(
                    f"{k}: hit {v['shared_hit']}, read {v['shared_read']}" for k, v in ex.items()
                ),
            ]
        )
    headers = [
        "table rows",
        "table + index MB",
        "changed rows in the hour",
        "extraction ms (median)",
        "plan ms",
        "fetch ms",
        "scan nodes",
        "buffers",
    ]
    text = _table(headers, rows, {0, 1, 2, 3, 4, 5})
    text += (
        "\n\nExtraction = what the DAG does against the source for that hour: `plan_batches.sql`, "
        "then `fetch_batch.sql` per planned batch through `services_sync.source.read_batch` "
        "(REPEATABLE READ, snapshot recorded), timed client-side, warm cache. The changed rows "
        "are spread one per page through the heap (the unfavourable layout).\n"
    )
    for total, c in sorted(cost.items(), key=lambda kv: int(kv[0])):
        for name, e in c["explain"].items():
            text += (
                f"\n<details><summary>EXPLAIN (ANALYZE, BUFFERS) {name}, {int(total):,}-row table"
                f"</summary>\n\n```\n{e['text']}\n```\n</details>\n"
            )
    return text


def _parse_section(results: dict[str, Any]) -> str:
    parse = results.get("parse") or {}
    rows = []
    for kind, folder in (("project", "dags/"), ("naive", "bench/naive_dag/ (peer b)")):
        rep = parse.get(kind)
        if not rep:
            continue
        for name, f in sorted(rep["files"].items()):
            rows.append(
                [
                    folder,
                    name,
                    ", ".join(f["dags"]),
                    str(f["tasks"]),
                    f"{f['seconds']:.3f}",
                    "yes" if f["seconds"] <= TARGET_PARSE_S else "**no**",
                ]
            )
    if not rows:
        return "Not run."
    headers = ["DAGs folder", "file", "DAGs", "tasks", "parse s", "≤ 0.2 s"]
    return _table(headers, rows, {3, 4})


def _imports_section(results: dict[str, Any]) -> str:
    probe = (results.get("parse") or {}).get("imports")
    if not probe or not probe.get("top"):
        return ""
    rows = [
        [("· " * max(0, t["depth"] - 1)) + f"`{t['module']}`", f"{t['cumulative_s'] * 1000:.0f}"]
        for t in probe["top"]
    ]
    return (
        f"\n\nWhat `{probe['file']}` imports on top of `airflow.sdk` (`python -X importtime`; "
        f"parse {probe['parse_s']:.3f} s in this probe, {probe['imports_s']:.3f} s of it "
        "importing), largest first:\n\n" + _table(["module", "cumulative ms"], rows, {1})
    )


_IDLE_THREAD = re.compile(r"^== thread (.+?): (\d+) samples, 0 busy \(0\.0 s\), \d+ idle$")


def _collapse_idle_threads(text: str) -> str:
    """One line for all threads that never ran Python code (e.g. one comms thread per task)."""
    kept, idle = [], collections.Counter()
    for line in text.splitlines():
        match = _IDLE_THREAD.match(line)
        if match:
            idle[re.sub(r"\d+", "N", match.group(1))] += 1
        elif line or (kept and kept[-1]):
            kept.append(line)
    for name, n in idle.items():
        kept.append(f"== {n} thread(s) {name}: only waits, no Python work sampled")
    return "\n".join(kept)


def _profile_section(results: dict[str, Any]) -> str:
    profiles = results.get("profiles") or {}
    if not profiles:
        return ""
    text = "\n## Profiles of the DAG run\n"
    for size, p in profiles.items():
        text += (
            f"\n<details><summary>{int(size):,} rows, `airflow dags test` under "
            f"{p.get('profiler', 'cProfile')} ({p['wall_s']:.0f} s with profiling overhead)"
            f"</summary>\n\n```\n{_collapse_idle_threads(p['top'])}\n```\n"
            "</details>\n"
        )
    return text


def render(results: dict[str, Any]) -> str:
    """The whole ``results.md``."""
    started = results.get("started", "")
    wall = results.get("wall_s")
    sizes = ", ".join(count(n) for n in results.get("sizes", []))
    head = (
        "# Benchmark: services_requests_sync vs the floor and two peers\n\n"
        f"Command: `{results.get('command', 'python -m bench.run')}` (`make bench`), "
        f"started {started}"
        + (f", {wall:.0f} s in all" if wall else " (still running or interrupted)")
        + f". Sizes: {sizes} changed rows in one hourly interval; batch size "
        f"{results.get('batch_size')}."
    )
    if results.get("error"):
        head += f"\n\n**The benchmark did not finish:** {results['error']}"
    targets = _table(["target", "how", "measured", "status"], _targets(results), set())
    sections = [
        head,
        "## Machine\n\n" + _machine_section(results),
        "## Results\n\n" + _results_section(results),
        "## Ratios (DAG time ÷ the other's time; < 1 means the DAG is faster)\n\n"
        + _ratio_section(results),
        "## Targets\n\n" + targets,
        "## Where the DAG's time goes\n\n" + _breakdown_section(results),
        "## Peak RSS per task\n\n" + _task_rss_section(results),
        "## Source cost: 1k changed rows in a small and a large table\n\n"
        + _source_section(results),
        "## Parse time (`airflow dags report`)\n\n"
        + _parse_section(results)
        + _imports_section(results),
    ]
    text = "\n\n".join(sections) + "\n" + _profile_section(results)
    return text


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report [results.json]``: render results.md again from the raw numbers."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    raw = Path(args[0] if args else Path(__file__).with_name("results.json"))
    results = json.loads(raw.read_text())
    raw.with_suffix(".md").write_text(render(results))
    print(f"wrote {raw.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
