#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build the libFuzzer target for native/icmp6.c and run it for SECONDS.
#   bash native/fuzz/run.sh [SECONDS]     (default 60)
# Builds into native/fuzz/build/, seeds the corpus from native/fuzz/seeds/*.hex
# (one packet per file, hex; octet 0 of the fuzz input is the ext_limit/hook
# selector, the seed files hold it first). Exits non-zero on a build failure,
# a crash, a sanitizer report or a broken invariant.
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

mkdir -p "$BUILD/corpus"
"$CC" -std=c11 -g -O1 -Wall -Wextra -Werror \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I "$HERE/.." "$HERE/../icmp6.c" "$HERE/fuzz_icmp6.c" -o "$BUILD/fuzz_icmp6"

for seed in "$HERE"/seeds/*.hex; do
    name="$(basename "$seed" .hex)"
    perl -ne 's/\s+//g; print pack("H*", $_)' "$seed" > "$BUILD/corpus/seed-$name"
done

export ASAN_OPTIONS="abort_on_error=1:detect_leaks=0:symbolize=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
cd "$BUILD"
# 2 KiB reaches every code path: 64 extension headers of 8 octets, then ND options.
./fuzz_icmp6 -max_total_time="$SECONDS_TO_RUN" -max_len=2048 -timeout=10 \
    -print_final_stats=1 "$BUILD/corpus"
echo "fuzz: no crash in ${SECONDS_TO_RUN}s"
