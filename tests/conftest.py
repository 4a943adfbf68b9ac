"""Shared fixtures: a private PostgreSQL cluster, the reference receiver, an Airflow home.

Everything runs for real on loopback: a throwaway PostgreSQL cluster started from the bundled
server binaries (``wal_level=logical``), the FastAPI receiver in a thread, and a migrated SQLite
metadata database for ``dag.test()``. Nothing depends on services someone left on the machine.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration when first imported: set the environment before that.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="services-sync-airflow-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_AIRFLOW_HOME / "logs"),
        # Test data lives in 2025; a run before the start date would create no task at all.
        "SERVICES_SYNC_START_DATE": "2025-01-01T00:00:00+00:00",
        # Short retry delays through configuration, not code: the fault tests wait seconds.
        "SERVICES_SYNC_RETRY_DELAY_S": "0.5",
        "SERVICES_SYNC_MAX_RETRY_DELAY_S": "1",
        "SERVICES_SYNC_POST_RETRIES": "3",
        "SERVICES_SYNC_TASK_RETRIES": "1",
        "SERVICES_SYNC_TASK_RETRY_DELAY_S": "0.5",
        "SERVICES_SYNC_MAX_RETRY_AFTER_S": "2",
        "SERVICES_SYNC_HTTP_TIMEOUT_S": "5",
        "SERVICES_SYNC_CONNECT_ATTEMPTS": "2",
        "XDG_RUNTIME_DIR": str(_AIRFLOW_HOME),
    }
)
for path in (str(ROOT / "plugins"), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator:
    """One private PostgreSQL cluster for the whole session."""
    from devkit.pgcluster import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def source_db(pg_cluster, monkeypatch) -> str:
    """A fresh database with an empty ``service_requests`` table; the connection points at it."""
    import psycopg

    from devkit.seed import create_source_table

    dsn = pg_cluster.create_database(f"src_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_source_table(conn)
    monkeypatch.setenv("AIRFLOW_CONN_SERVICES_SOURCE_DB", dsn)
    return dsn


@pytest.fixture
def madrid_source(source_db, monkeypatch) -> str:
    """`service_requests` with naive columns holding Madrid wall-clock times, on a database
    whose sessions default to New York, and `SERVICES_SYNC_NAIVE_TIMEZONE=Europe/Madrid`."""
    import psycopg

    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE service_requests ALTER last_modified_date TYPE timestamp,"
            " ALTER opening_date TYPE timestamp"
        )
        conn.execute(f"ALTER DATABASE {conn.info.dbname} SET TimeZone = 'America/New_York'")
    monkeypatch.setenv("SERVICES_SYNC_NAIVE_TIMEZONE", "Europe/Madrid")
    return source_db


@pytest.fixture(scope="session")
def receiver_server() -> Iterator:
    """The reference receiver on a free loopback port, for the whole session."""
    from devkit.receiver import ReceiverServer

    server = ReceiverServer(host="127.0.0.1")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receiver(receiver_server, monkeypatch):
    """The receiver, emptied, with ``services_api`` pointing at it."""
    import requests

    requests.delete(f"{receiver_server.url}/inspect", timeout=5).raise_for_status()
    port = receiver_server.url.rsplit(":", 1)[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_API",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": int(port), "schema": "http"}),
    )
    return receiver_server


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database (what ``dag.test()`` needs)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator:
    """One private MariaDB server for the whole session: a free loopback port, binlog on.

    Started from the MariaDB server package's binaries (``devkit/ensure-os-packages`` installs
    it); never the server a machine may already run on 3306.
    """
    from devkit.mariadb import MariaDBServer

    server = MariaDBServer().start()
    yield server
    server.destroy()


@pytest.fixture
def state_db(pg_cluster, monkeypatch) -> str:
    """A fresh PostgreSQL database for the state of a MySQL source (``services_state_db``)."""
    dsn = pg_cluster.create_database(f"state_{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("AIRFLOW_CONN_SERVICES_STATE_DB", dsn)
    monkeypatch.setenv("SERVICES_SYNC_STATE_CONN_ID", "services_state_db")
    return dsn


@pytest.fixture
def mysql_db(mariadb_server, monkeypatch) -> str:
    """A fresh MariaDB database with an empty ``service_requests``; ``services_mysql_db`` on it."""
    from devkit.seed import create_mysql_source_table

    name = mariadb_server.create_database(f"src_{uuid.uuid4().hex[:10]}")
    with mariadb_server.connect(name) as conn:
        create_mysql_source_table(conn)
    monkeypatch.setenv("AIRFLOW_CONN_SERVICES_MYSQL_DB", mariadb_server.airflow_uri(name))
    return name
