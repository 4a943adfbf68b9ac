"""The receiver's FastAPI app: :func:`create_app` wires the state, the faults and the routes.

Routes: the data endpoint ``POST /services-data/requests`` (its checks, in the order the
contract in :mod:`devkit.receiver` lists them), the open inspection endpoints under
``/inspect``, ``/healthz``, and the ``/faults`` routes from :mod:`devkit.receiver.faults`,
whose middleware wraps the data endpoint. One log line per data request goes to the
``devkit.receiver`` logger: key, record count, status and duplicate flag (plus the rejection
reason, which names fields but never echoes values); tokens and payloads are never logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zlib
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from devkit.receiver.contract import (
    DATA_PATH,
    MAX_BODY_BYTES,
    MAX_KEY_LENGTH,
    RequestBatch,
    authorized,
    content_type_problem,
    format_validation_error,
    gunzip,
    log_key,
)
from devkit.receiver.faults import FaultInjectionMiddleware, FaultPlan, faults_router
from devkit.receiver.store import ReceiverState

logger = logging.getLogger("devkit.receiver")


def create_app(
    token: str | None = None,
    store_path: str | os.PathLike[str] | None = None,
    *,
    batch_model: type[RequestBatch] = RequestBatch,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """Build the receiver app.

    Args:
        token: If set (non-empty), ``POST /services-data/requests`` requires
            ``Authorization: Bearer <token>``; inspection, fault and health endpoints stay open.
        store_path: Optional JSON-lines file: replayed now, appended to on every accepted batch
            and duplicate, truncated by ``DELETE /inspect``.
        batch_model: The body model (a :class:`RequestBatch` with other limits, for
            ``bench/receiver_raised.py`` only).
        max_body_bytes: Largest body accepted, before and after gzip (413 above).

    Returns:
        The FastAPI application; ``app.state.receiver`` is its :class:`ReceiverState` and
        ``app.state.faults`` its :class:`FaultPlan`.

    Raises:
        ValueError: If the store file exists but is corrupt (other than a torn last line).
    """
    app = FastAPI(
        title="services-data reference receiver",
        description="Reference implementation of the downstream services-data API.",
        version="1.0",
    )
    state = ReceiverState(store_path=Path(store_path) if store_path is not None else None)
    faults = FaultPlan()
    app.state.receiver = state
    app.state.faults = faults
    app.add_middleware(FaultInjectionMiddleware, plan=faults)
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
            log_key(key),
            status,
            reason or error,
        )
        content = {"error": error} if reason is None else {"error": error, "reason": reason}
        return JSONResponse(content, status_code=status, headers=headers)

    too_large = f"body exceeds {max_body_bytes} bytes"

    @app.post(DATA_PATH)
    async def post_requests(request: Request) -> JSONResponse:
        """Accept a batch of service requests (see :mod:`devkit.receiver` for the contract)."""
        key = request.headers.get("idempotency-key")
        if token is not None and not authorized(request.headers.get("authorization"), token):
            return reject(
                401,
                key,
                "unauthorized",
                "missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        problem = content_type_problem(request.headers.get("content-type"))
        if problem is not None:
            return reject(415, key, "unsupported media type", problem)
        if key is None or not key.strip():
            return reject(
                400, key, "missing idempotency key", "the Idempotency-Key header is required"
            )
        if len(key) > MAX_KEY_LENGTH or not key.isprintable():
            return reject(
                400,
                key,
                "invalid idempotency key",
                f"the Idempotency-Key header must be printable and at most {MAX_KEY_LENGTH} "
                "characters",
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return reject(413, key, "payload too large", too_large)
        raw = await request.body()
        encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
        if encoding == "gzip":
            try:
                raw = gunzip(raw, max_body_bytes)
            except (OSError, EOFError, zlib.error):
                return reject(400, key, "invalid body", "Content-Encoding gzip, but not gzip data")
        elif encoding != "identity":
            return reject(415, key, "unsupported media type", f"Content-Encoding {encoding!r}")
        if len(raw) > max_body_bytes:
            return reject(413, key, "payload too large", too_large)
        try:
            batch = batch_model.model_validate_json(raw)
        except ValidationError as exc:
            return reject(400, key, "invalid body", format_validation_error(exc))

        records = [r.model_dump() for r in batch.requests]
        outcome, ack = state.accept(key, hashlib.sha256(raw).hexdigest(), records)
        if outcome == "conflict":
            return reject(422, key, "idempotency key reused with a different body")
        assert ack is not None
        logger.info(
            "POST %s key=%s count=%d status=200 duplicate=%s",
            DATA_PATH,
            log_key(key),
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
        return {**state.stats(), "faults_served": faults.served}

    @app.delete("/inspect")
    async def inspect_reset() -> dict[str, bool]:
        """Reset data, counters and faults (and truncate the store file)."""
        state.reset()
        faults.reset()
        logger.info("state reset")
        return {"ok": True}

    app.include_router(faults_router(faults))

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        """Liveness probe (never subject to faults)."""
        return {"ok": True}

    return app
