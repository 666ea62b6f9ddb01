#!/usr/bin/env bash
# Builds the Python package's wheel and sdist into target/wheels/:
#   bidlock-<version>-cp39-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
#   bidlock-<version>.tar.gz
# The wheel is abi3 (one file for CPython 3.9 and later) and links against glibc 2.17
# (manylinux2014), whatever the glibc of this machine: maturin links through zig, both
# from PyPI, installed into a virtualenv under target/ (nothing else is needed but Rust).
# `pip wheel crates/bidlock-py` would tag the wheel linux_x86_64 instead: it is then
# only good for this machine.
#
# BIDLOCK_WHEEL_PROFILE picks the cargo profile (default `release`, what users get). The
# test command builds with `dev`: the same packaging, manylinux check and Python code,
# unoptimized native code, in about half the time (62 s against 117 s on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
tools="$PWD/target/py-build"
[ -x "$tools/bin/python" ] || python3 -m venv "$tools"
# A no-op (no download) once the pinned versions are there.
"$tools/bin/pip" install -q --disable-pip-version-check -r crates/bidlock-py/requirements-build.txt
out="$PWD/target/wheels"
mkdir -p "$out"
rm -f "$out"/bidlock-*.whl "$out"/bidlock-*.tar.gz
# maturin finds zig through the ziglang package of its own interpreter.
profile=${BIDLOCK_WHEEL_PROFILE:-release}
PATH="$tools/bin:$PATH" maturin build --profile "$profile" --zig --compatibility manylinux2014 \
  -m crates/bidlock-py/Cargo.toml --out "$out"
PATH="$tools/bin:$PATH" maturin sdist -m crates/bidlock-py/Cargo.toml --out "$out"
# The platform tag is a promise: auditwheel (PyPA's checker) must find nothing in the
# wheel that needs a newer glibc than manylinux2014's 2.17.
wheel=$(ls "$out"/bidlock-*.whl)
"$tools/bin/auditwheel" show "$wheel" | tee "$out/auditwheel.txt" >&2
grep -q '"manylinux_2_17_x86_64"' "$out/auditwheel.txt" \
  || { echo "build-wheel: auditwheel does not accept $wheel as manylinux_2_17" >&2; exit 1; }
for f in "$out"/bidlock-*; do
  echo "built $f ($(du -k "$f" | cut -f1) KiB)" >&2
done
echo "build-wheel: $((SECONDS - start)) s" >&2
