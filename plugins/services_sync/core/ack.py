"""How the receiver's answer is judged: acknowledgment, retryable or not. Pure: no Airflow.

The acknowledgment contract (README, "Acknowledgment contract"):

* any 2xx means the batch is durably accepted;
* if the 2xx body is a JSON object with an integer ``accepted``, it must equal the number of
  records sent, otherwise the batch fails without retrying (a partial accept is a bug on one
  side that a resend with the same key cannot fix);
* ``408``, ``429`` and ``5xx`` are transient: retried, honoring ``Retry-After``;
* ``413`` asks for smaller bodies: the batch is split in halves, each sent on its own;
* any other status is a rejection of this batch: it fails fast with the receiver's reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: Statuses worth sending the same batch again for.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_REASON_CHARS = 300


class DeliveryError(Exception):
    """The receiver did not acknowledge a batch."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RetryableDeliveryError(DeliveryError):
    """A transient failure: the same batch, with the same key, should be sent again later."""


class RejectedDeliveryError(DeliveryError):
    """The receiver refused this batch for good; resending it unchanged cannot succeed."""


class PayloadTooLargeError(RejectedDeliveryError):
    """HTTP 413: the receiver wants smaller bodies; the batch is split and the halves are sent."""


class TransientDeliveryFailure(SystemExit):
    """A delivery lane's try ended on a transient failure; the task is retried later.

    A ``SystemExit`` on purpose: Airflow's task runner logs it as one line (``Task exited
    exit_code='...'``) instead of a traceback, and hands it to the retry policy like any
    failure (``_run_task_and_map_outcome`` in ``airflow/sdk/execution_time/task_runner.py``).
    An expected 503 is then two lines in the log: what failed, and when the next try comes.
    """

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        return str(self.code)

    @classmethod
    def from_error(cls, exc: BaseException, what: str) -> TransientDeliveryFailure:
        """From a retryable HTTP answer or a lost connection, naming the batch."""
        if isinstance(exc, DeliveryError):
            return cls(f"{what}: {exc}", exc.status, exc.retry_after)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:_REASON_CHARS]
        return cls(f"{what}: receiver unreachable ({type(exc).__name__}: {first})")


@dataclass(frozen=True)
class Ack:
    """A positive acknowledgment."""

    status: int
    accepted: int
    duplicate: bool


def check_ack(
    status: int,
    headers: Mapping[str, str],
    text: str,
    sent: int,
    now: datetime | None = None,
) -> Ack:
    """Judge one response to a batch of ``sent`` records.

    Returns:
        The acknowledgment, if the batch was accepted.

    Raises:
        RetryableDeliveryError: for 408/425/429/5xx, with ``retry_after`` in seconds when given.
        PayloadTooLargeError: for 413, so the caller can split the batch.
        RejectedDeliveryError: for any other non-2xx, or a 2xx whose count does not match.
    """
    reason = _short(text)
    if 200 <= status < 300:
        body = _json_object(text)
        accepted = body.get("accepted") if body else None
        if accepted is None:
            return Ack(status=status, accepted=sent, duplicate=False)
        if isinstance(accepted, bool) or not isinstance(accepted, int):
            raise RejectedDeliveryError(
                f"HTTP {status} but 'accepted' is not an integer: {accepted!r}", status
            )
        if accepted != sent:
            raise RejectedDeliveryError(
                f"HTTP {status} but the receiver accepted {accepted} of {sent} records", status
            )
        return Ack(status=status, accepted=accepted, duplicate=bool(body.get("duplicate")))
    retry_after = parse_retry_after(_header(headers, "Retry-After"), now)
    if status in RETRYABLE_STATUSES:
        hint = f", Retry-After {retry_after:.0f}s" if retry_after is not None else ""
        raise RetryableDeliveryError(
            f"HTTP {status} (transient{hint}): {reason}", status, retry_after
        )
    if status == 413:
        raise PayloadTooLargeError(f"HTTP 413 payload too large ({reason})", status)
    raise RejectedDeliveryError(f"HTTP {status} rejected the batch: {reason}", status)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _json_object(text: str) -> dict | None:
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _short(text: str) -> str:
    body = _json_object(text)
    if body:
        parts = [str(body[k]) for k in ("error", "reason", "detail", "message") if k in body]
        if parts:
            text = ": ".join(parts)
    text = " ".join((text or "").split())
    return text[:_REASON_CHARS] or "(empty body)"
