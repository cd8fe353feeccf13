-- Audit trail v2 retention (issue 15; docs/AUDIT.md, "Retention: pruning old segments").
--
-- `regiond audit prune --before T` deletes, per writer, the oldest segments (a prefix of its chain)
-- that are older than T and covered by a signed digest the node anchored, after checking them, and
-- records in the same transaction a prune record signed with the region's identity key: for each
-- writer, the last pruned segment's seq and hash (where the kept chain now starts) and the digest
-- that covered them (regiond.audit.prune holds the one encoding). `regiond audit verify` starts each
-- writer's walk there and reports the pruned range as pruned: segments missing without a record
-- signed by the region's key are still reported as deleted. `message` is the only source of what was
-- pruned; the other columns are for ordering and are checked against it.

CREATE TABLE audit_prunes (
    region      text NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 1),   -- 1, 2, ... per region
    pruned_at   timestamptz NOT NULL,
    public_key  bytea NOT NULL,                     -- the signer's raw key (verify trusts the region's key)
    message     bytea NOT NULL,                     -- regiond.audit.prune encoding, signed
    signature   bytea NOT NULL,                     -- Ed25519(identity key, message)
    PRIMARY KEY (region, seq)
);
