#!/usr/bin/env bash
# Stop the SeaweedFS server that start-s3.sh started, by the pid it recorded (never by name).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${VAELM_S3_DIR:-$repo_root/.s3}"
pidfile="$dir/weed.pid"
[[ -f "$pidfile" ]] || { echo "stop-s3: no $pidfile; nothing to stop" >&2; exit 0; }
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2> /dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2> /dev/null && kill -KILL "$pid"
    echo "stop-s3: stopped pid $pid" >&2
fi
rm -f "$pidfile"
