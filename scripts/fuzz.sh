#!/usr/bin/env bash
# Fuzzes the configuration and URL parsers with cargo-fuzz (libFuzzer) for a bounded
# time: scripts/fuzz.sh [seconds, default 60]. Installs cargo-fuzz if missing. cargo-fuzz
# wants nightly flags; on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz run --fuzz-dir fuzz config -- -max_total_time="$secs" -rss_limit_mb=2048
