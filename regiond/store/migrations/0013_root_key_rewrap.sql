-- Root key rotation (regiond rotate-root-key, regiond/store/sealed.py): re-sealing a stored value
-- under a new root key version changes its bytes, not the secret it opens to, so the nodes' caches
-- need not hear of it. The re-wrap sets regionkms.rewrap for its own transactions only (set_config
-- ..., true); the change notifications skip them, so that re-wrapping every key under load does not
-- make every node reload every key. Every other write notifies as before.

CREATE OR REPLACE FUNCTION notify_key_change() RETURNS trigger AS $$
BEGIN
    IF current_setting('regionkms.rewrap', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('regionkms_keys', OLD.key_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('regionkms_keys', NEW.key_id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION notify_iam_change() RETURNS trigger AS $$
BEGIN
    IF current_setting('regionkms.rewrap', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM nextval('iam_version');
    PERFORM pg_notify('regionkms_iam', TG_TABLE_NAME);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
