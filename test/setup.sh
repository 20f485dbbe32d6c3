#!/usr/bin/env bash
# One entry point for the offline test harness; idempotent, quick when cached:
#   tools.sh           critest + crictl v1.36.0 -> $KETCH_TEST_CACHE/bin
#   images/build.sh    test images (OCI)        -> $KETCH_TEST_CACHE/images
#   registry.sh start  127.0.0.1:5000 (open) and :5001 (Basic auth ketch/ketchpass)
#   registry.sh push   images -> 127.0.0.1:5000 under their upstream paths
#   hosts.sh           registry host configs    -> $KETCH_TEST_CACHE/certs.d
# Needs Go 1.26 and these Debian 12 packages (CI: apt-get install -y $KETCH_TEST_DEBS):
KETCH_TEST_DEBS="docker-registry skopeo umoci busybox-static libseccomp-dev pkg-config containernetworking-plugins apache2-utils gcc libc6-dev jq curl etcd-server openssl bsdutils containerd runc conmon apparmor protobuf-compiler"
set -euo pipefail
export KETCH_TEST_CACHE=${KETCH_TEST_CACHE:-/var/cache/ketch-test}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

missing=
for d in $KETCH_TEST_DEBS; do
	dpkg-query -W -f '${Status}' "$d" 2>/dev/null | grep -q 'ok installed' || missing="$missing $d"
done
command -v go >/dev/null || missing="$missing (go 1.26 on PATH)"
[[ -z $missing ]] || { echo "setup: missing:$missing (apt-get install -y \$KETCH_TEST_DEBS)" >&2; exit 1; }

step() {
	local t=$SECONDS
	echo "setup: $*"
	"$@"
	echo "setup:   ($((SECONDS - t))s)"
}
step "$HERE/tools.sh"
step "$HERE/images/build.sh"
step "$HERE/registry.sh" start
step "$HERE/registry.sh" push
step "$HERE/hosts.sh" "$KETCH_TEST_CACHE/certs.d"
echo "setup: ready"
echo "  critest   $KETCH_TEST_CACHE/bin/critest"
echo "  crictl    $KETCH_TEST_CACHE/bin/crictl"
echo "  registry  http://127.0.0.1:5000 (no auth), http://127.0.0.1:5001 (ketch / ketchpass, read-only, same storage)"
echo "  hosts     $KETCH_TEST_CACHE/certs.d/<host>/hosts.toml"
