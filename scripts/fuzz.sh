#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into build-fuzz/ and runs each for N seconds
# (default 5) from its seed corpus in fuzz/corpus/<target>. A crash fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DSDSERVE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)"
shopt -s nullglob
for bin in build-fuzz/fuzz/fuzz_*; do
  name=$(basename "$bin")
  corpus=$(mktemp -d)
  [ -d "fuzz/corpus/$name" ] && cp -r "fuzz/corpus/$name/." "$corpus/"
  echo "fuzz: $name for ${secs}s"
  "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=0 "$corpus" 2>&1 | tail -n 2
  rm -rf "$corpus"
done
