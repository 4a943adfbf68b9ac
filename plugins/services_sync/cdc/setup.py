"""``make cdc-setup``: create the CDC publication and slot on the source, or say what is missing.

Uses the same settings and Airflow connection as the DAG (``services_source_db``, e.g. from
``AIRFLOW_CONN_SERVICES_SOURCE_DB``; ``SERVICES_SYNC_CDC_SLOT`` / ``_PUBLICATION``). Idempotent:
run it again and it reports what exists. For deployments that run the DAG with
``SERVICES_SYNC_CDC_CREATE_SLOT=off``, so that the DAG's role needs no ``CREATE`` rights.

Exit status: 0 when the source is ready for CDC, 1 with the fix when it is not.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from services_sync.cdc import source as cdc_source
from services_sync.cdc.checks import ensure_cdc_objects
from services_sync.core.config import load_settings
from services_sync.core.db import connect


def main(argv: Sequence[str] | None = None) -> int:
    """Create what CDC needs on the source; print what was done; return the exit status."""
    settings = load_settings()
    settings = dataclasses.replace(settings, cdc_create_slot=True)
    try:
        with connect(settings.source_conn_id, autocommit=True) as conn:
            report = ensure_cdc_objects(conn, settings)
            health = cdc_source.slot_health(conn, settings.cdc_slot)
    except ValueError as exc:
        print(f"CDC setup failed: {exc}", file=sys.stderr)
        return 1
    done = {True: "created", False: "already there"}
    print(f"wal_level               {report['wal_level']}")
    print(f"replica identity        {_IDENTITY.get(report['replica_identity'], '?')}")
    print(
        f"publication             {settings.cdc_publication}: {done[report['publication_created']]}"
    )
    print(f"slot                    {settings.cdc_slot}: {done[report['slot_created']]}")
    print(f"slot position           {health['confirmed_flush_lsn']}")
    print(f"max_slot_wal_keep_size  {report['max_slot_wal_keep_size']}")
    if report["max_slot_wal_keep_size"] in ("-1", "-1MB"):
        print(
            "warning: max_slot_wal_keep_size is unlimited: if the pipeline stops, the slot keeps "
            "WAL until the disk is full. Consider ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'"
        )
    print(
        "The slot now keeps every change for the DAG services_requests_cdc: unpause it (and "
        "trigger it once with initial_snapshot=true to send the current table)."
    )
    return 0


_IDENTITY = {"d": "default (primary key)", "f": "full", "i": "index", "n": "nothing"}


if __name__ == "__main__":
    sys.exit(main())
