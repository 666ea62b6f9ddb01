#!/usr/bin/env bash
# The Python package from its sdist (target/wheels/bidlock-*.tar.gz, built with the wheel
# by scripts/build-wheel.sh), as a user on a platform without a wheel installs it: pip
# builds it through its PEP 517 backend (maturin), with Rust present, and installs it
# into a fresh virtualenv; then the pytest suite runs against that install.
#
# pip runs from scripts/build-wheel.sh's tool virtualenv (`pip wheel`, then `pip install`
# into the fresh one): the same maturin and zig as the wheel's build, on the workspace's
# target directory, so cargo reuses what it compiled for the wheel: the sdist mirrors the
# workspace's layout, and cargo keys path crates by their place in the workspace. A
# source file missing from the sdist would make its crate stale and fail this build. (A
# maturin of another virtualenv names another zig linker wrapper, and cargo then
# rebuilds all 114 crates: 9 minutes here under load.)
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
sdist=$(ls target/wheels/bidlock-*.tar.gz 2>/dev/null || true)
if [ -z "$sdist" ] || [ ! -x target/py-build/bin/maturin ]; then
  scripts/build-wheel.sh
  sdist=$(ls target/wheels/bidlock-*.tar.gz)
fi
tools="$PWD/target/py-build"
built="$PWD/target/sdist-wheel"
rm -rf "$built"
export BIDLOCK_WHEEL_PROFILE=${BIDLOCK_WHEEL_PROFILE:-dev}
CARGO_TARGET_DIR="$PWD/target" MATURIN_PEP517_ARGS="--zig --compatibility manylinux2014 --profile $BIDLOCK_WHEEL_PROFILE" PATH="$tools/bin:$PATH" \
  "$tools/bin/pip" wheel -q --disable-pip-version-check --no-build-isolation --no-deps -w "$built" "$sdist"
venv="$PWD/target/py-sdist-test"
python3 -m venv --clear "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r crates/bidlock-py/requirements-test.txt
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps "$built"/bidlock-*.whl
[ -x target/debug/bidlock ] || cargo build -q -p bidlock-cli
BIDLOCK_BIN="$PWD/target/debug/bidlock" "$venv/bin/python" -m pytest -q -p no:cacheprovider crates/bidlock-py/tests
echo "python package: sdist built and tested in $((SECONDS - start)) s" >&2
