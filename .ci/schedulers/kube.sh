#!/usr/bin/env bash
# etcd (Debian) + kube-apiserver v1.20.2 on https://127.0.0.1:6443 + kube-controller-manager
# (the job and garbage-collector controllers: Jobs get Pods; Pods stay Pending, since there is
# no scheduler or kubelet). The binaries come from .ci/build-kube.sh.
# Usage: kube.sh start|stop|restart|install. Needs root.
#   start    creates a CA and a serving certificate for 127.0.0.1 and a random bearer token
#            (system:masters) once, starts whatever is not running and writes the connection
#            settings to $CATTERY_SCHEDULERS_DIR/kube.env (default /tmp/cattery-schedulers).
#   restart  stops and starts kube-apiserver; etcd and the controller manager keep running.
#   stop     stops the three processes, by pid file.
set -euo pipefail
# Daemons started here must not hold a checkout's directory as their working directory.
cd /
BIN=${CATTERY_KUBE_DIR:-/opt/cattery-kube}
D=${CATTERY_KUBE_DATA:-/var/lib/cattery-kube}
DIR=${CATTERY_SCHEDULERS_DIR:-/tmp/cattery-schedulers}
URL=https://127.0.0.1:6443
export DEBIAN_FRONTEND=noninteractive

alive() { [ -s "$D/$1.pid" ] && kill -0 "$(cat "$D/$1.pid")" 2>/dev/null; }

stop_one() {
  local file=$D/$1.pid pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

install() {
  if ! command -v etcd >/dev/null || ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends etcd-server openssl curl >/dev/null
  fi
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] || {
    echo "kube: $BIN has no kube-apiserver; run .ci/build-kube.sh first" >&2
    return 1
  }
}

configure() {
  mkdir -p "$D/certs"
  chmod 700 "$D"
  [ -s "$D/sa.key" ] || openssl genrsa -out "$D/sa.key" 2048 2>/dev/null
  if [ ! -s "$D/certs/ca.crt" ] || [ ! -s "$D/certs/apiserver.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=cattery-ci-kube-ca" \
      -keyout "$D/certs/ca.key" -out "$D/certs/ca.crt" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
      -keyout "$D/certs/apiserver.key" -out "$D/certs/apiserver.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
      > "$D/certs/apiserver.ext"
    openssl x509 -req -in "$D/certs/apiserver.csr" -CA "$D/certs/ca.crt" -CAkey "$D/certs/ca.key" \
      -CAcreateserial -days 3650 -extfile "$D/certs/apiserver.ext" -out "$D/certs/apiserver.crt" \
      2>/dev/null
  fi
  if [ ! -s "$D/token" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$D/token")
  fi
  printf '%s,cattery-ci-admin,1000,"system:masters"\n' "$(cat "$D/token")" > "$D/tokens.csv"
  chmod 600 "$D/tokens.csv"
  cat > "$D/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: ci, cluster: {server: "$URL", certificate-authority: "$D/certs/ca.crt"}}]
users: [{name: ci, user: {token: "$(cat "$D/token")"}}]
contexts: [{name: ci, context: {cluster: ci, user: ci}}]
current-context: ci
KC
  chmod 600 "$D/kubeconfig"
}

start_etcd() {
  alive etcd && return 0
  setsid etcd --data-dir "$D/etcd" --name default \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380 >>"$D/etcd.log" 2>&1 </dev/null &
  echo $! > "$D/etcd.pid"
  for _ in $(seq 1 80); do curl -sf http://127.0.0.1:2379/health >/dev/null && return 0; sleep 0.25; done
  echo "kube: etcd did not become healthy" >&2; tail -n 20 "$D/etcd.log" >&2; return 1
}

start_apiserver() {
  if ! alive kube-apiserver; then
    setsid "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=6443 \
      --tls-cert-file="$D/certs/apiserver.crt" --tls-private-key-file="$D/certs/apiserver.key" \
      --token-auth-file="$D/tokens.csv" --authorization-mode=RBAC \
      --service-account-key-file="$D/sa.key" --service-account-signing-key-file="$D/sa.key" \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-cluster-ip-range=10.96.0.0/24 --endpoint-reconciler-type=none \
      --disable-admission-plugins=ServiceAccount --enable-priority-and-fairness=false \
      >>"$D/kube-apiserver.log" 2>&1 </dev/null &
    echo $! > "$D/kube-apiserver.pid"
  fi
  for _ in $(seq 1 240); do
    curl -sf --cacert "$D/certs/ca.crt" -H "Authorization: Bearer $(cat "$D/token")" "$URL/readyz" >/dev/null \
      && return 0
    sleep 0.5
  done
  echo "kube: kube-apiserver did not become ready" >&2; tail -n 30 "$D/kube-apiserver.log" >&2; return 1
}

start_controller_manager() {
  alive kube-controller-manager && return 0
  setsid "$BIN/kube-controller-manager" --kubeconfig="$D/kubeconfig" \
    --authentication-kubeconfig="$D/kubeconfig" --authorization-kubeconfig="$D/kubeconfig" \
    --controllers=job,garbagecollector,namespace,ttl-after-finished --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port=10257 --port=0 --use-service-account-credentials=false \
    >>"$D/kube-controller-manager.log" 2>&1 </dev/null &
  echo $! > "$D/kube-controller-manager.pid"
}

write_env() {
  mkdir -p "$DIR"
  (umask 077
   printf 'KUBE_URL=%s\nKUBE_TOKEN=%s\nKUBE_CA_FILE=%s\nKUBE_NAMESPACE=default\n' \
     "$URL" "$(cat "$D/token")" "$D/certs/ca.crt" > "$DIR/kube.env.tmp")
  mv "$DIR/kube.env.tmp" "$DIR/kube.env"
}

case "${1:-start}" in
  install) install ;;
  start)
    rm -f "$DIR/kube.env"
    install; configure; start_etcd; start_apiserver; start_controller_manager; write_env
    echo "kube: kube-apiserver on $URL" ;;
  restart) stop_one kube-apiserver; start_apiserver ;;
  stop)
    rm -f "$DIR/kube.env"
    for p in kube-controller-manager kube-apiserver etcd; do stop_one "$p"; done ;;
  *) echo "usage: $0 start|stop|restart|install" >&2; exit 2 ;;
esac
