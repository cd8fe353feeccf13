-- Platform: accounts, principals, access keys, identity policies, region identity.
-- IAM is global: these tables are written in the home region and replicated elsewhere.

CREATE TABLE accounts (
    account_id   char(12) PRIMARY KEY CHECK (account_id ~ '^[0-9]{12}$'),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE principals (
    arn          text PRIMARY KEY,
    account_id   char(12) NOT NULL REFERENCES accounts ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('root', 'user', 'role')),
    name         text NOT NULL,
    principal_id text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, kind, name)
);

-- secret_wrapped = root-key AES-256-GCM seal of the secret access key, AAD bound to access_key_id.
CREATE TABLE access_keys (
    access_key_id  text PRIMARY KEY,
    principal_arn  text NOT NULL REFERENCES principals ON DELETE CASCADE,
    secret_wrapped bytea NOT NULL,
    status         text NOT NULL DEFAULT 'Active' CHECK (status IN ('Active', 'Inactive')),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX access_keys_principal ON access_keys (principal_arn);

CREATE TABLE identity_policies (
    principal_arn text NOT NULL REFERENCES principals ON DELETE CASCADE,
    policy_name   text NOT NULL,
    document      text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal_arn, policy_name)
);

-- Every IAM write bumps this; caches compare it (and LISTEN/NOTIFY tells them to).
CREATE SEQUENCE iam_version;

CREATE OR REPLACE FUNCTION notify_iam_change() RETURNS trigger AS $$
BEGIN
    PERFORM nextval('iam_version');
    PERFORM pg_notify('regionkms_iam', TG_TABLE_NAME);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER principals_notify AFTER INSERT OR UPDATE OR DELETE ON principals
    FOR EACH STATEMENT EXECUTE FUNCTION notify_iam_change();
CREATE TRIGGER access_keys_notify AFTER INSERT OR UPDATE OR DELETE ON access_keys
    FOR EACH STATEMENT EXECUTE FUNCTION notify_iam_change();
CREATE TRIGGER identity_policies_notify AFTER INSERT OR UPDATE OR DELETE ON identity_policies
    FOR EACH STATEMENT EXECUTE FUNCTION notify_iam_change();
