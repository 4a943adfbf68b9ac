"""Reference receiver for the services-data HTTP API.

A real HTTP server (a FastAPI app served by uvicorn) that implements the downstream API the DAG
delivers to. It is used by the demo, by the tests and by people trying the pipeline locally::

    python -m devkit.receiver --host 127.0.0.1 --port 8000 [--token T] [--store state.jsonl]

Modules:

=============  ==============================================================================
``contract``   path, limits, body models, header checks (pure, no state)
``store``      accepted batches, idempotency keys, counters, the JSON-lines store file
``faults``     fault model, queue, ``/faults`` routes, the middleware that applies them
``app``        :func:`create_app`: the data, inspection and health routes
``server``     the uvicorn config and :class:`ReceiverServer` (uvicorn in a background thread)
``cli``        :func:`main`, behind ``python -m devkit.receiver``
=============  ==============================================================================

Everything a caller needs is importable from ``devkit.receiver`` itself.

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
      connection's transport directly (ASGI has no way to say so: see
      :mod:`devkit.receiver.faults`); under a server where the transport cannot be found the
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

from devkit.receiver.app import create_app
from devkit.receiver.cli import main
from devkit.receiver.contract import (
    DATA_PATH,
    MAX_BATCH_SIZE,
    MAX_BODY_BYTES,
    RequestBatch,
    ServiceRequestRecord,
)
from devkit.receiver.faults import Fault, FaultPlan
from devkit.receiver.server import ReceiverServer
from devkit.receiver.store import ReceiverState

__all__ = [
    "DATA_PATH",
    "MAX_BATCH_SIZE",
    "MAX_BODY_BYTES",
    "Fault",
    "FaultPlan",
    "ReceiverServer",
    "ReceiverState",
    "RequestBatch",
    "ServiceRequestRecord",
    "create_app",
    "main",
]
