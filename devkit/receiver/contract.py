"""The data endpoint's contract: its path and limits, the body models, and the request checks.

Everything here is pure (no I/O, no state): what a valid ``POST /services-data/requests`` looks
like (:class:`RequestBatch` of :class:`ServiceRequestRecord`), how a validation error is
summarised without echoing values, how a gzip body is inflated within :data:`MAX_BODY_BYTES`,
and which ``Authorization`` and ``Content-Type`` headers are acceptable. The routes that apply
these checks, in order, are in :mod:`devkit.receiver.app`.
"""

from __future__ import annotations

import hmac
import re
import zlib
from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

DATA_PATH = "/services-data/requests"
"""Path of the data endpoint."""

MAX_BATCH_SIZE = 10_000
"""Largest number of records accepted in one batch."""

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body accepted on the data endpoint (413 above)."""

MAX_KEY_LENGTH = 255
"""Longest ``Idempotency-Key`` header accepted (400 above)."""

_TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _check_timestamp(value: str) -> str:
    """Check that ``value`` is ``YYYY-MM-DDTHH:MM:SSZ`` and a real calendar date and time.

    Args:
        value: The string to check (already known to be a ``str``).

    Returns:
        ``value`` unchanged.

    Raises:
        PydanticCustomError: If the format is wrong or the date does not exist.
    """
    if _TIMESTAMP_RE.fullmatch(value) is None:
        raise PydanticCustomError(
            "timestamp_format",
            "Input should be a UTC timestamp formatted as YYYY-MM-DDTHH:MM:SSZ",
        )
    try:
        datetime.strptime(value, _TIMESTAMP_FORMAT)
    except ValueError:
        raise PydanticCustomError(
            "timestamp_value", "Input should be a real calendar date and time"
        ) from None
    return value


NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]
UtcTimestamp = Annotated[str, AfterValidator(_check_timestamp)]


class ServiceRequestRecord(BaseModel):
    """One service request as delivered by the DAG (strict: no coercion, no extra keys)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    service_id: NonEmptyStr
    request_id: NonEmptyStr
    opening_date: UtcTimestamp
    status_id: int
    last_modified_date: UtcTimestamp


class RequestBatch(BaseModel):
    """The body of ``POST /services-data/requests``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    requests: Annotated[list[ServiceRequestRecord], Field(max_length=MAX_BATCH_SIZE)]

    @field_validator("requests")
    @classmethod
    def _not_empty(cls, value: list[ServiceRequestRecord]) -> list[ServiceRequestRecord]:
        if not value:
            raise PydanticCustomError("empty_batch", "empty batch")
        return value


def _format_loc(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as ``requests[3].status_id`` (``body`` if empty)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def format_validation_error(exc: ValidationError) -> str:
    """Summarise a validation error in one line naming the field and index, never the value."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:  # pragma: no cover - pydantic always reports at least one
        return "body: invalid"
    first = errors[0]
    reason = f"{_format_loc(tuple(first['loc']))}: {first['msg']}"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return reason


def gunzip(data: bytes, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """Decompress a gzip body, refusing (413 later) to inflate past ``max_bytes + 1``.

    Raises:
        OSError, EOFError, zlib.error: If ``data`` is not (complete) gzip data.
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, max_bytes + 1)
    if not inflater.eof and len(out) <= max_bytes:
        raise EOFError("truncated gzip body")
    return out


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant-time compare)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    )


def content_type_problem(content_type: str | None) -> str | None:
    """Return why ``content_type`` is unacceptable, or ``None`` if it is JSON in UTF-8."""
    if not content_type:
        return (
            "Content-Type header is missing; it must be application/json "
            "(send the batch with requests.post(url, json=payload))"
        )
    mime, *params = (part.strip() for part in content_type.split(";"))
    if mime.lower() != "application/json":
        hint = ""
        if mime.lower() in ("application/x-www-form-urlencoded", "multipart/form-data"):
            hint = " (a form-encoded body: send the batch with json=payload, not data=payload)"
        return f"Content-Type must be application/json, got {mime[:100]!r}{hint}"
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return "application/json bodies must be UTF-8"
    return None


def log_key(key: str | None) -> str:
    """An idempotency key as it appears in the log: quoted, cut at 80 characters."""
    if key is None:
        return "-"
    return repr(key[:80] + ("..." if len(key) > 80 else ""))
