#!/usr/bin/env bash
# Configures and builds sdserve into build/ (binary build/sdserve). Extra arguments go
# to cmake's configure step, e.g. scripts/build.sh -DSDSERVE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSDSERVE_WERROR=ON "$@" >/dev/null
cmake --build build -j"$(nproc)"
