-- What the operator console reads beyond the ingest tables: notification outcomes per minute
-- (every process adds its own), each delivery attempt, and the columns the event filters search,
-- derived from the findings at ingest (the documents stay as they are, text).

CREATE TABLE ingest_counts (
    minute  INTEGER NOT NULL,            -- unix minute (seconds // 60)
    outcome TEXT NOT NULL,               -- stored | duplicate | invalid | unauthorized | unavailable | ...
    n       INTEGER NOT NULL,
    PRIMARY KEY (minute, outcome)
) WITHOUT ROWID;

CREATE TABLE delivery_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,        -- 1 for the first
    at          REAL NOT NULL,
    outcome     TEXT NOT NULL,           -- delivered | failed | dead
    error       TEXT,                    -- the sink's error, as last_error has it
    status      INTEGER,                 -- the target's HTTP status, when there was one
    latency_ms  REAL,
    snippet     TEXT                     -- the first bytes of the target's answer
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, id);

-- One row per event that has findings; '|'-delimited sets, the highest confidence, and the
-- recognized text (ASR, OCR, translation, subtitles) lower-cased.
CREATE TABLE event_search (
    seq               INTEGER PRIMARY KEY,   -- events.seq
    notification_type TEXT NOT NULL,
    received_at       REAL NOT NULL,
    kinds             TEXT NOT NULL,
    labels            TEXT NOT NULL,
    suggestions       TEXT NOT NULL,
    confidence        REAL,
    text              TEXT NOT NULL
);

-- The events stored before this migration get their search rows from the maintenance loop,
-- newest first, down from here.
CREATE TABLE search_backfill (upto INTEGER NOT NULL);
INSERT INTO search_backfill (upto) SELECT coalesce(max(seq), 0) FROM events;

-- The outbox by task: a task's deliveries, and the deliveries filtered by TaskId.
CREATE INDEX deliveries_by_task ON deliveries (task_key, id);
