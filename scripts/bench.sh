#!/usr/bin/env bash
# Runs every benchmark workload 3 times against a redis-server it starts on a free
# loopback port (and Redlock's three masters, and a six-node Redis Cluster), and the
# peers' workloads too, then writes BENCHMARKS.md (medians).
#   scripts/bench.sh            (about 10 minutes)
#   ROUNDS=1 DURATION=2 scripts/bench.sh   (a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
duration=${DURATION:-4}
command -v redis-server >/dev/null 2>&1 || { echo "redis-server missing: run scripts/test.sh first (it installs it)" >&2; exit 1; }
cargo build --release -p bidlock-cli
bin=target/release/bidlock
# rslock, the Rust Redlock client, as a peer: a crate of its own (not in the workspace).
CARGO_TARGET_DIR=target/peers cargo build --release --manifest-path bench/peers/rslock/Cargo.toml
rslock=target/peers/release/bidlock-peer-rslock
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize yes --logfile "$dir/redis.log"
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
url="redis://127.0.0.1:$port/0"
# Three more independent masters for Redlock.
rl_args=()
rl_ports=()
for i in 1 2 3; do
  p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$dir/rl$i"
  redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir/rl$i" --daemonize yes --logfile "$dir/rl$i/redis.log"
  rl_args+=(--redis-url "redis://127.0.0.1:$p/0")
  rl_ports+=("$p")
done
# A Redis Cluster: six nodes (three masters, three replicas). Its ports stay below the
# ephemeral range so that each bus port (port + 10000) is free too.
cl_ports=($(python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
ports = []
while len(ports) < 6:
    p = random.randrange(20000, 22700)
    if p not in ports and free(p) and free(p + 10000):
        ports.append(p)
print(" ".join(map(str, ports)))
PY
))
for p in "${cl_ports[@]}"; do
  mkdir -p "$dir/cl$p"
  redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 5000 --save "" --appendonly no --dir "$dir/cl$p" --daemonize yes --logfile "$dir/cl$p/redis.log"
done
trap 'for p in "$port" "${rl_ports[@]}" "${cl_ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done; rm -rf "$dir"' EXIT
for p in "${rl_ports[@]}" "${cl_ports[@]}"; do for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done; done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cl_ports[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 100); do
  ok=1; for p in "${cl_ports[@]}"; do redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || ok=0; done
  [ "$ok" = 1 ] && break; sleep 0.1
done
cl_url="redis+cluster://$(printf '127.0.0.1:%s,' "${cl_ports[@]}" | sed 's/,$//')"
cl_masters=($(redis-cli -p "${cl_ports[0]}" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8 {split($2, a, "[:@]"); print a[2]}'))
# Server CPU and script calls of each given node, for the per-master cost model.
snap() { for p in "$@"; do redis-cli -p "$p" info all | tr -d '\r' | awk -F'[:=,]' -v p="$p" '
  /^used_cpu_user:/ {u = $2} /^used_cpu_sys:/ {s = $2} /^cmdstat_evalsha:/ {c = $3} /^cmdstat_eval:/ {e = $3}
  END {printf "%s %s %d ", p, u + s, c + e}'; done; echo; }
# One JSON line per node: CPU seconds and the acquire+release pairs it served. The bench's
# own count of pairs is split over the nodes by their script calls: a call may carry a
# batch of acquires (group commit), so calls alone would undercount the pairs.
cost() { python3 -c 'import json, sys
backend, before, after, bench = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), json.loads(sys.argv[4])
total = bench["pairs_per_sec"] * bench["duration_s"]
calls = [int(after[i + 2]) - int(before[i + 2]) for i in range(0, len(before), 3)]
for n, i in enumerate(range(0, len(before), 3)):
    cpu = float(after[i + 1]) - float(before[i + 1]); pairs = round(total * calls[n] / sum(calls)) if sum(calls) else 0
    print(json.dumps({"workload": "server-cost", "backend": backend, "node": int(before[i]), "workers": 32,
        "server_cpu_s": round(cpu, 3), "pairs": pairs, "script_calls": calls[n],
        "cpu_us_per_pair": round(cpu * 1e6 / pairs, 2) if pairs else None}))' "$@"; }
# bidlock's Python package, built (release) into the peers' virtualenv once per run.
bench/peers/run.sh setup
out=target/bench.jsonl
: > "$out"
run() { "$@" | tee -a "$out"; }
for round in $(seq "$rounds"); do
  echo "round $round/$rounds" >&2
  run $bin bench uncontended --workers 1 --duration "$duration" --backend redis --redis-url "$url"
  # The server's cost per pair, without the raw baseline's commands mixed in.
  before=$(snap "$port")
  line=$($bin bench uncontended --workers 32 --duration "$duration" --backend redis --redis-url "$url" --no-baseline)
  cost redis "$before" "$(snap "$port")" "$line" | tee -a "$out"
  run $bin bench uncontended --workers 32 --duration "$duration" --backend redis --redis-url "$url"
  run $bin bench hot-key --workers 8 --hold-us 1000 --duration "$duration" --backend redis --redis-url "$url"
  # Fairness across processes: the same 8 workers as 4 processes of 2.
  run $bin bench hot-key --workers 2 --processes 4 --hold-us 1000 --duration "$duration" --backend redis --redis-url "$url"
  run $rslock uncontended --workers 1 --duration "$duration" --redis-url "$url"
  run $rslock uncontended --workers 32 --duration "$duration" --redis-url "$url"
  run $rslock hot-key --workers 8 --hold-us 1000 --duration "$duration" --redis-url "$url"
  # The cluster in the same run (no raw baseline: it talks to one server).
  run $bin bench uncontended --workers 1 --duration "$duration" --backend redis --redis-url "$cl_url"
  before=$(snap "${cl_masters[@]}")
  line=$(run $bin bench uncontended --workers 32 --duration "$duration" --backend redis --redis-url "$cl_url")
  cost cluster "$before" "$(snap "${cl_masters[@]}")" "$line" | tee -a "$out"
  run $bin bench hot-key --workers 8 --hold-us 1000 --duration "$duration" --backend redis --redis-url "$cl_url"
  run $bin bench uncontended --workers 1 --duration "$duration" --backend redis "${rl_args[@]}" --no-baseline
  run $bin bench uncontended --workers 32 --duration "$duration" --backend redis "${rl_args[@]}" --no-baseline
  run $bin bench hot-key --workers 8 --hold-us 1000 --duration "$duration" --backend redis "${rl_args[@]}" --no-baseline
  run $bin bench uncontended --workers 1 --duration "$duration" --backend memory
  run $bin bench uncontended --workers 32 --duration "$duration" --backend memory
  run $bin bench hot-key --workers 8 --hold-us 1000 --duration "$duration" --backend memory
  run $bin bench footprint --locks 200000 --backend memory
  for peer in redis-py python-redis-lock bidlock-py; do
    run bench/peers/run.sh uncontended --peer $peer --workers 1 --duration "$duration" --redis-url "$url"
    run bench/peers/run.sh uncontended --peer $peer --workers 32 --duration "$duration" --redis-url "$url"
    run bench/peers/run.sh hot-key --peer $peer --workers 8 --hold-us 1000 --duration "$duration" --redis-url "$url"
  done
  for p in "$port" "${rl_ports[@]}" "${cl_masters[@]}"; do redis-cli -p "$p" flushall >/dev/null; done
done
python3 scripts/render_benchmarks.py "$out" "$rounds" "$duration" "$(redis-server --version | awk '{print $3}')" > BENCHMARKS.md
echo "wrote BENCHMARKS.md" >&2
