#!/usr/bin/env bash
# Runs every test of the workspace. Installs what is missing first (redis-server, which
# the integration tests start on free loopback ports; promtool and prometheus, which check
# the metrics and alerts), so it works on a fresh machine.
#
# Every part runs even when an earlier one fails (cargo test with --no-fail-fast, then
# each script in scripts/test.d/ in order); the failures are listed together at the end
# and the exit code is 1 if there was any. Extra arguments go to both cargo test runs.
set -uo pipefail
cd "$(dirname "$0")/.."

need_install=()
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_install+=(redis-tools)
command -v promtool >/dev/null 2>&1 || need_install+=(prometheus)
if [ ${#need_install[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing: ${need_install[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_install[@]}" >/dev/null \
    || { echo "test.sh: could not install ${need_install[*]}" >&2; exit 1; }
fi
export BIDLOCK_REQUIRE_PROMTOOL=1

failed=()
part() {
  local name=$1 start=$SECONDS
  shift
  echo "== test part: $name" >&2
  if "$@"; then
    echo "== test part: $name passed in $((SECONDS - start)) s" >&2
  else
    echo "== test part: $name FAILED in $((SECONDS - start)) s" >&2
    failed+=("$name")
  fi
}

# cargo's own summary lists every failing test of every binary (--no-fail-fast); the log
# is kept so the failures can be repeated below, after everything else has run.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo_tests() {
  cargo test --workspace --all-targets --all-features --no-fail-fast "$@" 2>&1 | tee "$log"
  return "${PIPESTATUS[0]}"
}
part "cargo test" cargo_tests "$@"
part "doctests" cargo test --workspace --doc --all-features --no-fail-fast "$@"
for script in scripts/test.d/*.sh; do
  part "$(basename "$script" .sh)" "$script"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo >&2
  echo "== FAILED: ${failed[*]}" >&2
  # The failing Rust tests by name, from cargo's summaries.
  grep -E '^    [A-Za-z0-9_:]+$|^error: test failed|^test .* FAILED$' "$log" >&2 || true
  exit 1
fi
echo "== all test parts passed" >&2
