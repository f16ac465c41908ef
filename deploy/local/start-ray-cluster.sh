#!/usr/bin/env bash
# Start a multi-node Ray cluster on this one machine: a head and N worker nodes, each a
# separate `ray start --block` process in its own process group, with bounded memory and
# object store. For trying `ray job submit` and multi-node behaviour without a cloud.
#
#   eval "$(deploy/local/start-ray-cluster.sh)"   # stdout is only `export` lines
#   ray job submit --working-dir . --runtime-env deploy/runtime_env.yaml -- vaelm run jobs/preprocess-s3.yaml
#   deploy/local/stop-ray-cluster.sh              # stops exactly the processes started here
#
# Environment (all optional):
#   VAELM_RAY_DIR          state directory: pids, logs   (default: runs/ray-local; git-ignored)
#   VAELM_RAY_WORKERS      worker nodes                  (default 2)
#   VAELM_RAY_HEAD_CPUS    CPUs the head offers           (default 1)
#   VAELM_RAY_WORKER_CPUS  CPUs each worker offers        (default 1)
#   VAELM_RAY_MEMORY_MB    memory per node, MiB           (default 2048)
#   VAELM_RAY_OBJECT_STORE_MB  object store per node, MiB (default 256)
#   VAELM_RAY_PORT         GCS port                       (default 6379)
#   VAELM_RAY_DASHBOARD_PORT  dashboard / job server port (default 8265)
#   VAELM_RAY_AGENT_PORT   dashboard agent HTTP port of the head; worker i uses this + i (default 52365).
#                          Each node on one machine needs its own: a taken port leaves the node without
#                          a job agent ("No available agent to submit job")
#   VAELM_RAY_CLIENT_PORT  Ray Client server port of the head (default 10001)
#   VAELM_RAY_START_TIMEOUT   seconds to wait for the head, then for each worker (default 120)
#   PYTHON                 the python that has ray, to count nodes (default: python)
#   RAY_AUTH_MODE          token (default) or disabled. With token (Ray 2.60's default for
#                          `ray start --head`), every node and client needs RAY_AUTH_MODE=token and
#                          the token. Unless RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH is set, a token
#                          for this cluster is generated in $VAELM_RAY_DIR/auth_token (mode 600;
#                          ~/.ray is not touched), given to every node, and its path printed.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${VAELM_RAY_DIR:-$repo_root/runs/ray-local}"
workers="${VAELM_RAY_WORKERS:-2}"
head_cpus="${VAELM_RAY_HEAD_CPUS:-1}"
worker_cpus="${VAELM_RAY_WORKER_CPUS:-1}"
memory=$(( ${VAELM_RAY_MEMORY_MB:-2048} * 1024 * 1024 ))
store=$(( ${VAELM_RAY_OBJECT_STORE_MB:-256} * 1024 * 1024 ))
port="${VAELM_RAY_PORT:-6379}"
dash_port="${VAELM_RAY_DASHBOARD_PORT:-8265}"
agent_port="${VAELM_RAY_AGENT_PORT:-52365}"
client_port="${VAELM_RAY_CLIENT_PORT:-10001}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
pidfile="$dir/pids"

log() { echo "start-ray-cluster: $*" >&2; }

case "$RAY_AUTH_MODE" in token | disabled) ;; *)
    log "RAY_AUTH_MODE=$RAY_AUTH_MODE: must be 'token' or 'disabled'"; exit 1 ;;
esac
if [[ "$RAY_AUTH_MODE" == token && -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
    mkdir -p "$dir"
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$dir/auth_token")
    export RAY_AUTH_TOKEN_PATH="$dir/auth_token"
fi
command -v ray > /dev/null || { log "'ray' not on PATH; activate the venv (. .venv/bin/activate)"; exit 1; }
mkdir -p "$dir"
if [[ -s "$pidfile" ]]; then
    log "$pidfile exists: a cluster may be running; stop it with deploy/local/stop-ray-cluster.sh"
    exit 1
fi
for p in "$port" "$dash_port" "$agent_port" "$client_port"; do
    if (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
        log "port $p is in use; set VAELM_RAY_PORT / VAELM_RAY_DASHBOARD_PORT / VAELM_RAY_AGENT_PORT / VAELM_RAY_CLIENT_PORT"
        exit 1
    fi
done

# Start one node as `ray start --block` in a new session (its own process group); record
# the group id, which stop-ray-cluster.sh signals. Never `ray stop`: it kills every Ray on the host.
start_node() {
    local name="$1"; shift
    setsid ray start --block --disable-usage-stats --memory="$memory" \
        --object-store-memory="$store" "$@" > "$dir/$name.log" 2>&1 < /dev/null &
    echo "$! $name" >> "$pidfile"
}

log "head: 127.0.0.1:$port, dashboard http://127.0.0.1:$dash_port (auth: $RAY_AUTH_MODE; logs in $dir)"
start_node head --head --node-ip-address=127.0.0.1 --port="$port" --num-cpus="$head_cpus" \
    --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dash_port" \
    --dashboard-agent-listen-port="$agent_port" --ray-client-server-port="$client_port"

ready=""
deadline=$(( SECONDS + ${VAELM_RAY_START_TIMEOUT:-120} ))
while (( SECONDS < deadline )); do
    if timeout 10 ray status --address="127.0.0.1:$port" > /dev/null 2>&1; then ready=1; break; fi
    sleep 1
done
# The job server (dashboard) answers some seconds after the GCS: `ray job submit` needs it.
while [[ -n "$ready" ]] && (( SECONDS < deadline )); do
    # any HTTP answer will do (401 without the auth token): it means the server is up
    if "${PYTHON:-python}" - "$dash_port" 2> /dev/null << 'PY'; then ready=2; break; fi
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/version", timeout=5)
except urllib.error.HTTPError:
    pass
PY
    sleep 1
done
[[ "$ready" == 2 ]] || ready=""
if [[ -z "$ready" ]]; then
    log "head did not come up in time; see $dir/head.log. Stopping."
    "$(dirname "${BASH_SOURCE[0]}")/stop-ray-cluster.sh" >&2 || true
    exit 1
fi

alive_nodes() {
    timeout 30 "${PYTHON:-python}" - "$port" << 'PY' 2> /dev/null || echo 0
import sys, ray
ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
PY
}

# Workers join one at a time: a raylet has 30 s to register with the GCS, which several
# starting at once on a small, busy machine can miss. A worker that failed to join is
# started once more.
want=$(( workers + 1 ))
for i in $(seq 1 "$workers"); do
    joined=""
    for attempt in 1 2; do
        start_node "worker$i" --address="127.0.0.1:$port" --node-ip-address=127.0.0.1 \
            --num-cpus="$worker_cpus" --resources="{\"worker$i\": 1}" \
            --dashboard-agent-listen-port=$(( agent_port + i ))
        pid="$(tail -n 1 "$pidfile" | cut -d' ' -f1)"
        deadline=$(( SECONDS + ${VAELM_RAY_START_TIMEOUT:-120} ))
        while (( SECONDS < deadline )) && kill -0 "$pid" 2> /dev/null; do
            if [[ "$(alive_nodes)" -ge $(( i + 1 )) ]]; then joined=1; break; fi
            sleep 1
        done
        [[ -n "$joined" ]] && break
        log "worker$i did not join (attempt $attempt; see $dir/worker$i.log)"
        kill -TERM -- "-$pid" 2> /dev/null || true
    done
    if [[ -z "$joined" ]]; then
        log "worker$i could not join the cluster. Stopping."
        "$(dirname "${BASH_SOURCE[0]}")/stop-ray-cluster.sh" >&2 || true
        exit 1
    fi
done
log "ready: $want nodes"

cat << EXPORTS
export RAY_ADDRESS=http://127.0.0.1:$dash_port
export RAY_AUTH_MODE=$RAY_AUTH_MODE
export VAELM_RAY_GCS_ADDRESS=127.0.0.1:$port
EXPORTS
if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then echo "export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"; fi
