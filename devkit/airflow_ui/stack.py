"""What ``make airflow`` starts (PostgreSQL, the receiver, Redis, Airflow) and how it stops it."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from devkit.airflow_stack import AIRFLOW, AirflowStack, Component, redis_server
from devkit.workspace import SetupError, start_embedded_postgres, stop_started

STARTUP_TIMEOUT_S = 300
STOP_TIMEOUT_S = 45
#: What ``--executor celery`` starts, in this order (stopped in the reverse one): the Celery
#: deployment of docker-compose.yaml with one worker. The worker is named ``celery-worker``.
CELERY_COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer", "celery-worker")


class Stack:
    """PostgreSQL, the receiver, Redis (Celery) and Airflow, and how to stop them (only them).

    Airflow runs as a :class:`devkit.airflow_stack.AirflowStack` in ``home``: every process
    in ``home/cwd`` (how leftovers are found), logs in ``home/<component>.log``.
    """

    def __init__(self, home: Path, executor: str = "local") -> None:
        self.home = home
        self.executor = executor
        self.components = ("standalone",) if executor == "local" else CELERY_COMPONENTS
        self.cluster: Any = None
        self.receiver: Any = None
        self.broker_url: str | None = None
        self.airflow: AirflowStack | None = None
        self.metadata_url = ""
        self.source_url = ""
        self.external_source = False
        self._services = contextlib.ExitStack()

    @property
    def log_path(self) -> Path:
        """The log of ``airflow standalone``, or of the scheduler."""
        return self.home / ("standalone.log" if self.executor == "local" else "scheduler.log")

    def start_postgres(self) -> None:
        """Start the embedded cluster with the databases ``airflow`` and ``services``."""
        self.cluster = start_embedded_postgres(self.home)
        self.metadata_url = self.cluster.create_database("airflow")
        url = os.environ.get("SOURCE_DB_URL", "").strip()
        if url:
            if not url.startswith(("postgresql://", "postgres://")):
                raise SetupError("SOURCE_DB_URL must look like postgresql://user:pw@host:5432/db")
            self.source_url, self.external_source = url, True
        else:
            self.source_url = self.cluster.create_database("services")

    def start_receiver(self, port: int) -> None:
        """The reference receiver on 127.0.0.1:``port``."""
        from devkit.receiver import ReceiverServer

        self.receiver = ReceiverServer(host="127.0.0.1", port=port).start()

    def start_broker(self) -> None:
        """A private ``redis-server`` (Celery only), data and log in ``home/redis``."""
        if self.executor == "celery":
            self.broker_url = self._services.enter_context(redis_server(self.home / "redis"))

    def start_airflow(self, env: dict[str, str]) -> None:
        """``airflow standalone``, or migrate and the Celery components, in the background."""
        self.airflow = AirflowStack(self.home, env, log_dir=self.home)
        if self.executor == "celery":
            self.airflow.cli("db", "migrate", timeout=STARTUP_TIMEOUT_S)
        for name in self.components:
            command = [*AIRFLOW, "celery", "worker"] if name == "celery-worker" else []
            self.airflow.start(name, *command)

    def exited(self) -> Component | None:
        """An Airflow component that stopped by itself, or None."""
        return None if self.airflow is None else self.airflow.exited()

    def stop(self) -> list[str]:
        """Stop Airflow, Redis, the receiver and PostgreSQL; delete the cluster's data.

        Returns:
            What did not stop by itself and was killed (empty when all went well).
        """
        killed: list[str] = []
        if self.airflow is not None:
            # SIGINT to `airflow standalone` alone: it sends SIGTERM to each component and
            # waits for them. Signalling the whole group instead hits every component twice
            # (SIGINT, then SIGTERM), and a scheduler interrupted in its own shutdown leaves its
            # LocalExecutor workers behind (they ignore SIGINT and survive SIGTERM).
            sig = signal.SIGINT if self.executor == "local" else signal.SIGTERM
            stopped = self.airflow.stop(sig, STOP_TIMEOUT_S, group_timeout=15)
            killed = [f"{info.pid} {info.cmdline}" for info in stopped]
        with contextlib.suppress(Exception):
            self._services.close()
        stop_started(self.receiver, self.cluster, self.home)
        self.receiver = self.cluster = None
        return killed
