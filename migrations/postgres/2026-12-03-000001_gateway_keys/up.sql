-- Gateway-wide keys, each sealed under the master key (re-sealed by `cattery keys rotate`):
-- `idempotency` keys the HMAC digests of submissions.
CREATE TABLE gateway_keys (
    name        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    sealed      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
