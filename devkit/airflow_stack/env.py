"""The environment of an Airflow stack: what it inherits, where it points Airflow, its settings.

:func:`inherited_env` (never inherited ``AIRFLOW__*``, ``AIRFLOW_HOME`` or ``AIRFLOW_CONFIG``),
:func:`airflow_env` (DAG and plugins folders, metadata database, JWT and secret keys, free
log-server ports), :func:`api_settings`, :func:`api_connection`, :func:`scheduler_stack_env`
(LocalExecutor with a forkserver), :func:`celery_settings` and :func:`celery_stack_env` (the
Celery deployment of ``docker-compose.yaml``).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from devkit.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "services_requests_sync"
#: The ``airflow`` command, run by this interpreter (the venv's Airflow, whatever PATH says).
AIRFLOW = (sys.executable, "-m", "airflow")

#: Never inherited: they would point a stack at another home, configuration or settings.
_NEVER_INHERITED = ("AIRFLOW__", "AIRFLOW_HOME", "AIRFLOW_CONFIG")
#: Connections and variables of whatever deployment this process' environment points at.
DEPLOYMENT_VARIABLES = ("AIRFLOW_CONN_", "AIRFLOW_VAR_")

#: The metadata database's SQLAlchemy scheme (psycopg 3), and Celery's result backend on it.
METADATA_DB_SCHEME = "postgresql+psycopg"
CELERY_RESULT_BACKEND_SCHEME = "db+postgresql"
CELERY_BROKER_SCHEME = "redis"


def inherited_env(
    drop: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a stack inherits of ``environ`` (default ``os.environ``).

    Never ``AIRFLOW__*``, ``AIRFLOW_HOME`` or ``AIRFLOW_CONFIG``; nor what ``drop`` names: a
    name ending in ``_`` drops every variable it starts (e.g. :data:`DEPLOYMENT_VARIABLES`),
    any other name only itself. The operate tests keep ``AIRFLOW_CONN_*`` and
    ``SERVICES_SYNC_*`` (their fixtures set them); ``make airflow`` and the benchmark drop them.
    """
    rules = (*_NEVER_INHERITED, *drop)
    prefixes = tuple(rule for rule in rules if rule.endswith("_"))
    names = {rule for rule in rules if not rule.endswith("_")}
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith(prefixes) and k not in names}


def sqlalchemy_url(dsn: str, scheme: str = METADATA_DB_SCHEME) -> str:
    """A ``postgresql://`` libpq URL as a SQLAlchemy URL with ``scheme``."""
    return f"{scheme}://{dsn.split('://', 1)[1]}"


def metadata_dsn(sql_alchemy_conn: str) -> str:
    """The libpq URL of a ``postgresql+psycopg://`` SQLAlchemy URL."""
    scheme, rest = sql_alchemy_conn.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def airflow_env(
    home: Path,
    sql_alchemy_conn: str,
    overrides: Mapping[str, str] | None = None,
    *,
    base: Mapping[str, str] | None = None,
    dags_folder: Path = ROOT / "dags",
    plugins_folder: Path = ROOT / "plugins",
) -> dict[str, str]:
    """The environment of every Airflow process of a stack.

    Starts from ``base`` (default :func:`inherited_env`: ``os.environ``, so ``AIRFLOW_CONN_*``
    and ``SERVICES_SYNC_*`` set by fixtures reach the components) without inherited
    ``AIRFLOW__*`` settings, and points Airflow at ``home``, the DAGs and plugins folders (this
    repository's) and the metadata database.

    Args:
        home: ``AIRFLOW_HOME``.
        sql_alchemy_conn: Metadata database URL.
        overrides: Extra variables, applied last.
        base: The variables to start from.
        dags_folder: ``[core] dags_folder``.
        plugins_folder: ``[core] plugins_folder``.

    Returns:
        The environment.
    """
    env = inherited_env(environ=base)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # The scheduler and the api-server must share the JWT secret (task tokens), and
            # the log servers of the scheduler and triggerer must not collide with another
            # Airflow on this machine (not 8793/8794).
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # `airflow standalone` starts its components as `airflow ...` from PATH.
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides or {})
    return env


def api_connection(port: int, *, gzip: bool = False) -> str:
    """The DAG's ``AIRFLOW_CONN_SERVICES_API``: a receiver on 127.0.0.1:``port``.

    ``gzip``: the connection extra ``{"Content-Encoding": "gzip"}``, with which the delivery
    lanes send the outbox's stored gzip bytes as they are (``Content-Encoding: gzip``).
    """
    conn: dict[str, object] = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": port,
        "schema": "http",
    }
    if gzip:
        conn["extra"] = {"Content-Encoding": "gzip"}
    return json.dumps(conn)


def api_settings(api_port: int) -> dict[str, str]:
    """The api-server on 127.0.0.1:``api_port``, where task processes find the Execution API.

    (Tasks look for it at ``[core] execution_api_server_url``, default localhost:8080.)
    """
    return {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
    }


#: Imported once by the LocalExecutor's forkserver, so each task process (forked from a worker)
#: does not import them again: halves the time of a run on 2 cores. Speed only.
FORKSERVER_PRELOAD = (
    "airflow.executors.local_executor",
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.common.sql.operators.sql",
    "airflow.providers.common.sql.sensors.sql",
    "airflow.providers.http.operators.http",
    "airflow.providers.postgres.hooks.postgres",
)
_FORKSERVER_SETTINGS = {
    "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
    "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": ",".join(FORKSERVER_PRELOAD),
}


def scheduler_stack_env(
    home: Path,
    metadata_dsn_: str,
    api_port: int,
    extra: Mapping[str, str],
    *,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment of a scheduler + dag-processor + api-server stack (LocalExecutor).

    The scheduler creates no run of its own (``use_job_schedule`` off): the tests create runs
    with the CLI. ``extra`` adds or overrides settings (the DAG's ``SERVICES_SYNC_*`` ones);
    ``base``: see :func:`airflow_env`.
    """
    return airflow_env(
        home,
        sqlalchemy_url(metadata_dsn_),
        {
            **api_settings(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__CORE__PARALLELISM": "4",
            **_FORKSERVER_SETTINGS,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "SERVICES_SYNC_CATCHUP": "off",
            "SERVICES_SYNC_GATE_POKE_S": "1",
            **extra,
        },
        base=base,
    )


#: The Celery deployment that docker-compose.yaml describes and the Celery stack test runs
#: (tests/operate/test_celery_stack.py): the same components, each in a process (a container) of
#: its own, the worker :data:`CELERY_WORKERS` times, and the same :data:`CELERY_SETTINGS`.
#: tests/test_compose.py holds docker-compose.yaml to these, so the file is exercised by proxy.
#: ``make airflow EXECUTOR=celery`` runs them too, with one worker.
CELERY_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker")
CELERY_WORKERS = 2
CELERY_SETTINGS = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    # Task slots per worker; the POST lanes of one run (SERVICES_SYNC_LANES) fit in one worker.
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
    # Acks are late: a message a dead worker had taken goes back to the queue after this long.
    # Longer than any task (else a slow task is delivered twice); the provider warns if unset.
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
}


def celery_settings(
    metadata_dsn_: str, broker_url: str, workers: int = CELERY_WORKERS
) -> dict[str, str]:
    """:data:`CELERY_SETTINGS`, the broker, Celery's results in the metadata database."""
    return {
        **CELERY_SETTINGS,
        # As many executor slots as the workers have. The executor counts a task as running
        # until Celery's result backend reports it done, seconds after it is: with
        # LocalExecutor's 4 the scheduler waited on finished tasks.
        "AIRFLOW__CORE__PARALLELISM": str(
            workers * int(CELERY_SETTINGS["AIRFLOW__CELERY__WORKER_CONCURRENCY"])
        ),
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": sqlalchemy_url(
            metadata_dsn_, CELERY_RESULT_BACKEND_SCHEME
        ),
    }


def celery_stack_env(
    home: Path,
    metadata_dsn_: str,
    api_port: int,
    broker_url: str,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """Environment of a CeleryExecutor stack: :func:`scheduler_stack_env` plus Celery.

    :func:`celery_settings`; the LocalExecutor's forkserver settings are dropped. ``extra``
    comes last.
    """
    env = scheduler_stack_env(home, metadata_dsn_, api_port, {})
    for name in _FORKSERVER_SETTINGS:
        env.pop(name)
    env.update(celery_settings(metadata_dsn_, broker_url))
    env.update(extra)
    return env
