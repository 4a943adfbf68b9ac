from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services_sync.core.ack import (
    Ack,
    PayloadTooLargeError,
    RejectedDeliveryError,
    RetryableDeliveryError,
    check_ack,
    parse_retry_after,
)

NOW = datetime(2025, 5, 14, 12, 0, 0, tzinfo=UTC)


def test_2xx_with_matching_count_is_an_ack():
    ack = check_ack(200, {}, json.dumps({"accepted": 3, "duplicate": False}), 3)
    assert ack == Ack(status=200, accepted=3, duplicate=False)


def test_2xx_duplicate_is_an_ack():
    assert check_ack(200, {}, json.dumps({"accepted": 3, "duplicate": True}), 3).duplicate


@pytest.mark.parametrize("body", ["", "OK", "[1,2]", json.dumps({"status": "ok"})])
def test_2xx_without_a_count_is_trusted(body):
    assert check_ack(202, {}, body, 7) == Ack(status=202, accepted=7, duplicate=False)


@pytest.mark.parametrize("accepted", [2, 4, 0])
def test_2xx_with_a_different_count_is_rejected(accepted):
    with pytest.raises(RejectedDeliveryError, match=f"accepted {accepted} of 3"):
        check_ack(200, {}, json.dumps({"accepted": accepted}), 3)


@pytest.mark.parametrize("accepted", ["3", 3.5, True])
def test_2xx_with_a_non_integer_count_is_rejected(accepted):
    with pytest.raises(RejectedDeliveryError, match="not an integer"):
        check_ack(200, {}, json.dumps({"accepted": accepted}), 3)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(status):
    with pytest.raises(RetryableDeliveryError) as info:
        check_ack(status, {}, "busy", 1)
    assert info.value.status == status
    assert info.value.retry_after is None


def test_retry_after_seconds_is_parsed():
    with pytest.raises(RetryableDeliveryError) as info:
        check_ack(429, {"retry-after": "120"}, "{}", 1, now=NOW)
    assert info.value.retry_after == 120.0
    assert "Retry-After 120s" in str(info.value)


def test_retry_after_http_date_is_parsed():
    assert parse_retry_after("Wed, 14 May 2025 12:01:30 GMT", NOW) == 90.0
    assert parse_retry_after("Wed, 14 May 2025 11:00:00 GMT", NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5"])
def test_unusable_retry_after_is_ignored(value):
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422, 301])
def test_other_statuses_are_rejections_with_the_receivers_reason(status):
    body = json.dumps({"error": "invalid body", "reason": "requests[3].status_id: not an int"})
    with pytest.raises(RejectedDeliveryError) as info:
        check_ack(status, {}, body, 1)
    assert f"HTTP {status}" in str(info.value)
    assert "requests[3].status_id: not an int" in str(info.value)


def test_413_asks_for_a_split():
    with pytest.raises(PayloadTooLargeError, match="413 payload too large"):
        check_ack(413, {}, "too big", 1)


def test_long_error_bodies_are_truncated():
    with pytest.raises(RejectedDeliveryError) as info:
        check_ack(400, {}, "x" * 10_000, 1)
    assert len(str(info.value)) < 400
