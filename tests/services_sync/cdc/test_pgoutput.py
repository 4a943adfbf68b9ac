"""The pgoutput (protocol v1) reader and the change decoder, on hand-built messages.

The byte layouts follow PostgreSQL's "Logical Replication Message Formats"
(protocol-logicalrep-message-formats.html); tests/integration/test_pgoutput_real.py checks the
same decoder against a real server.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services_sync.cdc.decoder import Change, ChangeDecoder
from services_sync.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PgOutputError,
    Relation,
    Truncate,
    TypeMessage,
    Update,
    decode_message,
    int_to_lsn,
    lsn_to_int,
)
from services_sync.core.transform import InvalidRow, format_status, format_timestamp

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
T0 = datetime(2025, 5, 14, 10, 0, 0, 123456, tzinfo=UTC)
OID_SR = 16385  # relation id used for service_requests in these tests
# Type OIDs (pg_type.oid) the hand-built Relation messages describe their columns with.
BOOL, INT8, INT2, INT4, TEXT, FLOAT8, VARCHAR = 16, 20, 21, 23, 25, 701, 1043
DATE, TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, JSONB = 1082, 1114, 1184, 1700, 2950, 3802


# -- a tiny pgoutput encoder ----------------------------------------------------------------
def _s(text: str) -> bytes:
    return text.encode() + b"\x00"


def _ts(value: datetime) -> bytes:
    delta = value - PG_EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return struct.pack(">q", micros)


def enc_begin(final_lsn: int, xid: int, commit_time: datetime = T0) -> bytes:
    return b"B" + struct.pack(">Q", final_lsn) + _ts(commit_time) + struct.pack(">I", xid)


def enc_commit(commit_lsn: int, end_lsn: int, commit_time: datetime = T0, flags: int = 0) -> bytes:
    return b"C" + struct.pack(">BQQ", flags, commit_lsn, end_lsn) + _ts(commit_time)


def enc_origin(origin_lsn: int, name: str) -> bytes:
    return b"O" + struct.pack(">Q", origin_lsn) + _s(name)


def enc_relation(
    relation_id: int,
    namespace: str,
    name: str,
    columns: list[tuple[int, str, int, int]],
    identity: str = "d",
) -> bytes:
    out = b"R" + struct.pack(">I", relation_id) + _s(namespace) + _s(name)
    out += identity.encode() + struct.pack(">h", len(columns))
    for flags, col, type_oid, typmod in columns:
        out += struct.pack(">B", flags) + _s(col) + struct.pack(">Ii", type_oid, typmod)
    return out


def enc_type(type_oid: int, namespace: str, name: str) -> bytes:
    return b"Y" + struct.pack(">I", type_oid) + _s(namespace) + _s(name)


def enc_tuple(values) -> bytes:
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED_TOAST:
            out += b"u"
        elif isinstance(value, bytes):
            out += b"b" + struct.pack(">i", len(value)) + value
        else:
            data = value.encode()
            out += b"t" + struct.pack(">i", len(data)) + data
    return out


def enc_insert(relation_id: int, new) -> bytes:
    return b"I" + struct.pack(">I", relation_id) + b"N" + enc_tuple(new)


def enc_update(relation_id: int, new, old=None, old_kind: str | None = None) -> bytes:
    out = b"U" + struct.pack(">I", relation_id)
    if old_kind is not None:
        out += old_kind.encode() + enc_tuple(old)
    return out + b"N" + enc_tuple(new)


def enc_delete(relation_id: int, old, old_kind: str = "K") -> bytes:
    return b"D" + struct.pack(">I", relation_id) + old_kind.encode() + enc_tuple(old)


def enc_truncate(relation_ids: list[int], options: int = 0) -> bytes:
    return (
        b"T"
        + struct.pack(">iB", len(relation_ids), options)
        + b"".join(struct.pack(">I", r) for r in relation_ids)
    )


def enc_message(prefix: str, content: bytes, lsn: int, transactional: bool = True) -> bytes:
    return (
        b"M"
        + struct.pack(">BQ", int(transactional), lsn)
        + _s(prefix)
        + struct.pack(">i", len(content))
        + content
    )


# service_requests as pgoutput describes it: all columns flagged key under REPLICA IDENTITY
# FULL; under DEFAULT with a (service_id, request_id) primary key only those two are.
SR_COLUMNS = [
    ("service_id", TEXT),
    ("request_id", TEXT),
    ("opening_date", TIMESTAMPTZ),
    ("status_id", TEXT),
    ("last_modified_date", TIMESTAMPTZ),
]


def sr_relation(identity: str = "f", key: tuple[str, ...] = ()) -> bytes:
    cols = [(1 if identity == "f" or name in key else 0, name, oid, -1) for name, oid in SR_COLUMNS]
    return enc_relation(OID_SR, "public", "service_requests", cols, identity)


def sr_row(request_id: str, status: str = "1", lmd: str = "2025-05-14 10:00:00.123456+00"):
    return ("water", request_id, "2025-05-13 09:00:00+00", status, lmd)


def sr_dict(request_id: str, status: str = "1", lmd: str = "2025-05-14 10:00:00.123456+00"):
    return dict(zip([name for name, _ in SR_COLUMNS], sr_row(request_id, status, lmd), strict=True))


def run(*messages: bytes, decoder: ChangeDecoder | None = None) -> list:
    decoder = decoder or ChangeDecoder()
    return [change for data in messages for change in decoder.feed(data)]


# -- one message at a time ------------------------------------------------------------------
def test_begin():
    message = decode_message(enc_begin(0x16_B374D848, 735, T0))
    assert message == Begin(final_lsn=0x16_B374D848, commit_time=T0, xid=735)


def test_commit():
    message = decode_message(enc_commit(0x1874488, 0x18744B8, T0))
    assert message == Commit(flags=0, commit_lsn=0x1874488, end_lsn=0x18744B8, commit_time=T0)


def test_commit_time_before_2000_is_negative_micros():
    when = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert decode_message(enc_commit(1, 2, when)).commit_time == when


def test_origin():
    assert decode_message(enc_origin(0x1_00000002, "upstream")) == Origin(0x1_00000002, "upstream")


def test_relation_with_columns_flags_and_typmod():
    data = enc_relation(
        OID_SR,
        "public",
        "service_requests",
        [(1, "service_id", TEXT, -1), (0, "code", VARCHAR, 14)],
        identity="d",
    )
    message = decode_message(data)
    assert message == Relation(
        relation_id=OID_SR,
        namespace="public",
        name="service_requests",
        replica_identity="d",
        columns=(Column(1, "service_id", TEXT, -1), Column(0, "code", VARCHAR, 14)),
    )
    assert message.qualified_name == "public.service_requests"
    assert [c.is_key for c in message.columns] == [True, False]


def test_relation_in_pg_catalog_has_an_empty_namespace():
    message = decode_message(enc_relation(1, "", "pg_class", []))
    assert message.qualified_name == "pg_catalog.pg_class"
    assert message.columns == ()


def test_type():
    assert decode_message(enc_type(16390, "public", "mood")) == TypeMessage(16390, "public", "mood")


def test_insert_with_every_tuple_kind():
    data = enc_insert(OID_SR, ["abc", None, UNCHANGED_TOAST, b"\x00\x01\xff", "", "é"])
    assert decode_message(data) == Insert(
        OID_SR, ("abc", None, UNCHANGED_TOAST, b"\x00\x01\xff", "", "é")
    )


def test_update_without_old_data():
    message = decode_message(enc_update(OID_SR, ["a", "b"]))
    assert message == Update(OID_SR, None, None, ("a", "b"))


@pytest.mark.parametrize("kind", ["K", "O"])
def test_update_with_old_key_or_old_row(kind):
    message = decode_message(enc_update(OID_SR, ["a", "z"], old=["a", "b"], old_kind=kind))
    assert message == Update(OID_SR, kind, ("a", "b"), ("a", "z"))


@pytest.mark.parametrize("kind", ["K", "O"])
def test_delete(kind):
    message = decode_message(enc_delete(OID_SR, ["a", None], old_kind=kind))
    assert message == Delete(OID_SR, kind, ("a", None))


def test_truncate_of_several_tables_with_options():
    message = decode_message(enc_truncate([OID_SR, 16400], options=3))
    assert message == Truncate(3, (OID_SR, 16400))  # CASCADE | RESTART IDENTITY
    assert decode_message(enc_truncate([OID_SR])) == Truncate(0, (OID_SR,))


@pytest.mark.parametrize("transactional", [True, False])
def test_logical_message(transactional):
    message = decode_message(enc_message("services_sync", b"heartbeat", 0x18749E0, transactional))
    assert message == LogicalMessage(int(transactional), 0x18749E0, "services_sync", b"heartbeat")
    assert message.transactional is transactional


def test_memoryview_and_bytearray_input():
    data = enc_begin(5, 6)
    assert decode_message(memoryview(data)) == decode_message(bytearray(data))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"Z\x00", "unsupported pgoutput message type 'Z'"),
        (b"S" + bytes(8), "unsupported"),  # Stream Start: protocol version 2
        (enc_begin(1, 2)[:-1], "truncated"),
        (enc_begin(1, 2) + b"\x00", "trailing"),
        (b"O" + struct.pack(">Q", 1) + b"no-terminator", "unterminated"),
        (b"I" + struct.pack(">I", 1) + b"X" + enc_tuple([]), "expected one of 'N'"),
        (b"U" + struct.pack(">I", 1) + b"Q" + enc_tuple([]), "expected one of 'KON'"),
        (b"D" + struct.pack(">I", 1) + b"N" + enc_tuple([]), "expected one of 'KO'"),
        (enc_update(1, ["a"], ["b"], "K").replace(b"N\x00\x01", b"X\x00\x01"), "expected"),
        (b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"x", "column kind 'x'"),
        (
            b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"t\x00\x00\x00\x09ab",
            "truncated",
        ),
        (b"M" + struct.pack(">BQ", 1, 1) + b"p\x00" + struct.pack(">i", -1), "truncated"),
    ],
)
def test_malformed_messages_raise(data, match):
    with pytest.raises(PgOutputError, match=match):
        decode_message(data)


def test_pgoutput_error_is_a_value_error():
    assert issubclass(PgOutputError, ValueError)


# -- LSNs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("16/B374D848", 0x16_B374D848),
        ("0/1874390", 0x1874390),
        ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
    ],
)
def test_lsn_round_trip(text, value):
    assert lsn_to_int(text) == value
    assert int_to_lsn(value) == text


def test_lsn_parsing_accepts_lower_case_and_padding():
    assert lsn_to_int("16/b374d848") == lsn_to_int("00000016/B374D848")


@pytest.mark.parametrize("text", ["", "16", "16/", "/1", "1/2/3", "G/0", "123456789/0", "-1/0"])
def test_bad_lsn_text(text):
    with pytest.raises(ValueError, match="not an LSN"):
        lsn_to_int(text)


@pytest.mark.parametrize("value", [-1, 2**64])
def test_lsn_out_of_range(value):
    with pytest.raises(ValueError, match="out of range"):
        int_to_lsn(value)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lsn_round_trip_property(value):
    assert lsn_to_int(int_to_lsn(value)) == value


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(0, 2**64 - 1))
def test_lsn_text_order_is_not_numeric_order_but_int_order_is(a, b):
    # Compare LSNs as ints: '9/0' < '10/0' numerically, not as strings.
    assert (lsn_to_int(int_to_lsn(a)) < lsn_to_int(int_to_lsn(b))) == (a < b)


# -- values ---------------------------------------------------------------------------------
def test_values_are_the_text_postgresql_wrote_whatever_the_column_type():
    texts = ("2025-05-14 15:30:00.5+05:30", "0044-03-15 BC", "12.3400", "t", "infinity", "{}")
    types = (TIMESTAMPTZ, DATE, NUMERIC, BOOL, TIMESTAMP, JSONB)
    columns = [(1, f"c{i}", oid, -1) for i, oid in enumerate(types)]
    (change,) = run(
        enc_begin(0x100, 1),
        enc_relation(1, "public", "t", columns),
        enc_insert(1, texts),
        enc_commit(0x100, 0x120),
    )
    assert change.new == {f"c{i}": text for i, text in enumerate(texts)}


# -- ChangeDecoder --------------------------------------------------------------------------
def test_insert_is_emitted_at_once_with_begin_lsn_xid_time_and_position():
    decoder = ChangeDecoder()
    assert decoder.feed(enc_begin(0x200, 735)) == []
    assert decoder.feed(sr_relation()) == []
    events = decoder.feed(enc_insert(OID_SR, sr_row("R1")))  # not held until Commit
    assert events == [
        Change(
            op="insert",
            relation="public.service_requests",
            commit_lsn=0x200,
            xid=735,
            position_in_txn=0,
            new=sr_dict("R1"),
            old_key=None,
            commit_time=T0,
        )
    ]
    assert decoder.feed(enc_commit(0x200, 0x230)) == []
    decoder.finish()  # ended between transactions
    assert decoder.feed(enc_begin(0x300, 736)) == []  # the transaction is closed


def test_a_large_transaction_streams_before_its_commit():
    size = 10_000
    decoder = ChangeDecoder()
    decoder.feed(enc_begin(0x900, 7))
    decoder.feed(sr_relation())
    seen_before_commit = 0
    for i in range(size):
        (change,) = decoder.feed(enc_insert(OID_SR, sr_row(f"R{i}")))
        assert change.position_in_txn == seen_before_commit
        seen_before_commit += 1
    assert decoder.feed(enc_commit(0x900, 0x990)) == []
    assert seen_before_commit == size


def test_messages_that_end_inside_a_transaction_fail_at_finish():
    decoder = ChangeDecoder()
    run(enc_begin(0x100, 5), sr_relation(), enc_insert(OID_SR, sr_row("R1")), decoder=decoder)
    with pytest.raises(PgOutputError, match="ended inside xid 5"):
        decoder.finish()


def test_multi_row_statement_gets_distinct_positions():
    # COPY writes its rows as one multi-insert WAL record: same LSN, distinct positions.
    events = run(
        enc_begin(0x900, 7),
        sr_relation(),
        *(enc_insert(OID_SR, sr_row(f"R{i}")) for i in range(5)),
        enc_delete(OID_SR, sr_row("R0"), "O"),
        enc_commit(0x900, 0x990),
    )
    assert [e.position_in_txn for e in events] == list(range(6))
    assert {e.commit_lsn for e in events} == {0x900}
    assert [e.new.get("request_id") for e in events] == ["R0", "R1", "R2", "R3", "R4", None]
    assert len({(e.commit_lsn, e.position_in_txn) for e in events}) == 6


def test_transactions_come_out_in_commit_order_positions_restart():
    events = run(
        enc_begin(0x100, 1),
        sr_relation(),
        enc_insert(OID_SR, sr_row("A")),
        enc_commit(0x100, 0x120),
        enc_begin(0x200, 2),
        enc_insert(OID_SR, sr_row("B")),
        enc_insert(OID_SR, sr_row("C")),
        enc_commit(0x200, 0x220),
    )
    assert [(e.xid, e.commit_lsn, e.position_in_txn) for e in events] == [
        (1, 0x100, 0),
        (2, 0x200, 0),
        (2, 0x200, 1),
    ]


def test_update_with_full_identity_carries_the_whole_old_row():
    events = run(
        enc_begin(0x100, 1),
        sr_relation("f"),
        enc_update(OID_SR, sr_row("R1", "2"), old=sr_row("R1", "1"), old_kind="O"),
        enc_commit(0x100, 0x120),
    )
    (change,) = events
    assert change.op == "update"
    assert change.new == sr_dict("R1", "2")
    assert change.old_key == sr_dict("R1", "1")


def test_update_without_key_change_has_no_old_key():
    (change,) = run(
        enc_begin(0x100, 1),
        sr_relation("d", key=("service_id", "request_id")),
        enc_update(OID_SR, sr_row("R1", "2")),
        enc_commit(0x100, 0x120),
    )
    assert change.old_key is None
    assert change.new == sr_dict("R1", "2")


def test_key_tuple_keeps_only_identity_columns():
    # Under REPLICA IDENTITY DEFAULT a 'K' tuple lists every column, non-key ones as NULL.
    key_only = ("water", "R1", None, None, None)
    events = run(
        enc_begin(0x100, 1),
        sr_relation("d", key=("service_id", "request_id")),
        enc_update(OID_SR, sr_row("R9"), old=key_only, old_kind="K"),
        enc_delete(OID_SR, ("water", "R9", None, None, None), "K"),
        enc_commit(0x100, 0x120),
    )
    assert [e.op for e in events] == ["update", "delete"]
    assert events[0].old_key == {"service_id": "water", "request_id": "R1"}
    assert events[0].new["request_id"] == "R9"
    assert events[1].old_key == {"service_id": "water", "request_id": "R9"}
    assert events[1].new == {}


def test_delete_with_full_identity_keeps_nulls_of_the_old_row():
    (change,) = run(
        enc_begin(0x100, 1),
        sr_relation("f"),
        enc_delete(OID_SR, ("water", "R1", None, "1", None), "O"),
        enc_commit(0x100, 0x120),
    )
    assert change.old_key == {
        "service_id": "water",
        "request_id": "R1",
        "opening_date": None,
        "status_id": "1",
        "last_modified_date": None,
    }


def test_nulls_stay_none():
    (change,) = run(
        enc_begin(0x100, 1),
        sr_relation(),
        enc_insert(OID_SR, (None, "R1", None, None, None)),
        enc_commit(0x100, 0x120),
    )
    assert change.new == dict.fromkeys(
        ["service_id", "opening_date", "status_id", "last_modified_date"]
    ) | {"request_id": "R1"}


def test_unchanged_toast_is_a_sentinel_not_none():
    (change,) = run(
        enc_begin(0x100, 1),
        sr_relation("f"),
        enc_update(
            OID_SR,
            ("water", "R1", UNCHANGED_TOAST, "2", UNCHANGED_TOAST),
            old=sr_row("R1"),
            old_kind="O",
        ),
        enc_commit(0x100, 0x120),
    )
    assert change.new["opening_date"] is UNCHANGED_TOAST
    assert change.new["last_modified_date"] is UNCHANGED_TOAST
    assert change.new["opening_date"] is not None
    assert change.old_key["opening_date"] == "2025-05-13 09:00:00+00"
    assert repr(UNCHANGED_TOAST) == "UNCHANGED_TOAST"


def test_binary_values_stay_bytes():
    (change,) = run(
        enc_begin(0x100, 1),
        enc_relation(1, "public", "t", [(1, "id", INT4, -1), (0, "blob", 17, -1)]),
        enc_insert(1, (b"\x00\x00\x00\x07", b"\xde\xad")),
        enc_commit(0x100, 0x120),
    )
    assert change.new == {"id": b"\x00\x00\x00\x07", "blob": b"\xde\xad"}


def test_type_messages_are_skipped():
    (change,) = run(
        enc_begin(0x100, 1),
        enc_type(16390, "public", "mood"),
        enc_relation(
            2,
            "app",
            "moods",
            [(1, "id", INT8, -1), (0, "mood", 16390, -1), (0, "doc", JSONB, -1)],
        ),
        enc_insert(2, ("42", "happy", '{"a": [1]}')),
        enc_commit(0x100, 0x120),
    )
    assert change.relation == "app.moods"
    assert change.new == {"id": "42", "mood": "happy", "doc": '{"a": [1]}'}


def test_truncate_gives_one_change_per_table():
    events = run(
        enc_begin(0x100, 1),
        sr_relation(),
        enc_relation(2, "public", "other", [(1, "id", INT4, -1)]),
        enc_insert(OID_SR, sr_row("R1")),
        enc_truncate([OID_SR, 2], options=1),
        enc_commit(0x100, 0x120),
    )
    assert [(e.op, e.relation, e.position_in_txn, e.new, e.old_key) for e in events] == [
        ("insert", "public.service_requests", 0, sr_dict("R1"), None),
        ("truncate", "public.service_requests", 1, {}, None),
        ("truncate", "public.other", 2, {}, None),
    ]


def test_logical_messages_are_skipped_and_take_no_position():
    events = run(
        enc_begin(0x100, 9),
        sr_relation(),
        enc_insert(OID_SR, sr_row("R1")),
        enc_message("services_sync", b"heartbeat", 0xF0),
        enc_message("p", b"now", 0xF8, transactional=False),
        enc_insert(OID_SR, sr_row("R2")),
        enc_commit(0x100, 0x120),
        enc_message("p", b"later", 0x130, transactional=False),  # outside a transaction
    )
    assert [(e.new["request_id"], e.position_in_txn) for e in events] == [("R1", 0), ("R2", 1)]


def test_a_heartbeat_only_transaction_emits_nothing():
    heartbeat = (
        enc_begin(0x100, 9),
        enc_message("services_sync", b"heartbeat", 0x100),
        enc_commit(0x100, 0x130),
    )
    assert run(*heartbeat) == []


def test_origin_inside_a_transaction_is_accepted():
    (change,) = run(
        enc_begin(0x100, 1),
        enc_origin(0x1_00000002, "upstream"),
        sr_relation(),
        enc_insert(OID_SR, sr_row("R1")),
        enc_commit(0x100, 0x120),
    )
    assert change.op == "insert"


def test_relation_redefined_mid_session_applies_to_later_changes():
    first = enc_relation(1, "public", "t", [(1, "id", INT4, -1)])
    second = enc_relation(1, "public", "t", [(1, "id", INT4, -1), (0, "note", TEXT, -1)])
    events = run(
        enc_begin(0x100, 1),
        first,
        enc_insert(1, ("1",)),
        enc_commit(0x100, 0x120),
        enc_begin(0x200, 2),
        second,
        enc_insert(1, ("2", "hi")),
        enc_commit(0x200, 0x220),
    )
    assert [e.new for e in events] == [{"id": "1"}, {"id": "2", "note": "hi"}]


def test_empty_transaction_emits_nothing():
    assert run(enc_begin(0x100, 1), enc_commit(0x100, 0x120)) == []


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([enc_insert(OID_SR, sr_row("R1"))], "outside a transaction"),
        ([enc_commit(1, 2)], "outside a transaction"),
        ([enc_origin(1, "o")], "outside a transaction"),
        ([enc_begin(1, 1), enc_begin(2, 2)], "inside open xid 1"),
        ([enc_begin(1, 1), enc_commit(2, 3)], "does not match"),
        ([enc_begin(1, 1), enc_insert(99, ("x",))], "relation 99 before its Relation"),
        ([enc_begin(1, 1), enc_truncate([99])], "relation 99"),
        (
            [enc_begin(1, 1), sr_relation(), enc_insert(OID_SR, ("a", "b")), enc_commit(1, 2)],
            "tuple of 2 columns",
        ),
    ],
)
def test_protocol_order_violations_raise(messages, match):
    with pytest.raises(PgOutputError, match=match):
        run(*messages)


# -- round trip -----------------------------------------------------------------------------
_raw_values = st.one_of(
    st.none(),
    st.just(UNCHANGED_TOAST),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    st.binary(max_size=64),
)


@given(st.lists(_raw_values, max_size=20), st.lists(_raw_values, max_size=20))
def test_tuple_data_round_trip(new, old):
    assert decode_message(enc_insert(7, new)) == Insert(7, tuple(new))
    assert decode_message(enc_update(7, new, old, "O")) == Update(7, "O", tuple(old), tuple(new))
    assert decode_message(enc_delete(7, old, "K")) == Delete(7, "K", tuple(old))


def _pg_offset(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}{hours:02d}"
    if minutes or secs:
        text += f":{minutes:02d}"
    if secs:
        text += f":{secs:02d}"
    return text


def _pg_timestamp(value: datetime) -> str:
    """How PostgreSQL writes a timestamp with DateStyle ISO (trailing fraction zeros cut)."""
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value:%H:%M:%S}"
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    if value.tzinfo is not None:
        text += _pg_offset(value.utcoffset())
    return text


def _pg_text(value, oid: int):
    """The tiny encoder: Python value → pgoutput text (or None/UNCHANGED/bytes as is)."""
    if value is None or value is UNCHANGED_TOAST or isinstance(value, bytes):
        return value
    if oid == BOOL:
        return "t" if value else "f"
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        return _pg_timestamp(value)
    if oid == DATE:
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    return str(value)


_offsets = st.integers(min_value=-15 * 3600, max_value=15 * 3600).map(
    lambda s: timezone(timedelta(seconds=s))
)
_naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
_typed = {
    TEXT: st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    VARCHAR: st.text(max_size=10),
    INT2: st.integers(-(2**15), 2**15 - 1),
    INT4: st.integers(-(2**31), 2**31 - 1),
    INT8: st.integers(-(2**63), 2**63 - 1),
    NUMERIC: st.decimals(allow_nan=False, allow_infinity=True),
    FLOAT8: st.floats(allow_nan=False),
    BOOL: st.booleans(),
    DATE: st.dates(),
    TIMESTAMP: _naive,
    TIMESTAMPTZ: st.builds(lambda d, tz: d.replace(tzinfo=tz), _naive, _offsets),
    UUID: st.uuids().map(str),
    JSONB: st.text(max_size=10),
}


@st.composite
def _columns_and_rows(draw):
    oids = draw(st.lists(st.sampled_from(sorted(_typed)), min_size=1, max_size=8))
    columns = [(1 if i == 0 else 0, f"c{i}", oid, -1) for i, oid in enumerate(oids)]

    def row():
        return [draw(st.one_of(st.none(), st.just(UNCHANGED_TOAST), _typed[oid])) for oid in oids]

    return columns, [(draw(st.sampled_from(["I", "U", "D"])), row(), row()) for _ in range(3)]


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(_columns_and_rows(), st.sampled_from(["K", "O"]))
def test_change_round_trip(spec, old_kind):
    columns, ops = spec
    oids = [c[2] for c in columns]
    messages = [enc_begin(0x500, 3), enc_relation(5, "public", "t", columns, "f")]
    sent = []
    for op, new, old in ops:
        new_text = [_pg_text(v, oid) for v, oid in zip(new, oids, strict=True)]
        old_text = [_pg_text(v, oid) for v, oid in zip(old, oids, strict=True)]
        sent.append((op, new_text, old_text))
        if op == "I":
            messages.append(enc_insert(5, new_text))
        elif op == "U":
            messages.append(enc_update(5, new_text, old_text, old_kind))
        else:
            messages.append(enc_delete(5, old_text, old_kind))
    messages.append(enc_commit(0x500, 0x540))

    events = run(*messages)

    names = [c[1] for c in columns]
    keys = [c[1] for c in columns if c[0] & 1]
    assert [e.position_in_txn for e in events] == list(range(len(ops)))
    for event, (op, new, old) in zip(events, sent, strict=True):
        assert event.op == {"I": "insert", "U": "update", "D": "delete"}[op]
        expected_new = dict(zip(names, new, strict=True)) if op != "D" else {}
        assert event.new == expected_new
        if op == "I":
            assert event.old_key is None
        else:
            old_row = dict(zip(names, old, strict=True))
            expected_old = old_row if old_kind == "O" else {k: old_row[k] for k in keys}
            assert event.old_key == expected_old


def _contract(format_value, value):
    try:
        return format_value(value)
    except InvalidRow as exc:
        return f"rejected: {exc}"


@given(st.one_of(_typed[TIMESTAMP], _typed[TIMESTAMPTZ]))
def test_timestamp_text_gives_the_contract_value_of_the_timestamp(value):
    # The transform parses the text the decoder hands over: same record, same reason.
    oid = TIMESTAMP if value.tzinfo is None else TIMESTAMPTZ
    text = _pg_text(value, oid)
    as_text = _contract(lambda v: format_timestamp(v, "last_modified_date"), text)
    assert as_text == _contract(lambda v: format_timestamp(v, "last_modified_date"), value)


@given(st.one_of(_typed[INT2], _typed[INT4], _typed[INT8]))
def test_integer_text_gives_the_contract_status(value):
    assert format_status(_pg_text(value, INT8)) == value
