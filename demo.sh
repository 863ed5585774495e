#!/usr/bin/env bash
# See Hydra in action: the control plane on its embedded log (segment files + sled, ./hydra-data) with a
# simulated fleet of bodies and kiosk heads and one real hydranode agent (a real command
# through the exec queue), ExperienceLibrary on its own log (./hydra-library-data), then
# a build promoted to staging and rolled out, bodies first, then heads, followed live
# with `hydrapipeline watch`. Ctrl-C stops everything; the data stays.
set -euo pipefail
cd "$(dirname "$0")"
NODES="${NODES:-40}"
HEADS="${HEADS:-12}"
LISTEN="${HYDRACLUSTER_LISTEN:-127.0.0.1:8080}"
LIBRARY_LISTEN="${HYDRAEXPERIENCELIBRARY_LISTEN:-127.0.0.1:8090}"
export HYDRACLUSTER_SERVER="http://$LISTEN"
export HYDRAEXPERIENCELIBRARY_SERVER="http://$LIBRARY_LISTEN"
# Demo tokens for watchers and kiosks; the admin tokens are generated and kept in the
# data dirs.
export HYDRACLUSTER_OBSERVER_TOKEN="${HYDRACLUSTER_OBSERVER_TOKEN:-demo-observer}"
export HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN="${HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN:-demo-fleet}"
export HYDRAEXPERIENCELIBRARY_OBSERVER_TOKEN="$HYDRACLUSTER_OBSERVER_TOKEN"
export HYDRAPIPELINE_TOKEN="$HYDRACLUSTER_OBSERVER_TOKEN"
export HYDRAPIPELINE_SERVICES="hydracluster=$HYDRACLUSTER_SERVER,hydraexperiencelibrary=$HYDRAEXPERIENCELIBRARY_SERVER"

cargo build --release -p hydra -p hydra-tools --bin hydracluster --bin hydranode \
  --bin hydraexperiencelibrary --bin hydrapipeline --bin hydra-sim
bin=target/release
mkdir -p target/demo
# A demo fleet enrolls from one address and should show offline/online quickly (the
# machines of an earlier run, kept in ./hydra-data, go offline before the rollout
# lists the venue's nodes, so it leaves them out).
cat > target/demo/config.yaml <<YAML
enroll_per_minute: 0
# The console's rollout pages read the library with its admin token, which the
# library writes at its first start.
experienceLibrary:
  url: http://$LIBRARY_LISTEN
  token_file: $PWD/hydra-library-data/admin-token
heartbeat_timeout: 6s
heartbeat_interval: 2s
offline_check_interval: 1s
YAML
cat > target/demo/library.yaml <<YAML
rollout:
  max_parallel: 8
  node_deadline: 2m
YAML

wait_for() {
  for _ in $(seq 100); do
    curl -fsS "$1/api/v1/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 did not come up" >&2
  return 1
}

# Data dirs left by a run of an older Hydra are brought to this build's layout first
# (idempotent: a current one is left as it is).
[ -d hydra-data ] && "$bin/hydracluster" migrate --data hydra-data
[ -d hydra-library-data ] && "$bin/hydraexperiencelibrary" migrate --data hydra-library-data

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
"$bin/hydracluster" serve --listen "$LISTEN" --config target/demo/config.yaml &
pids+=($!)
wait_for "$HYDRACLUSTER_SERVER"
export HYDRACLUSTER_TOKEN="$(cat hydra-data/admin-token)"
HYDRAEXPERIENCELIBRARY_CLUSTER_URL="$HYDRACLUSTER_SERVER" HYDRAEXPERIENCELIBRARY_CLUSTER_TOKEN="$HYDRACLUSTER_TOKEN" \
  "$bin/hydraexperiencelibrary" serve --listen "$LIBRARY_LISTEN" --config target/demo/library.yaml \
  2> target/demo/library.log &
pids+=($!)
wait_for "$HYDRAEXPERIENCELIBRARY_SERVER"
export HYDRAEXPERIENCELIBRARY_TOKEN="$(cat hydra-library-data/admin-token)"
echo
echo "== the console: open $HYDRACLUSTER_SERVER/ and sign in with the admin token"
echo "   $HYDRACLUSTER_TOKEN"
echo "   (or the observer token $HYDRACLUSTER_OBSERVER_TOKEN: the same pages, no buttons)"

# The simulated fleet (staging, 3 s installs); its progress goes to a log.
"$bin/hydra-sim" --nodes "$NODES" --heads "$HEADS" --environment staging --provision-ms 3000 \
  --interval 2 --outages 0 > target/demo/sim.log 2>&1 &
pids+=($!)

# One real agent, enrolled through /enroll, approved into the same venue, running real
# commands (and reinstalling for real when the rollout reaches it).
agent_state=target/demo/agent-$$
"$bin/hydranode" enroll --server "$HYDRACLUSTER_SERVER" --name demo-real-body --state "$agent_state"
node=$(grep -o '"node_id": *"[^"]*"' "$agent_state/identity.json" | cut -d'"' -f4)
"$bin/hydracluster" approve "$node" --roles hydrabody --district sim-district --venue hall-a \
  --environment staging >/dev/null
HYDRA_LOG=warn "$bin/hydranode" run --state "$agent_state" --heartbeat-interval 2s &
pids+=($!)
sleep 5
echo; echo "== hydracluster exec $node \"uname -sr; uptime\""
"$bin/hydracluster" exec "$node" "uname -sr; uptime" --timeout 20s
echo; echo "== hydracluster nodes (first 10)"
"$bin/hydracluster" nodes | head -11 || true  # head closes the pipe early
echo; echo "== hydrapipeline status"
"$bin/hydrapipeline" status || true

sleep 2
echo; echo "== an experience at the simulated venues, a build, a promotion to staging"
exp="space-$$"
"$bin/hydraexperiencelibrary" create "$exp" --project space-game --district sim-district \
  --venue hall-a --venue hall-b --venue hall-c
"$bin/hydraexperiencelibrary" build "$exp" --build "b$$" --version 1.0.0 \
  --artifact-url https://release.example/space-game.tar.gz \
  --sha256 "$(printf 'demo' | sha256sum | cut -d' ' -f1)"
echo; echo "== the rollout, live (hydrapipeline watch; Ctrl-C to stop; try in another terminal:"
echo "   hydraexperiencelibrary rollouts | rollout pause|resume|cancel <id> | get $exp)"
"$bin/hydrapipeline" watch --types 'experience.*,rollout.*,provision.*' &
pids+=($!)
sleep 1
rollout=$("$bin/hydraexperiencelibrary" promote "$exp" --to staging)
echo "rollout $rollout started: watch it at $HYDRACLUSTER_SERVER/rollouts/$rollout"
wait "${pids[-1]}"
