#!/usr/bin/env bash
# Runs every benchmark workload 3 times against a redis-server it starts on a free
# loopback port, and the peers' workloads too, then writes BENCHMARKS.md (medians).
#   scripts/bench.sh            (about 5 minutes)
#   ROUNDS=1 DURATION=2 scripts/bench.sh   (a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
duration=${DURATION:-4}
command -v redis-server >/dev/null 2>&1 || { echo "redis-server missing: run scripts/test.sh first (it installs it)" >&2; exit 1; }
cargo build --release -p bidlock-cli
bin=target/release/bidlock
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
trap 'for p in "$port" "${rl_ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done; rm -rf "$dir"' EXIT
for p in "${rl_ports[@]}"; do for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done; done
# bidlock's Python package, built (release) into the peers' virtualenv once per run.
bench/peers/run.sh setup
out=target/bench.jsonl
: > "$out"
run() { "$@" | tee -a "$out"; }
for round in $(seq "$rounds"); do
  echo "round $round/$rounds" >&2
  run $bin bench uncontended --workers 1 --duration "$duration" --backend redis --redis-url "$url"
  run $bin bench uncontended --workers 32 --duration "$duration" --backend redis --redis-url "$url"
  run $bin bench hot-key --workers 8 --hold-us 1000 --duration "$duration" --backend redis --redis-url "$url"
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
  for p in "$port" "${rl_ports[@]}"; do redis-cli -p "$p" flushall >/dev/null; done
done
python3 scripts/render_benchmarks.py "$out" "$rounds" "$duration" "$(redis-server --version | awk '{print $3}')" > BENCHMARKS.md
echo "wrote BENCHMARKS.md" >&2
