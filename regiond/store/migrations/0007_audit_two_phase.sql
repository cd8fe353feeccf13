-- Audit append in two steps (docs/AUDIT.md, "Durability: two steps"): durability without the chain
-- lock, then chaining under it without a WAL flush.
--
-- 0003's audit_append held the region's chain head row lock through the COMMIT's WAL flush, so
-- every batch of every worker and node queued behind the previous one's fsync. Now:
--
-- 1. audit_stage inserts a batch into audit_pending, durably (the writer's session has
--    synchronous_commit = on), taking no lock but the rows' own: writers commit in parallel and
--    a response is released only after this commit.
-- 2. audit_link moves pending rows, in insertion-id order, into audit_events: locks the chain head,
--    hashes, inserts, deletes them from audit_pending and moves the head, in one short transaction
--    with synchronous_commit = off, so the lock is never held across a WAL flush. If that commit is
--    lost in a crash, the rows are still durable in audit_pending and the next pass links them
--    (WAL is replayed in order: the link is lost only together with everything after it).
--
-- audit_append (0003) stays for nodes of the previous release during a rolling upgrade: it chains
-- under the same lock, so both kinds of writer extend one chain.

CREATE TABLE audit_pending (
    region        text NOT NULL,
    id            bigint GENERATED ALWAYS AS IDENTITY,   -- chain order among the rows one pass links
    event_id      uuid NOT NULL,
    event_time    timestamptz NOT NULL,
    event_source  text NOT NULL,
    event_name    text NOT NULL,
    principal_arn text,
    key_arns      text[] NOT NULL DEFAULT '{}',
    error_code    text,
    read_only     boolean NOT NULL,
    record        bytea NOT NULL,
    stored_at     timestamptz NOT NULL DEFAULT now(),   -- verify reports rows left unlinked for long
    PRIMARY KEY (region, id)
) WITH (
    -- A queue: rows live for milliseconds. Vacuum it by dead-row count, not by a fraction of a table
    -- that is nearly always empty, so the index the linker walks stays short.
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 10000
);

-- Step 1: one group-commit batch in one statement. Raises unless every row was stored (a trigger
-- dropping rows), so the batch is either wholly durable or fails closed.
CREATE FUNCTION audit_stage(
    p_region text, p_event_ids uuid[], p_times timestamptz[], p_sources text[], p_names text[],
    p_principals text[], p_key_arns text[], p_errors text[], p_read_only boolean[], p_records bytea[]
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n      integer := coalesce(array_length(p_records, 1), 0);
    stored bigint;
BEGIN
    INSERT INTO audit_pending (region, event_id, event_time, event_source, event_name, principal_arn, key_arns,
                               error_code, read_only, record)
    SELECT p_region, e.event_id, e.event_time, e.event_source, e.event_name, e.principal_arn,
           CASE WHEN e.key_arns IS NULL OR e.key_arns = '' THEN '{}'::text[]
                ELSE string_to_array(e.key_arns, chr(31)) END,
           e.error_code, e.read_only, e.record
    FROM unnest(p_event_ids, p_times, p_sources, p_names, p_principals, p_key_arns, p_errors, p_read_only,
                p_records) WITH ORDINALITY
         AS e(event_id, event_time, event_source, event_name, principal_arn, key_arns, error_code, read_only,
              record, i)
    ORDER BY e.i;
    GET DIAGNOSTICS stored = ROW_COUNT;
    IF stored <> n THEN
        RAISE EXCEPTION 'only % of % audit events were stored', stored, n USING ERRCODE = 'data_exception';
    END IF;
    RETURN n;
END;
$$;

-- Step 2: link up to p_max pending rows of the region, oldest id first, after the chain head
-- (hash = SHA-256(label || prev_hash || record), the v1 format of regiond.audit.chain). Its own
-- transaction when called alone; synchronous_commit is off for that transaction only. Returns how
-- many rows were linked and the head after them.
CREATE FUNCTION audit_link(p_region text, p_max integer)
RETURNS TABLE (linked integer, last_seq bigint, last_hash bytea, digest_seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    label    constant bytea := '\x726567696f6e6b6d732e61756469742e6576656e742e763100'::bytea;  -- "regionkms.audit.event.v1\0"
    h_seq    bigint;
    h_first  bytea;
    h_hash   bytea;
    h_digest bigint;
    ids      bigint[];
    records  bytea[];
    hashes   bytea[];
    n        integer;
    moved    bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT c.seq, c.hash, c.digest_seq INTO h_seq, h_first, h_digest
    FROM audit_chain_head c WHERE c.region = p_region FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit chain head of region % is missing', p_region USING ERRCODE = 'no_data_found';
    END IF;
    -- A fresh snapshot (READ COMMITTED, after the lock): sees every row the previous linker left.
    SELECT array_agg(p.id ORDER BY p.id), array_agg(p.record ORDER BY p.id) INTO ids, records
    FROM (SELECT a.id, a.record FROM audit_pending a WHERE a.region = p_region ORDER BY a.id LIMIT p_max) p;
    n := coalesce(array_length(ids, 1), 0);
    IF n = 0 THEN
        RETURN QUERY SELECT 0, h_seq, h_first, h_digest;
        RETURN;
    END IF;
    h_hash := h_first;
    FOR i IN 1 .. n LOOP
        h_hash := sha256(label || h_hash || records[i]);
        hashes[i] := h_hash;
    END LOOP;
    WITH taken AS (
        DELETE FROM audit_pending a WHERE a.region = p_region AND a.id = ANY (ids) RETURNING a.*
    )
    INSERT INTO audit_events (region, seq, event_id, event_time, event_source, event_name, principal_arn,
                              key_arns, error_code, read_only, record, prev_hash, hash)
    SELECT p_region, h_seq + x.i, t.event_id, t.event_time, t.event_source, t.event_name, t.principal_arn,
           t.key_arns, t.error_code, t.read_only, t.record,
           CASE WHEN x.i = 1 THEN h_first ELSE hashes[x.i - 1] END, hashes[x.i]
    FROM taken t JOIN unnest(ids) WITH ORDINALITY AS x(id, i) ON x.id = t.id;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> n THEN
        RAISE EXCEPTION 'only % of % audit events were linked', moved, n USING ERRCODE = 'data_exception';
    END IF;
    UPDATE audit_chain_head SET seq = h_seq + n, hash = h_hash, updated_at = now() WHERE region = p_region;
    RETURN QUERY SELECT n, h_seq + n, h_hash, h_digest;
END;
$$;
