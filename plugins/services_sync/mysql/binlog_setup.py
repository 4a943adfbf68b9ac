"""Binlog CDC's checks of the source: settings, server and grants, where reading starts, retention.

The first two tasks of the binlog CDC DAG (``services_requests_mysql_cdc``):
:func:`check_binlog_setup` fails naming every fix and records where reading starts the first
time; :func:`check_binlog_retention` fails when the binary log the next read needs was purged,
and alerts when it is close. The server reads here (:func:`server_facts`,
:func:`master_position`, :func:`gtid_position`) also serve the capture
(:mod:`services_sync.mysql.binlog_tasks`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from psycopg.rows import dict_row

from services_sync.core import alerts
from services_sync.core.alerts import Alert
from services_sync.core.config import Settings, load_settings, mysql_settings
from services_sync.core.db import connect, state_sql
from services_sync.mysql.binlog import BinlogPosition, binary_logs

log = logging.getLogger(__name__)

_REPLICATION_SLAVE = ("REPLICATION SLAVE", "REPLICATION REPLICA", "ALL PRIVILEGES ON *.*")
_REPLICATION_CLIENT = ("REPLICATION CLIENT", "BINLOG MONITOR", "ALL PRIVILEGES ON *.*")


def binlog_settings(settings: Settings | None = None) -> Settings:
    """The settings as the binlog CDC tasks see them.

    ``source_conn_id`` is the MySQL source, and ``cdc_slot`` names this source's windows in
    CDC mode's tables (``binlog:<connection id>``: a colon no PostgreSQL slot name can hold).
    """
    settings = mysql_settings(settings or load_settings())
    return replace(settings, cdc_slot=f"binlog:{settings.mysql_source_conn_id}")


def resnapshot_command(dag_id: str) -> str:
    """The command that reloads the table and restarts reading at the binlog's end."""
    return f"airflow dags trigger {dag_id} --conf '{{\"initial_snapshot\": true}}'"


# -- setup ---------------------------------------------------------------------------------


def server_problems(
    server: Mapping[str, Any], row_metadata: str | None, grants: list[str], reader_id: int
) -> list[str]:
    """What keeps the server from feeding binlog CDC, each with its fix (pure)."""
    problems = []
    if str(server["log_bin"]) not in {"1", "ON"}:
        problems.append(
            "the binary log is off: start the server with log_bin (e.g. log-bin=binlog in "
            "[mysqld]) and restart it"
        )
    if str(server["binlog_format"]).upper() != "ROW":
        problems.append(
            f"binlog_format={server['binlog_format']}: row events need ROW: SET GLOBAL "
            "binlog_format = 'ROW'; and binlog_format=ROW in the server's configuration"
        )
    if str(server["binlog_row_image"]).upper() != "FULL":
        problems.append(
            f"binlog_row_image={server['binlog_row_image']}: deletes and updates must carry the "
            "whole row: SET GLOBAL binlog_row_image = 'FULL'; and in the configuration"
        )
    if row_metadata is None or str(row_metadata).upper() != "FULL":
        problems.append(
            f"binlog_row_metadata={row_metadata}: the row events must name their columns: SET "
            "GLOBAL binlog_row_metadata = 'FULL'; and in the configuration (MariaDB 10.5+, "
            "MySQL 8.0.1+)"
        )
    server_id = int(server["server_id"] or 0)
    if server_id == 0:
        problems.append(
            "server_id=0: a server without a server_id refuses replicas; set server_id=1 (any "
            "number unique in the topology) in the configuration and restart"
        )
    elif server_id == reader_id:
        problems.append(
            f"the server's server_id ({server_id}) equals the reader's "
            f"(SERVICES_SYNC_MYSQL_CDC_SERVER_ID={reader_id}): give the reader another number, "
            "unique among the server's replicas"
        )
    text = " ".join(grants).upper()
    for names, what in (
        (_REPLICATION_SLAVE, "REPLICATION SLAVE"),
        (_REPLICATION_CLIENT, "REPLICATION CLIENT"),
    ):
        if not any(name in text for name in names):
            problems.append(
                f"the user lacks {what} (reading the binlog needs REPLICATION SLAVE, listing "
                f"it REPLICATION CLIENT): GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO "
                "'<user>'@'<host>';"
            )
    return problems


def server_facts(conn: Any) -> tuple[dict[str, Any], str | None, list[str]]:
    """The server's binlog settings, its ``binlog_row_metadata`` (None when it has none), grants."""
    from services_sync.mysql import source as mysql_source

    names = ("log_bin", "binlog_format", "binlog_row_image", "server_id", "version", "basename")
    server = dict(zip(names, mysql_source.query(conn, "cdc/server_settings.sql")[0], strict=True))
    try:
        row_metadata = mysql_source.query(conn, "cdc/binlog_row_metadata.sql")[0][0]
    except Exception:  # an older server: no such variable
        row_metadata = None
    grants = [str(row[0]) for row in mysql_source.query(conn, "cdc/grants.sql")]
    return server, row_metadata, grants


def check_binlog_setup(dag_id: str, run_id: str, settings: Settings | None = None) -> dict:
    """First task: connections, the table, the server's binlog settings and grants, state.

    Fails (no retries) naming every fix at once. Records where reading starts the first time
    (the binlog's end now, like creating a replication slot): changes from before it are only
    sent by an initial snapshot.
    """
    from services_sync.core.checks import ensure_state
    from services_sync.mysql import source as mysql_source
    from services_sync.mysql import tasks as mysql_tasks

    settings = binlog_settings(settings)
    mysql_tasks.check_mysql_connections(settings)
    mysql_tasks.check_source(settings)
    with mysql_source.connect(settings.mysql_source_conn_id) as conn:
        server, row_metadata, grants = server_facts(conn)
        problems = server_problems(server, row_metadata, grants, settings.mysql_cdc_server_id)
        if problems:
            raise AirflowFailException(
                f"{dag_id} cannot read the binary log:\n- " + "\n- ".join(problems)
            )
        position = master_position(conn)
        gtid = gtid_position(conn, position, server)
    ensure_state(settings, cdc=True)
    with connect(settings.state_conn_id) as conn, conn.cursor() as cur:
        cur.execute(state_sql("create_binlog_tables.sql", settings.state_schema))
        cur.execute(
            state_sql("binlog_start_position.sql", settings.state_schema),
            {
                "slot_name": settings.cdc_slot,
                "upto_lsn": position.lsn,
                "gtid": gtid,
                "run_id": run_id,
            },
        )
        started = cur.fetchone() is not None
    if started:
        log.info("Binlog CDC starts at %s (GTID %s): nothing before it is sent", position, gtid)
    log.info(
        "Binlog CDC set up on %s (server_id %s, binlog %s, row image FULL)",
        server["version"],
        server["server_id"],
        position,
    )
    return {"version": server["version"], "binlog_end": str(position), "started": started}


def master_position(conn: Any) -> BinlogPosition:
    """The binary log's end now (``SHOW MASTER STATUS``): always a transaction boundary."""
    from services_sync.mysql import source as mysql_source

    rows = mysql_source.query(conn, "cdc/master_status.sql")
    if not rows:
        raise AirflowFailException("SHOW MASTER STATUS returned nothing: the binary log is off")
    return BinlogPosition.parse(str(rows[0][0]), int(rows[0][1]))


def log_basename(server: Mapping[str, Any]) -> str:
    """The binary logs' file name without directory or number (``binlog``)."""
    return str(server["basename"]).rsplit("/", 1)[-1]


def _is_mariadb(server: Mapping[str, Any]) -> bool:
    return "mariadb" in str(server["version"]).lower()


def gtid_position(conn: Any, position: BinlogPosition, server: Mapping[str, Any]) -> str | None:
    """The GTID position of a binlog position (MariaDB's BINLOG_GTID_POS), or None."""
    from services_sync.mysql import source as mysql_source

    if not _is_mariadb(server):
        return None
    rows = mysql_source.query(
        conn, "cdc/gtid_position.sql", {"file": position.file, "offset": position.offset}
    )
    value = rows[0][0] if rows else None
    return str(value) if value not in (None, "") else None


# -- retention guard -----------------------------------------------------------------------


def retention_verdict(
    needed: BinlogPosition, kept: list[str], warn_files: int
) -> tuple[str, str | None]:
    """``("purged" | "close" | "ok", detail)`` for the position the next read starts at (pure).

    Purged: its file is no longer on the server. Close: the file is among the ``warn_files``
    oldest the server keeps and the server has moved on to a newer file (the current file is
    never purged), so the next ``PURGE`` or expiry takes it.
    """
    numbers = [BinlogPosition.parse(name, 4).number for name in kept]
    if not numbers or needed.number not in numbers:
        oldest = kept[0] if kept else "none"
        return "purged", f"the server's oldest binary log is {oldest}"
    index = numbers.index(needed.number)
    if needed.number != numbers[-1] and index < warn_files:
        return "close", (
            f"{needed.file} is the server's {'oldest' if index == 0 else f'#{index + 1} oldest'} "
            f"binary log (of {len(numbers)} kept); the next purge or expiry removes it"
        )
    return "ok", None


def check_binlog_retention(
    dag_id: str, run_id: str, params: Mapping[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """Fail at once when the log the next read needs was purged; warn and alert when close.

    The position needed is the saved one (the newest acknowledged window's end), or the end of
    an unfinished window already staged (its changes are in the state database). A run with
    ``initial_snapshot`` reloads the table and reads on from the snapshot's position, so a
    purged position only warns there.
    """
    from services_sync.mysql import source as mysql_source

    settings = binlog_settings(settings)
    with connect(settings.state_conn_id) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            state_sql("binlog_saved_position.sql", settings.state_schema),
            {"slot_name": settings.cdc_slot},
        )
        saved = cur.fetchone()
    with mysql_source.connect(settings.mysql_source_conn_id) as conn:
        kept = binary_logs(mysql_source.query(conn, "cdc/binary_logs.sql"))
    base = BinlogPosition.parse(kept[-1], 4).base if kept else "binlog"
    lsn = saved["open_upto_lsn"] if saved["open_status"] == "captured" else saved["saved_lsn"]
    needed = BinlogPosition.from_lsn(lsn, base)
    verdict, detail = retention_verdict(needed, kept, settings.mysql_binlog_warn_files)
    summary = {
        "needed": str(needed),
        "saved_gtid": saved["saved_gtid"],
        "oldest_kept": kept[0] if kept else None,
        "newest_kept": kept[-1] if kept else None,
        "verdict": verdict,
    }
    log.info("Binlog retention: %s", summary)
    if verdict == "purged":
        message = (
            f"The binary log at the saved position {needed} (GTID {saved['saved_gtid']}) was "
            f"purged from the server ({detail}): the changes since cannot be read, and sending "
            "on would skip them. Reload the table and restart reading at the binlog's end: "
            f"{resnapshot_command(dag_id)} (then keep binary logs longer than the longest "
            "pause of this DAG: binlog_expire_logs_seconds / expire_logs_days)"
        )
        if params.get("initial_snapshot"):
            log.warning("%s. This run takes an initial snapshot, which does exactly that", message)
            return summary
        raise AirflowFailException(message)
    if verdict == "close":
        reason = (
            f"the saved position {needed} is close to being purged: {detail}. Find why runs "
            "do not acknowledge (paused DAG, receiver down), or keep binary logs longer"
        )
        log.warning("Binlog retention: %s", reason)
        alerts.send_alert(
            Alert(
                title=f"[services-sync] {dag_id}: binary log close to its saved position",
                facts=[
                    ("DAG", dag_id),
                    ("Run", run_id),
                    ("Problem", reason),
                    ("If it is purged", resnapshot_command(dag_id)),
                ],
            ),
            settings,
        )
    return summary
