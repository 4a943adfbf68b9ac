"""Reader of the ``pgoutput`` logical replication protocol, version 1. Pure: no Airflow, no I/O.

``pgoutput`` is PostgreSQL's built-in logical decoding output plugin. Read through SQL with
``pg_logical_slot_peek_binary_changes(slot, upto_lsn, NULL, 'proto_version', '1',
'publication_names', <publications>, 'messages', 'true')``, every returned row's ``data`` is one
protocol message. The byte layout is specified in the PostgreSQL documentation, chapter
"Logical Replication Message Formats"
(https://www.postgresql.org/docs/16/protocol-logicalrep-message-formats.html); all integers are
big-endian ("network order"), strings are NUL-terminated, LSNs are ``Int64``.

:func:`decode_message` turns one message into a frozen dataclass, column values as sent
(``str`` for text, ``bytes`` for binary, ``None`` for NULL, :data:`UNCHANGED_TOAST`): text is
PostgreSQL's output form of the value (``DateStyle`` ISO in the peeking session), which is what
the contract transform parses. Turning messages into row changes, across one decoding session,
is :mod:`services_sync.cdc.decoder`. This module also converts LSNs between ``pg_lsn`` text and
integers.

Version 1 of the protocol never streams in-progress transactions, so no message carries the
optional transaction id field that version 2 adds to streamed messages.

Longer than the package's ~400-line guide: it is one chapter of the protocol specification,
each message's dataclass next to the few lines that read its bytes.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
