from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from airflow.sdk import RetryAction

from services_sync.delivery import RejectedDeliveryError, RetryableDeliveryError
from services_sync.retry import DeliveryRetryPolicy, connect_retry_args

POLICY = DeliveryRetryPolicy(
    retry_delay=timedelta(seconds=60),
    backoff=2.0,
    max_retry_delay=timedelta(minutes=30),
    max_retry_after=timedelta(minutes=10),
)


def test_rejections_fail_fast_with_the_reason():
    decision = POLICY.evaluate(RejectedDeliveryError("HTTP 422 rejected: bad id", 422), 1, 5)
    assert decision.action is RetryAction.FAIL
    assert "bad id" in decision.reason


@pytest.mark.parametrize(
    ("try_number", "ceiling"), [(1, 60), (2, 120), (3, 240), (6, 1800), (12, 1800)]
)
def test_backoff_is_exponential_capped_and_jittered(try_number, ceiling):
    delays = {
        POLICY.evaluate(
            requests.ConnectionError("refused"), try_number, 20
        ).retry_delay.total_seconds()
        for _ in range(50)
    }
    assert all(0.8 * ceiling <= d <= ceiling for d in delays)
    assert len(delays) > 1, "retries of different batches must not land on the same second"


def test_retry_after_is_honored_when_longer_than_the_backoff():
    decision = POLICY.evaluate(RetryableDeliveryError("429", 429, retry_after=300), 1, 5)
    assert decision.action is RetryAction.RETRY
    assert decision.retry_delay == timedelta(seconds=300)
    assert "Retry-After" in decision.reason


def test_retry_after_is_capped():
    decision = POLICY.evaluate(RetryableDeliveryError("503", 503, retry_after=86_400), 1, 5)
    assert decision.retry_delay == timedelta(minutes=10)


def test_short_retry_after_never_makes_a_retry_sooner_than_the_backoff():
    decision = POLICY.evaluate(RetryableDeliveryError("503", 503, retry_after=1), 4, 5)
    assert decision.retry_delay >= timedelta(seconds=0.8 * 480)


def test_connect_retry_args_retry_connection_errors_only():
    args = connect_retry_args(3)
    assert args["reraise"] is True
    assert args["retry"].predicate(requests.ConnectionError())
    assert args["retry"].predicate(requests.Timeout())
    assert args["retry"].predicate(requests.exceptions.ChunkedEncodingError())
    assert not args["retry"].predicate(RetryableDeliveryError("503", 503))
    assert connect_retry_args(1) is None
