-- Audit trail: one CloudTrail-style event per API call, hash-chained per region, with
-- Ed25519-signed digests (regiond.audit.chain documents the hash and digest formats).
--
-- Writers never assign seq from a sequence: every group-commit batch (audit_append, below) locks
-- the region's row in audit_chain_head FOR UPDATE, appends its events after head.seq and moves
-- the head in the same transaction, so several worker processes and nodes writing to one
-- database extend a single, gap-free chain. A rolled-back batch leaves no hole.

CREATE TABLE audit_chain_head (
    region          text PRIMARY KEY,
    seq             bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),   -- last event appended (0: none yet)
    hash            bytea NOT NULL,                               -- its hash (genesis hash while seq = 0)
    digest_seq      bigint NOT NULL DEFAULT 0,                    -- last event covered by a signed digest
    digest_hash     bytea,                                        -- SHA-256 of that digest's signed message
    digest_time     timestamptz,
    -- Retention: events up to pruned_seq were deleted on purpose; pruned_hash anchors the chain.
    pruned_seq      bigint NOT NULL DEFAULT 0,
    pruned_hash     bytea,
    pruned_through  timestamptz,                                  -- event time of the last pruned event
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- record is the exact JSON bytes that were hashed (bytea, so no server encoding can alter them);
-- the other columns are copies of record fields for querying.
CREATE TABLE audit_events (
    region        text NOT NULL,
    seq           bigint NOT NULL CHECK (seq >= 1),
    event_id      uuid NOT NULL,
    event_time    timestamptz NOT NULL,
    event_source  text NOT NULL,
    event_name    text NOT NULL,
    principal_arn text,
    key_arns      text[] NOT NULL DEFAULT '{}',
    error_code    text,
    read_only     boolean NOT NULL,
    record        bytea NOT NULL,
    prev_hash     bytea NOT NULL,
    hash          bytea NOT NULL,
    PRIMARY KEY (region, seq)
);
-- Events arrive in (nearly) time order, so a BRIN index finds time ranges at a fraction of a
-- B-tree's cost per insert (this table takes one row per API call).
CREATE INDEX audit_events_time ON audit_events USING brin (event_time);

-- A signed checkpoint of the chain: "in region R, events first_seq..last_seq end with hash H".
CREATE TABLE audit_digests (
    region        text NOT NULL,
    last_seq      bigint NOT NULL,
    first_seq     bigint NOT NULL,
    digest_time   timestamptz NOT NULL,
    last_hash     bytea NOT NULL,
    prev_digest   bytea,            -- SHA-256 of the previous digest's signed message (NULL: first)
    public_key    bytea NOT NULL,   -- the signer's raw Ed25519 key (verify trusts the region's key, not this)
    signature     bytea NOT NULL,
    PRIMARY KEY (region, last_seq)
);

-- One group-commit batch, in one statement (one round trip, its own transaction): lock the chain
-- head, link every event to the one before it (hash = SHA-256(label || prev_hash || record), the
-- v1 format of regiond.audit.chain, which verify recomputes independently), insert them, move the
-- head. Raises if the head is missing or not every row was stored (a trigger dropping rows), so a
-- batch is either wholly durable and chained or not there at all.
CREATE FUNCTION audit_append(
    p_region text, p_event_ids uuid[], p_times timestamptz[], p_sources text[], p_names text[],
    p_principals text[], p_key_arns text[], p_errors text[], p_read_only boolean[], p_records bytea[]
) RETURNS TABLE (last_seq bigint, last_hash bytea, digest_seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    label    constant bytea := '\x726567696f6e6b6d732e61756469742e6576656e742e763100'::bytea;  -- "regionkms.audit.event.v1\0"
    n        integer := coalesce(array_length(p_records, 1), 0);
    h_seq    bigint;
    h_first  bytea;
    h_hash   bytea;
    h_digest bigint;
    hashes   bytea[];
    stored   bigint;
BEGIN
    SELECT c.seq, c.hash, c.digest_seq INTO h_seq, h_first, h_digest
    FROM audit_chain_head c WHERE c.region = p_region FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit chain head of region % is missing', p_region USING ERRCODE = 'no_data_found';
    END IF;
    h_hash := h_first;
    FOR i IN 1 .. n LOOP
        h_hash := sha256(label || h_hash || p_records[i]);
        hashes[i] := h_hash;
    END LOOP;
    INSERT INTO audit_events (region, seq, event_id, event_time, event_source, event_name, principal_arn,
                              key_arns, error_code, read_only, record, prev_hash, hash)
    SELECT p_region, h_seq + e.i, e.event_id, e.event_time, e.event_source, e.event_name, e.principal_arn,
           CASE WHEN e.key_arns IS NULL OR e.key_arns = '' THEN '{}'::text[]
                ELSE string_to_array(e.key_arns, chr(31)) END,
           e.error_code, e.read_only, e.record, CASE WHEN e.i = 1 THEN h_first ELSE hashes[e.i - 1] END, e.hash
    FROM unnest(p_event_ids, p_times, p_sources, p_names, p_principals, p_key_arns, p_errors, p_read_only,
                p_records, hashes) WITH ORDINALITY
         AS e(event_id, event_time, event_source, event_name, principal_arn, key_arns, error_code, read_only,
              record, hash, i);
    GET DIAGNOSTICS stored = ROW_COUNT;
    IF stored <> n THEN
        RAISE EXCEPTION 'only % of % audit events were stored', stored, n USING ERRCODE = 'data_exception';
    END IF;
    UPDATE audit_chain_head SET seq = h_seq + n, hash = h_hash, updated_at = now() WHERE region = p_region;
    RETURN QUERY SELECT h_seq + n, h_hash, h_digest;
END;
$$;
