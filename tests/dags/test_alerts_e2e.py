"""Alerts reach a real SMTP server and a real HTTP stand-in for a Slack incoming webhook."""

from __future__ import annotations

from datetime import timedelta

import pendulum
import psycopg
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from devkit.seed import insert_rows
from tests.smtp_inbox import smtp_inbox

pytestmark = pytest.mark.e2e

H = pendulum.datetime(2025, 5, 14, 10, tz="UTC")


@pytest.fixture
def smtp_server(monkeypatch):
    with smtp_inbox(monkeypatch) as inbox:
        yield inbox


@pytest.fixture(scope="module")
def dag():
    return DagBag(dag_folder="dags").dags["services_requests_sync"]


def rows(n, **overrides):
    return [
        ("water", f"R{i:03d}", H - timedelta(days=1), "1", H + timedelta(minutes=i))
        for i in range(n)
    ]


def test_a_task_failure_alerts_by_email_and_slack(
    dag, airflow_db, source_db, receiver, smtp_server, slack_webhook
):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(3))
    requests.post(
        f"{receiver.url}/faults", json={"faults": [{"status": 422}]}, timeout=5
    ).raise_for_status()
    run = dag.test(logical_date=H + timedelta(hours=1))
    assert run.state == "failed"

    (mail,) = smtp_server.messages
    assert mail["To"] == "oncall@example.test"
    assert mail["Subject"] == "[services-sync] services_requests_sync.record_delivery failed"
    body = mail.get_body().get_content()
    for fact in (
        "services_requests_sync",
        "record_delivery",
        "[2025-05-14T10:00:00+00:00, 2025-05-14T11:00:00+00:00)",
        "1 of 1 batch(es) not acknowledged",
        "batch 1: HTTP 422 rejected the batch: injected fault",
        "/dags/services_requests_sync/runs/",  # the log URL
        "/tasks/record_delivery?try_number=1",
    ):
        assert fact in body, fact

    (post,) = slack_webhook
    assert post["path"] == "/services/T000/B000/XXXX"
    text = post["json"]["text"]
    assert text.startswith("*[services-sync] services_requests_sync.record_delivery failed*")
    assert "HTTP 422" in text


def test_an_outage_past_the_retry_budget_is_one_alert_for_the_run(
    dag, airflow_db, source_db, receiver, smtp_server, slack_webhook
):
    """Regression: every failed mapped POST task used to send its own alert (one per batch)."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(40))
    requests.post(
        f"{receiver.url}/faults", json={"faults": [{"status": 503, "times": 1000}]}, timeout=5
    ).raise_for_status()
    run = dag.test(logical_date=H + timedelta(hours=1), run_conf={"batch_size": 5})
    assert run.state == "failed"
    lanes = [ti for ti in run.get_task_instances() if ti.task_id == "post_batches"]
    assert {ti.state for ti in lanes} == {"failed"}
    assert len(lanes) == 4
    (mail,) = smtp_server.messages  # 8 batches, 4 failed lanes: one alert
    assert mail["Subject"] == "[services-sync] services_requests_sync.record_delivery failed"
    body = mail.get_body().get_content()
    assert "8 of 8 batch(es) not acknowledged" in body
    assert "batch 1, 2, 3, 4, 5, 6, 7, 8" in body
    assert "the next run sends them first" in body
    assert len(slack_webhook) == 1


def test_quarantined_rows_raise_an_alert_but_the_run_succeeds(
    dag, airflow_db, source_db, receiver, smtp_server, slack_webhook
):
    bad = [("water", None, H, "1", H + timedelta(minutes=5)), ("roads", "X", H, "open", H)]
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(2) + bad)
    run = dag.test(logical_date=H + timedelta(hours=1))
    assert run.state == "success"
    (mail,) = smtp_server.messages
    assert mail["Subject"] == (
        "[services-sync] 2 row(s) quarantined in 2025-05-14T10:00Z/2025-05-14T11:00Z"
    )
    (post,) = slack_webhook
    assert "2 row(s) quarantined" in post["json"]["text"]


def test_without_alert_connections_a_failure_still_fails_cleanly(
    dag, airflow_db, source_db, receiver
):
    with psycopg.connect(source_db, autocommit=True) as conn:
        insert_rows(conn, rows(1))
    requests.post(f"{receiver.url}/faults", json={"faults": [{"status": 400}]}, timeout=5)
    run = dag.test(logical_date=H + timedelta(hours=1))
    assert run.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("post_batches", 0)] == "failed"
    assert states[("build_batches", -1)] == "success"
    assert states[("record_delivery", -1)] == "failed"


def test_a_run_without_a_data_interval_fails_with_one_alert(
    dag, airflow_db, source_db, receiver, smtp_server
):
    """`airflow dags trigger` without a logical date: check_run_setup fails and alerts; the
    run ends failed (record_delivery fails quietly), with no second alert."""
    run = dag.test(logical_date=None)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert (states["check_run_setup"], states["record_delivery"]) == ("failed", "failed")
    (mail,) = smtp_server.messages
    assert mail["Subject"] == "[services-sync] services_requests_sync.check_run_setup failed"
    assert "the run has no data interval" in mail.get_body().get_content()
