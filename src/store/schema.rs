//! The diesel table definitions, written by hand to match `migrations/` (there is no diesel CLI here).
//!
//! `runs` is not declared: it has 36 columns, and diesel without its `64-column-tables` feature
//! declares at most 16 per `table!`. `store/runs.rs` reaches it with raw SQL whose column list
//! lives in one constant there, checked on both backends by the round-trip tests.

diesel::table! {
    /// Registered pools.
    pools (name) {
        /// The pool name.
        name -> Text,
        /// Manifest revision, from 1.
        revision -> BigInt,
        /// SHA-256 of the canonical manifest.
        digest -> Text,
        /// `cattery/v1` or `cat-factory`.
        format -> Text,
        /// The manifest, JSON text.
        manifest -> Text,
        /// The sealed secret bundle.
        secrets_sealed -> Binary,
        /// The bundle's keys, a JSON array.
        secret_keys -> Text,
        /// Registration warnings, JSON text.
        warnings -> Text,
        /// Epoch milliseconds.
        created_at -> BigInt,
        /// Epoch milliseconds.
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// The append-only history of runs.
    run_events (seq) {
        /// Global sequence number, strictly increasing in commit order.
        seq -> BigInt,
        /// The run.
        job_id -> Text,
        /// The run's pool.
        pool -> Text,
        /// Epoch milliseconds.
        at -> BigInt,
        /// Event kind.
        kind -> Text,
        /// State before, for transitions.
        from_state -> Nullable<Text>,
        /// State after, for transitions.
        to_state -> Nullable<Text>,
        /// Operator-facing text.
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    /// Gateway-wide keys, sealed under the master key.
    gateway_keys (name) {
        /// What the key is for (`idempotency`).
        name -> Text,
        /// The key's envelope.
        sealed -> Binary,
        /// Epoch milliseconds.
        created_at -> BigInt,
    }
}

diesel::table! {
    /// The sealed job bodies of the runs that still need one (a run without a body has no row).
    run_jobs (job_id) {
        /// The run.
        job_id -> Text,
        /// The job body's envelope.
        job_sealed -> Binary,
    }
}
