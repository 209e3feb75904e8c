#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager v1.20.2 from Debian bookworm's own
# 'kubernetes' source package (vendored dependencies) with Debian's Go, for the
# real-scheduler tests. Skips the build when the binaries already exist in $OUT.
# Needs root (apt). Cold build on 2 cores: about 10 minutes.
set -euo pipefail
OUT=${CATTERY_KUBE_DIR:-/opt/cattery-kube}
if [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kube-controller-manager" ]; then
  echo "build-kube: binaries present in $OUT, skipping the build"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# deb-src entries: the machine's own Debian sources with the type switched to deb-src
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
    > /etc/apt/sources.list.d/debian-src.sources
elif [ -f /etc/apt/sources.list ]; then
  sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/cattery-src.list
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends golang-go dpkg-dev rsync jq make \
  golang-github-modern-go-reflect2-dev etcd-server openssl >/dev/null
W=$(mktemp -d /var/tmp/kbuild.XXXX)
trap 'rm -rf "$W"' EXIT
cd "$W"
apt-get source -qq kubernetes=1.20.5+really1.20.2-1.1+deb12u1 >/dev/null 2>&1 \
  || apt-get source -qq kubernetes >/dev/null
cd kubernetes-*/
# Kubernetes 1.20 vendors modern-go/reflect2 v1.0.1, which crashes (mapiterinit) under
# Go >= 1.18: swap in Debian's reflect2 1.0.2 sources (API compatible).
R=vendor/github.com/modern-go/reflect2
rm -f $R/*.go $R/*.s
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
  /usr/share/gocode/src/github.com/modern-go/reflect2/*.s $R/
rm -f $R/*_test.go
mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
GOPATH=$PWD/.go CGO_ENABLED=0 HOME=/root \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >build.log 2>&1 \
  || { tail -n 40 build.log >&2; exit 1; }
mkdir -p "$OUT.tmp"
cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$OUT.tmp/"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "build-kube: built into $OUT"
