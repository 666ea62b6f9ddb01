#!/usr/bin/env bash
# Runs the peers' workloads (redis-py Lock, python-redis-lock) in a virtualenv it makes.
#   bench/peers/run.sh uncontended --peer redis-py --workers 32 --duration 5 --redis-url URL
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../../target/peers-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
fi
exec "$venv/bin/python" "$here/peers.py" "$@"
