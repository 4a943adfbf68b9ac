"""The sync DAG on a CeleryExecutor stack, as users run it once they outgrow one machine.

PostgreSQL metadata database, a Redis broker of the test's own (``redis-server`` on a free
loopback port, no persistence), and the components docker-compose.yaml runs, each a process of
its own: api-server, scheduler, dag-processor, triggerer and two Celery workers, each worker in
a working directory of its own (so its processes, task processes included, can be told apart
and killed together). Tasks talk to the api-server's Execution API (XCom, state, heartbeats);
retries are scheduled by the scheduler; Celery's results go to the metadata database.

One scenario, in the order a bad day would bring it (the scheduler creates the runs itself:
``use_job_schedule`` on, catch-up on, the DAG's start date three hours back):

1. Unpausing the DAG starts the catch-up of three hourly runs, H0, H1, H2, one at a time.
2. H0 meets a receiver outage (every POST answered 503): its lanes fail and are retried; a row
   of H0 changes meanwhile (its newer version belongs to H2). The receiver comes back, H0's
   retries deliver, and H1 and H2 follow, in order.
3. During H1, the worker running the POST lane whose request is in flight (the receiver holds
   it for a few seconds) is SIGKILLed with all its processes, as if its host died. The
   scheduler finds the task instance without heartbeat and schedules a retry, which the other
   worker runs: it resends the unacknowledged batch under the same key (a duplicate).
4. ``airflow backfill create`` of two past hours (H1, H2) with ``--reprocess-behavior
   completed``: the same bodies under the same keys.

Then, from the receiver and the ledger: nothing lost, no stale overwrite (per record, versions
arrive in order and the receiver ends with the source's current rows), every key stored once
(duplicates only under the same key, none rejected), every ledger batch acknowledged.
The health checks docker-compose.yaml gives the workers, triggerer and dag-processor are run
against the live components, so the compose file's commands are exercised too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
import yaml
from psycopg.rows import dict_row

from devkit.airflow_stack import (
    CELERY_WORKERS,
    DAG_ID,
    ROOT,
    AirflowStack,
    celery_stack_env,
    free_port,
    redis_server,
    rows,
    wait_until,
)
from devkit.seed import create_source_table, insert_rows
from services_sync.core.transform import transform_rows
from tests.operate.test_backfill_scheduler import (
    _scalar,
    backfill_runs,
    create_backfill,
    failed_task_logs,
    inspect,
    rows_for,
    wait_for_backfill,
)

pytestmark = pytest.mark.e2e

BATCH_SIZE = 5  # 12 rows an hour: batches of 5, 5, 2 over two lanes (0 and 2 | 1)
ROWS_PER_HOUR = 12
LANES = 2
HEARTBEAT_TIMEOUT_S = 20
STARTUP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 240
TOP = pendulum.now("UTC").start_of("hour")
H0, H1, H2 = (TOP - timedelta(hours=3 - i) for i in range(3))  # the catch-up hours
MOVED = "A-0003"  # an H0 row updated during H0's outage; its new version is in H2
MOVED_TO = H2 + timedelta(minutes=30)
SLOW = "B-0007"  # in H1's batch 1 (B-0005 .. B-0009): held by the receiver, its worker killed
SLOW_DELAY_S = 6
WORKERS = tuple(f"worker-{chr(ord('a') + i)}" for i in range(CELERY_WORKERS))
COMPOSE_FILE = ROOT / "docker-compose.yaml"
POST_POOL = "services_api_posts"


@pytest.fixture(scope="module")
def source(pg_cluster) -> str:
    dsn = pg_cluster.create_database(f"src_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_source_table(conn)
        insert_rows(
            conn,
            rows_for(H0 - timedelta(hours=1), 3, "BEFORE")  # before the start date: never sent
            + rows_for(H0, ROWS_PER_HOUR, "A")
            + rows_for(H1, ROWS_PER_HOUR, "B")
            + rows_for(H2, ROWS_PER_HOUR, "C"),
        )
    return dsn


@pytest.fixture(scope="module")
def stack(pg_cluster, source, receiver_server, tmp_path_factory) -> Iterator[AirflowStack]:
    """The Celery stack, booted, the DAG still paused, the receiver emptied."""
    with celery_stack(
        tmp_path_factory.mktemp("celery-stack"),
        pg_cluster,
        source,
        receiver_server,
        {
            "SERVICES_SYNC_START_DATE": H0.isoformat(),
            # A dead worker's task instance is failed (and retried) after this long without
            # a heartbeat (default 300 s); the supervisor beats every 5 s.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "SERVICES_SYNC_BATCH_SIZE": str(BATCH_SIZE),
            "SERVICES_SYNC_LANES": str(LANES),
            "SERVICES_SYNC_POST_RETRIES": "8",
            "SERVICES_SYNC_RETRY_DELAY_S": "1",
            "SERVICES_SYNC_MAX_RETRY_DELAY_S": "2",
            "SERVICES_SYNC_HTTP_TIMEOUT_S": "30",  # longer than the held request
            # README, Deploying: a pool caps the POSTs of every run and backfill together.
            "SERVICES_SYNC_POST_POOL": POST_POOL,
        },
    ) as airflow:
        yield airflow


@contextlib.contextmanager
def celery_stack(home, pg_cluster, source, receiver, extra) -> Iterator[AirflowStack]:
    """A booted Celery stack on a fresh metadata database and a Redis of its own.

    The scheduler creates the hourly runs and their catch-up itself; ``extra`` sets the start
    date and whatever else the caller needs. Stopped (and checked to leave nothing running)
    on exit.
    """
    meta = pg_cluster.create_database(f"airflow_{uuid.uuid4().hex[:10]}")
    port = int(receiver.url.rsplit(":", 1)[1])
    requests.delete(f"{receiver.url}/inspect", timeout=5).raise_for_status()
    with redis_server(home / "redis") as broker_url:
        env = celery_stack_env(
            home / "airflow",
            meta,
            free_port(),
            broker_url,
            {
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
                "SERVICES_SYNC_CATCHUP": "on",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                "AIRFLOW_CONN_SERVICES_SOURCE_DB": source,
                "AIRFLOW_CONN_SERVICES_API": json.dumps(
                    {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}
                ),
                "SERVICES_SYNC_CLOCK_SKEW_S": "0",
                **extra,
            },
        )
        airflow = AirflowStack(home / "airflow", env)
        try:
            airflow.cli("db", "migrate")
            for name in WORKERS:
                airflow.start(
                    name,
                    *worker_command(airflow, name),
                    own_cwd=True,
                    # Each worker serves its task logs on a port of its own.
                    env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
                )
            airflow.boot(
                "api-server",
                "dag-processor",
                "scheduler",
                "triggerer",
                timeout=STARTUP_TIMEOUT_S,
                migrate=False,
            )
            wait_until(
                lambda: airflow.healthy(["triggerer"]),
                timeout=STARTUP_TIMEOUT_S,
                what="the api-server to report a healthy triggerer",
                diagnostics=airflow.diagnostics,
            )
            for name in WORKERS:
                wait_until(
                    lambda name=name: compose_healthcheck(airflow, "airflow-worker", name) == 0,
                    timeout=STARTUP_TIMEOUT_S,
                    interval=2,
                    what=f"celery worker {name} to answer docker-compose.yaml's health check",
                    diagnostics=airflow.diagnostics,
                )
            yield airflow
        finally:
            killed = airflow.stop()
            left = airflow.processes()
            assert not left, f"processes left running: {left}"
            assert not killed, f"needed SIGKILL: {killed}\n{airflow.diagnostics()}"


def worker_command(stack: AirflowStack, name: str) -> list[str]:
    """``airflow celery worker`` with its own Celery node name and pid file."""
    return [
        sys.executable,
        "-m",
        "airflow",
        "celery",
        "worker",
        "--celery-hostname",
        name,
        "--pid",
        str(stack.workdir / name / "worker.pid"),
    ]


def test_celery_stack_catch_up_outage_worker_kill_and_backfill(stack, source, receiver_server):
    receiver = receiver_server
    started = time.monotonic()
    timings: dict[str, float] = {}
    assert _scalar(stack, "SELECT is_paused FROM dag WHERE dag_id = %s", (DAG_ID,)) is True

    # -- 1 + 2. Catch-up under a receiver outage ----------------------------------------------
    set_faults(receiver, [{"status": 503, "times": 100_000}])
    stack.cli("pools", "set", POST_POOL, "4", "POSTs to the receiver")  # as the README says
    stack.cli("dags", "unpause", DAG_ID)
    run0 = wait_for_run_of(stack, H0)
    # Both lanes of H0 fail twice, then the receiver comes back. Meanwhile one of H0's rows,
    # already in H0's outbox, changes: its new version belongs to H2.
    wait_until(
        lambda: all(n >= 2 for n in failed_tries(stack, run0).values()),
        timeout=RUN_TIMEOUT_S,
        interval=1,
        what="both POST lanes of H0 to fail twice during the outage",
        diagnostics=lambda: f"{states_of(stack, run0)}\n{failed_task_logs(stack)}",
    )
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(
            "UPDATE service_requests SET status_id = '9', last_modified_date = %s"
            " WHERE request_id = %s",
            (MOVED_TO, MOVED),
        )
    assert inspect(receiver, "stats")["batches"] == 0
    set_faults(receiver, [])
    set_faults(receiver, [{"delay_s": SLOW_DELAY_S, "match": SLOW}])
    timings["outage"] = time.monotonic() - started
    wait_for_state(stack, run0, "success")

    # -- 3. H1: the worker holding the in-flight POST dies --------------------------------------
    run1 = wait_for_run_of(stack, H1)
    wait_until(
        lambda: pending_faults(receiver) == [],
        timeout=RUN_TIMEOUT_S,
        interval=0.2,
        what=f"H1's lane to POST the batch holding {SLOW}",
        diagnostics=lambda: f"{states_of(stack, run1)}\n{stack.diagnostics()}",
    )
    ((lane,),) = rows(
        source,
        "SELECT lane FROM services_sync.delivery_ledger WHERE run_id = %s AND batch_index = 1",
        (run1,),
    )
    ti = lane_ti(stack, run1, lane)
    assert ti["state"] == "running" and ti["pid"], ti
    (victim,) = [w for w in WORKERS if ti["pid"] in {p.pid for p in stack.processes_of(w)}]
    killed_at = time.monotonic()
    killed = stack.kill(victim)
    assert any("celery" in p.cmdline for p in killed), killed
    survivor = next(w for w in WORKERS if w != victim)
    wait_for_state(stack, run1, "success")
    timings["kill_to_run_success"] = time.monotonic() - killed_at
    tries = lane_tries(stack, run1, lane)
    assert len(tries) == 2 and tries[-1]["state"] == "success", tries
    assert "heartbeat" in heartbeat_timeout_log(stack, run1, lane), "not failed for no heartbeat"
    # The try that died ran on the victim, the retry on the survivor (by Celery task id).
    assert tries[0]["external_executor_id"] in executed_ids(stack, victim)
    assert tries[1]["external_executor_id"] in executed_ids(stack, survivor)
    assert tries[1]["external_executor_id"] not in executed_ids(stack, victim)

    # -- H2 follows, in order ---------------------------------------------------------------
    run2 = wait_for_run_of(stack, H2)
    wait_for_state(stack, run2, "success")
    # (A fourth, empty hour may follow if the test crosses the top of an hour.)
    runs = scheduled_runs(stack)[:3]
    assert [(r["data_interval_start"], r["state"]) for r in runs] == [
        (H0, "success"),
        (H1, "success"),
        (H2, "success"),
    ]
    assert all(a["end_date"] <= b["start_date"] for a, b in itertools.pairwise(runs)), "overlap"
    # Tasks ran on both workers.
    assert all(executed_ids(stack, w) for w in WORKERS), {
        w: len(executed_ids(stack, w)) for w in WORKERS
    }
    before_backfill = inspect(receiver, "stats")
    assert before_backfill["duplicates"] == 1, before_backfill  # the killed lane's batch
    timings["catch_up"] = time.monotonic() - started

    # -- 4. Backfill of two past hours, resending them ----------------------------------------
    backfill = create_backfill(stack, H1, H2, "--reprocess-behavior", "completed")
    wait_for_backfill(stack, backfill, completed=False)
    assert [(r["logical_date"], r["state"]) for r in backfill_runs(stack, backfill)] == [
        (H1, "success"),
        (H2, "success"),
    ]
    timings["total"] = time.monotonic() - started

    # -- What arrived ---------------------------------------------------------------------------
    batches = inspect(receiver, "batches")
    stats = inspect(receiver, "stats")
    with psycopg.connect(source) as conn:
        current = conn.execute(
            "SELECT service_id, request_id, opening_date, status_id, last_modified_date"
            " FROM service_requests WHERE last_modified_date >= %s AND last_modified_date < %s",
            (H0, TOP),
        ).fetchall()
    moved_v1 = next(r for r in rows_for(H0, ROWS_PER_HOUR, "A") if r[1] == MOVED)
    expected_versions = transform_rows([*current, moved_v1]).records
    received = [r for b in batches for r in b["requests"]]
    # Nothing lost, nothing extra: every version of every row of H0..H2, each stored once.
    assert sorted(version(r) for r in received) == sorted(version(r) for r in expected_versions)
    # No stale overwrite: per record, versions arrive oldest first, and the receiver ends with
    # the source's current rows.
    by_record: dict[str, list[str]] = {}
    for record in received:
        by_record.setdefault(record["request_id"], []).append(record["last_modified_date"])
    assert all(v == sorted(v) for v in by_record.values()), by_record
    moved_v2 = (*moved_v1[:3], "9", MOVED_TO)
    assert [r for r in received if r["request_id"] == MOVED] == (
        transform_rows([moved_v1, moved_v2]).records
    )
    state = {r["request_id"]: r for r in inspect(receiver, "state")}
    assert state == {r["request_id"]: r for r in transform_rows(current).records}
    # Duplicates only under the same key: each key stored once, none reused for another body,
    # and the resends are the killed lane's batch plus every batch of H1 and H2.
    assert len({b["idempotency_key"] for b in batches}) == len(batches) == 9
    assert stats["rejected"] == 0, stats
    assert stats["duplicates"] == 1 + 6, stats
    slow = [b for b in batches if any(r["request_id"] == SLOW for r in b["requests"])]
    assert [b["duplicates"] for b in slow] == [2], slow  # the kill's resend, the backfill's

    # -- The ledger -----------------------------------------------------------------------------
    with psycopg.connect(source, row_factory=dict_row) as conn:
        ledger = conn.execute(
            "SELECT run_id, batch_index, idempotency_key, status, acked_at, duplicate"
            " FROM services_sync.delivery_ledger WHERE dag_id = %s",
            (DAG_ID,),
        ).fetchall()
        delivery_runs = conn.execute(
            "SELECT run_id, finished_at FROM services_sync.delivery_runs WHERE dag_id = %s",
            (DAG_ID,),
        ).fetchall()
    acked = [r for r in ledger if r["status"] == "acked"]
    assert {r["status"] for r in ledger} <= {"acked", "replaced"}, ledger
    assert {r["idempotency_key"] for r in acked} == {b["idempotency_key"] for b in batches}
    assert all(r["acked_at"] for r in acked)
    finished = {r["run_id"]: r["finished_at"] for r in delivery_runs}
    assert all(finished.get(run) for run in (run0, run1, run2)), delivery_runs
    lane_pools = rows(
        stack.meta_dsn,
        "SELECT DISTINCT pool FROM task_instance WHERE dag_id = %s AND task_id = 'post_batches'",
        (DAG_ID,),
    )
    assert lane_pools == [(POST_POOL,)]

    # -- docker-compose.yaml's health checks, against the live components ---------------------
    # (In a container, $HOSTNAME is the hostname the component registers its job under.)
    for service, job_type in (
        ("airflow-triggerer", "TriggererJob"),
        ("airflow-dag-processor", "DagProcessorJob"),
    ):
        hostname = _scalar(
            stack,
            "SELECT hostname FROM job WHERE job_type = %s AND state = 'running'",
            (job_type,),
        )
        assert compose_healthcheck(stack, service, hostname) == 0, service
    assert compose_healthcheck(stack, "airflow-worker", survivor) == 0
    assert compose_healthcheck(stack, "airflow-worker", victim) != 0, "the killed worker answers"

    latencies = task_latencies(stack)  # before the clean below deletes the task instances

    for name in ("scheduler", "dag-processor", "triggerer", "api-server", survivor):
        log = stack.log(name)
        assert "Traceback" not in log, f"{name} log:\n{log[-6000:]}"
    print(f"celery stack timings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
    print(f"celery stack task latencies: {json.dumps(latencies)}")

    # -- README, Deploying: `airflow db clean` ------------------------------------------------
    # The README's command, with a cut-off after every run (its example keeps 30 days): all
    # goes but each DAG's most recently started non-manual run, which Airflow always keeps.
    # On the stopped stack: a cut-off this late would also delete the running components' own
    # `job` rows (a 30-day cut-off never reaches a live heartbeat).
    assert stack.stop() == []
    (latest,) = rows(
        stack.meta_dsn,
        "SELECT run_id FROM dag_run WHERE dag_id = %s AND run_type <> 'manual'"
        " ORDER BY start_date DESC LIMIT 1",
        (DAG_ID,),
    )
    tables = "dag_run,task_instance,task_instance_history,xcom,log,job"
    tables += ",celery_taskmeta,celery_tasksetmeta"
    cutoff = pendulum.now("UTC").add(minutes=1).isoformat()
    celery_results = _scalar(stack, "SELECT count(*) FROM celery_taskmeta")
    stack.cli(
        "db", "clean", "--clean-before-timestamp", cutoff, "--tables", tables,
        "--skip-archive", "--yes",
    )  # fmt: skip
    assert rows(stack.meta_dsn, "SELECT run_id FROM dag_run WHERE dag_id = %s", (DAG_ID,)) == [
        latest
    ]
    assert _scalar(stack, "SELECT count(*) FROM celery_taskmeta") < celery_results


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def version(record: dict) -> tuple[str, str, str]:
    return record["request_id"], record["last_modified_date"], str(record["status_id"])


def set_faults(receiver, faults: list[dict]) -> None:
    """Replace the receiver's fault queue (empty: the receiver is healthy again)."""
    requests.delete(f"{receiver.url}/faults", timeout=5).raise_for_status()
    if faults:
        requests.post(
            f"{receiver.url}/faults", json={"faults": faults}, timeout=5
        ).raise_for_status()


def pending_faults(receiver) -> list[dict]:
    response = requests.get(f"{receiver.url}/faults", timeout=5)
    response.raise_for_status()
    return response.json()["faults"]


_RUN_COLUMNS = ("run_id", "run_type", "state", "data_interval_start", "start_date", "end_date")


def scheduled_runs(stack: AirflowStack) -> list[dict]:
    found = rows(
        stack.meta_dsn,
        f"SELECT {', '.join(_RUN_COLUMNS)} FROM dag_run WHERE dag_id = %s"
        " AND run_type = 'scheduled' ORDER BY data_interval_start",
        (DAG_ID,),
    )
    return [dict(zip(_RUN_COLUMNS, row, strict=True)) for row in found]


def wait_for_run_of(stack: AirflowStack, hour) -> str:
    """The run_id of the scheduled run of ``hour``, once the scheduler has created it."""

    def created():
        stack.check_running()
        return next(
            (r["run_id"] for r in scheduled_runs(stack) if r["data_interval_start"] == hour), None
        )

    return wait_until(
        created,
        timeout=RUN_TIMEOUT_S,
        interval=1,
        what=f"the scheduled run of {hour:%H:%M}",
        diagnostics=stack.diagnostics,
    )


def wait_for_state(stack: AirflowStack, run_id: str, state: str) -> None:
    def done():
        stack.check_running()
        current = _scalar(
            stack,
            "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s",
            (DAG_ID, run_id),
        )
        if current == "failed" and state != "failed":
            raise AssertionError(
                f"{run_id} failed: {states_of(stack, run_id)}\n{failed_task_logs(stack)}"
            )
        return current == state

    wait_until(
        done,
        timeout=RUN_TIMEOUT_S,
        interval=1,
        what=f"{run_id} to reach {state}",
        diagnostics=lambda: f"{states_of(stack, run_id)}\n{stack.diagnostics()}",
    )


def states_of(stack: AirflowStack, run_id: str) -> dict[str, str]:
    found = rows(
        stack.meta_dsn,
        "SELECT task_id, map_index, state, try_number FROM task_instance"
        " WHERE dag_id = %s AND run_id = %s",
        (DAG_ID, run_id),
    )
    return {f"{t}{'' if i < 0 else f'[{i}]'}": f"{s} (try {n})" for t, i, s, n in found}


def failed_tries(stack: AirflowStack, run_id: str) -> dict[int, int]:
    """``{lane: tries that ended}`` of the POST lanes of a run (their history rows)."""
    found = rows(
        stack.meta_dsn,
        "SELECT map_index, count(*) FROM task_instance_history WHERE dag_id = %s"
        " AND run_id = %s AND task_id = 'post_batches' GROUP BY map_index",
        (DAG_ID, run_id),
    )
    counts = dict(found)
    return {lane: counts.get(lane, 0) for lane in range(LANES)}


_TI_COLUMNS = ("state", "pid", "try_number", "external_executor_id")


def lane_ti(stack: AirflowStack, run_id: str, lane: int) -> dict:
    found = rows(
        stack.meta_dsn,
        f"SELECT {', '.join(_TI_COLUMNS)} FROM task_instance WHERE dag_id = %s AND run_id = %s"
        " AND task_id = 'post_batches' AND map_index = %s",
        (DAG_ID, run_id, lane),
    )
    return dict(zip(_TI_COLUMNS, found[0], strict=True))


def lane_tries(stack: AirflowStack, run_id: str, lane: int) -> list[dict]:
    """Every try of a lane, oldest first: the history, then the current try."""
    found = rows(
        stack.meta_dsn,
        f"SELECT {', '.join(_TI_COLUMNS)} FROM task_instance_history WHERE dag_id = %s"
        " AND run_id = %s AND task_id = 'post_batches' AND map_index = %s ORDER BY try_number",
        (DAG_ID, run_id, lane),
    )
    history = [dict(zip(_TI_COLUMNS, row, strict=True)) for row in found]
    return [*history, lane_ti(stack, run_id, lane)]


def heartbeat_timeout_log(stack: AirflowStack, run_id: str, lane: int) -> str:
    found = rows(
        stack.meta_dsn,
        "SELECT event, extra FROM log WHERE dag_id = %s AND run_id = %s"
        " AND task_id = 'post_batches' AND map_index = %s AND event = 'heartbeat timeout'",
        (DAG_ID, run_id, lane),
    )
    return " ".join(f"{event} {extra}" for event, extra in found)


def executed_ids(stack: AirflowStack, worker: str) -> set[str]:
    """Celery task ids a worker started (its "Executing workload in Celery" log lines)."""
    return set(re.findall(r"\[([0-9a-f-]{36})\] Executing workload in Celery", stack.log(worker)))


def compose_healthcheck(stack: AirflowStack, service: str, hostname: str) -> int:
    """Run a service's health check from docker-compose.yaml against the live stack.

    ``CMD-SHELL`` checks run in ``sh -c`` with ``HOSTNAME`` set to ``hostname`` (``$$`` is
    compose's escape for ``$``); ``celery`` and ``airflow`` are this environment's. Returns the
    exit code.
    """
    test = yaml.safe_load(COMPOSE_FILE.read_text())["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", test
    command = test[1].replace("$$", "$")
    bin_dir = f"{sys.executable.rsplit('/', 1)[0]}"
    env = {**stack.env, "HOSTNAME": hostname, "PATH": f"{bin_dir}:{stack.env['PATH']}"}
    result = subprocess.run(
        ["sh", "-c", command],
        cwd=stack.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        print(f"health check of {service} ({shlex.quote(command)}): {result.stderr[-1000:]}")
    return result.returncode


def task_latencies(stack: AirflowStack) -> dict[str, object]:
    """How long task instances of the sync DAG waited, over every try that ran (seconds).

    ``scheduled_to_queued``: the scheduler handing the try to Celery; ``queued_to_start``: the
    broker, a worker picking it up and the task process starting (the Execution API's start
    call); ``run``: start to end of the try; ``handoff``: the end of a task to the start of the
    next one in the same run (the chain's own cost per task; last tries only, parallel lanes
    left out). Median, 95th percentile, max.
    """
    found = rows(
        stack.meta_dsn,
        "SELECT run_id, task_id, map_index, scheduled_dttm, queued_dttm, start_date, end_date,"
        " true FROM task_instance WHERE dag_id = %(dag)s AND start_date IS NOT NULL"
        " UNION ALL SELECT run_id, task_id, map_index, scheduled_dttm, queued_dttm, start_date,"
        " end_date, false FROM task_instance_history WHERE dag_id = %(dag)s"
        " AND start_date IS NOT NULL",
        {"dag": DAG_ID},
    )

    def summary(values: list[float]) -> dict[str, float]:
        values = sorted(values)
        if not values:
            return {}
        pick = lambda q: values[min(len(values) - 1, round(q * (len(values) - 1)))]  # noqa: E731
        return {
            "n": len(values),
            "p50": round(pick(0.5), 2),
            "p95": round(pick(0.95), 2),
            "max": round(values[-1], 2),
        }

    def seconds(a, b) -> float | None:
        return (b - a).total_seconds() if a and b else None

    scheduled = [seconds(r[3], r[4]) for r in found]
    queued = [seconds(r[4], r[5]) for r in found]
    run = [seconds(r[5], r[6]) for r in found]
    by_run: dict[str, list[tuple]] = {}
    for r in found:
        if r[7]:  # the last try of each task: earlier tries' ends are followed by retry delays
            by_run.setdefault(r[0], []).append(r)
    handoff = []
    for tries in by_run.values():
        tries.sort(key=lambda r: r[5])
        for previous, current in itertools.pairwise(tries):
            if previous[6] and current[5] > previous[6]:
                handoff.append(seconds(previous[6], current[5]))
    return {
        "scheduled_to_queued": summary([v for v in scheduled if v is not None]),
        "queued_to_start": summary([v for v in queued if v is not None]),
        "run": summary([v for v in run if v is not None]),
        "handoff": summary([v for v in handoff if v is not None]),
    }
