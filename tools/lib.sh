# What the scripts in tools/ share; sourced (`. "$(dirname "$0")/lib.sh"`), never run.

# A loopback port that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_nodes WANT URL TOKEN FILTER SECONDS LOG: until WANT of the nodes that GET URL
# lists pass FILTER (a Python expression over the node `n`), asking every 0.2 s for
# SECONDS; then prints how many did. Fails with LOG's last lines if they never do.
wait_nodes() {
  local want=$1 url=$2 token=$3 filter=$4 seconds=$5 log=$6 found=0 i
  for i in $(seq 1 $((seconds * 5))); do
    found="$(curl -fsS -H "Authorization: Bearer $token" "$url" |
      python3 -c "import json,sys; print(sum(1 for n in json.load(sys.stdin) if $filter))" || echo 0)"
    if [[ "$found" -ge "$want" ]]; then
      echo "$found"
      return 0
    fi
    sleep 0.2
  done
  echo "only $found of $want nodes after $seconds s; $log:" >&2
  tail -20 "$log" >&2
  return 1
}
