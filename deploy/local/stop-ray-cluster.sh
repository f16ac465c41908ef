#!/usr/bin/env bash
# Stop the local cluster that start-ray-cluster.sh started: signal each process group it
# recorded (workers first, head last), then remove the pid file. Nothing else is touched.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${VAELM_RAY_DIR:-$repo_root/runs/ray-local}"
pidfile="$dir/pids"
[[ -f "$pidfile" ]] || { echo "stop-ray-cluster: no $pidfile; nothing to stop" >&2; exit 0; }

alive() { kill -0 -- "-$1" 2> /dev/null; }
mapfile -t entries < <(tac "$pidfile")          # workers first, head last
for entry in "${entries[@]}"; do
    read -r pgid name <<< "$entry"
    [[ -n "$pgid" ]] || continue
    alive "$pgid" || continue
    kill -TERM -- "-$pgid" 2> /dev/null || true
    for _ in $(seq 50); do alive "$pgid" || break; sleep 0.2; done
    if alive "$pgid"; then kill -KILL -- "-$pgid" 2> /dev/null || true; fi
    echo "stop-ray-cluster: stopped $name (process group $pgid)" >&2
done
rm -f "$pidfile"
