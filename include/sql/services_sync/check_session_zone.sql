-- Does a session of the SQL operators compare a naive last_modified_date in the naive zone?
-- Params (bind): zone (text, SERVICES_SYNC_NAIVE_TIMEZONE).
-- A `timestamp without time zone` column is compared with the timestamptz interval bounds in the
-- session's TimeZone, so that zone decides which rows an interval selects. It must read wall
-- times as the transform does: compared at two instants half a year apart (summer and winter
-- offsets), so 'UTC' and 'Etc/UTC' agree while 'Europe/Madrid' and 'Europe/London' do not.
SELECT format_type(a.atttypid, a.atttypmod)                     AS column_type,
       current_setting('TimeZone')                              AS session_zone,
       (SELECT bool_and(timezone(current_setting('TimeZone'), t) = timezone(%(zone)s::text, t))
          FROM unnest(ARRAY[date_trunc('year', now()),
                            date_trunc('year', now()) + interval '6 months']) AS t)
                                                                AS zones_agree
FROM pg_attribute AS a
WHERE a.attrelid = 'service_requests'::regclass
  AND a.attname = 'last_modified_date';
