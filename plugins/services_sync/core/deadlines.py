"""The stuck-run alert's deadline reference: when a run was queued.

This is what ``DeadlineReference.DAGRUN_QUEUED_AT`` is, as a custom reference, because of an
upstream bug (Airflow 3.3.x, apache/airflow#70368): clearing a run that still has a built-in
``DAGRUN_QUEUED_AT`` deadline (any run not finished, or failed, less than the deadline ago)
crashes, in the UI (HTTP 500) and in ``airflow tasks clear`` alike
(``TypeError: unsupported type for timedelta seconds component: dict`` in
``_recalculate_dagrun_queued_at_deadlines``, which reads the interval column without decoding
it). That function only touches the built-in reference, so with this one clearing works; the
cleared run keeps its first deadline (it is not moved to the new queue time).

Airflow finds the class in the scheduler through the plugin that lists it
(``plugins/services_sync_status.py``, ``deadline_references``), by its import path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from airflow.sdk import BaseDeadlineReference, DeadlineReference, deadline_reference


@deadline_reference(DeadlineReference.TYPES.DAGRUN_QUEUED)
@dataclass
class RunQueuedAt(BaseDeadlineReference):
    """A deadline measured from when the DAG run was queued."""

    required_kwargs: ClassVar[set[str]] = {"dag_id", "run_id"}

    def _evaluate_with(
        self, *, session: Any, dag_id: str, run_id: str, **_: Any
    ) -> datetime | None:
        # Runs in the scheduler, which creates the run's deadlines (core imports deferred).
        from airflow.models.dagrun import DagRun
        from sqlalchemy import select

        return session.scalar(
            select(DagRun.queued_at).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        )
