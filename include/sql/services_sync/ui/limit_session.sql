-- The sync status view's limits for the rest of its read-only transaction (as SET LOCAL does):
-- a statement timeout, so that a slow state database does not hold an API server thread, and
-- UTC, so that timestamps without a zone read as the ledger wrote them.
-- Plain statements, not startup options: they also pass through PgBouncer.
-- Params (bind): statement_timeout_ms.
SELECT set_config('statement_timeout', %(statement_timeout_ms)s::text, true),
       set_config('TimeZone', 'UTC', true)
