-- The binary log's current end: the file and offset the next transaction will be written at.
-- Always a transaction boundary (a transaction is written to the binlog whole, at commit).
SHOW MASTER STATUS
