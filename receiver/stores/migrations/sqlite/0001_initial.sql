-- Events (deduplicated by the derived event_id) and tasks, as of the ingest core.

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,              -- ours: a task being submitted has no TaskId yet
    task_id         TEXT UNIQUE,                   -- MPS TaskId
    session_id      TEXT NOT NULL DEFAULT '',
    session_context TEXT NOT NULL DEFAULT '',
    url             TEXT NOT NULL DEFAULT '',
    labels          TEXT NOT NULL DEFAULT '{}',    -- JSON object
    state           TEXT NOT NULL,
    err_code        INTEGER,
    err_message     TEXT,
    event_count     INTEGER NOT NULL DEFAULT 0,
    late_count      INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    first_event_at  REAL,
    last_event_at   REAL,
    ended_at        REAL
);
CREATE INDEX tasks_by_session_context ON tasks (session_context) WHERE session_context <> '';
CREATE INDEX tasks_by_state ON tasks (state, created_at);

CREATE TABLE events (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,  -- order received
    event_id          TEXT NOT NULL UNIQUE,
    task_id           TEXT NOT NULL,                      -- MPS TaskId the notification carries
    task_ref          TEXT REFERENCES tasks (id),         -- NULL while an orphan
    matched_by        TEXT,
    notification_type TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    session_context   TEXT NOT NULL,
    channel           TEXT NOT NULL,
    received_at       REAL NOT NULL,
    verdict           TEXT NOT NULL,
    late              INTEGER NOT NULL DEFAULT 0,
    err_code          INTEGER,
    err_message       TEXT,
    findings          TEXT NOT NULL,                      -- JSON array
    raw               TEXT NOT NULL,                      -- JSON object, as received (unwrapped)
    duplicates        INTEGER NOT NULL DEFAULT 0,
    last_duplicate_at REAL
);
CREATE INDEX events_by_task_ref ON events (task_ref, seq);
CREATE INDEX events_by_task_id ON events (task_id, seq);
CREATE INDEX events_by_type ON events (notification_type, seq);
CREATE INDEX events_by_received_at ON events (received_at);
CREATE INDEX orphans_by_session_context ON events (session_context) WHERE task_ref IS NULL;
