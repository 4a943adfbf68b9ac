-- Params (bind): late_since, alerted_at (NULL when delivery is on time again).
UPDATE {schema}.watchdog SET late_since = %(late_since)s, alerted_at = %(alerted_at)s
WHERE name = 'delivery';
