#!/usr/bin/env bash
# Installs the Debian 12 packages sdserve builds against, only those missing, so it is
# cheap to call every time. CUDA 13 (nvcc, cuBLAS, cuDNN) is expected under /usr/local/cuda
# and is optional: without it the CUDA backend is not built.
set -euo pipefail
PKGS=(cmake ninja-build g++ clang pkg-config ccache
      nlohmann-json3-dev libopenblas-dev libboost-dev libcli11-dev libspdlog-dev
      libpng-dev libjpeg-dev libwebp-dev libutf8proc-dev
      libgtest-dev libgmock-dev libbenchmark-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
