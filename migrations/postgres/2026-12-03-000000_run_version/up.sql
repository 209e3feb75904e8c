-- The row version of a run: how many commits it has seen. A commit names the version it was
-- derived from and is refused when the row has moved on, so a stale writer cannot overwrite a
-- newer state.
ALTER TABLE runs ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
