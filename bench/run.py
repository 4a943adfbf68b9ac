"""``make bench``: the real DAG against the floor and two peers, in one run on one machine.

``python -m bench.run [--sizes 1k,100k,1M] [--source-cost-rows 100k,10M] [--quick] [--smoke]``

Everything it needs it starts itself, in ``bench/.work/`` (wiped on every start): a throwaway
PostgreSQL 16 cluster (the bundled ``pgserver`` binaries), seeded in SQL; the reference
receiver as a separate process (plus a raised-limit one for labelled peer runs); two clean
``AIRFLOW_HOME``\\ s with a migrated SQLite DB, one per DAGs folder. Then, per size (changed
rows in one hourly interval), smallest first:

1. **floor**: ``COPY (interval query) TO STDOUT`` into a null sink + the DAG's exact body bytes
   POSTed by a tight client (``bench/floor.py``);
2. **DAG**: ``airflow dags test services_requests_sync <interval end>``: wall time, peak RSS of
   the largest process (tasks run inside that process under ``dags test``), task instances,
   XCom bytes (metadata DB) and outbox bytes (``services_sync.outbox``, stored gzip, and the
   JSON size from ``services_sync.delivery_ledger``); then each task alone (``tasks test``);
3. **DAG, gzip** (``--gzip-sizes``, 100k): the same with the connection extra
   ``{"Content-Encoding": "gzip"}``, in its own metadata DB and state schema;
4. **peer (a)**: ``bench/peer_script.py``, one ``requests.post(json=…)`` for the whole hour,
   against the real receiver and (labelled) against the raised-limit one;
5. **peer (b)**: ``bench/naive_dag`` (``SQLExecuteQueryOperator`` → XCom → one ``HttpOperator``)
   with ``airflow dags test``, against both receivers likewise.

Then the **production path** (``bench/scheduler.py``): a scheduler + dag-processor +
api-server (LocalExecutor, PostgreSQL metadata DB) runs the DAG for one real past hour per
``--scheduler-sizes`` (1k, 100k) through ``airflow backfill create``; then the same stack with
``SERVICES_SYNC_LANES=1`` at ``--lanes-size`` (100k), against the default lanes. Then the source
cost (extraction time and ``EXPLAIN (ANALYZE, BUFFERS)`` for 1k changed rows in tables of each
``--source-cost-rows`` size) and parse times (``airflow dags report``). The report goes to
``bench/results.md`` (``--out``) with the raw numbers in ``results.json`` next to it; it shows
the figures of the old DAG shape (``bench/baseline/``) next to the new ones. Benchmarks report;
they assert nothing (the exit status is 0 unless the harness itself broke).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from bench import measure, report
from bench.env import (
    BENCH,
    ROOT,
    Receiver,
    airflow_env,
    clone_home,
    migrate,
    set_bytecode_cache,
)
from bench.seed import seed_intervals, seed_source_cost

#: ``dags test`` hours: size i uses FIRST_HOUR + i hours; an empty hour precedes them (warm-up).
START_DATE = datetime(2026, 6, 1, 0, tzinfo=UTC)
WARMUP_HOUR = datetime(2026, 6, 1, 0, tzinfo=UTC)
FIRST_HOUR = datetime(2026, 6, 1, 1, tzinfo=UTC)
SOURCE_COST_HOUR = datetime(2026, 6, 2, 12, tzinfo=UTC)
SOURCE_COST_CHANGED = 1000

#: State schemas: each variant that runs an interval again gets its own ledger, plans and
#: outbox, so it is that interval's first run (no plan reuse, nothing to drain or supersede).
SCHEMA = "services_sync"
SCHEMAS = {
    "dag_gzip": "services_sync_gzip",
    "profile": "services_sync_profile",
    "dag_sched": "services_sync_sched",
    "dag_sched_lanes1": "services_sync_lanes1",
}

#: Bytecode cache of the child processes (see bench.env.set_bytecode_cache); kept across runs
#: and shared by every --workdir.
PYCACHE = BENCH / ".work" / "pycache"
_MARKER = ".bench-workdir"

DEFAULT_SIZES = (1_000, 100_000, 1_000_000)
DEFAULT_SOURCE_COST = (100_000, 10_000_000)
QUICK_SIZES = (1_000, 100_000)
QUICK_SOURCE_COST = (100_000, 1_000_000)
SMOKE_SIZES = (1_000,)
SMOKE_SOURCE_COST = (20_000, 100_000)
#: The production path (scheduler + LocalExecutor) runs these of --sizes by default.
SCHEDULER_MAX_ROWS = 100_000
EXPERIMENT_ROWS = 100_000
PARTS = {
    "warmup",
    "floor",
    "dag",
    "taskrss",
    "gzip",
    "peer",
    "naive",
    "naive_raised",
    "raised",
    "sched",
    "lanes",
    "source",
    "parse",
}


def parse_count(text: str) -> int:
    """``1k`` → 1000, ``1M`` → 1,000,000, ``250000`` → 250000."""
    text = text.strip().replace("_", "").replace(",", "")
    factor = {"k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if factor != 1 else text
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a row count like 1k or 1M") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def parse_counts(text: str) -> tuple[int, ...]:
    if not text.strip():
        return ()
    return tuple(sorted({parse_count(x) for x in text.split(",") if x.strip()}))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the services_requests_sync DAG against the floor and two peers.",
    )
    parser.add_argument("--sizes", type=parse_counts, help="changed rows per hour (1k,100k,1M)")
    parser.add_argument(
        "--source-cost-rows",
        type=parse_counts,
        help="table sizes for the source-cost case, 1k changed rows each (100k,10M; '' = skip)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="sizes 1k,100k and source cost 100k,1M"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="1k rows only, small source-cost tables; writes bench/.work/smoke/results.md",
    )
    parser.add_argument("--out", type=Path, help="report path (default bench/results.md)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=BENCH / ".work",
        help="scratch space, wiped on start (PostgreSQL, Airflow homes, logs); bench/.work",
    )
    parser.add_argument(
        "--dag-root",
        type=Path,
        default=ROOT,
        help="checkout whose dags/, plugins/ and include/sql the DAG runs use (default: this "
        "one); benchmark a branch with a fix against the same harness for a before/after",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="the DAG's batch_size (default 1000)"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma list of parts to leave out: warmup,floor,dag,taskrss,gzip,peer,naive,"
        "naive_raised,raised,sched,lanes,source,parse",
    )
    parser.add_argument(
        "--scheduler-sizes",
        type=parse_counts,
        default=None,
        help="changed rows per run on the production path (scheduler + LocalExecutor, one "
        "backfilled past hour each; default: the --sizes up to 100k; '' = none)",
    )
    parser.add_argument(
        "--lanes-size",
        type=parse_counts,
        default=None,
        help="run the production path once more with SERVICES_SYNC_LANES=1 at this size "
        "(default: 100k when it is a scheduler size, none with --smoke; '' = none)",
    )
    parser.add_argument(
        "--gzip-sizes",
        type=parse_counts,
        default=None,
        help="also run the DAG (dags test) with the connection extra Content-Encoding: gzip at "
        "these sizes (default: 100k when it is one of the sizes, 1k with --smoke; '' = none)",
    )
    parser.add_argument(
        "--profile",
        type=parse_counts,
        default=None,
        help="also run the DAG under a profiler at these sizes (separate, untimed runs; "
        "default: 100k when it is one of the sizes, none with --smoke; '' = none)",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        dest="bytecode_cache",
        action="store_false",
        help="run children with the inherited bytecode settings (PYTHONDONTWRITEBYTECODE=1 and "
        "a venv without .pyc make every process compile Airflow from source)",
    )
    parser.add_argument(
        "--profiler",
        choices=["stack", "cprofile"],
        default="stack",
        help="stack: bench.stackprof, samples every thread (default); cprofile: main thread only",
    )
    parser.add_argument("--repeats", type=int, default=7, help="source-cost repetitions")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per measured run, s")
    parser.add_argument("--note", default="", help="free text for the report (e.g. 'shared')")
    args = parser.parse_args(argv)
    args.skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if args.smoke:
        # The same code on 1k rows; what only matters for timings (warm-up, the lanes
        # experiment, the raised-limit naive DAG, most per-task RSS runs) is left out.
        args.sizes = args.sizes or SMOKE_SIZES
        if args.source_cost_rows is None:
            args.source_cost_rows = SMOKE_SOURCE_COST
        args.repeats = min(args.repeats, 3)
        args.skip |= {"warmup", "naive_raised", "lanes"}
        if args.gzip_sizes is None:
            args.gzip_sizes = SMOKE_SIZES
        args.out = args.out or args.workdir / "smoke" / "results.md"
    elif args.quick:
        args.sizes = args.sizes or QUICK_SIZES
        if args.source_cost_rows is None:
            args.source_cost_rows = QUICK_SOURCE_COST
    args.sizes = args.sizes or DEFAULT_SIZES
    if args.source_cost_rows is None:
        args.source_cost_rows = DEFAULT_SOURCE_COST
    args.out = (args.out or BENCH / "results.md").resolve()
    if args.profile is None:
        args.profile = () if args.smoke or 100_000 not in args.sizes else (100_000,)
    if args.scheduler_sizes is None:
        args.scheduler_sizes = tuple(n for n in args.sizes if n <= SCHEDULER_MAX_ROWS)
    if "sched" in args.skip:
        args.scheduler_sizes = ()
    if args.lanes_size is None:
        default = EXPERIMENT_ROWS in args.scheduler_sizes and not args.smoke
        args.lanes_size = (EXPERIMENT_ROWS,) if default else ()
    if "lanes" in args.skip:
        args.lanes_size = ()
    if len(args.lanes_size) > 1:
        parser.error("--lanes-size: one size")
    if args.gzip_sizes is None:
        args.gzip_sizes = (EXPERIMENT_ROWS,) if EXPERIMENT_ROWS in args.sizes else ()
    if "gzip" in args.skip:
        args.gzip_sizes = ()
    unknown = args.skip - PARTS
    if "tuned" in unknown:
        parser.error(
            "--skip tuned: the batch_size=10000 experiment is gone (task instances no longer "
            "grow with batches); the lanes=1 experiment on the production path is --skip lanes"
        )
    if unknown:
        parser.error(f"--skip: unknown part(s) {', '.join(sorted(unknown))}")
    return args


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _prepare_workdir(workdir: Path) -> Path:
    workdir = workdir.resolve()
    pg_dir = workdir / "pg"
    if (pg_dir / "data" / "postmaster.pid").exists():  # an interrupted run left it up
        from devkit.pgcluster import PostgresCluster

        with contextlib.suppress(Exception):
            PostgresCluster(base_dir=pg_dir).stop()
    if workdir.exists():
        own = workdir == (BENCH / ".work").resolve() or (workdir / _MARKER).exists()
        if not own and any(workdir.iterdir()):
            raise SystemExit(
                f"--workdir {workdir} is not empty and was not made by the benchmark; pick "
                "another directory (the benchmark wipes its workdir on every start)"
            )
        for child in workdir.iterdir():  # everything but the bytecode cache
            if child.name != "pycache":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    (workdir / "logs").mkdir(parents=True)
    (workdir / _MARKER).write_text("Workdir of python -m bench.run; wiped on every start.\n")
    (workdir / "pg").mkdir()
    # A private runtime dir, or platformdirs warns (and falls back to /tmp) in every process.
    (workdir / "run").mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(workdir / "run")
    return workdir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The harness reads the source with the DAG's own code (services_sync lives in plugins/).
    if str(ROOT / "plugins") not in sys.path:
        sys.path.insert(0, str(ROOT / "plugins"))
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    began = time.perf_counter()
    workdir = _prepare_workdir(args.workdir)
    logs = workdir / "logs"
    if args.bytecode_cache:
        set_bytecode_cache(PYCACHE)
    results: dict[str, Any] = {
        "command": shlex.join(
            ["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": list(args.sizes),
        "scheduler_sizes": list(args.scheduler_sizes),
        "lanes_size": list(args.lanes_size),
        "gzip_sizes": list(args.gzip_sizes),
        "batch_size": args.batch_size,
        "note": args.note,
        "skip": sorted(args.skip),
        "bytecode_cache": args.bytecode_cache,
        "dag_root": str(args.dag_root.resolve()),
        "runs": {},
        "warmup": None,
        "scheduler": {},
        "source_cost": {},
        "parse": {},
        "profiles": {},
        "load": {"start": os.getloadavg()},
    }
    cluster = None
    receivers: list[Receiver] = []
    try:
        from devkit.pgcluster import PostgresCluster

        log(f"workdir {workdir}; sizes {', '.join(map(str, args.sizes))}")
        cluster = PostgresCluster(base_dir=workdir / "pg").start()
        dsn = cluster.create_database("bench")
        results["machine"] = report.machine(dsn)
        results["git"] = _git_state(args.dag_root.resolve())
        hours = {FIRST_HOUR + timedelta(hours=i): n for i, n in enumerate(args.sizes)}
        sched_hours = _scheduler_hours(args, after=max(hours))
        if len(sched_hours) < len(args.scheduler_sizes) + len(args.lanes_size):
            log("the production path needs past hours after the benchmark's hours: skipped")
            args.scheduler_sizes, args.lanes_size, sched_hours = (), (), {}
        seconds = seed_intervals(dsn, {**hours, **{h: n for h, (n, _) in sched_hours.items()}})
        seeded = sum(hours.values()) + sum(n for n, _ in sched_hours.values())
        results["seed"] = {"rows": seeded, "seconds": seconds}
        log(f"seeded {seeded:,} rows in {seconds:.1f} s")

        receiver = Receiver("devkit.receiver", logs / "receiver.log").start()
        receivers.append(receiver)
        raised = None
        if "raised" not in args.skip:
            raised = Receiver("bench.receiver_raised", logs / "receiver-raised.log").start()
            receivers.append(raised)
        log(
            f"receiver {receiver.url}" + (f", raised-limit receiver {raised.url}" if raised else "")
        )

        dag_home, naive_home = workdir / "airflow-dag", workdir / "airflow-naive"
        gzip_home = workdir / "airflow-dag-gzip"
        env_args: dict[str, Any] = {"source_dsn": dsn, "start_date": START_DATE.isoformat()}
        dag_root = args.dag_root.resolve()
        env_args["plugins_folder"] = dag_root / "plugins"
        dag_env = airflow_env(dag_home, dag_root / "dags", api_port=receiver.port, **env_args)
        dag_env["SERVICES_SYNC_BATCH_SIZE"] = str(args.batch_size)
        seconds = migrate(dag_env, logs / "airflow-migrate.log")
        clone_home(dag_home, naive_home)
        clone_home(dag_home, gzip_home)
        # The gzip variant keeps its own metadata DB and state schema: its runs are first runs.
        gzip_env = {
            **airflow_env(
                gzip_home, dag_root / "dags", api_port=receiver.port, gzip=True, **env_args
            ),
            "SERVICES_SYNC_BATCH_SIZE": str(args.batch_size),
            "SERVICES_SYNC_STATE_SCHEMA": SCHEMAS["dag_gzip"],
        }
        naive_env_args = {**env_args, "plugins_folder": ROOT / "plugins"}
        naive_envs = {
            "real": airflow_env(
                naive_home, BENCH / "naive_dag", api_port=receiver.port, **naive_env_args
            )
        }
        if raised and "naive_raised" not in args.skip:
            naive_envs["raised"] = airflow_env(
                naive_home, BENCH / "naive_dag", api_port=raised.port, **naive_env_args
            )
        log(f"migrated the Airflow metadata DB in {seconds:.1f} s")

        if not {"dag", "warmup"} & args.skip:
            log("warm-up: the DAG for an hour without changes")
            results["warmup"] = measure.run_dag(
                env=dag_env,
                home=dag_home,
                dag_id=measure.DAG_ID,
                interval_start=WARMUP_HOUR,
                rows=0,
                receiver=receiver,
                log_path=logs / "dag-warmup.log",
                timeout=args.timeout,
                state_dsn=dsn,
            )
            log(_line("DAG, no changes", results["warmup"]))

        for start, rows in hours.items():
            runs: dict[str, Any] = {}
            results["runs"][str(rows)] = runs
            label = report.count(rows)
            if "floor" not in args.skip:
                runs["floor"] = measure.run_floor(
                    dsn=dsn,
                    receiver=receiver,
                    interval_start=start,
                    batch_size=args.batch_size,
                    log_path=logs / f"floor-{label}.log",
                )
                log(_line(f"{label} floor", runs["floor"], "floor_s"))
            if "dag" not in args.skip:
                runs["dag"] = measure.run_dag(
                    env=dag_env,
                    home=dag_home,
                    dag_id=measure.DAG_ID,
                    interval_start=start,
                    rows=rows,
                    receiver=receiver,
                    log_path=logs / f"dag-{label}.log",
                    timeout=args.timeout,
                    state_dsn=dsn,
                )
                _check_bytes(runs, "dag")
                log(_line(f"{label} DAG", runs["dag"]))
                if "taskrss" not in args.skip and runs["dag"]["ok"] and _rss_size(rows, args):
                    runs["dag"]["task_rss"] = measure.task_rss(
                        env=dag_env,
                        dag_id=measure.DAG_ID,
                        interval_start=start,
                        tasks=_rss_tasks(runs["dag"], smoke=args.smoke),
                        log_dir=logs,
                        label=label,
                        timeout=args.timeout,
                    )
                    log(
                        f"{label} DAG, each task alone (airflow tasks test): "
                        + ", ".join(
                            f"{k} {v['peak_rss_mb']:.0f} MB"
                            for k, v in runs["dag"]["task_rss"].items()
                        )
                    )
            if rows in args.gzip_sizes:
                runs["dag_gzip"] = measure.run_dag(
                    env=gzip_env,
                    home=gzip_home,
                    dag_id=measure.DAG_ID,
                    interval_start=start,
                    rows=rows,
                    receiver=receiver,
                    log_path=logs / f"dag-gzip-{label}.log",
                    timeout=args.timeout,
                    state_dsn=dsn,
                )
                _check_bytes(runs, "dag_gzip")
                log(_line(f"{label} DAG, Content-Encoding: gzip", runs["dag_gzip"]))
            if "peer" not in args.skip:
                peers = [("peer_script", receiver)]
                if raised:
                    peers.append(("peer_script_raised", raised))
                for name, target in peers:
                    runs[name] = measure.run_peer_script(
                        dsn=dsn,
                        receiver=target,
                        interval_start=start,
                        rows=rows,
                        log_path=logs / f"{name}-{label}.log",
                    )
                    log(_line(f"{label} {name}", runs[name]))
            if "naive" not in args.skip:
                for kind, env in naive_envs.items():
                    name = "naive_dag" if kind == "real" else "naive_dag_raised"
                    runs[name] = measure.run_dag(
                        env=env,
                        home=naive_home,
                        dag_id=measure.NAIVE_DAG_ID,
                        interval_start=start,
                        rows=rows,
                        receiver=receiver if kind == "real" else raised,
                        log_path=logs / f"{name}-{label}.log",
                        timeout=args.timeout,
                    )
                    runs[name].pop("receiver_digests", None)
                    log(_line(f"{label} {name}", runs[name]))
            _save(results, args.out)

        if sched_hours:
            _production_path(
                args=args,
                results=results,
                cluster=cluster,
                dsn=dsn,
                receiver=receiver,
                sched_hours=sched_hours,
                workdir=workdir,
            )
            _save(results, args.out)

        profile_env = {**dag_env, "SERVICES_SYNC_STATE_SCHEMA": SCHEMAS["profile"]}
        for rows in args.profile:
            if rows not in args.sizes:
                log(f"--profile {rows}: not one of --sizes, skipped")
                continue
            start = next(s for s, n in hours.items() if n == rows)
            label = report.count(rows)
            suffix = ".prof" if args.profiler == "cprofile" else ".txt"
            prof = workdir / f"dag-{label}-{args.profiler}{suffix}"
            log(f"{label} DAG under {args.profiler} (untimed)")
            run = measure.run_dag(
                env=profile_env,
                home=dag_home,
                dag_id=measure.DAG_ID,
                interval_start=start,
                rows=rows,
                receiver=receiver,
                log_path=logs / f"dag-{label}-profile.log",
                timeout=args.timeout * 3,
                profile_path=prof,
            )
            results["profiles"][str(rows)] = {
                "ok": run["ok"],
                "wall_s": run["wall_s"],
                "prof": str(prof),
                "profiler": args.profiler,
                "top": report.profile_summary(prof),
            }

        if "source" not in args.skip:
            for total in args.source_cost_rows:
                label = report.count(total)
                src = cluster.create_database(f"bench_src_{label.lower()}")
                seeded = seed_source_cost(src, SOURCE_COST_HOUR, total, SOURCE_COST_CHANGED)
                cost = measure.source_cost(src, SOURCE_COST_HOUR, args.repeats)
                cost["seed_s"] = seeded
                results["source_cost"][str(total)] = cost
                log(
                    f"source cost, {label}-row table: extraction {cost['median_ms']:.1f} ms "
                    f"(median of {args.repeats}), index range scan: {cost['index_range_scan']}"
                )

        if "parse" not in args.skip:
            results["parse"]["project"] = measure.dags_report(dag_env, logs / "dags-report.log")
            results["parse"]["naive"] = measure.dags_report(
                naive_envs["real"], logs / "dags-report-naive.log"
            )
            results["parse"]["imports"] = measure.import_profile(
                dag_env, dag_root / "dags" / "services_requests_sync.py"
            )
            results["parse"]["dag_processor"] = measure.dag_processor_parse(
                dag_env, dag_root / "dags"
            )
            for kind in ("project", "naive"):
                for name, row in results["parse"][kind]["files"].items():
                    log(f"parse time ({kind}) {name}: {row['seconds']:.3f} s")
            for name, row in results["parse"]["dag_processor"]["files"].items():
                log(f"parse time (dag-processor) {name}: {row.get('median_s', float('nan')):.3f} s")
        status = 0
    except KeyboardInterrupt:
        log("interrupted; writing what was measured")
        status = 130
    except Exception as exc:
        log(f"the benchmark broke: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        results["error"] = f"{type(exc).__name__}: {exc}"
        status = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for rec in receivers:
            rec.stop()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    results["load"]["end"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - began
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    _save(results, args.out)
    log(f"wrote {args.out} ({results['wall_s']:.0f} s in all)")
    return status


def _scheduler_hours(
    args: argparse.Namespace, *, after: datetime
) -> dict[datetime, tuple[int, str]]:
    """Real past whole hours for the production path: ``{hour: (rows, variant)}``.

    ``airflow backfill create`` makes runs only for intervals that have ended by the wall
    clock, so these hours end at the last full hour before now at the latest, oldest first:
    one per scheduler size (variant ``dag_sched``), then the lanes experiment's. They must come
    after the ``dags test`` hours (``after``), or the source table would mix the two.
    """
    wanted = [(n, "dag_sched") for n in args.scheduler_sizes]
    wanted += [(n, "dag_sched_lanes1") for n in args.lanes_size]
    if not wanted:
        return {}
    top = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first = top - timedelta(hours=len(wanted))
    if first <= after:
        return {}
    return {first + timedelta(hours=i): item for i, item in enumerate(wanted)}


def _production_path(
    *,
    args: argparse.Namespace,
    results: dict[str, Any],
    cluster: Any,
    dsn: str,
    receiver: Receiver,
    sched_hours: dict[datetime, tuple[int, str]],
    workdir: Path,
) -> None:
    """The DAG under a scheduler + LocalExecutor: one stack per lane count, one backfill per
    hour. Each stack runs alone (nothing else is measured while it is up)."""
    from bench import scheduler

    first = min(sched_hours)
    for variant in ("dag_sched", "dag_sched_lanes1"):
        todo = {h: n for h, (n, v) in sched_hours.items() if v == variant}
        if not todo:
            continue
        lanes = 1 if variant == "dag_sched_lanes1" else None
        meta = cluster.create_database(f"airflow_{variant}")
        stack = scheduler.SchedulerStack(
            workdir / f"airflow-{variant.replace('_', '-')}",
            meta,
            args.dag_root.resolve(),
            scheduler.stack_extra(
                source_dsn=dsn,
                api_port=receiver.port,
                start_date=first,
                batch_size=args.batch_size,
                schema=SCHEMAS[variant],
                lanes=lanes,
            ),
        )
        info: dict[str, Any] = {"lanes": lanes or "default", "hours": {}}
        results["scheduler"][variant] = info
        try:
            info["start_s"] = stack.start()
            log(
                f"{variant}: metadata DB migrated, scheduler, dag-processor, api-server up in "
                f"{info['start_s']:.0f} s"
            )
            for hour, rows in sorted(todo.items()):
                label = report.count(rows)
                last = hour == max(todo)
                run = stack.run_hour(hour, rows, receiver, args.timeout, then_complete=not last)
                run.pop("receiver_digests", None)  # another hour than the floor's: no check
                results["runs"].setdefault(str(rows), {})[variant] = run
                info["hours"][label] = hour.isoformat()
                log(_line(f"{label} DAG on the scheduler ({variant})", run))
                _save(results, args.out)
        finally:
            info["force_killed"] = stack.stop()
            if info["force_killed"]:
                log(f"{variant}: needed SIGKILL: {info['force_killed']}")


def _git_state(root: Path) -> dict[str, Any]:
    """The commit measured and whether the DAG's files differ from it."""

    def git(*argv: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(root), *argv], capture_output=True, text=True, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "dags", "plugins", "include")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dag_files_changed": len(changed.splitlines()),
    }


def _rss_size(rows: int, args: argparse.Namespace) -> bool:
    """Whether to run each task alone at this size: from 100k up (or the largest size)."""
    return args.smoke or rows >= 100_000 or rows == max(args.sizes)


def _rss_tasks(dag_run: dict[str, Any], *, smoke: bool) -> list[tuple[str, int | None]]:
    """The tasks to run alone, in DAG order: the no-data baseline, then each that holds data.

    ``tasks test build_batches`` rebuilds the run's batches as pending (same bodies, same
    keys), and each lane then sends its share again (the receiver counts duplicates), so every
    task alone does its real work and the run ends acknowledged as before.
    """
    if smoke:  # the one task that holds data, to keep the smoke short
        return [("build_batches", None)]
    lanes = dag_run["tasks"].get("post_batches", {}).get("count", 0)
    return [
        ("wait_for_open_transactions", None),
        ("plan_batches", None),
        ("build_batches", None),
        *[("post_batches", lane) for lane in range(lanes)],
        ("record_delivery", None),
        ("reconcile_interval", None),
    ]


def _check_bytes(runs: dict[str, Any], name: str) -> None:
    """Whether the receiver got byte-identical JSON bodies from the variant and the floor."""
    run, floor = runs[name], runs.get("floor") or {}
    run["same_bytes_as_floor"] = bool(run.get("receiver_digests")) and floor.get(
        "bodies_digest"
    ) == report.digest(run["receiver_digests"])
    if name != "dag":
        run.pop("receiver_digests", None)


def _line(label: str, run: dict[str, Any], key: str = "wall_s") -> str:
    state = "ok" if run.get("ok") else f"FAILED ({run.get('detail') or 'see log'})"
    value = run.get(key) or 0.0
    rss = run.get("peak_rss_mb")
    extra = f", peak RSS {rss:.0f} MB" if rss else ""
    tis = run.get("task_instances")
    extra += f", {tis} task instances" if tis else ""
    if run.get("xcom"):
        extra += f", XCom {run['xcom']['bytes']:,} B"
    box = run.get("outbox") or {}
    if box.get("json_bytes"):
        extra += f", outbox {box['outbox_bytes']:,} B (JSON {box['json_bytes']:,} B)"
    return f"{label}: {value:.2f} s{extra}: {state}"


def _save(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".json")
    raw.write_text(json.dumps(results, indent=1, default=str) + "\n")
    out.write_text(report.render(results))


if __name__ == "__main__":
    sys.exit(main())
