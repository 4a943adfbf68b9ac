"""What every DAG of the package shares: default args, the stuck-run alert and the batch params.

The DAG files (``dags/``) differ only in what differs between the capture modes; everything
here is the same for both, so they cannot drift apart.
"""

from __future__ import annotations

import functools
from typing import Any

from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, Param

from services_sync.core.alerts import SyncFailureNotifier
from services_sync.core.config import Settings
from services_sync.core.deadlines import RunQueuedAt

#: The owner shown in the UI and in every alert.
OWNER = "data-platform"


def default_args(settings: Settings) -> dict[str, Any]:
    """Owner, retries of the database tasks, and the failure alert (e-mail / Slack)."""
    return {
        "owner": OWNER,
        "retries": settings.task_retries,
        "retry_delay": settings.task_retry_delay,
        "on_failure_callback": SyncFailureNotifier(),
    }


def stuck_run_deadline(settings: Settings) -> DeadlineAlert | None:
    """A run still unfinished ``SERVICES_SYNC_RUN_DEADLINE_MIN`` after it was queued is stuck.

    The callback runs in the triggerer (``services_sync.core.alerts.deadline_missed``). None when
    the setting is 0.
    """
    if not settings.run_deadline:
        return None
    return DeadlineAlert(
        # DeadlineReference.DAGRUN_QUEUED_AT, but a run that has one cannot be cleared in
        # Airflow 3.3 (apache/airflow#70368): see services_sync.core.deadlines.
        reference=RunQueuedAt(),
        interval=settings.run_deadline,
        callback=AsyncCallback("services_sync.core.alerts.deadline_missed"),
    )


def batch_params(settings: Settings) -> dict[str, Param]:
    """The per-run params both DAGs take (trigger form, ``--conf``)."""
    return {
        "batch_size": Param(
            settings.default_batch_size,
            type="integer",
            minimum=1,
            maximum=50_000,
            title="Batch size",
            description="Records per POST.",
        ),
        "max_batch_bytes": Param(
            settings.max_batch_bytes,
            type="integer",
            minimum=1024,
            title="Max body bytes",
            description="Upper bound of one POST body; batches shrink to fit it.",
        ),
    }


def gate_params(settings: Settings) -> dict[str, Param]:
    """The per-run params of the late-commit gate (query mode only: CDC has no gate)."""
    return {
        "unrelated_wait_s": Param(
            int(settings.unrelated_writer_wait.total_seconds()),
            type="integer",
            minimum=0,
            maximum=int(settings.max_open_transaction.total_seconds()),
            title="Unrelated writer wait (s)",
            description=(
                "How long after the interval end (plus clock skew) the late-commit gate still "
                "waits for old write transactions that hold no lock on service_requests. Writers "
                "of the table are always waited for; reconciliation catches a late row."
            ),
        ),
    }


def allow_dag_test(dag: DAG) -> DAG:
    """Let ``dag.test()`` and ``airflow dags test`` finish a run of a DAG with a DeadlineAlert.

    Upstream bug (Airflow 3.3.2): when a run of ``DAG.test()`` succeeds, ``DagRun.update_state``
    hands the DAG's ``deadline`` to ``DeadlineAlertModel.get_by_id``; under the scheduler that
    is a list of alert ids, but ``DAG.test()`` builds its scheduler-side DAG from the DAG object
    itself, so it is a list of serialized alerts (``'dict' object has no attribute 'hex'`` on
    SQLite, ``cannot adapt type 'dict'`` on PostgreSQL). A test run never gets a deadline anyway
    (it has no ``queued_at``), so this runs ``test()`` with the deadline set aside and puts it
    back after; the DAG the dag-processor serializes, and so the scheduler, keeps it.
    """
    original = dag.test

    @functools.wraps(original)
    def test(*args: Any, **kwargs: Any) -> Any:
        deadline, dag.deadline = dag.deadline, None
        try:
            return original(*args, **kwargs)
        finally:
            dag.deadline = deadline

    dag.test = test  # type: ignore[method-assign]
    return dag


def is_test_run(dag_run: Any) -> bool:
    """Whether a run was made by ``DAG.test()`` (``airflow dags test``), which marks its runs."""
    return getattr(dag_run, "triggering_user_name", None) == "dag_test"
