"""The MySQL / MariaDB capture modes, as the shared tasks and the DAGs' SQL operators reach them.

* :data:`MYSQL_QUERY`, the :class:`~services_sync.delivery.capture.QuerySource` of
  ``services_requests_mysql_sync``: reads in :mod:`services_sync.mysql.source`, setup checks
  and the reconciliation's late rows in :mod:`services_sync.mysql.tasks`.
* :data:`MYSQL_BINLOG`, the :class:`~services_sync.delivery.capture.ChangeFeed` of
  ``services_requests_mysql_cdc``: :mod:`services_sync.mysql.binlog_tasks`.

Parsing a DAG file imports no database driver: :mod:`~services_sync.mysql.source` imports the
MySQL client inside its functions; ``tasks`` (the query-mode tasks with it) and
``binlog_tasks`` (psycopg, the binlog reader) are imported only when a task asks for them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services_sync.core.config import Settings, mysql_hook_params
from services_sync.delivery.capture import ChangeTasks, LateRowsFound, RunBatches, SourceReads
from services_sync.mysql import source


@dataclass(frozen=True)
class MySqlQuery:
    """``service_requests`` on MySQL / MariaDB (``SERVICES_SYNC_MYSQL_SOURCE_CONN_ID``).

    Every session runs in UTC, and the interval bounds are bound as UTC wall times (see
    :mod:`services_sync.mysql.source`, *Time zone rule*).
    """

    def conn_id(self, settings: Settings) -> str:
        """``SERVICES_SYNC_MYSQL_SOURCE_CONN_ID``."""
        return settings.mysql_source_conn_id

    def hook_params(self, settings: Settings) -> dict[str, str]:
        """Sessions in UTC."""
        return mysql_hook_params()

    def sql(self, name: str) -> str:
        """``include/sql/services_sync/mysql/<name>``."""
        return f"services_sync/mysql/{name}"

    def sql_time(self, value: datetime | None) -> Any:
        """The bound as the UTC wall time MySQL compares (``''`` for none)."""
        return source.utc_text(value) if value is not None else ""

    def check_source(self, settings: Settings) -> None:
        """Connections and client, the table and its grants, the time-zone rule, the gate."""
        from services_sync.mysql import tasks

        tasks.check_mysql_source(settings)

    def connect(self, settings: Settings) -> AbstractContextManager[Any]:
        """A connection on ``SERVICES_SYNC_MYSQL_SOURCE_CONN_ID``, session in UTC."""
        return source.connect(settings.mysql_source_conn_id)

    def reads(self) -> SourceReads:
        """:mod:`services_sync.mysql.source`: one consistent snapshot, none to keep."""
        return source

    def find_late_rows(self, settings: Settings, run: RunBatches) -> LateRowsFound:
        """Each batch's key range read again and compared with the body it sent."""
        from services_sync.mysql import tasks

        return tasks.find_late_rows(settings, run)


@dataclass(frozen=True)
class MySqlBinlog:
    """The binary log of the MySQL / MariaDB source, read as a replica reads it."""

    def tasks(self) -> ChangeTasks:
        """:mod:`services_sync.mysql.binlog_tasks`: the binlog reader, not needed to parse a DAG."""
        from services_sync.mysql import binlog_tasks

        return binlog_tasks


#: Query mode on MySQL / MariaDB.
MYSQL_QUERY = MySqlQuery()

#: Binlog CDC on MySQL / MariaDB.
MYSQL_BINLOG = MySqlBinlog()
