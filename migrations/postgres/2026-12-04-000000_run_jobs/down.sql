ALTER TABLE runs ADD COLUMN job_sealed BYTEA;

UPDATE runs SET job_sealed = (SELECT run_jobs.job_sealed FROM run_jobs WHERE run_jobs.job_id = runs.job_id);

DROP TABLE run_jobs;
