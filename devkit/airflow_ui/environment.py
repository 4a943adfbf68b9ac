"""The workspace, ports and environment of ``make airflow``.

:func:`prepare_home` wipes its workspace, :func:`clean_environment` drops what this process
inherited, :func:`pick_port` finds the ports, :func:`airflow_environment` is the environment of
every Airflow process of the stack and :func:`write_cli_env` writes it for the Airflow CLI.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path

from devkit.airflow_stack import (
    DEPLOYMENT_VARIABLES,
    ROOT,
    airflow_env,
    api_connection,
    api_settings,
    celery_settings,
    free_port,
    inherited_env,
    sqlalchemy_url,
)
from devkit.workspace import WHERE_THE_DAG_GOES, SetupError, prepare_workspace

DEFAULT_HOME = ROOT / ".airflow"
USERNAME = "admin"
PASSWORD = "admin"  # noqa: S105 - a local development UI on loopback

_MARKER = ".services-sync-airflow-ui"
#: Dropped from this process' environment on start (besides what every stack drops).
_DROPPED = (*DEPLOYMENT_VARIABLES, *WHERE_THE_DAG_GOES)


def prepare_home(home: Path) -> Path:
    """Wipe and recreate the workspace; refuse a non-empty directory it did not make."""
    return prepare_workspace(
        home, default=DEFAULT_HOME, marker=_MARKER, option="--home", owner="devkit.airflow_ui"
    )


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` and it can be bound."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(requested: int | None, default: int, what: str) -> int:
    """``requested`` if given (it must be free), else ``default`` or a free port.

    Raises:
        SetupError: If the requested port is taken.
    """
    if requested == 0:
        return free_port()
    if requested is not None:
        if not port_is_free(requested):
            raise SetupError(f"port {requested} for the {what} is taken; pick another one")
        return requested
    if port_is_free(default):
        return default
    port = free_port()
    print(f"note         port {default} is taken; the {what} uses {port}")
    return port


def clean_environment() -> None:
    """Drop inherited Airflow settings and the DAG settings this tool sets itself."""
    kept = inherited_env(drop=_DROPPED)
    for name in set(os.environ) - set(kept):
        del os.environ[name]


def airflow_environment(
    home: Path,
    *,
    metadata_url: str,
    source_url: str,
    receiver_port: int,
    api_port: int,
    start_date: datetime,
    broker_url: str | None = None,
) -> dict[str, str]:
    """The environment of ``airflow standalone`` (or the Celery components) and their tasks.

    Args:
        home: The workspace (``AIRFLOW_HOME`` is ``home/airflow``).
        metadata_url: libpq URL of the metadata database.
        source_url: libpq URL of the source database (the DAG's state tables go there too).
        receiver_port: Port of the reference receiver on 127.0.0.1.
        api_port: Port of the api-server (UI, REST API and the tasks' Execution API).
        start_date: The DAG's start date (first interval).
        broker_url: The Celery broker: CeleryExecutor (else LocalExecutor).

    Returns:
        The environment (:func:`devkit.airflow_stack.airflow_env` plus these settings).
    """
    airflow_home = home / "airflow"
    passwords = airflow_home / "simple_auth_manager_passwords.json.generated"
    env = airflow_env(
        airflow_home,
        sqlalchemy_url(metadata_url),
        {
            **api_settings(api_port),
            # Paused until told otherwise; main() unpauses the query-mode DAG only.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # Login admin / admin: the simple auth manager keeps the passwords it knows in
            # this file and only generates one for a user missing from it.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__PARALLELISM": "8",
            **({} if broker_url is None else celery_settings(metadata_url, broker_url, 1)),
            "AIRFLOW_CONN_SERVICES_SOURCE_DB": source_url,
            "AIRFLOW_CONN_SERVICES_API": api_connection(receiver_port),
            "SERVICES_SYNC_START_DATE": start_date.isoformat(),
            "SERVICES_SYNC_SOURCE_CONN_ID": "services_source_db",
            "SERVICES_SYNC_API_CONN_ID": "services_api",
            "SERVICES_SYNC_STATE_CONN_ID": "services_source_db",
            "SERVICES_SYNC_STATE_SCHEMA": "services_sync",
        },
    )
    airflow_home.mkdir(parents=True, exist_ok=True)
    passwords.write_text(json.dumps({USERNAME: PASSWORD}) + "\n")
    passwords.chmod(0o600)
    return env


#: The environment variables a CLI needs to reach the stack (everything else is inherited).
_CLI_ENV_PREFIXES = ("AIRFLOW_HOME", "AIRFLOW__", "AIRFLOW_CONN_", "SERVICES_SYNC_")


def write_cli_env(home: Path, env: dict[str, str]) -> Path:
    """``home/airflow.env``: the stack's settings as shell exports, for the Airflow CLI.

    Without them ``airflow ...`` would read ``~/airflow`` (an empty SQLite database), not this
    stack. ``make airflow-cli ARGS='...'`` sources it.
    """
    import shlex

    lines = [
        f"export {name}={shlex.quote(value)}"
        for name, value in sorted(env.items())
        if name.startswith(_CLI_ENV_PREFIXES)
    ]
    path = home / "airflow.env"
    path.write_text("# The `make airflow` stack, for the Airflow CLI (written on start).\n")
    with path.open("a") as out:
        out.write("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path
