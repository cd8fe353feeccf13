-- Audit append in one round trip (docs/AUDIT.md, "Durability: one call, two commits").
--
-- 0007 made a batch durable without holding the chain head lock across a WAL flush, at the price
-- of writing every event twice (into audit_pending, then moved into audit_events by a second
-- statement). A procedure can commit, so one CALL now does both transactions:
--
-- 1. audit_append (0003) locks the chain head, links and inserts the batch and moves the head; that
--    transaction commits with synchronous_commit = off, so the lock is released without waiting for
--    the flush.
-- 2. A second transaction writes one WAL record (a transactional logical message; it needs no table
--    and no wal_level = logical) and commits with synchronous_commit on (or the session's stricter
--    setting, such as remote_apply): its flush covers all WAL before it, the batch's commit record included. CALL returns
--    only after that flush, so a response released after it has a durable event.
--
-- A crash between the two commits can lose the batch's commit, but never alone: WAL is replayed in
-- order, so the chain loses it together with everything after it and stays whole; its calls were
-- never answered. Each event is written once; the chain head lock is held for the insert only.
--
-- CALL must run outside a transaction block (transaction control in a procedure); the committer
-- uses its own connection for it. audit_pending and audit_link stay for nodes of the previous
-- release during a rolling upgrade: every node still links what they stage.

CREATE PROCEDURE audit_append_durable(
    p_region text, p_event_ids uuid[], p_times timestamptz[], p_sources text[], p_names text[],
    p_principals text[], p_key_arns text[], p_errors text[], p_read_only boolean[], p_records bytea[],
    INOUT o_last_seq bigint DEFAULT NULL, INOUT o_last_hash bytea DEFAULT NULL, INOUT o_digest_seq bigint DEFAULT NULL
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT a.last_seq, a.last_hash, a.digest_seq INTO o_last_seq, o_last_hash, o_digest_seq
    FROM audit_append(p_region, p_event_ids, p_times, p_sources, p_names, p_principals, p_key_arns, p_errors,
                      p_read_only, p_records) a;
    COMMIT;
    IF current_setting('synchronous_commit') = 'off' THEN  -- never let a session default skip the flush
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
    PERFORM pg_logical_emit_message(true, 'regionkms.audit.flush', '');
END;
$$;
