#!/usr/bin/env bash
# The page generators' own tests: BENCHMARKS.md and RELIABILITY.md are rendered from
# measured records, and the renderers refuse a page without its run's record.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m unittest -q bench/test_render_benchmarks.py
