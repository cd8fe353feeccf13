-- Audit trail v2 digests (issue 15; docs/AUDIT.md, "Digests: the heads of every writer's chain").
--
-- Every few seconds one process of the region (the leader of the "audit-digests" task) signs, with
-- the region's Ed25519 identity key, the heads of every writer's chain (writer id, segment seq,
-- segment hash) and the hash of the previous digest: regiond.audit.digests holds the one encoding.
-- `message` is the exact signed message and the only source of the heads and of the writers a digest
-- closes; the other columns are what reads order and prune on, and verify checks them against it.
-- (audit_digests, migration 0003, holds the v1 chain's digests and stays, closed with that chain.)

CREATE TABLE audit_digests_v2 (
    region       text NOT NULL,
    seq          bigint NOT NULL CHECK (seq >= 1),     -- the digest's place in the region's digest chain
    digest_time  timestamptz NOT NULL,
    prev_hash    bytea,                                -- SHA-256 of the previous digest's message (NULL: first)
    writers      integer NOT NULL,                     -- heads in the message (open and closed)
    closed       uuid[] NOT NULL DEFAULT '{}',         -- writers this digest closes (their final heads)
    public_key   bytea NOT NULL,                       -- the signer's raw key (verify trusts the region's key)
    message      bytea NOT NULL,                       -- regiond.audit.digests encoding, signed
    signature    bytea NOT NULL,                       -- Ed25519(identity key, message)
    PRIMARY KEY (region, seq)
);
CREATE INDEX audit_digests_v2_time ON audit_digests_v2 (digest_time);

-- A writer's liveness lease and its closing. A writer (regiond.audit.writer) renews alive_at every
-- few seconds (regiond.store.audit_digests.renew_writer) and stops writing under its id once it has
-- not renewed for half of audit_writer_close_after_s; the digest task closes a writer whose lease and
-- newest segment are both older than audit_writer_close_after_s (a SIGKILLed or restarted process),
-- recording its final head in that digest and closed_at here. A closed writer never writes again.
-- A writer that stops cleanly sets alive_at to -infinity (retire_writer): the next digest closes it.
ALTER TABLE audit_writers
    ADD COLUMN alive_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN closed_at timestamptz;
