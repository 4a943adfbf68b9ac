"""CDC mode's pure logic: which changes a window delivers, as what, in which batches, keyed how.

No Airflow and no database here (see :mod:`services_sync.cdc.tasks` for the tasks and
:mod:`services_sync.cdc.source` for the slot). A window's changes are staged as
``(commit_lsn, position, op, commit_time, service_id, request_id, row_data)``; ``row_data`` is
the JSON-safe row (the new row of an insert or update, the old row of a delete). Values decoded
from the slot are PostgreSQL's text of them, which the contract transform parses when the batch
is built.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from services_sync.cdc.decoder import Change, ChangeDecoder
from services_sync.cdc.pgoutput import UNCHANGED_TOAST, int_to_lsn
from services_sync.core.transform import json_safe_row

#: Source table of the changes (as pgoutput names it: ``schema.table``), any schema.
TABLE_NAME = "service_requests"

#: Bytes a record's JSON may take beyond its staged row's JSON text (key renames, quoting).
_RECORD_OVERHEAD_BYTES = 64

T = TypeVar("T")

_COLUMNS = ("service_id", "request_id", "opening_date", "status_id", "last_modified_date")


@dataclass(frozen=True)
class Snapshot:
    """A ``pg_current_snapshot()`` value: which transactions' effects a read could see."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """Parse ``xmin:xmax:xip,xip,...`` (64-bit ``xid8`` values).

        Raises:
            ValueError: not a snapshot text.
        """
        try:
            xmin, xmax, xip = text.strip().split(":")
            return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))
        except ValueError:
            raise ValueError(f"not a pg_snapshot: {text!r}") from None

    def full_xid(self, xid: int) -> int:
        """The 64-bit xid of a 32-bit one (as pgoutput sends), near this snapshot's ``xmax``.

        Live transaction ids are always within 2**31 of each other (wraparound protection),
        so the nearest 64-bit value with those low 32 bits is the right one.
        """
        diff = (xid - self.xmax) % 2**32
        return self.xmax + diff if diff < 2**31 else self.xmax - (2**32 - diff)

    def sees(self, xid: int) -> bool:
        """Whether a transaction (32-bit xid) had committed for this snapshot.

        Only meaningful for transactions that did commit (every transaction pgoutput sends).
        """
        full = self.full_xid(xid)
        return full < self.xmin or (full < self.xmax and full not in self.xip)


def is_source_table(relation: str) -> bool:
    """Whether a pgoutput relation name (``schema.table``) is the source table."""
    return relation.rsplit(".", 1)[-1] == TABLE_NAME


def staged_change(window_id: int, change: Change) -> tuple[Any, ...]:
    """The ``cdc_changes`` row (COPY order) of one decoded change.

    An update's column the server did not send (an unchanged TOASTed value) is taken from the
    old row when there is one; otherwise it stays missing and the record is quarantined.
    """
    if change.op == "delete":
        row = dict(change.old_key or {})
    else:
        row = {
            name: (change.old_key or {}).get(name) if value is UNCHANGED_TOAST else value
            for name, value in change.new.items()
        }
    safe = json_safe_row({name: row.get(name) for name in _COLUMNS if name in row})
    return (
        window_id,
        int_to_lsn(change.commit_lsn),
        change.position_in_txn,
        change.op,
        change.commit_time,
        _text_or_none(row.get("service_id")),
        _text_or_none(row.get("request_id")),
        safe,
    )


def snapshot_change(
    window_id: int, position: int, row: Sequence[Any], read_at: datetime
) -> tuple[Any, ...]:
    """The ``cdc_changes`` row of one row of the initial snapshot (sorted before the stream)."""
    values = dict(zip(_COLUMNS, row, strict=True))
    return (
        window_id,
        "0/0",
        position,
        "snapshot",
        read_at,
        _text_or_none(values["service_id"]),
        _text_or_none(values["request_id"]),
        json_safe_row(values),
    )


def copy_row(staged: tuple[Any, ...]) -> tuple[Any, ...]:
    """A staged change as COPY values: ``row_data`` as JSON text.

    For :func:`staged_change`, :func:`snapshot_change` and a binlog row's staged tuple alike.
    """
    return (*staged[:-1], json.dumps(staged[-1]))


def stage_changes(
    messages: Iterable[bytes],
    write_row: Callable[[tuple[Any, ...]], None],
    *,
    window_id: int,
    floor_lsn: int | None,
    snapshot: Snapshot | None,
) -> dict[str, int]:
    """Decode a peek's messages and hand each change of the source table to ``write_row``.

    Each change goes out (as COPY values, :func:`copy_row`) as soon as its message is decoded,
    so memory holds one message, not a transaction. The caller stages in one database
    transaction and commits it only after this returns: a peek that fails half-way, or ends
    inside a transaction, stages nothing.

    Skipped: changes of other tables of a shared publication; transactions the slot had been
    advanced past (``commit_lsn < floor_lsn``, the same test the server applies to the slot's
    confirmed position) when a crash undid that advance; transactions ``snapshot`` saw.

    Returns:
        ``changes`` staged, ``already_acknowledged`` and ``in_snapshot`` skipped.

    Raises:
        PgOutputError: a malformed or out-of-order message, or messages that end inside a
            transaction.
    """
    decoder = ChangeDecoder()
    counts = {"changes": 0, "already_acknowledged": 0, "in_snapshot": 0}
    for data in messages:
        for change in decoder.feed(data):
            if not is_source_table(change.relation):
                continue
            if floor_lsn is not None and change.commit_lsn < floor_lsn:
                counts["already_acknowledged"] += 1  # an advance undone by a crash
            elif snapshot is not None and snapshot.sees(change.xid):
                counts["in_snapshot"] += 1
            else:
                write_row(copy_row(staged_change(window_id, change)))
                counts["changes"] += 1
    decoder.finish()
    return counts


def record_row(
    op: str, commit_time: datetime, row: Mapping[str, Any], *, deleted_status_id: int
) -> dict[str, Any]:
    """The source-shaped row a staged change is delivered as (then transformed as usual).

    Inserts, updates and snapshot rows are the row itself. A delete (only under the ``status``
    delete policy) is the old row with ``status_id`` set to ``deleted_status_id`` and
    ``last_modified_date`` set to the commit time of the delete; without the old
    ``opening_date`` (the table is not ``REPLICA IDENTITY FULL``) it is quarantined.
    """
    if op != "delete":
        return dict(row)
    return {
        **row,
        "status_id": deleted_status_id,
        "last_modified_date": commit_time,
        # Kept as NULL when absent: the transform quarantines it, naming the column.
        "opening_date": row.get("opening_date"),
    }


def key_scope(first: tuple[str, int], last: tuple[str, int]) -> str:
    """A CDC batch's first and last change positions, ``lsn.pos-lsn.pos``.

    The part of the batch's keys that :func:`services_sync.core.payload.scoped_key` completes with a
    body digest (in the POST task, once per body part).
    """
    return f"{first[0]}.{first[1]}-{last[0]}.{last[1]}"


def records_per_batch(max_row_bytes: int, *, batch_size: int, max_batch_bytes: int) -> int:
    """Records per batch of a window: ``batch_size``, fewer if the largest row needs it.

    Fewer when the window's largest row would not let a full batch fit ``max_batch_bytes``.
    """
    fit = max(1, max_batch_bytes // (max_row_bytes + _RECORD_OVERHEAD_BYTES))
    return max(1, min(batch_size, fit))


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter); memory holds one list."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
