#!/usr/bin/env bash
# See Hydra in action: the control plane on its embedded sled log (./hydra-data), a
# simulated fleet heartbeating and answering commands, one real hydranode agent running
# a real command through the exec queue, the fleet table, then the live event stream.
# Ctrl-C stops everything; the data stays in ./hydra-data.
set -euo pipefail
cd "$(dirname "$0")"
NODES="${NODES:-40}"
LISTEN="${HYDRACLUSTER_LISTEN:-127.0.0.1:8080}"
export HYDRACLUSTER_SERVER="http://$LISTEN"

cargo build --release -p hydra -p hydra-tools --bin hydracluster --bin hydranode --bin hydra-sim
bin=target/release
mkdir -p target/demo
# A demo fleet enrolls from one address and should show offline/online quickly.
cat > target/demo/config.yaml <<YAML
enroll_per_minute: 0
heartbeat_timeout: 15s
offline_check_interval: 1s
YAML

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
"$bin/hydracluster" serve --listen "$LISTEN" --config target/demo/config.yaml &
pids+=($!)
for _ in $(seq 50); do
  curl -fsS "$HYDRACLUSTER_SERVER/api/v1/health" >/dev/null 2>&1 && break
  sleep 0.1
done
export HYDRACLUSTER_TOKEN="$(cat hydra-data/admin-token)"
# The simulated fleet's progress goes to a log, so the terminal shows the events.
"$bin/hydra-sim" --nodes "$NODES" --interval 2 > target/demo/sim.log &
pids+=($!)

# One real agent, enrolled through /enroll, approved, running real commands.
agent_state=target/demo/agent-$$
"$bin/hydranode" enroll --server "$HYDRACLUSTER_SERVER" --name demo-real-body --state "$agent_state"
node=$(grep -o '"node_id": *"[^"]*"' "$agent_state/identity.json" | cut -d'"' -f4)
"$bin/hydracluster" approve "$node" --roles hydrabody --district demo --venue lab >/dev/null
HYDRA_LOG=warn "$bin/hydranode" run --state "$agent_state" --heartbeat-interval 2s &
pids+=($!)
sleep 4
echo; echo "== hydracluster exec $node \"uname -sr; uptime\""
"$bin/hydracluster" exec "$node" "uname -sr; uptime" --timeout 20s
echo; echo "== hydracluster nodes (first 15)"
"$bin/hydracluster" nodes | head -16
echo; echo "== live events (GET /api/v1/events; the fleet's progress is in target/demo/sim.log; Ctrl-C to stop)"
curl -sN -H "Authorization: Bearer $HYDRACLUSTER_TOKEN" \
  "$HYDRACLUSTER_SERVER/api/v1/events?since=$(curl -s "$HYDRACLUSTER_SERVER/api/v1/health" | sed 's/.*"last_event_id":\([0-9]*\).*/\1/')" \
  | sed -u -n 's/^data: //p'
