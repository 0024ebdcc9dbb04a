-- When a retried attempt's next attempt is due, as the dispatcher drew it (its outcome's
-- `retry_at`), so the queue can say when a job waiting for a retry goes out again.
ALTER TABLE deliveries ADD COLUMN retry_at TIMESTAMPTZ;
