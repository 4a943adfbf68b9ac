"""The late-commit gate: when may an interval be read? Pure: no Airflow, no I/O.

PostgreSQL stamps ``now()`` with the transaction's *start* time. A row written at 10:59:59 by a
transaction that commits at 11:00:30 is invisible to an extraction at 11:00:05, and no later
interval will pick it up: it would be lost. The DAG therefore reads ``[start, end)`` only once,
on the database's clock, ``end + clock_skew`` has passed and no write transaction that started
before it is still open (``check_open_transactions.sql``).
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
            f"waiting for {reading.open_writers} open and {reading.open_prepared} prepared write "
            f"transaction(s) that started before the interval end to finish; the oldest is {who}, "
            f"open for {reading.oldest_age_s or 0:.0f} s"
        )
    return None


def fatal_problem(reading: GateReading, max_open_transaction: timedelta) -> str | None:
    """A reason to fail the run instead of waiting, or None.

    * the role cannot see other sessions' transactions, so the gate would be blind;
    * a blocking transaction has been open longer than ``max_open_transaction``: somebody has
      to look at it (the message names it), and waiting silently would stall every later hour.
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
            f"A write transaction that started before the interval end has been open for "
            f"{reading.oldest_age_s:.0f} s (limit {limit:.0f} s): {who}. Its rows could belong "
            "to this interval, so it is not read until that transaction ends. Commit or end it "
            "(SELECT pg_terminate_backend(<pid>); / ROLLBACK PREPARED '<gid>';), then clear this "
            "run; raise SERVICES_SYNC_MAX_OPEN_TRANSACTION_S if such transactions are normal."
        )
    return None
