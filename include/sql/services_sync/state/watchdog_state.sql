-- The watchdog's memory between runs: since when delivery has been late, and when it last
-- alerted (so a late pipeline is one alert per SERVICES_SYNC_WATCHDOG_REPEAT_MIN, not one per
-- watchdog run). Idempotent.
CREATE TABLE IF NOT EXISTS {schema}.watchdog (
    name        text        PRIMARY KEY,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    late_since  timestamptz,
    alerted_at  timestamptz
);
INSERT INTO {schema}.watchdog (name) VALUES ('delivery') ON CONFLICT (name) DO NOTHING;
