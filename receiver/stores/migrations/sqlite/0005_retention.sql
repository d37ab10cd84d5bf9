-- Quarantined bodies are kept cut to 64 KiB, with the whole body's sha256 and size; retention
-- asks which events a pending or dead delivery still needs.

ALTER TABLE quarantine ADD COLUMN body_sha256 TEXT;
ALTER TABLE quarantine ADD COLUMN body_size INTEGER;
CREATE INDEX deliveries_undelivered_by_event ON deliveries (event_seq) WHERE state <> 'delivered';
