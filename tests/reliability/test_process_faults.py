"""The pipeline's own processes fail: the source database restarts, a task is SIGKILLed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import requests

from devkit.pgcluster import free_port
from tests.reliability.harness import (
    DAG_ID,
    HOUR,
    ROOT,
    H,
    add_faults,
    insert,
    inspect,
    interval,
    ledger,
    rows_for,
    run_interval,
    wait_for,
)
from tests.reliability.reconcile import reconcile

pytestmark = pytest.mark.e2e


# ---------------------------------------------------------------------------------------------
# Source restart mid-extract
# ---------------------------------------------------------------------------------------------


@dataclass
class RestartMidExtract:
    """Restart the cluster while ``build_batches`` is reading the interval.

    The build reads every batch in one REPEATABLE READ transaction on the source, so between two
    fetches its session sits ``idle in transaction`` after a query on ``service_requests``: the
    thread waits for that, then restarts the server in fast mode, cutting the build off in the
    middle of the interval (its state writes, in one transaction too, are rolled back).
    """

    pg_cluster: Any
    dsn: str
    blocked_query: str = ""
    error: BaseException | None = None
    _thread: threading.Thread = field(init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="restart-mid-extract", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the restart thread did not finish"
        if self.error is not None:
            raise AssertionError(f"restart thread failed: {self.error!r}") from self.error

    def _run(self) -> None:
        try:
            self.blocked_query = wait_for(
                self._extract_in_progress,
                timeout_s=60,
                what="build_batches in the middle of reading the interval",
                poll_s=0.01,
            )
            self.pg_cluster.restart("fast")
        except BaseException as exc:  # reported by join() in the test's thread
            self.error = exc

    def _extract_in_progress(self) -> str | None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
                "AND query LIKE '%%FROM service_requests AS sr%%' "
                "AND query LIKE '%%lower_lmd%%'"
            ).fetchone()
        return row[0] if row else None


def test_source_restart_mid_extract(dag, source_db, receiver, pg_cluster):
    insert(source_db, rows_for(H, 3000, "RESTART"))
    restarter = RestartMidExtract(pg_cluster, source_db)
    restarter.start()

    run = run_interval(dag, H, batch_size=20)
    restarter.join(timeout=30)

    assert "FROM service_requests" in restarter.blocked_query
    assert run.state == "success"
    retried = {(ti.task_id, ti.map_index, ti.try_number) for ti in run.get_task_instances()}
    retried = {item for item in retried if item[2] > 1}
    # The build cut off by the restart failed once and rebuilt the interval on its retry.
    assert retried == {("build_batches", -1, 2)}, retried
    assert len(ledger(source_db, run.run_id)) == 150
    result = reconcile(source_db, receiver.url, [interval(H)])
    assert len(result.expected) == 3000
    assert inspect(receiver.url, "stats")["duplicates"] == 0


# ---------------------------------------------------------------------------------------------
# SIGKILL of the posting task (tasks in their own processes: LocalExecutor)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def executor_airflow(
    pg_cluster: Any, tmp_path: Path, source_db: str, receiver: Any
) -> Iterator[dict[str, str]]:
    """An Airflow with a PostgreSQL metadata DB, LocalExecutor and an execution API server.

    ``dag.test()`` runs tasks in the test's process; ``airflow dags test --use-executor``
    hands them to the LocalExecutor, whose workers run each task in a supervised child process
    that talks to the execution API (``airflow api-server --apps execution``).
    """
    meta_db = f"airflow_meta_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(meta_db)
    api_port = free_port()
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"postgresql+psycopg://postgres@127.0.0.1:{pg_cluster.port}/{meta_db}"
        ),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        # The supervisor notices a finished task at its next heartbeat check (default 5 s).
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
    }
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run(
        [*airflow, "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=240,
    )
    api_log = (home / "api-server.log").open("wb")
    api = subprocess.Popen(
        [*airflow, "api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(api_port)],
        env=env,
        stdout=api_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: _healthy(f"http://127.0.0.1:{api_port}/execution/health"),
            timeout_s=90,
            what="the execution API server",
            poll_s=0.2,
        )
        yield {**env, "META_DSN": pg_cluster.dsn(meta_db)}
    finally:
        # A throwaway server: no graceful shutdown (uvicorn waits for idle keep-alive clients).
        os.killpg(api.pid, signal.SIGKILL)
        api.wait(timeout=10)
        api_log.close()


def _healthy(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _posting_process(receiver_port: int) -> psutil.Process | None:
    """The process (other than this one) with a connection open to the receiver's port."""
    for conn in psutil.net_connections(kind="tcp"):
        if (
            conn.raddr
            and conn.raddr.port == receiver_port
            and conn.status == psutil.CONN_ESTABLISHED
            and conn.pid not in (None, os.getpid())
        ):
            return psutil.Process(conn.pid)
    return None


def test_sigkill_of_a_lane_resumes_at_its_first_unacknowledged_batch(
    executor_airflow, source_db, receiver
):
    """Issue 11: a lane killed after some acks resumes, on its retry, where it stopped.

    12 batches, 3 per lane, 4 lanes in parallel; every POST is answered after 2 s. Once each
    lane has its first batch acknowledged, the process of one lane, in the middle of its second
    POST, gets SIGKILL. Its retry sends that second batch again (the receiver stored it, so it
    is a duplicate under the same key) and the third; the first is never sent again.
    """
    insert(source_db, rows_for(H, 180, "KILL"))
    receiver_port = int(receiver.url.rsplit(":", 1)[1])
    add_faults(receiver.url, {"delay_s": 2, "times": 1000})
    out = Path(executor_airflow["AIRFLOW_HOME"]) / "dags-test.log"
    with out.open("wb") as log:
        run = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("dags_test_cli.py")),
                DAG_ID,
                (H + HOUR).isoformat(),
                "--use-executor",
                "-c",
                '{"batch_size": 15}',
            ],
            env=executor_airflow,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: _acked(source_db) >= 4,
                timeout_s=180,
                what="every lane's first batch to be acknowledged",
                poll_s=0.1,
            )
            victim = wait_for(
                lambda: _posting_process(receiver_port),
                timeout_s=60,
                what="a lane posting its second batch",
                poll_s=0.05,
            )
            cmdline = " ".join(victim.cmdline())
            victim.send_signal(signal.SIGKILL)
            returncode = run.wait(timeout=180)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait(timeout=10)
    assert returncode == 0, out.read_text()[-5000:]
    # The task runner (the supervisor's child) retitles itself "airflow worker -- <ti id>".
    title = re.fullmatch(r"airflow worker -- ([0-9a-f-]{36})", cmdline.strip())
    assert title, f"killed something else: {cmdline!r}"

    with psycopg.connect(executor_airflow["META_DSN"]) as conn:
        lanes = conn.execute(
            "SELECT map_index, try_number, state FROM task_instance "
            "WHERE dag_id = %s AND task_id = 'post_batches' ORDER BY map_index",
            (DAG_ID,),
        ).fetchall()
        killed = conn.execute(
            "SELECT task_id, map_index, try_number FROM task_instance_history "
            "WHERE task_instance_id = %s",
            (title[1],),
        ).fetchall()
    assert len(killed) == 1, f"the killed process ran no finished try: {killed}"
    task_id, lane, try_number = killed[0]
    assert (task_id, try_number) == ("post_batches", 1)
    assert [state for _, _, state in lanes] == ["success"] * 4
    assert [tries for index, tries, _ in lanes] == [2 if i == lane else 1 for i in range(4)]

    # The killed lane's batches: the first acknowledged by try 1, the others by try 2.
    rows = [r for r in ledger(source_db) if r["lane"] == lane]
    assert [(r["status"], r["attempts"]) for r in rows] == [
        ("acked", 1),
        ("acked", 2),
        ("acked", 2),
    ]
    wait_for(
        lambda: inspect(receiver.url, "stats")["duplicates"] == 1,
        timeout_s=15,
        what="the killed POST and its resend to be served (one as a duplicate)",
    )
    served = {b["idempotency_key"]: b["duplicates"] for b in inspect(receiver.url, "batches")}
    assert [served[r["idempotency_key"]] for r in rows] == [0, 1, 0]
    assert inspect(receiver.url, "stats")["batches"] == 12
    reconcile(source_db, receiver.url, [interval(H)])


def _acked(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM services_sync.delivery_ledger WHERE status = 'acked'"
            ).fetchone()
    except psycopg.Error:
        return 0
    return int(row[0])
