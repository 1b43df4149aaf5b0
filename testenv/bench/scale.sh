#!/usr/bin/env bash
# The fleet-scale figures of README "Scale": a release Tessera serving N simulated Envoys
# (tools/xds-load) over loopback, 100 OpenAI backends with a key file each, rotating the key
# every node uses. Prints xds-load's report for every cell.
#
# Usage: testenv/bench/scale.sh [STREAMS...]   (default: 1000 10000)
#   NODE_EXTENSIONS=0 (default) sends minimal nodes, as the issue's baseline did; unset it
#   (NODE_EXTENSIONS=) for nodes the size of Envoy 1.40's (516 extensions, 57 KB).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [[ $# -gt 0 ]]; then streams=("$@"); else streams=(1000 10000); fi
node_args=()
[[ -n "${NODE_EXTENSIONS-0}" ]] && node_args=(--node-extensions "${NODE_EXTENSIONS-0}")

cargo build --release --locked -p tessera -p xds-load
config="$(mktemp -d)/load-100"
target/release/xds-load gen-config --out "$config" --backends 100
for n in "${streams[@]}"; do
    for mode in sotw delta; do
        echo "==> $n streams, $mode"
        target/release/xds-load run --spawn target/release/tessera --config "$config" \
            --streams "$n" --mode "$mode" --rotations 5 "${node_args[@]}"
    done
done
