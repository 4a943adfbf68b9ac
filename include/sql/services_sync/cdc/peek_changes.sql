-- Read the slot's pending changes WITHOUT consuming them (peek): the slot only moves when
-- advance_slot.sql acknowledges a delivered position, so a failed delivery is read again.
-- Every row is one pgoutput protocol-v1 message (services_sync.cdc.pgoutput reads it).
--   slot_name   the logical slot (a value: bind parameter)
--   upto_lsn    stop after the WAL record reaching this LSN (NULL: up to the flushed end of
--               WAL). Take it from pg_current_wal_flush_lsn() before peeking: only flushed WAL
--               is decoded, and advancing to an unflushed position would skip what this peek
--               could not see.
--   publication publication_names option: a comma-separated list of IDENTIFIERS parsed like
--               SQL (unquoted names are folded to lower case), so pass each name quoted
--               ("MyPub"); cdc_source.peek_changes does.
-- The options are the function's VARIADIC text argument, given as name/value pairs.
-- 'messages' adds pg_logical_emit_message() records (heartbeats). upto_nchanges stays NULL:
-- it is only checked between WAL records, so a big transaction overshoots it anyway.
-- Text values come out in this session's DateStyle/TimeZone: the caller sets them (ISO, UTC).
SELECT lsn::text AS lsn,
       xid::text::bigint AS xid,
       data
FROM pg_logical_slot_peek_binary_changes(
    %(slot_name)s::name,
    %(upto_lsn)s::pg_lsn,
    NULL,
    'proto_version', '1',
    'publication_names', %(publication)s::text,
    'messages', 'true'
);
