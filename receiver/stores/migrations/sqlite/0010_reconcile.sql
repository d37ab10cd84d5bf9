-- Asking MPS about tasks (DescribeTaskDetail): the last answers (JSON, the last 20), when it was last
-- asked, when MPS last said it was live (a sign of life, as an event is), and when a reconcile ended it.

ALTER TABLE tasks ADD COLUMN checks TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN checked_at REAL;
ALTER TABLE tasks ADD COLUMN live_at REAL;
ALTER TABLE tasks ADD COLUMN reconciled_at REAL;
