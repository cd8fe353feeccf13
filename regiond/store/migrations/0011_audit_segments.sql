-- Audit trail v2 (issue 15; docs/AUDIT.md, "Storage: segments, one chain per writer").
--
-- The unit of durable write is a segment: one row per group-commit batch holding its records
-- (regiond.audit.segment: canonical JSON lines), its time bounds and the hash that links it to the
-- previous segment of the same writer. A writer is one worker process, with a writer id it makes
-- when it starts and registers here; it computes its chain itself and writes each batch with one
-- INSERT and one synchronous commit. No pending table, no procedure, no lock shared between writers
-- or nodes.
--
-- The v1 chain (audit_events, one row per event, one chain per region under a row lock) is closed
-- in place: the events stay where they are and stay verifiable as a closed legacy chain (regiond
-- audit verify checks it with the v1 rules). This migration prepares the closing; the first v2
-- writer of the region closes it when it starts (regiond.store.audit_segments.close_v1_chains), so
-- `regiond migrate` may run ahead of the upgrade while nodes of the previous release still serve:
--   * audit_chain_head gains closed_seq / closed_at (NULL: still open).
--   * Triggers refuse every v1 write into a closed chain: an event appended past closed_seq (nodes
--     of the previous release, through audit_append_durable) and any row staged into audit_pending
--     (nodes two releases old; the trigger waits on the head row, so a stage racing the closing is
--     either linked by it or refused after it). Such a node's call fails closed (its committer
--     answers KMSInternalException and reports itself unready): nothing it acknowledges is lost.
--     Rows at or below closed_seq are not refused (no v1 writer can produce one; it keeps tampering
--     tests of the legacy chain possible, and verify reports any such row).
-- The procedures of 0003/0007/0008 stay: a node of the previous release calling them gets the
-- triggers' message naming the upgrade, where a missing function would only say "does not exist".

-- --- v2: writers and segments (docs/AUDIT.md; written and read through regiond.store.audit_segments)

CREATE TABLE audit_writers (
    writer_id  uuid PRIMARY KEY,           -- made by a worker process when it starts
    node       text NOT NULL,              -- the node's id (hostname or configured node id)
    pid        integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    genesis    bytea NOT NULL              -- segment.writer_genesis(region, writer_id)
);
CREATE TABLE audit_segments (
    writer_id    uuid NOT NULL,            -- no FK (cost per insert); verify checks it
    seq          bigint NOT NULL CHECK (seq >= 1),
    first_time   timestamptz NOT NULL,     -- min eventTime of the records
    last_time    timestamptz NOT NULL,     -- max eventTime of the records
    record_count integer NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL,           -- segment.segment_hash(prev_hash, writer_id, seq, count, body)
    body         bytea NOT NULL,           -- segment.encode(records)
    PRIMARY KEY (writer_id, seq)
);
-- The body is written once and read whole: no compression attempt on the hot path (JSON lines of
-- events compress, but pglz costs CPU per insert and the body is usually small enough to stay inline).
ALTER TABLE audit_segments ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE INDEX audit_segments_time ON audit_segments (last_time);

-- --- v1: prepare the closing of the legacy chain

ALTER TABLE audit_chain_head ADD COLUMN closed_seq bigint, ADD COLUMN closed_at timestamptz;

CREATE FUNCTION audit_v1_closed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    c bigint;
BEGIN
    IF TG_TABLE_NAME = 'audit_pending' THEN
        -- FOR SHARE: waits for a closing in progress (it holds the row FOR UPDATE) and then sees it.
        SELECT h.closed_seq INTO c FROM audit_chain_head h WHERE h.region = NEW.region FOR SHARE;
        IF c IS NOT NULL THEN
            RAISE EXCEPTION 'the v1 audit trail of region % was closed by the upgrade to audit trail v2:'
                ' this node must be upgraded', NEW.region USING ERRCODE = 'feature_not_supported';
        END IF;
        RETURN NEW;
    END IF;
    -- audit_events: a v1 append holds the head row lock already.
    SELECT h.closed_seq INTO c FROM audit_chain_head h WHERE h.region = NEW.region;
    IF c IS NOT NULL AND NEW.seq > c THEN
        RAISE EXCEPTION 'the v1 audit chain of region % was closed at event % by the upgrade to audit trail v2:'
            ' this node must be upgraded', NEW.region, c USING ERRCODE = 'feature_not_supported';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_v1_closed BEFORE INSERT ON audit_pending FOR EACH ROW EXECUTE FUNCTION audit_v1_closed();
CREATE TRIGGER audit_v1_closed BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_v1_closed();
