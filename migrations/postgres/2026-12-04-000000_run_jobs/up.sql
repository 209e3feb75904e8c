-- Sealed job bodies move out of `runs` into a table of their own. A body is a few kilobytes of
-- ciphertext, written once when the run is created and dropped when the run no longer needs it,
-- while the run's row is rewritten by every state change: kept in `runs`, every change rewrote
-- the body with it. A run without a body has no row here.
CREATE TABLE run_jobs (
    job_id      TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES runs (job_id) ON DELETE CASCADE,
    job_sealed  BYTEA NOT NULL
);

INSERT INTO run_jobs (job_id, job_sealed)
SELECT job_id, job_sealed FROM runs WHERE job_sealed IS NOT NULL;

ALTER TABLE runs DROP COLUMN job_sealed;
