-- Choose what a captured window delivers, in which order (ord, 0-based, commit order) and by
-- which delivery lane (lane: a hash of the request, so every change of one request goes out in
-- one lane, in commit order).
--   collapse      true: only the newest change per (service_id, request_id) in the window;
--                 false: every change, each transition in commit order.
--   send_deletes  false: deletes are not delivered (the request contract has no delete).
--   lanes         how many delivery lanes the window is spread over.
-- A change without both ids is always kept: it is quarantined with its reason, never dropped.
-- Truncates are never delivered (they name no request); the capture task reports them.
WITH ranked AS (
    SELECT commit_lsn, position, op, service_id, request_id,
           service_id IS NULL OR request_id IS NULL AS keyless,
           row_number() OVER (PARTITION BY service_id, request_id
                              ORDER BY commit_lsn DESC, position DESC) AS newest
    FROM {schema}.cdc_changes
    WHERE window_id = %(window_id)s AND op <> 'truncate'
), kept AS (
    SELECT commit_lsn, position,
           row_number() OVER (ORDER BY commit_lsn, position) - 1 AS ord,
           mod(hashtext(coalesce(service_id, '') || '/' || coalesce(request_id, ''))::bigint
               + 2147483648, %(lanes)s::int) AS lane
    FROM ranked
    WHERE (newest = 1 OR keyless OR NOT %(collapse)s)
      AND (op <> 'delete' OR %(send_deletes)s)
)
UPDATE {schema}.cdc_changes AS c
SET ord = kept.ord, lane = kept.lane
FROM kept
WHERE c.window_id = %(window_id)s
  AND c.commit_lsn = kept.commit_lsn
  AND c.position = kept.position;
