-- The outbox: one delivery per (sink, event), written in the ingest transaction.

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,   -- order created = order received
    sink            TEXT NOT NULL,
    event_seq       INTEGER NOT NULL REFERENCES events (seq),
    task_key        TEXT NOT NULL,                       -- per-task ordering: our task id, or "mps:<TaskId>"
    state           TEXT NOT NULL,                       -- pending | delivered | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    delivered_at    REAL,
    UNIQUE (sink, event_seq)
);
CREATE INDEX deliveries_due ON deliveries (sink, id) WHERE state = 'pending';
CREATE INDEX deliveries_head ON deliveries (sink, task_key, id) WHERE state = 'pending';
CREATE INDEX deliveries_by_state ON deliveries (sink, state, id);

-- Sinks switched off by their target (HTTP 410 Gone) until re-enabled.
CREATE TABLE sink_state (
    sink        TEXT PRIMARY KEY,
    disabled_at REAL,
    reason      TEXT
);
