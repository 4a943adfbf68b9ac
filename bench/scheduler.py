"""The production path: the DAG run by a real scheduler and LocalExecutor, not ``dags test``.

``airflow dags test`` runs every task instance of a run inside one process, one after the other.
A deployment runs each task instance in a process of its own: the scheduler queues it, the
LocalExecutor starts it (forked from its forkserver), and the task reports to the api-server's
Execution API. What that costs per task instance only shows on this path.

The stack is the one of the operate tests and ``make airflow``:
:class:`devkit.airflow_stack.AirflowStack` starts and stops an api-server, a dag-processor and a
scheduler, with :func:`devkit.airflow_stack.scheduler_stack_env` (LocalExecutor, parallelism 4,
forkserver with preloaded imports, 1 s heartbeats, no scheduled runs, catch-up off), on a
PostgreSQL metadata database of the benchmark's cluster. One interval is one ``airflow backfill
create --from-date H --to-date H --max-active-runs 1`` of a past whole hour ``H`` (the DAG
unpaused; backfill only makes runs whose interval has ended by the wall clock), the operators'
one-hour recipe.

Measured per run, from the metadata DB: the run's ``queued_at → end_date`` (the wall time a
deployment sees; the scheduler picks the run up inside it), ``start_date → end_date``, every
task instance with its latency (``scheduled_dttm → start_date``: scheduler loop, executor queue,
process start) and duration, the XCom bytes. Peak RSS per task instance is sampled from the
process whose title is ``airflow worker -- <task instance id>`` (Airflow's task runner sets it).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from bench.env import Receiver, clean_env
from bench.measure import outbox_footprint
from bench.procmon import MIB
from devkit.airflow_stack import (
    DAG_ID,
    AirflowStack,
    api_connection,
    free_port,
    processes_in,
    rows,
    scheduler_stack_env,
    wait_until,
)

#: The title Airflow's task runner gives a task process (``task_runner.startup``).
_TASK_TITLE = "airflow worker -- "
STARTUP_TIMEOUT_S = 300


class TaskRssSampler(threading.Thread):
    """Peak RSS of every task process a stack starts, by task instance id."""

    def __init__(self, workdir: Path, interval: float = 0.1) -> None:
        super().__init__(name="task-rss-sampler", daemon=True)
        self.workdir = workdir
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for info in processes_in(self.workdir):
                if not info.cmdline.startswith(_TASK_TITLE):
                    continue
                ti_id = info.cmdline[len(_TASK_TITLE) :].strip()
                if " " in ti_id:  # "LocalExecutor: <id>", the worker that supervises the task
                    continue
                with contextlib.suppress(psutil.Error):
                    rss = psutil.Process(info.pid).memory_info().rss
                    self.peaks[ti_id] = max(self.peaks.get(ti_id, 0), rss)
            self.samples += 1
            self._halt.wait(self.interval)

    def finish(self) -> dict[str, int]:
        self._halt.set()
        self.join(5)
        return self.peaks


class SchedulerStack:
    """A scheduler + dag-processor + api-server on its own metadata DB, running this DAG.

    Args:
        home: ``AIRFLOW_HOME`` (component logs in ``home/component-logs``, task logs in
            ``home/logs``).
        meta_dsn: An empty metadata database (:meth:`start` migrates it).
        dag_root: The checkout whose ``dags/`` and ``plugins/`` the stack runs.
        extra: ``AIRFLOW_CONN_*`` and ``SERVICES_SYNC_*`` settings of the DAG.
    """

    def __init__(self, home: Path, meta_dsn: str, dag_root: Path, extra: dict[str, str]) -> None:
        self.extra = {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dag_root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(dag_root / "plugins"),
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            **extra,
        }
        self.env = scheduler_stack_env(home, meta_dsn, free_port(), self.extra, base=clean_env())
        self.stack = AirflowStack(home, self.env)
        self.schema = self.env.get("SERVICES_SYNC_STATE_SCHEMA", "services_sync")
        self.source_dsn = self.env["AIRFLOW_CONN_SERVICES_SOURCE_DB"]

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> float:
        """Migrate the metadata DB, start the components, wait until the DAG is serialized and
        all report healthy (:meth:`AirflowStack.boot`), unpause the DAG; returns seconds."""
        started = time.perf_counter()
        self.stack.boot("api-server", "dag-processor", "scheduler", timeout=STARTUP_TIMEOUT_S)
        self.stack.cli("dags", "unpause", DAG_ID)
        return time.perf_counter() - started

    def stop(self) -> list[str]:
        """Stop everything the stack started; the command lines of what needed SIGKILL."""
        return [p.cmdline for p in self.stack.stop()]

    def _scalar(self, query: str, params: Any = None) -> Any:
        found = rows(self.stack.meta_dsn, query, params)
        return found[0][0] if found else None

    # -- one interval --------------------------------------------------------------------------
    def run_hour(
        self,
        hour: datetime,
        rows_expected: int,
        receiver: Receiver,
        timeout: float,
        *,
        then_complete: bool = True,
    ) -> dict[str, Any]:
        """Backfill one past hour and measure its run.

        ``then_complete``: afterwards, wait (unmeasured) until the scheduler marks the backfill
        complete, which the next ``backfill create`` of the DAG needs.
        """
        receiver.reset()
        load = os.getloadavg()[0]
        before = self._scalar("SELECT coalesce(max(id), 0) FROM backfill")
        sampler = TaskRssSampler(self.stack.workdir)
        sampler.start()
        began = time.perf_counter()
        self.stack.cli(
            *("backfill", "create", "--dag-id", DAG_ID),
            *("--from-date", hour.isoformat(), "--to-date", hour.isoformat()),
            *("--max-active-runs", "1"),
        )
        cli_s = time.perf_counter() - began
        backfill_id = self._scalar(
            "SELECT max(id) FROM backfill WHERE dag_id = %s AND id > %s", (DAG_ID, before)
        )
        state = "no run"
        deadline = time.monotonic() + timeout
        while backfill_id and time.monotonic() < deadline:
            self.stack.check_running()
            state = self._scalar(
                "SELECT r.state FROM dag_run r JOIN backfill_dag_run b ON b.dag_run_id = r.id"
                " WHERE b.backfill_id = %s",
                (backfill_id,),
            )
            if state in ("success", "failed"):
                break
            time.sleep(0.25)
        observed_s = time.perf_counter() - began
        peaks = sampler.finish()
        facts = self.run_facts(backfill_id, peaks) if backfill_id else {"state": "no backfill"}
        facts["outbox"] = outbox_footprint(
            self.source_dsn, self.schema, DAG_ID, facts.get("run_id")
        )
        received = receiver.stats()
        ok = facts.get("state") == "success" and received["records"] == rows_expected
        if then_complete and backfill_id and state in ("success", "failed"):
            # `airflow backfill create` refuses a second backfill of the DAG until the scheduler
            # marks this one complete (a fixed 30 s timer in Airflow 3.3.2). Not measured.
            with contextlib.suppress(AssertionError):
                wait_until(
                    lambda: self._scalar(
                        "SELECT completed_at IS NOT NULL FROM backfill WHERE id = %s",
                        (backfill_id,),
                    ),
                    timeout=120,
                    what="the backfill to be marked complete",
                )
        detail = ""
        if not ok:
            failed = sorted(
                t for t, v in facts.get("tasks", {}).items() if v["states"].get("failed")
            )
            detail = "; ".join(
                x
                for x in (
                    "timed out" if state not in ("success", "failed") else "",
                    f"run {facts.get('state')}",
                    f"failed task {', '.join(failed)}" if failed else "",
                    f"receiver holds {received.get('records')} of {rows_expected} rows",
                    f"task logs in {self.stack.home / 'logs'}",
                )
                if x
            )
        return {
            "rows": rows_expected,
            "ok": ok,
            "detail": detail,
            "load_1m": load,
            "hour": hour.isoformat(),
            "backfill_id": backfill_id,
            "backfill_create_s": cli_s,
            "observed_s": observed_s,
            **facts,
            "received": received,
            "receiver_digests": receiver.body_digests() if ok else [],
            "rss_samples": sampler.samples,
            "log": str(self.stack.log_dir),
        }

    def run_facts(self, backfill_id: int, peaks: dict[str, int]) -> dict[str, Any]:
        """The backfill's run: times, task instances (latency, duration, peak RSS), XCom."""
        found = rows(
            self.stack.meta_dsn,
            "SELECT r.run_id, r.state, r.queued_at, r.start_date, r.end_date FROM dag_run r"
            " JOIN backfill_dag_run b ON b.dag_run_id = r.id WHERE b.backfill_id = %s",
            (backfill_id,),
        )
        if not found:
            return {"state": "no run", "task_instances": 0, "tasks": {}}
        run_id, state, queued, start, end = found[0]
        tis = rows(
            self.stack.meta_dsn,
            "SELECT id::text, task_id, map_index, state, try_number, scheduled_dttm,"
            " queued_dttm, start_date, end_date FROM task_instance"
            " WHERE dag_id = %s AND run_id = %s",
            (DAG_ID, run_id),
        )
        xcom = rows(
            self.stack.meta_dsn,
            "SELECT count(*), coalesce(sum(octet_length(value::text)), 0) FROM xcom"
            " WHERE dag_id = %s AND run_id = %s",
            (DAG_ID, run_id),
        )[0]
        tasks: dict[str, dict[str, Any]] = {}
        per_ti_rss: dict[str, float] = {}
        latencies, busy = [], []
        for ti_id, task_id, map_index, ti_state, tries, scheduled, _queued, s, e in tis:
            item = tasks.setdefault(
                task_id, {"count": 0, "seconds": 0.0, "states": {}, "tries": 0, "peak_rss_mb": 0}
            )
            item["count"] += 1
            item["tries"] += tries or 0
            item["states"][ti_state or "none"] = item["states"].get(ti_state or "none", 0) + 1
            if s and e:
                item["seconds"] += (e - s).total_seconds()
                busy.append((s, e))
            if scheduled and s:
                latencies.append((s - scheduled).total_seconds())
            if ti_id in peaks:
                name = task_id if map_index < 0 else f"{task_id}[{map_index}]"
                per_ti_rss[name] = peaks[ti_id] / MIB
                item["peak_rss_mb"] = max(item["peak_rss_mb"], peaks[ti_id] / MIB)
        wall = (end - queued).total_seconds() if end and queued else None
        span = (end - start).total_seconds() if end and start else None
        in_tasks = _union_seconds(busy)
        return {
            "run_id": run_id,
            "state": state,
            "wall_s": wall,
            "span_s": span,
            "queue_s": (start - queued).total_seconds() if start and queued else None,
            "task_instances": len(tis),
            "tasks": tasks,
            "in_tasks_s": in_tasks,
            "between_tasks_s": span - in_tasks if span is not None else None,
            "ti_seconds_mean": sum(e - s for s, e in _seconds(busy)) / len(busy) if busy else None,
            "ti_latency_mean_s": sum(latencies) / len(latencies) if latencies else None,
            "ti_latency_max_s": max(latencies) if latencies else None,
            "task_process_rss_mb": per_ti_rss,
            "peak_rss_mb": max(per_ti_rss.values(), default=0.0),
            "xcom": {"rows": int(xcom[0]), "bytes": int(xcom[1])},
        }


def _seconds(spans: list[tuple[datetime, datetime]]) -> list[tuple[float, float]]:
    return [(s.timestamp(), e.timestamp()) for s, e in spans]


def _union_seconds(spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by at least one of the spans (mapped lanes overlap)."""
    total, current_start, current_end = 0.0, None, None
    for s, e in sorted(_seconds(spans)):
        if current_end is None or s > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = s, e
        else:
            current_end = max(current_end, e)
    if current_end is not None:
        total += current_end - current_start
    return total


def stack_extra(
    *,
    source_dsn: str,
    api_port: int,
    start_date: datetime,
    batch_size: int,
    schema: str,
    lanes: int | None = None,
    gzip: bool = False,
) -> dict[str, str]:
    """The DAG's connections and settings on a stack (as :func:`bench.env.airflow_env`)."""
    extra = {
        "AIRFLOW_CONN_SERVICES_SOURCE_DB": source_dsn,
        "AIRFLOW_CONN_SERVICES_API": api_connection(api_port, gzip=gzip),
        "SERVICES_SYNC_START_DATE": start_date.isoformat(),
        "SERVICES_SYNC_CLOCK_SKEW_S": "0",
        "SERVICES_SYNC_GATE_POKE_S": "1",
        "SERVICES_SYNC_BATCH_SIZE": str(batch_size),
        "SERVICES_SYNC_STATE_SCHEMA": schema,
    }
    if lanes is not None:
        extra["SERVICES_SYNC_LANES"] = str(lanes)
    return extra
