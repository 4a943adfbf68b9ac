from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services_sync.core.config import ConfigError, load_settings


def test_defaults():
    settings = load_settings({})
    assert settings.source_conn_id == "services_source_db"
    assert settings.api_conn_id == "services_api"
    assert settings.state_conn_id == "services_source_db"
    assert settings.state_schema == "services_sync"
    assert settings.endpoint == "/services-data/requests"
    assert settings.http_timeout == 30.0
    assert settings.default_batch_size == 1000
    assert settings.start_date == datetime(2026, 11, 29, tzinfo=UTC)
    assert (settings.sql_dir / "services_sync" / "plan_batches.sql").exists()


def test_the_gate_waits_for_unrelated_writers_five_minutes_by_default():
    assert load_settings({}).unrelated_writer_wait == timedelta(minutes=5)
    custom = load_settings(
        {
            "SERVICES_SYNC_UNRELATED_WRITER_WAIT_S": "3600",
            "SERVICES_SYNC_MAX_OPEN_TRANSACTION_S": "7200",
        }
    )
    assert custom.unrelated_writer_wait == timedelta(hours=1)
    assert load_settings({"SERVICES_SYNC_UNRELATED_WRITER_WAIT_S": "0"}).unrelated_writer_wait == (
        timedelta(0)
    )


def test_default_retry_budget_rides_out_a_six_hour_outage():
    settings = load_settings({})
    assert settings.retry_budget >= timedelta(hours=6)
    assert settings.post_retry_backoff > 1
    assert settings.post_max_retry_delay <= timedelta(hours=1)


def test_retry_budget_follows_the_settings():
    short = load_settings(
        {
            "SERVICES_SYNC_POST_RETRIES": "3",
            "SERVICES_SYNC_RETRY_DELAY_S": "10",
            "SERVICES_SYNC_RETRY_BACKOFF": "2",
            "SERVICES_SYNC_MAX_RETRY_DELAY_S": "25",
        }
    )
    # floors of 10, 20, min(40, 25) seconds at 0.8 of the backoff
    assert short.retry_budget == timedelta(seconds=(10 + 20 + 25) * 0.8)


def test_state_connection_can_be_separate():
    settings = load_settings({"SERVICES_SYNC_STATE_CONN_ID": "sync_state"})
    assert settings.state_conn_id == "sync_state"


def test_start_date_is_read_as_utc():
    settings = load_settings({"SERVICES_SYNC_START_DATE": "2025-05-14T12:00:00+02:00"})
    assert settings.start_date == datetime(2025, 5, 14, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVICES_SYNC_START_DATE": "yesterday"}, "SERVICES_SYNC_START_DATE"),
        ({"SERVICES_SYNC_START_DATE": "2025-05-14T10:30:00Z"}, "on the hour"),
        ({"SERVICES_SYNC_POST_RETRIES": "many"}, "SERVICES_SYNC_POST_RETRIES"),
        ({"SERVICES_SYNC_BATCH_SIZE": "0"}, "SERVICES_SYNC_BATCH_SIZE"),
        ({"SERVICES_SYNC_HTTP_TIMEOUT_S": "-1"}, "SERVICES_SYNC_HTTP_TIMEOUT_S"),
        ({"SERVICES_SYNC_STATE_SCHEMA": "x; drop table"}, "plain SQL identifier"),
        ({"SERVICES_SYNC_NAIVE_TIMEZONE": "Mars/Base"}, "IANA"),
        ({"SERVICES_SYNC_UNRELATED_WRITER_WAIT_S": "5 min"}, "SERVICES_SYNC_UNRELATED_WRITER_WAIT"),
        ({"SERVICES_SYNC_UNRELATED_WRITER_WAIT_S": "-1"}, "SERVICES_SYNC_UNRELATED_WRITER_WAIT"),
        (
            {"SERVICES_SYNC_UNRELATED_WRITER_WAIT_S": "3600"},
            r"at most SERVICES_SYNC_MAX_OPEN_TRANSACTION_S \(1800\)",
        ),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_delivery_lanes_and_outbox_retention():
    settings = load_settings({})
    assert (settings.lanes, settings.post_pool) == (4, "default_pool")
    assert settings.outbox_retention == timedelta(hours=24)
    custom = load_settings(
        {
            "SERVICES_SYNC_LANES": "2",
            "SERVICES_SYNC_POST_POOL": "services_api",
            "SERVICES_SYNC_OUTBOX_RETENTION_H": "168",
        }
    )
    assert (custom.lanes, custom.post_pool, custom.outbox_retention) == (
        2,
        "services_api",
        timedelta(days=7),
    )
    with pytest.raises(ConfigError, match="SERVICES_SYNC_LANES=17 must be at most 16"):
        load_settings({"SERVICES_SYNC_LANES": "17"})
    with pytest.raises(ConfigError, match="SERVICES_SYNC_LANES=0 must be >= 1"):
        load_settings({"SERVICES_SYNC_LANES": "0"})


def test_cdc_defaults():
    settings = load_settings({})
    assert (settings.cdc_slot, settings.cdc_publication) == ("services_sync", "services_sync_pub")
    assert settings.cdc_create_slot and settings.cdc_collapse
    assert (settings.cdc_deletes, settings.cdc_deleted_status_id) == ("skip", -1)
    assert settings.cdc_max_retained_wal_bytes == 1024 * 1024 * 1024


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVICES_SYNC_CDC_SLOT": "My-Slot"}, "SERVICES_SYNC_CDC_SLOT='My-Slot' may hold only"),
        ({"SERVICES_SYNC_CDC_SLOT": "s" * 64}, "may hold only lower-case letters"),
        ({"SERVICES_SYNC_CDC_DELETES": "tombstone"}, "must be one of: skip, status"),
        ({"SERVICES_SYNC_CDC_PUBLICATION": "pub;drop"}, "must be a plain SQL identifier"),
        ({"SERVICES_SYNC_CDC_COLLAPSE": "maybe"}, "must be on or off"),
        ({"SERVICES_SYNC_CDC_MAX_RETAINED_WAL_MB": "-1"}, "must be >= 0"),
    ],
)
def test_bad_cdc_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(env)
