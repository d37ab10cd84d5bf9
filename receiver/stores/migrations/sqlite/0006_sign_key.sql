-- Which key verified an event's Sign: derived:N (the task's own key from master key N) or static:N.

ALTER TABLE events ADD COLUMN sign_key TEXT;
