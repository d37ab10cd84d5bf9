-- Tasks submitted through receiver: the RequestId of the ProcessLiveStream call.

ALTER TABLE tasks ADD COLUMN request_id TEXT;
