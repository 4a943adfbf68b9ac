-- Acknowledge delivered changes: move the slot's confirmed_flush_lsn to lsn, so the changes of
-- transactions whose commit record STARTS before lsn are never returned again and their WAL can
-- be recycled. Acknowledge a Commit's end_lsn (the peek row lsn of the 'C' message), or the
-- upto_lsn of a peek whose changes were all delivered; a Commit's commit_lsn (= Begin's
-- final_lsn) is NOT enough: that transaction would be returned again.
-- Idempotent: PostgreSQL refuses to move a slot backwards ("cannot advance replication slot to
-- X, minimum is Y"), so an acknowledgement already made (a retried task) is clamped up to the
-- current position. A position past the flushed end of WAL is clamped down by the server.
-- The new position is only written to disk at the next checkpoint (or when restart_lsn moves):
-- after a crash the slot may return already-acknowledged transactions (at-least-once).
SELECT slot_name::text AS slot_name,
       end_lsn::text AS end_lsn
FROM pg_replication_slot_advance(
    %(slot_name)s::name,
    GREATEST(
        %(lsn)s::pg_lsn,
        (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %(slot_name)s)
    )
);
