-- Audit anchors (docs/AUDIT.md, "Anchors"; regiond.domain.audit_anchor): every signed digest is
-- also held outside its region's database, so a rollback of the newest events and digests is
-- detected.
--
-- audit_digests.message: the exact signed message of each digest from now on, so a replication
-- sender can push it to the other regions without knowing the digest format (older rows: NULL;
-- verify rebuilds their message from the columns, as before).
--
-- audit_peer_anchors: the anchors other regions pushed here over the replication channel, each
-- checked against that region's identity key before it is stored. Kept by (source, position): a
-- second anchor for a position already held is refused and logged (a rolled-back source
-- re-signing its history), never stored over the first.

ALTER TABLE audit_digests ADD COLUMN message bytea;

CREATE TABLE audit_peer_anchors (
    source       text NOT NULL,        -- the region whose digest this is (its frame's signer)
    position     bigint NOT NULL,      -- the digest's position in that region's digest sequence
    digest_hash  bytea NOT NULL,       -- SHA-256 of message
    message      bytea NOT NULL,       -- the signed digest message, verbatim
    signature    bytea NOT NULL,       -- Ed25519 by the source's identity key
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, position)
);
