#!/usr/bin/env bash
# Runs the reliability suite (faults, load, soak, holder processes) against real
# redis-server processes and writes RELIABILITY.md from the figures the tests record.
#   scripts/reliability.sh          CI-sized profile (about a minute)
#   scripts/reliability.sh --long   16 instances x 10,000 postings, 60 s soak, 8 s faults
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null 2>&1 || { echo "redis-server missing: run scripts/test.sh first (it installs it)" >&2; exit 1; }

profile=ci
if [ "${1:-}" = "--long" ]; then
  profile=long
  export BIDLOCK_LOAD_POSTINGS=10000 BIDLOCK_SOAK_SECS=60 BIDLOCK_FAULT_SECS=8
fi
export BIDLOCK_REPORT_DIR="$PWD/target/reliability"
rm -rf "$BIDLOCK_REPORT_DIR"
mkdir -p "$BIDLOCK_REPORT_DIR"
cargo test --release -p bidlock --test faults --test load
cargo test --release -p bidlock-cli --test holders
python3 scripts/render_reliability.py "$BIDLOCK_REPORT_DIR" "$profile" "scripts/reliability.sh${1:+ $1}" > RELIABILITY.md
echo "wrote RELIABILITY.md ($profile profile)" >&2
