from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from services_sync.core.alerts import Alert, deadline_alert, quarantine_alert, task_failure_alert


def test_failure_alert_names_everything_needed_to_act():
    ti = SimpleNamespace(
        dag_id="services_requests_sync",
        task_id="post_batch",
        map_index=3,
        try_number=21,
        log_url="http://airflow/log",
    )
    alert = task_failure_alert(
        {
            "ti": ti,
            "exception": RuntimeError("HTTP 503 (transient)\nTraceback noise"),
            "data_interval_start": datetime(2025, 5, 14, 10, tzinfo=UTC),
            "data_interval_end": datetime(2025, 5, 14, 11, tzinfo=UTC),
        }
    )
    assert alert.title == "[services-sync] services_requests_sync.post_batch[3] failed"
    assert dict(alert.facts) == {
        "DAG": "services_requests_sync",
        "Task": "post_batch[3]",
        "Data interval": "[2025-05-14T10:00:00+00:00, 2025-05-14T11:00:00+00:00)",
        "Try": "21",
        "Error": "HTTP 503 (transient)",
        "Log": "http://airflow/log",
    }


def test_a_run_without_interval_is_said_so():
    ti = SimpleNamespace(dag_id="d", task_id="t", map_index=-1, try_number=1, log_url="")
    alert = task_failure_alert({"ti": ti, "exception": ValueError("x")})
    assert dict(alert.facts)["Data interval"].startswith("(none")


def test_html_is_escaped_and_text_is_plain():
    alert = Alert("t <b>", [("Error", "<script>")])
    assert "&lt;script&gt;" in alert.html()
    assert "<script>" not in alert.html()
    assert alert.text() == "*t <b>*\nError: <script>"


def test_quarantine_and_deadline_alerts():
    assert "5 row(s) quarantined" in quarantine_alert("d", "r", "I", 5, "u").title
    alert = deadline_alert(
        {
            "dag_run": {
                "dag_id": "d",
                "dag_run_id": "scheduled__x",
                "state": "running",
                "data_interval_start": "a",
                "data_interval_end": "b",
            },
            "deadline": {"deadline_time": "2025-05-14T13:00:00Z"},
        }
    )
    assert alert.title == "[services-sync] d run is not finished by its deadline"
    assert ("Deadline", "2025-05-14T13:00:00Z") in alert.facts
    assert deadline_alert(None).title.startswith("[services-sync] ?")
