#!/usr/bin/env bash
# Runs every test of the workspace. Installs what is missing first (redis-server, which
# the integration tests start on free loopback ports; promtool, which checks the
# Prometheus output), so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

need_install=()
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
command -v promtool >/dev/null 2>&1 || need_install+=(prometheus)
if [ ${#need_install[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing: ${need_install[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_install[@]}" >/dev/null
fi
export BIDLOCK_REQUIRE_PROMTOOL=1

cargo test --workspace --all-targets --all-features "$@"
cargo test --workspace --doc --all-features "$@"

# The layout ARCHITECTURE.md promises: no module cycles, no source file over 600 lines.
python3 scripts/lint-layout.py

# Deployment files cannot run here (no Docker engine, no cluster): lint them, and check
# the alert rules (syntax and their unit tests) and the Prometheus config with promtool.
scripts/lint-deploy.sh
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
promtool check config deploy/prometheus/prometheus.yml

# The agent fleet, for a bounded time, against a real Redis: 0 duplicate bids (the
# agent exits 1 otherwise). Its own tests cover signals, /metrics, /ready and /live.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$dir" --daemonize yes --logfile "$dir/redis.log"
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS_URL="redis://127.0.0.1:$port/0" USE_REDIS_LOCKS=true \
  cargo run -q -p bidlock-agent -- --instances 3 --tasks 4 --seconds 5 --rate 500

# --- Python package (crates/bidlock-py) --------------------------------------------
# Built once, in release, the way a user installs it (pip → maturin → cargo), into a
# virtualenv under target/, then its pytest suite against real redis-server processes
# (the fixtures start them) and the CLI built above.
py_start=$SECONDS
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
py_venv="$PWD/target/py-venv"
[ -x "$py_venv/bin/python" ] || python3 -m venv "$py_venv"
"$py_venv/bin/pip" install -q --disable-pip-version-check -r crates/bidlock-py/requirements-test.txt
# maturin is already in the virtualenv: no isolated build environment to fetch again.
PATH="$py_venv/bin:$PATH" "$py_venv/bin/pip" install -q --disable-pip-version-check \
  --no-build-isolation --force-reinstall --no-deps ./crates/bidlock-py
if [ -x target/debug/bidlock ]; then export BIDLOCK_BIN="$PWD/target/debug/bidlock"; fi
"$py_venv/bin/python" -m pytest -q -p no:cacheprovider crates/bidlock-py/tests
echo "python package: built and tested in $((SECONDS - py_start)) s" >&2
# --- end of the Python package block ------------------------------------------------
