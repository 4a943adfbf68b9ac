"""CDC mode on PostgreSQL (logical decoding), as the shared delivery half reaches it.

:data:`POSTGRES_CDC` is the :class:`~services_sync.delivery.capture.ChangeFeed` of
``services_requests_cdc``.
"""

from __future__ import annotations

from dataclasses import dataclass

from services_sync.delivery.capture import ChangeTasks


@dataclass(frozen=True)
class PostgresLogicalDecoding:
    """The PostgreSQL write-ahead log, read through a logical replication slot (``pgoutput``)."""

    def tasks(self) -> ChangeTasks:
        """:mod:`services_sync.cdc.tasks`: psycopg and the decoder, not needed to parse a DAG."""
        from services_sync.cdc import tasks

        return tasks


#: CDC mode on PostgreSQL.
POSTGRES_CDC = PostgresLogicalDecoding()
