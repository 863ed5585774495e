#!/usr/bin/env bash
# Bytes on disk: runs one fixed hydra-sim scenario against a given hydracluster binary on a fresh data dir and samples the event count, the encoded bytes of those events and du of the data dir over time.
#
# Usage: tools/disk-usage.sh HYDRACLUSTER_BINARY OUT_DIR SCENARIO   (from anywhere)
#   SCENARIO is one of
#     heartbeat  NODES bodies heartbeating every INTERVAL s, no churn, no outages, no
#                commands, for SECONDS_RUN: does the data dir grow once they are enrolled?
#     fleet-day  NODES bodies + HEADS heads with CHURN/OUTAGES, and one command every
#                CMD_EVERY s (round-robin over the bodies) printing CMD_BYTES bytes, for
#                SECONDS_RUN: bytes per node-hour at these rates.
#     large      NODES bodies changing something on CHURN % of their heartbeats every
#                INTERVAL s with no per-node event budget, until EVENTS events (or
#                SECONDS_RUN): data dir bytes / encoded event bytes on a large log.
#     reclaim    COMMANDS commands printing CMD_BYTES bytes each, then a restart with
#                exec_output_retention 1s: du every SAMPLE_EVERY s for SECONDS_RUN while
#                the outputs are pruned (needs a build with the output store); then
#                the same COMMANDS again on new nodes: is the freed space reused?
# Each variable has a default per scenario (the `case` below). The same scenario runs
# against any build whose HTTP API is today's; hydra-sim is today's (SIM, default
# target/debug/hydra-sim beside this script). OUT_DIR must not exist; it keeps the
# data dir, the logs and samples.tsv.
#
# What is counted:
#   events       the log's head seq (GET /api/v1/audit/digest)
#   record_bytes the sum of the stored records' lengths (format byte, schema, bincode
#                envelope: exactly the events in the segments, without their headers, or
#                in sled's `events` tree before layout 3, without keys), read from
#                a backup (GET /api/v1/backup): each E frame's length minus its 40-byte
#                seq and prev_hash. Keys, the per-node index, the projection snapshots,
#                the tokens and (after schema 3) the output store are not in it.
#   du_*         `du -sb` of <data>/log (sled: its `db` file, its page-table snapshots
#                `snap.*`, `blobs/` for large values) and of the rest of the data dir,
#                without the fixed 8 MiB `ballast` file (apparent sizes; du_data_alloc
#                is the same without --apparent-size: the blocks allocated); from layout
#                3, du_events, du_snapshots and du_outputs: <data>/events (the segment
#                files), <data>/snapshots (projection snapshots) and <data>/outputs.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  sed -n '4,/^#$/p' "$0" >&2
  exit 2
fi
BIN="$(realpath "$1")"
OUT="$2"
SCENARIO="$3"
here="$(cd "$(dirname "$0")/.." && pwd)"
SIM="${SIM:-$here/target/debug/hydra-sim}"
case "$SCENARIO" in
  heartbeat) : "${NODES:=200}" "${HEADS:=0}" "${INTERVAL:=1}" "${CHURN:=0}" "${OUTAGES:=0}" "${SECONDS_RUN:=240}" "${SAMPLE_EVERY:=30}" ;;
  fleet-day) : "${NODES:=100}" "${HEADS:=20}" "${INTERVAL:=2}" "${CHURN:=5}" "${OUTAGES:=1}" "${SECONDS_RUN:=300}" "${SAMPLE_EVERY:=60}" "${CMD_EVERY:=0.5}" "${CMD_BYTES:=4096}" ;;
  large) : "${NODES:=1000}" "${HEADS:=0}" "${INTERVAL:=0.5}" "${CHURN:=100}" "${OUTAGES:=0}" "${SECONDS_RUN:=900}" "${SAMPLE_EVERY:=60}" "${EVENTS:=300000}" ;;
  reclaim) : "${NODES:=20}" "${HEADS:=0}" "${INTERVAL:=1}" "${CHURN:=0}" "${OUTAGES:=0}" "${SECONDS_RUN:=240}" "${SAMPLE_EVERY:=15}" "${COMMANDS:=500}" "${CMD_BYTES:=65536}" ;;
  *)
    echo "unknown scenario $SCENARIO (heartbeat, fleet-day, large, reclaim)" >&2
    exit 2
    ;;
esac
[[ -x "$BIN" ]] || { echo "$BIN is not an executable" >&2; exit 2; }
[[ -x "$SIM" ]] || { echo "hydra-sim not found at $SIM (cargo build -p hydra-tools --bin hydra-sim, or set SIM)" >&2; exit 2; }
[[ -e "$OUT" ]] && { echo "$OUT exists: give a new directory" >&2; exit 2; }
mkdir -p "$OUT"
OUT="$(realpath "$OUT")"
DATA="$OUT/data"

ADMIN=disk-admin-token-0123456789
FLEET=disk-fleet-token-0123456789
pids=()
server_pid=""
cleanup() {
  local rc=$?
  for pid in "${pids[@]}" $server_pid; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}" $server_pid; do wait "$pid" 2>/dev/null || true; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
port="$(free_port)"
SERVER="http://127.0.0.1:$port"
api() { curl -fsS -H "Authorization: Bearer $ADMIN" "$@"; }

# start_server CONFIG_YAML: (re)starts the server on $DATA with that config.
start_server() {
  printf '%s\n' "$1" >"$OUT/cluster.yaml"
  HYDRA_LOG="${HYDRA_LOG:-info}" HYDRACLUSTER_ADMIN_TOKEN="$ADMIN" HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN="$FLEET" \
    "$BIN" serve --listen "127.0.0.1:$port" --data "$DATA" --config "$OUT/cluster.yaml" >>"$OUT/cluster.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    curl -fsS "$SERVER/api/v1/health" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "the server did not come up; $OUT/cluster.log:" >&2
  tail -20 "$OUT/cluster.log" >&2
  return 1
}
stop_sim() {
  kill "${pids[0]}"
  wait "${pids[0]}" 2>/dev/null || true
  pids=()
}
stop_server() {
  kill -INT "$server_pid"
  wait "$server_pid" || true
  server_pid=""
}

# The sum of the record lengths in a backup of the live log, and how many.
record_bytes() {
  api "$SERVER/api/v1/backup" | python3 -c '
import gzip, struct, sys
data = gzip.decompress(sys.stdin.buffer.read())
assert data[:8] == b"HYDRABAK", "not a backup"
pos, events, total = 12, 0, 0
while pos < len(data):
    tag, n = data[pos], struct.unpack(">I", data[pos + 1:pos + 5])[0]
    if tag == 0x45:
        events += 1
        total += n - 40
    pos += 5 + n
print(events, total)'
}

du_b() { if [[ -e "$1" ]]; then du -sb "$1" | cut -f1; else echo 0; fi; }
# Allocated rather than apparent bytes (holes and preallocation show here).
du_alloc() { if [[ -e "$1" ]]; then du -s -B1 "$1" | cut -f1; else echo 0; fi; }
# du of the data dir: sled's db file, its snapshots, blobs, the whole log/, the rest.
du_row() {
  local snaps=0 f
  for f in "$DATA"/log/snap.*; do [[ -e "$f" ]] && snaps=$((snaps + $(du_b "$f"))); done
  local all ballast
  all="$(du_b "$DATA")"
  ballast="$(du_b "$DATA/ballast")"
  printf '%s\t%s\t%s\t%s\t%s\t%s' "$(du_b "$DATA/log/db")" "$snaps" "$(du_b "$DATA/log/blobs")" \
    "$(du_b "$DATA/log")" "$((all - ballast))" "$(($(du_alloc "$DATA") - $(du_alloc "$DATA/ballast")))"
  printf '\t%s\t%s\t%s' "$(du_b "$DATA/events")" "$(du_b "$DATA/snapshots")" "$(du_b "$DATA/outputs")"
}

started="$(date +%s)"
printf 't_s\tphase\tevents\trecords\trecord_bytes\tdu_db\tdu_snap\tdu_blobs\tdu_log\tdu_data\tdu_data_alloc\tdu_events\tdu_snapshots\tdu_outputs\n' >"$OUT/samples.tsv"
# sample PHASE [records]: one row; with `records`, the backup count too (heavy on a large log).
sample() {
  local seq rec="-	-"
  seq="$(api "$SERVER/api/v1/audit/digest" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')"
  if [[ "${2:-}" == records ]]; then rec="$(record_bytes | tr ' ' '\t')"; fi
  printf '%s\t%s\t%s\t%s\t%s\n' $(($(date +%s) - started)) "$1" "$seq" "$rec" "$(du_row)" | tee -a "$OUT/samples.tsv"
}

config="enroll_per_minute: 0
max_pending_nodes: 100000"
case "$SCENARIO" in
  fleet-day) config+="
heartbeat_interval: ${INTERVAL}s
heartbeat_timeout: 20s" ;;
  large) config+="
heartbeat_event_interval: 0s" ;;
esac
start_server "$config"
ballast_bytes="$(du_b "$DATA/ballast")"

# start_sim DISTRICT LOG: the simulated fleet, in pids[0].
start_sim() {
  local args=(--server "$SERVER" --admin-token "$ADMIN" --nodes "$NODES" --heads "$HEADS" --interval "$INTERVAL"
    --churn "$CHURN" --outages "$OUTAGES" --district "$1" --venues hall-a,hall-b,hall-c)
  [[ "$SCENARIO" == heartbeat || "$SCENARIO" == large ]] && args+=(--no-exec)
  HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN="$FLEET" "$SIM" "${args[@]}" >"$2" 2>&1 &
  pids=($!)
}
# wait_enrolled DISTRICT LOG: until every simulated node of DISTRICT is approved.
wait_enrolled() {
  wait_nodes $((NODES + HEADS)) "$SERVER/api/v1/nodes?district=$1&status=approved&limit=5000" "$ADMIN" True 120 "$2" \
    >/dev/null || exit 1
  sleep 3 # the first heartbeats of the last nodes land
}
start_sim disk-district "$OUT/sim.log"
wait_enrolled disk-district "$OUT/sim.log"
echo "== $SCENARIO on $BIN: $NODES bodies + $HEADS heads enrolled; ballast $ballast_bytes B (not counted)"
printf 't_s\tphase\tevents\trecords\trecord_bytes\tdu_db\tdu_snap\tdu_blobs\tdu_log\tdu_data\tdu_data_alloc\tdu_events\tdu_snapshots\tdu_outputs\n'
sample enrolled records
enrolled_at="$(date +%s)"

bodies() {
  api "$SERVER/api/v1/nodes?district=disk-district&kind=body&limit=5000" |
    python3 -c 'import json,sys; print("\n".join(n["id"] for n in json.load(sys.stdin)))'
}
# run_commands DISTRICT TAG: COMMANDS commands `print CMD_BYTES TAG<n>` round-robin on
# the district's bodies, then waits until each is done (one process: a curl per
# command would make this the slow part).
run_commands() {
  python3 - "$SERVER" "$ADMIN" "$1" "$2" "$COMMANDS" "$CMD_BYTES" <<'PY'
import json, sys, urllib.request
server, token, district, tag, count, size = sys.argv[1:7]
def call(path, body=None):
    req = urllib.request.Request(server + path, method="GET" if body is None else "POST",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=90) as r:
        return json.load(r)
ids = [n["id"] for n in call(f"/api/v1/nodes?district={district}&kind=body&limit=5000")]
last = {}
for n in range(int(count)):
    node = ids[n % len(ids)]
    last[node] = call(f"/api/v1/nodes/{node}/exec", {"command": f"print {size} {tag}{n}", "timeout": 60})["id"]
# A node runs its queue in order: once its last command is done, all of them are.
for node, exec_id in last.items():
    status = call(f"/api/v1/nodes/{node}/exec/{exec_id}/result?wait=60")["status"]
    if status != "completed":
        sys.exit(f"{exec_id} on {node}: {status}")
PY
}
# submit N_BYTES TAG NODE: queue `print N_BYTES TAG` on NODE; prints the exec id.
submit() {
  api -X POST -H 'Content-Type: application/json' --data "{\"command\":\"print $1 $2\",\"timeout\":60}" \
    "$SERVER/api/v1/nodes/$3/exec" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

case "$SCENARIO" in
  heartbeat)
    while (($(date +%s) - enrolled_at < SECONDS_RUN)); do
      sleep "$SAMPLE_EVERY"
      sample heartbeats records
    done
    ;;
  fleet-day)
    mapfile -t ids < <(bodies)
    n=0
    next_sample=$((enrolled_at + SAMPLE_EVERY))
    while (($(date +%s) - enrolled_at < SECONDS_RUN)); do
      submit "$CMD_BYTES" "c$n" "${ids[$((n % ${#ids[@]}))]}" >/dev/null || echo "command $n refused" >&2
      n=$((n + 1))
      sleep "$CMD_EVERY"
      if (($(date +%s) >= next_sample)); then
        sample "fleet:$n-commands" records
        next_sample=$((next_sample + SAMPLE_EVERY))
      fi
    done
    sleep 2
    sample "end:$n-commands" records
    echo "-- hydra-sim: $(tail -1 "$OUT/sim.log")"
    ;;
  large)
    while (($(date +%s) - enrolled_at < SECONDS_RUN)); do
      sleep "$SAMPLE_EVERY"
      row="$(sample churn)"
      echo "$row"
      [[ "$(cut -f3 <<<"$row")" -ge "$EVENTS" ]] && break
    done
    stop_sim
    sleep 2
    sample end records
    ;;
  reclaim)
    run_commands disk-district r
    sample "$COMMANDS-outputs" records
    stop_sim
    stop_server
    start_server "$config
exec_output_retention: 1s
exec_watchdog_interval: 1s"
    restarted="$(date +%s)"
    sample restarted
    while (($(date +%s) - restarted < SECONDS_RUN)); do
      sleep "$SAMPLE_EVERY"
      sample pruning
    done
    echo "-- pruned: $(grep -c 'pruned command outputs' "$OUT/cluster.log" || true) watchdog rounds logged"
    # Refill: the same outputs again (default retention, a new set of nodes), to see
    # whether sled reuses the space the pruning freed inside its files.
    stop_server
    start_server "$config"
    start_sim disk-refill "$OUT/sim-refill.log"
    wait_enrolled disk-refill "$OUT/sim-refill.log"
    sample refill-enrolled
    run_commands disk-refill f
    sample "refilled-$COMMANDS" records
    ;;
esac
stop_server
echo "samples in $OUT/samples.tsv"
