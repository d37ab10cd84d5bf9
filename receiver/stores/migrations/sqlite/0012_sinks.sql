-- Sinks operators trust. A batch that failed is retried whole: its members keep its id and size.
-- receiver's own operator events, one of a kind and subject per window; signature failures
-- counted per window by every process on the store; the trace each event came in with; ended
-- tasks found by when they ended (a digest is made of each).

ALTER TABLE deliveries ADD COLUMN batch_id TEXT;
ALTER TABLE deliveries ADD COLUMN batch_size INTEGER;
ALTER TABLE events ADD COLUMN traceparent TEXT;

CREATE TABLE operator_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,              -- sink_dead_letter | sink_gone | breaker_open | task_* | signature_failures
    subject      TEXT NOT NULL,              -- the sink, the task (our id) or the channel it is about
    window_start REAL NOT NULL,
    at           REAL NOT NULL,              -- when what it tells of happened
    detail       TEXT NOT NULL DEFAULT '{}', -- JSON
    event_seq    INTEGER REFERENCES events (seq),  -- its event, when operator sinks take it
    UNIQUE (kind, subject, window_start)
);

CREATE TABLE counters (
    name         TEXT NOT NULL,
    window_start REAL NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (name, window_start)
);

CREATE INDEX tasks_by_ended_at ON tasks (ended_at) WHERE ended_at IS NOT NULL;
