"""The watchdog's verdict: late or not, and when to alert (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services_sync.core.watchdog import judge

NOW = datetime(2025, 5, 14, 12, 0, tzinfo=UTC)
MAX_LAG = timedelta(hours=3)
REPEAT = timedelta(hours=1)


def verdict(delivered, *, first_seen=NOW - timedelta(days=1), late_since=None, alerted_at=None):
    return judge(
        now=NOW,
        delivered_up_to=delivered,
        first_seen=first_seen,
        late_since=late_since,
        alerted_at=alerted_at,
        max_lag=MAX_LAG,
        repeat=REPEAT,
    )


def test_on_time_is_quiet():
    v = verdict(NOW - timedelta(minutes=70))
    assert (v.late, v.alert, v.late_since, v.alerted_at) == (False, None, None, None)
    assert v.lag == timedelta(minutes=70)


def test_late_alerts_once_then_again_after_the_repeat_interval():
    first = verdict(NOW - timedelta(hours=4))
    assert (first.late, first.alert, first.late_since, first.alerted_at) == (True, "late", NOW, NOW)
    quiet = verdict(
        NOW - timedelta(hours=4),
        late_since=NOW - timedelta(minutes=30),
        alerted_at=NOW - timedelta(minutes=30),
    )
    assert (quiet.alert, quiet.late_since, quiet.alerted_at) == (
        None,
        NOW - timedelta(minutes=30),
        NOW - timedelta(minutes=30),
    )
    again = verdict(
        NOW - timedelta(hours=5), late_since=NOW - timedelta(hours=2), alerted_at=NOW - REPEAT
    )
    assert (again.alert, again.late_since, again.alerted_at) == (
        "late",
        NOW - timedelta(hours=2),
        NOW,
    )


def test_back_on_time_after_an_alert_says_so_once():
    back = verdict(
        NOW - timedelta(minutes=10),
        late_since=NOW - timedelta(hours=2),
        alerted_at=NOW - timedelta(minutes=5),
    )
    assert (back.late, back.alert, back.late_since, back.alerted_at) == (
        False,
        "recovered",
        None,
        None,
    )


def test_nothing_ever_delivered_is_late_from_when_the_watchdog_first_looked():
    assert verdict(None, first_seen=NOW - timedelta(hours=1)).late is False
    assert verdict(None, first_seen=NOW - timedelta(hours=4)).alert == "late"
