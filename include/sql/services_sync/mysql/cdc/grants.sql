-- The current user's grants, to name a missing replication privilege before reading the log.
SHOW GRANTS
