"""What the change-stream demos (PostgreSQL CDC, MySQL / MariaDB) share.

Their command line (:func:`run_change_demo`), the rows they write (:func:`change_row`),
deletes sent as a status (:data:`DELETES_AS_STATUS`), one printed line per run
(:class:`RunSteps`) and, at the end, the receiver's state compared with the table
(:func:`compare_with_receiver`).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from devkit.demo.airflow_runs import RunResult, run_hour
from devkit.demo.services import DEFAULT_WORKDIR, FIRST_HOUR, run_demo

DELETED_STATUS = -1
"""The ``status_id`` a deleted request is sent with."""

DELETES_AS_STATUS = {
    "SERVICES_SYNC_CDC_DELETES": "status",
    "SERVICES_SYNC_CDC_DELETED_STATUS_ID": str(DELETED_STATUS),
}
"""The DAG settings that send a delete as the request with :data:`DELETED_STATUS`."""

_OPENED = FIRST_HOUR - timedelta(days=2)


def run_change_demo(
    run: Callable[[argparse.Namespace, contextlib.ExitStack], int],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
) -> int:
    """Parse a change-stream demo's command line and run it with :func:`run_demo`.

    Args:
        run: The demo: gets the options (``keep``, ``workdir``) and the cleanup stack.
        argv: Command-line arguments (defaults to ``sys.argv[1:]``).
        prog: How the demo is started, for ``--help``.
        description: What the demo does, for ``--help``.

    Returns:
        The demo's exit status.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--keep", action="store_true", help="keep the services up until Ctrl-C")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="wiped on start")
    args = parser.parse_args(argv)
    return run_demo(lambda cleanup: run(args, cleanup))


def change_row(request_id: str, status: Any, minute: int, service: str = "water") -> tuple:
    """A ``service_requests`` row opened two days before the demo, changed ``minute`` into it."""
    return (service, request_id, _OPENED, str(status), FIRST_HOUR + timedelta(minutes=minute))


class RunSteps:
    """The demo's DAG runs, one per step, each printed as one line of what it delivered.

    Args:
        workdir: The demo workspace; run ``n``'s Airflow log is ``<log_prefix>-<n>.log`` there.
        log_prefix: e.g. ``airflow-cdc-run``.
        state_dsn: URL of the database holding the state tables (the delivery ledger).
        params: The params of every run; a step adds or overrides some.

    Attributes:
        runs: How each run went, in order.
    """

    def __init__(
        self, workdir: Path, log_prefix: str, state_dsn: str, params: dict[str, Any]
    ) -> None:
        self.workdir = workdir
        self.log_prefix = log_prefix
        self.state_dsn = state_dsn
        self.params = params
        self.runs: list[RunResult] = []

    @property
    def ok(self) -> bool:
        """Whether every run succeeded."""
        return all(run.ok for run in self.runs)

    def run(self, dag: Any, start: datetime, title: str, **params: Any) -> None:
        """Run ``dag`` for the hour from ``start`` and print what it delivered.

        Args:
            dag: The DAG.
            start: Start of the run's interval.
            title: What the step does, for its line (at most 46 characters line up).
            params: Params of this run only.
        """
        log_path = self.workdir / f"{self.log_prefix}-{len(self.runs) + 1}.log"
        result = run_hour(dag, start, log_path, {**self.params, **params})
        self.runs.append(result)
        sent = _delivered(self.state_dsn, dag.dag_id, result.run_id) if result.run_id else (0, 0, 0)
        print(
            f"  run {len(self.runs)}  {title:<46} {result.state:<8} {sent[0]:>3} records in "
            f"{sent[1]} batch(es), {sent[2]} quarantined ({result.seconds:.1f} s)"
        )
        if not result.ok:
            print(f"      {result.problem}")


def _delivered(dsn: str, dag_id: str, run_id: str) -> tuple[int, int, int]:
    """``(records accepted, batches sent, rows quarantined)`` of one run, from the ledger."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(accepted), 0), count(*) FILTER (WHERE rows_sent > 0), "
            "coalesce(sum(rows_quarantined), 0) FROM services_sync.delivery_ledger "
            "WHERE dag_id = %s AND run_id = %s",
            (dag_id, run_id),
        ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def compare_with_receiver(table: Sequence[Sequence[Any]], url: str, deleted: int = 2) -> bool:
    """Print the receiver's state next to the table's; True when they match.

    Every valid row must be at the receiver as it is in the table, and the receiver may hold
    nothing else but the ``deleted`` requests flagged with :data:`DELETED_STATUS`.
    """
    import requests

    from services_sync.core.transform import transform_rows

    expected = {(r["service_id"], r["request_id"]): r for r in transform_rows(table).records}
    received = {
        (r["service_id"], r["request_id"]): {k: v for k, v in r.items() if k != "idempotency_key"}
        for r in requests.get(f"{url}/inspect/state", timeout=10).json()
    }
    stats = requests.get(f"{url}/inspect/stats", timeout=10).json()
    flagged = {k for k, r in received.items() if r["status_id"] == DELETED_STATUS}
    missing = [k for k, r in expected.items() if received.get(k) != r]
    extra = [k for k in received if k not in expected and k not in flagged]
    print()
    print(
        f"receiver     {len(received)} requests ({len(flagged)} flagged deleted), "
        f"{stats['records']} records in {stats['batches']} batches, "
        f"{stats['duplicates']} duplicate batches"
    )
    print(
        f"table        {len(table)} rows, {len(expected)} valid: "
        f"{len(expected) - len(missing)} identical at the receiver"
    )
    if missing or extra:
        print(f"MISMATCH: missing/different {missing[:5]}, unexpected {extra[:5]}")
    return not missing and not extra and len(flagged) == deleted
