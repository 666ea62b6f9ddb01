#!/usr/bin/env bash
# Measures every benchmark workload side by side and writes BENCHMARKS.md from what it
# measured (scripts/render_benchmarks.py; nothing on the page is typed in).
#
#   scripts/bench.sh                 3 rounds of 4 s, the scale workload in every round
#                                    (about 12-15 minutes on 2 cores, builds not counted)
#   scripts/bench.sh --quick         2 rounds of 1 s, small scale points, a short ttl;
#                                    writes target/BENCHMARKS.quick.md (about 3 minutes)
#   scripts/bench.sh --out FILE      write the page elsewhere
# The measurements go next to the page (bench/BENCHMARKS.jsonl for BENCHMARKS.md):
#   python3 scripts/render_benchmarks.py bench/BENCHMARKS.jsonl   renders it again.
#
# Knobs (environment): ROUNDS, DURATION (seconds per measured run), SCALE_LEASES (leases
# of one manager, e.g. "1000 10000 100000"), FLEET ("16x10000": managers x leases, or
# "none"), SCALE_TTL (seconds), PEERS=0 (skip the Python peers), BASELINE_REV (a git
# revision: its `bidlock` runs too, as the "baseline" build, for before/after figures in
# the same run), BENCH_NOTE (a sentence for the page's header).
#
# Contenders run interleaved round by round: round 1 runs A B C, round 2 C B A, round 3
# A B C... so that drift in the machine's load hits each alike, and every ratio on the
# page is computed within one round from contenders measured side by side. The servers
# (one Redis, three Redlock masters, a six-node Redis Cluster) are started here on free
# loopback ports and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
command_line="scripts/bench.sh${*:+ $*}"
quick=0
out_page=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out_page=${2:?--out needs a file}; shift ;;
    *) echo "bench.sh: unknown option $1 (use --quick, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  rounds=${ROUNDS:-2}; duration=${DURATION:-1}
  scale_leases=${SCALE_LEASES:-1000 10000}; fleet=${FLEET:-4x1000}; scale_ttl=${SCALE_TTL:-6}
  out_page=${out_page:-target/BENCHMARKS.quick.md}
else
  rounds=${ROUNDS:-3}; duration=${DURATION:-4}
  scale_leases=${SCALE_LEASES:-1000 10000 100000}; fleet=${FLEET:-16x10000}; scale_ttl=${SCALE_TTL:-30}
  out_page=${out_page:-BENCHMARKS.md}
fi
peers=${PEERS:-1}
baseline_rev=${BASELINE_REV:-}
# The exact command, every knob spelled out, for the page.
command_line="ROUNDS=$rounds DURATION=$duration SCALE_LEASES=\"$scale_leases\" FLEET=$fleet SCALE_TTL=$scale_ttl PEERS=$peers${baseline_rev:+ BASELINE_REV=$baseline_rev} $command_line"
command -v redis-server >/dev/null 2>&1 || { echo "redis-server missing: run scripts/test.sh first (it installs it)" >&2; exit 1; }

# --- Builds (not measured) ---------------------------------------------------------
bins=target/bench-bin
mkdir -p "$bins"
if [ -n "$baseline_rev" ]; then
  # The baseline revision's source, built with the same target directory: dependencies
  # compiled once serve both builds; only the workspace's own crates build twice.
  src=target/bench-baseline-src
  rm -rf "$src" && mkdir -p "$src"
  git archive "$baseline_rev" | tar -x -C "$src"
  baseline_sha=$(git rev-parse "$baseline_rev")
  # Cargo hashes a path crate by its path within the workspace, so the two trees' own
  # crates share one fingerprint, which points at whichever tree built last: each build
  # would take the other's library as fresh. Clean the workspace's crates before each.
  cargo clean --release -p bidlock -p bidlock-cli --manifest-path "$src/Cargo.toml" --target-dir "$PWD/target"
  cargo build --release -p bidlock-cli --manifest-path "$src/Cargo.toml" --target-dir "$PWD/target"
  cp target/release/bidlock "$bins/bidlock-baseline"
  cargo clean --release -p bidlock -p bidlock-cli
fi
cargo build --release -p bidlock-cli
cp target/release/bidlock "$bins/bidlock"
bin=$bins/bidlock
# rslock, the Rust Redlock client, as a peer: a crate of its own (not in the workspace).
CARGO_TARGET_DIR=target/peers cargo build --release --manifest-path bench/peers/rslock/Cargo.toml
rslock=target/peers/release/bidlock-peer-rslock
# bidlock's Python package, built (release) into the peers' virtualenv once per run.
[ "$peers" = 1 ] && bench/peers/run.sh setup
built=$SECONDS

# --- Servers -------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
serve() { # port dir [args...]
  local p=$1 d=$2; shift 2; mkdir -p "$d"
  redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$d" --daemonize yes --logfile "$d/redis.log" "$@"
}
port=$(free_port)
serve "$port" "$dir/single"
url="redis://127.0.0.1:$port/0"
rl_args=(); rl_ports=()
for i in 1 2 3; do
  p=$(free_port); serve "$p" "$dir/rl$i"
  rl_args+=(--redis-url "redis://127.0.0.1:$p/0"); rl_ports+=("$p")
done
# The cluster's ports stay below the ephemeral range so each bus port (+10000) is free.
cl_ports=($(python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
ports = []
while len(ports) < 6:
    p = random.randrange(20000, 22700)
    if p not in ports and free(p) and free(p + 10000):
        ports.append(p)
print(" ".join(map(str, ports)))
PY
))
for p in "${cl_ports[@]}"; do
  serve "$p" "$dir/cl$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000
done
trap 'for p in "$port" "${rl_ports[@]}" "${cl_ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done; rm -rf "$dir"' EXIT
for p in "$port" "${rl_ports[@]}" "${cl_ports[@]}"; do for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done; done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cl_ports[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 100); do
  ok=1; for p in "${cl_ports[@]}"; do redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || ok=0; done
  [ "$ok" = 1 ] && break; sleep 0.1
done
cl_url="redis+cluster://$(printf '127.0.0.1:%s,' "${cl_ports[@]}" | sed 's/,$//')"
cl_masters=($(redis-cli -p "${cl_ports[0]}" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8 {split($2, a, "[:@]"); print a[2]}'))

# --- Recording -----------------------------------------------------------------------
out=target/bench.jsonl
: > "$out"
round=0
build=current
# Every JSON line a contender prints gets the round (and the build) it was measured in.
tag() { sed -u "s/^{/{\"round\": $round, \"build\": \"$build\", /" | tee -a "$out"; }
meta() { # kind [extra JSON fields]
  python3 - "$1" "${2:-}" >> "$out" <<'PY'
import json, os, sys
load = open("/proc/loadavg").read().split()[:3]
fields = {"meta": sys.argv[1], "loadavg": [float(x) for x in load], "time": __import__("time").time()}
if sys.argv[2]:
    fields.update(json.loads(sys.argv[2]))
print(json.dumps(fields))
PY
}
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo true || echo false)
meta start "$(python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  cores "$(nproc)" cpu_model "$cpu_model" kernel "$(uname -r)" \
  redis_version "$(redis-server --version | awk '{print $3}' | sed 's/^v=//')" \
  command "$command_line" git_rev "$(git rev-parse HEAD)" git_dirty "$dirty" \
  baseline_rev "${baseline_sha:-}" rounds "$rounds" duration_s "$duration" \
  scale_ttl_s "$scale_ttl" note "${BENCH_NOTE:-}" build_s "$((built - started))" \
  cluster_nodes "${#cl_ports[@]}" cluster_masters "${#cl_masters[@]}" redlock_nodes "${#rl_ports[@]}" \
  date "$(date -u +%Y-%m-%dT%H:%MZ)")"

# Runs its arguments (each a command line) in order on odd rounds, reversed on even ones.
side_by_side() {
  local cmds=("$@") i
  if [ $((round % 2)) = 0 ]; then
    for ((i = ${#cmds[@]} - 1; i >= 0; i--)); do eval "${cmds[$i]}"; done
  else
    for i in "${cmds[@]}"; do eval "$i"; done
  fi
}
# bidlock's in-process baselines (raw redis-rs) go first on even rounds.
order() { [ $((round % 2)) = 0 ] && echo --baseline-first || true; }
d="--duration $duration"
lib() { $bin bench "$@" $d | tag; }
base() { [ -n "$baseline_rev" ] || return 0; build=baseline; "$bins/bidlock-baseline" bench "$@" $d --no-baseline | tag; build=current; }
rsl() { $rslock "$@" $d --redis-url "$url" | tag; }
py() { [ "$peers" = 1 ] || return 0; bench/peers/run.sh "$@" $d --redis-url "$url" | tag; }

# Each cluster master's CPU and script calls are read around the measured run itself.
cl_stats=$(printf -- '--server-stats redis://127.0.0.1:%s/0 ' "${cl_masters[@]}")

measure_start=$SECONDS
for round in $(seq "$rounds"); do
  echo "round $round/$rounds" >&2
  meta round "{\"round\": $round}"
  R=(--backend redis --redis-url "$url")
  # One Redis: bidlock (with raw redis-rs in the same process), rslock, the baseline build.
  for w in 1 32; do
    side_by_side "lib uncontended --workers $w ${R[*]} $(order)" "rsl uncontended --workers $w" \
      "base uncontended --workers $w ${R[*]}"
  done
  side_by_side "lib hot-key --workers 8 --hold-us 1000 ${R[*]} $(order)" "rsl hot-key --workers 8 --hold-us 1000" \
    "base hot-key --workers 8 --hold-us 1000 ${R[*]}"
  # Fairness across processes: the same 8 workers as 4 processes of 2.
  lib hot-key --workers 2 --processes 4 --hold-us 1000 "${R[@]}"
  # The cluster (no raw baseline: it talks to one server), this build and the baseline.
  C=(--backend redis --redis-url "$cl_url")
  lib uncontended --workers 1 "${C[@]}"
  side_by_side "lib uncontended --workers 32 ${C[*]} $cl_stats" "base uncontended --workers 32 ${C[*]}"
  lib hot-key --workers 8 --hold-us 1000 "${C[@]}"
  for a in "uncontended --workers 1" "uncontended --workers 32" "hot-key --workers 8 --hold-us 1000"; do
    lib $a --backend redis "${rl_args[@]}" --no-baseline
  done
  for a in "uncontended --workers 1" "uncontended --workers 32" "hot-key --workers 8 --hold-us 1000"; do
    lib $a --backend memory
  done
  $bin bench footprint --locks 200000 --backend memory | tag
  # The Python peers, side by side.
  for a in "uncontended --workers 1" "uncontended --workers 32" "hot-key --workers 8 --hold-us 1000"; do
    side_by_side "py $a --peer redis-py" "py $a --peer python-redis-lock" "py $a --peer bidlock-py"
  done
  for p in "$port" "${rl_ports[@]}" "${cl_masters[@]}"; do redis-cli -p "$p" flushall >/dev/null; done
  # Cost as work grows: one manager with more and more leases, then a fleet.
  for n in $scale_leases; do
    $bin bench scale --leases "$n" --ttl "$scale_ttl" "${R[@]}" | tag
  done
  if [ "$fleet" != none ]; then
    $bin bench scale --managers "${fleet%x*}" --leases "${fleet#*x}" --ttl "$scale_ttl" "${R[@]}" | tag
  fi
  redis-cli -p "$port" flushall >/dev/null
done
meta end "{\"measure_s\": $((SECONDS - measure_start)), \"elapsed_s\": $((SECONDS - started))}"
# The measurements are kept next to the page, so anyone can audit or re-render it.
if [ "$out_page" = BENCHMARKS.md ]; then data=bench/BENCHMARKS.jsonl; else data="${out_page%.md}.jsonl"; fi
cp "$out" "$data"
python3 scripts/render_benchmarks.py "$data" > "$out_page.tmp"
mv "$out_page.tmp" "$out_page"
echo "wrote $out_page ($((SECONDS - started)) s, of which measuring $((SECONDS - measure_start)) s)" >&2
