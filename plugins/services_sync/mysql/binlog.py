"""MySQL / MariaDB binary log primitives for binlog CDC: positions, server checks, row events.

A binlog position ``(binlog.000042, 1234)`` is encoded as the ``pg_lsn`` text ``2A/4D2`` (file
number in the high 32 bits, offset in the low: offsets stay below 4 GiB, ``max_binlog_size`` is
at most 1 GiB), so CDC mode's state tables, window logic and keys (commit position + index in
the transaction) take binlog positions unchanged, and positions compare in log order.

Row events are read with ``mysql-replication`` (``BinLogStreamReader``, on PyMySQL) as a
replica would, from a start position up to a fixed end, so a window never splits a transaction.
A row is keyed by its transaction's commit position, which the binlog states only at the end
(``XidEvent``), so a transaction's rows are held until then, but at most :data:`HOLD_ROWS` of
them: a larger transaction is read a second time from its start once its commit is known, its
rows handed over as they come (the first read skips its row events past the hold undecoded).
Memory stays bounded by ``HOLD_ROWS`` rows whatever a writer commits at once, at the cost of
reading such a transaction twice. The column names come from the events themselves
(``binlog_row_metadata=FULL``).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services_sync.core.transform import json_safe_row

#: Rows of one transaction held while its commit position is unknown (about 0.5 KiB each).
HOLD_ROWS = 5_000

_COLUMNS = ("service_id", "request_id", "opening_date", "status_id", "last_modified_date")
_NUMBERED = re.compile(r"^(?P<base>.+)\.(?P<number>\d+)$")


@dataclass(frozen=True, order=True)
class BinlogPosition:
    """A position in the binary log: file number and offset (``base`` names the files)."""

    number: int
    offset: int
    base: str = "binlog"

    @classmethod
    def parse(cls, file: str, offset: int) -> BinlogPosition:
        """From a file name (``binlog.000042``) and an offset."""
        match = _NUMBERED.match(file)
        if not match:
            raise ValueError(f"not a binary log file name: {file!r}")
        return cls(int(match["number"]), int(offset), match["base"])

    @classmethod
    def from_lsn(cls, lsn: str, base: str = "binlog") -> BinlogPosition:
        """From its ``pg_lsn`` encoding (``2A/4D2``)."""
        high, low = lsn.split("/")
        return cls(int(high, 16), int(low, 16), base)

    @property
    def file(self) -> str:
        """``binlog.000042`` (six digits, as the server names them)."""
        return f"{self.base}.{self.number:06d}"

    @property
    def lsn(self) -> str:
        """The ``pg_lsn`` text the state tables keep."""
        return f"{self.number:X}/{self.offset:X}"

    def __str__(self) -> str:
        return f"{self.file}:{self.offset}"


@dataclass(frozen=True)
class RowChange:
    """One row change of a committed transaction, as CDC mode stages it."""

    commit: BinlogPosition
    position_in_txn: int
    op: str
    commit_time: datetime
    row: dict[str, Any]

    def staged(self, window_id: int) -> tuple[Any, ...]:
        """The ``cdc_changes`` row (COPY order; ``row_data`` JSON-safe)."""
        safe = json_safe_row({name: self.row.get(name) for name in _COLUMNS if name in self.row})
        return (
            window_id,
            self.commit.lsn,
            self.position_in_txn,
            self.op,
            self.commit_time,
            _text_or_none(self.row.get("service_id")),
            _text_or_none(self.row.get("request_id")),
            safe,
        )


def connection_settings(conn_id: str) -> tuple[dict[str, Any], str]:
    """``BinLogStreamReader`` connection settings of a ``mysql`` Airflow connection + its schema."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    return (
        {
            "host": conn.host or "localhost",
            "port": int(conn.port or 3306),
            "user": conn.login or "",
            "passwd": conn.password or "",
        },
        conn.schema or "",
    )


def read_changes(
    conn_id: str,
    *,
    server_id: int,
    start: BinlogPosition,
    upto: BinlogPosition,
    hold_rows: int = HOLD_ROWS,
) -> Iterator[RowChange]:
    """The row changes of ``service_requests`` committed in ``[start, upto)``, in commit order.

    ``start`` and ``upto`` are transaction boundaries (a saved position, a ``SHOW MASTER
    STATUS`` position), so every transaction is read whole or not at all. Up to ``hold_rows``
    rows of the open transaction are held (plus the rest of the row event that passes them:
    ``binlog_row_event_max_size``, 8 KiB by default); past that, its row events are skipped
    without being decoded, and once its commit is found it is read again from its start.
    """
    commit: tuple[BinlogPosition, datetime] | None = None
    while True:
        again = yield from _read_from(conn_id, server_id, start, upto, hold_rows, commit)
        if again is None:
            return
        start, commit = again


def _read_from(
    conn_id: str,
    server_id: int,
    start: BinlogPosition,
    upto: BinlogPosition,
    hold_rows: int,
    first_commit: tuple[BinlogPosition, datetime] | None,
) -> Generator[RowChange, None, tuple[BinlogPosition, tuple[BinlogPosition, datetime]] | None]:
    """One pass of the binlog from ``start``; returns where to read again, or ``None``.

    Where to read again: the start and the commit of a transaction of more than ``hold_rows``
    rows. ``first_commit``: the commit of the transaction at ``start``, found by the pass before:
    its rows are handed over as read, not held.
    """
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import QueryEvent, XidEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    settings, schema = connection_settings(conn_id)
    stream = BinLogStreamReader(
        connection_settings=settings,
        server_id=server_id,
        log_file=start.file,
        log_pos=start.offset,
        resume_stream=True,
        blocking=False,
        # By file and offset on both servers: the library's MariaDB mode ignores log_file and
        # log_pos (it starts from a GTID state, or from the first binlog without one).
        is_mariadb=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent],
        only_schemas=[schema] if schema else None,
        only_tables=["service_requests"],
    )
    known = first_commit
    txn_start = start
    held: list[tuple[str, dict[str, Any]]] = []
    seen = 0  # rows of a transaction read again: their index
    overflowed = False  # the open transaction has more rows than the hold: not decoded further
    try:
        for event in stream:
            here = BinlogPosition.parse(stream.log_file, stream.log_pos)
            if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                if known is not None:
                    for op, row in _rows(event):
                        yield RowChange(known[0], seen, op, known[1], row)
                        seen += 1
                elif not overflowed:
                    held.extend(_rows(event))
                    if len(held) > hold_rows:
                        held, overflowed = [], True
            elif isinstance(event, XidEvent) or (
                isinstance(event, QueryEvent) and _query_text(event) == "COMMIT"
            ):
                if known is not None:
                    if here != known[0]:
                        raise RuntimeError(
                            f"binlog read again from {txn_start} committed at {here}, "
                            f"not at {known[0]} as the first read found"
                        )
                    known = None
                elif (held or overflowed) and here <= upto:
                    when = datetime.fromtimestamp(event.timestamp, UTC)
                    if overflowed:
                        return txn_start, (here, when)
                    for index, (op, row) in enumerate(held):
                        yield RowChange(here, index, op, when, row)
                held, seen, overflowed, txn_start = [], 0, False, here
            if here >= upto:
                break
    finally:
        stream.close()
    return None


def _rows(event: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent

    for row in event.rows:
        if isinstance(event, UpdateRowsEvent):
            yield "update", dict(row["after_values"])
        elif isinstance(event, DeleteRowsEvent):
            yield "delete", dict(row["values"])
        else:
            yield "insert", dict(row["values"])


def _query_text(event: Any) -> str:
    query = event.query
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    return str(query).strip().upper()


def binary_logs(rows: Sequence[Sequence[Any]]) -> list[str]:
    """File names of ``SHOW BINARY LOGS`` rows, oldest first."""
    return [str(row[0]) for row in rows]


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
