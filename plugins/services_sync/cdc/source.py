"""Log-based change capture from the source: a publication, a logical slot, peek and acknowledge.

The slot is read with SQL (``pg_logical_slot_peek_binary_changes``), never consumed by the
read: changes stay in the slot until :func:`advance_slot` acknowledges a position after the
receiver accepted them, so a crash between the two sends them again (at-least-once; the
receiver de-duplicates on ``(commit_lsn, position_in_txn)``). Decoding of the returned
messages is :mod:`services_sync.cdc.pgoutput` and :mod:`services_sync.cdc.decoder`.

Identifiers (the publication) are composed with :mod:`psycopg.sql`; slot names, LSNs and
options are bind parameters. The functions take a psycopg 3 connection and leave it as they
found it: each opens its own transaction block (a savepoint inside the caller's).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from services_sync.core.sql import load_sql

#: ``pg_logical_emit_message`` prefix of the pipeline's own messages.
MESSAGE_PREFIX = "services_sync"

#: Session settings the decoded text values depend on (pgoutput calls each type's output
#: function in the session that peeks): the contract transform parses ISO timestamps.
_DECODING_SETTINGS = {
    "DateStyle": "ISO, YMD",
    "TimeZone": "UTC",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


def create_publication(
    conn: psycopg.Connection, name: str, *, require_identity: bool = True
) -> bool:
    """Create the publication ``FOR TABLE service_requests`` unless it exists.

    Args:
        conn: a connection to the source database.
        name: the publication name (an identifier, used as given: case matters).
        require_identity: refuse to create it when the table has no replica identity, because
            from then on every UPDATE and DELETE of the table would fail for the application.

    Returns:
        Whether it was created (``False``: it existed and publishes the table).

    Raises:
        ValueError: the table has no usable replica identity, or a publication of that name
            exists but does not publish the table with inserts, updates, deletes and truncates.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(load_sql("cdc/find_publication.sql"), {"publication": name})
        found = cur.fetchone()
        if found is not None:
            if not (found["has_table"] and found["publishes_all"]):
                raise ValueError(
                    f"publication {name!r} exists but does not publish service_requests with "
                    "insert, update, delete and truncate; drop it or choose another name"
                )
            return False
        if require_identity:
            _check_replica_identity(cur)
        cur.execute(
            pgsql.SQL(load_sql("cdc/create_publication.sql")).format(
                publication=pgsql.Identifier(name)
            )
        )
        return True


def _check_replica_identity(cur: psycopg.Cursor[dict[str, Any]]) -> None:
    cur.execute(load_sql("cdc/replica_identity.sql"))
    row = cur.fetchone()
    if row is None:
        raise ValueError("table service_requests not found (check search_path)")
    identity = row["replica_identity"]
    usable = (
        identity == "f"
        or (identity == "d" and row["has_primary_key"])
        or (identity == "i" and row["has_identity_index"])
    )
    if not usable:
        raise ValueError(
            "service_requests has no replica identity (no primary key; relreplident="
            f"{identity!r}): once published, its UPDATEs and DELETEs would fail. Run "
            "ALTER TABLE service_requests REPLICA IDENTITY FULL (or add a primary key) first"
        )


def create_slot(conn: psycopg.Connection, slot: str) -> bool:
    """Create the logical replication slot (plugin ``pgoutput``) unless it exists.

    Creation waits until every transaction already running with a transaction id ends, and
    fails in a transaction that has written: call it on an idle connection.

    Args:
        conn: a connection to the source database (the slot is bound to this database).
        slot: the slot name.

    Returns:
        Whether it was created (``False``: a pgoutput logical slot of this database existed).

    Raises:
        ValueError: the server cannot host it (``wal_level`` is not ``logical``, no free slot
            under ``max_replication_slots``, the role lacks ``REPLICATION``), or a slot of that
            name exists with another plugin, type or database.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if _existing_slot(cur, slot):
            return False
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(load_sql("cdc/create_slot.sql"), {"slot_name": slot})
    except pgerrors.DuplicateObject:
        # Created by someone else between the two statements: fine if it is what we need.
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            if _existing_slot(cur, slot):
                return False
        raise
    except (
        pgerrors.ObjectNotInPrerequisiteState,
        pgerrors.ConfigurationLimitExceeded,
        pgerrors.InsufficientPrivilege,
    ) as exc:
        raise ValueError(_slot_error_help(slot, exc)) from exc
    return True


def _existing_slot(cur: psycopg.Cursor[dict[str, Any]], slot: str) -> bool:
    cur.execute(load_sql("cdc/find_slot.sql"), {"slot_name": slot})
    found = cur.fetchone()
    if found is None:
        return False
    if (found["slot_type"], found["plugin"], found["database"]) != (
        "logical",
        "pgoutput",
        found["current_database"],
    ):
        raise ValueError(
            f"replication slot {slot!r} exists but is not a pgoutput logical slot of database "
            f"{found['current_database']!r} (type {found['slot_type']}, plugin "
            f"{found['plugin']}, database {found['database']}); choose another name"
        )
    return True


def _slot_error_help(slot: str, exc: psycopg.Error) -> str:
    message = exc.diag.message_primary or str(exc)
    if "wal_level" in message:
        fix = (
            "the server must run with wal_level=logical (ALTER SYSTEM SET wal_level = logical, "
            "then restart PostgreSQL)"
        )
    elif "max_replication_slots" in message or "replication slots are in use" in message:
        fix = (
            "no replication slot is free: drop an unused one or raise max_replication_slots "
            "(needs a restart)"
        )
    elif isinstance(exc, pgerrors.InsufficientPrivilege):
        fix = "the role needs the REPLICATION attribute (ALTER ROLE ... REPLICATION)"
    else:
        fix = "logical decoding is not available on this server"
    return f"cannot create logical replication slot {slot!r}: {fix}. Server said: {message}"


def peek_changes(
    conn: psycopg.Connection,
    slot: str,
    publication: str,
    upto_lsn: str | None,
    *,
    fetch_rows: int = 2000,
) -> Iterator[tuple[str, int, bytes]]:
    """Stream the slot's pending pgoutput messages without consuming them.

    Rows come through a server-side cursor, ``fetch_rows`` at a time, so client memory stays
    bounded (the server materializes the function's result in a tuplestore that spills to
    disk past ``work_mem``; big transactions spill past ``logical_decoding_work_mem``). The
    iteration runs in one transaction of ``conn``: finish or close the iterator before using
    the connection for anything that must commit.

    Args:
        conn: a connection to the slot's database.
        slot: the slot name.
        publication: the publication name, quoted here as an identifier for pgoutput.
        upto_lsn: ``pg_lsn`` text to stop at (see :func:`current_wal_lsn`), ``None`` for all.
        fetch_rows: rows per round trip.

    Yields:
        ``(lsn, xid, data)``: the row's LSN as text (for a Commit, its ``end_lsn``), the
        transaction id (0 for a non-transactional message) and one pgoutput message.
    """
    quoted = pgsql.Identifier(publication).as_string(conn)
    params = {"slot_name": slot, "upto_lsn": upto_lsn, "publication": quoted}
    with conn.transaction():
        with conn.cursor() as cur:
            for setting, value in _DECODING_SETTINGS.items():
                cur.execute("SELECT set_config(%s, %s, true)", (setting, value))
        name = f"services_sync_cdc_{uuid.uuid4().hex[:12]}"
        with conn.cursor(name=name, binary=True) as cur:
            cur.itersize = fetch_rows
            cur.execute(load_sql("cdc/peek_changes.sql"), params)
            for lsn, xid, data in cur:
                yield lsn, int(xid), bytes(data)


def advance_slot(conn: psycopg.Connection, slot: str, lsn: str) -> str:
    """Acknowledge everything committed before ``lsn``; return the slot's new position.

    Acknowledge a Commit's ``end_lsn`` or a fully delivered peek's ``upto_lsn``, never a
    ``commit_lsn`` (that transaction would come again). Idempotent: a position at or behind
    the slot's is a no-op. Not durable until the next checkpoint: a crash can bring back
    acknowledged transactions.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(load_sql("cdc/advance_slot.sql"), {"slot_name": slot, "lsn": lsn})
        row = cur.fetchone()
        assert row is not None
        return str(row[1])


def slot_health(conn: psycopg.Connection, slot: str) -> dict[str, Any]:
    """The slot's position, retained WAL and risk of loss (see ``cdc/slot_health.sql``).

    Raises:
        ValueError: no slot of that name.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(load_sql("cdc/slot_health.sql"), {"slot_name": slot})
        row = cur.fetchone()
    if row is None:
        raise ValueError(f"replication slot {slot!r} does not exist")
    return row


def emit_heartbeat(conn: psycopg.Connection, content: str = "heartbeat") -> str:
    """Write a transactional logical message and commit it; return its LSN.

    It reaches every pgoutput reader (``messages 'true'``) as a transaction of its own, so the
    slot has a Commit to acknowledge even when the table is idle, and WAL can be released.
    Committed with ``synchronous_commit = on``, so it is decodable when this returns.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT set_config('synchronous_commit', 'on', true)")
        cur.execute("SELECT pg_logical_emit_message(true, %s, %s)::text", (MESSAGE_PREFIX, content))
        row = cur.fetchone()
        assert row is not None
        return str(row[0])


def current_wal_lsn(conn: psycopg.Connection) -> str:
    """The position up to which WAL is flushed (``pg_current_wal_flush_lsn()``), as text.

    The ``upto_lsn`` to peek with and, once everything returned was delivered, to acknowledge.
    Not ``pg_current_wal_lsn()``: that is the *write* position, which runs ahead of the flush
    position with asynchronous commit; a peek decodes only flushed WAL, while a later advance
    could reach that far and skip transactions the peek never returned.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_flush_lsn()::text")
        row = cur.fetchone()
        assert row is not None
        return str(row[0])
