-- Store-wide leases: one holder at a time for the jobs a deployment must run once (the
-- dispatcher, maintenance, the reconciler), whatever the number of processes.

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
);
