#!/usr/bin/env bash
# Database bytes per finished run (SQLite): N sample jobs on the built-in local pool, run to the
# end and released, then the file's size after VACUUM divided by N. Needs sqlite3 and curl.
# usage: benches/db_size_per_run.sh BIN N
set -euo pipefail
bin=$1; n=$2
dir=$(mktemp -d); trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 20000))
export CATTERY__DATADIR=$dir CATTERY_BIND=127.0.0.1:$port CATTERY__LOGGING__LEVEL=warn CATTERY_ADMIN_TOKEN=admin-token-for-size-measure
"$bin" serve >"$dir/log" 2>&1 & pid=$!
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.05; done
auth="Authorization: Bearer $CATTERY_ADMIN_TOKEN"
for i in $(seq 1 "$n"); do
  curl -sf -o /dev/null -H "$auth" -H 'content-type: application/json' \
    -d "{\"jobId\":\"size-$i\",\"job\":{\"steps\":2,\"stepMs\":1}}" "http://127.0.0.1:$port/v1/pools/local/runs"
done
until [ "$(sqlite3 "$dir/cattery.db" "SELECT COUNT(*) FROM runs WHERE state IN ('done','failed','cancelled') AND release_state <> 'pending'")" = "$n" ]; do sleep 0.5; done
kill -TERM $pid; wait $pid || true
sqlite3 "$dir/cattery.db" "VACUUM"
bytes=$(stat -c %s "$dir/cattery.db")
echo "runs=$n events=$(sqlite3 "$dir/cattery.db" 'SELECT COUNT(*) FROM run_events') bodies=$(sqlite3 "$dir/cattery.db" 'SELECT COUNT(*) FROM run_jobs') states=$(sqlite3 "$dir/cattery.db" "SELECT group_concat(state || ':' || n) FROM (SELECT state, COUNT(*) n FROM runs GROUP BY state)") bytes=$bytes per_run=$((bytes / n))"
