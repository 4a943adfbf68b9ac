"""Query mode's PostgreSQL source, as the shared tasks and the DAG's SQL operators reach it.

:data:`POSTGRES_QUERY` is the :class:`~services_sync.delivery.capture.QuerySource` of
``services_requests_sync``. Its reads are :mod:`services_sync.query.source`, imported only when
a task asks for them: it pulls in psycopg, which parsing the DAG file does not need.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services_sync.core.config import Settings, source_hook_params
from services_sync.delivery.capture import LateRowsFound, RunBatches, SourceReads


@dataclass(frozen=True)
class PostgresQuery:
    """``service_requests`` on PostgreSQL (``SERVICES_SYNC_SOURCE_CONN_ID``).

    A ``timestamp without time zone`` column is read in ``SERVICES_SYNC_NAIVE_TIMEZONE``: the
    SQL operators' sessions and the tasks' connections are both set to it.
    """

    def conn_id(self, settings: Settings) -> str:
        """``SERVICES_SYNC_SOURCE_CONN_ID``."""
        return settings.source_conn_id

    def hook_params(self, settings: Settings) -> dict[str, str]:
        """Sessions in ``SERVICES_SYNC_NAIVE_TIMEZONE``."""
        return source_hook_params(settings)

    def sql(self, name: str) -> str:
        """``include/sql/services_sync/<name>``."""
        return f"services_sync/{name}"

    def sql_time(self, value: datetime | None) -> Any:
        """The bound as it is: rendered with its UTC offset, which PostgreSQL keeps."""
        return value

    def check_source(self, settings: Settings) -> None:
        """Connections, read access to the table, the operators' session zone."""
        from services_sync.query import run_setup

        run_setup.check_postgres_source(settings)

    def connect(self, settings: Settings) -> AbstractContextManager[Any]:
        """A connection on ``SERVICES_SYNC_SOURCE_CONN_ID``, session in the naive zone."""
        from services_sync.core.db import connect

        return connect(settings.source_conn_id)

    def reads(self) -> SourceReads:
        """:mod:`services_sync.query.source`: one REPEATABLE READ snapshot, kept for reconciling."""
        from services_sync.query import source

        return source

    def find_late_rows(self, settings: Settings, run: RunBatches) -> LateRowsFound:
        """The rows each batch's read snapshot could not see (row ``xmin``)."""
        from services_sync.query import source

        with self.connect(settings) as conn:
            return source.find_late_rows(conn, run.interval, run.batches)


#: Query mode on PostgreSQL.
POSTGRES_QUERY = PostgresQuery()
