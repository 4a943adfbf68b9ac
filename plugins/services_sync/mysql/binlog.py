"""MySQL / MariaDB binary log primitives for binlog CDC: positions, server checks, row events.

A binlog position ``(binlog.000042, 1234)`` is encoded as the ``pg_lsn`` text ``2A/4D2`` (file
number in the high 32 bits, offset in the low: offsets stay below 4 GiB, ``max_binlog_size`` is
at most 1 GiB), so CDC mode's state tables, window logic and keys (commit position + index in
the transaction) take binlog positions unchanged, and positions compare in log order.

Row events are read with ``mysql-replication`` (``BinLogStreamReader``, on PyMySQL) as a
replica would, from a start position up to a fixed end; a transaction's rows are held until its
commit (``XidEvent``) and handed over whole, so a window never splits a transaction. The
column names come from the events themselves (``binlog_row_metadata=FULL``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services_sync.core.transform import json_safe_row

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
) -> Iterator[RowChange]:
    """The row changes of ``service_requests`` committed in ``[start, upto)``, in commit order.

    ``upto`` is a transaction boundary (a ``SHOW MASTER STATUS`` position), so every
    transaction is read whole or not at all; only the open transaction's rows are held.
    """
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import QueryEvent, RotateEvent, XidEvent
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
    pending: list[tuple[str, dict[str, Any]]] = []
    try:
        for event in stream:
            here = BinlogPosition.parse(stream.log_file, stream.log_pos)
            if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                pending.extend(_rows(event))
            elif isinstance(event, XidEvent) or (
                isinstance(event, QueryEvent) and _query_text(event) == "COMMIT"
            ):
                if pending and here <= upto:
                    when = datetime.fromtimestamp(event.timestamp, UTC)
                    for index, (op, row) in enumerate(pending):
                        yield RowChange(here, index, op, when, row)
                pending = []
            elif isinstance(event, RotateEvent):
                continue
            if here >= upto:
                break
    finally:
        stream.close()


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
