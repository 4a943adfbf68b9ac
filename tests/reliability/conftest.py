"""Fixtures of the fault suite (the shared ones live in ``tests/conftest.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import load_dag


@pytest.fixture(scope="module")
def dag(airflow_db: Path) -> Any:
    """The real DAG, parsed with the test settings of ``tests/conftest.py``."""
    return load_dag()


@pytest.fixture
def own_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A receiver of this test alone, with a store file: it may be stopped and started again.

    ``ReceiverServer.start()`` rebinds the port it had (SO_REUSEADDR) and replays the store, so
    a restart keeps what was delivered and still de-duplicates keys seen before it.
    """
    from devkit.receiver import ReceiverServer

    server = ReceiverServer(host="127.0.0.1", store_path=tmp_path / "receiver.jsonl").start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_API",
        json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": server.port, "schema": "http"}
        ),
    )
    yield server
    server.stop()
