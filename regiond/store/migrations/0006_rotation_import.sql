-- Key rotation and imported key material (issue 5).
--
-- key_versions (0002) keeps holding the wrapped bytes of each backing version; the tables here
-- add what AWS shows about them and how they change:
--   key_materials      one row per key material ever associated with a key (KeyMaterialId,
--                      rotation history, import state and expiry); it outlives the wrapped
--                      bytes when imported material is deleted or expires, so a re-import can
--                      be checked against it and lands on the same backing version number.
--   key_rotation       the automatic rotation schedule and any on-demand rotation in progress.
--   import_parameters  GetParametersForImport's wrapping key pairs (private half sealed under
--                      the root key, AAD binds key id and token id) and their 24-hour validity.

CREATE TABLE key_materials (
    key_id            text NOT NULL REFERENCES keys ON DELETE CASCADE,
    version           integer NOT NULL CHECK (version >= 1),
    key_material_id   text NOT NULL CHECK (key_material_id ~ '^[0-9a-f]{64}$'),
    -- How this material became current: NULL for the first material and for imported material
    -- still pending rotation (ListKeyRotations omits RotationDate/RotationType for those).
    rotation_type     text CHECK (rotation_type IN ('AUTOMATIC', 'ON_DEMAND')),
    rotation_date     timestamptz,
    -- EXTERNAL origin only (NULL otherwise): whether the wrapped bytes are present in
    -- key_versions (IMPORTED) or were deleted/expired (PENDING_IMPORT), and their expiry.
    imported          boolean,
    expiration_model  text CHECK (expiration_model IN ('KEY_MATERIAL_EXPIRES', 'KEY_MATERIAL_DOES_NOT_EXPIRE')),
    valid_to          timestamptz,
    description       text,
    created_at        timestamptz NOT NULL,
    PRIMARY KEY (key_id, version),
    UNIQUE (key_id, key_material_id),
    CHECK ((rotation_type IS NULL) = (rotation_date IS NULL)),
    CHECK (valid_to IS NULL OR expiration_model = 'KEY_MATERIAL_EXPIRES')
);
-- The import-expiry sweeper's work list.
CREATE INDEX key_materials_expiring ON key_materials (valid_to) WHERE imported AND valid_to IS NOT NULL;

-- Every backing version has a material row, whoever inserts the version (CreateKey, AWS managed
-- keys, replication): a version inserted without one gets a random KeyMaterialId here. Rotation
-- and import insert their row first, with the id they computed, so this does nothing for them.
CREATE OR REPLACE FUNCTION key_material_for_version() RETURNS trigger AS $$
BEGIN
    INSERT INTO key_materials (key_id, version, key_material_id, created_at)
    VALUES (NEW.key_id, NEW.version,
            encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex'),
            NEW.created_at)
    ON CONFLICT (key_id, version) DO NOTHING;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER key_versions_material AFTER INSERT ON key_versions
    FOR EACH ROW EXECUTE FUNCTION key_material_for_version();

INSERT INTO key_materials (key_id, version, key_material_id, created_at)
SELECT key_id, version,
       encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex'),
       created_at
FROM key_versions
ON CONFLICT (key_id, version) DO NOTHING;

-- A key without a row has automatic rotation disabled. next_rotation_date = anchor_date +
-- period_days while enabled (anchor: the enable date or the last automatic rotation).
-- on_demand_started_at marks an accepted RotateKeyOnDemand that has not committed its new
-- version yet (GetKeyRotationStatus's OnDemandRotationStartDate; the scheduler finishes it).
CREATE TABLE key_rotation (
    key_id                text PRIMARY KEY REFERENCES keys ON DELETE CASCADE,
    enabled               boolean NOT NULL,
    period_days           integer NOT NULL DEFAULT 365 CHECK (period_days BETWEEN 90 AND 2560),
    anchor_date           timestamptz,
    next_rotation_date    timestamptz,
    on_demand_started_at  timestamptz,
    updated_at            timestamptz NOT NULL,
    CHECK (enabled = (next_rotation_date IS NOT NULL)),
    CHECK (enabled = (anchor_date IS NOT NULL))
);
CREATE INDEX key_rotation_due ON key_rotation (next_rotation_date) WHERE enabled;
CREATE INDEX key_rotation_on_demand ON key_rotation (on_demand_started_at) WHERE on_demand_started_at IS NOT NULL;

-- AWS managed keys rotate every 365 days from creation ("New AWS managed keys are automatically
-- rotated one year after they are created"); those made before this migration join the schedule.
INSERT INTO key_rotation (key_id, enabled, period_days, anchor_date, next_rotation_date, updated_at)
SELECT key_id, true, 365, creation_date, creation_date + interval '365 days', now()
FROM keys WHERE key_manager = 'AWS'
ON CONFLICT (key_id) DO NOTHING;

CREATE TABLE import_parameters (
    token_id             uuid PRIMARY KEY,
    key_id               text NOT NULL REFERENCES keys ON DELETE CASCADE,
    wrapping_algorithm   text NOT NULL,
    wrapping_key_spec    text NOT NULL,
    private_key_sealed   bytea NOT NULL,
    created_at           timestamptz NOT NULL,
    valid_to             timestamptz NOT NULL CHECK (valid_to > created_at)
);
CREATE INDEX import_parameters_valid_to ON import_parameters (valid_to);
CREATE INDEX import_parameters_key ON import_parameters (key_id);
