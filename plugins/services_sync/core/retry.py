"""Retry policy of the POST task: honor ``Retry-After``, spread retries."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from airflow.sdk import RetryDecision, RetryPolicy

from services_sync.core.ack import TransientDeliveryFailure
from services_sync.core.config import RETRY_JITTER_FLOOR

#: Retries land uniformly in [JITTER_FLOOR * backoff, backoff]. Airflow's own backoff jitter is
#: a hash of (dag, task, logical date, try) without the map index, so every batch of a run
#: would otherwise come back at the very same second after an outage.
JITTER_FLOOR = RETRY_JITTER_FLOOR


class DeliveryRetryPolicy(RetryPolicy):
    """Decide when a failed try of a delivery lane is retried.

    * every failure that reaches the policy (a 408/425/429/5xx or a lost connection, raised by
      the lane as :class:`~services_sync.core.ack.TransientDeliveryFailure`, or an unexpected
      error) backs off exponentially with jitter;
    * a ``Retry-After`` (seconds or HTTP-date) on a transient status is honored: the retry never
      comes sooner than it asks, up to ``max_retry_after`` (a receiver asking for a day does not
      park the sync for a day).

    A rejection (4xx other than 408/425/429, a wrong ack count) never gets here: the lane records
    it, goes on with its next batch and ends with ``AirflowFailException``, which Airflow fails
    at once without asking a retry policy (``_run_task_and_map_outcome`` in
    ``airflow/sdk/execution_time/task_runner.py``).
    """

    def __init__(
        self,
        *,
        retry_delay: timedelta,
        backoff: float,
        max_retry_delay: timedelta,
        max_retry_after: timedelta | None = None,
    ) -> None:
        self.retry_delay = retry_delay
        self.backoff = backoff
        self.max_retry_delay = max_retry_delay
        self.max_retry_after = max_retry_after or max_retry_delay

    def backoff_delay(self, try_number: int) -> timedelta:
        """Exponential backoff for the try that just failed (1-based), before jitter."""
        multiplier = self.backoff if self.backoff > 0 else 1.0
        seconds = self.retry_delay.total_seconds() * multiplier ** max(0, try_number - 1)
        return min(timedelta(seconds=seconds), self.max_retry_delay)

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Any = None,
    ) -> RetryDecision:
        """Return a jittered backoff delay, or the Retry-After delay when that is longer."""
        backoff = self.backoff_delay(try_number).total_seconds()
        wait = random.uniform(JITTER_FLOOR * backoff, backoff)  # noqa: S311 - not crypto
        reason = f"next try in {wait:.1f} s (backoff after try {try_number})"
        # Only the lane's transient failure carries the receiver's Retry-After: a
        # RetryableDeliveryError is always turned into one before it leaves the lane.
        retry_after = (
            exception.retry_after if isinstance(exception, TransientDeliveryFailure) else None
        )
        if retry_after is not None:
            asked = min(retry_after, self.max_retry_after.total_seconds())
            if asked > wait:
                wait, reason = (
                    asked,
                    f"next try in {asked:.1f} s (Retry-After, after try {try_number})",
                )
        return RetryDecision.retry(delay=timedelta(seconds=wait), reason=reason)


def connect_retry_args(attempts: int) -> dict[str, Any] | None:
    """Tenacity settings for ``HttpOperator.retry_args``: quick in-try retries of a lost connection.

    A blip (connection refused or reset, a response cut short, a timeout) is retried a few times
    within seconds before the try fails and the slower task-level backoff takes over; the same
    body and key are resent, so a request that did reach the receiver is de-duplicated there.
    """
    if attempts <= 1:
        return None
    import requests
    import tenacity

    return {
        "stop": tenacity.stop_after_attempt(attempts),
        "wait": tenacity.wait_random_exponential(multiplier=0.5, max=10),
        "retry": tenacity.retry_if_exception_type(
            (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,  # connection cut mid-response
            )
        ),
        "reraise": True,
    }
