#!/usr/bin/env bash
# Builds Argo Workflows from the Go module proxy for the Argo suite and
# `make cluster ARGO=1`, into $KETCH_TEST_CACHE/argo-$ARGO_VERSION, reused between runs:
#   workflow-controller, argoexec (static: it is copied into and run inside step images)
#   crds/                 the minimal CRDs (the full ones are too big for client-side apply)
#   executor image        argoexec on the harness busybox, pushed to the local registry
#                         as 127.0.0.1:5000/ketch-test/argoexec:$ARGO_VERSION
# ~6 min cold. v3.7.3: v4.1 is not served by the proxy, v4.0.5 has reported flaws.
set -euo pipefail
ARGO_VERSION=${ARGO_VERSION:-v3.7.3}
CACHE=${KETCH_TEST_CACHE:-/var/cache/ketch-test}
OUT=$CACHE/argo-$ARGO_VERSION
IMAGE=127.0.0.1:5000/ketch-test/argoexec:$ARGO_VERSION
EPOCH=1700000000

build() {
	local work dir
	work=$(mktemp -d)
	trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' RETURN
	cd "$work"
	export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
	dir=$(go mod download -json "github.com/argoproj/argo-workflows/v3@$ARGO_VERSION" | jq -r '.Dir // empty')
	[[ -d $dir ]] || { echo "argo: go mod download gave no Dir" >&2; exit 1; }
	cp -r "$dir" src
	chmod -R u+w src
	cd src
	# The module zip drops symlinks: signal_linux.go is one, to signal_darwin.go.
	cp workflow/executor/osspecific/signal_darwin.go workflow/executor/osspecific/signal_linux.go
	# The controller's healthz listens on every interface, hard-coded; the harness
	# keeps everything on loopback.
	grep -q 'ListenAndServe(":6060"' cmd/workflow-controller/main.go
	sed -i 's/ListenAndServe(":6060"/ListenAndServe("127.0.0.1:6060"/' cmd/workflow-controller/main.go
	echo "argo: building workflow-controller and argoexec $ARGO_VERSION"
	go build -trimpath -ldflags "-s -w -X github.com/argoproj/argo-workflows/v3.version=$ARGO_VERSION" \
		-o "$work/bin/" ./cmd/workflow-controller ./cmd/argoexec
	mkdir -p "$OUT.tmp/crds"
	cp manifests/base/crds/minimal/*.yaml "$OUT.tmp/crds/"
	rm -f "$OUT.tmp/crds/kustomization.yaml"
	mv "$work/bin/workflow-controller" "$work/bin/argoexec" "$OUT.tmp/"
	rm -rf "$OUT"
	mv "$OUT.tmp" "$OUT"
}

# The executor image: argoexec in /usr/local/bin of the harness busybox (from the
# images' OCI layout), with fixed timestamps.
image() {
	local layout=$CACHE/images/oci work
	[[ -d $layout ]] || { echo "argo: $layout missing (test/images/build.sh)" >&2; exit 1; }
	work=$(mktemp -d)
	trap 'rm -rf "$work"' RETURN
	cp -r "$layout" "$work/oci"
	mkdir -p "$work/root/usr/local/bin"
	cp "$OUT/argoexec" "$work/root/usr/local/bin/"
	(cd "$work/root" && tar --format=gnu --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner -cf "$work/layer.tar" usr)
	umoci raw add-layer --image "$work/oci:busybox" --tag argoexec --history.created "$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)" "$work/layer.tar"
	umoci config --image "$work/oci:argoexec" --no-history --created "$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
		--clear=config.cmd --config.entrypoint argoexec
	skopeo copy --quiet --dest-tls-verify=false "oci:$work/oci:argoexec" "docker://$IMAGE"
	echo "argo: pushed $IMAGE"
}

if [[ ! -x $OUT/workflow-controller || ! -x $OUT/argoexec || ! -d $OUT/crds ]]; then
	build
else
	echo "argo: $ARGO_VERSION cached in $OUT"
fi
if ! skopeo inspect --tls-verify=false "docker://$IMAGE" >/dev/null 2>&1; then
	image
fi
