#!/usr/bin/env bash
# Added latency of body-based model routing against header-based routing, through the same
# Envoy, the same listener and the same route: a request with `content-type: application/json`
# and no `x-ai-model` is routed by its body (json_to_metadata buffers and parses it); the same
# body sent as `text/plain` with `x-ai-model: gpt-4o` is routed by the header (json_to_metadata
# skips non-JSON content types, so nothing is buffered). The upstream is a second Envoy that
# answers 200 from memory, so the figures are the gateway's.
#
# Usage: testenv/bench/model_routing.sh [seconds=10] [rounds=3] [workers=4] [qps_per_worker=50]
# Needs: target/debug/tessera (cargo build), Envoy (TESSERA_ENVOY or testenv/.venv), hey.
# Ports 23100-23104, Envoy base ids 2310/2311.
set -euo pipefail
DUR=${1:-10}; ROUNDS=${2:-3}; C=${3:-4}; Q=${4:-50}
repo=$(cd "$(dirname "$0")/../.." && pwd)
envoy=${TESSERA_ENVOY:-$(cat "$repo/testenv/.venv/envoy-path")}
tessera=$repo/target/debug/tessera
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
UP=23100 GW=23101 XDS=23102 ADMIN=23103 EADMIN=23104

cat > "$work/upstream.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: $UP}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: up
          http_filters:
          - name: envoy.filters.http.buffer
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 2000000}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - name: up
              domains: ["*"]
              routes:
              - match: {prefix: /}
                direct_response: {status: 200, body: {inline_string: '{"id":"chatcmpl-1","choices":[]}'}}
YAML
mkdir -p "$work/config"
cat > "$work/config/gateway.yaml" <<YAML
apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {name: gw}
spec:
  nodeCluster: bench
  listeners: [{name: http, port: $GW, address: 127.0.0.1}]
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {name: up}
spec: {provider: Generic, endpoint: "http://127.0.0.1:$UP"}
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {name: models}
spec:
  gateway: gw
  rules:
  - matches: [{model: gpt-4o}]
    backends: [{name: up}]
YAML
python3 - "$work" <<'PY'
import json, sys
for name, pad in (("1k", 1024 - 60), ("100k", 100 * 1024 - 60)):
    # model last: the worst case for the parser
    body = {"messages": [{"role": "user", "content": "x" * pad}], "model": "gpt-4o"}
    open(f"{sys.argv[1]}/body_{name}.json", "w").write(json.dumps(body))
PY

"$envoy" -c "$work/upstream.yaml" --base-id 2310 --concurrency 1 --log-level error \
  >"$work/upstream.log" 2>&1 & pids+=($!)
TESSERA_LOG=warn "$tessera" serve --config "$work/config" --xds-address 127.0.0.1:$XDS \
  --admin-address 127.0.0.1:$ADMIN >"$work/tessera.log" 2>&1 & pids+=($!)
"$tessera" bootstrap --node-id bench --node-cluster bench --xds-address 127.0.0.1:$XDS \
  --admin-port $EADMIN --delta > "$work/envoy.yaml"
"$envoy" -c "$work/envoy.yaml" --base-id 2311 --concurrency 1 --log-level error \
  >"$work/envoy.log" 2>&1 & pids+=($!); gw_pid=$!

url=http://127.0.0.1:$GW/v1/chat/completions
for _ in $(seq 200); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    --data @"$work/body_1k.json" "$url" || true)
  [ "$code" = 200 ] && break; sleep 0.1
done
[ "$code" = 200 ] || { echo "gateway not ready ($code)"; cat "$work"/*.log; exit 1; }

cpu_ns() { cat /proc/$1/task/*/schedstat | awk '{s+=$1} END {printf "%.0f", s}'; }
echo "hey -z ${DUR}s -c $C -q $Q (fixed $((C * Q)) req/s), HTTP/1.1 keep-alive; load: $(cat /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for size in 1k 100k; do
    for mode in header body; do
      if [ $mode = header ]; then args=(-T text/plain -H 'x-ai-model: gpt-4o'); else args=(-T application/json); fi
      c0=$(cpu_ns $gw_pid)
      res=$(hey -z "${DUR}s" -c "$C" -q "$Q" -m POST "${args[@]}" -D "$work/body_$size.json" "$url" 2>&1)
      c1=$(cpu_ns $gw_pid)
      n=$(echo "$res" | awk '/\[200\]/ {print $2}'); n=${n:-0}
      p50=$(echo "$res" | awk '/ 50% in/ {print $3*1000}')
      p99=$(echo "$res" | awk '/ 99% in/ {print $3*1000}')
      other=$(echo "$res" | awk '/Status code distribution/{f=1;next} f&&/\[/&&$1!="[200]"{printf "%s%s ", $1, $2}')
      printf 'round=%s size=%-4s %-6s p50=%-6s p99=%-6s ms  envoy_cpu=%5s us/req  ok=%s %s\n' \
        "$r" "$size" "$mode" "$p50" "$p99" $(( (c1 - c0) / 1000 / (n > 0 ? n : 1) )) "$n" "$other"
    done
  done
done
