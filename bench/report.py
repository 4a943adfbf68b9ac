"""``bench/results.md``: the machine, the table of ratios, where each target stands.

It also shows the figures of the DAG's previous shape (two mapped task instances per batch,
bodies through XCom), kept in ``bench/baseline/``, next to the new ones.
"""

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
    "dag": "**DAG** (`services_requests_sync`, `dags test`)",
    "dag_gzip": "DAG, `Content-Encoding: gzip` (connection extra)",
    "dag_sched": "**DAG, production path** (scheduler + LocalExecutor)",
    "dag_sched_lanes1": "DAG, production path, `SERVICES_SYNC_LANES=1`",
    "dag_tuned": "DAG‡, `batch_size=10000` (old runs only)",
    "peer_script": "peer (a): script, one `requests.post(json=…)`",
    "peer_script_raised": "peer (a)†: same, raised-limit receiver",
    "naive_dag": "peer (b): naive DAG, all rows via XCom",
    "naive_dag_raised": "peer (b)†: same, raised-limit receiver",
}
#: The variants that run the project's DAG.
DAG_VARIANTS = ("dag", "dag_gzip", "dag_sched", "dag_sched_lanes1")

TARGET_RSS_MB = 300
TARGET_RSS_GROWTH = 0.10
TARGET_E2E_FLOOR_X = 3  # 1M rows end to end <= 3 x the floor + 30 s
TARGET_E2E_SLACK_S = 30
TARGET_MARGINAL_X = 3
TARGET_TASK_INSTANCES = 12
TARGET_SOURCE_RATIO = 1.5
TARGET_PARSE_S = 0.2
#: check_run_setup, wait_for_open_transactions, plan_batches, build_batches, record_delivery,
#: reconcile_interval; plus one post_batches task instance per delivery lane.
FIXED_TASKS = 6

#: The figures of the DAG's previous shape, for the before / after table.
BASELINE = Path(__file__).with_name("baseline") / "2026-11-29-79d486a.json"


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


def _lanes(run: dict[str, Any]) -> int:
    return int(((run.get("tasks") or {}).get("post_batches") or {}).get("count", 0))


def _bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


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
        "process, so it bounds any task process. *Production path*: wall = the run's "
        "`queued_at → end_date` in the metadata DB (`airflow backfill create` of one past hour; "
        "the scheduler picks the run up inside that time), peak RSS = the largest task process "
        "(sampled every 0.1 s), in another hour than the floor's with the same number of rows. "
        '*gzip*: the connection extra `{"Content-Encoding": "gzip"}`; the lanes send the '
        "outbox's stored gzip bytes. † raised-limit receiver: "
        "`bench/receiver_raised.py` lifts the reference receiver's 10,000-record / 64 MiB "
        "per-body caps so the one-POST peers can finish; the real receiver refuses those bodies "
        "(rows above)."
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
    out: list[list[str]] = []

    # 1. task instances per run, at every size, on every path
    bits, good, any_run = [], True, False
    for n in sorted(runs):
        for name in DAG_VARIANTS:
            run = runs[n].get(name)
            if not run or not run.get("task_instances"):
                continue
            any_run = True
            actual = run["task_instances"]
            good = good and actual <= TARGET_TASK_INSTANCES
            where = {"dag": "", "dag_gzip": " gzip", "dag_sched": " scheduler"}.get(
                name, " scheduler, 1 lane"
            )
            shape = f" (= {FIXED_TASKS} + {_lanes(run)} lanes)" if _lanes(run) else ""
            bits.append(f"{count(n)}{where}: {actual}{shape}")
    out.append(
        [
            f"task instances per run ≤ {TARGET_TASK_INSTANCES} at every size",
            "metadata DB after the run (`dags test` and production path)",
            "; ".join(bits) or "not run",
            ("met" if good else "**missed**") if any_run else "n/a",
        ]
    )

    # 2. marginal cost per row vs the floor's
    dag_m, floor_m = _marginal(runs, "dag"), _marginal(runs, "floor")
    if dag_m and floor_m:
        lo, hi, per_row = dag_m
        ratio = per_row / floor_m[2] if floor_m[2] > 0 else float("inf")
        noisy = per_row <= 0 or floor_m[2] <= 0
        measured = (
            f"DAG {per_row * 1e6:.1f} µs/row, floor {floor_m[2] * 1e6:.1f} µs/row: "
            f"{ratio:.1f}{TIMES}"
        )
        sched = _marginal(runs, "dag_sched")
        if sched and sched[0] != sched[1]:
            measured += (
                f" (production path, {count(sched[0])} to {count(sched[1])}: "
                f"{sched[2] * 1e6:.1f} µs/row)"
            )
        out.append(
            [
                f"marginal cost per row ≤ {TARGET_MARGINAL_X}{TIMES} the floor's",
                f"(T({count(hi)}) {MINUS} T({count(lo)})) / {hi - lo:,} rows, `dags test`",
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
                f"marginal cost per row ≤ {TARGET_MARGINAL_X}{TIMES} the floor's",
                "needs two sizes",
                "not measured",
                "n/a",
            ]
        )

    # 3. 1M rows end to end under dags test <= 3 x the floor + 30 s
    bar_text = (
        f"1M rows end to end ≤ {TARGET_E2E_FLOOR_X}{TIMES} the floor + {TARGET_E2E_SLACK_S} s"
    )
    big = runs.get(1_000_000, {})
    floor_ok = (big.get("floor") or {}).get("ok")
    if big.get("dag") and floor_ok:
        dag, floor_s = big["dag"], big["floor"]["floor_s"]
        bar = TARGET_E2E_FLOOR_X * floor_s + TARGET_E2E_SLACK_S
        measured = f"{dag['wall_s']:.1f} s" + ("" if dag.get("ok") else " (failed)")
        measured += f"; bar {TARGET_E2E_FLOOR_X}{TIMES} {floor_s:.1f} + {TARGET_E2E_SLACK_S}"
        measured += f" = {bar:.1f} s"
        out.append(
            [
                bar_text,
                "DAG wall at 1M (`airflow dags test`) vs the floor at 1M, same run",
                measured,
                "met" if dag.get("ok") and dag["wall_s"] <= bar else "**missed**",
            ]
        )
    else:
        out.append([bar_text, "DAG and floor at 1M", "not run", "n/a"])

    # 4. peak RSS: each task alone (a worker's task process), and the dags-test process
    task_peaks = {n: _task_peak(r["dag"]) for n, r in runs.items() if r.get("dag")}
    task_peaks = {n: v for n, v in task_peaks.items() if v}
    process = {n: r["dag"]["peak_rss_mb"] for n, r in runs.items() if r.get("dag")}
    bar = (
        f"peak RSS of every task ≤ {TARGET_RSS_MB} MB at 1M, within {TARGET_RSS_GROWTH:.0%} of 100k"
    )
    if 1_000_000 in process:
        bits, good = [], True
        if 1_000_000 in task_peaks:
            peak, name = task_peaks[1_000_000]
            good = peak <= TARGET_RSS_MB
            bit = f"largest task alone: {peak:.0f} MB at 1M (`{name}`)"
            if 100_000 in task_peaks:
                growth = peak / task_peaks[100_000][0] - 1
                good = good and growth <= TARGET_RSS_GROWTH
                bit += f", {growth:+.0%} vs {task_peaks[100_000][0]:.0f} MB at 100k"
            bits.append(bit)
        proc_good = process[1_000_000] <= TARGET_RSS_MB
        bit = f"`dags test` process (runs every task): {process[1_000_000]:.0f} MB at 1M"
        if 100_000 in process:
            growth = process[1_000_000] / process[100_000] - 1
            proc_good = proc_good and growth <= TARGET_RSS_GROWTH
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
        sched = [
            f"{count(n)} production path {r['dag_sched']['peak_rss_mb']:.0f} MB"
            for n, r in sorted(runs.items())
            if (r.get("dag_sched") or {}).get("peak_rss_mb")
        ]
        shown = "; ".join(x for x in (shown and f"`dags test` {shown}", *sched) if x)
        out.append([bar, "largest process", shown or "not run", "n/a (1M not run)"])

    # 5. faster than the naive one-DAG peer at 100k and 1M
    bits, good, any_peer = [], True, False
    for n in (100_000, 1_000_000):
        dag = (runs.get(n) or {}).get("dag")
        naive = (runs.get(n) or {}).get("naive_dag")
        if not dag or not dag.get("ok") or not naive:
            continue
        raised = runs[n].get("naive_dag_raised")
        if naive.get("ok"):
            any_peer = True
            faster = dag["wall_s"] < naive["wall_s"]
            good = good and faster
            bits.append(
                f"{count(n)}: {dag['wall_s']:.1f} vs {naive['wall_s']:.1f} s, "
                + ("faster" if faster else "SLOWER")
            )
        elif raised and raised.get("ok"):
            any_peer = True
            faster = dag["wall_s"] < raised["wall_s"]
            good = good and faster
            bits.append(
                f"{count(n)}: the naive DAG cannot deliver ({naive['wall_s']:.1f} s to fail); "
                f"with raised limits {raised['wall_s']:.1f} s vs the DAG's "
                f"{dag['wall_s']:.1f} s, the DAG " + ("faster" if faster else "SLOWER")
            )
        else:
            bits.append(f"{count(n)}: the naive DAG cannot deliver (no raised-limit run)")
    out.append(
        [
            "faster than the naive one-DAG peer (b) at 100k and 1M",
            "DAG wall (`dags test`) vs naive DAG wall (`dags test`), same size",
            "; ".join(bits) or "not run",
            ("met" if good else "**missed**") if any_peer else "n/a",
        ]
    )

    # 6. source cost
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

    # 7. parse time: as the dag-processor parses (forked, after its pre-imports) where measured
    parse = (results.get("parse") or {}).get("project")
    forked = ((results.get("parse") or {}).get("dag_processor") or {}).get("files") or {}
    if forked and all("median_s" in f for f in forked.values()):
        worst_s = max(f["median_s"] for f in forked.values())
        shown = ", ".join(f"{k} {v['median_s']:.3f} s" for k, v in sorted(forked.items()))
        out.append(
            [
                "parse time ≤ 0.2 s per DAG file",
                "as the dag-processor parses: the file's `airflow.*` imports pre-imported, then "
                "parsed in a forked process (median of 3), every file in `dags/`",
                shown,
                "met" if worst_s <= TARGET_PARSE_S else "**missed**",
            ]
        )
    elif parse and parse.get("files"):
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

    # Shown, not targets: the script peer, the production path's overhead, the naive memory.
    bits = []
    for n in sorted(runs):
        dag, peer = runs[n].get("dag"), runs[n].get("peer_script")
        if not dag or not dag.get("ok") or not peer:
            continue
        raised = runs[n].get("peer_script_raised")
        if peer.get("ok"):
            bits.append(f"{count(n)}: {dag['wall_s']:.1f} vs {peer['wall_s']:.2f} s")
        elif raised and raised.get("ok"):
            bits.append(
                f"{count(n)}: cannot deliver; raised limits {raised['wall_s']:.1f} s vs "
                f"{dag['wall_s']:.1f} s"
            )
        else:
            bits.append(f"{count(n)}: the script cannot deliver")
    out.append(
        [
            "the script peer (a), for reference",
            "DAG wall vs script wall, same size",
            "; ".join(bits) or "not run",
            "shown" if bits else "n/a",
        ]
    )
    bits = []
    for n in sorted(runs):
        run = runs[n].get("dag_sched")
        if run and run.get("ok") and run.get("task_instances"):
            bits.append(
                f"{count(n)}: {run['wall_s']:.1f} s / {run['task_instances']} task instances = "
                f"{run['wall_s'] / run['task_instances']:.2f} s each; task instance latency "
                f"(scheduled → running) {_s(run.get('ti_latency_mean_s'))} s mean"
            )
    out.append(
        [
            "per-task-instance overhead on the production path",
            "scheduler + LocalExecutor, one backfilled hour",
            "; ".join(bits) or "not run",
            "shown" if bits else "n/a",
        ]
    )
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
            "the naive DAG's memory blow-up",
            "peak RSS of the `dags test` process, same size",
            "; ".join(bits) or "not run",
            "shown" if len(bits) >= 2 else ("one size only" if bits else "n/a"),
        ]
    )
    return out


def _footprint_section(results: dict[str, Any]) -> str:
    """Task instances, XCom bytes and outbox bytes per run, per DAG variant."""
    rows = []
    for size, runs in results.get("runs", {}).items():
        for name in (*DAG_VARIANTS, "naive_dag", "naive_dag_raised"):
            run = runs.get(name)
            if not run:
                continue
            xcom = run.get("xcom") or {}
            box = run.get("outbox") or {}
            json_bytes, stored = box.get("json_bytes"), box.get("outbox_bytes")
            naive = name.startswith("naive")
            rows.append(
                [
                    f"{int(size):,}",
                    VARIANTS[name],
                    str(run.get("task_instances", 0))
                    + (f" (= {FIXED_TASKS} + {_lanes(run)} lanes)" if _lanes(run) else ""),
                    str(xcom.get("rows", "n/a")),
                    f"{xcom['bytes']:,}" if "bytes" in xcom else "n/a",
                    "—" if naive else str(box.get("bodies", "n/a")),
                    "—" if naive else (f"{stored:,}" if stored is not None else "n/a"),
                    "—" if naive else (f"{json_bytes:,}" if json_bytes is not None else "n/a"),
                    "—"
                    if naive
                    else (f"{stored / json_bytes:.1%}" if stored and json_bytes else "n/a"),
                ]
            )
    if not rows:
        return "Not run."
    headers = [
        "changed rows",
        "variant",
        "task instances per run",
        "XCom rows",
        "XCom bytes",
        "outbox bodies",
        "outbox bytes (gzip, stored)",
        "JSON bytes (uncompressed)",
        "stored ÷ JSON",
    ]
    return _table(headers, rows, {0, 2, 3, 4, 5, 6, 7, 8}) + (
        "\n\n*XCom bytes*: the run's stored XCom values in the metadata DB (`xcom.value` as JSON "
        "text, every task of the run). *Outbox bytes*: `sum(octet_length(body))` of the run's "
        "rows in `<state schema>.outbox` (the gzip bodies the lanes send from); *JSON bytes*: "
        "`sum(body_bytes)` of its rows in `delivery_ledger`, the uncompressed JSON the receiver "
        "gets. The naive DAG has no outbox: its whole hour travels through XCom."
    )


def _gzip_section(results: dict[str, Any]) -> str:
    """What gzip saves: the outbox against the JSON, and the wall time with the extra on."""
    rows = []
    for size, runs in results.get("runs", {}).items():
        box = (runs.get("dag") or {}).get("outbox") or {}
        if not box.get("json_bytes"):
            continue
        saved = 1 - box["outbox_bytes"] / box["json_bytes"]
        plain, gz = runs.get("dag") or {}, runs.get("dag_gzip") or {}
        wall = "not run"
        if gz:
            wall = f"{_s(gz.get('wall_s'))} s vs {_s(plain.get('wall_s'))} s plain" + (
                "" if gz.get("ok") else " (gzip run failed)"
            )
        rows.append(
            [
                f"{int(size):,}",
                f"{box['batches']:,}",
                _bytes(box["json_bytes"]),
                _bytes(box["outbox_bytes"]),
                f"{saved:.1%}",
                f"{box['json_bytes'] / box['outbox_bytes']:.1f}{TIMES}"
                if box["outbox_bytes"]
                else "n/a",
                wall,
            ]
        )
    if not rows:
        return "Not run."
    headers = [
        "changed rows",
        "batches",
        "JSON bodies",
        "outbox (gzip)",
        "saved",
        "ratio",
        "wall with `Content-Encoding: gzip` (`dags test`)",
    ]
    return _table(headers, rows, {0, 1, 2, 3, 4, 5}) + (
        "\n\nThe outbox always stores gzip (`services_sync.core.payload.pack_body`); with the "
        "connection extra the same stored bytes go over the wire, so *saved* is also what "
        "the receiver's network gets spared. Without the extra the lanes inflate each body "
        "before the POST. The gzip run has its own metadata DB and state schema (a first run "
        "of that interval, like the plain one)."
    )


def _production_section(results: dict[str, Any]) -> str:
    """The DAG under a scheduler + LocalExecutor: wall, task instances, overhead per TI."""
    rows, parts = [], []
    for size, runs in results.get("runs", {}).items():
        dag = runs.get("dag") or {}
        floor_s = (runs.get("floor") or {}).get("floor_s")
        for name in ("dag_sched", "dag_sched_lanes1"):
            run = runs.get(name)
            if not run:
                continue
            tis = run.get("task_instances") or 0
            wall = run.get("wall_s")
            rows.append(
                [
                    f"{int(size):,}",
                    str(_lanes(run)),
                    _result(run),
                    _s(wall),
                    _s(run.get("span_s")),
                    str(tis),
                    _s(wall / tis) if wall and tis else "n/a",
                    _s(run.get("ti_seconds_mean")),
                    f"{_s(run.get('ti_latency_mean_s'))} (max {_s(run.get('ti_latency_max_s'))})",
                    _s(run.get("between_tasks_s")),
                    f"{run.get('peak_rss_mb', 0):.0f}",
                    _s(dag.get("wall_s")),
                    _x(wall / floor_s) if wall and floor_s else "n/a",
                ]
            )
            tasks = run.get("tasks") or {}
            parts.append(
                f"* {int(size):,} rows, {_lanes(run)} lane(s): "
                + "; ".join(
                    f"{task} {t['seconds']:.1f} s"
                    + (f" ({t['count']}{TIMES})" if t["count"] > 1 else "")
                    + (f", {t['peak_rss_mb']:.0f} MB" if t.get("peak_rss_mb") else "")
                    for task, t in sorted(tasks.items(), key=lambda kv: -kv[1]["seconds"])
                )
            )
    if not rows:
        return "Not run."
    headers = [
        "changed rows",
        "lanes",
        "result",
        "wall s (queued → done)",
        "run span s",
        "task instances",
        "wall ÷ task instances s",
        "mean task instance s",
        "mean latency s (scheduled → running)",
        "between tasks s",
        "largest task process MB",
        "`dags test` wall s, same size",
        "÷ floor",
    ]
    sched = results.get("scheduler") or {}
    start = (sched.get("dag_sched") or {}).get("start_s")
    return (
        _table(headers, rows, {0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
        + "\n\nA scheduler, a dag-processor and an api-server (LocalExecutor, parallelism 4, "
        "forkserver; `devkit/airflow_stack/`) on a PostgreSQL metadata DB, started "
        + (f"in {start:.0f} s " if start else "")
        + "before and stopped after its runs, nothing else measured meanwhile; one "
        "`airflow backfill create --from-date H --to-date H --max-active-runs 1` per row, H a "
        "real past hour seeded like the `dags test` hours. *Run span*: the run's "
        "`start_date → end_date`. *Latency*: each task instance's `scheduled_dttm → start_date` "
        "(scheduler loop, executor queue, process start). *Between tasks*: run span minus the "
        "time at least one task instance ran. *Task process MB*: peak RSS of the process titled "
        "`airflow worker -- <task instance id>`, sampled. The `SERVICES_SYNC_LANES=1` row is "
        "the lanes experiment: one stack of its own, one lane for the whole hour.\n\n"
        "Per task (sum of task instance durations, largest task process):\n\n" + "\n".join(parts)
    )


def load_baseline(path: Path = BASELINE) -> dict[str, Any] | None:
    """The stored results of the previous DAG shape (None when the file is missing)."""
    import json

    return json.loads(path.read_text()) if path.exists() else None


def _before_after_section(results: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    if not baseline:
        return "No baseline (`bench/baseline/`)."
    before_runs = baseline.get("runs", {})
    after_runs = results.get("runs", {})
    rows = []
    for size in sorted({*before_runs, *after_runs}, key=int):
        b, a = before_runs.get(size) or {}, after_runs.get(size) or {}
        if not (b.get("dag") or a.get("dag")):
            continue

        def wall(runs: dict[str, Any], name: str) -> str:
            run = runs.get(name)
            if not run:
                return "n/a"
            return _s(_time(run, name)) + ("" if run.get("ok") else " (failed)")

        def ratio(runs: dict[str, Any]) -> str:
            dag, floor = runs.get("dag") or {}, runs.get("floor") or {}
            if dag.get("wall_s") and floor.get("floor_s"):
                return _x(dag["wall_s"] / floor["floor_s"])
            return "n/a"

        def rss(runs: dict[str, Any]) -> str:
            dag = runs.get("dag") or {}
            if not dag:
                return "n/a"
            peak = _task_peak(dag)
            alone = f"{peak[0]:.0f}" if peak else "not run"
            return f"{dag.get('peak_rss_mb', 0):.0f} / {alone}"

        def tis(runs: dict[str, Any]) -> str:
            return str((runs.get("dag") or {}).get("task_instances", "n/a"))

        rows.append(
            [
                f"{int(size):,}",
                f"{wall(b, 'dag')} → {wall(a, 'dag')}",
                f"{tis(b)} → {tis(a)}",
                f"{ratio(b)} → {ratio(a)}",
                f"{wall(b, 'floor')} → {wall(a, 'floor')}",
                f"{rss(b)} → {rss(a)}",
                f"{wall(b, 'naive_dag_raised')} → {wall(a, 'naive_dag_raised')}",
                wall(a, "dag_sched"),
            ]
        )
    git = baseline.get("git") or {}
    started = str(baseline.get("started", ""))[:10]
    load = (baseline.get("load") or {}).get("start") or [0]
    headers = [
        "changed rows",
        "DAG wall s (`dags test`)",
        "task instances",
        "DAG ÷ floor",
        "floor s",
        "peak RSS MB (`dags test` / largest task alone)",
        "naive DAG† s",
        "production path s (after only)",
    ]
    return _table(headers, rows, {0, 1, 2, 3, 4, 5, 6, 7}) + (
        f"\n\nBefore: `make bench` of {started}, commit {git.get('commit', '?')} (the DAG "
        "mapped `build_batch[n]` → `post_batch[n]` per 1,000-row batch, bodies through XCom: "
        f"5 + 2·⌈rows / 1000⌉ task instances), {baseline.get('wall_s', 0):.0f} s in all, load "
        f"{load[0]:.2f} at its start, from `{BASELINE.relative_to(BASELINE.parents[1])}`; "
        "after: this run. Each side measured on its own day, so compare the ratios to the "
        "floor (same run) rather than absolute seconds. (`bench/README.md` of that time quoted "
        "an earlier full run, before the parse-time and transform fixes of 79d486a, on a "
        f"machine about 1.8{TIMES} faster: 1k 12.4 s, 100k 42.1 s, 1M 459 s; floor 0.03 / 2.0 / "
        "20.4 s; its raw numbers were not kept.)"
    )


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
        cells: dict[str, dict[str, Any]] = {}
        for name, v in per_task.items():  # mapped (lanes): the largest
            base = name.split("[")[0]
            if base not in cells or v["peak_rss_mb"] > cells[base]["peak_rss_mb"]:
                cells[base] = {**v, "ok": v["ok"] and cells.get(base, {}).get("ok", True)}
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
        "`airflow tasks test` process, as a worker runs it (`post_batches`: the largest of its "
        "lanes, each sending its share of the run again); "
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
        "then `fetch_batch.sql` per planned batch through "
        "`services_sync.query.source.read_planned_batches` "
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
    forked = (parse.get("dag_processor") or {}).get("files") or {}
    rows = []
    for kind, folder in (("project", "dags/"), ("naive", "bench/naive_dag/ (peer b)")):
        rep = parse.get(kind)
        if not rep:
            continue
        for name, f in sorted(rep["files"].items()):
            per_parse = forked.get(name, {}).get("median_s") if kind == "project" else None
            judged = per_parse if per_parse is not None else f["seconds"]
            rows.append(
                [
                    folder,
                    name,
                    ", ".join(f["dags"]),
                    str(f["tasks"]),
                    f"{f['seconds']:.3f}",
                    "n/a" if per_parse is None else f"{per_parse:.3f}",
                    "yes" if judged <= TARGET_PARSE_S else "**no**",
                ]
            )
    if not rows:
        return "Not run."
    headers = [
        "DAGs folder",
        "file",
        "DAGs",
        "tasks",
        "`dags report` s",
        "dag-processor s",
        "≤ 0.2 s",
    ]
    note = (
        "\n\n*`dags report` s*: `airflow dags report`, every file in one process, so only the "
        "first pays the imports the files share. *dag-processor s*: each file as Airflow 3.3's "
        "dag-processor parses it on every `min_file_process_interval`: the `airflow.*` modules "
        "the file names are imported once in the parent (`[dag_processor] "
        "parsing_pre_import_modules`), the file is parsed in a forked process (median of 3); "
        "what the file imports beyond those, every parse imports again. The target is judged "
        "on it where measured."
    )
    return _table(headers, rows, {3, 4, 5}) + (note if forked else "")


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


def render(results: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The whole ``results.md``; ``baseline``: the before figures (default :data:`BASELINE`)."""
    started = results.get("started", "")
    wall = results.get("wall_s")
    sizes = ", ".join(count(n) for n in results.get("sizes", []))
    sched = ", ".join(count(n) for n in results.get("scheduler_sizes", []))
    head = (
        "# Benchmark: services_requests_sync vs the floor and two peers\n\n"
        f"Command: `{results.get('command', 'python -m bench.run')}` (`make bench`), "
        f"started {started}"
        + (f", {wall:.0f} s in all" if wall else " (still running or interrupted)")
        + f". Sizes: {sizes} changed rows in one hourly interval"
        + (f" (production path: {sched})" if sched else "")
        + f"; batch size {results.get('batch_size')}."
    )
    if baseline is None:
        baseline = load_baseline()
    if baseline and (baseline.get("git") or {}).get("commit") == (results.get("git") or {}).get(
        "commit"
    ):
        baseline = None  # rendering the baseline itself
    if results.get("error"):
        head += f"\n\n**The benchmark did not finish:** {results['error']}"
    targets = _table(["target", "how", "measured", "status"], _targets(results), set())
    sections = [
        head,
        "## Machine\n\n" + _machine_section(results),
        "## Results\n\n" + _results_section(results),
        "## Ratios (DAG time ÷ the other's time; < 1 means the DAG is faster)\n\n"
        + _ratio_section(results),
        "## Targets (reported, never asserted)\n\n" + targets,
        "## Before / after: the old shape (two task instances per batch) and this one\n\n"
        + _before_after_section(results, baseline),
        "## Per run: task instances, XCom, outbox\n\n" + _footprint_section(results),
        "## What gzip saves\n\n" + _gzip_section(results),
        "## Production path: scheduler + LocalExecutor\n\n" + _production_section(results),
        "## Where the DAG's time goes (`dags test`)\n\n" + _breakdown_section(results),
        "## Peak RSS per task\n\n" + _task_rss_section(results),
        "## Source cost: 1k changed rows in a small and a large table\n\n"
        + _source_section(results),
        "## Parse time\n\n" + _parse_section(results) + _imports_section(results),
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
