-- The attempt that delivered is kept on its delivery (status, latency and answer of the target),
-- not as a row of its own: one row fewer per delivery. delivery_attempts keeps the failed and
-- dead ones, and a delivered one when its delivery is redriven (so the history stays whole).
ALTER TABLE deliveries ADD COLUMN last_status INTEGER;
ALTER TABLE deliveries ADD COLUMN last_latency_ms REAL;
ALTER TABLE deliveries ADD COLUMN last_snippet TEXT;
