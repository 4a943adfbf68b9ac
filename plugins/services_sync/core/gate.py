"""The late-commit gate: when may an interval be read? Pure: no Airflow, no I/O.

PostgreSQL stamps ``now()`` with the transaction's *start* time. A row written at 10:59:59 by a
transaction that commits at 11:00:30 is invisible to an extraction at 11:00:05, and no later
interval will pick it up: it would be lost. The DAG therefore reads ``[start, end)`` only once,
on the database's clock, ``end + clock_skew`` has passed and no write transaction that started
before it and has written ``service_requests`` (holds a lock on it or a partition) is still open
(``check_open_transactions.sql``).

Other write transactions from before the end (a nightly ETL in another schema) could still write
the table later with their old start time, but rarely do: waiting for them without a bound would
fail every hourly run behind one unrelated long writer. The gate waits for those at most
``unrelated_wait_s`` after ``end + clock_skew``, then opens with a warning; ``reconcile_interval``
catches the rare late row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class GateReading:
    """One row of ``check_open_transactions.sql``."""

    end_passed: bool
    can_see_all: bool
    open_writers: int
    open_prepared: int
    oldest_pid: int | None
    oldest_who: str | None
    oldest_age_s: float | None
    oldest_prepared_gid: str | None
    seconds_to_end: float
    role_name: str = "<role>"
    unrelated_writers: int = 0
    unrelated_pid: int | None = None
    unrelated_who: str | None = None
    unrelated_age_s: float | None = None
    unrelated_wait_s: float = 0.0

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> GateReading:
        """Build from the query's row (a tuple, or a list after XCom)."""
        return cls(
            end_passed=bool(row[0]),
            can_see_all=bool(row[1]),
            open_writers=int(row[2]),
            open_prepared=int(row[3]),
            oldest_pid=row[4],
            oldest_who=row[5],
            oldest_age_s=None if row[6] is None else float(row[6]),
            oldest_prepared_gid=row[7],
            seconds_to_end=float(row[8]),
            role_name=str(row[9]) if len(row) > 9 else "<role>",
            unrelated_writers=int(row[10]) if len(row) > 10 else 0,
            unrelated_pid=row[11] if len(row) > 11 else None,
            unrelated_who=row[12] if len(row) > 12 else None,
            unrelated_age_s=None if len(row) <= 13 or row[13] is None else float(row[13]),
            unrelated_wait_s=float(row[14]) if len(row) > 14 else 0.0,
        )

    @property
    def seconds_past_end(self) -> float:
        """How long ago ``end + clock_skew`` passed on the database clock (negative: not yet)."""
        return -self.seconds_to_end


def unrelated_writers_left(reading: GateReading) -> int:
    """How many write transactions that hold no lock on the table the gate still waits for.

    They started before ``end + clock_skew`` but have not written ``service_requests``: they
    block only until ``unrelated_wait_s`` past ``end + clock_skew`` (database clock), then no
    more. Measured from the interval end, not from when the gate started, so it holds across
    the sensor's retries and a late run (catchup, backfill) does not wait for them at all.
    """
    if reading.unrelated_writers <= 0:
        return 0
    if reading.seconds_past_end >= reading.unrelated_wait_s:
        return 0
    return reading.unrelated_writers


def unrelated_writers_ignored(reading: GateReading) -> str | None:
    """The warning to log when the gate opens although unrelated writers are open, or None."""
    if not reading.end_passed or reading.unrelated_writers <= 0:
        return None
    if unrelated_writers_left(reading):
        return None
    return (
        f"{reading.unrelated_writers} write transaction(s) that started before the interval end "
        f"are still open but hold no lock on service_requests; the oldest is pid "
        f"{reading.unrelated_pid} ({reading.unrelated_who}), open for "
        f"{reading.unrelated_age_s or 0:.0f} s. Not waited for past "
        f"{reading.unrelated_wait_s:.0f} s after the interval end plus the clock-skew margin "
        "(param unrelated_wait_s): if one writes service_requests later with its old start time, "
        "reconcile_interval catches the late row"
    )


def waiting_for(reading: GateReading) -> str | None:
    """Why the interval cannot be read yet, or None when it can."""
    if not reading.end_passed:
        return (
            f"waiting {reading.seconds_to_end:.0f} s more for the interval end plus the "
            "clock-skew margin (database clock)"
        )
    if reading.open_writers or reading.open_prepared:
        who = (
            f"pid {reading.oldest_pid} ({reading.oldest_who})"
            if reading.oldest_pid is not None
            else f"prepared transaction {reading.oldest_prepared_gid!r}"
        )
        return (
            f"waiting for {reading.open_writers} open and {reading.open_prepared} prepared "
            "transaction(s) that wrote service_requests and started before the interval end to "
            f"finish; the oldest is {who}, open for {reading.oldest_age_s or 0:.0f} s"
        )
    left = unrelated_writers_left(reading)
    if left:
        return (
            f"waiting up to {reading.unrelated_wait_s - reading.seconds_past_end:.0f} s more for "
            f"{left} write transaction(s) that started before the interval end and hold no lock "
            f"on service_requests (yet); the oldest is pid {reading.unrelated_pid} "
            f"({reading.unrelated_who}), open for {reading.unrelated_age_s or 0:.0f} s"
        )
    return None


#: How to end a transaction that holds the gate, on PostgreSQL.
POSTGRES_END_COMMAND = "SELECT pg_terminate_backend(<pid>); / ROLLBACK PREPARED '<gid>';"


def fatal_problem(
    reading: GateReading,
    max_open_transaction: timedelta,
    end_command: str = POSTGRES_END_COMMAND,
) -> str | None:
    """A reason to fail the run instead of waiting, or None.

    * the role cannot see other sessions' transactions, so the gate would be blind;
    * a transaction that has written the table (holds a lock on it) and started before the
      interval end has been open longer than ``max_open_transaction``: somebody has to look at
      it (the message names it), and waiting silently would stall every later hour. Unrelated
      writers never fail the gate: :func:`unrelated_writers_left` bounds the wait for them.
    """
    if not reading.can_see_all:
        return (
            "The late-commit gate cannot see other sessions' transactions: grant the source "
            "connection's role pg_read_all_stats "
            f"(GRANT pg_read_all_stats TO {reading.role_name};) or "
            "pg_monitor, or set SERVICES_SYNC_COMMIT_GATE=off to accept that late commits can be "
            "missed."
        )
    limit = max_open_transaction.total_seconds()
    blocked = reading.open_writers or reading.open_prepared
    if blocked and reading.oldest_age_s is not None and reading.oldest_age_s > limit:
        who = (
            f"pid {reading.oldest_pid} ({reading.oldest_who})"
            if reading.oldest_pid is not None
            else f"prepared transaction {reading.oldest_prepared_gid!r}"
        )
        return (
            "A transaction that wrote service_requests and started before the interval end has "
            f"been open for {reading.oldest_age_s:.0f} s (limit {limit:.0f} s): {who}. Its rows "
            "could belong to this interval, so it is not read until that transaction ends. Commit "
            f"or end it ({end_command}), then "
            "clear this run; raise SERVICES_SYNC_MAX_OPEN_TRANSACTION_S if such transactions are "
            "normal."
        )
    return None
