"""The status view's rules without a database: statuses, gaps, totals, JSON."""

from __future__ import annotations

import json
from datetime import timedelta

from services_sync.ui import model
from services_sync.ui.model import RunInfo
from tests.services_sync.ui.ledger_rows import HOUR, H, report, row, unacked


def test_a_recorded_run_is_delivered_with_its_counts_and_lag():
    [item] = model.build_intervals([row(H, duplicate_batches=1)])
    assert item.status == model.DELIVERED
    assert item.tone == "ok"
    assert (item.rows_extracted, item.rows_delivered, item.rows_quarantined) == (120, 118, 2)
    assert item.duplicates_avoided == 1
    assert item.lag == timedelta(minutes=2, seconds=30)
    assert item.last_error is None


def test_an_hour_without_changes_is_no_changes():
    quiet = row(H, batches=0, batches_acked=0, rows_extracted=0, rows_delivered=0,
                rows_quarantined=0, last_acked_at=None)  # fmt: skip
    [item] = model.build_intervals([quiet])
    assert item.status == model.NO_CHANGES
    assert item.lag is None


def test_unacknowledged_batches_are_named_as_the_last_error():
    [item] = model.build_intervals([unacked(H)])
    assert item.status == model.UNACKNOWLEDGED
    assert item.tone == "bad"
    assert item.last_error == "3 of 3 batches not acknowledged (batches 1, 2, 3)"


def test_a_long_list_of_batches_is_shortened():
    [item] = model.build_intervals([unacked(H, batches=9, unacked_batches=list(range(1, 10)))])
    assert item.last_error == "9 of 9 batches not acknowledged (batches 1, 2, 3, 4, 5 and 4 more)"


def test_a_run_not_recorded_without_unacked_batches_says_so():
    # Every row of its only batch was quarantined, and record_delivery has not run yet.
    pending = row(H, recorded=False, rows_delivered=0, rows_quarantined=120, last_acked_at=None)
    [item] = model.build_intervals([pending])
    assert item.status == model.UNACKNOWLEDGED
    assert "record_delivery has not succeeded" in item.last_error


def test_an_acknowledged_count_mismatch_is_an_error():
    [item] = model.build_intervals([row(H, miscounted_batches=[2])])
    assert item.status == model.UNACKNOWLEDGED
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
    newest, failed_post, in_progress = model.build_intervals(rows, runs)

    assert in_progress.status == model.IN_PROGRESS
    assert in_progress.run_state == "running"
    assert in_progress.last_error is None  # not an error yet
    assert failed_post.status == model.FAILED
    assert failed_post.last_error == (
        "3 of 3 batches not acknowledged (batches 1, 2, 3); failed task: post_batches lane 2 (try 21)"
    )
    # Delivered and recorded, but the reconciliation failed: the run's state wins.
    assert newest.status == model.FAILED
    assert newest.last_error == "failed task: reconcile_interval (try 1)"


def test_a_running_run_that_already_delivered_is_delivered():
    runs = {f"scheduled__{H.isoformat()}": RunInfo(f"scheduled__{H.isoformat()}", "running")}
    [item] = model.build_intervals([row(H)], runs)
    assert item.status == model.DELIVERED  # reconcile_interval still to come


def test_hours_without_any_run_are_gaps_between_known_intervals():
    rows = [row(H + 3 * HOUR), row(H)]
    items = model.build_intervals(rows)
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
    items = model.build_intervals([row(H)], runs)
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
    items = model.build_intervals(rows, window=48)
    assert len(items) == 48
    assert items[0].interval_start == H + 59 * HOUR
    assert items[-1].interval_start == H + 12 * HOUR


def test_naive_timestamps_are_read_as_utc():
    naive = row(H.replace(tzinfo=None), interval_end=(H + HOUR).replace(tzinfo=None))
    [item] = model.build_intervals([naive])
    assert item.interval_start == H


def test_totals_sum_the_intervals_and_pick_median_and_worst_lag():
    items = model.build_intervals(
        [
            row(H, last_acked_at=H + HOUR + timedelta(minutes=1)),
            row(H + HOUR, last_acked_at=H + 2 * HOUR + timedelta(minutes=2), duplicate_batches=2),
            row(H + 2 * HOUR, last_acked_at=H + 3 * HOUR + timedelta(hours=3)),
            unacked(H + 3 * HOUR),
        ]
    )
    sums = model.totals(items)
    assert sums["intervals"] == 4
    assert sums["rows_delivered"] == 3 * 118
    assert sums["rows_quarantined"] == 4 * 2
    assert sums["duplicates_avoided"] == 2
    assert sums["needs_attention"] == 1
    assert sums["median_lag"] == timedelta(minutes=2)
    assert sums["max_lag"] == timedelta(hours=3)


def test_no_rows_no_intervals():
    assert model.build_intervals([]) == []
    assert model.totals([])["max_lag"] is None


def test_an_hour_whose_run_failed_but_a_later_run_drained_is_delivered():
    """After an outage past the retry budget, the next run's lanes send the failed hour's
    batches from the outbox: the hour is delivered, and the view says by whom."""
    drained = row(H, recorded=False, finished_at=None, drained_batches=2)
    runs = {
        drained["run_id"]: RunInfo(
            drained["run_id"], "failed", failed_tasks=("record_delivery (try 1)",)
        )
    }
    (item,) = model.build_intervals([drained], runs)
    assert item.status == model.DELIVERED
    assert item.last_error == "2 batch(es) delivered by a later run after this one failed"
    # Not all of them yet: still the failed run.
    partly = row(H, recorded=False, finished_at=None, batches=3, batches_acked=2,
                 unacked_batches=[3], drained_batches=2)  # fmt: skip
    (item,) = model.build_intervals([partly], runs)
    assert item.status == model.FAILED


def test_report_json_is_plain_json():
    items = model.build_intervals([row(H + HOUR), unacked(H)])
    data = json.loads(json.dumps(model.report_json(report(items))))
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


def test_a_failed_task_is_named_with_its_lane_and_try():
    assert model.failed_task_label("post_batches", 2, 21) == "post_batches lane 3 (try 21)"
    assert model.failed_task_label("reconcile_interval", -1, 1) == "reconcile_interval (try 1)"
