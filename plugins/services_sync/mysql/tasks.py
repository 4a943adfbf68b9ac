"""What the MySQL / MariaDB query-mode DAG's tasks do that PostgreSQL's do not.

Only the source side differs: the setup checks (client, grants, time-zone rule, the gate's
``PROCESS`` privilege), the gate's failure message and the reconciliation's search for
unexplained rows. Everything else (plan, transform, quarantine, outbox, lanes, ledger, record,
reconciliation) is query mode's own code in :mod:`services_sync.query.tasks`, which reaches
these through :data:`services_sync.mysql.mode.MYSQL_QUERY`.

The state (plans, ledger, outbox, quarantine) lives in PostgreSQL, ``SERVICES_SYNC_STATE_CONN_ID``
(see README, *MySQL / MariaDB → Where the state lives*).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from services_sync.core.checks import HTTP_EXAMPLE, PG_EXAMPLE, connection_problems
from services_sync.core.config import Settings
from services_sync.delivery.capture import LateRowsFound, RunBatches
from services_sync.query import tasks as query_tasks

log = logging.getLogger(__name__)

#: How to end a transaction that holds the gate, on MySQL / MariaDB.
MYSQL_END_COMMAND = "KILL <thread id>; / XA ROLLBACK '<xid>';"

_MYSQL_EXAMPLE = (
    '{"conn_type": "mysql", "host": "<host>", "port": 3306, "login": "<user>", '
    '"password": "<password>", "schema": "<database>", '
    '"extra": {"client": "mysql-connector-python"}}'
)

#: MySQL error numbers the setup check turns into a fix.
_NO_TABLE, _NO_COLUMN, _TABLE_DENIED, _NEEDS_PRIVILEGE = 1146, 1054, 1142, 1227
_DATABASE_DENIED = 1044


def check_mysql_connections(settings: Settings) -> None:
    """Fail (no retries), naming each fix: the MySQL source, the receiver, the PostgreSQL state."""
    problems = [
        *connection_problems(settings.mysql_source_conn_id, "mysql", _MYSQL_EXAMPLE),
        *connection_problems(settings.api_conn_id, "http", HTTP_EXAMPLE),
        *connection_problems(settings.state_conn_id, "postgres", PG_EXAMPLE),
    ]
    if not problems:
        problems += _client_problems(settings.mysql_source_conn_id)
    if problems:
        raise AirflowFailException(
            "Misconfigured connections (a MySQL source keeps its state in PostgreSQL: "
            "SERVICES_SYNC_STATE_CONN_ID):\n- " + "\n- ".join(problems)
        )


def _client_problems(conn_id: str) -> list[str]:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if not conn.schema:
        # The database the reads and the binlog reader's filter use: without it the reader
        # would take service_requests of every database on the server.
        return [f"connection '{conn_id}' names no database: set its schema to the database"]
    client = conn.extra_dejson.get("client", "mysqlclient")
    if client == "mysql-connector-python":
        return []
    try:
        __import__("MySQLdb")
    except ImportError:
        return [
            f"connection '{conn_id}' uses the client {client!r}, which is not installed: add "
            '"client": "mysql-connector-python" to its extra (installed with this package)'
        ]
    return []


def mysql_error(exc: BaseException) -> int | None:
    """The MySQL error number of a driver exception (``errno``), if it has one."""
    number = getattr(exc, "errno", None)
    return number if isinstance(number, int) else None


def check_source(settings: Settings) -> None:
    """Fail, naming the fix, unless the MySQL table is readable and follows the time-zone rule.

    DATETIME and TIMESTAMP columns are both read in a UTC session; a DATETIME must therefore
    hold UTC, and ``SERVICES_SYNC_NAIVE_TIMEZONE`` must be UTC (a local DATETIME cannot tell the
    two 02:30s of a DST change apart). A missing index on ``last_modified_date`` is a warning.
    """
    from services_sync.mysql import source as mysql_source

    source = settings.mysql_source_conn_id
    if settings.naive_timezone.key not in {"UTC", "Etc/UTC"}:
        raise AirflowFailException(
            f"SERVICES_SYNC_NAIVE_TIMEZONE={settings.naive_timezone.key}, but a MySQL source is "
            "read in UTC: every session sets time_zone '+00:00', TIMESTAMP columns are read in "
            "UTC and DATETIME columns must hold UTC (write them with UTC_TIMESTAMP(6)). Unset "
            "SERVICES_SYNC_NAIVE_TIMEZONE for the MySQL DAGs, or store UTC."
        )
    try:
        with mysql_source.connect(source) as conn:
            columns = mysql_source.check_source_access(conn)
    except Exception as exc:
        number = mysql_error(exc)
        if number in {_NO_TABLE, _NO_COLUMN}:
            raise AirflowFailException(
                f"The source connection '{source}' does not see the table service_requests with "
                f"the expected columns ({exc}). Point the connection's schema (database) at the "
                "right database."
            ) from None
        if number in {_TABLE_DENIED, _DATABASE_DENIED}:
            raise AirflowFailException(
                f"The user of connection '{source}' may not read service_requests ({exc}). Run: "
                "GRANT SELECT ON <database>.service_requests TO '<user>'@'<host>';"
            ) from None
        raise
    types = {name: kind for name, kind, _ in columns}
    if types.get("last_modified_date") not in {"datetime", "timestamp"}:
        raise AirflowFailException(
            f"service_requests.last_modified_date is {types.get('last_modified_date')!r}: the "
            "hourly range needs DATETIME(6) (holding UTC) or TIMESTAMP(6)"
        )
    if not any(indexed for _, _, indexed in columns):
        log.warning(
            "service_requests has no index starting with last_modified_date: every hourly read "
            "scans the table. CREATE INDEX service_requests_last_modified_idx ON "
            "service_requests (last_modified_date);"
        )


def check_gate_privilege(settings: Settings) -> None:
    """Fail, naming the GRANT, if the late-commit gate cannot read ``INNODB_TRX``."""
    from services_sync.mysql import source as mysql_source

    if not settings.commit_gate:
        return
    try:
        with mysql_source.connect(settings.mysql_source_conn_id) as conn:
            mysql_source.query(
                conn,
                "check_open_transactions.sql",
                {"window_end": "2000-01-01 00:00:00", "clock_skew_s": 0, "unrelated_wait_s": 0},
            )
    except Exception as exc:
        if mysql_error(exc) == _NEEDS_PRIVILEGE:
            raise AirflowFailException(
                "The late-commit gate cannot read information_schema.INNODB_TRX with connection "
                f"'{settings.mysql_source_conn_id}' ({exc}). Run: GRANT PROCESS ON *.* TO "
                "'<user>'@'<host>'; or set SERVICES_SYNC_COMMIT_GATE=off to accept that late "
                "commits can be missed."
            ) from None
        raise


def check_mysql_source(settings: Settings) -> None:
    """Fail, naming each fix: connections and client, the table, the time-zone rule, the gate."""
    check_mysql_connections(settings)
    check_source(settings)
    check_gate_privilege(settings)


def find_late_rows(settings: Settings, run: RunBatches, limit: int = 1000) -> LateRowsFound:
    """Rows now in the run's interval that were not sent as they are (MySQL's late rows).

    InnoDB keeps no snapshot id to compare a row version with (PostgreSQL's ``xmin``), so each
    batch's key range is read again and compared with the records the batch sent (its stored
    body): a row sent with exactly this content, or quarantined as this very version, is
    explained; any other is handed to the reconciliation, which tells a late commit from an
    update in place. Memory holds one batch. Needs the bodies: with
    ``SERVICES_SYNC_OUTBOX_RETENTION_H=0`` every row reads as unexplained.
    """
    from services_sync.core import outbox, reconcile, state
    from services_sync.core.db import connect
    from services_sync.core.payload import body_records
    from services_sync.core.transform import InvalidRow, json_safe_row, to_record
    from services_sync.mysql import source as mysql_source

    schema, interval, batches = settings.state_schema, run.interval, run.batches
    ranges = [(b["batch_index"], b["lower_bound"], b["upper_bound"]) for b in batches] or [
        (
            None,
            [mysql_source.utc_text(interval.start), "", ""],
            [mysql_source.utc_text(interval.end), "", ""],
        )
    ]
    total, found = 0, []
    with (
        mysql_source.connect(settings.mysql_source_conn_id) as src,
        connect(settings.state_conn_id) as conn,
    ):
        for index, lower, upper in ranges:
            rows = mysql_source.batch_rows(src, interval, lower, upper)
            sent = (
                reconcile.sent_records(
                    body_records(body)
                    for _, body in outbox.batch_bodies(
                        conn, schema, dag_id=run.dag_id, run_id=run.run_id, batch_indexes=[index]
                    )
                )
                if index is not None
                else {}
            )
            unsent = []
            for row in rows:
                try:
                    record = to_record(row, settings.naive_timezone)
                except InvalidRow:
                    record = None
                key = reconcile.record_key(json_safe_row(row))
                if record is None or sent.get(key) != record:
                    unsent.append(row)
            quarantined = state.quarantined_fingerprints(
                conn,
                schema,
                dag_id=run.dag_id,
                interval_start=interval.start,
                fingerprints=[reconcile.fingerprint(row) for row in unsent],
            )
            for row in unsent:
                if reconcile.fingerprint(row) in quarantined:
                    continue
                total += 1
                if len(found) < limit:
                    found.append((index, tuple(row)))
    return total, found


def commit_gate_failed(row: Sequence[Any], settings: Settings | None = None) -> bool:
    """``SqlSensor.failure`` of the MySQL gate: query mode's, naming ``KILL`` as the fix."""
    return query_tasks.commit_gate_failed(row, settings, end_command=MYSQL_END_COMMAND)
