"""The late-commit gate's decisions on readings of ``check_open_transactions.sql`` (no database)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from services_sync.core.config import load_settings
from services_sync.core.gate import (
    GateReading,
    fatal_problem,
    unrelated_writers_ignored,
    unrelated_writers_left,
    waiting_for,
)
from services_sync.query.tasks import commit_gate_failed, commit_gate_open


def row(
    *,
    seconds_to_end=-10.0,
    writers=0,
    prepared=0,
    age=None,
    unrelated=0,
    unrelated_age=None,
    wait=300.0,
):
    """A row as the gate query returns it (columns in query order)."""
    return (
        seconds_to_end <= 0,  # end_passed
        True,  # can_see_all
        writers,
        prepared,
        4242 if writers else None,
        "app (api), idle in transaction" if writers else None,
        age,
        "gid-1" if prepared else None,
        seconds_to_end,
        "sync",
        unrelated,
        7777 if unrelated else None,
        "etl (nightly), active" if unrelated else None,
        unrelated_age,
        wait,
    )


SETTINGS = load_settings({})


def test_an_unrelated_writer_holds_the_gate_only_until_the_bound():
    within = GateReading.from_row(row(seconds_to_end=-299, unrelated=2, unrelated_age=4000))
    assert unrelated_writers_left(within) == 2
    reason = waiting_for(within)
    assert "pid 7777" in reason and "hold no lock on service_requests" in reason
    assert "up to 1 s more" in reason
    assert unrelated_writers_ignored(within) is None

    past = GateReading.from_row(row(seconds_to_end=-300, unrelated=2, unrelated_age=4000))
    assert unrelated_writers_left(past) == 0
    assert waiting_for(past) is None
    warning = unrelated_writers_ignored(past)
    assert "pid 7777" in warning and "4000 s" in warning and "reconcile_interval" in warning


def test_an_unrelated_writer_never_fails_the_gate_however_old():
    reading = GateReading.from_row(row(seconds_to_end=-5, unrelated=1, unrelated_age=86_400))
    assert fatal_problem(reading, timedelta(minutes=30)) is None
    assert commit_gate_failed(row(seconds_to_end=-5, unrelated=1, unrelated_age=86_400)) is False


def test_a_zero_bound_does_not_wait_for_unrelated_writers_at_all():
    reading = GateReading.from_row(row(seconds_to_end=-0.1, unrelated=1, unrelated_age=50, wait=0))
    assert unrelated_writers_left(reading) == 0
    assert waiting_for(reading) is None


def test_a_writer_of_the_table_is_waited_for_past_the_bound_and_fails_the_gate_when_too_old():
    reading = GateReading.from_row(row(seconds_to_end=-1000, writers=1, age=1100, unrelated=1))
    assert unrelated_writers_left(reading) == 0
    assert "pid 4242" in waiting_for(reading)
    assert fatal_problem(reading, timedelta(minutes=30)) is None
    too_old = GateReading.from_row(row(seconds_to_end=-2000, writers=1, age=1900))
    assert "pid 4242" in fatal_problem(too_old, timedelta(minutes=30))


def test_before_the_end_the_gate_waits_for_the_end_first():
    reading = GateReading.from_row(row(seconds_to_end=20, unrelated=1, unrelated_age=10))
    assert "20 s more for the interval end" in waiting_for(reading)
    assert unrelated_writers_ignored(reading) is None


def test_a_row_of_the_old_query_still_reads_as_no_unrelated_writers():
    reading = GateReading.from_row(row()[:10])
    assert (reading.unrelated_writers, reading.unrelated_wait_s) == (0, 0.0)
    assert waiting_for(reading) is None


@pytest.mark.parametrize(
    ("seconds_to_end", "opens", "level"),
    [(-100, False, logging.INFO), (-400, True, logging.WARNING)],
)
def test_commit_gate_open_warns_when_it_stops_waiting_for_unrelated_writers(
    caplog, seconds_to_end, opens, level
):
    caplog.set_level(logging.INFO, logger="services_sync.query.tasks")
    gate_row = row(seconds_to_end=seconds_to_end, unrelated=1, unrelated_age=5000)
    assert commit_gate_open(gate_row, SETTINGS) is opens
    (record,) = caplog.records
    assert record.levelno == level
    assert "pid 7777" in record.getMessage()
    if opens:
        assert "reconcile_interval catches the late row" in record.getMessage()


def test_commit_gate_open_without_any_open_writer_logs_at_info(caplog):
    caplog.set_level(logging.INFO, logger="services_sync.query.tasks")
    assert commit_gate_open(row(), SETTINGS) is True
    assert [r.levelno for r in caplog.records] == [logging.INFO]
