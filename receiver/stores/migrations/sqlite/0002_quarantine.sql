-- Messages that can never be stored (not JSON, invalid, bad signature, too large), kept for inspection.

CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel     TEXT NOT NULL,
    received_at REAL NOT NULL,
    reason      TEXT NOT NULL,               -- invalid_notification | invalid_signature | too_large
    detail      TEXT NOT NULL,               -- what was wrong, as the error said it
    field       TEXT,                        -- the field at fault, when there is one
    body        BLOB NOT NULL,               -- the message as received
    meta        TEXT NOT NULL DEFAULT '{}'   -- JSON: message id, routing key, redelivery, ...
);
CREATE INDEX quarantine_by_received_at ON quarantine (received_at);
