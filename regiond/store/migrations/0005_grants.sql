-- Grants (issue 4): per key and per region, as AWS KMS keeps them. A grant is never replicated,
-- not even for a multi-region key (DESIGN section 8: grants are an independent property).
--
-- A grant row is immutable: CreateGrant inserts it, RetireGrant/RevokeGrant delete it. Every
-- process of the region caches a key's grants (regiond.service.grants.GrantCache); the trigger
-- below tells them which key's grants changed. Key policies live in keys.policy, whose changes
-- already reach every process through the regionkms_keys trigger of migration 0002.

CREATE TABLE grants (
    grant_id            text PRIMARY KEY CHECK (grant_id ~ '^[0-9a-f]{64}$'),
    key_id              text NOT NULL REFERENCES keys ON DELETE CASCADE,
    -- The account that issued the grant (the key's account): IssuingAccount in ListGrants.
    account_id          char(12) NOT NULL,
    name                text,
    grantee_principal   text NOT NULL,
    retiring_principal  text,
    -- Who called CreateGrant (not shown by AWS; kept for the audit of who handed out access).
    issuing_principal   text NOT NULL,
    operations          text[] NOT NULL CHECK (cardinality(operations) >= 1),
    -- NULL, or {"EncryptionContextEquals": {...}} / {"EncryptionContextSubset": {...}} (or both).
    constraints         jsonb,
    -- For a named grant: a digest of (name, grantee, retiring principal, operations, constraints),
    -- so a retried CreateGrant returns the existing grant instead of making a second one.
    request_digest      text,
    creation_date       timestamptz NOT NULL,
    -- Listing order and page markers (ListGrants, ListRetirableGrants).
    seq                 bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX grants_key ON grants (key_id, seq);
CREATE INDEX grants_retiring ON grants (retiring_principal, seq) WHERE retiring_principal IS NOT NULL;
CREATE UNIQUE INDEX grants_named_retry ON grants (key_id, request_digest) WHERE request_digest IS NOT NULL;

-- Payload: the key id whose grants changed (also fired for the cascade when a key is deleted).
CREATE OR REPLACE FUNCTION notify_grant_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('regionkms_grants', OLD.key_id);
    ELSE
        PERFORM pg_notify('regionkms_grants', NEW.key_id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER grants_notify AFTER INSERT OR UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION notify_grant_change();
