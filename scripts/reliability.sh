#!/usr/bin/env bash
# Runs the reliability suite (faults, load, soak, holder processes, the randomized
# checker) against real redis-server processes and writes RELIABILITY.md from the figures
# the tests record; nothing on the page is typed in.
#   scripts/reliability.sh          CI-sized profile (a few minutes)
#   scripts/reliability.sh --long   16 instances x 10,000 postings, 60 s soak, 8 s faults,
#                                   and the randomized checker for 20 minutes
#                                   (BIDLOCK_CHAOS_SECS to change it; at least 1200)
# A failing test does not stop the page from being written (its figures show what
# failed); the script then exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null 2>&1 || { echo "redis-server missing: run scripts/test.sh first (it installs it)" >&2; exit 1; }

profile=ci
if [ "${1:-}" = "--long" ]; then
  profile=long
  export BIDLOCK_LOAD_POSTINGS=10000 BIDLOCK_SOAK_SECS=60 BIDLOCK_FAULT_SECS=8
  export BIDLOCK_CHAOS_SECS="${BIDLOCK_CHAOS_SECS:-1200}"
  if [ "$BIDLOCK_CHAOS_SECS" -lt 1200 ]; then
    echo "--long runs the checker for at least 1200 s (BIDLOCK_CHAOS_SECS=$BIDLOCK_CHAOS_SECS)" >&2
    exit 2
  fi
fi
export BIDLOCK_REPORT_DIR="$PWD/target/reliability"
rm -rf "$BIDLOCK_REPORT_DIR"
mkdir -p "$BIDLOCK_REPORT_DIR"
start=$(date +%s)
status=0
# The checker's process holders are this build's `bidlock`.
cargo build --release -p bidlock-cli
cargo test --release -p bidlock --test faults --test load || status=1
# The tests that show each rule the checker excuses a history by is a stated limit; the
# page shows which passed (their output is kept for it).
cargo test --release -p bidlock-cli --test holders 2>&1 | tee "$BIDLOCK_REPORT_DIR/holders.log" || status=1
# (With them, the guarantees the checker's own findings are filed under.)
cargo test --release -p bidlock --test stated_limits --test no_orphans --test notices 2>&1 \
  | tee "$BIDLOCK_REPORT_DIR/stated_limits.log" || status=1
cargo test --release -p bidlock --test chaos || status=1
echo "{\"fault\": \"suite\", \"seconds\": $(( $(date +%s) - start )), \"passed\": $([ $status -eq 0 ] && echo true || echo false)}" \
  > "$BIDLOCK_REPORT_DIR/suite.json"
python3 scripts/render_reliability.py "$BIDLOCK_REPORT_DIR" "$profile" "scripts/reliability.sh${1:+ $1}" > RELIABILITY.md
echo "wrote RELIABILITY.md ($profile profile, $(( $(date +%s) - start )) s)" >&2
exit $status
