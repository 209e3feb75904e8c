#!/usr/bin/env bash
# Stops what .ci/start-schedulers.sh started (by pid file) and removes the settings files.
set -uo pipefail
cd "$(dirname "$0")/.."
bash .ci/schedulers/kube.sh stop
bash .ci/schedulers/podman.sh stop
bash .ci/schedulers/slurm.sh stop
