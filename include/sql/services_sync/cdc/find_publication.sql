-- The publication of this name, if any, and whether it publishes service_requests with
-- updates and deletes (to create it only when missing, and refuse one that misses the table).
SELECT p.pubname::text AS pubname,
       EXISTS (
           SELECT 1
           FROM pg_publication_rel AS pr
           WHERE pr.prpubid = p.oid AND pr.prrelid = to_regclass('service_requests')
       ) OR p.puballtables AS has_table,
       p.pubinsert AND p.pubupdate AND p.pubdelete AND p.pubtruncate AS publishes_all
FROM pg_publication AS p
WHERE p.pubname = %(publication)s;
