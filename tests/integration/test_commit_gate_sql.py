"""The late-commit gate query against real transactions on a real PostgreSQL."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import psycopg
import pytest

from services_sync.core.gate import (
    GateReading,
    fatal_problem,
    unrelated_writers_ignored,
    unrelated_writers_left,
    waiting_for,
)
from services_sync.core.sql import load_sql


def read_gate(dsn, window_end, skew_s=0.0, unrelated_wait_s=300.0):
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            load_sql("check_open_transactions.sql"),
            {
                "window_end": window_end,
                "clock_skew_s": skew_s,
                "unrelated_wait_s": unrelated_wait_s,
            },
        ).fetchone()
    return GateReading.from_row(row)


#: Past any bound: the gate has waited for unrelated writers as long as it will.
NO_WAIT = 0.0


def db_now(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def test_an_interval_whose_end_has_not_passed_is_not_readable(source_db):
    reading = read_gate(source_db, db_now(source_db) + timedelta(seconds=30))
    assert not reading.end_passed
    assert "waiting" in waiting_for(reading)


def test_the_clock_skew_margin_extends_the_wait(source_db):
    end = db_now(source_db) - timedelta(seconds=5)
    assert read_gate(source_db, end, skew_s=0).end_passed
    assert not read_gate(source_db, end, skew_s=60).end_passed


def test_a_write_transaction_from_before_the_end_blocks_until_it_commits(source_db):
    writer = psycopg.connect(source_db)
    try:
        writer.execute("INSERT INTO service_requests VALUES ('s', 'late', now(), '1', now())")
        pid = writer.info.backend_pid
        end = db_now(source_db)
        time.sleep(0.2)
        reading = read_gate(source_db, end)
        assert reading.end_passed
        assert (reading.open_writers, reading.oldest_pid) == (1, pid)
        assert f"pid {pid}" in waiting_for(reading)
        writer.commit()
        assert waiting_for(read_gate(source_db, end)) is None
    finally:
        writer.close()


def test_transactions_that_started_after_the_end_or_only_read_do_not_block(source_db):
    end = db_now(source_db)
    time.sleep(0.2)
    later_writer = psycopg.connect(source_db)
    reader = psycopg.connect(source_db)
    try:
        later_writer.execute("INSERT INTO service_requests VALUES ('s', 'x', now(), '1', now())")
        reader.execute("SELECT count(*) FROM service_requests")  # open, no transaction id
        assert waiting_for(read_gate(source_db, end)) is None
    finally:
        later_writer.close()
        reader.close()


def test_a_prepared_transaction_blocks_until_resolved(source_db):
    gid = f"gate-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO service_requests VALUES ('s', 'prepared', now(), '1', now())")
        conn.execute(f"PREPARE TRANSACTION '{gid}'")
    try:
        end = db_now(source_db)
        reading = read_gate(source_db, end)
        assert (reading.open_prepared, reading.oldest_prepared_gid) == (1, gid)
        assert gid in waiting_for(reading)
    finally:
        with psycopg.connect(source_db, autocommit=True) as conn:
            conn.execute(f"COMMIT PREPARED '{gid}'")
    assert waiting_for(read_gate(source_db, end)) is None


def test_a_transaction_open_too_long_fails_the_gate_naming_its_pid(source_db):
    writer = psycopg.connect(source_db)
    try:
        writer.execute("INSERT INTO service_requests VALUES ('s', 'stuck', now(), '1', now())")
        time.sleep(1.2)
        reading = read_gate(source_db, db_now(source_db))
        problem = fatal_problem(reading, timedelta(seconds=1))
        assert f"pid {writer.info.backend_pid}" in problem
        assert "pg_terminate_backend" in problem
        assert fatal_problem(reading, timedelta(minutes=30)) is None
    finally:
        writer.close()


@pytest.mark.parametrize("grant", [False, True])
def test_the_gate_needs_pg_read_all_stats_to_see_other_roles(source_db, grant):
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        if grant:
            conn.execute(f"GRANT pg_read_all_stats TO {role}")
    reading = read_gate(source_db.replace("postgres@", f"{role}@"), db_now(source_db))
    assert reading.can_see_all is grant
    problem = fatal_problem(reading, timedelta(minutes=30))
    if grant:
        assert problem is None
    else:
        assert f"GRANT pg_read_all_stats TO {role}" in problem


@pytest.fixture
def etl_table(source_db):
    """A table in another schema, as a nightly ETL would write it."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA etl")
        conn.execute("CREATE TABLE etl.nightly_load (id int, loaded_at timestamptz)")
    return "etl.nightly_load"


def test_an_unrelated_long_writer_holds_the_gate_only_until_its_bound(source_db, etl_table):
    """Regression (issue 13): one ETL transaction in another schema failed every hourly run."""
    etl = psycopg.connect(source_db)
    try:
        etl.execute(f"INSERT INTO {etl_table} VALUES (1, now())")
        pid = etl.info.backend_pid
        end = db_now(source_db)
        time.sleep(0.2)

        within = read_gate(source_db, end, unrelated_wait_s=60)
        assert (within.open_writers, within.open_prepared) == (0, 0)
        assert (within.unrelated_writers, within.unrelated_pid) == (1, pid)
        assert unrelated_writers_left(within) == 1
        assert f"pid {pid}" in waiting_for(within)

        past = read_gate(source_db, end, unrelated_wait_s=NO_WAIT)
        assert unrelated_writers_left(past) == 0
        assert waiting_for(past) is None
        assert f"pid {pid}" in unrelated_writers_ignored(past)
        # However long it stays open, it never fails the run.
        assert fatal_problem(past, timedelta(microseconds=1)) is None
    finally:
        etl.close()


def test_a_writer_of_the_table_holds_the_gate_past_the_unrelated_bound(source_db, etl_table):
    writer = psycopg.connect(source_db)
    try:
        # First unrelated (it has written only the ETL table) ...
        writer.execute(f"INSERT INTO {etl_table} VALUES (1, now())")
        pid = writer.info.backend_pid
        end = db_now(source_db)
        time.sleep(0.2)
        assert waiting_for(read_gate(source_db, end, unrelated_wait_s=NO_WAIT)) is None
        # ... then it writes service_requests with its old start time: waited for, no bound.
        writer.execute("INSERT INTO service_requests VALUES ('s', 'late', now(), '1', now())")
        reading = read_gate(source_db, end, unrelated_wait_s=NO_WAIT)
        assert (reading.open_writers, reading.oldest_pid, reading.unrelated_writers) == (1, pid, 0)
        assert f"pid {pid}" in waiting_for(reading)
        assert f"pid {pid}" in fatal_problem(reading, timedelta(microseconds=1))
        writer.commit()
        assert waiting_for(read_gate(source_db, end, unrelated_wait_s=NO_WAIT)) is None
    finally:
        writer.close()


@pytest.fixture
def partitioned_source(source_db):
    """``service_requests`` partitioned by month, as a large production table may be."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("DROP TABLE service_requests")
        conn.execute(
            "CREATE TABLE service_requests (service_id text, request_id text, "
            "opening_date timestamptz, status_id text, last_modified_date timestamptz) "
            "PARTITION BY RANGE (last_modified_date)"
        )
        conn.execute(
            "CREATE TABLE service_requests_all PARTITION OF service_requests "
            "FOR VALUES FROM (MINVALUE) TO (MAXVALUE)"
        )
    return source_db


@pytest.fixture
def inheriting_source(source_db):
    """``service_requests`` with a legacy inheritance child (its writers lock only the child)."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE service_requests_old () INHERITS (service_requests)")
    return source_db


@pytest.mark.parametrize("child", ["service_requests_all", "service_requests_old"])
def test_a_writer_of_a_partition_holds_the_gate_past_the_unrelated_bound(request, child):
    dsn = request.getfixturevalue(
        "partitioned_source" if child.endswith("_all") else "inheriting_source"
    )
    writer = psycopg.connect(dsn)
    try:
        # Straight into the partition / child table, not through service_requests.
        writer.execute(f"INSERT INTO {child} VALUES ('s', 'p', now(), '1', now())")
        end = db_now(dsn)
        time.sleep(0.2)
        reading = read_gate(dsn, end, unrelated_wait_s=NO_WAIT)
        assert (reading.open_writers, reading.oldest_pid) == (1, writer.info.backend_pid)
        assert reading.unrelated_writers == 0
        assert waiting_for(reading) is not None
    finally:
        writer.close()


def prepare(dsn, gid, statement):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute(statement)
        conn.execute(f"PREPARE TRANSACTION '{gid}'")


@pytest.mark.parametrize(
    ("statement", "waited_for"),
    [
        ("INSERT INTO service_requests_old VALUES ('s', 'p', now(), '1', now())", True),
        ("INSERT INTO etl_nightly_load VALUES (1, now())", False),
    ],
    ids=["child-table", "unrelated"],
)
def test_a_prepared_transaction_is_waited_for_only_if_it_wrote_the_table(
    inheriting_source, statement, waited_for
):
    """A prepared transaction can write nothing more: one that did not write the table is
    never waited for; one that did (here a child table only) is, past the unrelated bound."""
    dsn = inheriting_source
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE etl_nightly_load (id int, loaded_at timestamptz)")
    gid = f"gate-{uuid.uuid4().hex[:8]}"
    prepare(dsn, gid, statement)
    try:
        end = db_now(dsn)
        reading = read_gate(dsn, end, unrelated_wait_s=3600)
        assert (reading.open_prepared == 1) is waited_for
        assert reading.unrelated_writers == 0
        if waited_for:
            assert reading.oldest_prepared_gid == gid
            assert gid in waiting_for(read_gate(dsn, end, unrelated_wait_s=NO_WAIT))
        else:
            assert waiting_for(reading) is None
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"ROLLBACK PREPARED '{gid}'")
