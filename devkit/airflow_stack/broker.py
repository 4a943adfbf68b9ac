"""A private Redis server, the Celery broker of a CeleryExecutor stack."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from devkit.airflow_stack.checks import StackError, wait_until
from devkit.airflow_stack.env import CELERY_BROKER_SCHEME
from devkit.pgcluster import free_port


@contextlib.contextmanager
def redis_server(directory: Path, timeout: float = 30) -> Iterator[str]:
    """A Redis server of our own on a free loopback port, no persistence; yields its URL.

    Started from the ``redis-server`` binary (Debian package ``redis-server``, which
    ``devkit/ensure-os-packages`` installs), never a server the machine may already run.
    """
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise StackError(
            "redis-server is not installed: run devkit/ensure-os-packages "
            "(or apt-get install redis-server)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = directory / "redis.log"
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(directory), "--logfile", str(log_path), "--daemonize", "no"]
    process = subprocess.Popen(
        argv, cwd=directory, stdin=subprocess.DEVNULL, start_new_session=True
    )
    url = f"{CELERY_BROKER_SCHEME}://127.0.0.1:{port}/0"
    try:
        wait_until(
            lambda: _redis_ping(url, process, log_path),
            timeout=timeout,
            interval=0.2,
            what=f"redis-server on port {port}",
        )
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _redis_ping(url: str, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    import redis

    if process.poll() is not None:
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        raise StackError(f"redis-server exited with {process.returncode}:\n{log[-2000:]}")
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False
