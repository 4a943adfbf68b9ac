-- Development/demo source table on MySQL / MariaDB (the production table is the user's own).
-- DATETIME(6) columns hold UTC (see README, "MySQL / MariaDB": the time-zone rule); status_id is
-- text on purpose, as in the PostgreSQL demo table, so legacy rows can break the contract.
-- The index on last_modified_date serves the hourly range scan. No primary key, like the
-- PostgreSQL demo table: the binlog carries full row images (binlog_row_image=FULL) anyway.
CREATE TABLE IF NOT EXISTS service_requests (
    service_id         VARCHAR(64),
    request_id         VARCHAR(64),
    opening_date       DATETIME(6),
    status_id          VARCHAR(32),
    last_modified_date DATETIME(6),
    INDEX service_requests_last_modified_idx (last_modified_date)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
