-- The runs a starting gateway must load: unfinished, or finished with a release pending, and rows
-- whose state words are unknown (reported as corrupt). A partial index holds only those, in load
-- order, so a start reads them without scanning the finished runs, however many the database
-- keeps. Its condition is the one the load uses, word for word (`store::runs::NEEDS_WORK`).
CREATE INDEX runs_needing_work ON runs (created_at, job_id)
WHERE (state IN ('queued', 'dispatching', 'pending', 'running') OR release_state = 'pending' OR state NOT IN ('queued', 'dispatching', 'pending', 'running', 'done', 'failed', 'cancelled') OR release_state NOT IN ('not_yet', 'pending', 'done', 'gave_up', 'not_needed'));
