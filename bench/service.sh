#!/usr/bin/env bash
# Benchmarks GET / of three servers in one run on this machine, with the same
# wrk settings for each, and prints a table (requests/s, p50, p99, peak RSS):
#   - kea-service (release build, embedded stores, JSON logs, all middleware);
#   - the seed's Flask app under gunicorn with 2 workers (../shared/bench);
#   - a minimal axum hello-world: the ceiling.
# Targets: kea-service >= 20x Flask and >= 85% of the ceiling; p99 < 5 ms at 16 connections; RSS < 20 MB.
#
#   bench/service.sh [DURATION_SECONDS] [CONNECTIONS]
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

DURATION=${1:-10}
CONNECTIONS=${2:-16}
SEED_APP_DIR=${SEED_APP_DIR:-$REPO_ROOT/../shared/bench}
[ -f "$SEED_APP_DIR/seed_flask_app.py" ] || die "seed_flask_app.py not found in $SEED_APP_DIR (set SEED_APP_DIR)"

apt_install wrk
VENV="$KEA_CACHE_DIR/bench-venv"
if [ ! -x "$VENV/bin/gunicorn" ]; then
  log "installing Flask and gunicorn into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q flask gunicorn
fi

log "building kea-service and the hello-world ceiling (release)"
(cd "$REPO_ROOT" && cargo build -q --release -p kea-service --bin kea-service --example hello_ceiling)
TARGET_DIR=$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

wait_for() {
  local i
  for i in $(seq 1 100); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$1 did not answer"
}

# Peak RSS (VmHWM) in MiB of a process and all its children.
peak_rss_mib() {
  local total=0 pid kb
  for pid in $1 $(pgrep -P "$1" || true); do
    kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  awk -v kb="$total" 'BEGIN {printf "%.1f", kb / 1024}'
}

# run_wrk NAME URL PID: prints one table row.
run_wrk() {
  local name=$1 url=$2 pid=$3 out="$WORK/$1.wrk"
  wrk -t1 -c1 -d1s "$url" >/dev/null 2>&1 # warm-up
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" >"$out"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  p50=$(awk '$1 == "50%" {print $2}' "$out")
  p99=$(awk '$1 == "99%" {print $2}' "$out")
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" "$(peak_rss_mib "$pid")" >>"$WORK/rows"
}

log "starting the servers"
KEA_DATA_DIR="$WORK/data" KEA_LISTEN=127.0.0.1:18080 RUST_LOG=warn \
  "$TARGET_DIR/release/kea-service" >"$WORK/kea.log" 2>&1 &
PIDS+=($!); KEA_PID=$!
"$TARGET_DIR/release/examples/hello_ceiling" 127.0.0.1:18090 >/dev/null 2>&1 &
PIDS+=($!); CEILING_PID=$!
"$VENV/bin/gunicorn" -w 2 -b 127.0.0.1:18070 --chdir "$SEED_APP_DIR" seed_flask_app:app >"$WORK/gunicorn.log" 2>&1 &
PIDS+=($!); FLASK_PID=$!
wait_for http://127.0.0.1:18080/readyz
wait_for http://127.0.0.1:18090/
wait_for http://127.0.0.1:18070/

log "wrk: GET /, $CONNECTIONS connections, ${DURATION}s each, 2 threads"
run_wrk "flask+gunicorn (2 workers)" http://127.0.0.1:18070/ "$FLASK_PID"
run_wrk "axum hello-world (ceiling)" http://127.0.0.1:18090/ "$CEILING_PID"
run_wrk "kea-service" http://127.0.0.1:18080/ "$KEA_PID"

echo
echo "GET /  ($(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'))"
python3 - "$WORK/rows" <<'PY'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
by_name = {r[0]: r for r in rows}
print(f"| {'server':<28} | {'requests/s':>10} | {'p50':>8} | {'p99':>8} | {'peak RSS MiB':>12} |")
print(f"|{'-'*30}|{'-'*12}|{'-'*10}|{'-'*10}|{'-'*14}|")
for name, rps, p50, p99, rss in rows:
    print(f"| {name:<28} | {float(rps):>10.0f} | {p50:>8} | {p99:>8} | {rss:>12} |")
kea = float(by_name["kea-service"][1])
flask = float(by_name["flask+gunicorn (2 workers)"][1])
ceiling = float(by_name["axum hello-world (ceiling)"][1])
print()
print(f"kea-service / flask+gunicorn: {kea / flask:.1f}x (target >= 20x)")
print(f"kea-service / ceiling:        {100 * kea / ceiling:.0f}% (target >= 85%)")
PY
