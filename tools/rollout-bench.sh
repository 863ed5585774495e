#!/usr/bin/env bash
# Rollout benchmark: times one ExperienceLibrary promotion to staging over a simulated fleet (hydra-sim bodies + heads) and reports where the time goes.
#
# Starts hydracluster and hydraexperiencelibrary on free loopback ports with fresh
# data directories, runs hydra-sim (BODIES bodies + HEADS kiosk heads, all placed in
# staging, heartbeating every INTERVAL seconds, each reinstall taking PROVISION_MS),
# creates an experience, registers a build, promotes it to staging with MAX_PARALLEL
# and waits for the rollout to end, then prints `hydra-bench rollout-report`: total
# time, wave 1 (bodies) and wave 2 (heads) durations, and per node (a) library request
# -> cluster provision.started, which waits for the node's next heartbeat (up to
# INTERVAL), (b) started -> completed (~PROVISION_MS), (c) cluster provision.completed
# -> library rollout.node_completed (SSE delivery + the rollout driver), and (d) how
# long a freed slot stays idle (node result -> next rollout.node_requested).
#
# Usage: tools/rollout-bench.sh            (from the workspace root)
#   MAX_PARALLEL=50 tools/rollout-bench.sh
# Environment (defaults): BODIES=100 HEADS=50 MAX_PARALLEL=10 PROVISION_MS=2000
#   INTERVAL=1 (hydra-sim --interval: seconds between heartbeats of one node)
#   PROVISION_FAIL_PCT=0 CHURN=0 OUTAGES=0 (hydra-sim --churn/--outages: 0 keeps every
#   node online and the cluster's log quiet, so the figures are the rollout's own)
#   TIMEOUT=900 (seconds to wait for the rollout) SKIP_BUILD=1 (use target/release as is)
#   KEEP=1 (keep the scratch directory with the logs)
set -euo pipefail

BODIES="${BODIES:-100}"
HEADS="${HEADS:-50}"
MAX_PARALLEL="${MAX_PARALLEL:-10}"
PROVISION_MS="${PROVISION_MS:-2000}"
PROVISION_FAIL_PCT="${PROVISION_FAIL_PCT:-0}"
INTERVAL="${INTERVAL:-1}"
CHURN="${CHURN:-0}"
OUTAGES="${OUTAGES:-0}"
TIMEOUT="${TIMEOUT:-900}"

cd "$(dirname "$0")/.."
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release -p hydra --bin hydracluster --bin hydraexperiencelibrary
  cargo build --release -p hydra-tools --bin hydra-sim --bin hydra-bench
fi
bin="$PWD/target/release"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/hydra-rollout-bench.XXXXXX")"
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "${KEEP:-0}" == 1 || $rc -ne 0 ]]; then
    echo "logs kept in $scratch" >&2
  else
    rm -rf "$scratch"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
have_jq() { command -v jq >/dev/null 2>&1; }
# json FILTER: reads JSON on stdin and prints one field (jq when installed, else python3).
json() {
  if have_jq; then jq -r "$1"; else python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].lstrip(".").split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("null" if v is None else v)' "$1"; fi
}
wait_http() { # URL NAME
  for _ in $(seq 1 100); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "$2 did not come up at $1" >&2
  return 1
}

ADMIN=bench-admin-token-0123456789
OBSERVER=bench-observer-token-0123456789
FLEET=bench-fleet-token-0123456789
LIB_ADMIN=bench-library-admin-token-0123456789
cluster_port="$(free_port)"
library_port="$(free_port)"
CLUSTER="http://127.0.0.1:$cluster_port"
LIBRARY="http://127.0.0.1:$library_port"

# The simulated fleet enrolls from one address: no enrollment rate limit.
cat >"$scratch/cluster.yaml" <<YAML
enroll_per_minute: 0
YAML
HYDRA_LOG="${HYDRA_LOG:-info}" HYDRACLUSTER_ADMIN_TOKEN="$ADMIN" HYDRACLUSTER_OBSERVER_TOKEN="$OBSERVER" \
  HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN="$FLEET" \
  "$bin/hydracluster" serve --listen "127.0.0.1:$cluster_port" --data "$scratch/cluster-data" \
  --config "$scratch/cluster.yaml" >"$scratch/cluster.log" 2>&1 &
pids+=($!)
wait_http "$CLUSTER/api/v1/health" hydracluster

HYDRA_LOG="${HYDRA_LOG:-info}" HYDRAEXPERIENCELIBRARY_ADMIN_TOKEN="$LIB_ADMIN" \
  HYDRAEXPERIENCELIBRARY_CLUSTER_URL="$CLUSTER" HYDRAEXPERIENCELIBRARY_CLUSTER_TOKEN="$ADMIN" \
  "$bin/hydraexperiencelibrary" serve --listen "127.0.0.1:$library_port" --data "$scratch/library-data" \
  >"$scratch/library.log" 2>&1 &
pids+=($!)
wait_http "$LIBRARY/api/v1/health" hydraexperiencelibrary

echo "== hydra-sim: $BODIES bodies + $HEADS heads in staging, heartbeat every ${INTERVAL}s, provision ${PROVISION_MS} ms"
HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN="$FLEET" "$bin/hydra-sim" --server "$CLUSTER" --admin-token "$ADMIN" \
  --nodes "$BODIES" --heads "$HEADS" --environment staging --interval "$INTERVAL" \
  --provision-ms "$PROVISION_MS" --provision-fail-pct "$PROVISION_FAIL_PCT" \
  --churn "$CHURN" --outages "$OUTAGES" --no-exec \
  --district sim-district --venues hall-a,hall-b,hall-c >"$scratch/sim.log" 2>&1 &
pids+=($!)

# Every simulated node approved, online and in staging before promoting.
ready='n["status"]=="approved" and n["node_status"]=="online" and n["environment"]=="staging"'
online="$(wait_nodes $((BODIES + HEADS)) "$CLUSTER/api/v1/nodes?district=sim-district" "$ADMIN" "$ready" 60 \
  "$scratch/sim.log")"
echo "fleet ready: $online nodes online in staging"

lib() { # METHOD PATH [BODY]
  curl -fsS -X "$1" -H "Authorization: Bearer $LIB_ADMIN" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} "$LIBRARY$2"
}
lib POST /api/v1/experiences \
  '{"id":"bench-exp","project":"bench","district":"sim-district","venues":["hall-a","hall-b","hall-c"],"auto_promote":false}' >/dev/null
sha="$(printf 'rollout-bench' | sha256sum | cut -d' ' -f1)"
lib POST /api/v1/experiences/bench-exp/builds \
  "{\"build\":\"b1\",\"version\":\"1.0.0\",\"artifact_url\":\"https://x/y\",\"sha256\":\"$sha\"}" >/dev/null
promoted="$(lib POST /api/v1/experiences/bench-exp/promote "{\"to\":\"staging\",\"max_parallel\":$MAX_PARALLEL}")"
rollout="$(json .rollout_id <<<"$promoted")"
if [[ -z "$rollout" || "$rollout" == null ]]; then
  echo "the promotion started no rollout: $promoted" >&2
  exit 1
fi
echo "== rollout $rollout (max_parallel $MAX_PARALLEL)"

started_ns=$(date +%s%N)
elapsed_ms() { echo $((($(date +%s%N) - started_ns) / 1000000)); }
last=""
while :; do
  r="$(lib GET "/api/v1/rollouts/$rollout")"
  state="$(json .state <<<"$r")"
  counts="$(python3 -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print(" ".join(f"{k}={v}" for k,v in c.items()))' <<<"$r")"
  if [[ "$counts" != "$last" ]]; then
    ms="$(elapsed_ms)"
    printf '[%4d.%01ds] %s %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$state" "$counts"
    last="$counts"
  fi
  case "$state" in running | paused) ;; *) break ;; esac
  if (($(elapsed_ms) > TIMEOUT * 1000)); then
    echo "the rollout did not finish within ${TIMEOUT}s; state $state, $counts" >&2
    echo "-- library.log (last 30 lines)" >&2
    tail -30 "$scratch/library.log" >&2
    echo "-- sim.log (last 5 lines)" >&2
    tail -5 "$scratch/sim.log" >&2
    KEEP=1
    "$bin/hydra-bench" rollout-report --cluster "$CLUSTER" --library "$LIBRARY" --token "$LIB_ADMIN" \
      --cluster-token "$ADMIN" --rollout "$rollout" || true
    exit 1
  fi
  sleep 0.5
done

echo
echo "== report (BODIES=$BODIES HEADS=$HEADS MAX_PARALLEL=$MAX_PARALLEL PROVISION_MS=$PROVISION_MS INTERVAL=${INTERVAL}s)"
"$bin/hydra-bench" rollout-report --cluster "$CLUSTER" --library "$LIBRARY" --token "$LIB_ADMIN" \
  --cluster-token "$ADMIN" --rollout "$rollout"
sleep 2.5 # hydra-sim prints its counters every 2 s
echo "-- hydra-sim: $(tail -1 "$scratch/sim.log")"
errors="$(grep -ciE ' (ERROR|WARN) ' "$scratch/library.log" "$scratch/cluster.log" || true)"
echo "-- warnings/errors in the service logs: $(echo "$errors" | tr '\n' ' ')"
