-- Development MariaDB source for the services-sync compose stack: grants and seed rows.
--
-- docker-compose.yaml mounts two files into /docker-entrypoint-initdb.d of the `mysql-source-db`
-- service (mariadb:10.11, MARIADB_DATABASE=services, MARIADB_USER=services_sync), which the
-- image's entrypoint runs in name order, once, when the data volume is empty:
--   10-create_source_table.sql  include/sql/services_sync/mysql/dev/create_source_table.sql
--   20-init.sql                 this file
-- The entrypoint creates the services_sync user with MYSQL_SOURCE_DB_PASSWORD and gives it the
-- services database; the pipeline also needs to watch transactions (PROCESS, the late-commit
-- gate) and to read the binary log (REPLICATION SLAVE, REPLICATION CLIENT, binlog CDC).

GRANT PROCESS, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'services_sync'@'%';

-- A few rows to see something move (DATETIME(6) columns hold UTC).
INSERT INTO services.service_requests
    (service_id, request_id, opening_date, status_id, last_modified_date)
SELECT 'water', CONCAT('MY-', LPAD(seq, 4, '0')), UTC_TIMESTAMP(6) - INTERVAL 2 DAY,
       CAST(1 + seq MOD 4 AS CHAR), UTC_TIMESTAMP(6) - INTERVAL seq MINUTE
FROM seq_1_to_20
WHERE NOT EXISTS (SELECT 1 FROM services.service_requests);
