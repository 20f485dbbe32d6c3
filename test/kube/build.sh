#!/usr/bin/env bash
# Builds the Kubernetes binaries the kubelet suite and `make cluster` run (kubelet,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) from the Go module
# proxy into $KETCH_TEST_CACHE/kube-$KUBE_VERSION, reused between runs. k8s.io/kubernetes
# points its staging modules at ./staging with replace lines the module zip cannot
# satisfy: they are rewritten to the published k8s.io/X v0.N.M modules. ~8 min cold.
set -euo pipefail
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
CACHE=${KETCH_TEST_CACHE:-/var/cache/ketch-test}
OUT=$CACHE/kube-$KUBE_VERSION
BINS="kubelet kube-apiserver kube-controller-manager kube-scheduler kubectl"

ok=1
for b in $BINS; do [[ -x $OUT/$b ]] || ok=; done
if [[ -n $ok ]]; then
	echo "kube: $KUBE_VERSION cached in $OUT"
	exit 0
fi

mkdir -p "$OUT"
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
dir=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | jq -r '.Dir // empty')
[[ -d $dir ]] || { echo "kube: go mod download k8s.io/kubernetes@$KUBE_VERSION gave no Dir" >&2; exit 1; }
cp -r "$dir" src
chmod -R u+w src
cd src
rm -rf vendor go.work go.work.sum
staging=v0.${KUBE_VERSION#v1.}
sed -i -E "s#^(\s*k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+\$#\1 => \1 $staging#" go.mod
! grep -q '=> ./staging' go.mod || { echo "kube: unrewritten staging replace in go.mod" >&2; exit 1; }
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(cut -d. -f2 <<<"$KUBE_VERSION") -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
echo "kube: building $BINS $KUBE_VERSION"
go build -trimpath -ldflags "$ldflags" -o "$work/bin/" $(printf './cmd/%s ' $BINS)
for b in $BINS; do mv "$work/bin/$b" "$OUT/$b"; done
echo "kube: built $OUT"
