"""Log-based CDC on a real PostgreSQL 16: publication, pgoutput slot, SQL peek, advance.

Everything goes through ``services_sync.cdc.source`` and ``services_sync.cdc.pgoutput``. Writers
commit with ``synchronous_commit = on``: the test cluster runs with it off, and a peek decodes
only WAL that is flushed, so an asynchronous commit may not be visible to the next peek yet.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql as pgsql

from devkit.seed import insert_rows
from services_sync.cdc.decoder import Change, ChangeDecoder
from services_sync.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    TypeMessage,
    Update,
    decode_message,
    int_to_lsn,
    lsn_to_int,
)
from services_sync.cdc.source import (
    MESSAGE_PREFIX,
    advance_slot,
    create_publication,
    create_slot,
    current_wal_lsn,
    emit_heartbeat,
    peek_changes,
    slot_health,
)
from services_sync.core.transform import InvalidRow, format_timestamp

T = datetime(2025, 5, 14, 10, 0, 0, 123456, tzinfo=UTC)
OPENED = datetime(2025, 5, 13, 9, 30, tzinfo=UTC)
TABLE = "public.service_requests"


def row(rid: str, status: str = "1", lmd: datetime = T, sid: str = "water") -> tuple:
    return (sid, rid, OPENED, status, lmd)


def pg_text(value: object) -> object:
    """A value as the decoder hands it over: the text PostgreSQL writes (DateStyle ISO, UTC)."""
    if not isinstance(value, datetime):
        return value
    fraction = f".{value.microsecond:06d}".rstrip("0") if value.microsecond else ""
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}{fraction}+00"


def as_dict(values: tuple) -> dict:
    keys = ("service_id", "request_id", "opening_date", "status_id", "last_modified_date")
    return dict(zip(keys, map(pg_text, values), strict=True))


def connect(dsn: str, **kwargs) -> psycopg.Connection:
    """Autocommit, and commits flushed before they return (see the module docstring)."""
    return psycopg.connect(dsn, autocommit=True, options="-c synchronous_commit=on", **kwargs)


def insert(conn: psycopg.Connection, *rows: tuple) -> None:
    values = pgsql.SQL(", ").join(pgsql.SQL("(%s, %s, %s, %s, %s)") for _ in rows)
    conn.execute(
        pgsql.SQL("INSERT INTO service_requests VALUES {}").format(values),
        [v for r in rows for v in r],
    )


@dataclass
class Cdc:
    """A publication and a slot on a fresh source database, plus a writer connection."""

    dsn: str
    conn: psycopg.Connection
    slot: str = field(default_factory=lambda: f"ss_slot_{uuid.uuid4().hex[:8]}")
    publication: str = field(default_factory=lambda: f"ss_pub_{uuid.uuid4().hex[:8]}")

    def rows(self, upto: str | None = None) -> list[tuple[str, int, bytes]]:
        return list(peek_changes(self.conn, self.slot, self.publication, upto))

    def changes(self, upto: str | None = None) -> list[Change]:
        return decode_all(data for _, _, data in self.rows(upto))


def decode_all(messages: Iterable[bytes], decoder: ChangeDecoder | None = None) -> list[Change]:
    """Feed every message to one decoder (as capture_changes does); the changes, in order."""
    decoder = decoder or ChangeDecoder()
    changes = [change for data in messages for change in decoder.feed(data)]
    decoder.finish()
    return changes


def commit_ends(rows: Iterable[tuple[str, int, bytes]]) -> list[int]:
    """Each transaction's Commit ``end_lsn``, in order: the position that acknowledges it."""
    messages = (decode_message(data) for _, _, data in rows)
    return [m.end_lsn for m in messages if isinstance(m, Commit)]


@pytest.fixture
def cdc_setup(source_db) -> Iterator:
    """``setup(identity)``: set the table's replica identity, create publication then slot.

    The publication must exist before the slot: pgoutput looks publications up as of each
    change, and a change older than the publication fails the whole peek.
    """
    made: list[Cdc] = []

    def setup(identity: str | None = "FULL", *, primary_key: bool = False) -> Cdc:
        cdc = Cdc(source_db, connect(source_db))
        if primary_key:
            cdc.conn.execute(
                "ALTER TABLE service_requests ADD PRIMARY KEY (service_id, request_id)"
            )
        if identity:
            cdc.conn.execute(f"ALTER TABLE service_requests REPLICA IDENTITY {identity}")
        made.append(cdc)
        assert create_publication(cdc.conn, cdc.publication) is True
        assert create_slot(cdc.conn, cdc.slot) is True
        return cdc

    yield setup
    for cdc in made:
        with connect(cdc.dsn) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (cdc.slot,),
            )
            conn.execute(
                pgsql.SQL("DROP PUBLICATION IF EXISTS {}").format(pgsql.Identifier(cdc.publication))
            )
        cdc.conn.close()


def txn_shape(changes: list[Change]) -> list[tuple[int, int]]:
    return [(c.commit_lsn, c.position_in_txn) for c in changes]


def assert_well_ordered(changes: list[Change]) -> None:
    """Commit LSNs never go back, positions count 0.. within a transaction, keys are unique."""
    keys = txn_shape(changes)
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    previous: Change | None = None
    for change in changes:
        if previous is None or previous.commit_lsn != change.commit_lsn:
            assert change.position_in_txn == 0
        else:
            assert change.position_in_txn == previous.position_in_txn + 1
            assert change.xid == previous.xid
        previous = change


# -- REPLICA IDENTITY FULL ------------------------------------------------------------------
def test_full_identity_stream_peek_is_repeatable_and_advance_consumes(cdc_setup):
    cdc = cdc_setup("FULL")
    conn = cdc.conn
    insert(conn, row("R1"))
    conn.execute("UPDATE service_requests SET status_id = '2' WHERE request_id = 'R1'")
    conn.execute("DELETE FROM service_requests WHERE request_id = 'R1'")
    insert(conn, row("R2"), row("R3", "3"))  # one multi-row INSERT ... VALUES
    insert_rows(conn, [row("R4"), row("R5")])  # COPY: one multi-insert WAL record
    heartbeat_lsn = emit_heartbeat(conn)

    rows = cdc.rows()
    changes = decode_all(d for _, _, d in rows)

    assert [(c.op, c.relation, c.position_in_txn, c.new, c.old_key) for c in changes] == [
        ("insert", TABLE, 0, as_dict(row("R1")), None),
        ("update", TABLE, 0, as_dict(row("R1", "2")), as_dict(row("R1"))),
        ("delete", TABLE, 0, {}, as_dict(row("R1", "2"))),
        ("insert", TABLE, 0, as_dict(row("R2")), None),
        ("insert", TABLE, 1, as_dict(row("R3", "3")), None),
        ("insert", TABLE, 0, as_dict(row("R4")), None),
        ("insert", TABLE, 1, as_dict(row("R5")), None),
    ]
    assert_well_ordered(changes)
    assert len({c.commit_lsn for c in changes}) == 5  # five transactions
    # Raw rows: Begin's final_lsn is the commit LSN; a Commit row's lsn column is its end_lsn.
    decoded = [(lsn, xid, decode_message(data)) for lsn, xid, data in rows]
    begins = [(xid, m) for _, xid, m in decoded if isinstance(m, Begin)]
    commits = [(lsn, xid, m) for lsn, xid, m in decoded if isinstance(m, Commit)]
    assert len(begins) == len(commits) == 6
    for (bxid, begin), (clsn, cxid, commit) in zip(begins, commits, strict=True):
        assert begin.final_lsn == commit.commit_lsn
        assert bxid == cxid == begin.xid
        assert lsn_to_int(clsn) == commit.end_lsn
    # The sixth transaction is the heartbeat: a logical message and no change.
    (beat,) = [m for _, _, m in decoded if isinstance(m, LogicalMessage)]
    assert (beat.prefix, beat.content, beat.transactional) == (MESSAGE_PREFIX, b"heartbeat", True)
    # pg_logical_emit_message returns the end of its record: the heartbeat's commit LSN.
    assert commits[-1][2].commit_lsn == lsn_to_int(heartbeat_lsn)
    # The COPY rows share one WAL LSN; the multi-row VALUES rows do not: only positions
    # tell changes apart in general.
    inserts = [(lsn, m) for lsn, _, m in decoded if isinstance(m, Insert)]
    assert inserts[1][0] != inserts[2][0]  # R2, R3 (INSERT ... VALUES)
    assert inserts[3][0] == inserts[4][0]  # R4, R5 (COPY)
    # The Relation is sent once per session (then again only after a schema change).
    assert sum(isinstance(m, Relation) for _, _, m in decoded) == 1
    relation = next(m for _, _, m in decoded if isinstance(m, Relation))
    assert relation.replica_identity == "f"
    assert all(c.is_key for c in relation.columns)

    # Peeking does not consume.
    assert cdc.rows() == rows

    # Acknowledge the first two transactions: the third (the delete) comes first next time.
    assert all(commit.end_lsn > commit.commit_lsn for _, _, commit in commits)
    ack = int_to_lsn(commits[1][2].end_lsn)
    assert advance_slot(conn, cdc.slot, ack) == ack
    assert [c.op for c in cdc.changes()] == ["delete", "insert", "insert", "insert", "insert"]
    # Acknowledging an older position again is a no-op, not an error.
    assert advance_slot(conn, cdc.slot, int_to_lsn(commits[0][2].end_lsn)) == ack

    # Acknowledge a peek's upto_lsn: only later changes remain.
    upto = current_wal_lsn(conn)
    assert [c.op for c in cdc.changes(upto)] == ["delete", "insert", "insert", "insert", "insert"]
    insert(conn, row("R6"))
    assert advance_slot(conn, cdc.slot, upto) == upto
    assert [(c.op, c.new["request_id"]) for c in cdc.changes()] == [("insert", "R6")]
    health = slot_health(conn, cdc.slot)
    assert health["confirmed_flush_lsn"] == upto


def test_advancing_to_commit_lsn_replays_the_transaction_end_lsn_does_not(cdc_setup):
    cdc = cdc_setup("FULL")
    insert(cdc.conn, row("R1"))
    insert(cdc.conn, row("R2"))
    first, second = cdc.changes()
    first_end = commit_ends(cdc.rows())[0]
    advance_slot(cdc.conn, cdc.slot, int_to_lsn(first.commit_lsn))
    assert [c.new["request_id"] for c in cdc.changes()] == ["R1", "R2"]  # replayed
    advance_slot(cdc.conn, cdc.slot, int_to_lsn(first_end))
    assert [c.new["request_id"] for c in cdc.changes()] == ["R2"]
    assert second.commit_lsn > first_end


def test_unchanged_toast_under_full_identity(cdc_setup):
    cdc = cdc_setup("FULL")
    big = os.urandom(10_000).hex()  # incompressible: stored out of line (TOAST)
    insert(cdc.conn, row("R1", status=big))
    cdc.conn.execute(
        "UPDATE service_requests SET last_modified_date = %s WHERE request_id = 'R1'",
        (T + timedelta(hours=1),),
    )
    _, update = cdc.changes()
    assert update.new["status_id"] is UNCHANGED_TOAST
    assert update.new["last_modified_date"] == pg_text(T + timedelta(hours=1))
    assert update.old_key is not None
    assert update.old_key["status_id"] == big  # the FULL old row carries the value


def test_truncate(cdc_setup):
    cdc = cdc_setup("FULL")
    insert(cdc.conn, row("R1"))
    cdc.conn.execute("TRUNCATE service_requests")
    changes = cdc.changes()
    assert [(c.op, c.relation, c.new, c.old_key) for c in changes] == [
        ("insert", TABLE, as_dict(row("R1")), None),
        ("truncate", TABLE, {}, None),
    ]


# -- REPLICA IDENTITY DEFAULT ---------------------------------------------------------------
def test_default_identity_with_primary_key_sends_key_columns_only(cdc_setup):
    cdc = cdc_setup("DEFAULT", primary_key=True)
    conn = cdc.conn
    insert(conn, row("R1"))
    conn.execute("UPDATE service_requests SET status_id = '2' WHERE request_id = 'R1'")
    conn.execute("UPDATE service_requests SET request_id = 'R9' WHERE request_id = 'R1'")
    conn.execute("DELETE FROM service_requests WHERE request_id = 'R9'")

    rows = cdc.rows()
    relation = next(m for m in (decode_message(d) for _, _, d in rows) if isinstance(m, Relation))
    assert relation.replica_identity == "d"
    assert [c.name for c in relation.columns if c.is_key] == ["service_id", "request_id"]
    raw = [decode_message(d) for _, _, d in rows]
    kinds = [(type(m).__name__, m.old_kind) for m in raw if isinstance(m, Update | Delete)]
    assert kinds == [("Update", None), ("Update", "K"), ("Delete", "K")]
    key_delete = next(m for m in raw if isinstance(m, Delete))
    assert key_delete.old == ("water", "R9", None, None, None)  # non-key columns: NULL fillers

    changes = cdc.changes()
    assert [(c.op, c.new, c.old_key) for c in changes] == [
        ("insert", as_dict(row("R1")), None),
        ("update", as_dict(row("R1", "2")), None),  # key unchanged: no old data at all
        ("update", as_dict(row("R9", "2")), {"service_id": "water", "request_id": "R1"}),
        ("delete", {}, {"service_id": "water", "request_id": "R9"}),
    ]
    assert_well_ordered(changes)


def test_default_identity_unchanged_toast_is_lost(cdc_setup):
    cdc = cdc_setup("DEFAULT", primary_key=True)
    big = os.urandom(10_000).hex()
    insert(cdc.conn, row("R1", status=big))
    cdc.conn.execute("UPDATE service_requests SET last_modified_date = %s", (T,))
    _, update = cdc.changes()
    assert update.new["status_id"] is UNCHANGED_TOAST
    assert update.old_key is None  # nothing to fill it from: re-read the row or use FULL


def test_default_identity_without_primary_key_breaks_updates_and_deletes(source_db):
    with connect(source_db) as conn, pytest.raises(ValueError, match="REPLICA IDENTITY FULL"):
        create_publication(conn, f"ss_pub_{uuid.uuid4().hex[:8]}")
    cdc = Cdc(source_db, connect(source_db))
    assert create_publication(cdc.conn, cdc.publication, require_identity=False)
    try:
        insert(cdc.conn, row("R1"))  # inserts still work
        with pytest.raises(
            psycopg.errors.ObjectNotInPrerequisiteState,
            match='cannot update table "service_requests" because it does not have a replica '
            "identity and publishes updates",
        ):
            cdc.conn.execute("UPDATE service_requests SET status_id = '2'")
        with pytest.raises(
            psycopg.errors.ObjectNotInPrerequisiteState,
            match="does not have a replica identity and publishes deletes",
        ):
            cdc.conn.execute("DELETE FROM service_requests")
    finally:
        cdc.conn.execute(pgsql.SQL("DROP PUBLICATION {}").format(pgsql.Identifier(cdc.publication)))
        cdc.conn.close()


# -- transactions ---------------------------------------------------------------------------
def test_open_transaction_is_returned_only_after_commit_and_upto_excludes_it(cdc_setup):
    cdc = cdc_setup("FULL")
    with connect(cdc.dsn) as other:
        other.execute("BEGIN")
        insert(other, row("OPEN"))
        insert(cdc.conn, row("R1"))  # commits while OPEN is still running
        assert [c.new["request_id"] for c in cdc.changes()] == ["R1"]

        upto = current_wal_lsn(cdc.conn)
        other.execute("COMMIT")

    assert [c.new["request_id"] for c in cdc.changes(upto)] == ["R1"]
    assert [c.new["request_id"] for c in cdc.changes()] == ["R1", "OPEN"]  # commit order
    # Acknowledging upto does not skip the transaction that committed after it.
    advance_slot(cdc.conn, cdc.slot, upto)
    assert [c.new["request_id"] for c in cdc.changes()] == ["OPEN"]


def test_rolled_back_transaction_never_appears(cdc_setup):
    cdc = cdc_setup("FULL")
    with connect(cdc.dsn) as other:
        other.execute("BEGIN")
        insert(other, row("GONE"))
        other.execute("ROLLBACK")
    insert(cdc.conn, row("R1"))
    assert [c.new["request_id"] for c in cdc.changes()] == ["R1"]


def test_large_transaction_spilled_to_disk(cdc_setup):
    cdc = cdc_setup("FULL")
    cdc.conn.execute(
        "INSERT INTO service_requests "
        "SELECT 'bulk', lpad(g::text, 5, '0'), %s, (g %% 7)::text, %s "
        "FROM generate_series(1, 5000) AS g",
        (OPENED, T),
    )
    insert(cdc.conn, row("AFTER"))
    # A tiny reorder buffer makes the server spill the transaction to disk while decoding.
    cdc.conn.execute("SET logical_decoding_work_mem = '64kB'")
    changes = decode_all(
        d for _, _, d in peek_changes(cdc.conn, cdc.slot, cdc.publication, None, fetch_rows=300)
    )
    assert len(changes) == 5001
    bulk, after = changes[:5000], changes[5000]
    assert {c.commit_lsn for c in bulk} == {bulk[0].commit_lsn}
    assert [c.position_in_txn for c in bulk] == list(range(5000))
    assert [c.new["request_id"] for c in bulk] == [f"{g:05d}" for g in range(1, 5001)]
    assert bulk[41].new == {
        "service_id": "bulk",
        "request_id": "00042",
        "opening_date": pg_text(OPENED),
        "status_id": str(42 % 7),
        "last_modified_date": pg_text(T),
    }
    assert (after.commit_lsn, after.position_in_txn) > (bulk[-1].commit_lsn, 4999)


# -- logical messages (heartbeats) ----------------------------------------------------------
def test_heartbeat_gives_an_idle_slot_a_position_to_acknowledge(cdc_setup):
    cdc = cdc_setup("FULL")
    before = slot_health(cdc.conn, cdc.slot)["confirmed_flush_lsn"]
    emit_heartbeat(cdc.conn)
    rows = cdc.rows()
    assert decode_all(d for _, _, d in rows) == []  # nothing to deliver
    kinds = [type(decode_message(d)) for _, _, d in rows]
    assert kinds == [Begin, LogicalMessage, Commit]
    # The capture acknowledges the position it peeked up to; the heartbeat's Commit is there.
    acked = advance_slot(cdc.conn, cdc.slot, current_wal_lsn(cdc.conn))
    assert lsn_to_int(acked) > lsn_to_int(before)
    assert cdc.rows() == []


def test_non_transactional_message_survives_rollback(cdc_setup):
    cdc = cdc_setup("FULL")
    with cdc.conn.transaction(force_rollback=True):
        cdc.conn.execute("SELECT pg_logical_emit_message(false, 'services_sync', 'now')")
        cdc.conn.execute("SELECT pg_logical_emit_message(true, 'services_sync', 'never')")
    # Nothing flushed the WAL yet (a rollback does not; PostgreSQL 17 adds a flush argument).
    assert cdc.rows() == []
    emit_heartbeat(cdc.conn)  # commits with synchronous_commit = on: flushes
    rows = cdc.rows()
    assert rows[0][1] == 0  # outside any transaction
    messages = [decode_message(d) for _, _, d in rows]
    beats = [(m.content, m.transactional) for m in messages if isinstance(m, LogicalMessage)]
    assert beats == [(b"now", False), (b"heartbeat", True)]
    assert cdc.changes() == []  # the decoder skips both


# -- names, types, sessions -----------------------------------------------------------------
def test_mixed_case_publication_name_must_be_quoted_for_pgoutput(source_db):
    cdc = Cdc(source_db, connect(source_db), publication="SyncPub_" + uuid.uuid4().hex[:6])
    cdc.conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
    assert create_publication(cdc.conn, cdc.publication)
    assert create_publication(cdc.conn, cdc.publication) is False  # idempotent
    assert create_slot(cdc.conn, cdc.slot)
    try:
        insert(cdc.conn, row("R1"))
        assert [c.new["request_id"] for c in cdc.changes()] == ["R1"]  # quoted by peek_changes
        # Unquoted, pgoutput folds the name to lower case: found only when a change needs it.
        folded = f'publication "{cdc.publication.lower()}" does not exist'
        with pytest.raises(psycopg.errors.UndefinedObject, match=folded):
            cdc.conn.execute(
                "SELECT * FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
                "'proto_version', '1', 'publication_names', %s)",
                (cdc.slot, cdc.publication),
            ).fetchall()
    finally:
        cdc.conn.execute("SELECT pg_drop_replication_slot(%s)", (cdc.slot,))
        cdc.conn.execute(pgsql.SQL("DROP PUBLICATION {}").format(pgsql.Identifier(cdc.publication)))
        cdc.conn.close()


def test_publication_created_after_the_slot_poisons_older_changes(source_db):
    cdc = Cdc(source_db, connect(source_db))
    cdc.conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
    assert create_slot(cdc.conn, cdc.slot)
    try:
        insert(cdc.conn, row("EARLY"))
        create_publication(cdc.conn, cdc.publication)
        insert(cdc.conn, row("LATE"))
        with pytest.raises(
            psycopg.errors.UndefinedObject, match=r"publication \"ss_pub_\w+\" does not exist"
        ):
            cdc.rows()
        # Skipping past the publication's creation (advance does not run pgoutput) recovers.
        advance_slot(cdc.conn, cdc.slot, current_wal_lsn(cdc.conn))
        insert(cdc.conn, row("AFTER"))
        assert [c.new["request_id"] for c in cdc.changes()] == ["AFTER"]
    finally:
        cdc.conn.execute("SELECT pg_drop_replication_slot(%s)", (cdc.slot,))
        cdc.conn.execute(pgsql.SQL("DROP PUBLICATION {}").format(pgsql.Identifier(cdc.publication)))
        cdc.conn.close()


def test_session_datestyle_and_timezone_change_the_text_peek_changes_pins_them(cdc_setup):
    cdc = cdc_setup("FULL")
    insert(cdc.conn, row("R1"))
    cdc.conn.execute("SET DateStyle = 'SQL, DMY'")
    cdc.conn.execute("SET TimeZone = 'Asia/Kolkata'")
    assert cdc.changes()[0].new == as_dict(row("R1"))
    raw = cdc.conn.execute(
        "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
        "'proto_version', '1', 'publication_names', %s)",
        (cdc.slot, cdc.publication),
    ).fetchall()
    # Unpinned, the text is not ISO 8601 and the contract transform would reject every row.
    opened = decode_all(d for (d,) in raw)[0].new["opening_date"]
    assert opened == "13/05/2025 15:00:00 IST"
    with pytest.raises(InvalidRow, match="not an ISO 8601 timestamp"):
        format_timestamp(opened, "opening_date")
    # The session's own settings are untouched (SET LOCAL in peek_changes' transaction).
    assert cdc.conn.execute("SHOW TimeZone").fetchone() == ("Asia/Kolkata",)


def test_every_type_arrives_as_its_text_and_type_message_on_a_real_server(source_db):
    conn = connect(source_db)
    slot, pub = f"ss_slot_{uuid.uuid4().hex[:8]}", f"ss_pub_{uuid.uuid4().hex[:8]}"
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    conn.execute(
        "CREATE TABLE typed (id int8 PRIMARY KEY, small int2, i int4, amount numeric(12, 4), "
        "ok bool, u uuid, f float8, d date, ts timestamp, tstz timestamptz, v varchar(10), "
        "m mood, j jsonb)"
    )
    conn.execute(pgsql.SQL("CREATE PUBLICATION {} FOR TABLE typed").format(pgsql.Identifier(pub)))
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        conn.execute(
            "INSERT INTO typed VALUES (9000000000, -7, 42, 1234.5, true, "
            "'0a1b2c3d-0000-4000-8000-000000000001', 0.1, '2025-05-14', "
            "'2025-05-14 10:00:00.5', '2025-05-14 15:30:00.123456+05:30', 'abc', 'happy', "
            "'{\"a\": 1}'), (1, NULL, NULL, 'NaN', false, NULL, '-Infinity', 'infinity', "
            "'-infinity', 'infinity', NULL, NULL, NULL)"
        )
        messages = [decode_message(d) for _, _, d in peek_changes(conn, slot, pub, None)]
        changes = decode_all(d for _, _, d in peek_changes(conn, slot, pub, None))
        mood_oid = conn.execute("SELECT 'mood'::regtype::oid").fetchone()[0]
        assert TypeMessage(mood_oid, "public", "mood") in messages
        first, second = (c.new for c in changes)
        assert first == {
            "id": "9000000000",
            "small": "-7",
            "i": "42",
            "amount": "1234.5000",
            "ok": "t",
            "u": "0a1b2c3d-0000-4000-8000-000000000001",
            "f": "0.1",
            "d": "2025-05-14",
            "ts": "2025-05-14 10:00:00.5",
            "tstz": pg_text(T),
            "v": "abc",
            "m": "happy",
            "j": '{"a": 1}',
        }
        assert (second["amount"], second["f"]) == ("NaN", "-Infinity")
        assert (second["d"], second["ts"], second["tstz"]) == ("infinity", "-infinity", "infinity")
    finally:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute(pgsql.SQL("DROP PUBLICATION {}").format(pgsql.Identifier(pub)))
        conn.close()


def test_replication_origin_message(cdc_setup):
    cdc = cdc_setup("FULL")
    origin = f"ss_origin_{uuid.uuid4().hex[:6]}"
    cdc.conn.execute("SELECT pg_replication_origin_create(%s)", (origin,))
    try:
        with cdc.conn.transaction():
            cdc.conn.execute("SELECT pg_replication_origin_session_setup(%s)", (origin,))
            cdc.conn.execute("SELECT pg_replication_origin_xact_setup('1/2', now())")
            insert(cdc.conn, row("REPLICATED"))
        cdc.conn.execute("SELECT pg_replication_origin_session_reset()")
        messages = [decode_message(d) for _, _, d in cdc.rows()]
        assert Origin(0x1_00000002, origin) in messages
        assert [c.new["request_id"] for c in cdc.changes()] == ["REPLICATED"]
    finally:
        cdc.conn.execute("SELECT pg_replication_origin_drop(%s)", (origin,))


# -- slot management ------------------------------------------------------------------------
def test_create_slot_is_idempotent_and_refuses_a_foreign_slot(cdc_setup):
    cdc = cdc_setup("FULL")
    assert create_slot(cdc.conn, cdc.slot) is False
    other = f"ss_slot_{uuid.uuid4().hex[:8]}"
    cdc.conn.execute("SELECT pg_create_physical_replication_slot(%s)", (other,))
    try:
        with pytest.raises(ValueError, match="not a pgoutput logical slot"):
            create_slot(cdc.conn, other)
    finally:
        cdc.conn.execute("SELECT pg_drop_replication_slot(%s)", (other,))


def test_create_slot_without_replication_privilege(cdc_setup, pg_cluster):
    cdc = cdc_setup("FULL")
    role = f"ss_norepl_{uuid.uuid4().hex[:6]}"
    cdc.conn.execute(pgsql.SQL("CREATE ROLE {} LOGIN").format(pgsql.Identifier(role)))
    try:
        database = cdc.dsn.rsplit("/", 1)[1]
        with connect(pg_cluster.dsn(database, role)) as conn:
            with pytest.raises(ValueError, match="REPLICATION attribute") as info:
                create_slot(conn, f"ss_slot_{uuid.uuid4().hex[:8]}")
            assert "permission denied to use replication slots" in str(info.value)
    finally:
        cdc.conn.execute(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(role)))


def test_slot_health(cdc_setup):
    cdc = cdc_setup("FULL")
    insert(cdc.conn, row("R1"))
    health = slot_health(cdc.conn, cdc.slot)
    assert health["slot_name"] == cdc.slot
    assert (health["plugin"], health["slot_type"], health["active"]) == (
        "pgoutput",
        "logical",
        False,
    )
    assert health["wal_status"] == "reserved"
    assert health["max_slot_wal_keep_size"] == "-1"
    assert health["safe_wal_size"] is None  # unlimited retention: the disk is the limit
    assert health["retained_wal_bytes"] >= health["pending_wal_bytes"] > 0
    assert lsn_to_int(health["current_wal_lsn"]) >= lsn_to_int(health["confirmed_flush_lsn"])
    with pytest.raises(ValueError, match="does not exist"):
        slot_health(cdc.conn, "ss_no_such_slot")


# -- server configuration -------------------------------------------------------------------
def test_wal_level_replica_then_slot_limits_then_crash_durability():
    from devkit.pgcluster import PostgresCluster

    cluster = PostgresCluster(settings={"wal_level": "replica", "max_replication_slots": "1"})
    cluster.start()
    try:
        dsn = cluster.create_database("cdc")
        with connect(dsn) as conn:
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as raw:
                conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
            assert (
                raw.value.diag.message_primary == "logical decoding requires wal_level >= logical"
            )
            with pytest.raises(ValueError, match="wal_level=logical") as info:
                create_slot(conn, "s")
            assert "logical decoding requires wal_level >= logical" in str(info.value)

        cluster.settings["wal_level"] = "logical"
        cluster.restart()
        with connect(dsn) as conn:
            from devkit.seed import create_source_table

            create_source_table(conn)
            conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
            create_publication(conn, "pub")
            assert create_slot(conn, "s")
            with pytest.raises(ValueError, match="max_replication_slots") as info:
                create_slot(conn, "s2")
            assert "all replication slots are in use" in str(info.value)

            # An acknowledgement is kept in memory until the next checkpoint: after a crash
            # the slot may hand back transactions already acknowledged (at-least-once).
            insert(conn, row("R1"))
            insert(conn, row("R2"))
            rows = list(peek_changes(conn, "s", "pub", None))
            seen = decode_all(d for _, _, d in rows)
            acked = advance_slot(conn, "s", int_to_lsn(commit_ends(rows)[-1]))
        cluster.stop("immediate")
        cluster.start()
        with connect(dsn) as conn:
            after_crash = slot_health(conn, "s")["confirmed_flush_lsn"]
            assert lsn_to_int(after_crash) <= lsn_to_int(acked)
            again = decode_all(d for _, _, d in peek_changes(conn, "s", "pub", None))
            assert all(change in seen for change in again)  # only duplicates, never new data
            # With a checkpoint after the acknowledgement it survives the crash.
            advance_slot(conn, "s", acked)
            conn.execute("CHECKPOINT")
        cluster.stop("immediate")
        cluster.start()
        with connect(dsn) as conn:
            assert slot_health(conn, "s")["confirmed_flush_lsn"] == acked
            assert list(peek_changes(conn, "s", "pub", None)) == []
    finally:
        cluster.destroy()
