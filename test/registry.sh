#!/usr/bin/env bash
# Local registries for the offline tests (Debian's docker-registry 2.8):
#   127.0.0.1:5000  no auth, read-write, storage ${KETCH_TEST_CACHE}/registry, delete enabled
#   127.0.0.1:5001  htpasswd Basic auth (ketch / ketchpass), the SAME storage, read-only
#                   (so every image pushed to :5000 is also pullable with credentials here)
# usage: registry.sh start | stop | push
#   start  starts both unless their recorded PID is alive and answering /v2/
#   stop   kills exactly the recorded PIDs
#   push   copies every image built by images/build.sh to :5000 under its upstream
#          path (reference minus host), keeping manifest digests (image IDs) unchanged
set -euo pipefail
CACHE=${KETCH_TEST_CACHE:-/var/cache/ketch-test}
RUN=$CACHE/run
STORAGE=$CACHE/registry
USER_PASS=ketch:ketchpass

url() { echo "http://127.0.0.1:$1/v2/"; }
# answers PORT: /v2/ answers like our registry (200 without auth, 401 with).
answers() {
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$(url "$1")" || true)
	[[ $code == 200 || $code == 401 ]]
}
# ours PORT: the recorded PID is alive and is docker-registry.
ours() {
	local pid
	pid=$(cat "$RUN/registry-$1.pid" 2>/dev/null) || return 1
	[[ $(readlink "/proc/$pid/exe" 2>/dev/null) == /usr/bin/docker-registry ]]
}

config() {  # config PORT: write this instance's config, print its path
	local port=$1 f=$RUN/registry-$1.yml
	cat > "$f" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STORAGE
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
EOF
	if [[ $port == 5001 ]]; then
		# htpasswd -B uses a random salt: generate once, keep it.
		[[ -s $RUN/htpasswd ]] || htpasswd -Bbn "${USER_PASS%%:*}" "${USER_PASS#*:}" > "$RUN/htpasswd"
		cat >> "$f" <<EOF
    readonly:
      enabled: true
auth:
  htpasswd:
    realm: ketch-test
    path: $RUN/htpasswd
EOF
	fi
	cat >> "$f" <<EOF
http:
  addr: 127.0.0.1:$port
  secret: ketch-test-only
  headers:
    X-Content-Type-Options: [nosniff]
EOF
	echo "$f"
}

start_one() {
	local port=$1 cfg pid
	if ours "$port" && answers "$port"; then
		echo "registry: 127.0.0.1:$port already running (pid $(cat "$RUN/registry-$port.pid"))"
		return
	fi
	if answers "$port"; then
		echo "registry: something else already serves 127.0.0.1:$port; not starting" >&2
		return 1
	fi
	cfg=$(config "$port")
	# setsid: own session, so it outlives this script and the caller's terminal.
	setsid /usr/bin/docker-registry serve "$cfg" < /dev/null >> "$RUN/registry-$port.log" 2>&1 &
	pid=$!
	echo "$pid" > "$RUN/registry-$port.pid"
	for _ in $(seq 100); do
		if answers "$port" && ours "$port"; then
			echo "registry: started 127.0.0.1:$port (pid $pid, log $RUN/registry-$port.log)"
			return
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "registry: 127.0.0.1:$port did not come up; see $RUN/registry-$port.log" >&2
	tail -5 "$RUN/registry-$port.log" >&2
	return 1
}

stop_one() {
	local port=$1 pid
	if ours "$port"; then
		pid=$(cat "$RUN/registry-$port.pid")
		kill "$pid"
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
		echo "registry: stopped 127.0.0.1:$port (pid $pid)"
	else
		echo "registry: 127.0.0.1:$port not running (no live recorded pid)"
	fi
	rm -f "$RUN/registry-$port.pid"
}

# digest PORT PATH:TAG [CREDS]: the registry's manifest digest, or nothing.
digest() {
	curl -sfI --max-time 5 ${3:+-u "$3"} \
		-H 'Accept: application/vnd.oci.image.index.v1+json' \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		"http://127.0.0.1:$1/v2/${2%:*}/manifests/${2##*:}" |
		tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}'
}

push() {
	local list=$CACHE/images/push.list src dest want n=0 skipped=0
	[[ -f $list ]] || { echo "registry: $list missing; run test/images/build.sh" >&2; exit 1; }
	while read -r src dest want; do
		if [[ $(digest 5000 "$dest") == "$want" ]]; then
			skipped=$((skipped + 1))
			continue
		fi
		# --preserve-digests fails rather than rewrite a manifest; without
		# --dest-compress* skopeo sends the layer blobs as they are (no recompression).
		skopeo copy -q --all --preserve-digests --dest-tls-verify=false \
			"${src/@/$CACHE/images}" "docker://127.0.0.1:5000/$dest"
		[[ $(digest 5000 "$dest") == "$want" ]] || { echo "registry: $dest digest changed in push" >&2; exit 1; }
		n=$((n + 1))
	done < "$list"
	echo "registry: pushed $n references to 127.0.0.1:5000 ($skipped already there)"
	# :5001 reads the same storage: check it wants credentials and serves with them.
	for dest in ketch-test/multilayer:5 e2e-test-images/busybox:1.29-2; do
		[[ -z $(digest 5001 "$dest") ]] || { echo "registry: 127.0.0.1:5001 served $dest without credentials" >&2; exit 1; }
		[[ $(digest 5001 "$dest" "$USER_PASS") == "$(digest 5000 "$dest")" ]] ||
			{ echo "registry: 127.0.0.1:5001 does not serve $dest with credentials" >&2; exit 1; }
	done
	echo "registry: 127.0.0.1:5001 serves them with --creds $USER_PASS (401 without)"
}

mkdir -p "$RUN" "$STORAGE"
case ${1:-} in
start) start_one 5000; start_one 5001 ;;
stop) stop_one 5001; stop_one 5000 ;;
push) push ;;
*) echo "usage: $0 start|stop|push" >&2; exit 2 ;;
esac
