"""How a capture mode plugs into the shared delivery: one small typed interface per kind.

Every DAG ends with the same delivery half (:mod:`services_sync.dag_factory`): build the outbox,
``post_batches`` over the lanes, ``record_delivery``, then reconcile (query mode) or acknowledge
(CDC mode). What differs between the four DAGs is only where the changes come from:

* :class:`QuerySource`, query mode: a table read by data interval. Instances:
  :data:`services_sync.query.mode.POSTGRES_QUERY`,
  :data:`services_sync.mysql.mode.MYSQL_QUERY`.
* :class:`ChangeFeed`, CDC mode: a log read into capture windows. Instances:
  :data:`services_sync.cdc.mode.POSTGRES_CDC`, :data:`services_sync.mysql.mode.MYSQL_BINLOG`.

The instances are frozen dataclasses without fields. A DAG file imports one when it is parsed,
so their methods import the database side (psycopg, the MySQL client, the binlog reader) only
when a task calls them. They are operator arguments too (``post_batches`` takes its source):
without fields they deep-copy, compare equal to their copies, and serialize (as their ``repr``)
the same on every parse, so the DAG's serialized form does not change between parses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services_sync.core.config import Settings
from services_sync.core.payload import BatchBounds, Interval

#: How many rows an interval holds that its run could not have sent, and the first of them as
#: ``(batch_index of the batch whose range holds it, row)``.
LateRowsFound = tuple[int, list[tuple[int | None, tuple]]]


@dataclass(frozen=True)
class RunBatches:
    """A query-mode run's interval and the batches of it that its reconciliation judges."""

    dag_id: str
    run_id: str
    interval: Interval
    #: The run's current ledger rows (keyset bounds, read snapshot, counts).
    batches: list[dict[str, Any]]


class SourceReads(Protocol):
    """The reads a query-mode source module provides.

    :mod:`services_sync.query.source` and :mod:`services_sync.mysql.source` are such modules.
    """

    def read_planned_batches(
        self, conn: Any, interval: Interval, plan: Sequence[BatchBounds]
    ) -> Iterator[tuple[BatchBounds, list[tuple], str | None]]:
        """Each planned batch's rows, all in one snapshot: ``(batch, rows, read snapshot)``."""
        ...

    def current_versions(self, conn: Any, start: datetime, end: datetime) -> list[tuple]:
        """``(service_id, request_id, last_modified_date)`` of the rows now in ``[start, end)``."""
        ...

    def newer_versions(self, conn: Any, records: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
        """``(service_id, request_id)`` of the contract records whose row has a newer version."""
        ...


class QuerySource(Protocol):
    """A ``service_requests`` table that query mode reads by data interval.

    The DAG's SQL operators (the late-commit gate, ``plan_batches``) run its dialect's SQL files
    through :meth:`conn_id`, :meth:`hook_params`, :meth:`sql` and the ``source_time`` macro
    (:meth:`sql_time`). The tasks (``check_run_setup``, ``build_batches``, the lanes when they
    leave out superseded records, ``reconcile_interval``) go through the other methods.
    """

    def conn_id(self, settings: Settings) -> str:
        """The Airflow connection of the source."""
        ...

    def hook_params(self, settings: Settings) -> dict[str, str]:
        """``hook_params`` of the SQL operators: the session settings the reads assume."""
        ...

    def sql(self, name: str) -> str:
        """Template path (below ``include/sql``) of one of its dialect's SQL files."""
        ...

    def sql_time(self, value: datetime | None) -> Any:
        """An interval bound as its SQL compares it (the ``source_time`` macro)."""
        ...

    def check_source(self, settings: Settings) -> None:
        """Fail, naming the fix, on a connection, table, grant or session it cannot use."""
        ...

    def connect(self, settings: Settings) -> AbstractContextManager[Any]:
        """A DB-API connection to the source, in the session the reads assume; closed after."""
        ...

    def reads(self) -> SourceReads:
        """Its reads on such a connection (the module is imported when this is called)."""
        ...

    def find_late_rows(self, settings: Settings, run: RunBatches) -> LateRowsFound:
        """The rows now in the run's interval that its reads could not have sent."""
        ...


class ChangeTasks(Protocol):
    """The delivery tasks a CDC mode's module provides.

    :mod:`services_sync.cdc.tasks` and :mod:`services_sync.mysql.binlog_tasks` are such modules.
    """

    def build_change_batches(
        self, *, dag_id: str, run_id: str, window_id: int, interval: Interval | None
    ) -> dict[str, Any]:
        """Cut the window's staged changes into batches in the outbox; return counts."""
        ...

    def acknowledge_changes(self, window_id: int | None, *, dag_id: str) -> dict[str, Any]:
        """Move the saved position past the window, once every batch of it was acknowledged."""
        ...


class ChangeFeed(Protocol):
    """A change log that CDC mode reads into capture windows (logical decoding, binlog)."""

    def tasks(self) -> ChangeTasks:
        """Its tasks (the module is imported when this is called)."""
        ...
