#!/usr/bin/env bash
# Builds the offline stand-ins for every image critest v1.36.0 pulls, plus ketch's
# own e2e images, into ${KETCH_TEST_CACHE:-/var/cache/ketch-test}/images:
#   oci/        one OCI layout, one tag per image (built here)
#   dir/        skopeo "dir:" copies for the zstd and Docker v2s2 variants
#   push.list   "<source> <registry path:tag> <manifest digest>" for registry.sh push
#   stamp       hash of the inputs; a matching stamp skips the build
# Layers are GNU tar archives with fixed mtime/owner/order, added with
# `umoci raw add-layer` (umoci insert writes broken tars), all timestamps fixed:
# rebuilding gives the same digests. The stand-ins (nginx, httpd, nonewprivs,
# pause) are not the real software: each has only what critest's specs check,
# noted next to it below.
set -euo pipefail
export LC_ALL=C TZ=UTC
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${KETCH_TEST_CACHE:-/var/cache/ketch-test}
OUT=$CACHE/images
EPOCH=1700000000                                    # 2023-11-14T22:13:20Z
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
PATHENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Everything that can change a digest goes into the stamp.
bb_version=$(apt-cache policy busybox | awk '/Candidate:/ {print $2}')
[[ -n $bb_version && $bb_version != "(none)" ]] || { echo "images: no busybox candidate; run apt-get update" >&2; exit 1; }
stamp=$( {
	cat "$HERE/build.sh"; (cd "$HERE/src" && for f in *; do echo "== $f"; cat "$f"; done)
	echo "busybox=$bb_version $(dpkg-query -W -f '${Package}=${Version} ' libc6 libc6-dev)"
	gcc --version | head -1; tar --version | head -1; umoci --version; skopeo --version; jq --version
	cat "$HERE/grpchealth/main.go" "$HERE/../../go.sum"; go version
} | sha256sum | cut -d' ' -f1)
if [[ -f $OUT/stamp && $(cat "$OUT/stamp") == "$stamp" ]]; then
	echo "images: cached in $OUT ($(wc -l < "$OUT/push.list") references)"
	exit 0
fi

mkdir -p "$CACHE"
W=$(mktemp -d "$CACHE/images.tmp.XXXXXX")   # same filesystem as $OUT: final mv is a rename
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"
L=$W/oci
T=$W/tmp
mkdir -p "$T" "$W/dir"
: > "$W/push.list"

# tarball DIR OUT: a reproducible layer archive of DIR's contents.
tarball() {
	(cd "$1" && find . -mindepth 1 -maxdepth 1 -printf '%P\0' | sort -z |
		tar --format=gnu --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner \
			--null -T - -cf "$2")
}
# layer FROM TO DIR: tag TO = image FROM plus DIR as one new layer.
layer() {
	tarball "$3" "$T/layer.tar"
	umoci raw add-layer --image "$L:$1" --tag "$2" --history.created "$CREATED" \
		--history.created_by "ketch test/images/build.sh: $2" "$T/layer.tar"
}
# cfg TAG [umoci config flags]: set config fields without a (timestamped) history entry.
cfg() {
	local tag=$1; shift
	umoci config --image "$L:$tag" --no-history --created "$CREATED" "$@"
}
# marker TAG PATH CONTENT: tag TAG = busybox + one file (marker images).
marker() {
	local d=$T/rootfs-$1
	mkdir -p "$(dirname "$d$2")"
	printf '%s\n' "$3" > "$d$2"
	layer busybox "$1" "$d"
}
# publish TAG DEST...: record that layout tag TAG is pushed as each DEST (path:tag).
publish() {
	local tag=$1 d; shift
	d=$(jq -r --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$L/index.json")
	for dest; do echo "oci:@/oci:$tag $dest $d" >> "$W/push.list"; done
}

echo "images: building (busybox $bb_version) in $W"
umoci init --layout "$L"
umoci new --image "$L:scratch"
cfg scratch --os linux --architecture amd64

# --- busybox base rootfs -------------------------------------------------------
# Debian's dynamic busybox with every applet as a separate hard link in /bin
# (critest masks /bin/ls; busybox-static's ash would run ls in-process), plus
# the glibc libraries it needs, copied from the host.
R=$T/rootfs
mkdir -p "$R"/{bin,dev,etc,home,lib/x86_64-linux-gnu,lib64,proc,root,run,sys,tmp,usr/bin,usr/sbin}
mkdir -p "$R"/var/{run,tmp,spool/mail,www}
chmod 1777 "$R/tmp" "$R/var/tmp"
chmod 700 "$R/root"
(cd "$T" && chmod 777 . && apt-get -q -o APT::Sandbox::User=root download "busybox=$bb_version" >/dev/null)
dpkg-deb --fsys-tarfile "$T"/busybox_*.deb | tar -xO ./bin/busybox > "$R/bin/busybox"
chmod 755 "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do
	[[ $a == busybox ]] || ln "$R/bin/busybox" "$R/bin/$a"
done
for lib in $(ldd "$R/bin/busybox" | awk '$2 == "=>" {print $3} $1 ~ /^\/lib64\// {print $1}'); do
	cp -L "$lib" "$R/lib/x86_64-linux-gnu/$(basename "$lib")"
done
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"
# Shell stand-ins for applets Debian's busybox lacks (critest runs pgrep and ipcs -m).
for a in pgrep ipcs; do
	[[ -e $R/bin/$a ]] || install -m 755 "$HERE/src/$a.sh" "$R/bin/$a"
done
cat > "$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
cat > "$R/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
EOF
sed 's/^\([^:]*\):.*/\1:*:19000:0:99999:7:::/' "$R/etc/passwd" > "$R/etc/shadow"
chmod 640 "$R/etc/shadow"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' > "$R/etc/nsswitch.conf"
layer scratch busybox "$R"
cfg busybox --config.env "$PATHENV" --config.cmd sh

# --- static C programs ---------------------------------------------------------
BIN=$T/bin
mkdir -p "$BIN"
for p in fake-nginx nnp pause prng; do
	(cd "$HERE/src" && gcc -static -O2 -s -o "$BIN/$p" "$p.c")
done

# --- critest images --------------------------------------------------------------
# Default container image: sh + applets, user nobody, Cmd sh. library/busybox is
# for ketch's own tests (docker.io/busybox).
publish busybox e2e-test-images/busybox:1.29-2 library/busybox:latest

# nginx: HTTP 200 on :80, process "nginx" with its pid in /var/run/nginx.pid,
# "master process" in /proc/1/cmdline (see src/fake-nginx.c). hostnet-nginx: same
# on :12003 in the host network namespace.
d=$T/rootfs-nginx
install -D -m 755 "$BIN/fake-nginx" "$d/usr/sbin/nginx"
install -d "$d/usr/share/nginx/html"
echo '<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body><h1>Welcome to nginx!</h1><p>ketch test stand-in.</p></body></html>' > "$d/usr/share/nginx/html/index.html"
layer busybox nginx "$d"
cfg nginx --clear config.cmd --config.cmd nginx --config.cmd=-g --config.cmd "daemon off;" \
	--config.exposedports 80/tcp --config.stopsignal SIGQUIT
publish nginx e2e-test-images/nginx:1.14-2
umoci config --image "$L:nginx" --tag hostnet-nginx --no-history --created "$CREATED" \
	--config.env FAKE_NGINX_PORT=12003 --clear config.exposedports --config.exposedports 12003/tcp
publish hostnet-nginx k8s-staging-cri-tools/hostnet-nginx-amd64:latest

# httpd: HTTP 200 on :80 and an "httpd" log line (Multiple Containers specs).
d=$T/rootfs-httpd
install -D -m 755 "$HERE/src/httpd-foreground.sh" "$d/usr/local/bin/httpd-foreground"
install -d "$d/usr/local/apache2/htdocs"
echo '<html><body><h1>It works!</h1></body></html>' > "$d/usr/local/apache2/htdocs/index.html"
layer busybox httpd "$d"
cfg httpd --clear config.cmd --config.cmd httpd-foreground --config.workingdir /usr/local/apache2 \
	--config.exposedports 80/tcp
publish httpd e2e-test-images/httpd:2.4.39-4

# nonewprivs: setuid-root program printing its euid (NoNewPrivs specs).
d=$T/rootfs-nnp
install -D -m 4755 "$BIN/nnp" "$d/usr/local/bin/nnp"
layer busybox nonewprivs "$d"
cfg nonewprivs --clear config.cmd --config.entrypoint /usr/local/bin/nnp
publish nonewprivs e2e-test-images/nonewprivs:1.3

# pause:3.9: pulled as registry.k8s.io/pause:3.9 and k8s.gcr.io/pause:3.9 by
# critest v1.36's "same image from different registries" spec (one image ID), and
# run with its default entrypoint; also a sandbox image for a containerd peer.
d=$T/rootfs-pause
install -D -m 755 "$BIN/pause" "$d/pause"
layer scratch pause "$d"
cfg pause --config.entrypoint /pause --config.user 65535:65535
publish pause pause:3.9

# Image status specs: uid / username / group from the image config's User.
S=k8s-staging-cri-tools
for u in user-uid:1002 user-username:www-data user-uid-group:1003:1004 user-username-group:www-data:1004; do
	umoci config --image "$L:busybox" --tag "${u%%:*}" --no-history --created "$CREATED" --config.user "${u#*:}"
	publish "${u%%:*}" "$S/test-image-${u%%:*}:latest"
done

# SupplementalGroups specs: default-user (1000) is a member of a group defined
# only in the image (50000); `id -G` must print "1000 1234 50000".
d=$T/rootfs-predefined-group
mkdir -p "$d/etc"
{ cat "$R/etc/passwd"; echo 'default-user:x:1000:1000::/home/default-user:/bin/sh'; } > "$d/etc/passwd"
{ cat "$R/etc/group"; echo 'default-user:x:1000:'; echo 'group-defined-in-image:x:50000:default-user'; } > "$d/etc/group"
{ cat "$R/etc/shadow"; echo 'default-user:!:19000:0:99999:7:::'; } > "$d/etc/shadow"
chmod 640 "$d/etc/shadow"
mkdir -p "$d/home/default-user"
layer busybox predefined-group "$d"
cfg predefined-group --config.user 1000
publish predefined-group "$S/test-image-predefined-group:latest"

# Pull/list/remove specs: distinct images, one image under three tags, two tags.
for n in 1 2 3 latest digest; do marker "test-image-$n" "/test-image-$n" "test-image-$n"; done
publish test-image-1 "$S/test-image-1:latest"
publish test-image-2 "$S/test-image-2:latest"
publish test-image-3 "$S/test-image-3:latest"
publish test-image-latest "$S/test-image-latest:latest"
publish test-image-digest "$S/test-image-digest:latest"   # the pinned upstream digest cannot be reproduced
marker test-image-tags /same-image same-image
publish test-image-tags "$S/test-image-tags:1" "$S/test-image-tags:2" "$S/test-image-tags:3"
marker test-image-tag-test /test test
marker test-image-tag-all /all all
publish test-image-tag-test "$S/test-image-tag:test"
publish test-image-tag-all "$S/test-image-tag:all"

# critest -benchmark image pull/list specs (public.ecr.aws), one distinct image per tag.
for t in 1.35.0-glibc 1-uclibc 1 1-glibc 1-musl; do
	marker "ecr-busybox-$t" /ecr-busybox "busybox:$t"
	publish "ecr-busybox-$t" "docker/library/busybox:$t"
done

# --- ketch's own e2e images ---------------------------------------------------------
# multilayer TAG N BYTES SEED: N layers of BYTES incompressible, deterministic data each
# (layer i from seed SEED+i), for the pull benchmarks and image volumes.
multilayer() {
	local prev=scratch i d
	for i in $(seq 1 "$2"); do
		d=$T/rootfs-$1-$i
		mkdir -p "$d/data"
		"$BIN/prng" "$(($4 + i))" "$3" > "$d/data/layer-$i.bin"
		layer "$prev" "$1" "$d"
		prev=$1
	done
	cfg "$1" --config.env "$PATHENV"
}
multilayer multilayer 5 2097152 0
publish multilayer ketch-test/multilayer:5
multilayer multilayer20 20 1048576 100
publish multilayer20 ketch-test/multilayer:20
# whiteout:1: busybox, a layer with /data/gone, /data/kept and /opq/old, then one that deletes
# /data/gone (a whiteout) and replaces /opq (an opaque directory) with /opq/new: what a
# parallel unpack, applying a layer apart from its parent, must still get right.
d=$T/rootfs-wh1
mkdir -p "$d/data" "$d/opq"
echo gone > "$d/data/gone"; echo kept > "$d/data/kept"; echo old > "$d/opq/old"
layer busybox whiteout "$d"
d=$T/rootfs-wh2
mkdir -p "$d/data" "$d/opq"
: > "$d/data/.wh.gone"; : > "$d/opq/.wh..wh..opq"; echo new > "$d/opq/new"
layer whiteout whiteout "$d"
publish whiteout ketch-test/whiteout:1

# workflow:1: the seed's workflow step. Its CMD is a shell that runs run.sh, which runs
# main without exec; main traps TERM to clean up. With the shell as PID 1, TERM never
# reaches main; with ketch-init as PID 1 it does.
d=$T/rootfs-workflow
mkdir -p "$d/usr/bin"
printf '#!/bin/sh\n/usr/bin/main\n' > "$d/usr/bin/run.sh"
cat > "$d/usr/bin/main" <<'MAIN'
#!/bin/sh
trap 'echo main got TERM, cleaning up; exit 143' TERM
echo main started
while true; do sleep 1 & wait $!; done
MAIN
chmod 755 "$d/usr/bin/run.sh" "$d/usr/bin/main"
layer busybox workflow "$d"
cfg workflow --clear=config.cmd --config.cmd sh --config.cmd -c --config.cmd /usr/bin/run.sh
publish workflow ketch-test/workflow:1

# grpc-health:1: busybox + a gRPC health server on :9090 (grpchealth/main.go), for
# kubelet's gRPC probes; SERVING until /tmp/unhealthy exists.
d=$T/rootfs-grpc
mkdir -p "$d/usr/local/bin"
(cd "$HERE/../.." && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w -buildid=' -o "$d/usr/local/bin/grpchealth" ./test/images/grpchealth)
layer busybox grpc-health "$d"
cfg grpc-health --clear=config.cmd --config.cmd /usr/local/bin/grpchealth
publish grpc-health ketch-test/grpc-health:1

# multiarch:1: an OCI index with an amd64 and an arm64 entry. The arm64 one is the
# same busybox with another marker and platform (it is only pulled, never run).
marker multiarch-amd64 /ketch-test-arch amd64
marker multiarch-arm64 /ketch-test-arch arm64
cfg multiarch-arm64 --architecture arm64

# Sources for the two skopeo conversions below.
marker zstd-src /ketch-test-format zstd
marker v2s2-src /ketch-test-format docker-v2s2

umoci gc --layout "$L"   # before the hand-made index: nothing below goes through umoci

desc() {  # desc TAG ARCH [VARIANT]: index entry for layout tag TAG
	jq -c --arg t "$1" --arg a "$2" --arg v "${3:-}" '.manifests[]
		| select(.annotations["org.opencontainers.image.ref.name"] == $t)
		| {mediaType, digest, size, platform: ({architecture: $a, os: "linux"} + (if $v == "" then {} else {variant: $v} end))}' "$L/index.json"
}
jq -cn --argjson a "$(desc multiarch-amd64 amd64)" --argjson b "$(desc multiarch-arm64 arm64 v8)" \
	'{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [$a, $b]}' | tr -d '\n' > "$T/index.json"
idx=$(sha256sum "$T/index.json" | cut -d' ' -f1)
cp "$T/index.json" "$L/blobs/sha256/$idx"
jq -c --arg d "sha256:$idx" --argjson s "$(stat -c %s "$T/index.json")" \
	'.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
	  annotations: {"org.opencontainers.image.ref.name": "multiarch"}}]' "$L/index.json" > "$T/layout-index.json"
mv "$T/layout-index.json" "$L/index.json"
publish multiarch ketch-test/multiarch:1

# zstd:1 — skopeo recompresses the gzip layers as zstd (deterministic encoder) into dir:.
# docker-v2s2:1 — skopeo rewrites the manifest as Docker schema 2 into dir:.
skopeo copy -q --dest-compress --dest-compress-format zstd "oci:$L:zstd-src" "dir:$W/dir/zstd"
skopeo copy -q --format v2s2 "oci:$L:v2s2-src" "dir:$W/dir/docker-v2s2"
for v in zstd:ketch-test/zstd:1 docker-v2s2:ketch-test/docker-v2s2:1; do
	echo "dir:@/dir/${v%%:*} ${v#*:} sha256:$(sha256sum < "$W/dir/${v%%:*}/manifest.json" | cut -d' ' -f1)" >> "$W/push.list"
done
grep -q 'tar+zstd' "$W/dir/zstd/manifest.json" || { echo "images: zstd layers missing" >&2; exit 1; }
grep -q 'vnd.docker.distribution.manifest.v2' "$W/dir/docker-v2s2/manifest.json" || { echo "images: not v2s2" >&2; exit 1; }

rm -rf "$T"
echo "$stamp" > "$W/stamp"
rm -rf "$OUT"
mv "$W" "$OUT"
trap - EXIT
echo "images: built $(wc -l < "$OUT/push.list") references in $OUT"
