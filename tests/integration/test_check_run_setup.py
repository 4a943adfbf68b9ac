"""The first task fails at once, naming the fix, on every misconfiguration it can see."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from services_sync.query.run_setup import check_run_setup

H = datetime(2025, 5, 14, 10, tzinfo=UTC)
PARAMS = {"batch_size": 1000}


def setup(**kwargs):
    args = {"data_interval_start": H, "data_interval_end": H + timedelta(hours=1), "params": PARAMS}
    args.update(kwargs)
    return check_run_setup("services_requests_sync", **args)


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_API",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http"}),
    )


def test_a_good_setup_creates_the_state_tables(source_db, api):
    assert setup() == "2025-05-14T10:00Z/2025-05-14T11:00Z"
    assert setup() == "2025-05-14T10:00Z/2025-05-14T11:00Z"  # idempotent
    with psycopg.connect(source_db) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'services_sync'"
            )
        }
    assert tables == {
        "quarantined_requests",
        "delivery_ledger",
        "delivery_runs",
        "outbox",
        "interval_plans",
    }


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, "no data interval"),
        (H, H, "zero-width"),
        (H, H + timedelta(hours=3), "not one whole hour"),
    ],
)
def test_a_run_without_a_proper_hour_says_how_to_trigger_it(source_db, api, start, end, expected):
    with pytest.raises(AirflowFailException) as info:
        setup(data_interval_start=start, data_interval_end=end)
    message = str(info.value)
    assert expected in message
    assert "airflow dags trigger" not in message
    assert "airflow backfill create --dag-id services_requests_sync" in message
    assert "--reprocess-behavior completed" in message


def test_a_run_whose_logical_date_and_interval_disagree_names_the_recipe(source_db, api):
    with pytest.raises(AirflowFailException) as info:
        setup(logical_date=H + timedelta(hours=1))
    message = str(info.value)
    assert "refuses this run" in message
    assert "airflow backfill create --dag-id services_requests_sync" in message


def test_missing_connections_are_named_with_the_variable_to_set(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SERVICES_SOURCE_DB", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_SERVICES_API", raising=False)
    with pytest.raises(AirflowFailException) as info:
        setup()
    message = str(info.value)
    assert "connection 'services_source_db' (postgres) is not defined" in message
    assert "AIRFLOW_CONN_SERVICES_SOURCE_DB=" in message
    assert "connection 'services_api' (http) is not defined" in message
    assert "AIRFLOW_CONN_SERVICES_API=" in message


def test_a_connection_of_the_wrong_type_is_named(source_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SERVICES_API", source_db)
    with pytest.raises(
        AirflowFailException, match="'services_api' has type 'postgres', expected 'http'"
    ):
        setup()


def test_a_missing_table_names_the_fix(pg_cluster, api, monkeypatch):
    empty = pg_cluster.create_database(f"empty_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("AIRFLOW_CONN_SERVICES_SOURCE_DB", empty)
    with pytest.raises(AirflowFailException, match="search_path"):
        setup()


def test_a_role_without_select_gets_the_grant_to_run(source_db, api, monkeypatch):
    role = f"no_grants_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_SOURCE_DB", source_db.replace("postgres@", f"{role}@")
    )
    with pytest.raises(AirflowFailException, match="GRANT SELECT ON service_requests"):
        setup()


def test_a_bad_batch_size_is_refused(source_db, api):
    with pytest.raises(AirflowFailException, match="batch_size"):
        setup(params={"batch_size": 0})


def _with_options(dsn, options):
    """The source connection as JSON with an ``options`` extra (as a user would set it)."""
    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": parts["host"],
            "port": int(parts["port"]),
            "login": parts["user"],
            "schema": parts["dbname"],
            "extra": {"options": options},
        }
    )


def test_an_options_extra_that_drops_the_naive_zone_is_named(madrid_source, api, monkeypatch):
    source_db = madrid_source
    assert setup()  # the operators' sessions get -c TimeZone=Europe/Madrid

    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_SOURCE_DB", _with_options(source_db, "-c search_path=public")
    )
    with pytest.raises(AirflowFailException, match=r"America/New_York.*-c TimeZone=Europe/Madrid"):
        setup()

    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_SOURCE_DB",
        _with_options(source_db, "-c search_path=public -c TimeZone=Europe/Madrid"),
    )
    assert setup()


def test_a_timestamptz_column_does_not_depend_on_the_session_zone(source_db, api, monkeypatch):
    monkeypatch.setenv("SERVICES_SYNC_NAIVE_TIMEZONE", "Europe/Madrid")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_SOURCE_DB", _with_options(source_db, "-c search_path=public")
    )
    assert setup()
