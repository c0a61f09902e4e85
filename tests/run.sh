#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the build and the tests use
# (GNU tar, gzip, a C compiler, nasm and autotools for ISA-L, Python for the S3 test server),
# builds every crate of the workspace (the tests
# load the adapter libraries and spawn the daemon, and `cargo test` builds neither), starts
# the S3 test server, runs the tests, and stops the server whatever the result.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in tar gzip sha1sum cc git python3 nasm autoconf automake libtoolize; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    # nasm and the autotools build ISA-L (the best_speed compressor) from its crate.
    echo "tests/run.sh: installing what is missing: ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq tar gzip coreutils gcc git python3 python3-venv \
        nasm autoconf automake libtool >/dev/null
fi

if [[ -f tests/s3-server.sh ]]; then
    # shellcheck source=tests/s3-server.sh
    source tests/s3-server.sh
    trap s3_server_stop EXIT
    s3_server_start
fi

cargo build --workspace --all-targets
# Tests that cannot run here (not root, no tmpfs, no git) add a line to this file; they are
# counted and printed below, so that a skip is never taken for a pass.
AERIE_TEST_SKIPS="$(mktemp)"
export AERIE_TEST_SKIPS
cargo test --workspace "$@"
# The template adapter is outside the workspace, as an author's copy of it is: its own
# tests (the conformance suite) run through its own manifest.
cargo test --manifest-path adapters/template/Cargo.toml
skipped=$(wc -l <"$AERIE_TEST_SKIPS")
echo "tests/run.sh: $skipped test(s) skipped"
cat "$AERIE_TEST_SKIPS"
rm -f "$AERIE_TEST_SKIPS"
# The fuzz targets, replaying their committed corpora and fuzzing a few seconds each.
bash fuzz/run.sh "${AERIE_FUZZ_SECONDS:-15}"
