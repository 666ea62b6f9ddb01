#!/usr/bin/env bash
# Runs the peers' workloads (redis-py Lock, python-redis-lock, bidlock's Python package)
# in a virtualenv it makes.
#   bench/peers/run.sh setup     (re)installs bidlock's package from crates/bidlock-py
#   bench/peers/run.sh uncontended --peer redis-py --workers 32 --duration 5 --redis-url URL
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../../target/peers-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
fi
if [ "${1:-}" = setup ] || ! "$venv/bin/python" -c 'import bidlock' 2>/dev/null; then
  # maturin runs cargo in the workspace, so the release build is shared with other runs.
  PATH="$venv/bin:$PATH" "$venv/bin/pip" install -q --no-build-isolation "$here/../../crates/bidlock-py" >&2
  [ "${1:-}" = setup ] && exit 0
fi
exec "$venv/bin/python" "$here/peers.py" "$@"
