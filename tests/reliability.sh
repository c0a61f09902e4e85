#!/usr/bin/env bash
# The fault and load suite, in one command:
#   1. the fault tests (tests/tests/faults.rs: a full backup disk, S3 parts cut off mid-upload,
#      the Panel down through many retries) and the crash tests beside them (kill -9
#      mid-backup: failures.rs, panel_reports.rs), against the debug daemon and a local S3
#      server (moto);
#   2. the load benchmark (tests/bench/load.py) against the release daemon, which prints the
#      figures.
#
#   bash tests/reliability.sh [load.py options, e.g. --small 50 --idle 200]
#
# Run as root for the full-disk test (it mounts a small tmpfs; otherwise it prints SKIPPED).
# Exits non-zero when a fault test fails or the load loses or corrupts a backup.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/s3-server.sh
source tests/s3-server.sh
trap s3_server_stop EXIT
s3_server_start

echo "== faults ==" >&2
cargo build --workspace --all-targets
cargo test -p aerie-e2e --test faults
cargo test -p aerie-e2e --test failures -- crash
cargo test -p aerie-e2e --test panel_reports -- crash

echo "== load ==" >&2
cargo build --release -p aerie -p aerie-adapter-wings
python3 tests/bench/load.py "$@"
