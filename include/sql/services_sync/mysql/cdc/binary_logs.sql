-- The binary log files the server still keeps, oldest first (needs REPLICATION CLIENT, called
-- BINLOG MONITOR in MariaDB 10.5+).
SHOW BINARY LOGS
