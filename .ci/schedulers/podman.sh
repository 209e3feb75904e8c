#!/usr/bin/env bash
# Podman 4.3 (Debian bookworm) REST API (libpod and Docker compatible) on http://127.0.0.1:8888,
# with a local image localhost/busybox:ci imported from busybox-static (no registry needed).
# Usage: podman.sh start|stop|restart|install. Needs root.
#   start    installs the packages when missing, writes /etc/containers/containers.conf, imports
#            the image, starts `podman system service` (unless it runs) and writes the connection
#            settings to $CATTERY_SCHEDULERS_DIR/podman.env (default /tmp/cattery-schedulers).
#   restart  stops and starts the API service; containers keep running under conmon.
#   stop     stops the service and removes every container it created.
set -euo pipefail
DIR=${CATTERY_SCHEDULERS_DIR:-/tmp/cattery-schedulers}
PORT=8888
URL=http://127.0.0.1:$PORT
PIDFILE=/run/cattery-podman-service.pid
IMAGE=localhost/busybox:ci
export DEBIAN_FRONTEND=noninteractive

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install() {
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v catatonit >/dev/null \
    || [ ! -x /bin/busybox ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends podman runc conmon catatonit busybox-static curl >/dev/null
  fi
}

configure() {
  # Under gVisor crun fails ("cgroups in hybrid mode not supported") and podman's default
  # rlimits (nofile=1048576, nproc=max) cannot be set: use runc and low rlimits. No network:
  # the jobs of the tests need none.
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  if ! podman image exists "$IMAGE"; then
    local root
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for applet in sh echo sleep cat ls env true false date tail head printf kill grep sed; do
      ln -s busybox "$root/bin/$applet"
    done
    tar -C "$root" -cf "$root.tar" .
    podman import --change 'ENV PATH=/bin' "$root.tar" "$IMAGE" >/dev/null
    rm -rf "$root" "$root.tar"
  fi
}

start_service() {
  if ! alive "$PIDFILE"; then
    # From /, so that the service never holds a working directory that a checkout deletes
    # (podman resolves its own working directory on every play kube).
    (cd / && exec setsid podman system service --time=0 "tcp:127.0.0.1:$PORT" \
      >>/var/log/cattery-podman-service.log 2>&1 </dev/null) &
    echo $! > "$PIDFILE"
  fi
  for _ in $(seq 1 80); do
    curl -sf "$URL/_ping" >/dev/null && return 0
    sleep 0.25
  done
  echo "podman: the API service did not answer on $URL" >&2
  tail -n 30 /var/log/cattery-podman-service.log >&2 || true
  return 1
}

stop_service() {
  [ -s "$PIDFILE" ] || return 0
  local pid
  pid=$(cat "$PIDFILE")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
}

write_env() {
  mkdir -p "$DIR"
  printf 'PODMAN_URL=%s\nPODMAN_IMAGE=%s\n' "$URL" "$IMAGE" > "$DIR/podman.env.tmp"
  mv "$DIR/podman.env.tmp" "$DIR/podman.env"
}

case "${1:-start}" in
  install) install ;;
  start)
    rm -f "$DIR/podman.env"
    install; configure; start_service; write_env
    echo "podman: API on $URL, image $IMAGE" ;;
  restart) stop_service; start_service ;;
  stop)
    rm -f "$DIR/podman.env"
    podman pod rm -af -t 0 >/dev/null 2>&1 || true
    podman rm -af -t 0 >/dev/null 2>&1 || true
    stop_service ;;
  *) echo "usage: $0 start|stop|restart|install" >&2; exit 2 ;;
esac
