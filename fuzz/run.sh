#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20) over its committed corpus, with
# cargo-fuzz on the stable toolchain (`--sanitizer none`); fails on the first crash, whose
# input is left in fuzz/artifacts/<target>/. New inputs go to a scratch directory, so the
# committed corpora change only when someone minimises them (see README.md).
#   usage: fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"

if ! command -v c++ >/dev/null 2>&1; then
    # libfuzzer-sys compiles libFuzzer, which is C++.
    echo "fuzz/run.sh: installing a C++ compiler"
    apt-get update -qq
    apt-get install -y -qq g++ >/dev/null
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# Its own target directory: the fuzz build's instrumentation flags differ from the normal
# build's, so sharing one would rebuild both each time.
export CARGO_TARGET_DIR="${AERIE_FUZZ_TARGET_DIR:-/var/tmp/aerie-fuzz-target}"

cargo fuzz build --sanitizer none

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
    # Untar inputs are whole archives; the other targets' inputs are short texts.
    max_len=4096
    [[ "$target" == untar ]] && max_len=32768
    mkdir -p "corpus/$target" "$scratch/$target"
    echo "fuzz/run.sh: $target for ${seconds}s"
    # -rss_limit_mb: the process must stay well within memory whatever the input (a
    # restore's memory is meant to be flat); -timeout: one input may not hang (60 s, not
    # less: on a loaded shared machine a niced run is starved for seconds at a time).
    cargo fuzz run --sanitizer none "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=512 -timeout=60 \
        -print_final_stats=1 2>&1 | grep -v '^#[0-9]'
done
echo "fuzz/run.sh: no crash"
