-- Pools, runs and run events (SQLite). Times are epoch milliseconds; JSON is stored as text.

CREATE TABLE pools (
    name            TEXT PRIMARY KEY NOT NULL,
    revision        BIGINT NOT NULL,
    digest          TEXT NOT NULL,
    format          TEXT NOT NULL,
    manifest        TEXT NOT NULL,
    secrets_sealed  BLOB NOT NULL,
    secret_keys     TEXT NOT NULL,
    warnings        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- No foreign key to pools: a deleted pool's finished runs stay readable.
CREATE TABLE runs (
    job_id               TEXT PRIMARY KEY NOT NULL,
    pool                 TEXT NOT NULL,
    kind                 TEXT,
    labels               TEXT NOT NULL,
    request_digest       TEXT NOT NULL,
    job_sealed           BLOB,
    deadline_at          BIGINT,
    callback_url         TEXT,
    state                TEXT NOT NULL,
    scheduler_state      TEXT,
    external_id          TEXT,
    dispatch_id          TEXT NOT NULL,
    captures             TEXT NOT NULL,
    progress             TEXT,
    result               TEXT,
    error                TEXT,
    failure_cause        TEXT,
    detail               TEXT,
    heartbeat_at         TEXT,
    cancel_requested     BOOLEAN NOT NULL DEFAULT 0,
    release_state        TEXT NOT NULL,
    attempts_dispatch    BIGINT NOT NULL DEFAULT 0,
    attempts_poll        BIGINT NOT NULL DEFAULT 0,
    attempts_release     BIGINT NOT NULL DEFAULT 0,
    attempts_redispatch  BIGINT NOT NULL DEFAULT 0,
    poll_errors          BIGINT NOT NULL DEFAULT 0,
    poll_interval_ms     BIGINT NOT NULL,
    next_at              BIGINT,
    unmapped_seen        BOOLEAN NOT NULL DEFAULT 0,
    manifest_revision    BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    dispatched_at        BIGINT,
    finished_at          BIGINT,
    updated_at           BIGINT NOT NULL
);

CREATE INDEX runs_pool_state ON runs (pool, state);
CREATE INDEX runs_state ON runs (state);
CREATE INDEX runs_created ON runs (created_at, job_id);
CREATE INDEX runs_pool_created ON runs (pool, created_at, job_id);

-- AUTOINCREMENT: sequence numbers are never reused, even after the newest row is deleted.
CREATE TABLE run_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL REFERENCES runs (job_id) ON DELETE CASCADE,
    pool        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT,
    detail      TEXT
);

CREATE INDEX run_events_job ON run_events (job_id, seq);
CREATE INDEX run_events_pool ON run_events (pool, seq);
