#!/usr/bin/env bash
# Time from `cattery serve` to `/readyz` on a SQLite database holding FINISHED finished runs (and
# nothing else to resume), three starts in a row. Needs the sqlite3 command-line shell and curl.
# usage: benches/start_with_finished_runs.sh BIN FINISHED
set -euo pipefail
bin=$1; n=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export CATTERY__DATADIR=$dir CATTERY__LOCALPOOL__ENABLED=false CATTERY__LOGGING__LEVEL=warn CATTERY_MASTER_KEY=$(head -c32 /dev/urandom | base64) CATTERY_ADMIN_TOKEN=admin-token-for-recovery-measure
port=$((20000 + RANDOM % 20000))
export CATTERY_BIND=127.0.0.1:$port
start() {
  t0=$(date +%s%N)
  "$bin" serve >"$dir/log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.002; done
  t1=$(date +%s%N)
  took=$(( (t1 - t0) / 1000000 ))
}
start; kill -TERM $pid; wait $pid || true
sqlite3 "$dir/cattery.db" "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < $n)
INSERT INTO runs (job_id, pool, labels, request_digest, state, dispatch_id, captures, release_state, poll_interval_ms, manifest_revision, created_at, updated_at, finished_at)
SELECT 'done-' || i, 'p', '{}', 'digest-' || i, 'done', 'done-' || i, '{}', 'done', 1000, 1, i, i, i FROM c;"
ms=()
for k in 1 2 3; do start; ms+=($took); kill -TERM $pid; wait $pid || true; done
echo "$(basename $bin) finished=$n ready_ms=${ms[*]} db_mb=$(du -m $dir/cattery.db | cut -f1)"
