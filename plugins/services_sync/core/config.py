"""Deployment settings, read once from environment variables with safe defaults.

These shape the DAG (connection ids, retry budget, start date), so they are environment
variables rather than Airflow Variables: reading them costs nothing at parse time and they are
the same in every component. Runtime knobs a user changes per run (batch size) are DAG Params.

A bad value raises :class:`ConfigError` naming the variable, which surfaces as a DAG import
error in the UI and in ``airflow dags list-import-errors``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pendulum

#: Where ``include/sql`` lives: next to ``plugins/`` in this repository and in the compose stack.
#: Override with ``SERVICES_SYNC_SQL_DIR`` when the package is deployed elsewhere.
DEFAULT_SQL_DIR = Path(__file__).resolve().parents[3] / "include" / "sql"


#: Retries of the POST task land uniformly in [RETRY_JITTER_FLOOR * backoff, backoff]; see
#: :mod:`services_sync.core.retry`.
RETRY_JITTER_FLOOR = 0.8


class ConfigError(ValueError):
    """A setting has a value the pipeline cannot work with."""


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    return _number(env, name, default, minimum, int, "an integer")


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number(env, name, default, minimum, float, "a number")


_Number = TypeVar("_Number", int, float)


def _number(
    env: Mapping[str, str],
    name: str,
    default: _Number,
    minimum: _Number,
    parse: type[_Number],
    kind: str,
) -> _Number:
    raw = _get(env, name, str(default))
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {kind}; set it to e.g. {default}") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def _start_date(env: Mapping[str, str]) -> datetime:
    name = "SERVICES_SYNC_START_DATE"
    raw = _get(env, name, "2026-11-29T00:00:00+00:00")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not an ISO 8601 timestamp; use e.g. 2026-11-29T00:00:00+00:00"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if (value.minute, value.second, value.microsecond) != (0, 0, 0):
        raise ConfigError(f"{name}={raw!r} must be on the hour (hourly intervals start at HH:00)")
    # A pendulum DateTime, as Airflow's timetables expect for their arithmetic.
    return pendulum.instance(value)


def _zone(env: Mapping[str, str], name: str, default: str) -> ZoneInfo:
    raw = _get(env, name, default)
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name}={raw!r} is not an IANA time zone name (e.g. UTC)") from None


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "on" if default else "off").lower()
    if raw in {"on", "true", "1", "yes"}:
        return True
    if raw in {"off", "false", "0", "no"}:
        return False
    raise ConfigError(f"{name}={raw!r} must be on or off")


def _unrelated_writer_wait(env: Mapping[str, str], max_open_transaction: timedelta) -> timedelta:
    name = "SERVICES_SYNC_UNRELATED_WRITER_WAIT_S"
    seconds = _float(env, name, 300.0, minimum=0.0)
    limit = max_open_transaction.total_seconds()
    if seconds > limit:
        raise ConfigError(
            f"{name}={seconds:g} must be at most SERVICES_SYNC_MAX_OPEN_TRANSACTION_S ({limit:g}): "
            "the gate's timeout is sized for that; lower it or raise the other"
        )
    return timedelta(seconds=seconds)


def _deadline(env: Mapping[str, str]) -> timedelta | None:
    minutes = _float(env, "SERVICES_SYNC_RUN_DEADLINE_MIN", 120.0)
    return timedelta(minutes=minutes) if minutes > 0 else None


#: Most delivery lanes a run may map: each is a task instance and a concurrent POST stream.
MAX_LANES = 16


def _lanes(env: Mapping[str, str]) -> int:
    lanes = _int(env, "SERVICES_SYNC_LANES", 4, minimum=1)
    if lanes > MAX_LANES:
        raise ConfigError(f"SERVICES_SYNC_LANES={lanes} must be at most {MAX_LANES}")
    return lanes


def _identifier(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _get(env, name, default)
    if not raw.replace("_", "").isalnum() or raw[0].isdigit():
        raise ConfigError(f"{name}={raw!r} must be a plain SQL identifier (letters, digits, _)")
    return raw


def _slot_name(env: Mapping[str, str]) -> str:
    name = "SERVICES_SYNC_CDC_SLOT"
    raw = _get(env, name, "services_sync")
    # PostgreSQL's rule for replication slot names.
    if not re.fullmatch(r"[a-z0-9_]{1,63}", raw):
        raise ConfigError(f"{name}={raw!r} may hold only lower-case letters, digits and _")
    return raw


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = _get(env, name, default).lower()
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Everything the DAG and its tasks read from the environment."""

    start_date: datetime
    catchup: bool
    source_conn_id: str
    api_conn_id: str
    state_conn_id: str
    state_schema: str
    endpoint: str
    sql_dir: Path
    naive_timezone: ZoneInfo
    default_batch_size: int
    max_batch_bytes: int
    lanes: int
    post_pool: str
    outbox_retention: timedelta
    clock_skew: timedelta
    max_open_transaction: timedelta
    unrelated_writer_wait: timedelta
    gate_poke_interval: timedelta
    commit_gate: bool
    alert_smtp_conn_id: str
    alert_slack_conn_id: str
    alert_email_to: tuple[str, ...]
    alert_email_from: str | None
    run_deadline: timedelta | None
    max_delivery_lag: timedelta
    watchdog_repeat: timedelta
    http_timeout: float
    post_retries: int
    post_retry_delay: timedelta
    post_retry_backoff: float
    post_max_retry_delay: timedelta
    max_retry_after: timedelta
    connect_attempts: int
    task_retries: int
    task_retry_delay: timedelta
    cdc_slot: str
    cdc_publication: str
    cdc_create_slot: bool
    cdc_collapse: bool
    cdc_deletes: str
    cdc_deleted_status_id: int
    cdc_max_retained_wal_bytes: int
    mysql_source_conn_id: str = "services_mysql_db"
    mysql_cdc_server_id: int = 4242
    mysql_binlog_warn_files: int = 1

    @property
    def retry_budget(self) -> timedelta:
        """The shortest time the POST task keeps retrying before it fails for good.

        The retry policy waits ``min(base * m**k, max_retry_delay)`` scaled by a jitter in
        ``[RETRY_JITTER_FLOOR, 1]`` (never less, even when ``Retry-After`` is shorter), so the
        sum of the floors is the guarantee. Time spent inside the tries is not counted.
        """
        base = self.post_retry_delay.total_seconds()
        cap = self.post_max_retry_delay.total_seconds()
        multiplier = self.post_retry_backoff if self.post_retry_backoff > 0 else 1.0
        total = 0.0
        for failed_try in range(1, self.post_retries + 1):
            total += min(base * multiplier ** (failed_try - 1), cap) * RETRY_JITTER_FLOOR
        return timedelta(seconds=total)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate all settings; raise :class:`ConfigError` naming the variable to fix."""
    env = os.environ if env is None else env
    source_conn_id = _get(env, "SERVICES_SYNC_SOURCE_CONN_ID", "services_source_db")
    max_open_transaction = timedelta(
        seconds=_float(env, "SERVICES_SYNC_MAX_OPEN_TRANSACTION_S", 1800.0, minimum=1.0)
    )
    return Settings(
        start_date=_start_date(env),
        catchup=_switch(env, "SERVICES_SYNC_CATCHUP", default=True),
        source_conn_id=source_conn_id,
        api_conn_id=_get(env, "SERVICES_SYNC_API_CONN_ID", "services_api"),
        state_conn_id=_get(env, "SERVICES_SYNC_STATE_CONN_ID", source_conn_id),
        state_schema=_identifier(env, "SERVICES_SYNC_STATE_SCHEMA", "services_sync"),
        endpoint=_get(env, "SERVICES_SYNC_ENDPOINT", "/services-data/requests"),
        sql_dir=Path(_get(env, "SERVICES_SYNC_SQL_DIR", str(DEFAULT_SQL_DIR))),
        naive_timezone=_zone(env, "SERVICES_SYNC_NAIVE_TIMEZONE", "UTC"),
        default_batch_size=_int(env, "SERVICES_SYNC_BATCH_SIZE", 1000, minimum=1),
        max_batch_bytes=_int(env, "SERVICES_SYNC_MAX_BATCH_BYTES", 1024 * 1024, minimum=1024),
        lanes=_lanes(env),
        post_pool=_get(env, "SERVICES_SYNC_POST_POOL", "default_pool"),
        outbox_retention=timedelta(
            hours=_float(env, "SERVICES_SYNC_OUTBOX_RETENTION_H", 24.0, minimum=0.0)
        ),
        clock_skew=timedelta(seconds=_float(env, "SERVICES_SYNC_CLOCK_SKEW_S", 60.0)),
        max_open_transaction=max_open_transaction,
        unrelated_writer_wait=_unrelated_writer_wait(env, max_open_transaction),
        commit_gate=_switch(env, "SERVICES_SYNC_COMMIT_GATE", default=True),
        alert_smtp_conn_id=_get(env, "SERVICES_SYNC_ALERT_SMTP_CONN_ID", "services_alerts_smtp"),
        alert_slack_conn_id=_get(env, "SERVICES_SYNC_ALERT_SLACK_CONN_ID", "services_alerts_slack"),
        alert_email_to=tuple(
            a.strip() for a in _get(env, "SERVICES_SYNC_ALERT_EMAIL_TO", "").split(",") if a.strip()
        ),
        alert_email_from=_get(env, "SERVICES_SYNC_ALERT_EMAIL_FROM", "") or None,
        run_deadline=_deadline(env),
        max_delivery_lag=timedelta(
            minutes=_float(env, "SERVICES_SYNC_MAX_DELIVERY_LAG_MIN", 180.0, minimum=1.0)
        ),
        watchdog_repeat=timedelta(
            minutes=_float(env, "SERVICES_SYNC_WATCHDOG_REPEAT_MIN", 60.0, minimum=0.0)
        ),
        gate_poke_interval=timedelta(
            seconds=_float(env, "SERVICES_SYNC_GATE_POKE_S", 30.0, minimum=0.1)
        ),
        http_timeout=_float(env, "SERVICES_SYNC_HTTP_TIMEOUT_S", 30.0, minimum=0.1),
        post_retries=_int(env, "SERVICES_SYNC_POST_RETRIES", 20),
        post_retry_delay=timedelta(seconds=_float(env, "SERVICES_SYNC_RETRY_DELAY_S", 60.0)),
        post_retry_backoff=_float(env, "SERVICES_SYNC_RETRY_BACKOFF", 2.0),
        post_max_retry_delay=timedelta(
            seconds=_float(env, "SERVICES_SYNC_MAX_RETRY_DELAY_S", 1800.0, minimum=1.0)
        ),
        max_retry_after=timedelta(
            seconds=_float(env, "SERVICES_SYNC_MAX_RETRY_AFTER_S", 900.0, minimum=0.0)
        ),
        connect_attempts=_int(env, "SERVICES_SYNC_CONNECT_ATTEMPTS", 3, minimum=1),
        task_retries=_int(env, "SERVICES_SYNC_TASK_RETRIES", 3),
        task_retry_delay=timedelta(seconds=_float(env, "SERVICES_SYNC_TASK_RETRY_DELAY_S", 60.0)),
        cdc_slot=_slot_name(env),
        cdc_publication=_identifier(env, "SERVICES_SYNC_CDC_PUBLICATION", "services_sync_pub"),
        cdc_create_slot=_switch(env, "SERVICES_SYNC_CDC_CREATE_SLOT", default=True),
        cdc_collapse=_switch(env, "SERVICES_SYNC_CDC_COLLAPSE", default=True),
        cdc_deletes=_choice(env, "SERVICES_SYNC_CDC_DELETES", ("skip", "status"), "skip"),
        cdc_deleted_status_id=_int(
            env, "SERVICES_SYNC_CDC_DELETED_STATUS_ID", -1, minimum=-(2**31)
        ),
        cdc_max_retained_wal_bytes=int(
            _float(env, "SERVICES_SYNC_CDC_MAX_RETAINED_WAL_MB", 1024.0) * 1024 * 1024
        ),
        mysql_source_conn_id=_get(env, "SERVICES_SYNC_MYSQL_SOURCE_CONN_ID", "services_mysql_db"),
        mysql_cdc_server_id=_int(env, "SERVICES_SYNC_MYSQL_CDC_SERVER_ID", 4242, minimum=1),
        mysql_binlog_warn_files=_int(env, "SERVICES_SYNC_MYSQL_BINLOG_WARN_FILES", 1, minimum=0),
    )


def mysql_settings(settings: Settings) -> Settings:
    """The settings as a MySQL / MariaDB DAG's tasks see them: the MySQL source connection.

    The shared tasks read ``source_conn_id``; a MySQL DAG points it at
    ``SERVICES_SYNC_MYSQL_SOURCE_CONN_ID``. The state stays in ``SERVICES_SYNC_STATE_CONN_ID``, a
    PostgreSQL database (the state SQL is PostgreSQL's): when that variable is unset it is the
    PostgreSQL source connection ``SERVICES_SYNC_SOURCE_CONN_ID``, never the MySQL source.
    """
    return replace(settings, source_conn_id=settings.mysql_source_conn_id)


#: Session settings of every MySQL / MariaDB source connection: UTC, whatever the server's zone.
#: TIMESTAMP columns are then compared and returned in UTC, and DATETIME columns must hold UTC.
MYSQL_INIT_COMMAND = "SET time_zone = '+00:00'"


def mysql_hook_params() -> dict[str, str]:
    """``hook_params`` of the SQL operators on a MySQL source: their sessions in UTC."""
    return {"init_command": MYSQL_INIT_COMMAND}


def source_hook_params(settings: Settings) -> dict[str, str]:
    """``hook_params`` of the SQL operators on the source: their sessions in the naive zone.

    ``services_sync.core.db.connect`` sets the same zone on the task's own connections, so a
    ``timestamp without time zone`` column is selected (plan, gate, fetch, stale check,
    reconciliation) and formatted in one zone. A connection extra ``options`` replaces these;
    ``check_run_setup`` then fails, naming the option to add.
    """
    return {"options": f"-c TimeZone={settings.naive_timezone.key}"}
