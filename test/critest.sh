#!/usr/bin/env bash
# Runs critest v1.36.0 against a fresh ketchd (its own socket and state, the harness's
# registry mappings) and prints critest's totals. test/setup.sh must have run.
#
# FOCUS selects the spec groups whose RPCs ketch implements; each issue that lands
# RPCs widens it. SKIP names single specs, each with the reason it cannot pass here.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${KETCH_TEST_CACHE:-/var/cache/ketch-test}
KETCHD=${KETCHD:-$HERE/../bin/ketchd}

FOCUS='Image Manager|Image Consistency|Image Identifier Consistency|Runtime info'
SKIP_SPECS=(
  # Pins an upstream manifest digest (sha256:9700f9a2...) that no offline build can
  # reproduce (node-facts.md).
  'public image with digest should be pulled and removed [Conformance]'
  # These two create a pod sandbox and a container: RunPodSandbox/CreateContainer land with
  # the sandbox and container issues; un-skip it then.
  'should return the same image identifier across all APIs [Conformance]'
  'should return the same image identifier when pulled from different registries [Conformance]'
)

skip=""
for s in "${SKIP_SPECS[@]}"; do
  skip+="${skip:+|}$(printf '%s' "$s" | sed 's/[][\.*^$()+?{}|]/\\&/g')"
done

work=$(mktemp -d /tmp/ketch-critest.XXXXXX)
pid=""
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"; wait "$pid" || true
  fi
  # Only this run's own state; a mount left inside it is a ketch bug, but must not stay.
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/config.toml" <<CFG
socket = "$work/ketch.sock"
root = "$work/root"
state = "$work/state"
[image]
registry_config_path = "$CACHE/certs.d"
[network]
cni_conf_dir = "$work/net.d"
CFG
# A node has a CNI network config; "runtime conditions" expects NetworkReady.
mkdir -p "$work/net.d"
cp "$HERE/../contrib/10-ketch.conflist" "$work/net.d/"
"$KETCHD" --config "$work/config.toml" >"$work/ketchd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [[ -S $work/ketch.sock ]] && break; sleep 0.1; done
[[ -S $work/ketch.sock ]] || { cat "$work/ketchd.log"; echo "critest: ketchd did not start" >&2; exit 1; }

set +e
"$CACHE/bin/critest" \
  -runtime-endpoint "unix://$work/ketch.sock" -image-endpoint "unix://$work/ketch.sock" \
  -ginkgo.focus "$FOCUS" -ginkgo.skip "$skip" -ginkgo.no-color \
  ${CRITEST_ARGS:-} 2>&1 | tee "$work/critest.log"
rc=${PIPESTATUS[0]}
set -e
echo "critest totals (focus: $FOCUS; ${#SKIP_SPECS[@]} specs skipped by name):"
grep -E '^Ran [0-9]+ of [0-9]+ Specs|Passed \| [0-9]+ Failed' "$work/critest.log" || true
if [[ $rc -ne 0 ]]; then
  echo "--- ketchd log (tail) ---"; tail -50 "$work/ketchd.log"
fi
exit "$rc"
