-- The watchdog's row, and the database clock it compares with. Locked until the run commits.
SELECT first_seen, late_since, alerted_at, now() AS now
FROM {schema}.watchdog WHERE name = 'delivery' FOR UPDATE;
