#!/usr/bin/env bash
# Runs the peers' workloads (redis-py Lock, python-redis-lock, bidlock's Python package)
# in a virtualenv it makes.
#   bench/peers/run.sh setup     installs the peers (requirements.txt) and (re)installs
#                                bidlock's package: the wheel that scripts/build-wheel.sh
#                                builds, as users install it
#   bench/peers/run.sh uncontended --peer redis-py --workers 32 --duration 5 --redis-url URL
# A run installs nothing when the virtualenv is ready (pip's own start-up would otherwise
# add a second of CPU before every measured run).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
venv="$root/target/peers-venv"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "${1:-}" = setup ] || ! cmp -s "$here/requirements.txt" "$stamp"; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi
if [ "${1:-}" = setup ] || ! "$venv/bin/python" -c 'import bidlock' 2>/dev/null; then
  "$root/scripts/build-wheel.sh" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$root"/target/wheels/bidlock-*.whl >&2
  [ "${1:-}" = setup ] && exit 0
fi
exec "$venv/bin/python" "$here/peers.py" "$@"
