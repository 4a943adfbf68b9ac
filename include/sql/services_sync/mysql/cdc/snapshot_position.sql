-- MariaDB, inside START TRANSACTION WITH CONSISTENT SNAPSHOT: the binlog position the snapshot
-- corresponds to exactly (every transaction committed before it is in the snapshot, none after),
-- taken without locking the table (Binlog_snapshot_file / Binlog_snapshot_position).
SHOW STATUS LIKE 'binlog_snapshot_%'
