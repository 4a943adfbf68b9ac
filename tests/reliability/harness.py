"""Shared machinery of the fault suite: workloads, DAG runs, receiver faults and inspection.

Everything here drives the real DAG (``dags/services_requests_sync.py``) through ``dag.test()``
(tasks in this process, one at a time) against a real PostgreSQL and the reference receiver.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pendulum
import psycopg
import requests
from psycopg.rows import dict_row

from devkit.seed import insert_rows

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "services_requests_sync"
#: The first hour of test data (2025: before any real run, after SERVICES_SYNC_START_DATE).
H = pendulum.datetime(2025, 5, 14, 10, tz="UTC")
HOUR = timedelta(hours=1)
HTTP_TIMEOUT = 5
SERVICES = ("water", "roads", "waste", "parks", "lighting")

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------------------------


def rows_for(hour: datetime, n: int, prefix: str) -> list[tuple[Any, ...]]:
    """``n`` valid, distinct source rows spread over ``[hour, hour + 1h)`` (microseconds too)."""
    step = 3600 / max(n, 1)
    return [
        (
            SERVICES[i % len(SERVICES)],
            f"{prefix}-{i:05d}",
            hour - timedelta(days=1 + i % 7, minutes=i),
            str(1 + i % 5),
            hour + timedelta(seconds=int(i * step), microseconds=(i * 7919) % 1_000_000),
        )
        for i in range(n)
    ]


def insert(dsn: str, rows: Sequence[Sequence[Any]]) -> int:
    """COPY rows (in ``devkit.seed.COLUMNS`` order) into ``service_requests``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return insert_rows(conn, rows)


def interval(start: datetime) -> tuple[datetime, datetime]:
    """``[start, start + 1h)``."""
    return (start, start + HOUR)


# ---------------------------------------------------------------------------------------------
# The DAG
# ---------------------------------------------------------------------------------------------


def load_dag() -> Any:
    """Parse the DAG file now, so it reads the current ``SERVICES_SYNC_*`` environment.

    The DAG reads its settings with ``load_settings()`` when the file is parsed (retries,
    timeouts, Retry-After cap, gate margins...), and ``dag.test()`` runs the tasks of the DAG
    object it is called on: a setting changed after parsing reaches only the code that calls
    ``load_settings()`` inside a task (connections, schema, naive time zone).
    """
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[DAG_ID]


def run_interval(dag: Any, start: datetime, **conf: Any) -> Any:
    """Run the DAG for ``[start, start + 1h)``: a manual run covers the hour before its date."""
    run = dag.test(logical_date=start + HOUR, run_conf=conf or None)
    assert (run.data_interval_start, run.data_interval_end) == interval(start)
    return run


def lane_of(batch_index: int) -> int:
    """The delivery lane (map index of ``post_batches``) that sends a batch of a query-mode run."""
    from services_sync.core.config import load_settings

    return batch_index % load_settings().lanes


def task_instances(run: Any, task_id: str) -> list[Any]:
    """The run's task instances of ``task_id``, by map index."""
    return sorted(
        (ti for ti in run.get_task_instances() if ti.task_id == task_id),
        key=lambda ti: ti.map_index,
    )


def resume_run(
    dag: Any,
    run_id: str,
    *,
    only_failed: bool = True,
    poll_s: float = 0.2,
    timeout_s: float = 120.0,
) -> Any:
    """Clear the failed tasks of a finished run (and their downstream), or all of its tasks,
    and run them again.

    What "Clear -> only failed" (or "Clear" of the whole run) does in the UI: the cleared tasks
    run again *in the same run*: re-run lanes send what the outbox still holds for them, a
    re-run build rebuilds the interval. ``dag.test()`` cannot do this (it deletes the run and
    starts a new one), so this mirrors its loop: update the run's state, schedule what is
    ready, run it in this process.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import clear_task_instances
    from airflow.sdk import DagRunState, TaskInstanceState, timezone
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from sqlalchemy import select

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    # Built like DAG.test() builds it, so its deadline holds serialized alerts, not the alert
    # ids a scheduler's DAG holds; a run cleared here has no queued_at (no deadline) anyway.
    # See services_sync.dag_factory.allow_dag_test.
    scheduler_dag.deadline = None
    session = settings.Session()
    try:
        dr = session.scalar(
            select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id)
        )
        assert dr is not None, f"no run {run_id}"
        dr.dag = scheduler_dag
        tis = dr.get_task_instances(session=session)
        to_clear = [
            ti
            for ti in tis
            if not only_failed
            or ti.state in (TaskInstanceState.FAILED, TaskInstanceState.UPSTREAM_FAILED)
        ]
        assert to_clear, f"run {run_id} has no failed task to clear"
        clear_task_instances(to_clear, session, dag_run_state=DagRunState.RUNNING)
        dr.state = DagRunState.RUNNING
        session.commit()
        deadline = time.monotonic() + timeout_s
        while dr.state == DagRunState.RUNNING:
            assert time.monotonic() < deadline, f"run {run_id} did not finish in {timeout_s} s"
            session.expire_all()
            schedulable, _ = dr.update_state(session=session)
            for ti in schedulable:
                if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                    ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
                ti.scheduled_dttm = timezone.utcnow()
            session.commit()
            scheduled = [
                ti
                for ti in dr.get_task_instances(session=session)
                if ti.state == TaskInstanceState.SCHEDULED
            ]
            if not scheduled and dr.state == DagRunState.RUNNING:
                time.sleep(poll_s)
            for ti in scheduled:
                _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
        session.expunge_all()
        return dr
    finally:
        session.close()


# ---------------------------------------------------------------------------------------------
# Receiver: faults and inspection
# ---------------------------------------------------------------------------------------------


def add_faults(receiver_url: str, *faults: dict[str, Any]) -> None:
    """Queue faults for the next POSTs to the data endpoint (FIFO, see ``devkit.receiver``)."""
    response = requests.post(
        f"{receiver_url}/faults", json={"faults": list(faults)}, timeout=HTTP_TIMEOUT
    )
    response.raise_for_status()


def clear_faults(receiver_url: str) -> None:
    """Drop the faults not served yet."""
    requests.delete(f"{receiver_url}/faults", timeout=HTTP_TIMEOUT).raise_for_status()


def pending_faults(receiver_url: str) -> list[dict[str, Any]]:
    """Faults not served yet."""
    return requests.get(f"{receiver_url}/faults", timeout=HTTP_TIMEOUT).json()["faults"]


def inspect(receiver_url: str, what: str) -> Any:
    """``GET /inspect/<what>``: requests, state, batches or stats."""
    response = requests.get(f"{receiver_url}/inspect/{what}", timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    return response.json()


@dataclass(frozen=True)
class DataRequest:
    """One data request as the receiver logged it."""

    at: float  # time.time() of the log line
    key: str
    fault: str | None  # e.g. "status=429"; None when served normally
    status: int | None  # HTTP status of a normal answer (None for a fault)
    duplicate: bool | None

    def is_for(self, key: str) -> bool:
        """Whether this request carried ``key`` (the log shows its first 80 characters)."""
        logged = self.key[1:-1] if self.key.startswith("'") else self.key
        return key.startswith(logged.removesuffix("...")) and bool(logged)


_LINE = re.compile(
    r"^POST \S+ key=(?P<key>'(?:[^'\\]|\\.)*'|-) "
    r"(?:fault=(?P<fault>\S+)|count=\S+ status=(?P<status>\d+) duplicate=(?P<dup>\S+))"
)


class ReceiverLog(logging.Handler):
    """Collect the receiver's one-line-per-request log (it runs in this process).

    A faulted request is logged when it arrives, a served one after it was processed; both
    name the (truncated) idempotency key, so the gap between a fault and the next request with
    the same key is the client's retry wait as seen by the server.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.requests: list[DataRequest] = []
        self._lock_list = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        match = _LINE.match(record.getMessage())
        if match is None:
            return
        status = match["status"]
        item = DataRequest(
            at=record.created,
            key=match["key"],
            fault=match["fault"],
            status=int(status) if status else None,
            duplicate=None if match["dup"] in (None, "-") else match["dup"] == "true",
        )
        with self._lock_list:
            self.requests.append(item)

    def after(self, item: DataRequest) -> DataRequest | None:
        """The next request after ``item`` with the same idempotency key."""
        with self._lock_list:
            later = self.requests[self.requests.index(item) + 1 :]
        return next((r for r in later if r.key == item.key), None)


@contextmanager
def receiver_log() -> Iterator[ReceiverLog]:
    """Capture the receiver's request log for the duration of the block."""
    logger = logging.getLogger("devkit.receiver")
    handler = ReceiverLog()
    level, disabled = logger.level, logger.disabled
    logger.setLevel(logging.INFO)
    logger.disabled = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled


# ---------------------------------------------------------------------------------------------
# State tables and waiting
# ---------------------------------------------------------------------------------------------


def ledger(dsn: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``services_sync.delivery_ledger`` (of one run, or all), in batch order."""
    sql = "SELECT * FROM services_sync.delivery_ledger"
    params: dict[str, Any] = {}
    if run_id is not None:
        sql += " WHERE run_id = %(run_id)s"
        params["run_id"] = run_id
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(
            sql + " ORDER BY interval_start, run_id, batch_index", params
        ).fetchall()


def quarantined(dsn: str) -> list[dict[str, Any]]:
    """Rows of ``services_sync.quarantined_requests``."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM services_sync.quarantined_requests").fetchall()


def wait_for(
    probe: Callable[[], T | None], *, timeout_s: float, what: str, poll_s: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after a timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def count_ledger_rows(dsn: str) -> int:
    """How many batches have been built so far (0 before the state tables exist)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM services_sync.delivery_ledger").fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0
