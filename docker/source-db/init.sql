-- Development source database for the services-sync compose stack: role, grants, state schema
-- and seed rows.
--
-- docker-compose.yaml mounts two files into /docker-entrypoint-initdb.d of the `source-db` service
-- (postgres:16, POSTGRES_DB=services), which run in name order, once, as the superuser, connected
-- to the `services` database, when the data volume is empty (`docker compose down -v` to redo):
--   10-create_source_table.sql  the project's include/sql/services_sync/dev/create_source_table.sql
--                               (public.service_requests and its last_modified_date index)
--   20-init.sql                 this file
-- Both are plain psql and can also be applied by hand, in that order (psql 15+ for \getenv):
--   SERVICES_SYNC_PASSWORD=... psql -v ON_ERROR_STOP=1 -d services \
--       -f include/sql/services_sync/dev/create_source_table.sql -f docker/source-db/init.sql
-- Running them again is harmless: they create what is missing and seed only an empty table.

\set ON_ERROR_STOP on

-- The pipeline's login role. Its password comes from SERVICES_SYNC_PASSWORD (compose sets it from
-- SOURCE_DB_PASSWORD, the same value as in the AIRFLOW_CONN_SERVICES_SOURCE_DB connection);
-- the dev default is services_sync.
\set services_sync_password services_sync
\getenv services_sync_password SERVICES_SYNC_PASSWORD

SELECT format(
           CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'services_sync')
                THEN 'ALTER ROLE services_sync WITH LOGIN PASSWORD %L'
                ELSE 'CREATE ROLE services_sync WITH LOGIN PASSWORD %L'
           END,
           :'services_sync_password')
\gexec

-- public.service_requests comes from create_source_table.sql, run just before this file. Its
-- status_id is text on purpose: legacy rows can hold non-integer statuses, which the pipeline
-- must quarantine rather than choke on (see the seed rows below).

-- Read-only access to the source ...
GRANT CONNECT ON DATABASE services TO services_sync;
GRANT USAGE ON SCHEMA public TO services_sync;
GRANT SELECT ON public.service_requests TO services_sync;

-- CDC mode (DAG services_requests_cdc) reads a logical replication slot: the role needs the
-- REPLICATION attribute (create, peek and advance the slot; write heartbeats). The publication
-- can only be created by the table's owner, so it is made here; the DAG finds it and creates
-- the slot itself.
-- UPDATE and DELETE of a published table need a replica identity; FULL also lets deletes be
-- sent as flagged records (SERVICES_SYNC_CDC_DELETES=status). Query mode needs none of this.
ALTER ROLE services_sync WITH REPLICATION;
ALTER TABLE public.service_requests REPLICA IDENTITY FULL;
SELECT 'CREATE PUBLICATION services_sync_pub FOR TABLE public.service_requests'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = 'services_sync_pub')
\gexec

-- ... and a schema of its own for the pipeline's state tables (ledger, quarantine, ...).
CREATE SCHEMA IF NOT EXISTS services_sync AUTHORIZATION services_sync;
-- The pipeline creates its tables in this schema and only tries CREATE SCHEMA when it is
-- missing, so the role needs no CREATE privilege on the database.

-- Dev seed: 20 rows changed over the last few hours (relative to when the volume was created),
-- so the first hourly runs have something to send. Two rows are malformed on purpose:
-- SVC-1007 has no request_id, and SVC-1012/REQ-20012 has the legacy status 'open'.
-- REQ-20015 sits exactly on an hour boundary, to exercise the half-open [start, end) windows.
INSERT INTO public.service_requests
    (service_id, request_id, opening_date, status_id, last_modified_date)
SELECT seed.service_id, seed.request_id, seed.opening_date, seed.status_id, seed.last_modified_date
FROM (
    VALUES
        ('SVC-1001', 'REQ-20001', now() - interval '9 days',     '1',    now() - interval '5 hours 50 minutes'),
        ('SVC-1001', 'REQ-20002', now() - interval '8 days',     '2',    now() - interval '5 hours 35 minutes'),
        ('SVC-1002', 'REQ-20003', now() - interval '7 days',     '1',    now() - interval '5 hours 10 minutes'),
        ('SVC-1003', 'REQ-20004', now() - interval '6 days',     '3',    now() - interval '4 hours 45 minutes'),
        ('SVC-1003', 'REQ-20005', now() - interval '6 days',     '2',    now() - interval '4 hours 20 minutes'),
        ('SVC-1004', 'REQ-20006', now() - interval '5 days',     '1',    now() - interval '4 hours 5 minutes'),
        ('SVC-1005', 'REQ-20007', now() - interval '5 days',     '4',    now() - interval '3 hours 40 minutes'),
        ('SVC-1006', 'REQ-20008', now() - interval '4 days',     '2',    now() - interval '3 hours 25 minutes'),
        ('SVC-1007', NULL,        now() - interval '4 days',     '1',    now() - interval '3 hours 5 minutes'),
        ('SVC-1008', 'REQ-20010', now() - interval '3 days',     '3',    now() - interval '2 hours 50 minutes'),
        ('SVC-1009', 'REQ-20011', now() - interval '3 days',     '1',    now() - interval '2 hours 30 minutes'),
        ('SVC-1012', 'REQ-20012', now() - interval '2 days',     'open', now() - interval '2 hours 15 minutes'),
        ('SVC-1010', 'REQ-20013', now() - interval '2 days',     '2',    now() - interval '1 hour 55 minutes'),
        ('SVC-1010', 'REQ-20014', now() - interval '36 hours',   '1',    now() - interval '1 hour 40 minutes'),
        ('SVC-1011', 'REQ-20015', now() - interval '30 hours',   '3',    date_trunc('hour', now()) - interval '1 hour'),
        ('SVC-1013', 'REQ-20016', now() - interval '1 day',      '1',    now() - interval '1 hour 10 minutes'),
        ('SVC-1014', 'REQ-20017', now() - interval '20 hours',   '2',    now() - interval '50 minutes'),
        ('SVC-1015', 'REQ-20018', now() - interval '12 hours',   '1',    now() - interval '35 minutes'),
        ('SVC-1016', 'REQ-20019', now() - interval '6 hours',    '4',    now() - interval '20 minutes'),
        ('SVC-1017', 'REQ-20020', now() - interval '3 hours',    '1',    now() - interval '5 minutes')
) AS seed (service_id, request_id, opening_date, status_id, last_modified_date)
WHERE NOT EXISTS (SELECT FROM public.service_requests);
