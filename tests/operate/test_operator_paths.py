"""The commands an operator reaches for, through the real CLI, against a real scheduler.

One stack for the module (PostgreSQL metadata DB, api-server, dag-processor, scheduler with
the LocalExecutor), its DAGs folder a copy of ``dags/`` so that a test can deploy a new DAG
version. The scheduler creates no run of its own (``use_job_schedule`` off); the tests create
runs with the CLI, in this order:

1. ``airflow dags trigger --logical-date`` on the hour: refused by ``check_run_setup``, naming
   the recipe, and the run deleted as the message says;
2. the recipe, a one-hour ``airflow backfill create``: exactly that hour, and again with the
   same keys;
3. a run that failed (receiver down past the retry budget), a deploy (new DAG version), then
   ``airflow tasks clear``: the hour is sent, the ledger holds only acks of that try;
4. the watchdog: nothing new delivered for longer than the threshold is one alert.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from devkit.airflow_stack import (
    DAG_ID,
    ROOT,
    AirflowStack,
    free_port,
    rows,
    scheduler_stack_env,
    wait_until,
)
from devkit.seed import create_source_table, insert_rows
from services_sync.core.transform import transform_rows
from tests.operate.test_backfill_scheduler import (
    STARTUP_TIMEOUT_S,
    _scalar,
    backfill_runs,
    create_backfill,
    failed_task_logs,
    inspect,
    rows_for,
    wait_for_backfill,
)
from tests.smtp_inbox import smtp_inbox

pytestmark = pytest.mark.e2e

BATCH_SIZE = 5
TOP = pendulum.now("UTC").start_of("hour")
H0, H1, H2 = (TOP - timedelta(hours=5 - i) for i in range(3))  # three whole past hours


@pytest.fixture(scope="module")
def inbox() -> Iterator:
    with pytest.MonkeyPatch.context() as patch, smtp_inbox(patch) as inbox:
        yield inbox


@pytest.fixture(scope="module")
def source(pg_cluster) -> str:
    dsn = pg_cluster.create_database(f"src_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_source_table(conn)
        insert_rows(conn, rows_for(H0, 7, "A") + rows_for(H1, 6, "B") + rows_for(H2, 4, "C"))
    return dsn


@pytest.fixture(scope="module")
def stack(pg_cluster, source, receiver_server, inbox, tmp_path_factory) -> Iterator[AirflowStack]:
    """Scheduler, dag-processor and api-server on the DAGs in a folder the tests may change."""
    home = tmp_path_factory.mktemp("operator-paths")
    dags = home / "dags"
    shutil.copytree(ROOT / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    meta = pg_cluster.create_database(f"airflow_{uuid.uuid4().hex[:10]}")
    port = int(receiver_server.url.rsplit(":", 1)[1])
    env = scheduler_stack_env(
        home / "airflow",
        meta,
        free_port(),
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "2",
            # REST without a token (the stack is on loopback): the refusal says to delete the run.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW_CONN_SERVICES_SOURCE_DB": source,
            "AIRFLOW_CONN_SERVICES_API": json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}
            ),
            "SERVICES_SYNC_START_DATE": H0.isoformat(),
            "SERVICES_SYNC_CLOCK_SKEW_S": "0",
            "SERVICES_SYNC_BATCH_SIZE": str(BATCH_SIZE),
            "SERVICES_SYNC_POST_RETRIES": "1",
            "SERVICES_SYNC_MAX_DELIVERY_LAG_MIN": "60",
        },
    )
    airflow = AirflowStack(home / "airflow", env)
    requests.delete(f"{receiver_server.url}/inspect", timeout=5).raise_for_status()
    try:
        airflow.boot("api-server", "dag-processor", "scheduler", timeout=STARTUP_TIMEOUT_S)
        airflow.cli("dags", "unpause", DAG_ID)
        airflow.dags = dags  # type: ignore[attr-defined]
        yield airflow
    finally:
        killed = airflow.stop()
        assert not airflow.processes(), "processes left running"
        assert not killed, f"needed SIGKILL: {killed}\n{airflow.diagnostics()}"


@pytest.fixture
def receiver(receiver_server):
    return receiver_server


def test_dags_trigger_with_a_logical_date_is_refused_and_names_the_recipe(stack, receiver, inbox):
    """Regression: the recipe the README gave (`dags trigger --logical-date`) re-sent the hour
    before *now*, and for the latest hour took the logical date the next scheduled run needs:
    the scheduler then skipped the DAG for good, without an alert."""
    stack.cli("dags", "trigger", DAG_ID, "--logical-date", H2.isoformat())
    run = wait_for_run(stack, lambda r: r["logical_date"] == H2 and r["run_type"] == "manual")
    assert run["state"] == "failed"
    # Airflow 3.3 takes the interval of `dags trigger --logical-date` from now: the last whole
    # hour before the trigger, not H2's hour.
    assert run["data_interval_end"] - run["data_interval_start"] == timedelta(hours=1)
    assert run["data_interval_end"] >= TOP > H2 + timedelta(hours=1)
    states = task_states(stack, run["run_id"])
    assert states.pop("check_run_setup") == "failed"
    # record_delivery fails too, quietly (the run must not go green): one alert for the run.
    assert states.pop("record_delivery") == "failed"
    assert set(states.values()) == {"upstream_failed"}
    wait_until(lambda: inbox.messages, timeout=30, what="the alert e-mail")
    time.sleep(3)
    assert [m["Subject"] for m in inbox.messages] == [
        f"[services-sync] {DAG_ID}.check_run_setup failed"
    ]
    log = task_log(stack, run["run_id"], "check_run_setup")
    assert "refuses this run" in log
    assert f"logical date {H2:%Y-%m-%dT%H:%M}Z is the logical date of the scheduled run" in log
    assert (
        f"airflow backfill create --dag-id {DAG_ID} --from-date <S> --to-date <S> "
        "--reprocess-behavior completed --max-active-runs 1"
    ) in log
    assert inspect(receiver, "stats")["batches"] == 0

    # The message says to delete the run (it holds a scheduled run's logical date): do that.
    response = requests.delete(
        f"{stack.api_url}/api/v2/dags/{DAG_ID}/dagRuns/{run['run_id']}", timeout=30
    )
    assert response.status_code == 204, response.text
    assert _scalar(stack, "SELECT count(*) FROM dag_run WHERE dag_id = %s", (DAG_ID,)) == 0


def test_a_one_hour_backfill_sends_exactly_that_hour_and_again_with_the_same_keys(
    stack, source, receiver
):
    first = create_backfill(stack, H0, H0, "--reprocess-behavior", "completed")
    wait_for_backfill(stack, first)
    assert [(r["logical_date"], r["state"]) for r in backfill_runs(stack, first)] == [
        (H0, "success")
    ]
    expected = transform_rows(rows_for(H0, 7, "A")).records
    assert sorted(r["request_id"] for r in inspect(receiver, "requests")) == sorted(
        r["request_id"] for r in expected
    )
    batches = inspect(receiver, "batches")
    assert sorted(b["count"] for b in batches) == [2, 5]

    second = create_backfill(stack, H0, H0, "--reprocess-behavior", "completed")
    wait_for_backfill(stack, second)
    stats = inspect(receiver, "stats")
    assert (stats["batches"], stats["records"], stats["duplicates"]) == (2, 7, 2)


def test_clearing_a_failed_run_after_a_deploy_sends_its_hour(stack, source, receiver):
    """Regression: after a new DAG version, a cleared run's POST tasks became `removed`,
    record_delivery wrote the previous try's acks into the ledger, and the run went green
    without sending anything."""
    requests.post(
        f"{receiver.url}/faults", json={"faults": [{"status": 503, "times": 10_000}]}, timeout=5
    ).raise_for_status()
    failed = create_backfill(stack, H1, H1)
    wait_for_backfill(stack, failed, allow_failed=True)
    (run,) = backfill_runs(stack, failed)
    assert run["state"] == "failed"
    assert inspect(receiver, "stats")["records"] == 7  # H0 only
    versions = _scalar(stack, "SELECT count(*) FROM dag_version WHERE dag_id = %s", (DAG_ID,))

    # Deploy: the DAG's docs change, a new DAG version. The receiver is fixed meanwhile.
    path = stack.dags / f"{DAG_ID}.py"
    path.write_text(
        path.read_text().replace("**Owner:** data-platform", "**Owner:** data-platform (v2)")
    )
    wait_until(
        lambda: (
            _scalar(stack, "SELECT count(*) FROM dag_version WHERE dag_id = %s", (DAG_ID,))
            > versions
        ),
        timeout=120,
        what="the dag-processor to serialize the new DAG version",
        diagnostics=stack.diagnostics,
    )
    requests.delete(f"{receiver.url}/faults", timeout=5).raise_for_status()
    cleared_at = _scalar(stack, "SELECT now()")

    stack.cli("tasks", "clear", DAG_ID, "-s", H1.isoformat(), "-e", H1.isoformat(), "-y")

    wait_until(
        lambda: _run_state(stack, run["run_id"]) == "success",
        timeout=240,
        interval=1,
        what=f"the cleared run {run['run_id']} to succeed",
        diagnostics=lambda: f"{task_states(stack, run['run_id'])}\n{failed_task_logs(stack)}",
    )
    states = task_states(stack, run["run_id"], with_map_index=True)
    assert {s for t, s in states.items() if t.startswith("post_batches")} == {"success"}
    assert "removed" not in states.values()
    received = {r["request_id"] for r in inspect(receiver, "requests")}
    assert {r["request_id"] for r in transform_rows(rows_for(H1, 6, "B")).records} <= received
    # Every ack in the ledger was received by this try: after the clear, by this run.
    with psycopg.connect(source, row_factory=dict_row) as conn:
        ledger = conn.execute(
            "SELECT status, acked_at, delivered_by_run FROM services_sync.delivery_ledger"
            " WHERE run_id = %s",
            (run["run_id"],),
        ).fetchall()
    assert ledger and all(
        r["status"] == "acked"
        and r["acked_at"] > cleared_at
        and r["delivered_by_run"] == run["run_id"]
        for r in ledger
    ), ledger


def test_the_watchdog_alerts_once_when_nothing_new_was_delivered(stack, inbox):
    """The newest delivered hour ended 3 h ago, the threshold is 60 min: one alert, and a
    second watchdog run within the repeat interval stays quiet."""
    for attempt in (1, 2):
        stack.cli("dags", "trigger", "services_sync_watchdog")
        wait_until(
            lambda attempt=attempt: (
                _scalar(
                    stack,
                    "SELECT count(*) FROM dag_run WHERE dag_id = 'services_sync_watchdog'"
                    " AND state = 'success'",
                )
                == attempt
            ),
            timeout=180,
            interval=1,
            what=f"watchdog run {attempt} to succeed",
            diagnostics=lambda: f"{failed_task_logs(stack)}\n{stack.diagnostics()}",
        )
    late = [m for m in inbox.messages if "nothing delivered for" in m["Subject"]]
    assert len(late) == 1, [m["Subject"] for m in inbox.messages]
    body = late[0].get_body().get_content()
    assert f"{(H1 + timedelta(hours=1)).isoformat()}" in body  # delivered up to the end of H1
    assert "airflow dags list-import-errors" in body


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


_RUN_COLUMNS = (
    "run_id",
    "run_type",
    "logical_date",
    "state",
    "data_interval_start",
    "data_interval_end",
)


def wait_for_run(stack: AirflowStack, match, timeout: float = 180) -> dict:
    """The first finished run of the DAG that ``match`` accepts."""

    def finished():
        found = rows(
            stack.meta_dsn,
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM dag_run WHERE dag_id = %s",
            (DAG_ID,),
        )
        for row in found:
            run = dict(zip(_RUN_COLUMNS, row, strict=True))
            if match(run) and run["state"] in ("success", "failed"):
                return run
        return None

    return wait_until(
        finished, timeout=timeout, interval=1, what="the run", diagnostics=stack.diagnostics
    )


def _run_state(stack: AirflowStack, run_id: str) -> str:
    return _scalar(
        stack, "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id)
    )


def task_states(stack: AirflowStack, run_id: str, *, with_map_index: bool = False) -> dict:
    found = rows(
        stack.meta_dsn,
        "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = %s AND run_id = %s",
        (DAG_ID, run_id),
    )
    return {
        (f"{task}[{index}]" if with_map_index and index >= 0 else task): state
        for task, index, state in found
    }


def task_log(stack: AirflowStack, run_id: str, task_id: str) -> str:
    """The log file(s) of a task of a run (the LocalExecutor writes them under the home)."""
    logs = stack.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    deadline = time.monotonic() + 30
    while not list(logs.rglob("*.log")) and time.monotonic() < deadline:
        time.sleep(0.5)
    return "\n".join(p.read_text(errors="replace") for p in sorted(logs.rglob("*.log")))


def test_the_runbooks_cli_commands_run_against_the_stack(stack):
    """README, Operate → Runbook: the commands it gives, as given, against a real stack."""
    stack.cli(
        "connections",
        "add",
        "services_api_spare",
        "--conn-json",
        '{"conn_type": "http", "host": "api.example.com", "schema": "https"}',
    )
    assert "services_api_spare" in stack.cli("connections", "list", "-o", "plain")
    assert DAG_ID in stack.cli("dags", "list", "-o", "plain")
    stack.cli("dags", "list-import-errors")
    assert "backfill__" in stack.cli("dags", "list-runs", DAG_ID, "-o", "plain")
    start = H0.isoformat()
    # "Not delivered": clear only the failed lanes of an hour (none failed here: a no-op).
    stack.cli(
        "tasks",
        "clear",
        DAG_ID,
        "-t",
        "post_batches",
        "--only-failed",
        "-s",
        start,
        "-e",
        start,
        "-y",
    )
    assert _run_state(stack, backfill_runs_of(stack, H0)) == "success"


def backfill_runs_of(stack: AirflowStack, hour) -> str:
    return _scalar(
        stack,
        "SELECT run_id FROM dag_run WHERE dag_id = %s AND logical_date = %s",
        (DAG_ID, hour),
    )
