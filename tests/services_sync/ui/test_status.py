"""The sync status view without a database: aggregation, JSON, HTML, error handling, the app."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from services_sync.ui import status
from services_sync.ui.status import IntervalStatus, RunInfo, StatusReport

H = datetime(2025, 5, 14, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)


def row(start: datetime, **values):
    """A ``status_intervals.sql`` row: a delivered interval unless told otherwise."""
    base = {
        "interval_start": start,
        "interval_end": start + HOUR,
        "run_id": f"scheduled__{start.isoformat()}",
        "run_count": 1,
        "recorded": True,
        "finished_at": start + HOUR + timedelta(minutes=3),
        "batches": 2,
        "batches_acked": 2,
        "unacked_batches": [],
        "miscounted_batches": [],
        "duplicate_batches": 0,
        "rows_extracted": 120,
        "rows_delivered": 118,
        "rows_quarantined": 2,
        "rows_superseded": 0,
        "last_acked_at": start + HOUR + timedelta(minutes=2, seconds=30),
        "max_attempts": 1,
        "drained_batches": 0,
        "lanes": [{"lane": 1, "batches": 1, "acked": 1}, {"lane": 2, "batches": 1, "acked": 1}],
    }
    return {**base, **values}


def unacked(start: datetime, **values):
    """An interval whose run built three batches and has no acknowledgment."""
    defaults = {
        "recorded": False,
        "finished_at": None,
        "batches": 3,
        "batches_acked": 0,
        "unacked_batches": [1, 2, 3],
        "rows_delivered": 0,
        "last_acked_at": None,
    }
    return row(start, **{**defaults, **values})


def report(intervals, **values) -> StatusReport:
    return StatusReport(
        dag_id=status.DAG_ID,
        generated_at=H + 5 * HOUR,
        intervals=tuple(intervals),
        state_conn_id="services_source_db",
        state_schema="services_sync",
        **values,
    )


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def test_a_recorded_run_is_delivered_with_its_counts_and_lag():
    [item] = status.build_intervals([row(H, duplicate_batches=1)])
    assert item.status == status.DELIVERED
    assert item.tone == "ok"
    assert (item.rows_extracted, item.rows_delivered, item.rows_quarantined) == (120, 118, 2)
    assert item.duplicates_avoided == 1
    assert item.lag == timedelta(minutes=2, seconds=30)
    assert item.last_error is None


def test_an_hour_without_changes_is_no_changes():
    quiet = row(H, batches=0, batches_acked=0, rows_extracted=0, rows_delivered=0,
                rows_quarantined=0, last_acked_at=None)  # fmt: skip
    [item] = status.build_intervals([quiet])
    assert item.status == status.NO_CHANGES
    assert item.lag is None


def test_unacknowledged_batches_are_named_as_the_last_error():
    [item] = status.build_intervals([unacked(H)])
    assert item.status == status.UNACKNOWLEDGED
    assert item.tone == "bad"
    assert item.last_error == "3 of 3 batches not acknowledged (batches 1, 2, 3)"


def test_a_long_list_of_batches_is_shortened():
    [item] = status.build_intervals([unacked(H, batches=9, unacked_batches=list(range(1, 10)))])
    assert item.last_error == "9 of 9 batches not acknowledged (batches 1, 2, 3, 4, 5 and 4 more)"


def test_a_run_not_recorded_without_unacked_batches_says_so():
    # Every row of its only batch was quarantined, and record_delivery has not run yet.
    pending = row(H, recorded=False, rows_delivered=0, rows_quarantined=120, last_acked_at=None)
    [item] = status.build_intervals([pending])
    assert item.status == status.UNACKNOWLEDGED
    assert "record_delivery has not succeeded" in item.last_error


def test_an_acknowledged_count_mismatch_is_an_error():
    [item] = status.build_intervals([row(H, miscounted_batches=[2])])
    assert item.status == status.UNACKNOWLEDGED
    assert item.last_error == "acknowledged count differs from rows sent (batch 2)"


def test_airflow_run_state_refines_the_ledger():
    runs = {
        f"scheduled__{H.isoformat()}": RunInfo(f"scheduled__{H.isoformat()}", "running"),
        f"scheduled__{(H + HOUR).isoformat()}": RunInfo(
            f"scheduled__{(H + HOUR).isoformat()}",
            "failed",
            failed_tasks=("post_batches lane 2 (try 21)",),
        ),
        f"scheduled__{(H + 2 * HOUR).isoformat()}": RunInfo(
            f"scheduled__{(H + 2 * HOUR).isoformat()}",
            "failed",
            failed_tasks=("reconcile_interval (try 1)",),
        ),
    }
    rows = [unacked(H), unacked(H + HOUR), row(H + 2 * HOUR)]
    newest, failed_post, in_progress = status.build_intervals(rows, runs)

    assert in_progress.status == status.IN_PROGRESS
    assert in_progress.run_state == "running"
    assert in_progress.last_error is None  # not an error yet
    assert failed_post.status == status.FAILED
    assert failed_post.last_error == (
        "3 of 3 batches not acknowledged (batches 1, 2, 3); failed task: post_batches lane 2 (try 21)"
    )
    # Delivered and recorded, but the reconciliation failed: the run's state wins.
    assert newest.status == status.FAILED
    assert newest.last_error == "failed task: reconcile_interval (try 1)"


def test_a_running_run_that_already_delivered_is_delivered():
    runs = {f"scheduled__{H.isoformat()}": RunInfo(f"scheduled__{H.isoformat()}", "running")}
    [item] = status.build_intervals([row(H)], runs)
    assert item.status == status.DELIVERED  # reconcile_interval still to come


def test_hours_without_any_run_are_gaps_between_known_intervals():
    rows = [row(H + 3 * HOUR), row(H)]
    items = status.build_intervals(rows)
    assert [i.interval_start for i in items] == [H + 3 * HOUR, H + 2 * HOUR, H + HOUR, H]
    assert [i.status for i in items] == ["delivered", "no run", "no run", "delivered"]
    assert items[1].tone == "muted"
    assert items[1].interval_end == H + 3 * HOUR


def test_runs_known_only_to_airflow_fill_the_view_even_after_the_newest_ledger_interval():
    # Stuck at the commit gate for two hours: nothing in the ledger, but Airflow knows.
    runs = {
        "scheduled__a": RunInfo(
            "scheduled__a", "failed", H + HOUR, H + 2 * HOUR,
            failed_tasks=("wait_for_open_transactions (try 1)",), queued_at=H + 2 * HOUR,
        ),
        "scheduled__b": RunInfo("scheduled__b", "running", H + 2 * HOUR, H + 3 * HOUR),
        "manual__old": RunInfo("manual__old", "failed", H + HOUR, H + 2 * HOUR,
                               queued_at=H - HOUR),
        "scheduled__c": RunInfo("scheduled__c", "success", H + 3 * HOUR, H + 4 * HOUR),
    }  # fmt: skip
    items = status.build_intervals([row(H)], runs)
    assert [i.status for i in items] == ["not in ledger", "in progress", "failed", "delivered"]
    gate = items[2]
    assert gate.run_id == "scheduled__a"  # the run queued last speaks for the interval
    assert gate.run_count == 2
    assert gate.last_error == (
        "failed before any batch was built; failed task: wait_for_open_transactions (try 1)"
    )
    assert items[0].last_error == "run success but nothing in the ledger"


def test_the_window_keeps_the_newest_hours():
    rows = [row(H + i * HOUR) for i in range(60)]
    items = status.build_intervals(rows, window=48)
    assert len(items) == 48
    assert items[0].interval_start == H + 59 * HOUR
    assert items[-1].interval_start == H + 12 * HOUR


def test_naive_timestamps_are_read_as_utc():
    naive = row(H.replace(tzinfo=None), interval_end=(H + HOUR).replace(tzinfo=None))
    [item] = status.build_intervals([naive])
    assert item.interval_start == H


def test_totals_sum_the_intervals_and_pick_median_and_worst_lag():
    items = status.build_intervals(
        [
            row(H, last_acked_at=H + HOUR + timedelta(minutes=1)),
            row(H + HOUR, last_acked_at=H + 2 * HOUR + timedelta(minutes=2), duplicate_batches=2),
            row(H + 2 * HOUR, last_acked_at=H + 3 * HOUR + timedelta(hours=3)),
            unacked(H + 3 * HOUR),
        ]
    )
    sums = status.totals(items)
    assert sums["intervals"] == 4
    assert sums["rows_delivered"] == 3 * 118
    assert sums["rows_quarantined"] == 4 * 2
    assert sums["duplicates_avoided"] == 2
    assert sums["needs_attention"] == 1
    assert sums["median_lag"] == timedelta(minutes=2)
    assert sums["max_lag"] == timedelta(hours=3)


def test_no_rows_no_intervals():
    assert status.build_intervals([]) == []
    assert status.totals([])["max_lag"] is None


# --------------------------------------------------------------------------------------------
# JSON and formatting
# --------------------------------------------------------------------------------------------


def test_report_json_is_plain_json():
    items = status.build_intervals([row(H + HOUR), unacked(H)])
    data = json.loads(json.dumps(status.report_json(report(items))))
    assert data["dag_id"] == "services_requests_sync"
    assert data["state_schema"] == "services_sync"
    assert data["problem"] is None
    assert data["totals"]["rows_delivered"] == 118
    assert data["totals"]["max_lag_s"] == 150.0
    first, second = data["intervals"]
    assert first == {
        "interval_start": "2025-05-14T11:00:00+00:00",
        "interval_end": "2025-05-14T12:00:00+00:00",
        "status": "delivered",
        "run_id": "scheduled__2025-05-14T11:00:00+00:00",
        "run_count": 1,
        "run_state": None,
        "rows_extracted": 120,
        "rows_delivered": 118,
        "rows_quarantined": 2,
        "rows_superseded": 0,
        "duplicates_avoided": 0,
        "batches": 2,
        "batches_acked": 2,
        "drained_batches": 0,
        "lanes": [{"lane": 1, "batches": 1, "acked": 1}, {"lane": 2, "batches": 1, "acked": 1}],
        "last_acked_at": "2025-05-14T12:02:30+00:00",
        "delivery_lag_s": 150.0,
        "last_error": None,
    }
    assert second["status"] == "unacknowledged"
    assert second["delivery_lag_s"] is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (timedelta(seconds=42), "42s"),
        (timedelta(minutes=4, seconds=5), "4m 05s"),
        (timedelta(hours=2, minutes=7, seconds=59), "2h 07m"),
        (timedelta(days=3, hours=4, minutes=1), "3d 4h"),
        (timedelta(seconds=-65), "-1m 05s"),
    ],
)
def test_format_duration(value, text):
    assert status.format_duration(value) == text


def test_interval_labels():
    assert status.interval_label(IntervalStatus(H, H + HOUR, "delivered")) == (
        "2025-05-14 10:00\u201311:00"
    )
    late = H.replace(hour=23)
    assert status.interval_label(IntervalStatus(late, late + HOUR, "delivered")) == (
        "2025-05-14 23:00\u201324:00"
    )


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def test_the_page_has_cards_a_chart_and_a_table_row_per_interval():
    items = status.build_intervals(
        [row(H + i * HOUR) for i in range(47)] + [unacked(H + 47 * HOUR)]
    )
    page = status.render_page(report(items))
    assert page.startswith("<!doctype html>")
    assert page.count("<tr class=") == 48
    assert page.count('<g class="slot') == 48
    assert page.count('class="delivered"') == 47  # the unacknowledged hour delivered nothing
    assert page.count('class="quarantined"') == 48
    assert 'id="card-delivered"><div class="v">5,546</div>' in page
    assert 'id="card-attention"' in page and "card attention" in page
    assert "3 of 3 batches not acknowledged" in page
    assert '<span class="st bad">unacknowledged</span>' in page
    assert "scheduled__<wbr>2025-05-14T10:00:00+00:00" in page
    assert 'href="api/intervals"' in page  # relative: works under any mount point


def test_the_page_is_self_contained():
    page = status.render_page(report(status.build_intervals([row(H)])))
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page
    assert 'xmlns="http://www.w3.org/2000/svg"' in page  # the only URL: a namespace


def test_everything_from_the_database_is_escaped():
    evil = "manual__<script>alert(1)</script>&"
    page = status.render_page(
        report(
            status.build_intervals(
                [unacked(H, run_id=evil)],
                {evil: RunInfo(evil, "failed", failed_tasks=('<img src=x onerror="1">',))},
            )
        )
    )
    assert "<script>" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page


def test_a_problem_is_shown_instead_of_the_table():
    page = status.render_page(
        report((), problem="The state database of connection x cannot be read: refused",
               available=False)
    )  # fmt: skip
    assert 'id="problem"' in page
    assert "The delivery ledger cannot be read" in page
    assert "cannot be read: refused" in page
    assert 'id="intervals"' not in page


def test_an_empty_ledger_says_no_runs_yet():
    page = status.render_page(report(()))
    assert "No runs yet" in page


def test_the_chart_scales_each_panel_and_labels_hours():
    items = status.build_intervals(
        [row(H + i * HOUR, rows_delivered=10 * (i + 1), rows_quarantined=i % 3) for i in range(24)]
    )
    svg = status.render_chart(items)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert ">240</text>" in svg  # the delivered scale's top
    assert '<text class="tick q"' in svg and ">2</text>" in svg  # the quarantined scale's own
    heights = [float(h) for h in re.findall(r'class="delivered"[^>]*height="([\d.]+)"', svg)]
    assert max(heights) == pytest.approx(118)  # the tallest bar fills the panel
    assert "05-14 10:00" in svg and "05-15 00:00" in svg and ">12:00<" in svg
    assert "2025-05-14 10:00\u201311:00 UTC: delivered, 10 delivered, 0 quarantined" in svg


# --------------------------------------------------------------------------------------------
# Reading: errors become messages, never exceptions
# --------------------------------------------------------------------------------------------


def _connect_raising(exc):
    @contextmanager
    def connect(conn_id):
        raise exc
        yield  # pragma: no cover

    return connect


def test_an_unreachable_database_is_reported_not_raised():
    result = status.load_report(
        env={}, connect=_connect_raising(psycopg.OperationalError("connection refused\nhint")),
        runs=None,
    )  # fmt: skip
    assert not result.available
    assert result.problem == (
        "The state database of connection services_source_db cannot be read: "
        "connection refused hint"
    )


def test_missing_state_tables_are_no_data_yet():
    result = status.load_report(
        env={"SERVICES_SYNC_STATE_SCHEMA": "sync_state"},
        connect=_connect_raising(psycopg.errors.UndefinedTable("relation does not exist")),
        runs=None,
    )
    assert result.available
    assert "do not exist yet in schema sync_state" in result.problem


def test_a_missing_privilege_names_the_grant():
    result = status.load_report(
        env={}, connect=_connect_raising(psycopg.errors.InsufficientPrivilege("denied")), runs=None
    )
    assert not result.available
    assert "Grant it USAGE on schema services_sync" in result.problem


def test_any_other_failure_names_the_connection():
    result = status.load_report(
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
    result = status.load_report(env={"SERVICES_SYNC_STATE_SCHEMA": "bad-name"}, runs=None)
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

    monkeypatch.setattr(status, "fetch_interval_rows", fake_fetch)
    result = status.load_report(env={}, connect=connect, runs=runs, now=H + 2 * HOUR)
    assert fetched == [("services_sync", "services_requests_sync", 48)]
    assert result.available
    assert [i.status for i in result.intervals] == ["delivered"]
    assert result.notes == ("Airflow run states unavailable (RuntimeError); ledger only.",)
    assert result.generated_at == H + 2 * HOUR


# --------------------------------------------------------------------------------------------
# The app (FastAPI only; the Airflow wiring is tested in tests/integration/test_status_view.py)
# --------------------------------------------------------------------------------------------


def test_the_app_serves_the_page_and_the_json():
    items = status.build_intervals([row(H)])
    client = TestClient(status.create_app(lambda: report(items)))
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
    client = TestClient(status.create_app(lambda: down))
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

    app = status.create_app(
        lambda: report(()),
        dependencies=[Depends(deny)],
        login_url=lambda next_url: f"/auth/login?next={next_url}",
    )
    client = TestClient(app, follow_redirects=False)
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

    client = TestClient(status.create_app(lambda: report(()), dependencies=[Depends(forbid)]))
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 403
    assert "403: Forbidden" in page.text
    assert "permission to read the runs of DAG services_requests_sync" in page.text
    assert client.get("/api/intervals").json() == {"detail": "Forbidden"}


def test_an_hour_whose_run_failed_but_a_later_run_drained_is_delivered():
    """After an outage past the retry budget, the next run's lanes send the failed hour's
    batches from the outbox: the hour is delivered, and the view says by whom."""
    drained = row(H, recorded=False, finished_at=None, drained_batches=2)
    runs = {
        drained["run_id"]: RunInfo(
            drained["run_id"], "failed", failed_tasks=("record_delivery (try 1)",)
        )
    }
    (item,) = status.build_intervals([drained], runs)
    assert item.status == status.DELIVERED
    assert item.last_error == "2 batch(es) delivered by a later run after this one failed"
    # Not all of them yet: still the failed run.
    partly = row(H, recorded=False, finished_at=None, batches=3, batches_acked=2,
                 unacked_batches=[3], drained_batches=2)  # fmt: skip
    (item,) = status.build_intervals([partly], runs)
    assert item.status == status.FAILED


def test_per_lane_progress_is_in_the_row():
    page = status.render_page(report(status.build_intervals([row(H)])))
    assert 'title="lane 1: 1/1, lane 2: 1/1">2/2</span>' in page
