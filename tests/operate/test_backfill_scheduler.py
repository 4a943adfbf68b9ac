"""Backfill the way operators do: the CLI against a real scheduler, dag-processor and api-server.

``dag.test()`` (the other end-to-end tests) runs tasks in-process; this test runs the
production path: ``airflow backfill create`` writes runs to a PostgreSQL metadata database, the
scheduler (LocalExecutor) queues them, task processes talk to the api-server's Execution API,
and the DAG's ``DeadlineAlert`` is on (deadlines exist only for runs the scheduler queues).

The intervals are real past hours (backfill only creates runs whose interval has ended, by the
wall clock): ``H0 = now - 4 h`` on the hour, backfilled ``H0 .. H0 + 2 h``, with the DAG's start
date at ``H0``. The scheduler creates no run of its own (``[scheduler] use_job_schedule =
False``), and the DAG's catch-up is off (``SERVICES_SYNC_CATCHUP=off``) as well, so unpausing
the DAG does not start the catch-up of every hour since the start date next to the backfill.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests

from devkit.airflow_stack import (
    DAG_ID,
    AirflowStack,
    free_port,
    rows,
    scheduler_stack_env,
    wait_until,
)
from devkit.seed import insert_rows
from services_sync.core.payload import KEY_NAMESPACE, Interval
from services_sync.core.transform import transform_rows

pytestmark = pytest.mark.e2e

RUN_DEADLINE_MIN = 30
BATCH_SIZE = 5
STARTUP_TIMEOUT_S = 180
BACKFILL_TIMEOUT_S = 240


@pytest.fixture
def hours() -> list[pendulum.DateTime]:
    """Three whole past hours, oldest first."""
    top = pendulum.now("UTC").start_of("hour")
    first = top - timedelta(hours=4)
    return [first + timedelta(hours=i) for i in range(3)]


@pytest.fixture
def stack(pg_cluster, source_db, receiver, hours, tmp_path) -> Iterator[AirflowStack]:
    """Scheduler, dag-processor and api-server on a fresh PostgreSQL metadata database."""
    meta = pg_cluster.create_database(f"airflow_{uuid.uuid4().hex[:10]}")
    api_port = free_port()
    env = scheduler_stack_env(
        tmp_path / "airflow",
        meta,
        api_port,
        {
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "SERVICES_SYNC_START_DATE": hours[0].isoformat(),
            "SERVICES_SYNC_RUN_DEADLINE_MIN": str(RUN_DEADLINE_MIN),
            "SERVICES_SYNC_CLOCK_SKEW_S": "0",
            "SERVICES_SYNC_BATCH_SIZE": str(BATCH_SIZE),
        },
    )
    airflow = AirflowStack(tmp_path / "airflow", env)
    try:
        airflow.boot("api-server", "dag-processor", "scheduler", timeout=STARTUP_TIMEOUT_S)
        yield airflow
    finally:
        killed = airflow.stop()
        left = airflow.processes()
        assert not left, f"processes left running: {left}"
        assert not killed, f"needed SIGKILL: {killed}\n{airflow.diagnostics()}"


def test_backfill_through_the_cli_sends_each_interval_once_and_resends_identical_bodies(
    stack, source_db, receiver, hours
):
    h0, h1, h2 = hours
    in_range = rows_for(h0, 5, "A") + rows_for(h1, 7, "B") + rows_for(h2, 3, "C")
    malformed = [("roads", "BAD-STATUS", h1 - timedelta(days=1), "open", h1 + timedelta(minutes=9))]
    outside = rows_for(h0 - timedelta(hours=1), 2, "BEFORE") + rows_for(
        h2 + timedelta(hours=1), 2, "AFTER"
    )
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, in_range + malformed + outside)
    expected = transform_rows(in_range + malformed).records
    assert len(expected) == 15

    # -- 1. Backfill while the DAG is paused (as every new DAG is): the runs wait, queued. ----
    assert _scalar(stack, "SELECT is_paused FROM dag WHERE dag_id = %s", (DAG_ID,)) is True
    first = create_backfill(stack, h0, h2)
    runs = backfill_runs(stack, first)
    assert [(r["logical_date"], r["state"]) for r in runs] == [(h, "queued") for h in (h0, h1, h2)]
    # Each run got its DeadlineAlert deadline: queued_at + SERVICES_SYNC_RUN_DEADLINE_MIN.
    deadlines = deadline_rows(stack, first)
    assert sorted(deadlines) == sorted(
        (r["id"], r["queued_at"] + timedelta(minutes=RUN_DEADLINE_MIN), False) for r in runs
    )
    # A few scheduler loops later they are still queued and no task has started.
    since = _scalar(stack, "SELECT now()")
    wait_until(
        lambda: _scalar(
            stack,
            "SELECT count(*) FROM job WHERE job_type = 'SchedulerJob' AND state = 'running'"
            " AND latest_heartbeat > %s + interval '3 seconds'",
            (since,),
        ),
        timeout=60,
        what="three more seconds of scheduler heartbeats",
        diagnostics=stack.diagnostics,
    )
    assert {r["state"] for r in backfill_runs(stack, first)} == {"queued"}
    assert task_states(stack, first) == {}

    # -- 2. Unpause: the backfill runs, one interval at a time, and succeeds. ---------------
    stack.cli("dags", "unpause", DAG_ID)
    wait_for_backfill(stack, first)  # and completed: one active backfill per DAG
    runs = backfill_runs(stack, first)
    assert [(r["logical_date"], r["state"]) for r in runs] == [(h, "success") for h in (h0, h1, h2)]
    assert max_overlap(runs) == 1, "--max-active-runs 1 was not honored"

    received = inspect(receiver, "requests")
    assert sorted((r["request_id"], r["last_modified_date"]) for r in received) == sorted(
        (r["request_id"], r["last_modified_date"]) for r in expected
    )
    assert {
        r["request_id"]: {k: v for k, v in r.items() if k != "idempotency_key"} for r in received
    } == {r["request_id"]: r for r in expected}
    batches = inspect(receiver, "batches")
    labels = {Interval(h, h + timedelta(hours=1)).label for h in hours}
    assert {b["idempotency_key"].split(":")[0] for b in batches} == {KEY_NAMESPACE}
    assert {b["idempotency_key"][len(KEY_NAMESPACE) + 1 :].rsplit(":", 1)[0] for b in batches} == (
        labels
    )
    assert sorted(b["count"] for b in batches) == [2, 3, 5, 5]  # batch_size 5: 5 | 5+(2+bad) | 3
    stats = inspect(receiver, "stats")
    assert (stats["records"], stats["batches"], stats["duplicates"]) == (15, 4, 0)

    # The deadlines of the succeeded runs were pruned, none was missed.
    assert deadline_rows(stack, first) == []
    assert _scalar(stack, "SELECT count(*) FROM deadline WHERE missed") == 0
    # Only the backfill ran: no scheduled run, no catch-up of the hours since the start date.
    assert rows(stack.meta_dsn, "SELECT run_id FROM dag_run WHERE run_type <> 'backfill'") == []

    # -- 3. Backfill the same range again, reprocessing completed runs: same bodies, same keys.
    second = create_backfill(stack, h0, h2, "--reprocess-behavior", "completed")
    assert second != first
    # Airflow 3.3.2: reprocessing clears the succeeded runs, and clearing only moves existing
    # deadlines; those were pruned at success, so the rerun has no stuck-run alert.
    assert deadline_rows(stack, second) == []
    wait_for_backfill(stack, second, completed=False)
    assert [r["id"] for r in backfill_runs(stack, second)] == [r["id"] for r in runs], (
        "reprocessing clears the existing runs, it does not create new ones"
    )
    again = inspect(receiver, "batches")
    assert len(again) == len(batches) == 4
    assert {(b["idempotency_key"], b["body_sha256"]) for b in again} == {
        (b["idempotency_key"], b["body_sha256"]) for b in batches
    }
    stats = inspect(receiver, "stats")
    assert (stats["records"], stats["batches"], stats["duplicates"]) == (15, 4, 4)
    assert len(inspect(receiver, "requests")) == 15

    assert _scalar(stack, "SELECT count(*) FROM deadline") == 0
    for name in ("scheduler", "dag-processor"):
        log = stack.log(name)
        assert "Traceback" not in log, f"{name} log:\n{log[-6000:]}"
        noisy = [line for line in log.splitlines() if "deadline" in line.lower() and _bad(line)]
        assert noisy == [], "\n".join(noisy)


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def rows_for(hour, n, prefix):
    """``n`` changed rows in ``[hour, hour + 1h)``, one second apart from the hour on."""
    return [
        (
            "water",
            f"{prefix}-{i:04d}",
            hour - timedelta(days=1),
            str(1 + i % 5),
            hour + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def inspect(receiver, what):
    response = requests.get(f"{receiver.url}/inspect/{what}", timeout=10)
    response.raise_for_status()
    return response.json()


def create_backfill(stack: AirflowStack, start, end, *extra: str) -> int:
    """``airflow backfill create`` for the logical dates ``start .. end``; the backfill id."""
    before = _scalar(stack, "SELECT coalesce(max(id), 0) FROM backfill")
    stack.cli(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        start.isoformat(),
        "--to-date",
        end.isoformat(),
        "--max-active-runs",
        "1",
        *extra,
    )
    backfill_id = _scalar(
        stack, "SELECT max(id) FROM backfill WHERE dag_id = %s AND id > %s", (DAG_ID, before)
    )
    assert backfill_id, "airflow backfill create created no backfill"
    return backfill_id


def backfill_runs(stack: AirflowStack, backfill_id: int) -> list[dict]:
    """The DAG runs of a backfill, oldest interval first."""
    columns = ("id", "run_id", "logical_date", "state", "queued_at", "start_date", "end_date")
    found = rows(
        stack.meta_dsn,
        f"SELECT r.{', r.'.join(columns)} FROM dag_run r"
        " JOIN backfill_dag_run b ON b.dag_run_id = r.id"
        " WHERE b.backfill_id = %s ORDER BY r.logical_date",
        (backfill_id,),
    )
    return [dict(zip(columns, row, strict=True)) for row in found]


def deadline_rows(stack: AirflowStack, backfill_id: int) -> list[tuple]:
    return rows(
        stack.meta_dsn,
        "SELECT d.dagrun_id, d.deadline_time, d.missed FROM deadline d"
        " JOIN backfill_dag_run b ON b.dag_run_id = d.dagrun_id WHERE b.backfill_id = %s",
        (backfill_id,),
    )


def task_states(stack: AirflowStack, backfill_id: int) -> dict[str, str]:
    found = rows(
        stack.meta_dsn,
        "SELECT r.logical_date, t.task_id, t.map_index, t.state FROM task_instance t"
        " JOIN dag_run r ON r.dag_id = t.dag_id AND r.run_id = t.run_id"
        " JOIN backfill_dag_run b ON b.dag_run_id = r.id"
        " WHERE b.backfill_id = %s AND t.state IS NOT NULL AND t.state <> 'scheduled'",
        (backfill_id,),
    )
    return {
        f"{when:%H:%M} {task}{'' if index < 0 else f'[{index}]'}": state
        for when, task, index, state in found
    }


def wait_for_backfill(
    stack: AirflowStack, backfill_id: int, *, completed: bool = True, allow_failed: bool = False
) -> None:
    """Wait until every run of the backfill succeeded (and the scheduler completed it).

    The scheduler marks backfills complete on a fixed 30 s timer (Airflow 3.3.2), and until
    then ``airflow backfill create`` refuses another backfill of the DAG; ``completed=False``
    does not wait for that. ``allow_failed``: a failed run is an outcome to wait for, not an
    error.
    """

    def done() -> bool:
        stack.check_running()
        runs = backfill_runs(stack, backfill_id)
        failed = [r["run_id"] for r in runs if r["state"] == "failed"]
        if failed and not allow_failed:
            raise AssertionError(
                f"backfill runs failed: {failed}\n{task_states(stack, backfill_id)}\n"
                f"{failed_task_logs(stack)}"
            )
        if not runs or any(r["state"] not in ("success", "failed") for r in runs):
            return False
        return not completed or _scalar(
            stack, "SELECT completed_at IS NOT NULL FROM backfill WHERE id = %s", (backfill_id,)
        )

    wait_until(
        done,
        timeout=BACKFILL_TIMEOUT_S,
        interval=1,
        what=f"backfill {backfill_id} to finish",
        diagnostics=lambda: f"{task_states(stack, backfill_id)}\n{stack.diagnostics()}",
    )


def max_overlap(runs: list[dict]) -> int:
    """The largest number of runs that were running at the same time."""
    events = sorted(
        [(r["start_date"], 1) for r in runs] + [(r["end_date"], -1) for r in runs],
        key=lambda e: (e[0], e[1]),
    )
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def failed_task_logs(stack: AirflowStack, tail: int = 3000) -> str:
    logs = sorted((stack.home / "logs").rglob("*.log"))
    return "\n".join(
        f"--- {path}:\n{path.read_text(errors='replace')[-tail:]}"
        for path in logs
        if "ERROR" in path.read_text(errors="replace")
    )


def _bad(line: str) -> bool:
    lowered = line.lower()
    return any(word in lowered for word in ("error", "exception", "traceback", "failed"))


def _scalar(stack: AirflowStack, sql: str, params=None):
    found = rows(stack.meta_dsn, sql, params)
    return found[0][0] if found else None
