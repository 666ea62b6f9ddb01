#!/usr/bin/env bash
# The agent fleet, for a bounded time, against a real Redis: 0 duplicate bids (the
# agent exits 1 otherwise). Its own tests cover signals, /metrics, /ready and /live.
set -euo pipefail
cd "$(dirname "$0")/../.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$dir" --daemonize yes --logfile "$dir/redis.log"
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
# The binary cargo test built (scripts/test.sh runs this after it): `cargo run` would
# build it again with other features for the library, some 45 s on 2 cores.
[ -x target/debug/bidlock-agent ] || cargo build -q -p bidlock-agent
REDIS_URL="redis://127.0.0.1:$port/0" USE_REDIS_LOCKS=true \
  target/debug/bidlock-agent --instances 3 --tasks 4 --seconds 5 --rate 500
