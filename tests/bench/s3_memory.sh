#!/usr/bin/env bash
# Memory benchmark of the s3 adapter (not a test): a backup of `make-corpus.py --scale 0.5`
# through the RELEASE daemon into moto, with part_size 5 MiB and concurrency 4. Prints the
# wall time, the archive's size, the input throughput and the daemon's peak RSS (VmHWM)
# next to the bound the s3 adapter promises: concurrency × part_size + 64 MiB.
#
#   bash tests/bench/s3_memory.sh
#
# Environment (all optional):
#   AERIE_BENCH_CORPUS   the corpus folder (default /var/tmp/aerie-bench/corpus-0.5; made once
#                        if absent)
#   AERIE_BENCH_MAKER    the corpus generator (default tests/bench/make-corpus.py)
#   AERIE_BENCH_LEVEL    compression_level: none | best_speed | best_compression (default: the
#                        daemon's default)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$(pwd)"

corpus="${AERIE_BENCH_CORPUS:-/var/tmp/aerie-bench/corpus-0.5}"
maker="${AERIE_BENCH_MAKER:-$repo/tests/bench/make-corpus.py}"
part_size=$((5 * 1024 * 1024))
concurrency=4
server="0c1d2e3f-4a5b-4c6d-8e7f-90a1b2c3d4e5"
backup="$(python3 -c 'import uuid; print(uuid.uuid4())')"
token="bench-node-token-0123456789"
bucket="aerie-bench-$$"

if [ ! -d "$corpus" ]; then
    echo "bench: generating the corpus into $corpus (once)" >&2
    rm -rf "$corpus.tmp"
    python3 "$maker" --root "$corpus.tmp" --scale 0.5 >&2
    mv "$corpus.tmp" "$corpus"
fi

echo "bench: building the release daemon and adapters" >&2
cargo build --release -p aerie -p aerie-adapter-wings -p aerie-adapter-s3 >&2

# shellcheck source=tests/s3-server.sh
source tests/s3-server.sh
node="$(mktemp -d)"
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    s3_server_stop
    rm -rf "$node"
}
trap cleanup EXIT
s3_server_start

# The bucket, made with the boto3 that comes with moto.
"$repo/tests/.venv/bin/python" - "$AERIE_TEST_S3_ENDPOINT" "$bucket" <<'EOF'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").create_bucket(Bucket=sys.argv[2])
EOF

mkdir -p "$node/volumes" "$node/backups" "$node/state"
ln -s "$corpus" "$node/volumes/$server"
cat >"$node/plugins.yml" <<EOF
adapters:
  - name: s3
    library: $repo/target/release/libaerie_adapter_s3.so
    config:
      bucket: $bucket
      endpoint: $AERIE_TEST_S3_ENDPOINT
      force_path_style: true
      region: us-east-1
      access_key_id: $AWS_ACCESS_KEY_ID
      secret_access_key: $AWS_SECRET_ACCESS_KEY
      part_size: $part_size
      concurrency: $concurrency
EOF
{
    echo "token_id: bench"
    echo "token: $token"
    echo "api:"
    echo "  host: 127.0.0.1"
    echo "  port: 0"
    echo "system:"
    echo "  root_directory: $node/state"
    echo "  data: $node/volumes"
    echo "  backup_directory: $node/backups"
    if [ -n "${AERIE_BENCH_LEVEL:-}" ]; then
        echo "  backups:"
        echo "    compression_level: $AERIE_BENCH_LEVEL"
    fi
    echo "plugins: $node/plugins.yml"
} >"$node/config.yml"

# The daemon announces its address on stdout; its log goes to a file.
mkfifo "$node/stdout"
AERIE_LOG=info "$repo/target/release/aerie" --config "$node/config.yml" \
    >"$node/stdout" 2>"$node/aerie.log" &
daemon_pid=$!
exec 3<"$node/stdout"
base=""
while IFS= read -r line <&3; do
    case "$line" in
    "aerie listening on "*)
        base="${line#aerie listening on }"
        break
        ;;
    esac
done
if [ -z "$base" ]; then
    echo "bench: the daemon did not start; its log:" >&2
    cat "$node/aerie.log" >&2
    exit 1
fi
# Keep draining stdout so the daemon never blocks on it.
cat <&3 >/dev/null &
exec 3<&-

hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$daemon_pid/status"; }
idle_kib="$(hwm_kib)"
input_bytes="$(find -L "$node/volumes/$server" -type f -printf '%s\n' | awk '{s += $1} END {print s}')"

# Warm the page cache, so that the figure is about the daemon, not the disk.
tar -cf - -C "$corpus" . | cat >/dev/null

auth=(-H "Authorization: Bearer $token")
start_ns="$(date +%s%N)"
code="$(curl -s -o "$node/post.json" -w '%{http_code}' -X POST "${auth[@]}" \
    -H "Content-Type: application/json" \
    -d "{\"adapter\": \"s3\", \"uuid\": \"$backup\", \"ignore\": \"\"}" \
    "$base/api/servers/$server/backup")"
if [ "$code" != 202 ]; then
    echo "bench: POST backup answered $code: $(cat "$node/post.json")" >&2
    exit 1
fi
while :; do
    status="$(curl -s "${auth[@]}" "$base/api/servers/$server/backup/$backup")"
    state="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["state"])' "$status")"
    [ "$state" != running ] && break
    sleep 0.1
done
end_ns="$(date +%s%N)"
peak_kib="$(hwm_kib)"

if [ "$state" != completed ]; then
    echo "bench: the backup ended $state: $status" >&2
    tail -20 "$node/aerie.log" >&2
    exit 1
fi
size="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["size"])' "$status")"
object_size="$("$repo/tests/.venv/bin/python" - "$AERIE_TEST_S3_ENDPOINT" "$bucket" \
    "$server/$backup.tar.gz" <<'EOF'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
print(s3.head_object(Bucket=sys.argv[2], Key=sys.argv[3])["ContentLength"])
EOF
)"
if [ "$object_size" != "$size" ]; then
    echo "bench: the object holds $object_size bytes, the daemon reported $size" >&2
    exit 1
fi

python3 - "$start_ns" "$end_ns" "$input_bytes" "$size" "$idle_kib" "$peak_kib" \
    "$concurrency" "$part_size" <<'EOF'
import sys
start, end, inp, size, idle, peak, conc, part = map(int, sys.argv[1:])
MiB = 1024 * 1024
wall = (end - start) / 1e9
bound = conc * part + 64 * MiB
print(f"corpus input       {inp / MiB:10.1f} MiB ({inp} bytes)")
print(f"wall time          {wall:10.2f} s")
print(f"archive size       {size / MiB:10.1f} MiB ({size} bytes, {-(-size // part)} parts)")
print(f"input throughput   {inp / 1e6 / wall:10.1f} MB/s")
print(f"output throughput  {size / 1e6 / wall:10.1f} MB/s (uploaded)")
print(f"idle RSS (VmHWM)   {idle / 1024:10.1f} MiB")
print(f"peak RSS (VmHWM)   {peak / 1024:10.1f} MiB")
print(f"bound              {bound / MiB:10.1f} MiB  (concurrency {conc} x part_size {part // MiB} MiB + 64 MiB)")
print("within the bound" if peak * 1024 <= bound else "ABOVE THE BOUND")
EOF
