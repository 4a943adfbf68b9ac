"""The late-commit gate query against real transactions on a real PostgreSQL."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import psycopg
import pytest

from services_sync.gate import GateReading, fatal_problem, waiting_for
from services_sync.sql import load_sql


def read_gate(dsn, window_end, skew_s=0.0):
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            load_sql("check_open_transactions.sql"),
            {"window_end": window_end, "clock_skew_s": skew_s},
        ).fetchone()
    return GateReading.from_row(row)


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
