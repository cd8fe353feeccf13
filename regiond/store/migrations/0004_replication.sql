-- Replication (DESIGN section 8): the transactional outbox, the sender cursors, the receiver's
-- per-source applied sequence numbers, and the primary epochs of multi-region keys.
--
-- Sequence numbers are per (source region, destination region) and contiguous (1, 2, 3, ...).
-- The counter row of a destination is locked by the appending transaction until it commits,
-- so entries for one destination become visible in exactly their sequence order: a sender
-- reading "seq > cursor" can never skip an entry whose transaction committed late.

CREATE TABLE replication_dest_seq (
    dest      text PRIMARY KEY,
    last_seq  bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);

-- One row per (destination, seq). body is the non-secret snapshot of the change (JSON);
-- key material and access-key secrets are never stored here, not even sealed: the sender
-- reads them from their own tables at send time and seals them to the destination (HPKE).
-- Single-region keys never appear: the CHECK backs up the refusal in store/outbox.py.
CREATE TABLE replication_outbox (
    dest        text NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 1),
    kind        text NOT NULL,
    epoch       bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    key_id      text CHECK (key_id IS NULL OR key_id ~ '^mrk-[0-9a-f]{32}$'),
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dest, seq)
);

-- Sender side: how far each destination has acknowledged (persisted, so a restart resumes).
CREATE TABLE replication_cursors (
    dest          text PRIMARY KEY,
    acked_seq     bigint NOT NULL DEFAULT 0 CHECK (acked_seq >= 0),
    sent_seq      bigint NOT NULL DEFAULT 0 CHECK (sent_seq >= 0),
    last_ack_at   timestamptz,
    last_error    text,
    last_error_at timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Receiver side: the last sequence number applied from each source. It is updated in the same
-- transaction as the change it records, so an entry is applied exactly once.
CREATE TABLE replication_inbound (
    source           text PRIMARY KEY,
    applied_seq      bigint NOT NULL DEFAULT 0 CHECK (applied_seq >= 0),
    applied_at       timestamptz,
    refused_count    bigint NOT NULL DEFAULT 0,
    last_refusal     text,
    last_refusal_at  timestamptz
);

-- The primary epoch of each multi-region key held here: 1 at creation, +1 per primary move.
-- Shared-property writes carry the writer's epoch; older epochs are refused (replication/apply.py).
CREATE TABLE mrk_epochs (
    key_id  text PRIMARY KEY REFERENCES keys ON DELETE CASCADE CHECK (key_id ~ '^mrk-[0-9a-f]{32}$'),
    epoch   bigint NOT NULL CHECK (epoch >= 1)
);

-- Wake the sender of a destination as soon as an entry for it commits (payload: destination).
CREATE OR REPLACE FUNCTION notify_outbox() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('regionkms_outbox', NEW.dest);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER replication_outbox_notify AFTER INSERT ON replication_outbox
    FOR EACH ROW EXECUTE FUNCTION notify_outbox();
