#!/usr/bin/env bash
# The Python package as users install it: the wheel that scripts/build-wheel.sh builds
# (once, in the dev profile unless BIDLOCK_WHEEL_PROFILE says otherwise), installed
# into a fresh virtualenv whose PATH has no cargo or rustc, then its pytest suite against real redis-server processes (the fixtures start them)
# and the CLI built by cargo test, stubtest against the installed package, and
# mypy --strict on the package and on the guide's example.
set -euo pipefail
cd "$(dirname "$0")/../.."
py_start=$SECONDS
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
# The dev profile: what is tested is the packaging and the code, not its speed (the
# bench measures the release build); 41-python-sdist builds on the same profile.
export BIDLOCK_WHEEL_PROFILE=${BIDLOCK_WHEEL_PROFILE:-dev}
scripts/build-wheel.sh
wheel=$(ls target/wheels/bidlock-*.whl)
# The CLI for the interop tests, built now: the tests run where cargo is not.
[ -x target/debug/bidlock ] || cargo build -q -p bidlock-cli
venv="$PWD/target/py-wheel-test"
python3 -m venv --clear "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r crates/bidlock-py/requirements-test.txt
install_start=$(date +%s.%N)
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps "$wheel"
install_s=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$install_start" "$(date +%s.%N)")
echo "python package: pip install of $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB): ${install_s} s" >&2

# What the tests see: the virtualenv, redis-server and the system's tools, no Rust.
no_rust() {
  env -i HOME="$HOME" LANG=C.UTF-8 PATH="$venv/bin:/usr/local/bin:/usr/bin:/bin" \
    BIDLOCK_BIN="$PWD/target/debug/bidlock" "$@"
}
if no_rust sh -c 'command -v cargo || command -v rustc' >/dev/null; then
  echo "40-python: cargo or rustc is on the test PATH; the wheel test would not prove anything" >&2
  exit 1
fi
no_rust "$venv/bin/python" -m pytest -q -p no:cacheprovider crates/bidlock-py/tests
# stubtest imports the installed package; run it outside the source tree.
(cd "$venv" && no_rust "$venv/bin/python" -m mypy.stubtest bidlock)
no_rust "$venv/bin/python" -m mypy --strict --no-incremental crates/bidlock-py/python/bidlock crates/bidlock-py/examples/guide.py
echo "python package: wheel built and tested in $((SECONDS - py_start)) s" >&2
