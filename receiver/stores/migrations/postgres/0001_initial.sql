-- The whole schema as of SQLite migrations 0001-0004, plus the outbox lease for several replicas.

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    task_id         TEXT UNIQUE,
    session_id      TEXT NOT NULL DEFAULT '',
    session_context TEXT NOT NULL DEFAULT '',
    url             TEXT NOT NULL DEFAULT '',
    labels          TEXT NOT NULL DEFAULT '{}',
    state           TEXT NOT NULL,
    err_code        BIGINT,
    err_message     TEXT,
    event_count     BIGINT NOT NULL DEFAULT 0,
    late_count      BIGINT NOT NULL DEFAULT 0,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL,
    first_event_at  DOUBLE PRECISION,
    last_event_at   DOUBLE PRECISION,
    ended_at        DOUBLE PRECISION,
    request_id      TEXT,
    rowid           BIGSERIAL UNIQUE
);
CREATE INDEX tasks_by_session_context ON tasks (session_context) WHERE session_context <> '';
CREATE INDEX tasks_by_state ON tasks (state, created_at);

CREATE TABLE events (
    seq               BIGSERIAL PRIMARY KEY,
    event_id          TEXT NOT NULL UNIQUE,
    task_id           TEXT NOT NULL,
    task_ref          TEXT REFERENCES tasks (id),
    matched_by        TEXT,
    notification_type TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    session_context   TEXT NOT NULL,
    channel           TEXT NOT NULL,
    received_at       DOUBLE PRECISION NOT NULL,
    verdict           TEXT NOT NULL,
    late              BOOLEAN NOT NULL DEFAULT FALSE,
    err_code          BIGINT,
    err_message       TEXT,
    findings          TEXT NOT NULL,
    raw               TEXT NOT NULL,
    duplicates        BIGINT NOT NULL DEFAULT 0,
    last_duplicate_at DOUBLE PRECISION
);
CREATE INDEX events_by_task_ref ON events (task_ref, seq);
CREATE INDEX events_by_task_id ON events (task_id, seq);
CREATE INDEX events_by_type ON events (notification_type, seq);
CREATE INDEX events_by_received_at ON events (received_at);
CREATE INDEX orphans_by_session_context ON events (session_context) WHERE task_ref IS NULL;

CREATE TABLE quarantine (
    id          BIGSERIAL PRIMARY KEY,
    channel     TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    field       TEXT,
    body        BYTEA NOT NULL,
    meta        TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE deliveries (
    id              BIGSERIAL PRIMARY KEY,
    sink            TEXT NOT NULL,
    event_seq       BIGINT NOT NULL REFERENCES events (seq),
    task_key        TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error      TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL,
    delivered_at    DOUBLE PRECISION,
    lease_until     DOUBLE PRECISION,   -- a replica is delivering it until then
    UNIQUE (sink, event_seq)
);
CREATE INDEX deliveries_due ON deliveries (sink, id) WHERE state = 'pending';
CREATE INDEX deliveries_head ON deliveries (sink, task_key, id) WHERE state = 'pending';
CREATE INDEX deliveries_by_state ON deliveries (sink, state, id);

CREATE TABLE sink_state (
    sink        TEXT PRIMARY KEY,
    disabled_at DOUBLE PRECISION,
    reason      TEXT
);
