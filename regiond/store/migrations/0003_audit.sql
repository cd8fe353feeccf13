-- Audit trail: one CloudTrail-style event per API call, hash-chained per region, with
-- Ed25519-signed digests (regiond.audit.chain documents the hash and digest formats).
--
-- Writers never assign seq from a sequence: every group-commit batch locks the region's row in
-- audit_chain_head FOR UPDATE, appends its events after head.seq and moves the head in the same
-- transaction, so several worker processes and nodes writing to one database extend a single,
-- gap-free chain. A rolled-back batch leaves no hole.

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
CREATE INDEX audit_events_time ON audit_events (region, event_time);

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
