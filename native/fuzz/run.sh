#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build the libFuzzer targets and run each for SECONDS.
#   bash native/fuzz/run.sh [SECONDS]     (default 60)
# Targets:
#   fuzz_icmp6  - native/icmp6.c (parse + classify); seeds native/fuzz/seeds/*.hex
#                 (octet 0 of an input is the ext_limit/hook selector, the seeds hold it first)
#   fuzz_engine - native/engine.c's netlink side (message parsing, judging, verdict
#                 batching, replayed with the kernel's batch semantics); seeds
#                 native/fuzz/seeds_engine/*.hex (octet 0: on_error/plan selector)
# Builds into native/fuzz/build/. Exits non-zero on a build failure, a crash, a
# sanitizer report or a broken invariant.
set -euo pipefail

SECONDS_TO_RUN="${1:-60}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="$HERE/build"
CC="${FUZZ_CC:-clang}"

if ! command -v "$CC" >/dev/null 2>&1; then
    echo "error: $CC not found; the fuzzer needs clang with libFuzzer" \
         "(make system-deps installs it)" >&2
    exit 2
fi

FLAGS=(-std=c11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=all -I "$HERE/..")
mkdir -p "$BUILD/corpus" "$BUILD/corpus_engine"
"$CC" "${FLAGS[@]}" "$HERE/../icmp6.c" "$HERE/../classify.c" "$HERE/fuzz_icmp6.c" -o "$BUILD/fuzz_icmp6"
"$CC" "${FLAGS[@]}" "$HERE/../icmp6.c" "$HERE/../classify.c" "$HERE/../engine.c" "$HERE/fuzz_engine.c" \
    -o "$BUILD/fuzz_engine"

seed() {  # seed DIR CORPUS: hex seed files -> binary corpus entries
    for seed in "$1"/*.hex; do
        name="$(basename "$seed" .hex)"
        perl -ne 's/\s+//g; print pack("H*", $_)' "$seed" > "$2/seed-$name"
    done
}
seed "$HERE/seeds" "$BUILD/corpus"
seed "$HERE/seeds_engine" "$BUILD/corpus_engine"

export ASAN_OPTIONS="abort_on_error=1:detect_leaks=0:symbolize=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
cd "$BUILD"
# 2 KiB reaches every code path: 64 extension headers of 8 octets, then ND options;
# for the engine, several netlink messages per datagram.
./fuzz_icmp6 -max_total_time="$SECONDS_TO_RUN" -max_len=2048 -timeout=10 \
    -print_final_stats=1 "$BUILD/corpus"
./fuzz_engine -max_total_time="$SECONDS_TO_RUN" -max_len=2048 -timeout=10 \
    -print_final_stats=1 "$BUILD/corpus_engine"
echo "fuzz: no crash in ${SECONDS_TO_RUN}s per target"
