#!/usr/bin/env bash
# The layout ARCHITECTURE.md promises: no module cycles, no source file over 600 lines.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 scripts/lint-layout.py
