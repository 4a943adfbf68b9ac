"""A stuck run raises the DeadlineAlert: scheduler + triggerer deliver it to a real SMTP server.

A ``dag.test()`` run has no ``queued_at`` and so no deadline: the stuck-run alert lives on the
production path only, and this is where it is exercised: the scheduler notices the missed
deadline and the triggerer runs ``services_sync.core.alerts.deadline_missed``.

The run is made stuck on purpose: a clock-skew margin of a day keeps the late-commit gate
waiting, and the deadline is 18 s after the run was queued.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pendulum
import psycopg
import pytest

from devkit.airflow_stack import (
    DAG_ID,
    AirflowStack,
    free_port,
    rows,
    scheduler_stack_env,
    wait_until,
)
from tests.operate.test_backfill_scheduler import (
    STARTUP_TIMEOUT_S,
)
from tests.smtp_inbox import smtp_inbox

pytestmark = pytest.mark.e2e

#: The stuck-run deadline of this test: a short one, so the alert comes within the test.
DEADLINE_S = 18


@pytest.fixture
def inbox(monkeypatch):
    with smtp_inbox(monkeypatch) as inbox:
        yield inbox


def test_a_run_stuck_past_its_deadline_alerts(pg_cluster, source_db, receiver, inbox, tmp_path):
    meta = pg_cluster.create_database(f"airflow_{uuid.uuid4().hex[:10]}")
    api_port = free_port()
    hour = pendulum.now("UTC").start_of("hour").subtract(hours=2)
    env = scheduler_stack_env(
        tmp_path / "airflow",
        meta,
        api_port,
        {
            "SERVICES_SYNC_START_DATE": hour.isoformat(),
            "SERVICES_SYNC_RUN_DEADLINE_MIN": str(DEADLINE_S / 60),
            "SERVICES_SYNC_CLOCK_SKEW_S": "86400",  # the gate waits: the run is stuck
        },
    )
    airflow = AirflowStack(tmp_path / "airflow", env)
    try:
        airflow.boot(
            "api-server", "dag-processor", "scheduler", "triggerer", timeout=STARTUP_TIMEOUT_S
        )
        airflow.cli("dags", "unpause", DAG_ID)
        # The README's one-hour recipe; the gate then waits a day: the run is stuck.
        start = hour.isoformat()
        airflow.cli(
            "backfill", "create", "--dag-id", DAG_ID, "--from-date", start, "--to-date", start,
            "--reprocess-behavior", "completed", "--max-active-runs", "1",
        )  # fmt: skip
        started = time.monotonic()
        wait_until(
            lambda: bool(inbox.messages),
            timeout=180,
            what="the deadline alert e-mail",
            diagnostics=airflow.diagnostics,
        )
        (mail,) = inbox.messages
        assert mail["Subject"] == f"[services-sync] {DAG_ID} run is not finished by its deadline"
        body = mail.get_body().get_content()
        assert "backfill__" in body
        assert "Deadline" in body
        assert time.monotonic() - started >= 15, "the alert must wait for the deadline"
        end_stuck_run(airflow)

        # The CDC DAG has the same stuck-run alert (regression: it had none). Its initial
        # snapshot recipe, run by hand without a logical date, gets a deadline too (paused here,
        # the run stays queued: only the deadline matters).
        airflow.cli(
            "dags", "trigger", "services_requests_cdc", "--conf", '{"initial_snapshot": true}'
        )
        deadline = wait_until(
            lambda: rows(
                airflow.meta_dsn,
                "SELECT d.deadline_time - r.queued_at, r.logical_date, r.conf FROM deadline d"
                " JOIN dag_run r ON r.id = d.dagrun_id WHERE r.dag_id = 'services_requests_cdc'",
            ),
            timeout=60,
            what="the CDC run's deadline",
        )
        ((delay, logical_date, conf),) = deadline
        assert (delay, logical_date) == (timedelta(seconds=DEADLINE_S), None)
        assert conf["initial_snapshot"] is True
    finally:
        killed = airflow.stop()
        left = airflow.processes()
        assert not left, f"processes left running: {left}"
        assert not killed, f"needed SIGKILL: {killed}"


def end_stuck_run(airflow: AirflowStack) -> None:
    """Mark the poking gate failed, as an operator would, and wait for its process to end.

    The gate pokes (it holds its worker while it waits); the stack's clean shutdown is checked
    after, so the task must be gone first: its supervisor stops it at the next heartbeat.
    """
    with psycopg.connect(airflow.meta_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE task_instance SET state = 'failed' WHERE dag_id = %s AND state = 'running'",
            (DAG_ID,),
        )
    wait_until(
        lambda: not [p for p in airflow.processes() if p.cmdline.startswith("airflow worker -- 0")],
        timeout=60,
        what="the gate's task process to stop",
        diagnostics=airflow.diagnostics,
    )
