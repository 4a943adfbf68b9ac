"""Reference receiver for the services-data HTTP API.

A real HTTP server (a FastAPI app served by uvicorn) that implements the downstream API the DAG
delivers to. It is used by the demo, by the tests and by people trying the pipeline locally::

    python -m devkit.receiver --host 127.0.0.1 --port 8000 [--token T] [--store state.jsonl]

Data endpoint
    ``POST /services-data/requests`` with a JSON body ``{"requests": [ ... ]}``, plain or with
    ``Content-Encoding: gzip`` (1..10000 items,
    each exactly ``service_id``, ``request_id``, ``opening_date``, ``status_id``,
    ``last_modified_date``; validated strictly) and a required ``Idempotency-Key`` header.
    Answers, in this order of checks:

    * 401 ``{"error": "unauthorized", ...}`` when the app has a token and the request lacks
      ``Authorization: Bearer <token>``;
    * 415 when the Content-Type is not ``application/json`` (this is what a client that passes a
      dict as ``data=`` instead of ``json=`` gets: a form-encoded body);
    * 400 when the ``Idempotency-Key`` header is missing or blank;
    * 413 when the body exceeds :data:`MAX_BODY_BYTES`;
    * 400 ``{"error": "invalid body", "reason": "requests[3].status_id: ..."}`` when the body
      does not match the contract;
    * 200 ``{"accepted": N, "duplicate": false, "idempotency_key": K}`` for a new key (the batch
      is stored);
    * 200 with the original ack and ``"duplicate": true`` for a repeat of a key with a
      byte-identical body (sha256 of the raw body); nothing new is stored;
    * 422 ``{"error": "idempotency key reused with a different body"}`` for a repeat of a key
      with a different body.

    Every rejection (401/413/415/400/422) counts in ``stats.rejected``.

Inspection endpoints (open, even when a token is configured)
    ``GET /inspect/batches[?include_requests=false]``, ``GET /inspect/requests``,
    ``GET /inspect/state``, ``GET /inspect/stats``, ``DELETE /inspect`` (resets data, counters,
    faults and truncates the store file) and ``GET /healthz``.

Fault injection (for retry tests)
    ``POST /faults`` with ``{"faults": [fault, ...]}`` appends to a FIFO queue, ``GET /faults``
    lists the pending ones (``times`` is the remaining count), ``DELETE /faults`` clears them.
    Each fault applies to the next ``POST /services-data/requests`` (before authentication and
    validation, like a misbehaving proxy in front of the API) and is consumed; ``"times": k``
    applies it to the next k requests. Kinds:

    * ``{"status": 503, "retry_after": "5"}``: that status (400..599) with an optional
      ``Retry-After`` header and the body ``{"error": "injected fault"}``; nothing is stored.
    * ``{"delay_s": 2.5}``: the body is read, the server sleeps (``asyncio.sleep``, other
      requests are still served), then processes the request normally. The batch is stored even
      if the client has given up meanwhile, so a client timeout followed by a retry with the same
      key yields ``"duplicate": true``.
    * ``{"drop": "before_response"}``: the body is read, nothing is stored, and the TCP
      connection is closed without a single byte of response. ``requests`` raises
      ``requests.exceptions.ConnectionError`` (``RemoteDisconnected: Remote end closed connection
      without response``). This works under uvicorn (h11 and httptools) by closing the
      connection's transport directly; under a server where the transport cannot be found the
      receiver falls back to response headers with ``Content-Length: 1`` and no body, which
      ``requests`` reports as ``ChunkedEncodingError`` instead.
    * ``"match": "R-0025"`` on any of these: the fault applies only to the next request whose
      (decompressed) body contains that text; the others pass untouched (a poison batch).
    * ``{"drop": "mid_body"}``: the request is processed and stored normally, then the response
      headers are sent with the full ``Content-Length`` but only the first half of the body,
      and the connection is closed. ``requests`` raises
      ``requests.exceptions.ChunkedEncodingError`` (``IncompleteRead``): note that this is a
      ``RequestException`` but *not* a ``ConnectionError``.

Storage
    In memory behind a lock; with ``store_path`` also an append-only JSON-lines file (one line
    per accepted batch or served duplicate, flushed per write) that is replayed on start, so a
    restarted receiver still de-duplicates keys it has already seen. ``rejected`` and
    ``faults_served`` are process-local counters.

Logging
    One line per data request on the ``devkit.receiver`` logger: key, record count, status and
    duplicate flag (plus the rejection reason, which names fields but never echoes values).
    Tokens and payloads are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "DATA_PATH",
    "MAX_BATCH_SIZE",
    "MAX_BODY_BYTES",
    "Fault",
    "ReceiverServer",
    "RequestBatch",
    "ServiceRequestRecord",
    "create_app",
    "main",
]

logger = logging.getLogger("devkit.receiver")

DATA_PATH = "/services-data/requests"
"""Path of the data endpoint."""

MAX_BATCH_SIZE = 10_000
"""Largest number of records accepted in one batch."""

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body accepted on the data endpoint (413 above)."""

_TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_MAX_KEY_LENGTH = 255
_STORE_VERSION = 1


# --------------------------------------------------------------------------------------------
# Contract models
# --------------------------------------------------------------------------------------------


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


class Fault(BaseModel):
    """One entry of the fault queue; exactly one of ``status``, ``delay_s`` or ``drop``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    status: Annotated[int, Field(ge=400, le=599)] | None = None
    retry_after: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    delay_s: Annotated[float, Field(ge=0, le=600)] | None = None
    drop: Literal["before_response", "mid_body"] | None = None
    times: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    match: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Fault:
        kinds = [k for k in ("status", "delay_s", "drop") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise PydanticCustomError(
                "fault_kind", "a fault needs exactly one of 'status', 'delay_s' or 'drop'"
            )
        if self.retry_after is not None:
            if self.status is None:
                raise PydanticCustomError(
                    "fault_retry_after", "'retry_after' only goes with 'status'"
                )
            if not (self.retry_after.isascii() and self.retry_after.isprintable()):
                raise PydanticCustomError(
                    "fault_retry_after", "'retry_after' must be printable ASCII"
                )
        return self

    @property
    def kind(self) -> str:
        """Short description used in logs, e.g. ``status=503`` or ``drop=mid_body``."""
        if self.status is not None:
            return f"status={self.status}"
        if self.delay_s is not None:
            return f"delay_s={self.delay_s:g}"
        return f"drop={self.drop}"


class _FaultList(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    faults: list[Fault]


def _format_loc(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as ``requests[3].status_id`` (``body`` if empty)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _format_validation_error(exc: ValidationError) -> str:
    """Summarise a validation error in one line naming the field and index, never the value."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:  # pragma: no cover - pydantic always reports at least one
        return "body: invalid"
    first = errors[0]
    reason = f"{_format_loc(tuple(first['loc']))}: {first['msg']}"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return reason


# --------------------------------------------------------------------------------------------
# State: batches, dedup index, counters, fault queue, persistence
# --------------------------------------------------------------------------------------------


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class _Batch:
    idempotency_key: str
    received_at: str
    body_sha256: str
    requests: list[dict[str, Any]]
    duplicates: int = 0

    def ack(self, *, duplicate: bool) -> dict[str, Any]:
        return {
            "accepted": len(self.requests),
            "duplicate": duplicate,
            "idempotency_key": self.idempotency_key,
        }


@dataclass
class _PendingFault:
    fault: Fault
    remaining: int

    def as_json(self) -> dict[str, Any]:
        data = self.fault.model_dump(exclude_none=True)
        data["times"] = self.remaining
        return data


@dataclass
class _Counters:
    duplicates: int = 0
    rejected: int = 0
    faults_served: int = 0


@dataclass
class ReceiverState:
    """Everything the receiver remembers, guarded by one lock.

    Attributes:
        store_path: Optional JSON-lines file mirroring accepted batches and duplicates.
    """

    store_path: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _batches: list[_Batch] = field(default_factory=list, repr=False)
    _by_key: dict[str, _Batch] = field(default_factory=dict, repr=False)
    _counters: _Counters = field(default_factory=_Counters, repr=False)
    _faults: list[_PendingFault] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.store_path is not None:
            self._load()

    # -- persistence ------------------------------------------------------------------------

    def _load(self) -> None:
        """Replay the store file; tolerate (and cut off) a torn last line from a crash."""
        path = self.store_path
        assert path is not None
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            return
        data = path.read_bytes()
        complete_len = data.rfind(b"\n") + 1
        if complete_len < len(data):
            logger.warning(
                "store %s: dropping a torn last line (%d bytes)", path, len(data) - complete_len
            )
            with path.open("r+b") as fh:
                fh.truncate(complete_len)
            data = data[:complete_len]
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                self._apply_event(event)
            except (ValueError, KeyError, TypeError) as exc:
                msg = f"store {path} line {lineno} is not a valid receiver event"
                raise ValueError(msg) from exc
        logger.info(
            "store %s: loaded %d batches, %d records",
            path,
            len(self._batches),
            sum(len(b.requests) for b in self._batches),
        )

    def _apply_event(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "batch":
            batch = _Batch(
                idempotency_key=event["idempotency_key"],
                received_at=event["received_at"],
                body_sha256=event["body_sha256"],
                requests=list(event["requests"]),
            )
            self._batches.append(batch)
            self._by_key[batch.idempotency_key] = batch
        elif kind == "duplicate":
            self._by_key[event["idempotency_key"]].duplicates += 1
            self._counters.duplicates += 1
        else:
            msg = f"unknown event {kind!r}"
            raise ValueError(msg)

    def _append(self, event: dict[str, Any]) -> None:
        if self.store_path is None:
            return
        line = json.dumps({"v": _STORE_VERSION, **event}, separators=(",", ":")) + "\n"
        with self.store_path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()

    # -- data -------------------------------------------------------------------------------

    def accept(
        self, key: str, body_sha256: str, records: list[dict[str, Any]]
    ) -> tuple[Literal["stored", "duplicate", "conflict"], dict[str, Any] | None]:
        """Store a validated batch unless its key was seen before.

        Args:
            key: The Idempotency-Key header.
            body_sha256: Hex sha256 of the raw request body.
            records: The validated records, in body order.

        Returns:
            The outcome and the ack to send (``None`` for a conflict).
        """
        with self._lock:
            existing = self._by_key.get(key)
            if existing is not None:
                if not hmac.compare_digest(existing.body_sha256, body_sha256):
                    return "conflict", None
                existing.duplicates += 1
                self._counters.duplicates += 1
                self._append({"event": "duplicate", "idempotency_key": key})
                return "duplicate", existing.ack(duplicate=True)
            batch = _Batch(key, _utc_now_iso(), body_sha256, records)
            self._append(
                {
                    "event": "batch",
                    "idempotency_key": key,
                    "received_at": batch.received_at,
                    "body_sha256": body_sha256,
                    "requests": records,
                }
            )
            self._batches.append(batch)
            self._by_key[key] = batch
            return "stored", batch.ack(duplicate=False)

    def count_rejected(self) -> None:
        """Count one rejected data request."""
        with self._lock:
            self._counters.rejected += 1

    def batches(self, *, include_requests: bool = True) -> list[dict[str, Any]]:
        """Accepted batches in arrival order."""
        with self._lock:
            out = []
            for b in self._batches:
                item: dict[str, Any] = {
                    "idempotency_key": b.idempotency_key,
                    "received_at": b.received_at,
                    "count": len(b.requests),
                    "body_sha256": b.body_sha256,
                    "duplicates": b.duplicates,
                }
                if include_requests:
                    item["requests"] = [dict(r) for r in b.requests]
                out.append(item)
            return out

    def records(self) -> list[dict[str, Any]]:
        """Every delivered record in arrival order, each tagged with its idempotency key."""
        with self._lock:
            return [
                {**r, "idempotency_key": b.idempotency_key}
                for b in self._batches
                for r in b.requests
            ]

    def downstream_state(self) -> list[dict[str, Any]]:
        """Latest record per (service_id, request_id), last write in arrival order wins."""
        with self._lock:
            state: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
            for b in self._batches:
                for r in b.requests:
                    state[(r["service_id"], r["request_id"])] = dict(r)
            return list(state.values())

    def stats(self) -> dict[str, int]:
        """Counters: batches, records, duplicates, rejected, faults_served."""
        with self._lock:
            return {
                "batches": len(self._batches),
                "records": sum(len(b.requests) for b in self._batches),
                "duplicates": self._counters.duplicates,
                "rejected": self._counters.rejected,
                "faults_served": self._counters.faults_served,
            }

    def reset(self) -> None:
        """Forget everything (data, counters, faults) and truncate the store file."""
        with self._lock:
            self._batches.clear()
            self._by_key.clear()
            self._counters = _Counters()
            self._faults.clear()
            if self.store_path is not None:
                self.store_path.write_bytes(b"")

    # -- faults -----------------------------------------------------------------------------

    def add_faults(self, faults: list[Fault]) -> list[dict[str, Any]]:
        """Append faults to the queue and return the pending list."""
        with self._lock:
            self._faults.extend(_PendingFault(f, f.times) for f in faults)
            return [p.as_json() for p in self._faults]

    def pending_faults(self) -> list[dict[str, Any]]:
        """The pending faults, head first, with their remaining ``times``."""
        with self._lock:
            return [p.as_json() for p in self._faults]

    def clear_faults(self) -> int:
        """Drop all pending faults and return how many entries there were."""
        with self._lock:
            n = len(self._faults)
            self._faults.clear()
            return n

    def has_faults(self) -> bool:
        """Whether a fault is pending (the data endpoint then reads the body first)."""
        with self._lock:
            return bool(self._faults)

    def take_fault(self, body: bytes = b"") -> Fault | None:
        """Consume one application of the fault at the head of the queue, if it applies.

        A fault with ``match`` applies only to a body containing that text (gzip bodies are
        looked into); the others pass untouched and leave it queued.
        """
        with self._lock:
            if not self._faults:
                return None
            head = self._faults[0]
            if head.fault.match is not None and head.fault.match.encode() not in _plain(body):
                return None
            head.remaining -= 1
            if head.remaining <= 0:
                self._faults.pop(0)
            self._counters.faults_served += 1
            return head.fault


# --------------------------------------------------------------------------------------------
# ASGI plumbing for faults
# --------------------------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _gunzip(data: bytes) -> bytes:
    """Decompress a gzip body, refusing (413 later) to inflate past MAX_BODY_BYTES + 1."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, MAX_BODY_BYTES + 1)
    if not inflater.eof and len(out) <= MAX_BODY_BYTES:
        raise EOFError("truncated gzip body")
    return out


def _plain(body: bytes) -> bytes:
    """A body as JSON bytes, decompressed if it is gzip (for fault matching)."""
    if body[:2] == b"\x1f\x8b":
        try:
            return _gunzip(body)
        except (OSError, EOFError, zlib.error):
            return body
    return body


async def _read_body(receive: Receive) -> bytes | None:
    """Read the whole request body; ``None`` if the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields an already-read body once, then defers to the real one."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _find_transport(send: Send) -> asyncio.BaseTransport | None:
    """Find the connection's transport behind uvicorn's ``send`` (a bound method of its cycle).

    ASGI has no way to say "close the connection without answering", so the drop faults reach
    for the transport that uvicorn's ``RequestResponseCycle`` keeps (h11 and httptools alike).
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and callable(getattr(transport, "close", None)):
        return transport
    return None


async def _close_and_wait(transport: asyncio.BaseTransport, receive: Receive) -> None:
    """Close the connection and wait until the server has noticed (so it adds no 500)."""
    transport.close()

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(until_disconnect(), timeout=5)
    except TimeoutError:  # pragma: no cover - uvicorn reports the loss right away
        logger.warning("connection did not report a disconnect after being closed")


class _ReceiverApp(FastAPI):
    """FastAPI app whose outermost ASGI layer applies queued faults to the data endpoint.

    Faults live here rather than in a Starlette middleware because the drop faults need the
    server's own ``send`` (Starlette's error middleware wraps it).
    """

    receiver: ReceiverState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == DATA_PATH
            and self.receiver.has_faults()
        ):
            key = _header(scope, b"idempotency-key")
            body = await _read_body(receive)
            if body is None:
                logger.info(
                    "POST %s key=%s client went away before sending its body",
                    DATA_PATH,
                    _log_key(key),
                )
                return
            receive = _replaying(body, receive)
            fault = self.receiver.take_fault(body)
            if fault is not None:
                logger.info("POST %s key=%s fault=%s", DATA_PATH, _log_key(key), fault.kind)
                await self._serve_with_fault(fault, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve_with_fault(
        self, fault: Fault, scope: Scope, replay: Receive, send: Send
    ) -> None:

        if fault.status is not None:
            payload = json.dumps({"error": "injected fault"}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
            if fault.retry_after is not None:
                headers.append((b"retry-after", fault.retry_after.encode("ascii")))
            await send({"type": "http.response.start", "status": fault.status, "headers": headers})
            await send({"type": "http.response.body", "body": payload, "more_body": False})
        elif fault.delay_s is not None:
            await asyncio.sleep(fault.delay_s)
            await super().__call__(scope, replay, send)
        elif fault.drop == "before_response":
            transport = _find_transport(send)
            if transport is not None:
                await _close_and_wait(transport, replay)
            else:  # pragma: no cover - only under servers other than uvicorn
                # Headers promising one byte, then nothing: uvicorn-less servers close the
                # connection when the app returns without completing the response.
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", b"1")],
                    }
                )
        else:  # drop == "mid_body"
            await self._send_truncated(scope, replay, replay, send)

    async def _send_truncated(
        self, scope: Scope, replay: Receive, receive: Receive, send: Send
    ) -> None:
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await super().__call__(scope, replay, capture)
        assert start is not None
        full = b"".join(chunks)
        declared = max(len(full), 1)
        partial = full[: len(full) // 2]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(declared).encode()))
        await send({"type": "http.response.start", "status": start["status"], "headers": headers})
        if partial:
            await send({"type": "http.response.body", "body": partial, "more_body": True})
        transport = _find_transport(send)
        if transport is not None:
            await _close_and_wait(transport, receive)
        # Otherwise returning with an incomplete response makes the server close the connection.


# --------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------


def _log_key(key: str | None) -> str:
    if key is None:
        return "-"
    return repr(key[:80] + ("..." if len(key) > 80 else ""))


def _authorized(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    )


def _content_type_problem(content_type: str | None) -> str | None:
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


def create_app(
    token: str | None = None, store_path: str | os.PathLike[str] | None = None
) -> FastAPI:
    """Build the receiver app.

    Args:
        token: If set (non-empty), ``POST /services-data/requests`` requires
            ``Authorization: Bearer <token>``; inspection, fault and health endpoints stay open.
        store_path: Optional JSON-lines file: replayed now, appended to on every accepted batch
            and duplicate, truncated by ``DELETE /inspect``.

    Returns:
        The FastAPI application (its state object is ``app.receiver``).

    Raises:
        ValueError: If the store file exists but is corrupt (other than a torn last line).
    """
    app = _ReceiverApp(
        title="services-data reference receiver",
        description="Reference implementation of the downstream services-data API.",
        version="1.0",
    )
    state = ReceiverState(store_path=Path(store_path) if store_path is not None else None)
    app.receiver = state
    app.state.receiver = state
    token = token or None

    def reject(
        status: int,
        key: str | None,
        error: str,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        state.count_rejected()
        logger.info(
            "POST %s key=%s count=- status=%d duplicate=- reason=%s",
            DATA_PATH,
            _log_key(key),
            status,
            reason or error,
        )
        content = {"error": error} if reason is None else {"error": error, "reason": reason}
        return JSONResponse(content, status_code=status, headers=headers)

    @app.post(DATA_PATH)
    async def post_requests(request: Request) -> JSONResponse:
        """Accept a batch of service requests (see the module docstring for the contract)."""
        key = request.headers.get("idempotency-key")
        if token is not None and not _authorized(request.headers.get("authorization"), token):
            return reject(
                401,
                key,
                "unauthorized",
                "missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        problem = _content_type_problem(request.headers.get("content-type"))
        if problem is not None:
            return reject(415, key, "unsupported media type", problem)
        if key is None or not key.strip():
            return reject(
                400, key, "missing idempotency key", "the Idempotency-Key header is required"
            )
        if len(key) > _MAX_KEY_LENGTH or not key.isprintable():
            return reject(
                400,
                key,
                "invalid idempotency key",
                f"the Idempotency-Key header must be printable and at most {_MAX_KEY_LENGTH} "
                "characters",
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return reject(413, key, "payload too large", f"body exceeds {MAX_BODY_BYTES} bytes")
        raw = await request.body()
        encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
        if encoding == "gzip":
            try:
                raw = _gunzip(raw)
            except (OSError, EOFError, zlib.error):
                return reject(400, key, "invalid body", "Content-Encoding gzip, but not gzip data")
        elif encoding != "identity":
            return reject(415, key, "unsupported media type", f"Content-Encoding {encoding!r}")
        if len(raw) > MAX_BODY_BYTES:
            return reject(413, key, "payload too large", f"body exceeds {MAX_BODY_BYTES} bytes")
        try:
            batch = RequestBatch.model_validate_json(raw)
        except ValidationError as exc:
            return reject(400, key, "invalid body", _format_validation_error(exc))

        records = [r.model_dump() for r in batch.requests]
        outcome, ack = state.accept(key, hashlib.sha256(raw).hexdigest(), records)
        if outcome == "conflict":
            return reject(422, key, "idempotency key reused with a different body")
        assert ack is not None
        logger.info(
            "POST %s key=%s count=%d status=200 duplicate=%s",
            DATA_PATH,
            _log_key(key),
            len(records),
            str(ack["duplicate"]).lower(),
        )
        return JSONResponse(ack)

    @app.get("/inspect/batches")
    async def inspect_batches(include_requests: bool = True) -> list[dict[str, Any]]:
        """Accepted batches in arrival order."""
        return state.batches(include_requests=include_requests)

    @app.get("/inspect/requests")
    async def inspect_requests() -> list[dict[str, Any]]:
        """Every delivered record in arrival order, each with its ``idempotency_key``."""
        return state.records()

    @app.get("/inspect/state")
    async def inspect_state() -> list[dict[str, Any]]:
        """Latest record per (service_id, request_id); last write in arrival order wins."""
        return state.downstream_state()

    @app.get("/inspect/stats")
    async def inspect_stats() -> dict[str, int]:
        """Counters: batches, records, duplicates, rejected, faults_served."""
        return state.stats()

    @app.delete("/inspect")
    async def inspect_reset() -> dict[str, bool]:
        """Reset data, counters and faults (and truncate the store file)."""
        state.reset()
        logger.info("state reset")
        return {"ok": True}

    @app.get("/faults")
    async def list_faults() -> dict[str, list[dict[str, Any]]]:
        """Pending faults, head first (``times`` is what remains)."""
        return {"faults": state.pending_faults()}

    @app.post("/faults")
    async def add_faults(request: Request) -> JSONResponse:
        """Append ``{"faults": [...]}`` to the fault queue."""
        try:
            spec = _FaultList.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse(
                {"error": "invalid faults", "reason": _format_validation_error(exc)},
                status_code=400,
            )
        pending = state.add_faults(spec.faults)
        logger.info("faults queued: %s", ", ".join(f.kind for f in spec.faults) or "none")
        return JSONResponse({"faults": pending})

    @app.delete("/faults")
    async def clear_faults() -> dict[str, int]:
        """Drop all pending faults."""
        return {"cleared": state.clear_faults()}

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        """Liveness probe (never subject to faults)."""
        return {"ok": True}

    return app


# --------------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------------


def _uvicorn_config(
    app: FastAPI, host: str, port: int, *, log_level: str, http: str
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http,
        log_level=log_level,
        log_config=None,  # leave the embedding process' logging alone
        access_log=False,  # the receiver logs its own one line per data request
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
    )


class ReceiverServer:
    """Run the receiver in a background thread (for tests and the demo).

    Example::

        with ReceiverServer() as server:
            requests.post(f"{server.url}/services-data/requests", json=batch, headers=...)

    Each :meth:`start` builds a fresh app, so in-memory state does not survive :meth:`stop`
    (use ``store_path`` for that); a restarted server rebinds the port it had.

    Args:
        host: Interface to bind.
        port: Port to bind; 0 picks a free one (read it back from :attr:`port` / :attr:`url`).
        token: Optional bearer token, see :func:`create_app`.
        store_path: Optional JSON-lines store, see :func:`create_app`.
        log_level: Level for uvicorn's own loggers.
        http: uvicorn HTTP implementation (``"auto"``, ``"h11"`` or ``"httptools"``).
        startup_timeout: Seconds to wait for the server to accept connections.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        store_path: str | os.PathLike[str] | None = None,
        *,
        log_level: str = "warning",
        http: str = "auto",
        startup_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.store_path = store_path
        self.log_level = log_level
        self.http = http
        self.startup_timeout = startup_timeout
        self.app: FastAPI | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (valid once started)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> ReceiverServer:
        """Bind the socket, start uvicorn in a daemon thread and wait until it serves.

        Returns:
            ``self``.

        Raises:
            RuntimeError: If already running or if the server does not come up in time.
            OSError: If the address cannot be bound.
        """
        if self.running:
            msg = "receiver already running"
            raise RuntimeError(msg)
        self.app = create_app(token=self.token, store_path=self.store_path)
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = _uvicorn_config(
            self.app, self.host, self.port, log_level=self.log_level, http=self.http
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"receiver-{self.port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                msg = f"receiver on {self.url} did not start"
                raise RuntimeError(msg)
            time.sleep(0.01)
        logger.info("receiver listening on %s", self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to shut down and join its thread (forcing it if it lingers).

        Args:
            timeout: Seconds to wait for a graceful shutdown before forcing it.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> ReceiverServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket like uvicorn does (SO_REUSEADDR, so restarts can rebind)."""
    family, type_, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m devkit.receiver``.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    parser = argparse.ArgumentParser(
        prog="python -m devkit.receiver",
        description="Reference receiver for the services-data HTTP API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (8000)")
    parser.add_argument(
        "--token",
        default=os.environ.get("RECEIVER_TOKEN") or None,
        help="require 'Authorization: Bearer TOKEN' on the data endpoint "
        "(default: $RECEIVER_TOKEN; no auth if unset)",
    )
    parser.add_argument(
        "--store", default=None, help="append-only JSON-lines file, replayed on start"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (info)",
    )
    parser.add_argument(
        "--http",
        default="auto",
        choices=["auto", "h11", "httptools"],
        help="uvicorn HTTP implementation (auto)",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(token=args.token, store_path=args.store)
    config = _uvicorn_config(app, args.host, args.port, log_level=args.log_level, http=args.http)
    logger.info(
        "auth %s, store %s",
        "enabled" if args.token else "disabled",
        args.store or "none (in memory only)",
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
