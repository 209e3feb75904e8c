#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test on SQLite and again on PostgreSQL.
# PostgreSQL must be reachable at TEST_PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres);
# when it is not running and this machine has a local cluster, it is started.
# The real schedulers of the scheduler tests (Slurm, Podman, Kubernetes) are installed and started
# by .ci/start-schedulers.sh (as root; see the README): where they cannot start, their tests skip
# with a printed reason, unless CI is set, which makes that a failure. CATTERY_SCHEDULERS=none
# skips starting them.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL="${TEST_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
JOBS="${CARGO_BUILD_JOBS:-2}"

bash scripts/start-postgres.sh

echo "== schedulers"
bash .ci/start-schedulers.sh

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy -j"$JOBS" --all-targets -- -D warnings

echo "== tests on SQLite"
env -u TEST_DATABASE_URL cargo test -j"$JOBS"

echo "== tests on PostgreSQL ($PG_URL)"
TEST_DATABASE_URL="$PG_URL" cargo test -j"$JOBS"
