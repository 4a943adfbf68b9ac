"""Binlog CDC's setup checks and retention guard on real MariaDB servers."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from airflow.sdk.exceptions import AirflowFailException

from devkit.mariadb import MariaDBServer
from devkit.seed import create_mysql_source_table
from services_sync.mysql import binlog_tasks

DAG_ID = "services_requests_mysql_cdc"


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_API",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http"}),
    )


def test_a_server_not_set_up_for_binlog_cdc_fails_naming_every_fix(state_db, api, monkeypatch):
    with MariaDBServer(
        options={
            "binlog-format": "STATEMENT",
            "binlog-row-image": "MINIMAL",
            "binlog-row-metadata": "MINIMAL",
        }
    ) as server:
        server.create_database("src")
        with server.connect("src") as conn:
            create_mysql_source_table(conn)
        monkeypatch.setenv("AIRFLOW_CONN_SERVICES_MYSQL_DB", server.airflow_uri("src"))
        with pytest.raises(AirflowFailException) as failure:
            binlog_tasks.check_binlog_setup(DAG_ID, "manual__1")
    message = str(failure.value)
    assert "SET GLOBAL binlog_format = 'ROW'" in message
    assert "SET GLOBAL binlog_row_image = 'FULL'" in message
    assert "SET GLOBAL binlog_row_metadata = 'FULL'" in message


def test_a_user_without_replication_grants_is_told_which(
    mariadb_server, mysql_db, state_db, api, monkeypatch
):
    user = f"u{uuid.uuid4().hex[:8]}"
    mariadb_server.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw'")
    mariadb_server.execute(f"GRANT SELECT ON `{mysql_db}`.* TO '{user}'@'127.0.0.1'")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_MYSQL_DB", mariadb_server.airflow_uri(mysql_db, user, "pw")
    )
    with pytest.raises(AirflowFailException, match=r"lacks REPLICATION SLAVE") as failure:
        binlog_tasks.check_binlog_setup(DAG_ID, "manual__1")
    assert "lacks REPLICATION CLIENT" in str(failure.value)
    mariadb_server.execute(
        f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'127.0.0.1'"
    )
    assert binlog_tasks.check_binlog_setup(DAG_ID, "manual__1")["started"] is True
    assert binlog_tasks.check_binlog_setup(DAG_ID, "manual__2")["started"] is False  # once


def test_retention_warns_when_close_and_fails_with_the_command_when_purged(
    mariadb_server, mysql_db, state_db, api, caplog
):
    binlog_tasks.check_binlog_setup(DAG_ID, "manual__1")  # saved position: the binlog's end
    assert binlog_tasks.check_binlog_retention(DAG_ID, "r1", {})["verdict"] == "ok"
    mariadb_server.execute("FLUSH BINARY LOGS")  # the saved file is now the oldest, not current
    with caplog.at_level(logging.WARNING):
        assert binlog_tasks.check_binlog_retention(DAG_ID, "r2", {})["verdict"] == "close"
    assert "is close to being purged" in caplog.text
    mariadb_server.purge_binary_logs()
    with pytest.raises(AirflowFailException) as failure:
        binlog_tasks.check_binlog_retention(DAG_ID, "r3", {})
    assert (
        "airflow dags trigger services_requests_mysql_cdc --conf '{\"initial_snapshot\": true}'"
        in str(failure.value)
    )
    assert "was purged" in str(failure.value)
    # A run that takes the snapshot goes on: it does exactly what the message asks.
    assert (
        binlog_tasks.check_binlog_retention(DAG_ID, "r4", {"initial_snapshot": True})["verdict"]
        == "purged"
    )
