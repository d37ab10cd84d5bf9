-- What the operator console reads beyond the ingest tables: notification outcomes per minute
-- (every process adds its own), each delivery attempt, and the columns the event filters search,
-- derived from the findings at ingest (the documents stay text: jsonb refuses \u0000).

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE ingest_counts (
    minute  BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (minute, outcome)
);

CREATE TABLE delivery_attempts (
    id          BIGSERIAL PRIMARY KEY,
    delivery_id BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    status      INTEGER,
    latency_ms  DOUBLE PRECISION,
    snippet     TEXT
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, id);

CREATE TABLE event_search (
    seq               BIGINT PRIMARY KEY,
    notification_type TEXT NOT NULL,
    received_at       DOUBLE PRECISION NOT NULL,
    kinds             TEXT NOT NULL,
    labels            TEXT NOT NULL,
    suggestions       TEXT NOT NULL,
    confidence        DOUBLE PRECISION,
    text              TEXT NOT NULL
);
-- Substrings of three characters or more found through trigrams (CJK included); shorter ones scan.
CREATE INDEX event_search_text ON event_search USING gin (text gin_trgm_ops) WHERE text <> '';

-- The events stored before this migration get their search rows from the maintenance loop,
-- newest first, down from here.
CREATE TABLE search_backfill (upto BIGINT NOT NULL);
INSERT INTO search_backfill (upto) SELECT coalesce(max(seq), 0) FROM events;

CREATE INDEX deliveries_by_task ON deliveries (task_key, id);
