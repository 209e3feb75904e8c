#!/usr/bin/env bash
# Starts the local PostgreSQL cluster when it is not answering on 127.0.0.1:5432 (idempotent).
set -euo pipefail
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  exit 0
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "PostgreSQL is not running on 127.0.0.1:5432 and no local cluster is installed" >&2
  exit 1
fi
version="$(ls /etc/postgresql | sort -V | tail -n 1)"
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 60); do
  if pg_isready -h 127.0.0.1 -p 5432 -q; then
    exit 0
  fi
  sleep 1
done
echo "PostgreSQL did not start on 127.0.0.1:5432" >&2
exit 1
