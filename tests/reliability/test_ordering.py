"""Order and completeness across intervals: a stale resend, a commit that lands late."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devkit.seed import create_source_table
from tests.reliability.harness import (
    HOUR,
    H,
    add_faults,
    clear_faults,
    insert,
    inspect,
    interval,
    load_dag,
    resume_run,
    rows_for,
    run_interval,
    task_instances,
)
from tests.reliability.reconcile import reconcile

pytestmark = pytest.mark.e2e


# ---------------------------------------------------------------------------------------------
# A row updated again while its older interval waits for a retry
# ---------------------------------------------------------------------------------------------

MOVED = ("OLD-00004", "OLD-00013", "OLD-00027")  # one row of each of H's three batches


@pytest.mark.parametrize(
    "retry_h",
    [
        # "Clear" on the failed tasks in the UI: post_batch resends the body built back then.
        "clear_failed_tasks",
        # A new run of the interval (trigger / backfill / dag.test): everything is rebuilt.
        "new_run",
    ],
)
def test_row_updated_again_while_its_failed_interval_waits(dag, source_db, receiver, retry_h):
    """H fails past its retry budget, its rows move on to H+1, H+1 is delivered, H is retried.

    The receiver must never get an older version of a row after a newer one.
    """
    insert(source_db, rows_for(H, 30, "OLD"))
    add_faults(receiver.url, {"status": 503, "times": 1000})
    failed = run_interval(dag, H, batch_size=10)
    clear_faults(receiver.url)
    assert failed.state == "failed"
    assert [ti.state for ti in task_instances(failed, "post_batch")] == ["failed"] * 3
    assert inspect(receiver.url, "stats")["batches"] == 0

    with psycopg.connect(source_db, autocommit=True) as conn:
        for minute, request_id in enumerate(MOVED, start=7):
            conn.execute(
                "UPDATE service_requests SET status_id = '5', last_modified_date = %s "
                "WHERE request_id = %s",
                (H + HOUR + timedelta(minutes=minute), request_id),
            )
    insert(source_db, rows_for(H + HOUR, 20, "NEW"))
    assert run_interval(dag, H + HOUR, batch_size=10).state == "success"
    newer = {r["request_id"]: r for r in inspect(receiver.url, "requests")}
    assert {rid: newer[rid]["status_id"] for rid in MOVED} == dict.fromkeys(MOVED, 5)

    if retry_h == "clear_failed_tasks":
        retried = resume_run(dag, failed.run_id)
    else:
        retried = run_interval(dag, H, batch_size=10)

    assert retried.state == "success"
    result = reconcile(source_db, receiver.url, [interval(H), interval(H + HOUR)])
    assert len(result.expected) == 50
    # The moved rows were delivered once, in their newer version only.
    assert sorted(
        (r["request_id"], r["status_id"]) for r in result.received if r["request_id"] in MOVED
    ) == [(rid, 5) for rid in MOVED]


# ---------------------------------------------------------------------------------------------
# A transaction open across the interval end, committed after the run started
# ---------------------------------------------------------------------------------------------


def _faketime_library() -> Path:
    """libfaketime's shared library: ``$FAKETIME_LIB``, else the one the ``libfaketime`` wheel
    ships (requirements-dev), else Debian's package."""
    candidates: list[Path] = []
    if os.environ.get("FAKETIME_LIB"):
        candidates.append(Path(os.environ["FAKETIME_LIB"]))
    try:
        import libfaketime

        candidates.append(
            Path(libfaketime.__file__).parent
            / "vendor"
            / "libfaketime"
            / "src"
            / "libfaketime.so.1"
        )
    except ImportError:
        pass
    candidates.append(Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"))
    for path in candidates:
        if path.is_file():
            return path
    pytest.fail(
        "libfaketime is needed to put the database clock just before an interval end: install "
        "requirements-dev.txt (the libfaketime wheel ships it), or `apt-get install libfaketime`, "
        "or point FAKETIME_LIB at libfaketime.so.1. Looked in: "
        + ", ".join(str(p) for p in candidates)
    )


#: How far before the interval end the database clock is when the cluster starts.
CLOCK_LEAD_S = 12.0


@pytest.fixture
def clock_before_end() -> Iterator[tuple[Any, datetime]]:
    """A PostgreSQL whose clock reads ``CLOCK_LEAD_S`` before the end of hour H when it starts.

    ``FAKETIME="-<seconds>"`` shifts every clock call of the server processes; the clock keeps
    running at real speed.
    """
    from devkit.pgcluster import PostgresCluster

    library = _faketime_library()
    end = H + HOUR
    offset = (datetime.now(end.tzinfo) - end).total_seconds() + CLOCK_LEAD_S
    cluster = PostgresCluster(
        env={
            "LD_PRELOAD": str(library),
            "FAKETIME": f"-{offset:.3f}",
            "DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_NO_CACHE": "1",
        },
    ).start()
    try:
        yield cluster, end
    finally:
        cluster.destroy()


def test_transaction_open_across_the_interval_end_is_delivered(
    clock_before_end, receiver, airflow_db, monkeypatch
):
    cluster, end = clock_before_end
    dsn = cluster.create_database(f"late_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_source_table(conn)
    monkeypatch.setenv("AIRFLOW_CONN_SERVICES_SOURCE_DB", dsn)
    # Gate margins are parse-time settings: a DAG parsed now, with a 1 s clock skew margin.
    monkeypatch.setenv("SERVICES_SYNC_CLOCK_SKEW_S", "1")
    monkeypatch.setenv("SERVICES_SYNC_GATE_POKE_S", "0.5")
    dag = load_dag()
    insert(dsn, rows_for(H, 30, "ONTIME"))

    writer = psycopg.connect(dsn)
    try:
        stamped = writer.execute(
            "INSERT INTO service_requests VALUES ('water', 'LATE-1', now() - interval '2 days', "
            "'3', now()) RETURNING last_modified_date"
        ).fetchone()[0]
        left = (end - stamped).total_seconds()
        assert 0 < left < CLOCK_LEAD_S, (
            f"the database clock is at {stamped}, want just before {end}"
        )
        # Commit once the database clock has passed the interval end (the run is waiting by then).
        committer = threading.Timer(left + 1.5, writer.commit)
        committer.start()
        run = run_interval(dag, H, batch_size=10)
        committer.join()
    finally:
        writer.close()

    result = reconcile(dsn, receiver.url, [interval(H)])
    assert ("water", "LATE-1") in result.state
    assert len(result.expected) == 31
    assert run.state == "success"
    # The run waited at the late-commit gate until the transaction had committed.
    gate = task_instances(run, "wait_for_open_transactions")
    assert [ti.state for ti in gate] == ["success"]
