-- KMS keys of this region: metadata, backing key versions, aliases, tags.
--
-- Every row here is region-local: each region has its own database. Key material is stored
-- only wrapped by the region's root key (regiond.crypto.wrap: AES-256-GCM, AAD binds key id and
-- backing version), so a wrapped value copied into another row never unwraps.

CREATE TABLE keys (
    key_id             text PRIMARY KEY
                       CHECK (key_id ~ '^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$'),
    account_id         char(12) NOT NULL REFERENCES accounts ON DELETE CASCADE,
    region             text NOT NULL,
    description        text NOT NULL DEFAULT '',
    key_usage          text NOT NULL,
    key_spec           text NOT NULL,
    origin             text NOT NULL,
    key_manager        text NOT NULL CHECK (key_manager IN ('AWS', 'CUSTOMER')),
    key_state          text NOT NULL,
    creation_date      timestamptz NOT NULL,
    -- Set exactly in PendingDeletion / PendingReplicaDeletion (the domain checks the pairing too).
    deletion_date      timestamptz,
    pending_window_days integer,
    valid_to           timestamptz,
    expiration_model   text,
    policy             text NOT NULL,
    -- For AWS managed keys: the service of alias/aws/<service>, so the key is found again.
    aws_service        text,
    -- Multi-region keys (replication issue): the primary's region and the replica regions.
    multi_region       boolean NOT NULL DEFAULT false,
    mr_primary_region  text,
    mr_replica_regions jsonb NOT NULL DEFAULT '[]'::jsonb,
    -- The backing version that encrypts; NULL while the key waits for imported material.
    current_version    integer,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((key_state = 'PendingDeletion') = (deletion_date IS NOT NULL)),
    CHECK (multi_region = (key_id LIKE 'mrk-%'))
);
CREATE INDEX keys_account ON keys (account_id, key_id);
CREATE INDEX keys_due_for_deletion ON keys (deletion_date) WHERE deletion_date IS NOT NULL;
-- One AWS managed key per service and account in a region.
CREATE UNIQUE INDEX keys_aws_managed ON keys (account_id, aws_service) WHERE aws_service IS NOT NULL;

-- One row per backing key version; rotation (and re-import) adds versions, old ones stay for
-- Decrypt. material_wrapped is the root-key seal of the 32-byte AES-256 key.
CREATE TABLE key_versions (
    key_id           text NOT NULL REFERENCES keys ON DELETE CASCADE,
    version          integer NOT NULL CHECK (version >= 1),
    material_wrapped bytea NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (key_id, version)
);

-- Aliases are per account and region; the primary key makes a duplicate name impossible even
-- under two racing CreateAlias calls.
CREATE TABLE aliases (
    account_id        char(12) NOT NULL REFERENCES accounts ON DELETE CASCADE,
    alias_name        text NOT NULL,
    key_id            text NOT NULL REFERENCES keys ON DELETE CASCADE,
    creation_date     timestamptz NOT NULL,
    last_updated_date timestamptz NOT NULL,
    PRIMARY KEY (account_id, alias_name)
);
CREATE INDEX aliases_key ON aliases (key_id);

CREATE TABLE key_tags (
    key_id    text NOT NULL REFERENCES keys ON DELETE CASCADE,
    tag_key   text NOT NULL,
    tag_value text NOT NULL,
    PRIMARY KEY (key_id, tag_key)
);

-- Last successful cryptographic use (GetKeyLastUsage), flushed in batches off the hot path.
CREATE TABLE key_last_usage (
    key_id         text PRIMARY KEY REFERENCES keys ON DELETE CASCADE,
    operation      text NOT NULL,
    used_at        timestamptz NOT NULL,
    request_id     text NOT NULL
);

-- Every worker and node of the region caches keys and aliases (regiond.service.keycache);
-- this tells them which key changed. Payload: the key id (old and new target for aliases).
CREATE OR REPLACE FUNCTION notify_key_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('regionkms_keys', OLD.key_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('regionkms_keys', NEW.key_id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER keys_notify AFTER INSERT OR UPDATE OR DELETE ON keys
    FOR EACH ROW EXECUTE FUNCTION notify_key_change();
CREATE TRIGGER key_versions_notify AFTER INSERT OR UPDATE OR DELETE ON key_versions
    FOR EACH ROW EXECUTE FUNCTION notify_key_change();
CREATE TRIGGER aliases_notify AFTER INSERT OR UPDATE OR DELETE ON aliases
    FOR EACH ROW EXECUTE FUNCTION notify_key_change();
