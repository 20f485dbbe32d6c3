#!/usr/bin/env bash
# Builds critest and crictl (cri-tools v1.36.0) from the Go module proxy into a
# cache outside the repo. `go install` cannot build critest (it is a test binary
# and the module path differs), so: download the module, copy it somewhere
# writable, drop vendor/, build with -mod=mod. Cold: ~1-5 min on 2 cores.
set -euo pipefail
VERSION=v1.36.0
CACHE=${KETCH_TEST_CACHE:-/var/cache/ketch-test}
BIN=$CACHE/bin
STAMP=$BIN/.cri-tools-version

if [[ -x $BIN/critest && -x $BIN/crictl && "$(cat "$STAMP" 2>/dev/null)" == "$VERSION" ]]; then
	echo "tools: critest/crictl $VERSION cached in $BIN"
	exit 0
fi

mkdir -p "$BIN"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"                       # away from any go.mod / go.work of the caller
export GOWORK=off GOFLAGS=-mod=mod
dir=$(go mod download -json "sigs.k8s.io/cri-tools@$VERSION" | jq -r '.Dir // empty')
[[ -d $dir ]] || { echo "tools: go mod download gave no Dir" >&2; exit 1; }
cp -r "$dir" "$work/cri-tools"
chmod -R u+w "$work/cri-tools"   # module cache files are read-only
cd "$work/cri-tools"
rm -rf vendor                    # vendor/modules.txt does not match -mod=mod
ldflags="-X sigs.k8s.io/cri-tools/pkg/version.Version=$VERSION"
echo "tools: building crictl $VERSION"
go build -trimpath -ldflags "$ldflags" -o "$BIN/crictl.new" ./cmd/crictl
echo "tools: building critest $VERSION"
go test -c -trimpath -ldflags "$ldflags" -o "$BIN/critest.new" ./cmd/critest
mv "$BIN/crictl.new" "$BIN/crictl"
mv "$BIN/critest.new" "$BIN/critest"
echo "$VERSION" > "$STAMP"
echo "tools: built $BIN/critest and $BIN/crictl"
