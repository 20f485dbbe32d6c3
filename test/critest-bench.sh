#!/usr/bin/env bash
# critest's benchmark mode against a fresh ketchd (test/critest.sh does the set-up):
# pod, container and image lifecycles, 20 samples each, one at a time, then a summary of
# each operation's p50/p90 from critest's JSON results. test/setup.sh must have run.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$(mktemp -d /tmp/ketch-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
img=public.ecr.aws/docker/library/busybox
cat >"$out/params.yaml" <<PARAMS
containersNumber: 20
containersNumberParallel: 1
containerBenchmarkTimeoutSeconds: 60
podsNumber: 20
podsNumberParallel: 1
podBenchmarkTimeoutSeconds: 60
imagesNumber: 20
imagesNumberParallel: 1
imageBenchmarkTimeoutSeconds: 60
imagePullingBenchmarkImage: $img:1.35.0-glibc
imageListingBenchmarkImages: [$img:1-uclibc, $img:1, $img:1-glibc, $img:1-musl]
PARAMS
# -benchmark makes critest focus on its benchmark specs; no other focus is added.
CRITEST_FOCUS=benchmark CRITEST_ARGS="-benchmark -benchmarking-params-file $out/params.yaml -benchmarking-output-dir $out" \
  "$HERE/critest.sh"
echo "critest -benchmark (ms, p50 / p90 over the samples):"
for f in "$out"/*.json; do
  jq -r --arg f "$(basename "$f" .json)" '
    . as $r | [range(0; $r.operationsNames | length)] | map(. as $i |
      ($r.datapoints | map(.operationsDurationsNs[$i]) | sort) as $d |
      "  \($f): \($r.operationsNames[$i]) \($d[($d|length)/2|floor]/1e6|.*100|round/100) / \($d[($d|length)*9/10|floor]/1e6|.*100|round/100)")
    | .[]' "$f"
done
