#!/usr/bin/env bash
# Runs every test of the workspace. Installs what is missing first (redis-server, which
# the integration tests start on free loopback ports), so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

need_install=()
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
if [ ${#need_install[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing: ${need_install[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_install[@]}" >/dev/null
fi
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
