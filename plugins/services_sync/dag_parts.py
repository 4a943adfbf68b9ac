"""The delivery half every DAG shares, built inside a DAG: one definition, four DAGs.

Query mode (PostgreSQL or MySQL source) ends with ``build_batches → post_batches[lanes] →
record_delivery → reconcile_interval``; CDC mode (logical decoding or binlog) with
``build_change_batches → post_batches[lanes] → record_delivery → acknowledge_changes``. Only the
module that builds (and reconciles, or acknowledges) differs; it is named by its dotted path
and imported inside the task, so parsing a DAG file never imports a database driver.
"""

from __future__ import annotations

import importlib
from typing import Any

from airflow.sdk import task

from services_sync.core.config import Settings
from services_sync.delivery import record
from services_sync.delivery.lanes import DeliveryLaneOperator, lane_args, lane_numbers


def deliver_interval(
    dag_id: str, settings: Settings, tasks_module: str, *, source_dialect: str = "postgres"
) -> list[Any]:
    """Query mode's ``build_batches → post_batches → record_delivery → reconcile_interval``.

    ``tasks_module`` has ``build_batches`` and ``reconcile_interval`` (keyword arguments
    ``dag_id``, ``run_id``, ``data_interval_start``, ``data_interval_end``).
    """

    @task
    def build_batches(run_id=None, data_interval_start=None, data_interval_end=None):
        """Transform and quarantine the interval batch by batch into the outbox."""
        return importlib.import_module(tasks_module).build_batches(
            dag_id=dag_id,
            run_id=run_id,
            data_interval_start=data_interval_start,
            data_interval_end=data_interval_end,
        )

    post_batches = DeliveryLaneOperator.partial(
        task_id="post_batches",
        drop_superseded=True,  # an older hour sent after a newer one leaves out what changed
        source_dialect=source_dialect,
        **lane_args(settings),  # POST, 30 s timeout, retries with backoff + Retry-After
    ).expand(lane=lane_numbers(settings))

    @task(trigger_rule="all_done")
    def record_delivery(run_id=None, data_interval_start=None, data_interval_end=None):
        """Fail, once, naming every batch not acknowledged; log the run summary."""
        return record.record_delivery(
            dag_id=dag_id,
            run_id=run_id,
            interval=record.interval_or_none(data_interval_start, data_interval_end),
        )

    @task(retries=0)
    def reconcile_interval(run_id=None, data_interval_start=None, data_interval_end=None):
        """Fail loudly unless every row of the interval was acked, quarantined or superseded."""
        return importlib.import_module(tasks_module).reconcile_interval(
            dag_id=dag_id,
            run_id=run_id,
            data_interval_start=data_interval_start,
            data_interval_end=data_interval_end,
        )

    return [build_batches(), post_batches, record_delivery(), reconcile_interval()]


def deliver_window(dag_id: str, settings: Settings, window: Any, tasks_module: str) -> list[Any]:
    """CDC mode's ``build_change_batches → post_batches → record_delivery → acknowledge_changes``.

    ``window`` is the capture task's output; ``tasks_module`` has ``build_change_batches`` and
    ``acknowledge_changes`` (:mod:`services_sync.cdc.tasks`,
    :mod:`services_sync.mysql.binlog_tasks`).
    """

    @task
    def build_change_batches(window, run_id=None, data_interval_start=None, data_interval_end=None):
        """Cut the window into batches in the outbox (a resumed window is already there)."""
        return importlib.import_module(tasks_module).build_change_batches(
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
        return record.record_delivery(
            dag_id=dag_id,
            run_id=run_id,
            interval=record.interval_or_none(data_interval_start, data_interval_end),
            window_id=window["window_id"] if window else None,
        )

    @task(multiple_outputs=False)
    def acknowledge_changes(window):
        """Move the position past the delivered window (never before every batch is acked)."""
        return importlib.import_module(tasks_module).acknowledge_changes(
            window["window_id"], dag_id=dag_id
        )

    return [
        build_change_batches(window),
        post_batches,
        record_delivery(window),
        acknowledge_changes(window),
    ]
