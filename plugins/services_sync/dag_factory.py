"""What every DAG of the package shares: its ``@dag`` arguments, params and delivery half.

The DAG files (``dags/``) keep their task graph in view: ``@dag``, the tasks before delivery,
``chain``. They take from here only what would otherwise be copied between them:

* :func:`hourly_dag_args`: one run at a time from ``SERVICES_SYNC_START_DATE``, owner, retries,
  the failure alert (:func:`default_args`) and the stuck-run alert (:func:`stuck_run_deadline`);
* the per-run params, each with a title for the trigger form (:func:`batch_params`,
  :func:`gate_params`, :func:`window_params`);
* the arguments of query mode's SQL operators on its source (:func:`gate_args`,
  :func:`plan_args`);
* the delivery half of the graph: :func:`deliver_interval` (query mode) and
  :func:`deliver_window` (CDC mode). The capture mode plugs in through a typed interface
  (:mod:`services_sync.delivery.capture`), never a mode name;
* :func:`allow_dag_test`, a workaround for ``dag.test()`` with a deadline alert.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, Param, task

from services_sync.core.alerts import SyncFailureNotifier
from services_sync.core.config import Settings
from services_sync.core.deadlines import RunQueuedAt
from services_sync.delivery.capture import ChangeFeed, QuerySource

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


def hourly_dag_args(settings: Settings, *, source: QuerySource | None = None) -> dict[str, Any]:
    """The ``@dag`` arguments the four sync DAGs share, whatever their capture mode.

    The schedule stays in each DAG file. One run at a time (intervals and capture windows are
    delivered in order), :func:`default_args` and the stuck-run alert. ``source``: query mode's
    table, whose SQL files (:func:`gate_args`, :func:`plan_args`) are templates that compare
    the interval bounds through the ``source_time`` macro.
    """
    args: dict[str, Any] = {
        "start_date": settings.start_date,
        "max_active_runs": 1,
        "default_args": default_args(settings),
        "deadline": stuck_run_deadline(settings),
    }
    if source is not None:
        args["template_searchpath"] = [str(settings.sql_dir)]
        args["user_defined_macros"] = {"source_time": source.sql_time}
    return args


def batch_params(settings: Settings) -> dict[str, Param]:
    """The per-run params every sync DAG takes (trigger form, ``--conf``)."""
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
    """The per-run params of PostgreSQL's late-commit gate (CDC has no gate)."""
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


def window_params(settings: Settings, snapshot_description: str) -> dict[str, Param]:
    """CDC mode's per-run params: :func:`batch_params` and ``initial_snapshot``."""
    return {
        **batch_params(settings),
        "initial_snapshot": Param(
            False, type="boolean", title="Initial snapshot", description=snapshot_description
        ),
    }


def gate_args(
    settings: Settings, source: QuerySource, *, unrelated_wait_s: int | str = 0
) -> dict[str, Any]:
    """``SqlSensor`` arguments of the late-commit gate on ``source`` (the DAG adds the callbacks).

    ``check_open_transactions.sql`` of the source's dialect, one row per poke. ``unrelated_wait_s``:
    how long to wait for old write transactions that never touched the table (a value or a
    template).
    """
    return {
        **_source_sql(
            settings,
            source,
            "check_open_transactions.sql",
            window_end="{{ source_time(data_interval_end) }}",
            clock_skew_s=settings.clock_skew.total_seconds(),
            unrelated_wait_s=unrelated_wait_s,
        ),
        "selector": list,
        # Poke, not reschedule: a rescheduling sensor with retries can crash the scheduler in
        # Airflow 3.3 (ForeignKeyViolation on task_reschedule_ti_fkey, apache/airflow#71923).
        "mode": "poke",
        "poke_interval": settings.gate_poke_interval,
        "timeout": settings.max_open_transaction + settings.clock_skew + timedelta(minutes=10),
    }


def plan_args(settings: Settings, source: QuerySource) -> dict[str, Any]:
    """``SQLExecuteQueryOperator`` arguments of ``plan_batches`` on ``source``.

    ``plan_batches.sql`` of the source's dialect: keyset batches of the run's data interval, at
    most ``batch_size`` rows and ``max_batch_bytes`` of body each.
    """
    return _source_sql(
        settings,
        source,
        "plan_batches.sql",
        window_start="{{ source_time(data_interval_start) }}",
        window_end="{{ source_time(data_interval_end) }}",
        batch_size="{{ params.batch_size }}",
        max_batch_bytes="{{ params.max_batch_bytes }}",
    )


def _source_sql(
    settings: Settings, source: QuerySource, name: str, **parameters: Any
) -> dict[str, Any]:
    """A SQL operator's connection, session, SQL file and bind parameters on ``source``."""
    return {
        "conn_id": source.conn_id(settings),
        "hook_params": source.hook_params(settings),
        "sql": source.sql(name),
        "parameters": parameters,
    }


def deliver_interval(dag_id: str, settings: Settings, source: QuerySource) -> list[Any]:
    """Query mode's ``build_batches → post_batches → record_delivery → reconcile_interval``.

    ``source`` is the table the DAG reads: the build reads the planned batches from it, the
    lanes look up newer versions in it, the reconciliation reads the interval again.
    """
    # Imported here, not at the top: the watchdog DAG, which has no delivery, would pay for
    # the HTTP operator at every parse.
    from services_sync.delivery.lanes import DeliveryLaneOperator, lane_args, lane_numbers

    def this_run(run_id: str, start: Any, end: Any) -> dict[str, Any]:
        """The arguments query mode's tasks take: the run, its data interval, the source."""
        return {
            "dag_id": dag_id,
            "run_id": run_id,
            "data_interval_start": start,
            "data_interval_end": end,
            "source": source,
        }

    @task
    def build_batches(run_id=None, data_interval_start=None, data_interval_end=None):
        """Transform and quarantine the interval batch by batch into the outbox."""
        from services_sync.query import tasks

        return tasks.build_batches(**this_run(run_id, data_interval_start, data_interval_end))

    post_batches = DeliveryLaneOperator.partial(
        task_id="post_batches",
        source=source,  # an older hour sent after a newer one leaves out what changed
        **lane_args(settings),  # POST, 30 s timeout, retries with backoff + Retry-After
    ).expand(lane=lane_numbers(settings))

    @task(trigger_rule="all_done")
    def record_delivery(run_id=None, data_interval_start=None, data_interval_end=None):
        """Fail, once, naming every batch not acknowledged; log the run summary."""
        from services_sync.delivery import record

        return record.record_delivery(
            dag_id=dag_id,
            run_id=run_id,
            interval=record.interval_or_none(data_interval_start, data_interval_end),
        )

    @task(retries=0)
    def reconcile_interval(run_id=None, data_interval_start=None, data_interval_end=None):
        """Fail loudly unless every row of the interval was acked, quarantined or superseded."""
        from services_sync.query import tasks

        return tasks.reconcile_interval(**this_run(run_id, data_interval_start, data_interval_end))

    return [build_batches(), post_batches, record_delivery(), reconcile_interval()]


def deliver_window(dag_id: str, settings: Settings, window: Any, feed: ChangeFeed) -> list[Any]:
    """CDC mode's ``build_change_batches → post_batches → record_delivery → acknowledge_changes``.

    ``window`` is the capture task's output; ``feed`` the log it was captured from, which builds
    the window's batches and, once all are acknowledged, moves its saved position past it.
    """
    from services_sync.delivery.lanes import DeliveryLaneOperator, lane_args, lane_numbers

    @task
    def build_change_batches(window, run_id=None, data_interval_start=None, data_interval_end=None):
        """Cut the window into batches in the outbox (a resumed window is already there)."""
        from services_sync.delivery import record

        return feed.tasks().build_change_batches(
            dag_id=dag_id,
            run_id=run_id,
            window_id=window["window_id"],
            interval=record.interval_or_none(data_interval_start, data_interval_end),
        )

    post_batches = DeliveryLaneOperator.partial(
        task_id="post_batches",
        **lane_args(settings),  # POST, 30 s timeout, retries with backoff + Retry-After
    ).expand(lane=lane_numbers(settings))

    @task(trigger_rule="all_done")
    def record_delivery(window, run_id=None, data_interval_start=None, data_interval_end=None):
        """Fail, once, naming every batch of the window not acknowledged; log the summary."""
        from services_sync.delivery import record

        return record.record_delivery(
            dag_id=dag_id,
            run_id=run_id,
            interval=record.interval_or_none(data_interval_start, data_interval_end),
            window_id=window["window_id"] if window else None,
        )

    @task(multiple_outputs=False)
    def acknowledge_changes(window):
        """Move the position past the delivered window (never before every batch is acked)."""
        return feed.tasks().acknowledge_changes(window["window_id"], dag_id=dag_id)

    return [
        build_change_batches(window),
        post_batches,
        record_delivery(window),
        acknowledge_changes(window),
    ]


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
