"""Serving the receiver with uvicorn: its config, :class:`ReceiverServer` for tests and the demo.

:func:`uvicorn_config` is the one uvicorn configuration both :class:`ReceiverServer` (uvicorn
in a background thread, on a socket bound up front so port 0 can be read back) and the command
line (:mod:`devkit.receiver.cli`) use.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from devkit.receiver.app import create_app

logger = logging.getLogger("devkit.receiver")


def uvicorn_config(
    app: FastAPI, host: str, port: int, *, log_level: str, http: str
) -> uvicorn.Config:
    """The uvicorn config the receiver runs under (no access log, no lifespan, 3 s to drain)."""
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
        config = uvicorn_config(
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
