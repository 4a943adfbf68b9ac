"""Fault injection for retry tests: the fault model, queue, routes and middleware.

:class:`Fault` is one fault, :class:`FaultPlan` the queue, :func:`faults_router` the
``/faults`` routes that fill it, :class:`FaultInjectionMiddleware` what applies it to the data
endpoint.

``POST /faults`` with ``{"faults": [fault, ...]}`` appends to a FIFO queue, ``GET /faults``
lists the pending ones (``times`` is the remaining count), ``DELETE /faults`` clears them. Each
fault applies to the next ``POST /services-data/requests`` (before authentication and
validation, like a misbehaving proxy in front of the API) and is consumed; ``"times": k``
applies it to the next k requests. The kinds (status, delay, the two drops, ``match``) are
described in :mod:`devkit.receiver`.

:class:`FaultInjectionMiddleware` is a plain Starlette middleware (``app.add_middleware``); the
one thing no framework layer offers, closing the TCP connection without a response, is the
isolated :func:`_close_connection` at the bottom of this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import zlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devkit.receiver.contract import DATA_PATH, format_validation_error, gunzip, log_key

logger = logging.getLogger("devkit.receiver")


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


@dataclass
class _PendingFault:
    fault: Fault
    remaining: int

    def as_json(self) -> dict[str, Any]:
        data = self.fault.model_dump(exclude_none=True)
        data["times"] = self.remaining
        return data


def _plain(body: bytes) -> bytes:
    """A body as JSON bytes, decompressed if it is gzip (for fault matching)."""
    if body[:2] == b"\x1f\x8b":
        try:
            return gunzip(body)
        except (OSError, EOFError, zlib.error):
            return body
    return body


class FaultPlan:
    """The FIFO queue of pending faults and the count of those served, guarded by one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_PendingFault] = []
        self._served = 0

    def add(self, faults: list[Fault]) -> list[dict[str, Any]]:
        """Append faults to the queue and return the pending list."""
        with self._lock:
            self._pending.extend(_PendingFault(f, f.times) for f in faults)
            return [p.as_json() for p in self._pending]

    def pending(self) -> list[dict[str, Any]]:
        """The pending faults, head first, with their remaining ``times``."""
        with self._lock:
            return [p.as_json() for p in self._pending]

    def clear(self) -> int:
        """Drop all pending faults and return how many entries there were."""
        with self._lock:
            n = len(self._pending)
            self._pending.clear()
            return n

    def reset(self) -> None:
        """Drop all pending faults and zero the served count."""
        with self._lock:
            self._pending.clear()
            self._served = 0

    @property
    def served(self) -> int:
        """How many fault applications were served since the last reset."""
        with self._lock:
            return self._served

    def has_faults(self) -> bool:
        """Whether a fault is pending (the middleware then reads the body first)."""
        with self._lock:
            return bool(self._pending)

    def take(self, body: bytes = b"") -> Fault | None:
        """Consume one application of the fault at the head of the queue, if it applies.

        A fault with ``match`` applies only to a body containing that text (gzip bodies are
        looked into); the others pass untouched and leave it queued.
        """
        with self._lock:
            if not self._pending:
                return None
            head = self._pending[0]
            if head.fault.match is not None and head.fault.match.encode() not in _plain(body):
                return None
            head.remaining -= 1
            if head.remaining <= 0:
                self._pending.pop(0)
            self._served += 1
            return head.fault


def faults_router(plan: FaultPlan) -> APIRouter:
    """The ``/faults`` routes (open, even when the data endpoint needs a token)."""
    router = APIRouter()

    @router.get("/faults")
    async def list_faults() -> dict[str, list[dict[str, Any]]]:
        """Pending faults, head first (``times`` is what remains)."""
        return {"faults": plan.pending()}

    @router.post("/faults")
    async def add_faults(request: Request) -> JSONResponse:
        """Append ``{"faults": [...]}`` to the fault queue."""
        try:
            spec = _FaultList.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse(
                {"error": "invalid faults", "reason": format_validation_error(exc)},
                status_code=400,
            )
        pending = plan.add(spec.faults)
        logger.info("faults queued: %s", ", ".join(f.kind for f in spec.faults) or "none")
        return JSONResponse({"faults": pending})

    @router.delete("/faults")
    async def clear_faults() -> dict[str, int]:
        """Drop all pending faults."""
        return {"cleared": plan.clear()}

    return router


class FaultInjectionMiddleware:
    """Applies the queued faults to ``POST`` requests on the data endpoint.

    A pure ASGI middleware, registered with ``app.add_middleware(FaultInjectionMiddleware,
    plan=...)``. While the queue is empty it passes every request straight through; otherwise
    it reads the body of a data request (a ``match`` looks into it), takes the fault that
    applies, and hands the body on to the app through a replaying ``receive``.
    """

    def __init__(self, app: ASGIApp, plan: FaultPlan) -> None:
        self.app = app
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, or apply the fault at the head of the queue to it."""
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == DATA_PATH
            and self.plan.has_faults()
        ):
            await self.app(scope, receive, send)
            return
        key = Headers(scope=scope).get("idempotency-key")
        try:
            body = await Request(scope, receive).body()
        except ClientDisconnect:
            logger.info(
                "POST %s key=%s client went away before sending its body",
                DATA_PATH,
                log_key(key),
            )
            return
        replay = _replaying(body, receive)
        fault = self.plan.take(body)
        if fault is None:
            await self.app(scope, replay, send)
            return
        logger.info("POST %s key=%s fault=%s", DATA_PATH, log_key(key), fault.kind)
        if fault.status is not None:
            headers = {} if fault.retry_after is None else {"retry-after": fault.retry_after}
            payload = json.dumps({"error": "injected fault"}).encode()
            response = Response(payload, fault.status, headers, media_type="application/json")
            await response(scope, replay, send)
        elif fault.delay_s is not None:
            await asyncio.sleep(fault.delay_s)
            await self.app(scope, replay, send)
        elif fault.drop == "before_response":
            await _close_connection(receive, send)
        else:  # drop == "mid_body"
            await self._send_truncated(scope, replay, receive, send)

    async def _send_truncated(
        self, scope: Scope, replay: Receive, receive: Receive, send: Send
    ) -> None:
        """Run the app, then send its headers and half its body, and close the connection."""
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, replay, capture)
        assert start is not None
        full = b"".join(chunks)
        partial = full[: len(full) // 2]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(max(len(full), 1)).encode()))
        await send({"type": "http.response.start", "status": start["status"], "headers": headers})
        if partial:
            await send({"type": "http.response.body", "body": partial, "more_body": True})
        await _close_connection(receive, send, response_started=True)


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


# --------------------------------------------------------------------------------------------
# Closing the connection: the one piece below the framework
# --------------------------------------------------------------------------------------------
#
# ASGI has no message for "close this connection without (finishing) a response": an app that
# returns before starting one gets a 500 from the server, and neither Starlette nor uvicorn has
# a hook that aborts a connection. So the drop faults close the transport themselves. uvicorn's
# ``receive`` (which Starlette's layers pass down unwrapped, unlike ``send``) is a bound method
# of its per-request cycle, and that cycle holds the connection's transport (h11 and httptools
# alike). Nothing else in the receiver touches server internals.


def _transport_behind(receive: Receive) -> asyncio.BaseTransport | None:
    """The connection's transport behind uvicorn's ``receive``, or ``None`` elsewhere."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is not None and callable(getattr(transport, "close", None)):
        return transport
    return None


async def _close_connection(
    receive: Receive, send: Send, *, response_started: bool = False
) -> None:
    """Close the TCP connection now and wait until the server has noticed (so it adds no 500).

    ``receive`` must be the server's own, the body already read from it. Where the
    transport cannot be found, a response not yet started gets headers promising one byte and
    nothing more: the server closes the connection when the app returns without completing it
    (``requests`` then reports ``ChunkedEncodingError`` instead of ``ConnectionError``).
    """
    transport = _transport_behind(receive)
    if transport is None:  # pragma: no cover - only under servers other than uvicorn
        if not response_started:
            headers = [(b"content-length", b"1")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        return
    transport.close()

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(until_disconnect(), timeout=5)
    except TimeoutError:  # pragma: no cover - uvicorn reports the loss right away
        logger.warning("connection did not report a disconnect after being closed")
