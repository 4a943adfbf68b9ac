"""The command line: ``python -m devkit.receiver --host H --port P [--token T] [--store F]``.

Used by ``make receiver``, the compose file's ``receiver`` service and the benchmark; it logs
to stderr and serves in the foreground until interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from devkit.receiver.app import create_app
from devkit.receiver.contract import MAX_BODY_BYTES, RequestBatch
from devkit.receiver.server import uvicorn_config

logger = logging.getLogger("devkit.receiver")


def main(
    argv: list[str] | None = None,
    *,
    batch_model: type[RequestBatch] = RequestBatch,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> int:
    """Command-line entry point: ``python -m devkit.receiver``.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).
        batch_model: Passed to :func:`~devkit.receiver.app.create_app` (for
            ``bench/receiver_raised.py``, which lifts the limits).
        max_body_bytes: Passed to :func:`~devkit.receiver.app.create_app`.

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
    app = create_app(
        token=args.token,
        store_path=args.store,
        batch_model=batch_model,
        max_body_bytes=max_body_bytes,
    )
    config = uvicorn_config(app, args.host, args.port, log_level=args.log_level, http=args.http)
    logger.info(
        "auth %s, store %s",
        "enabled" if args.token else "disabled",
        args.store or "none (in memory only)",
    )
    uvicorn.Server(config).run()
    return 0
