"""Airflow processes for this repository: how to build their environment, start and stop them.

The one place that knows it, for the three things that run Airflow here: ``make airflow``
(:mod:`devkit.airflow_ui`), the operate tests (``tests/operate/``) and the benchmark
(``bench/``). They import what they need from this package; the modules say how it works:

- :mod:`~devkit.airflow_stack.env`: the environment (what a stack inherits, where it points
  Airflow, LocalExecutor and Celery settings);
- :mod:`~devkit.airflow_stack.stack`: :class:`AirflowStack`, the CLI and the long-lived
  components as subprocesses, each in its own process group and working directory, and how
  they are stopped (SIGTERM or SIGINT, then SIGTERM to the group, then SIGKILL);
- :mod:`~devkit.airflow_stack.processes`: finding every process a stack started, by working
  directory;
- :mod:`~devkit.airflow_stack.broker`: :func:`redis_server`, a private Celery broker;
- :mod:`~devkit.airflow_stack.checks`: :func:`wait_until`, the api-server's health, queries on
  the metadata database.
"""

from devkit.airflow_stack.broker import redis_server
from devkit.airflow_stack.checks import (
    HEALTHY_PARTS,
    StackError,
    health,
    is_healthy,
    rows,
    wait_until,
)
from devkit.airflow_stack.env import (
    AIRFLOW,
    CELERY_BROKER_SCHEME,
    CELERY_COMPONENTS,
    CELERY_RESULT_BACKEND_SCHEME,
    CELERY_SETTINGS,
    CELERY_WORKERS,
    DAG_ID,
    DEPLOYMENT_VARIABLES,
    FORKSERVER_PRELOAD,
    METADATA_DB_SCHEME,
    ROOT,
    airflow_env,
    api_connection,
    api_settings,
    celery_settings,
    celery_stack_env,
    inherited_env,
    metadata_dsn,
    scheduler_stack_env,
    sqlalchemy_url,
)
from devkit.airflow_stack.processes import ProcessInfo, processes_in
from devkit.airflow_stack.stack import AirflowStack, Component
from devkit.pgcluster import free_port

__all__ = [
    "AIRFLOW",
    "CELERY_BROKER_SCHEME",
    "CELERY_COMPONENTS",
    "CELERY_RESULT_BACKEND_SCHEME",
    "CELERY_SETTINGS",
    "CELERY_WORKERS",
    "DAG_ID",
    "DEPLOYMENT_VARIABLES",
    "FORKSERVER_PRELOAD",
    "HEALTHY_PARTS",
    "METADATA_DB_SCHEME",
    "ROOT",
    "AirflowStack",
    "Component",
    "ProcessInfo",
    "StackError",
    "airflow_env",
    "api_connection",
    "api_settings",
    "celery_settings",
    "celery_stack_env",
    "free_port",
    "health",
    "inherited_env",
    "is_healthy",
    "metadata_dsn",
    "processes_in",
    "redis_server",
    "rows",
    "scheduler_stack_env",
    "sqlalchemy_url",
    "wait_until",
]
