"""Binlog CDC's pure parts: positions, the setup verdicts, the retention verdict."""

from __future__ import annotations

import pytest

from services_sync.mysql.binlog import BinlogPosition
from services_sync.mysql.binlog_setup import resnapshot_command, retention_verdict, server_problems

GOOD = {
    "log_bin": 1,
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "server_id": 7,
    "version": "10.11.19-MariaDB",
    "basename": "/var/lib/mysql/binlog",
}
GRANTS = ["GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `sync`@`%`"]


def test_a_position_is_a_pg_lsn_in_log_order():
    position = BinlogPosition.parse("binlog.000042", 1234)
    assert (position.file, position.offset, position.lsn) == ("binlog.000042", 1234, "2A/4D2")
    assert BinlogPosition.from_lsn("2A/4D2") == position
    assert str(position) == "binlog.000042:1234"
    assert BinlogPosition.parse("binlog.000009", 99999) < BinlogPosition.parse("binlog.000010", 4)
    with pytest.raises(ValueError, match="not a binary log file name"):
        BinlogPosition.parse("binlog", 4)


def test_a_well_configured_server_has_no_problem():
    assert server_problems(GOOD, "FULL", GRANTS, reader_id=4242) == []
    assert server_problems(GOOD, "FULL", ["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"], 4242) == []
    # MariaDB 10.5+ names them REPLICA / BINLOG MONITOR
    assert (
        server_problems(GOOD, "FULL", ["GRANT REPLICATION REPLICA, BINLOG MONITOR ON *.* TO x"], 1)
        == []
    )


@pytest.mark.parametrize(
    ("change", "metadata", "fix"),
    [
        ({"log_bin": 0}, "FULL", "log-bin=binlog"),
        ({"binlog_format": "MIXED"}, "FULL", "SET GLOBAL binlog_format = 'ROW'"),
        ({"binlog_row_image": "MINIMAL"}, "FULL", "SET GLOBAL binlog_row_image = 'FULL'"),
        ({}, "MINIMAL", "SET GLOBAL binlog_row_metadata = 'FULL'"),
        ({}, None, "binlog_row_metadata=None"),
        ({"server_id": 0}, "FULL", "server_id=0"),
        ({"server_id": 4242}, "FULL", "SERVICES_SYNC_MYSQL_CDC_SERVER_ID=4242"),
    ],
)
def test_each_server_problem_names_its_fix(change, metadata, fix):
    problems = server_problems({**GOOD, **change}, metadata, GRANTS, reader_id=4242)
    assert len(problems) == 1 and fix in problems[0]


def test_missing_replication_grants_name_the_grant():
    problems = server_problems(GOOD, "FULL", ["GRANT SELECT ON `db`.* TO `sync`@`%`"], 4242)
    assert len(problems) == 2
    assert all("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.*" in p for p in problems)


def test_retention_verdicts():
    kept = ["binlog.000003", "binlog.000004", "binlog.000005"]
    at = BinlogPosition.parse
    assert retention_verdict(at("binlog.000002", 400), kept, 1)[0] == "purged"
    assert retention_verdict(at("binlog.000003", 400), kept, 1)[0] == "close"
    assert retention_verdict(at("binlog.000004", 400), kept, 1)[0] == "ok"
    assert retention_verdict(at("binlog.000004", 400), kept, 2)[0] == "close"
    # The current file is never purged: not close, however few files there are.
    assert retention_verdict(at("binlog.000001", 4), ["binlog.000001"], 3) == ("ok", None)
    _, detail = retention_verdict(at("binlog.000002", 4), kept, 1)
    assert detail == "the server's oldest binary log is binlog.000003"


def test_the_resnapshot_command_triggers_an_initial_snapshot():
    assert resnapshot_command("services_requests_mysql_cdc") == (
        "airflow dags trigger services_requests_mysql_cdc --conf '{\"initial_snapshot\": true}'"
    )
