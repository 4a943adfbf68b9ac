"""The row changes of one logical decoding session, streamed as their messages arrive.

:class:`ChangeDecoder` is stateful across the pgoutput messages of one peek
(:mod:`services_sync.cdc.pgoutput` reads each message): it remembers Relation messages and the
open transaction's Begin, and turns every Insert, Update, Delete and Truncate into a
:class:`Change` the moment it arrives, with column names, the values' text as PostgreSQL wrote
it, the commit LSN and a 0-based position inside the transaction. Nothing is held until the
Commit: a ``pg_logical_slot_peek_binary_changes`` returns committed transactions only, and Begin
already carries what identifies a change (its transaction's commit LSN, commit time and xid),
so memory does not grow with the size of a transaction.

The Commit still closes the transaction: the decoder checks it against its Begin, and
:meth:`ChangeDecoder.finish` fails a session that ended inside a transaction. A consumer that
keeps the changes (the capture stages them in one database transaction) keeps them only once
the session finished cleanly.

Logical messages (the pipeline's heartbeats), Type and Origin messages are checked and skipped:
a heartbeat only gives the slot a Commit to acknowledge, and the capture acknowledges the
position it peeked up to, not a position the decoder reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeAlias

from services_sync.cdc.pgoutput import (
    Begin,
    Commit,
    Insert,
    LogicalMessage,
    Origin,
    PgOutputError,
    RawValue,
    Relation,
    Truncate,
    TupleData,
    TypeMessage,
    Update,
    decode_message,
    int_to_lsn,
)

ChangeOp: TypeAlias = Literal["insert", "update", "delete", "truncate"]


@dataclass(frozen=True, slots=True)
class Change:
    """One row change of a committed transaction, ready to stage.

    ``(commit_lsn, position_in_txn)`` identifies a change uniquely and orders all changes the
    way they were committed: use it as the idempotency key. Several changes can share one WAL
    LSN (``COPY`` writes its rows as one multi-insert record), never a position.

    Attributes:
        op: ``insert``, ``update``, ``delete`` or ``truncate`` (one change per truncated table,
            with ``new`` empty and ``old_key`` ``None``).
        relation: ``schema.table``.
        commit_lsn: LSN of the transaction's commit record (Begin's ``final_lsn``). The slot
            may be advanced past the transaction to any position after it; the Commit's
            ``end_lsn`` is the first such position.
        xid: transaction id.
        position_in_txn: 0-based index of the change within its transaction.
        new: the new row (insert, update); ``{}`` for delete and truncate. An update's columns
            that were not sent are :data:`~services_sync.cdc.pgoutput.UNCHANGED_TOAST`.
        old_key: for delete, and for update when the server sent old data: the replica identity
            columns (``'K'``), or the whole old row under ``REPLICA IDENTITY FULL`` (``'O'``);
            ``None`` when none was sent (an update that did not change the key).
        commit_time: commit timestamp.
    """

    op: ChangeOp
    relation: str
    commit_lsn: int
    xid: int
    position_in_txn: int
    new: dict[str, RawValue]
    old_key: dict[str, RawValue] | None
    commit_time: datetime


class ChangeDecoder:
    """Turns the messages of one decoding session into :class:`Change` events, one by one.

    Use one decoder per peek: pgoutput sends every Relation again at the start of each session
    (and after a schema change), and a decoder must see the Relation before the changes of it.

    Example::

        decoder = ChangeDecoder()
        for lsn, xid, data in peek_changes(conn, slot, publication, upto_lsn):
            for change in decoder.feed(data):
                ...
        decoder.finish()

    Attributes:
        relations: the latest Relation per relation OID.
    """

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self._begin: Begin | None = None
        self._position = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Change]:
        """Process one message; return the changes it carries (several only for Truncate).

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
            return []  # its values arrive as text like any other
        if isinstance(message, LogicalMessage) and not message.transactional:
            return []
        if isinstance(message, Begin):
            if self._begin is not None:
                raise PgOutputError(f"Begin of xid {message.xid} inside open xid {self._begin.xid}")
            self._begin, self._position = message, 0
            return []
        begin = self._begin
        if begin is None:
            raise PgOutputError(f"{type(message).__name__} message outside a transaction")
        if isinstance(message, Origin | LogicalMessage):
            return []  # where the transaction came from; a heartbeat
        if isinstance(message, Commit):
            self._begin = None
            if message.commit_lsn != begin.final_lsn:
                raise PgOutputError(
                    f"Commit LSN {int_to_lsn(message.commit_lsn)} does not match Begin's "
                    f"final LSN {int_to_lsn(begin.final_lsn)}"
                )
            return []
        if isinstance(message, Truncate):
            relations = [self._relation(relation_id) for relation_id in message.relation_ids]
            return [self._change(begin, "truncate", relation, {}, None) for relation in relations]
        relation = self._relation(message.relation_id)
        if isinstance(message, Insert):
            return [self._change(begin, "insert", relation, _row(relation, message.new), None)]
        old = _old(relation, message.old_kind, message.old)
        if isinstance(message, Update):
            return [self._change(begin, "update", relation, _row(relation, message.new), old)]
        return [self._change(begin, "delete", relation, {}, old)]

    def finish(self) -> None:
        """The session's end: fail if it stopped inside a transaction.

        Raises:
            PgOutputError: a Begin without its Commit (the changes fed since are not whole).
        """
        if self._begin is not None:
            raise PgOutputError(
                f"the messages ended inside xid {self._begin.xid} (no Commit for its Begin "
                f"at {int_to_lsn(self._begin.final_lsn)})"
            )

    # -- internals -------------------------------------------------------------------------
    def _relation(self, relation_id: int) -> Relation:
        try:
            return self.relations[relation_id]
        except KeyError:
            raise PgOutputError(
                f"change of relation {relation_id} before its Relation message"
            ) from None

    def _change(
        self,
        begin: Begin,
        op: ChangeOp,
        relation: Relation,
        new: dict[str, RawValue],
        old: dict[str, RawValue] | None,
    ) -> Change:
        change = Change(
            op=op,
            relation=relation.qualified_name,
            commit_lsn=begin.final_lsn,
            xid=begin.xid,
            position_in_txn=self._position,
            new=new,
            old_key=old,
            commit_time=begin.commit_time,
        )
        self._position += 1
        return change


def _row(relation: Relation, values: TupleData) -> dict[str, RawValue]:
    if len(values) != len(relation.columns):
        raise PgOutputError(
            f"tuple of {len(values)} columns for {relation.qualified_name}, "
            f"which has {len(relation.columns)}"
        )
    return {column.name: value for column, value in zip(relation.columns, values, strict=True)}


def _old(
    relation: Relation, kind: Literal["K", "O"] | None, values: TupleData | None
) -> dict[str, RawValue] | None:
    if kind is None or values is None:
        return None
    row = _row(relation, values)
    if kind == "O":
        return row
    # 'K' lists every column but sends only the identity ones; the rest are NULL fillers.
    return {column.name: row[column.name] for column in relation.columns if column.is_key}
