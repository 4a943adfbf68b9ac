"""Binlog CDC's reader on a real MariaDB binlog: commit order, keys, bounded hold of a transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pymysqlreplication
import pytest

from devkit.seed import insert_mysql_rows
from services_sync.mysql import source as mysql_source
from services_sync.mysql.binlog import BinlogPosition, read_changes
from services_sync.mysql.binlog_setup import log_basename, master_position, server_facts

CONN_ID = "services_mysql_db"
READER_ID = 4_241
T0 = datetime(2025, 5, 14, 12, 0, tzinfo=UTC)


def _position():
    with mysql_source.connect(CONN_ID) as conn:
        position = master_position(conn)
        server, _, _ = server_facts(conn)
    return BinlogPosition(position.number, position.offset, log_basename(server))


def _rows(prefix: str, count: int) -> list[tuple]:
    return [(prefix, f"{prefix}-{i}", T0, 1, T0 + timedelta(seconds=i)) for i in range(count)]


def _write_transactions(mariadb_server, mysql_db) -> None:
    """A small transaction, a large one (insert, update, delete), another table's, a small one."""
    with mariadb_server.connect(mysql_db) as conn:
        insert_mysql_rows(conn, _rows("a", 2))
        conn.begin()
        insert_mysql_rows(conn, _rows("big", 30))
        with conn.cursor() as cur:
            cur.execute("UPDATE service_requests SET status_id = 2 WHERE service_id = 'big'")
            cur.execute("DELETE FROM service_requests WHERE request_id = 'big-0'")
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE other (id INT PRIMARY KEY)")
            cur.execute("INSERT INTO other VALUES (1), (2), (3)")
        insert_mysql_rows(conn, _rows("z", 3))


@pytest.fixture
def passes(monkeypatch) -> list[tuple[str, int]]:
    """Where each pass of the binlog started: the real reader, its starts recorded."""
    starts: list[tuple[str, int]] = []

    class RecordedReader(pymysqlreplication.BinLogStreamReader):
        def __init__(self, *args, **kwargs):
            starts.append((kwargs["log_file"], kwargs["log_pos"]))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pymysqlreplication, "BinLogStreamReader", RecordedReader)
    return starts


def _read(start, upto, **kwargs) -> list[tuple]:
    return [
        (c.commit, c.position_in_txn, c.op, c.commit_time, c.row["request_id"], c.row["status_id"])
        for c in read_changes(CONN_ID, server_id=READER_ID, start=start, upto=upto, **kwargs)
    ]


def test_a_transaction_larger_than_the_hold_is_read_again_and_keyed_alike(
    mariadb_server, mysql_db, passes
):
    start = _position()
    _write_transactions(mariadb_server, mysql_db)
    upto = _position()

    held_whole = _read(start, upto)
    assert len(passes) == 1
    read_twice = _read(start, upto, hold_rows=7)

    assert read_twice == held_whole
    # the second pass starts where the large transaction starts: the small one's commit
    first_commit = held_whole[0][0]
    assert passes[1:] == [(start.file, start.offset), (first_commit.file, first_commit.offset)]
    by_commit: dict = {}
    for commit, index, op, _, request_id, status_id in held_whole:
        by_commit.setdefault(commit, []).append((index, op, request_id, status_id))
    commits = list(by_commit)
    assert commits == sorted(commits) and all(start < c <= upto for c in commits)
    # one commit per service_requests transaction: the other table's rows are not read
    assert [len(rows) for rows in by_commit.values()] == [2, 61, 3]
    big = by_commit[commits[1]]
    assert [index for index, *_ in big] == list(range(61))
    assert [op for _, op, *_ in big] == ["insert"] * 30 + ["update"] * 30 + ["delete"]
    assert big[-1][2:] == ("big-0", "2")  # the deleted row as the update left it (text column)


def test_a_read_that_ends_inside_the_log_stops_at_its_end(mariadb_server, mysql_db, passes):
    start = _position()
    with mariadb_server.connect(mysql_db) as conn:
        conn.begin()
        insert_mysql_rows(conn, _rows("first", 12))
        conn.commit()
    upto = _position()
    with mariadb_server.connect(mysql_db) as conn:
        conn.begin()
        insert_mysql_rows(conn, _rows("after", 12))
        conn.commit()

    changes = _read(start, upto, hold_rows=5)

    assert [request_id for *_, request_id, _ in changes] == [f"first-{i}" for i in range(12)]
    assert {commit for commit, *_ in changes} == {upto}
    assert [position for _, position in passes] == [start.offset, start.offset]
