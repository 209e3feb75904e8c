-- A run's place among the queued runs of its tenant (fair share inside a pool): higher first.
ALTER TABLE runs ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
