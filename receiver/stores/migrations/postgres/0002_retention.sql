-- Quarantined bodies are kept cut to 64 KiB, with the whole body's sha256 and size, and purged by
-- age; retention asks which events a pending or dead delivery still needs.

ALTER TABLE quarantine ADD COLUMN body_sha256 TEXT;
ALTER TABLE quarantine ADD COLUMN body_size BIGINT;
CREATE INDEX quarantine_by_received_at ON quarantine (received_at);
CREATE INDEX deliveries_undelivered_by_event ON deliveries (event_seq) WHERE state <> 'delivered';
