#!/usr/bin/env bash
# Builds CRI-O, the second peer of `make compare`, from the Go module proxy into
# $KETCH_TEST_CACHE/crio-$VERSION (crio, pinns). Debian ships no CRI-O; conmon and runc
# come from Debian. v1.36.3 is the newest v1.3x the proxy serves here (node-facts.md).
# One constant is changed: CRI-O gives its pause process oom_score_adj -998 with no
# setting to change it, which root without CAP_SYS_RESOURCE (this host) may not set, so
# every pod would fail; the build clamps it to 0, as containerd's restrict_oom_score_adj
# does. Cold: ~5 min on 2 cores.
set -euo pipefail
VERSION=v1.36.3
CACHE=${KETCH_TEST_CACHE:-/var/cache/ketch-test}
OUT=$CACHE/crio-$VERSION
if [[ -x $OUT/crio && -x $OUT/pinns ]]; then
	echo "crio: $VERSION cached in $OUT"
	exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOWORK=off GOFLAGS=-mod=mod
dir=$(go mod download -json "github.com/cri-o/cri-o@$VERSION" | jq -r '.Dir // empty')
[[ -d $dir ]] || { echo "crio: go mod download gave no Dir" >&2; exit 1; }
cp -r "$dir" src
chmod -R u+w src
cd src
rm -rf vendor
grep -q 'PodInfraOOMAdj int = -998' server/sandbox_run.go || { echo "crio: the pause OOM constant moved" >&2; exit 1; }
sed -i 's/PodInfraOOMAdj int = -998/PodInfraOOMAdj int = 0/' server/sandbox_run.go
echo "crio: building crio $VERSION"
go build -trimpath -tags 'containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper seccomp' \
	-ldflags "-X github.com/cri-o/cri-o/internal/version.version=${VERSION#v}" -o "$work/out/crio" ./cmd/crio
echo "crio: building pinns"
gcc -O2 -o "$work/out/pinns" pinns/src/*.c
rm -rf "$OUT"
mv "$work/out" "$OUT"
echo "crio: built $OUT/crio and $OUT/pinns"
