"""The status view's app without a database: reading errors become messages, the routes."""

from __future__ import annotations

from contextlib import contextmanager

import psycopg
from fastapi.testclient import TestClient

from services_sync.ui import app, model
from tests.services_sync.ui.ledger_rows import HOUR, H, report, row


def _connect_raising(exc):
    @contextmanager
    def connect(conn_id):
        raise exc
        yield  # pragma: no cover

    return connect


def test_an_unreachable_database_is_reported_not_raised():
    result = app.load_report(
        env={}, connect=_connect_raising(psycopg.OperationalError("connection refused\nhint")),
        runs=None,
    )  # fmt: skip
    assert not result.available
    assert result.problem == (
        "The state database of connection services_source_db cannot be read: "
        "connection refused hint"
    )


def test_missing_state_tables_are_no_data_yet():
    result = app.load_report(
        env={"SERVICES_SYNC_STATE_SCHEMA": "sync_state"},
        connect=_connect_raising(psycopg.errors.UndefinedTable("relation does not exist")),
        runs=None,
    )
    assert result.available
    assert "do not exist yet in schema sync_state" in result.problem


def test_a_missing_privilege_names_the_grant():
    result = app.load_report(
        env={}, connect=_connect_raising(psycopg.errors.InsufficientPrivilege("denied")), runs=None
    )
    assert not result.available
    assert "Grant it USAGE on schema services_sync" in result.problem


def test_any_other_failure_names_the_connection():
    result = app.load_report(
        env={"SERVICES_SYNC_STATE_CONN_ID": "state_db"},
        connect=_connect_raising(LookupError("The conn_id `state_db` isn't defined")),
        runs=None,
    )
    assert not result.available
    assert result.problem == (
        "Cannot read the ledger through connection state_db: "
        "LookupError: The conn_id `state_db` isn't defined"
    )


def test_a_bad_setting_is_reported():
    result = app.load_report(env={"SERVICES_SYNC_STATE_SCHEMA": "bad-name"}, runs=None)
    assert not result.available
    assert "SERVICES_SYNC_STATE_SCHEMA" in result.problem


def test_unavailable_run_states_leave_the_ledger_view(monkeypatch):
    @contextmanager
    def connect(conn_id):
        yield object()

    def runs(dag_id, run_ids, window):
        raise RuntimeError("metadata database down")

    fetched = []

    def fake_fetch(conn, schema, *, dag_id, window):
        fetched.append((schema, dag_id, window))
        return [row(H)]

    monkeypatch.setattr(app, "fetch_interval_rows", fake_fetch)
    result = app.load_report(env={}, connect=connect, runs=runs, now=H + 2 * HOUR)
    assert fetched == [("services_sync", "services_requests_sync", 48)]
    assert result.available
    assert [i.status for i in result.intervals] == ["delivered"]
    assert result.notes == ("Airflow run states unavailable (RuntimeError); ledger only.",)
    assert result.generated_at == H + 2 * HOUR


# The app (FastAPI only; the Airflow wiring is tested in tests/integration/test_status_view.py)


def test_the_app_serves_the_page_and_the_json():
    items = model.build_intervals([row(H)])
    client = TestClient(app.create_app(lambda: report(items)))
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert '<table id="intervals">' in page.text
    data = client.get("/api/intervals").json()
    assert data["intervals"][0]["status"] == "delivered"


def test_the_app_answers_503_when_the_ledger_cannot_be_read():
    down = report((), problem="cannot be read: refused", available=False)
    client = TestClient(app.create_app(lambda: down))
    page = client.get("/")
    assert page.status_code == 503
    assert "cannot be read: refused" in page.text
    api = client.get("/api/intervals")
    assert api.status_code == 503
    assert api.json()["problem"] == "cannot be read: refused"


def test_without_a_session_browsers_go_to_login_and_api_clients_get_401():
    from fastapi import Depends, HTTPException

    def deny():
        raise HTTPException(401, "Not authenticated")

    guarded = app.create_app(
        lambda: report(()),
        dependencies=[Depends(deny)],
        login_url=lambda next_url: f"/auth/login?next={next_url}",
    )
    client = TestClient(guarded, follow_redirects=False)
    page = client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 303
    assert page.headers["location"] == "/auth/login?next=http://testserver/"
    api = client.get("/api/intervals", headers={"Accept": "application/json"})
    assert api.status_code == 401
    assert api.json() == {"detail": "Not authenticated"}


def test_browsers_get_an_html_message_for_other_errors():
    from fastapi import Depends, HTTPException

    def forbid():
        raise HTTPException(403, "Forbidden")

    client = TestClient(app.create_app(lambda: report(()), dependencies=[Depends(forbid)]))
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 403
    assert "403: Forbidden" in page.text
    assert "permission to read the runs of DAG services_requests_sync" in page.text
    assert client.get("/api/intervals").json() == {"detail": "Forbidden"}


def test_the_permission_hint_names_the_dag_of_the_view():
    from fastapi import Depends, HTTPException

    def forbid():
        raise HTTPException(403, "Forbidden")

    client = TestClient(
        app.create_app(
            lambda: report(()), dependencies=[Depends(forbid)], dag_id="services_requests_cdc"
        )
    )
    page = client.get("/", headers={"Accept": "text/html"})
    assert "permission to read the runs of DAG services_requests_cdc." in page.text
