"""PostgreSQL connections through Airflow Connections (never credentials in code or logs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql as pgsql

from services_sync.core.config import load_settings
from services_sync.core.sql import load_sql


@contextmanager
def finishing(conn: Any) -> Iterator[Any]:
    """A DB-API connection committed on success, rolled back on error, closed after."""
    try:
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


@contextmanager
def connect(conn_id: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A psycopg 3 connection for an Airflow Connection id; committed on success, closed after.

    The session runs in ``SERVICES_SYNC_NAIVE_TIMEZONE`` (default UTC), like the SQL operators'
    sessions (:func:`services_sync.core.config.source_hook_params`): a ``timestamp without time
    zone``
    column is compared with the interval bounds, and so selected, in that one zone, the zone
    the transform formats it in. ``autocommit``: every statement commits on its own
    (replication-slot functions refuse a transaction that has written).
    """
    # Imported here: the provider is heavy and DAG parsing must not pay for it.
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    zone = load_settings().naive_timezone.key
    with finishing(PostgresHook(postgres_conn_id=conn_id).get_conn()) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
        if autocommit:
            conn.commit()
            conn.autocommit = True
        yield conn


def state_sql(name: str, schema: str) -> pgsql.Composed:
    """A state statement from ``include/sql/services_sync/state`` with its schema composed in."""
    return pgsql.SQL(load_sql(f"state/{name}")).format(schema=pgsql.Identifier(schema))
