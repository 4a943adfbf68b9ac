"""CDC mode's checks of the source: setup (server, publication, slot) and slot health.

The first two tasks of the CDC DAG (``services_requests_cdc``): :func:`check_cdc_setup` fails
fast naming the fix and creates what is missing when allowed; :func:`check_slot_health` alerts
before a lagging slot fills the source's disk. :func:`ensure_cdc_objects` is also
``make cdc-setup`` (:mod:`services_sync.cdc.setup`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from airflow.sdk.exceptions import AirflowFailException
from psycopg.rows import dict_row

from services_sync.cdc import source as cdc_source
from services_sync.core import alerts, state
from services_sync.core.alerts import Alert
from services_sync.core.checks import check_connections, first_line
from services_sync.core.config import Settings, load_settings
from services_sync.core.db import connect
from services_sync.core.sql import load_sql

log = logging.getLogger(__name__)


def check_cdc_setup(dag_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """First task: connections, server settings, publication, slot and state tables.

    Creates the publication and the slot when missing (idempotent; off with
    ``SERVICES_SYNC_CDC_CREATE_SLOT=off``, then ``make cdc-setup`` does it). Fails, naming the
    fix, when the server cannot do logical decoding or the delete policy needs a replica
    identity the table lacks.
    """
    settings = settings or load_settings()
    check_connections(settings)
    try:
        # Autocommit: creating a slot must not run in a transaction that wrote.
        with connect(settings.source_conn_id, autocommit=True) as conn:
            report = ensure_cdc_objects(conn, settings)
    except ValueError as exc:
        raise AirflowFailException(f"{dag_id} cannot capture changes: {exc}") from None
    with connect(settings.state_conn_id) as conn:
        state.ensure_state_tables(conn, settings.state_schema, cdc=True)
    log.info(
        "CDC set up: publication %s (%s), slot %s (%s), wal_level=%s",
        settings.cdc_publication,
        "created" if report["publication_created"] else "exists",
        settings.cdc_slot,
        "created" if report["slot_created"] else "exists",
        report["wal_level"],
    )
    return report


def ensure_cdc_objects(conn: psycopg.Connection, settings: Settings) -> dict[str, Any]:
    """Check the server and create the publication and slot if allowed (``make cdc-setup``).

    Raises:
        ValueError: with the fix, when something CDC needs is missing.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(load_sql("cdc/server_settings.sql"))
        server = cur.fetchone()
        cur.execute(load_sql("cdc/replica_identity.sql"))
        identity = cur.fetchone()
    assert server is not None
    if server["wal_level"] != "logical":
        raise ValueError(
            f"the source server runs with wal_level={server['wal_level']}; logical decoding "
            "needs wal_level=logical: ALTER SYSTEM SET wal_level = logical; then restart "
            "PostgreSQL (on a managed service, set the parameter, e.g. "
            "rds.logical_replication=1 / cloudsql.logical_decoding=on)"
        )
    if identity is None:
        raise ValueError(
            "table service_requests is not visible to the source connection "
            "(check the database, or the search_path in the connection extra)"
        )
    if settings.cdc_deletes == "status" and identity["replica_identity"] != "f":
        raise ValueError(
            "SERVICES_SYNC_CDC_DELETES=status sends a deleted request with its opening_date, "
            "which the log only carries under REPLICA IDENTITY FULL: run ALTER TABLE "
            "service_requests REPLICA IDENTITY FULL, or set SERVICES_SYNC_CDC_DELETES=skip"
        )
    if not settings.cdc_create_slot:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(load_sql("cdc/find_slot.sql"), {"slot_name": settings.cdc_slot})
            slot = cur.fetchone()
            cur.execute(
                load_sql("cdc/find_publication.sql"), {"publication": settings.cdc_publication}
            )
            publication = cur.fetchone()
        if slot is None or publication is None:
            raise ValueError(
                f"publication {settings.cdc_publication!r} or slot {settings.cdc_slot!r} does "
                "not exist and SERVICES_SYNC_CDC_CREATE_SLOT=off: run `make cdc-setup` (or "
                "`python -m services_sync.cdc.setup`) with the source connection"
            )
        publication_created = slot_created = False
    else:
        # Publication first: pgoutput looks publications up as of each change, and a change
        # older than the publication would fail every peek.
        try:
            publication_created = cdc_source.create_publication(conn, settings.cdc_publication)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ValueError(
                f"the role may not create publication {settings.cdc_publication!r} "
                f"({first_line(exc)}): only the table's owner can. Have the owner run "
                f"CREATE PUBLICATION {settings.cdc_publication} FOR TABLE service_requests; "
                "(or `make cdc-setup` with the owner's connection)"
            ) from None
        slot_created = cdc_source.create_slot(conn, settings.cdc_slot)
    if server["max_slot_wal_keep_size"] in ("-1", "-1MB"):
        log.warning(
            "max_slot_wal_keep_size is unset (-1): if this pipeline stops acknowledging, the "
            "slot keeps WAL until the source's disk is full. Set it (e.g. ALTER SYSTEM SET "
            "max_slot_wal_keep_size = '50GB') so PostgreSQL drops the slot instead"
        )
    return {
        "wal_level": server["wal_level"],
        "max_slot_wal_keep_size": server["max_slot_wal_keep_size"],
        "replica_identity": identity["replica_identity"],
        "publication_created": publication_created,
        "slot_created": slot_created,
    }


def check_slot_health(dag_id: str, run_id: str, settings: Settings | None = None) -> dict:
    """Measure the slot, alert when it retains too much WAL, write a heartbeat.

    Fails (no use capturing) when the slot is lost: PostgreSQL removed WAL it still needed.
    """
    settings = settings or load_settings()
    with connect(settings.source_conn_id, autocommit=True) as conn:
        try:
            cdc_source.emit_heartbeat(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning("No heartbeat (%s): an idle table can keep WAL longer", first_line(exc))
        try:
            health = cdc_source.slot_health(conn, settings.cdc_slot)
        except ValueError:
            raise AirflowFailException(
                f"replication slot {settings.cdc_slot!r} does not exist: it was dropped after "
                "check_cdc_setup ran. Clear the run to recreate it, then trigger a run with "
                "initial_snapshot=true to resend the current state"
            ) from None
    retained = int(health["retained_wal_bytes"] or 0)
    summary = {
        "slot": settings.cdc_slot,
        "retained_wal_bytes": retained,
        "pending_wal_bytes": int(health["pending_wal_bytes"] or 0),
        "wal_status": health["wal_status"],
        "safe_wal_size": health["safe_wal_size"],
        "max_slot_wal_keep_size": health["max_slot_wal_keep_size"],
    }
    log.info("Slot health: %s", json.dumps(summary))
    if health["wal_status"] == "lost":
        raise AirflowFailException(
            f"replication slot {settings.cdc_slot!r} is lost: PostgreSQL removed WAL it still "
            "needed (max_slot_wal_keep_size exceeded), so some changes cannot be captured. "
            f"Drop it (SELECT pg_drop_replication_slot('{settings.cdc_slot}')), clear this run "
            "to recreate it, and trigger a run with initial_snapshot=true"
        )
    reasons = []
    if retained > settings.cdc_max_retained_wal_bytes:
        reasons.append(
            f"retains {retained / 2**20:.1f} MiB of WAL (threshold "
            f"{settings.cdc_max_retained_wal_bytes / 2**20:.1f} MiB, "
            "SERVICES_SYNC_CDC_MAX_RETAINED_WAL_MB)"
        )
    if health["wal_status"] == "unreserved":
        reasons.append("wal_status is unreserved: the slot will be lost at the next checkpoint")
    if reasons:
        log.warning("Slot %s %s", settings.cdc_slot, "; ".join(reasons))
        alerts.send_alert(slot_lag_alert(dag_id, run_id, summary, reasons), settings)
    summary["alerted"] = bool(reasons)
    return summary


def slot_lag_alert(
    dag_id: str, run_id: str, summary: Mapping[str, Any], reasons: Sequence[str]
) -> Alert:
    """The alert for a slot that keeps too much WAL on the source (its disk is at risk)."""
    return Alert(
        title=f"[services-sync] replication slot {summary['slot']} is lagging",
        facts=[
            ("DAG", dag_id),
            ("Run", run_id),
            ("Problem", "; ".join(reasons)),
            ("Retained WAL", f"{summary['retained_wal_bytes'] / 2**20:.1f} MiB"),
            ("wal_status", str(summary["wal_status"])),
            ("safe_wal_size", str(summary["safe_wal_size"])),
            (
                "What to do",
                "find why runs fail or stop (paused DAG, receiver down); if the pipeline is "
                "retired, drop the slot",
            ),
        ],
    )
