-- FULL puts the column names in the row events (MariaDB 10.5+, MySQL 8.0.1+); without it the
-- reader sees UNKNOWN_COL0 ... and cannot map a row to the contract.
SELECT @@binlog_row_metadata
