"""Decoder of the ``pgoutput`` logical replication protocol, version 1. Pure: no Airflow, no I/O.

``pgoutput`` is PostgreSQL's built-in logical decoding output plugin. Read through SQL with
``pg_logical_slot_peek_binary_changes(slot, upto_lsn, NULL, 'proto_version', '1',
'publication_names', <publications>, 'messages', 'true')``, every returned row's ``data`` is one
protocol message. The byte layout is specified in the PostgreSQL documentation, chapter
"Logical Replication Message Formats"
(https://www.postgresql.org/docs/16/protocol-logicalrep-message-formats.html); all integers are
big-endian ("network order"), strings are NUL-terminated, LSNs are ``Int64``.

Two layers:

* :func:`decode_message` turns one message into a frozen dataclass, values still raw
  (``str`` for text, ``bytes`` for binary, ``None`` for NULL, :data:`UNCHANGED_TOAST`).
* :class:`ChangeDecoder` is stateful across the messages of one decoding session (one peek):
  it remembers Relation messages, buffers each transaction until its Commit and then emits
  :class:`Change` objects with column names, Python-typed values, the commit LSN, the LSN to
  acknowledge and a 0-based position inside the transaction. Logical messages (the
  pipeline's heartbeats), Type and Origin messages are checked and skipped: a heartbeat only
  gives the slot a Commit to acknowledge, and the capture acknowledges the position it peeked
  up to, not a position the decoder reports.

Version 1 of the protocol never streams in-progress transactions, so no message carries the
optional transaction id field that version 2 adds to streamed messages.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Literal, TypeAlias

#: PostgreSQL's epoch for replication timestamps (microseconds since then, ``Int64``).
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class PgOutputError(ValueError):
    """A message that is malformed, truncated, unknown or out of order."""


class Unchanged(enum.Enum):
    """Marker type of :data:`UNCHANGED_TOAST`."""

    TOAST = "unchanged-toast"

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


#: A column whose value is an unchanged TOASTed datum (TupleData kind ``'u'``): the server did
#: not send it because the UPDATE did not touch it. It is *not* NULL; the value is whatever the
#: row held before (only a ``REPLICA IDENTITY FULL`` old tuple carries it).
UNCHANGED_TOAST = Unchanged.TOAST

#: A column value as sent: text (``'t'``), binary (``'b'``), NULL (``'n'``) or unchanged TOAST.
RawValue: TypeAlias = str | bytes | Unchanged | None
#: A column value after type conversion (:func:`convert_value`).
Value: TypeAlias = str | int | float | bool | Decimal | datetime | date | bytes | Unchanged | None
#: The columns of one tuple, in the relation's column order.
TupleData: TypeAlias = tuple[RawValue, ...]


# -- protocol messages ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Begin:
    """``B``: start of a transaction.

    Attributes:
        final_lsn: LSN of the transaction's commit record (the same as :attr:`Commit.commit_lsn`).
        commit_time: commit timestamp.
        xid: transaction id.
    """

    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """``C``: end of a transaction.

    Attributes:
        flags: unused by the protocol so far (always 0).
        commit_lsn: LSN of the commit record (where it starts).
        end_lsn: LSN just past the commit record: the position to acknowledge (advance the slot
            to) once the whole transaction is delivered. It is also the ``lsn`` column of the
            peek row holding this message.
        commit_time: commit timestamp.
    """

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    """``O``: the transaction was replicated from another node (replication origin).

    Attributes:
        origin_lsn: LSN of the commit on the origin server.
        name: replication origin name.
    """

    origin_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a :class:`Relation`.

    Attributes:
        flags: 1 when the column is part of the replica identity (all columns for ``FULL``).
        name: column name.
        type_oid: OID of the column's data type.
        type_modifier: ``atttypmod`` (e.g. varchar length + 4), -1 when none.
    """

    flags: int
    name: str
    type_oid: int
    type_modifier: int

    @property
    def is_key(self) -> bool:
        """Whether the column belongs to the replica identity."""
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    """``R``: a table's description.

    Sent before the table's first change in each decoding session, and again after a schema
    change (``ALTER TABLE``, ``TRUNCATE`` and replica identity changes all resend it).

    Attributes:
        relation_id: OID of the table.
        namespace: schema name (the protocol sends ``''`` for ``pg_catalog``).
        name: table name.
        replica_identity: ``relreplident``: ``d`` default (primary key), ``n`` nothing,
            ``f`` full, ``i`` index.
        columns: the published columns, in the order tuples list their values.
    """

    relation_id: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]

    @property
    def qualified_name(self) -> str:
        """``schema.table``."""
        return f"{self.namespace or 'pg_catalog'}.{self.name}"


@dataclass(frozen=True, slots=True)
class TypeMessage:
    """``Y``: a data type that is not built in, sent before a Relation that uses it.

    Attributes:
        type_oid: OID of the type.
        namespace: schema name (``''`` for ``pg_catalog``).
        name: type name.
    """

    type_oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    """``I``: a new row.

    Attributes:
        relation_id: OID of the table.
        new: the new tuple (``'N'``).
    """

    relation_id: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    """``U``: a changed row.

    Attributes:
        relation_id: OID of the table.
        old_kind: ``'K'`` (replica identity key columns; the others are sent as NULL), ``'O'``
            (the whole old row, ``REPLICA IDENTITY FULL``) or ``None`` (no old data: the key
            did not change).
        old: the old tuple when ``old_kind`` is set.
        new: the new tuple (``'N'``).
    """

    relation_id: int
    old_kind: Literal["K", "O"] | None
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    """``D``: a deleted row.

    Attributes:
        relation_id: OID of the table.
        old_kind: ``'K'`` (key columns only, others NULL) or ``'O'`` (the whole old row).
        old: the old tuple.
    """

    relation_id: int
    old_kind: Literal["K", "O"]
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    """``T``: ``TRUNCATE`` of one or more tables.

    Attributes:
        options: bit 1 ``CASCADE``, bit 2 ``RESTART IDENTITY``.
        relation_ids: OIDs of the truncated tables.
    """

    options: int
    relation_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """``M``: a message written with ``pg_logical_emit_message`` (needs ``messages 'true'``).

    Attributes:
        flags: 1 when transactional (decoded at its transaction's commit, between Begin and
            Commit); 0 when not (decoded immediately, outside any transaction, even if the
            emitting transaction later aborts).
        lsn: LSN of the message.
        prefix: the prefix given to ``pg_logical_emit_message``.
        content: the payload bytes.
    """

    flags: int
    lsn: int
    prefix: str
    content: bytes

    @property
    def transactional(self) -> bool:
        """Whether the message belongs to a transaction."""
        return bool(self.flags & 1)


Message: TypeAlias = (
    Begin
    | Commit
    | Origin
    | Relation
    | TypeMessage
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
)


# -- low-level reading ----------------------------------------------------------------------
class _Reader:
    """A cursor over one message's bytes; every read checks the length."""

    __slots__ = ("_data", "_encoding", "_pos")

    def __init__(self, data: bytes, encoding: str) -> None:
        self._data = data
        self._pos = 0
        self._encoding = encoding

    def _take(self, size: int) -> bytes:
        end = self._pos + size
        if size < 0 or end > len(self._data):
            raise PgOutputError(
                f"message truncated: needs {size} bytes at offset {self._pos}, "
                f"has {len(self._data) - self._pos}"
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def byte(self) -> str:
        return self._take(1).decode("ascii", errors="replace")

    def int8(self) -> int:
        return self._take(1)[0]

    def int16(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def uint32(self) -> int:
        return struct.unpack(">I", self._take(4))[0]

    def uint64(self) -> int:
        return struct.unpack(">Q", self._take(8))[0]

    def timestamp(self) -> datetime:
        micros = struct.unpack(">q", self._take(8))[0]
        return PG_EPOCH + timedelta(microseconds=micros)

    def string(self) -> str:
        end = self._data.find(b"\x00", self._pos)
        if end < 0:
            raise PgOutputError(f"unterminated string at offset {self._pos}")
        value = self._data[self._pos : end].decode(self._encoding)
        self._pos = end + 1
        return value

    def done(self, kind: str) -> None:
        if self._pos != len(self._data):
            raise PgOutputError(
                f"{len(self._data) - self._pos} unexpected trailing bytes in {kind!r} message"
            )


def _read_tuple(reader: _Reader) -> TupleData:
    count = reader.int16()
    values: list[RawValue] = []
    for _ in range(count):
        kind = reader.byte()
        if kind == "n":
            values.append(None)
        elif kind == "u":
            values.append(UNCHANGED_TOAST)
        elif kind == "t":
            values.append(reader._take(reader.int32()).decode(reader._encoding))
        elif kind == "b":
            values.append(reader._take(reader.int32()))
        else:
            raise PgOutputError(f"unknown TupleData column kind {kind!r}")
    return tuple(values)


def _decode_begin(r: _Reader) -> Begin:
    return Begin(final_lsn=r.uint64(), commit_time=r.timestamp(), xid=r.uint32())


def _decode_commit(r: _Reader) -> Commit:
    return Commit(
        flags=r.int8(), commit_lsn=r.uint64(), end_lsn=r.uint64(), commit_time=r.timestamp()
    )


def _decode_origin(r: _Reader) -> Origin:
    return Origin(origin_lsn=r.uint64(), name=r.string())


def _decode_relation(r: _Reader) -> Relation:
    relation_id = r.uint32()
    namespace = r.string()
    name = r.string()
    replica_identity = chr(r.int8())
    columns = tuple(
        Column(flags=r.int8(), name=r.string(), type_oid=r.uint32(), type_modifier=r.int32())
        for _ in range(r.int16())
    )
    return Relation(relation_id, namespace, name, replica_identity, columns)


def _decode_type(r: _Reader) -> TypeMessage:
    return TypeMessage(type_oid=r.uint32(), namespace=r.string(), name=r.string())


def _expect(r: _Reader, allowed: str, kind: str) -> str:
    marker = r.byte()
    if marker not in allowed:
        raise PgOutputError(f"{kind!r} message: expected one of {allowed!r}, got {marker!r}")
    return marker


def _decode_insert(r: _Reader) -> Insert:
    relation_id = r.uint32()
    _expect(r, "N", "I")
    return Insert(relation_id, _read_tuple(r))


def _decode_update(r: _Reader) -> Update:
    relation_id = r.uint32()
    marker = _expect(r, "KON", "U")
    old_kind: Literal["K", "O"] | None = None
    old: TupleData | None = None
    if marker in ("K", "O"):
        old_kind = "K" if marker == "K" else "O"
        old = _read_tuple(r)
        _expect(r, "N", "U")
    return Update(relation_id, old_kind, old, _read_tuple(r))


def _decode_delete(r: _Reader) -> Delete:
    relation_id = r.uint32()
    old_kind: Literal["K", "O"] = "K" if _expect(r, "KO", "D") == "K" else "O"
    return Delete(relation_id, old_kind, _read_tuple(r))


def _decode_truncate(r: _Reader) -> Truncate:
    count = r.int32()
    options = r.int8()
    return Truncate(options, tuple(r.uint32() for _ in range(count)))


def _decode_message(r: _Reader) -> LogicalMessage:
    flags = r.int8()
    lsn = r.uint64()
    prefix = r.string()
    content = r._take(r.int32())
    return LogicalMessage(flags, lsn, prefix, content)


_DECODERS = {
    "B": _decode_begin,
    "C": _decode_commit,
    "O": _decode_origin,
    "R": _decode_relation,
    "Y": _decode_type,
    "I": _decode_insert,
    "U": _decode_update,
    "D": _decode_delete,
    "T": _decode_truncate,
    "M": _decode_message,
}


def decode_message(data: bytes | bytearray | memoryview, encoding: str = "utf-8") -> Message:
    """Decode one pgoutput (protocol version 1) message.

    Args:
        data: the message: the ``data`` column of one row of
            ``pg_logical_slot_peek_binary_changes``.
        encoding: encoding of strings and text values. pgoutput converts them to the decoding
            session's ``client_encoding``, UTF-8 for psycopg.

    Returns:
        The message as a dataclass; tuple values are raw (see :data:`RawValue`).

    Raises:
        PgOutputError: empty, truncated, over-long or unknown message, or a stream (protocol
            version 2+) message.
    """
    raw = bytes(data)
    if not raw:
        raise PgOutputError("empty message")
    kind = chr(raw[0])
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise PgOutputError(
            f"unsupported pgoutput message type {kind!r} (protocol version 1 decodes "
            f"{''.join(_DECODERS)}; is the slot read with proto_version '1'?)"
        )
    reader = _Reader(raw[1:], encoding)
    message = decoder(reader)
    reader.done(kind)
    return message


# -- LSNs -----------------------------------------------------------------------------------
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def lsn_to_int(lsn: str) -> int:
    """``'16/B374D848'`` (PostgreSQL's ``pg_lsn`` text) to the 64-bit position it stands for.

    Raises:
        ValueError: not an LSN.
    """
    match = _LSN.fullmatch(lsn.strip())
    if match is None:
        raise ValueError(f"not an LSN: {lsn!r} (expected e.g. '16/B374D848')")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def int_to_lsn(value: int) -> str:
    """A 64-bit WAL position as ``pg_lsn`` text (``'16/B374D848'``, upper case, no padding).

    Raises:
        ValueError: outside ``0 .. 2**64 - 1``.
    """
    if not 0 <= value < 1 << 64:
        raise ValueError(f"LSN out of range: {value}")
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


# -- type conversion ------------------------------------------------------------------------
#: Built-in type OIDs (``pg_type.oid``; stable across PostgreSQL versions).
BOOL, INT8, INT2, INT4, TEXT, OID = 16, 20, 21, 23, 25, 26
FLOAT4, FLOAT8, BPCHAR, VARCHAR, DATE = 700, 701, 1042, 1043, 1082
TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, NAME = 1114, 1184, 1700, 2950, 19

_TIMESTAMP = re.compile(
    r"(?P<year>\d{4,})-(?P<month>\d\d)-(?P<day>\d\d)"
    r" (?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)(?:\.(?P<fraction>\d{1,6}))?"
    r"(?:(?P<sign>[+-])(?P<oh>\d\d)(?::(?P<om>\d\d))?(?::(?P<os>\d\d))?)?"
    r"(?P<bc> BC)?"
)
_DATE = re.compile(r"(?P<year>\d{4,})-(?P<month>\d\d)-(?P<day>\d\d)(?P<bc> BC)?")


def _parse_timestamp(text: str, with_zone: bool) -> datetime | str:
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        if text in ("infinity", "-infinity"):
            return text
        raise PgOutputError(
            f"unexpected timestamp text {text!r}: decode with DateStyle 'ISO' "
            "(peek_changes sets it for the session)"
        )
    if (match["sign"] is not None) != with_zone:
        raise PgOutputError(f"timestamp {text!r} does not match its type")
    year = int(match["year"])
    if match["bc"] or year > 9999:
        return text  # out of datetime's range: kept as PostgreSQL wrote it
    value = datetime(
        year,
        int(match["month"]),
        int(match["day"]),
        int(match["hour"]),
        int(match["minute"]),
        int(match["second"]),
        int((match["fraction"] or "0").ljust(6, "0")),
    )
    if not with_zone:
        return value
    offset = timedelta(
        hours=int(match["oh"]), minutes=int(match["om"] or 0), seconds=int(match["os"] or 0)
    )
    zone = timezone(-offset if match["sign"] == "-" else offset)
    return value.replace(tzinfo=zone).astimezone(UTC)


def _parse_date(text: str) -> date | str:
    match = _DATE.fullmatch(text)
    if match is None:
        if text in ("infinity", "-infinity"):
            return text
        raise PgOutputError(f"unexpected date text {text!r}: decode with DateStyle 'ISO'")
    year = int(match["year"])
    if match["bc"] or year > 9999:
        return text
    return date(year, int(match["month"]), int(match["day"]))


def _parse_bool(text: str) -> bool:
    if text == "t":
        return True
    if text == "f":
        return False
    raise PgOutputError(f"unexpected boolean text {text!r}")


def _parse_numeric(text: str) -> Decimal:
    try:
        return Decimal(text)  # also 'NaN', 'Infinity', '-Infinity' (PostgreSQL 14+)
    except InvalidOperation:
        raise PgOutputError(f"unexpected numeric text {text!r}") from None


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise PgOutputError(f"unexpected integer text {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)  # 'NaN', 'Infinity', '-Infinity' included
    except ValueError:
        raise PgOutputError(f"unexpected float text {text!r}") from None


_CONVERTERS = {
    INT2: _parse_int,
    INT4: _parse_int,
    INT8: _parse_int,
    OID: _parse_int,
    NUMERIC: _parse_numeric,
    FLOAT4: _parse_float,
    FLOAT8: _parse_float,
    BOOL: _parse_bool,
    DATE: _parse_date,
    TIMESTAMP: lambda text: _parse_timestamp(text, with_zone=False),
    TIMESTAMPTZ: lambda text: _parse_timestamp(text, with_zone=True),
}


def convert_value(value: RawValue, type_oid: int) -> Value:
    """A raw column value as a Python value, by the column's type OID.

    Text values (PostgreSQL's output format, ``DateStyle`` ISO) become: text, varchar, bpchar,
    name and uuid → ``str``; int2/int4/int8/oid → ``int``; numeric → ``Decimal``;
    float4/float8 → ``float``; bool → ``bool``; date → ``date``; timestamp → naive
    ``datetime``; timestamptz → ``datetime`` in UTC. Values ``datetime`` cannot hold
    (``infinity``, ``-infinity``, BC, years after 9999) stay ``str``, as do values of any other
    type. ``None``, :data:`UNCHANGED_TOAST` and binary (``bytes``) values pass through.

    Raises:
        PgOutputError: text that is not valid for its (known) type, such as a timestamp written
            with a non-ISO ``DateStyle``.
    """
    if not isinstance(value, str):
        return value
    converter = _CONVERTERS.get(type_oid)
    return value if converter is None else converter(value)


# -- changes --------------------------------------------------------------------------------
ChangeOp: TypeAlias = Literal["insert", "update", "delete", "truncate"]


@dataclass(frozen=True, slots=True)
class Change:
    """One row change of a committed transaction, ready to deliver.

    ``(commit_lsn, position_in_txn)`` identifies a change uniquely and orders all changes the
    way they were committed: use it as the idempotency key. Several changes can share one WAL
    LSN (``COPY`` writes its rows as one multi-insert record), never a position.

    Attributes:
        op: ``insert``, ``update``, ``delete`` or ``truncate`` (one change per truncated table,
            with ``new`` empty and ``old_key`` ``None``).
        relation: ``schema.table``.
        commit_lsn: LSN of the transaction's commit record (Begin's ``final_lsn``).
        xid: transaction id.
        position_in_txn: 0-based index of the change within its transaction.
        new: the new row (insert, update); ``{}`` for delete and truncate. An update's columns
            that were not sent are :data:`UNCHANGED_TOAST`.
        old_key: for delete, and for update when the server sent old data: the replica identity
            columns (``'K'``), or the whole old row under ``REPLICA IDENTITY FULL`` (``'O'``);
            ``None`` when none was sent (an update that did not change the key).
        end_lsn: LSN just past the commit record: advance the slot to it once every change of
            the transaction is delivered (advancing to ``commit_lsn`` replays the transaction).
        commit_time: commit timestamp.
    """

    op: ChangeOp
    relation: str
    commit_lsn: int
    xid: int
    position_in_txn: int
    new: dict[str, Value]
    old_key: dict[str, Value] | None
    end_lsn: int
    commit_time: datetime


@dataclass
class _Pending:
    """A transaction between its Begin and its Commit."""

    begin: Begin
    items: list[Insert | Update | Delete | Truncate] = field(default_factory=list)


class ChangeDecoder:
    """Turns the messages of one decoding session into committed :class:`Change` events.

    Use one decoder per peek: pgoutput sends every Relation again at the start of each session
    (and after a schema change), and a decoder must see the Relation before the changes of it.

    Example::

        decoder = ChangeDecoder()
        for lsn, xid, data in peek_changes(conn, slot, publication, upto_lsn):
            for change in decoder.feed(data):
                ...

    Attributes:
        relations: the latest Relation per relation OID.
    """

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self._pending: _Pending | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Change]:
        """Process one message; return the changes it completes.

        Changes are buffered until their Commit, then returned together in order.

        Raises:
            PgOutputError: a malformed message, a change of a relation never described, or
                messages out of order (a change outside a transaction, Begin inside one, a
                Commit not matching its Begin).
        """
        message = decode_message(data)
        if isinstance(message, Relation):
            self.relations[message.relation_id] = message
            return []
        if isinstance(message, TypeMessage):
            return []  # a value of a type that has no converter stays text
        if isinstance(message, LogicalMessage) and not message.transactional:
            return []
        if isinstance(message, Begin):
            if self._pending is not None:
                raise PgOutputError(
                    f"Begin of xid {message.xid} inside open xid {self._pending.begin.xid}"
                )
            self._pending = _Pending(message)
            return []
        pending = self._pending
        if pending is None:
            raise PgOutputError(f"{type(message).__name__} message outside a transaction")
        if isinstance(message, Origin | LogicalMessage):
            return []  # where the transaction came from; a heartbeat
        if isinstance(message, Commit):
            self._pending = None
            if message.commit_lsn != pending.begin.final_lsn:
                raise PgOutputError(
                    f"Commit LSN {int_to_lsn(message.commit_lsn)} does not match Begin's "
                    f"final LSN {int_to_lsn(pending.begin.final_lsn)}"
                )
            return self._emit(pending, message)
        if isinstance(message, Insert | Update | Delete):
            self._relation(message.relation_id)  # fail now, not at Commit
        elif isinstance(message, Truncate):
            for relation_id in message.relation_ids:
                self._relation(relation_id)
        pending.items.append(message)
        return []

    # -- internals -------------------------------------------------------------------------
    def _relation(self, relation_id: int) -> Relation:
        try:
            return self.relations[relation_id]
        except KeyError:
            raise PgOutputError(
                f"change of relation {relation_id} before its Relation message"
            ) from None

    def _emit(self, pending: _Pending, commit: Commit) -> list[Change]:
        begin = pending.begin
        events: list[Change] = []
        position = 0

        def change(op: ChangeOp, relation: Relation, new: dict, old: dict | None) -> Change:
            return Change(
                op=op,
                relation=relation.qualified_name,
                commit_lsn=commit.commit_lsn,
                xid=begin.xid,
                position_in_txn=position,
                new=new,
                old_key=old,
                end_lsn=commit.end_lsn,
                commit_time=commit.commit_time,
            )

        for item in pending.items:
            if isinstance(item, Truncate):
                for relation_id in item.relation_ids:
                    events.append(change("truncate", self.relations[relation_id], {}, None))
                    position += 1
                continue
            relation = self.relations[item.relation_id]
            if isinstance(item, Insert):
                events.append(change("insert", relation, self._row(relation, item.new), None))
            elif isinstance(item, Update):
                old = self._old(relation, item.old_kind, item.old)
                events.append(change("update", relation, self._row(relation, item.new), old))
            else:
                old = self._old(relation, item.old_kind, item.old)
                events.append(change("delete", relation, {}, old))
            position += 1
        return events

    def _row(self, relation: Relation, values: TupleData) -> dict[str, Value]:
        if len(values) != len(relation.columns):
            raise PgOutputError(
                f"tuple of {len(values)} columns for {relation.qualified_name}, "
                f"which has {len(relation.columns)}"
            )
        pairs = zip(relation.columns, values, strict=True)
        return {column.name: convert_value(value, column.type_oid) for column, value in pairs}

    def _old(
        self, relation: Relation, kind: Literal["K", "O"] | None, values: TupleData | None
    ) -> dict[str, Value] | None:
        if kind is None or values is None:
            return None
        row = self._row(relation, values)
        if kind == "O":
            return row
        # 'K' lists every column but sends only the identity ones; the rest are NULL fillers.
        return {column.name: row[column.name] for column in relation.columns if column.is_key}
