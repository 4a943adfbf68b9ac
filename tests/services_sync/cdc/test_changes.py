"""CDC mode's pure logic: snapshot visibility, staging, delete records, batch plans, keys."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services_sync.cdc.changes import (
    Snapshot,
    chunks,
    is_source_table,
    key_scope,
    record_row,
    records_per_batch,
    snapshot_change,
    stage_changes,
    staged_change,
)
from services_sync.cdc.decoder import Change
from services_sync.cdc.pgoutput import UNCHANGED_TOAST, PgOutputError
from services_sync.core.payload import body_sha256, build_body, scoped_key
from services_sync.core.transform import transform_rows
from tests.services_sync.cdc.test_pgoutput import (
    OID_SR,
    enc_begin,
    enc_commit,
    enc_insert,
    enc_relation,
    sr_relation,
    sr_row,
)

T = datetime(2025, 5, 14, 10, 0, 1, tzinfo=UTC)
OPENED = datetime(2025, 5, 13, 9, tzinfo=UTC)


def change(op="insert", new=None, old=None, **kwargs) -> Change:
    defaults = {
        "relation": "public.service_requests",
        "commit_lsn": 0x16B3748,
        "xid": 750,
        "position_in_txn": 2,
        "commit_time": T,
    }
    return Change(op=op, new=new or {}, old_key=old, **{**defaults, **kwargs})


ROW = {
    "service_id": "water",
    "request_id": "R-1",
    "opening_date": OPENED,
    "status_id": "2",
    "last_modified_date": T,
}


# -- snapshot visibility ---------------------------------------------------------------------
def test_snapshot_parse_and_visibility():
    snap = Snapshot.parse("100:110:102,105")
    assert snap == Snapshot(100, 110, frozenset({102, 105}))
    assert snap.sees(99) and snap.sees(101) and snap.sees(109)
    assert not snap.sees(102) and not snap.sees(105)  # running when the snapshot was taken
    assert not snap.sees(110) and not snap.sees(200)  # started after it
    assert Snapshot.parse("7:7:") == Snapshot(7, 7, frozenset())


@pytest.mark.parametrize("text", ["", "1:2", "a:b:c", "1:2:x"])
def test_snapshot_parse_rejects_garbage(text):
    with pytest.raises(ValueError, match="not a pg_snapshot"):
        Snapshot.parse(text)


def test_32_bit_xids_are_placed_in_the_snapshot_epoch():
    epoch = 3 << 32
    snap = Snapshot(epoch + 10, epoch + 20, frozenset({epoch + 15}))
    assert snap.full_xid(12) == epoch + 12
    assert snap.full_xid(2**32 - 5) == epoch - 5  # the previous epoch, just before wraparound
    assert snap.sees(2**32 - 5)
    assert not snap.sees(15) and not snap.sees(25)


@given(
    xmax=st.integers(min_value=2**31, max_value=2**62),
    offset=st.integers(min_value=-(2**31) + 1, max_value=2**31 - 1),
)
def test_full_xid_recovers_any_live_xid(xmax, offset):
    snap = Snapshot(xmax - 1, xmax, frozenset())
    assert snap.full_xid((xmax + offset) % 2**32) == xmax + offset


def test_source_table_in_any_schema():
    assert is_source_table("public.service_requests")
    assert is_source_table("ops.service_requests")
    assert not is_source_table("public.service_requests_archive")


# -- staging -------------------------------------------------------------------------------
def test_insert_is_staged_with_its_position_and_json_safe_row():
    staged = staged_change(7, change(new=ROW))
    assert staged == (
        7,
        "0/16B3748",
        2,
        "insert",
        T,
        "water",
        "R-1",
        {
            "service_id": "water",
            "request_id": "R-1",
            "opening_date": "2025-05-13T09:00:00+00:00",
            "status_id": "2",
            "last_modified_date": "2025-05-14T10:00:01+00:00",
        },
    )


def test_an_unchanged_toast_value_is_taken_from_the_old_row_or_left_missing():
    new = {**ROW, "request_id": UNCHANGED_TOAST}
    assert staged_change(1, change("update", new, old=ROW))[6] == "R-1"
    staged = staged_change(1, change("update", new, old=None))
    assert staged[6] is None and staged[7]["request_id"] is None


def test_delete_is_staged_with_the_old_row():
    staged = staged_change(1, change("delete", old={"service_id": "w", "request_id": 5}))
    assert staged[3:] == ("delete", T, "w", "5", {"service_id": "w", "request_id": 5})


def test_the_decoded_text_of_a_row_gives_the_record_of_its_values():
    text = {
        "service_id": "water",
        "request_id": "R-1",
        "opening_date": "2025-05-13 09:00:00+00",
        "status_id": "2",
        "last_modified_date": "2025-05-14 10:00:01+00",
    }
    staged = [staged_change(1, change(new=row))[7] for row in (text, ROW)]
    from_text, from_values = (transform_rows([row]).records for row in staged)
    assert from_text == from_values != []


def test_snapshot_rows_sort_before_every_change():
    row = ("water", "R-1", OPENED, "2", T)
    assert snapshot_change(3, 41, row, T)[:6] == (3, "0/0", 41, "snapshot", T, "water")


# -- what a change is delivered as -------------------------------------------------------------
def test_a_delete_becomes_a_flagged_record_at_its_commit_time():
    old = staged_change(1, change("delete", old=ROW))[7]
    result = transform_rows([record_row("delete", T, old, deleted_status_id=-1)])
    assert result.records == [
        {
            "service_id": "water",
            "request_id": "R-1",
            "opening_date": "2025-05-13T09:00:00Z",
            "status_id": -1,
            "last_modified_date": "2025-05-14T10:00:01Z",
        }
    ]


def test_a_delete_without_the_old_opening_date_is_quarantined():
    old = {"service_id": "water", "request_id": "R-1"}
    result = transform_rows([record_row("delete", T, old, deleted_status_id=-1)])
    assert result.records == []
    assert result.rejected[0].reason == "opening_date is NULL"


def test_inserts_and_updates_are_the_row_itself():
    row = staged_change(1, change("update", ROW))[7]
    assert record_row("update", T, row, deleted_status_id=-1) == row


# -- batches and keys -------------------------------------------------------------------------
def test_batch_size_shrinks_to_fit_the_byte_bound():
    assert records_per_batch(200, batch_size=10, max_batch_bytes=1 << 20) == 10
    assert records_per_batch(960, batch_size=10, max_batch_bytes=4096) == 4  # 4096 // (960 + 64)
    assert records_per_batch(10_000, batch_size=10, max_batch_bytes=4096) == 1


@given(
    records=st.integers(min_value=0, max_value=5000),
    size=st.integers(min_value=1, max_value=600),
)
def test_chunks_cover_every_record_once_in_order(records, size):
    cut = list(chunks(iter(range(records)), size))
    assert [i for chunk in cut for i in chunk] == list(range(records))
    assert all(len(chunk) == size for chunk in cut[:-1])
    assert all(0 < len(chunk) <= size for chunk in cut)


def test_keys_come_from_change_positions_and_content_never_from_runs():
    body = build_body([{"request_id": "R-1"}])
    key = scoped_key(key_scope(("0/16B3748", 0), ("0/16B9000", 7)), body)
    assert key == f"services-requests.cdc.v1:0/16B3748.0-0/16B9000.7:{body_sha256(body)[:40]}"
    other = build_body([{"request_id": "R-2"}])
    assert scoped_key(key_scope(("0/16B3748", 0), ("0/16B9000", 7)), other) != key
    assert scoped_key(key_scope(("0/16B3748", 1), ("0/16B9000", 7)), body) != key


# -- staging a peek ---------------------------------------------------------------------------
def stage(messages, **kwargs):
    written: list[tuple] = []
    options = {"window_id": 4, "floor_lsn": None, "snapshot": None} | kwargs
    counts = stage_changes(messages, written.append, **options)
    return written, counts


def test_a_large_transaction_is_staged_before_its_commit_is_read():
    size = 20_000
    written: list[tuple] = []
    staged_when_the_commit_was_read = []

    def messages():
        yield enc_begin(0x900, 7)
        yield sr_relation()
        for i in range(size):
            yield enc_insert(OID_SR, sr_row(f"R{i}"))
        staged_when_the_commit_was_read.append(len(written))
        yield enc_commit(0x900, 0x990)

    counts = stage_changes(messages(), written.append, window_id=4, floor_lsn=None, snapshot=None)
    assert staged_when_the_commit_was_read == [size]  # nothing waited for the Commit
    assert counts == {"changes": size, "already_acknowledged": 0, "in_snapshot": 0}
    assert [row[2] for row in written] == list(range(size))
    assert written[0][:4] == (4, "0/900", 0, "insert")
    assert written[0][7] == (
        '{"service_id": "water", "request_id": "R0", "opening_date": "2025-05-13 09:00:00+00", '
        '"status_id": "1", "last_modified_date": "2025-05-14 10:00:00.123456+00"}'
    )


def test_a_peek_that_ends_inside_a_transaction_fails():
    messages = [enc_begin(0x100, 1), sr_relation(), enc_insert(OID_SR, sr_row("R1"))]
    with pytest.raises(PgOutputError, match="ended inside xid 1"):
        stage(messages)


def test_transactions_below_the_floor_in_the_snapshot_or_of_other_tables_are_skipped():
    messages = [
        enc_begin(0x100, 100),
        sr_relation(),
        enc_relation(2, "public", "other", [(1, "id", 23, -1)]),
        enc_insert(OID_SR, sr_row("below-floor")),
        enc_commit(0x100, 0x120),
        enc_begin(0x200, 101),  # commit record starts at the floor: not acknowledged yet
        enc_insert(OID_SR, sr_row("at-floor")),
        enc_insert(2, ("1",)),
        enc_commit(0x200, 0x220),
        enc_begin(0x300, 102),  # committed before the snapshot was taken
        enc_insert(OID_SR, sr_row("seen")),
        enc_commit(0x300, 0x320),
    ]
    written, counts = stage(messages, floor_lsn=0x200, snapshot=Snapshot.parse("101:105:101"))
    assert [row[6] for row in written] == ["at-floor"]
    assert counts == {"changes": 1, "already_acknowledged": 1, "in_snapshot": 1}
