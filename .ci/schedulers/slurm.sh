#!/usr/bin/env bash
# Single-node Slurm 22.05 (Debian bookworm) with slurmrestd on http://127.0.0.1:6820, JWT auth.
# Usage: slurm.sh start|stop|restart|install. Needs root.
#   start    installs the packages when missing, starts munge, slurmctld, slurmd and slurmrestd
#            (each only when it is not running yet) and writes the connection settings to
#            $CATTERY_SCHEDULERS_DIR/slurm.env (default /tmp/cattery-schedulers).
#   restart  stops and starts slurmctld and slurmrestd (the controller and its REST API); the
#            jobs keep running in slurmd and slurmctld recovers them from its state files.
#   stop     stops every daemon start started, by pid file.
set -euo pipefail
# Daemons started here must not hold a checkout's directory as their working directory.
cd /
DIR=${CATTERY_SCHEDULERS_DIR:-/tmp/cattery-schedulers}
PORT=6820
URL=http://127.0.0.1:$PORT
SPOOL=/var/spool/slurmctld
export DEBIAN_FRONTEND=noninteractive

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() {
  local file=$1 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

install() {
  if [ ! -x /usr/sbin/slurmrestd ] || [ ! -x /usr/sbin/munged ] \
    || ! ls /usr/lib/*/slurm-wlm/auth_jwt.so >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmrestd slurm-wlm-jwt-plugin munge curl >/dev/null
  fi
}

configure() {
  local node cpus
  node=$(hostname -s); cpus=$(nproc)
  mkdir -p "$SPOOL" /var/spool/slurmd /var/log/slurm /run/munge /etc/slurm
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$SPOOL/jwt_hs256.key
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SPOOL
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
MinJobAge=3600
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
CONF
  if [ ! -s "$SPOOL/jwt_hs256.key" ]; then
    dd if=/dev/urandom of="$SPOOL/jwt_hs256.key" bs=32 count=1 2>/dev/null
    chmod 600 "$SPOOL/jwt_hs256.key"
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --force
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
  fi
  chown munge:munge /run/munge
}

start_daemons() {
  munge -n >/dev/null 2>&1 || runuser -u munge -- /usr/sbin/munged
  alive /run/slurmctld.pid || /usr/sbin/slurmctld -i   # -i: skip state that cannot be recovered
  alive /run/slurmd.pid || /usr/sbin/slurmd
  if ! alive /run/slurmrestd.pid; then
    # slurmrestd refuses to run as root: -u drops to user slurm after binding.
    SLURM_JWT=daemon setsid /usr/sbin/slurmrestd -a rest_auth/jwt -u slurm \
      -s openapi/v0.0.38,openapi/v0.0.37 127.0.0.1:$PORT \
      >>/var/log/slurm/slurmrestd.log 2>&1 </dev/null &
    echo $! > /run/slurmrestd.pid
  fi
}

wait_ready() {
  for _ in $(seq 1 120); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' \
      && curl -s -o /dev/null "$URL/"; then
      return 0
    fi
    sleep 0.5
  done
  echo "slurm: the node or slurmrestd did not come up" >&2
  tail -n 20 /var/log/slurm/*.log >&2 || true
  return 1
}

write_env() {
  local token
  token=$(scontrol token username=root lifespan=86400 | sed -n 's/^SLURM_JWT=//p')
  [ -n "$token" ] || { echo "slurm: scontrol token printed no token" >&2; return 1; }
  mkdir -p "$DIR"
  umask 077
  printf 'SLURM_URL=%s\nSLURM_USER=root\nSLURM_JWT=%s\nSLURM_PARTITION=debug\n' "$URL" "$token" \
    > "$DIR/slurm.env.tmp"
  mv "$DIR/slurm.env.tmp" "$DIR/slurm.env"
}

case "${1:-start}" in
  install) install ;;
  start)
    rm -f "$DIR/slurm.env"
    install; configure; start_daemons; wait_ready; write_env
    echo "slurm: slurmrestd on $URL" ;;
  restart)
    stop_pid /run/slurmrestd.pid
    stop_pid /run/slurmctld.pid
    start_daemons; wait_ready ;;
  stop)
    rm -f "$DIR/slurm.env"
    for f in /run/slurmrestd.pid /run/slurmd.pid /run/slurmctld.pid; do stop_pid "$f"; done
    stop_pid /run/munge/munged.pid ;;
  *) echo "usage: $0 start|stop|restart|install" >&2; exit 2 ;;
esac
