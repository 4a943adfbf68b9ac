-- MariaDB: the GTID position that corresponds to a binlog file and offset (saved with a window's
-- end: it names the same point on any server of a replication topology).
-- Params (bind): file, offset.
SELECT BINLOG_GTID_POS(%(file)s, %(offset)s)
