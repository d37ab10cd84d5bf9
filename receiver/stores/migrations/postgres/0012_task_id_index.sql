-- Events by TaskId, indexed only where their task does not tell it. An event matched to a task
-- whose TaskId it carries (nearly every one) is found through events_by_task_ref, by way of the
-- task; the index by TaskId keeps the orphans, the events whose TaskId is not their task's, and
-- every row written before this migration (foreign_task_id NULL: not known). Each index keyed by
-- task costs a page of its own in nearly every commit (and a full-page image after a checkpoint).
--   foreign_task_id: 0 = the event's TaskId is its task's; 1 = it is not; NULL = not known.

ALTER TABLE events ADD COLUMN foreign_task_id integer;
DROP INDEX IF EXISTS events_by_task_id;
CREATE INDEX events_by_task_id ON events (task_id, seq) WHERE task_ref IS NULL OR foreign_task_id IS DISTINCT FROM 0;
