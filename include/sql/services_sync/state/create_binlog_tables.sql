-- Binlog CDC (MySQL / MariaDB sources) keeps its windows in CDC mode's tables (positions encoded
-- as pg_lsn, see services_sync.binlog_source); this adds the GTID position of a window's end,
-- saved when the window is acknowledged (GTID set where the server has one).
ALTER TABLE {schema}.cdc_windows ADD COLUMN IF NOT EXISTS upto_gtid text;
