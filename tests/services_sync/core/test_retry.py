"""The POST task's retry policy, fed what the delivery lane really raises.

A lane turns a 408/425/429/5xx (``check_ack`` raises ``RetryableDeliveryError``) or a lost
connection into ``TransientDeliveryFailure``; that is what Airflow hands to the policy. A
rejection never reaches it (the lane ends with ``AirflowFailException``, which Airflow fails
without a retry policy): ``tests/reliability/test_http_faults.py`` checks a 400 is not retried.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from airflow.sdk import RetryAction

from services_sync.core.ack import RetryableDeliveryError, TransientDeliveryFailure, check_ack
from services_sync.core.retry import DeliveryRetryPolicy, connect_retry_args

POLICY = DeliveryRetryPolicy(
    retry_delay=timedelta(seconds=60),
    backoff=2.0,
    max_retry_delay=timedelta(minutes=30),
    max_retry_after=timedelta(minutes=10),
)
NOW = datetime(2025, 5, 14, 10, tzinfo=UTC)


def transient(status: int, retry_after: str | None = None) -> TransientDeliveryFailure:
    """What a lane raises for this answer of the receiver (the path of ``lanes.py``)."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    with pytest.raises(RetryableDeliveryError) as info:
        check_ack(status, headers, '{"error": "busy"}', 3, now=NOW)
    return TransientDeliveryFailure.from_error(info.value, "batch 1 of run")


def lost_connection() -> TransientDeliveryFailure:
    return TransientDeliveryFailure.from_error(requests.ConnectionError("refused"), "batch 1")


@pytest.mark.parametrize(
    ("try_number", "ceiling"), [(1, 60), (2, 120), (3, 240), (6, 1800), (12, 1800)]
)
@pytest.mark.parametrize(
    "failure", [lost_connection, lambda: transient(503)], ids=["lost connection", "503"]
)
def test_backoff_is_exponential_capped_and_jittered(failure, try_number, ceiling):
    decisions = [POLICY.evaluate(failure(), try_number, 20) for _ in range(50)]
    assert {d.action for d in decisions} == {RetryAction.RETRY}
    delays = {d.retry_delay.total_seconds() for d in decisions}
    assert all(0.8 * ceiling <= d <= ceiling for d in delays)
    assert len(delays) > 1, "retries of different batches must not land on the same second"
    assert all(f"backoff after try {try_number}" in d.reason for d in decisions)


def test_an_unexpected_error_backs_off_too():
    decision = POLICY.evaluate(RuntimeError("state database restarted"), 2, 5)
    assert decision.action is RetryAction.RETRY
    assert timedelta(seconds=96) <= decision.retry_delay <= timedelta(seconds=120)


@pytest.mark.parametrize(
    "retry_after",
    ["300", format_datetime(NOW + timedelta(seconds=300), usegmt=True)],
    ids=["seconds", "HTTP-date"],
)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honored_when_longer_than_the_backoff(status, retry_after):
    decision = POLICY.evaluate(transient(status, retry_after), 1, 5)
    assert decision.action is RetryAction.RETRY
    assert decision.retry_delay == timedelta(seconds=300)
    assert decision.reason == "next try in 300.0 s (Retry-After, after try 1)"


def test_retry_after_is_capped():
    decision = POLICY.evaluate(transient(503, "86400"), 1, 5)
    assert decision.retry_delay == timedelta(minutes=10)
    assert decision.reason == "next try in 600.0 s (Retry-After, after try 1)"


def test_short_retry_after_never_makes_a_retry_sooner_than_the_backoff():
    decision = POLICY.evaluate(transient(503, "1"), 4, 5)
    assert timedelta(seconds=0.8 * 480) <= decision.retry_delay <= timedelta(seconds=480)
    assert "backoff after try 4" in decision.reason


def test_a_retry_after_in_the_past_is_the_plain_backoff():
    decision = POLICY.evaluate(transient(429, format_datetime(NOW - timedelta(hours=1))), 1, 5)
    assert timedelta(seconds=48) <= decision.retry_delay <= timedelta(seconds=60)
    assert "backoff after try 1" in decision.reason


def test_connect_retry_args_retry_connection_errors_only():
    args = connect_retry_args(3)
    assert args["reraise"] is True
    assert args["retry"].predicate(requests.ConnectionError())
    assert args["retry"].predicate(requests.Timeout())
    assert args["retry"].predicate(requests.exceptions.ChunkedEncodingError())
    assert not args["retry"].predicate(RetryableDeliveryError("503", 503))
    assert connect_retry_args(1) is None
