#!/usr/bin/env bash
# The Python package (crates/bidlock-py): built once, in release, the way a user installs
# it (pip → maturin → cargo), into a virtualenv under target/, then its pytest suite
# against real redis-server processes (the fixtures start them) and the CLI built by
# cargo test.
set -euo pipefail
cd "$(dirname "$0")/../.."
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
