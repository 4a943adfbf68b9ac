-- Binlog CDC setup check: what the server writes to its binary log, and who it is.
-- binlog_row_metadata is read apart (binlog_row_metadata.sql): older servers lack it.
SELECT @@log_bin AS log_bin, @@binlog_format AS binlog_format,
       @@binlog_row_image AS binlog_row_image, @@server_id AS server_id,
       VERSION() AS version, @@log_bin_basename AS log_bin_basename
