#!/usr/bin/env bash
# Installs and starts the real schedulers the scheduler tests drive: Slurm with slurmrestd,
# Podman's REST API and a Kubernetes API server with its job controller (built once from
# Debian's source package by .ci/build-kube.sh). Idempotent: what is installed is not installed
# again, what runs is not started again, a built Kubernetes is not rebuilt.
#
# Each scheduler that comes up writes its connection settings (URL, token, CA file) to
# $CATTERY_SCHEDULERS_DIR/<name>.env (default /tmp/cattery-schedulers), which the tests read.
# A scheduler that fails to start is reported; with CI set this script then fails, otherwise the
# tests of that scheduler skip with a printed reason. CATTERY_SCHEDULERS=none skips everything;
# CATTERY_SCHEDULERS="slurm podman" starts only those.
set -uo pipefail
cd "$(dirname "$0")/.."

WANTED=${CATTERY_SCHEDULERS:-slurm podman kube}
DIR=${CATTERY_SCHEDULERS_DIR:-/tmp/cattery-schedulers}
mkdir -p "$DIR"
failed=()

fail_or_skip() {
  if [ -n "${CI:-}" ]; then
    echo "start-schedulers: $1 (CI is set: this is a failure)" >&2
    exit 1
  fi
  echo "start-schedulers: $1; the real-scheduler tests will skip" >&2
  exit 0
}

[ "$WANTED" = none ] && fail_or_skip "CATTERY_SCHEDULERS=none"
[ "$(id -u)" -eq 0 ] || fail_or_skip "not root, cannot install or start the schedulers"
command -v apt-get >/dev/null || fail_or_skip "no apt-get on this machine"

step() {
  local name=$1 start
  shift
  start=$(date +%s)
  echo "== $name"
  if "$@"; then
    echo "== $name: ok in $(( $(date +%s) - start )) s"
  else
    echo "== $name: FAILED after $(( $(date +%s) - start )) s" >&2
    failed+=("$name")
  fi
}

# One apt transaction for every package that is missing.
packages=(curl openssl)
for s in $WANTED; do
  case "$s" in
    slurm) packages+=(slurm-wlm slurmrestd slurm-wlm-jwt-plugin munge) ;;
    podman) packages+=(podman runc conmon catatonit busybox-static) ;;
    kube) packages+=(etcd-server) ;;
    *) echo "start-schedulers: unknown scheduler '$s'" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  step "apt install ${missing[*]}" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null' apt "${missing[@]}"
fi

for s in $WANTED; do
  case "$s" in
    slurm) step slurm bash .ci/schedulers/slurm.sh start ;;
    podman) step podman bash .ci/schedulers/podman.sh start ;;
    kube)
      step "kubernetes build" bash .ci/build-kube.sh
      step kubernetes bash .ci/schedulers/kube.sh start ;;
  esac
done

if [ "${#failed[@]}" -gt 0 ]; then
  fail_or_skip "failed: ${failed[*]}"
fi
echo "start-schedulers: ready ($WANTED); settings in $DIR"
