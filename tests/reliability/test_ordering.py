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
    ledger,
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
        # "Clear" on the failed tasks in the UI: nothing left to send, H+1 drained H already.
        "clear_failed_tasks",
        # A new run of the interval (backfill / dag.test): H is rebuilt from the source.
        "new_run",
    ],
)
def test_row_updated_again_while_its_failed_interval_waits(dag, source_db, receiver, retry_h):
    """H fails past its retry budget, its rows move on to H+1, H+1 runs, H is retried.

    H+1's lanes send H's batches first, without the rows that changed since (their newer
    version is in H+1). The receiver must never get an older version of a row after a newer
    one, whichever way H is retried afterwards.
    """
    insert(source_db, rows_for(H, 30, "OLD"))
    add_faults(receiver.url, {"status": 503, "times": 1000})
    failed = run_interval(dag, H, batch_size=10)
    clear_faults(receiver.url)
    assert failed.state == "failed"
    # Three batches, lanes 1-3; lane 4 had nothing to send.
    assert [ti.state for ti in task_instances(failed, "post_batches")] == [
        "failed",
        "failed",
        "failed",
        "success",
    ]
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

    # H's batches went out with H+1's run, each without its moved row.
    drained = [r for r in ledger(source_db, failed.run_id) if r["status"] == "acked"]
    assert len(drained) == 3
    assert {r["delivered_by_run"] for r in drained} != {failed.run_id}
    assert sum(r["rows_superseded"] for r in drained) == 3

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


def test_an_outage_of_three_hours_drains_by_itself_in_order_with_newest_states_only(
    dag, source_db, receiver
):
    """Issue 11: the receiver is down for three hourly runs, each past its retry budget (a few
    seconds in the tests, an hour or more in production). Rows change from hour to hour. The
    fourth run, the receiver back, sends every earlier batch from the outbox, oldest first,
    then its own: nobody clears anything, no older version lands after a newer one."""
    insert(source_db, rows_for(H, 30, "A"))
    add_faults(receiver.url, {"status": 503, "times": 100_000})
    runs = [run_interval(dag, H, batch_size=10)]

    def move(request_ids, hour, status):
        with psycopg.connect(source_db, autocommit=True) as conn:
            for minute, request_id in enumerate(request_ids, start=3):
                conn.execute(
                    "UPDATE service_requests SET status_id = %s, last_modified_date = %s "
                    "WHERE request_id = %s",
                    (str(status), hour + timedelta(minutes=minute), request_id),
                )

    insert(source_db, rows_for(H + HOUR, 20, "B"))
    move(["A-00001", "A-00011", "A-00021"], H + HOUR, 4)
    runs.append(run_interval(dag, H + HOUR, batch_size=10))
    insert(source_db, rows_for(H + 2 * HOUR, 10, "C"))
    move(["A-00001", "B-00005"], H + 2 * HOUR, 5)  # A-00001 changes a second time
    runs.append(run_interval(dag, H + 2 * HOUR, batch_size=10))
    assert [r.state for r in runs] == ["failed"] * 3
    assert inspect(receiver.url, "stats")["batches"] == 0

    clear_faults(receiver.url)
    insert(source_db, rows_for(H + 3 * HOUR, 10, "D"))
    last = run_interval(dag, H + 3 * HOUR, batch_size=10)
    assert last.state == "success"

    hours = [interval(H + i * HOUR) for i in range(4)]
    result = reconcile(source_db, receiver.url, hours)
    assert len(result.expected) == 70
    # Newest states only: a row that moved on was never sent in an older version.
    versions = [(r["request_id"], r["status_id"]) for r in result.received]
    assert versions.count(("A-00001", 5)) == 1
    assert not {("A-00001", 4), ("A-00011", 1), ("B-00005", 1)} & set(versions)
    # Oldest first: each lane sent its batches in interval order.
    rows = ledger(source_db)
    delivered = sorted((r for r in rows if r["status"] == "acked"), key=lambda r: r["acked_at"])
    for lane in {r["lane"] for r in delivered}:
        starts = [r["interval_start"] for r in delivered if r["lane"] == lane]
        assert starts == sorted(starts), lane
    # The ledger says which run delivered what: the fourth, for all of them.
    assert {r["delivered_by_run"] for r in delivered} == {last.run_id}
    assert {r["run_id"] for r in delivered} == {r.run_id for r in runs} | {last.run_id}


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
