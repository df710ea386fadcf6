#!/usr/bin/env bash
# Ships GPU test binaries to the lent GPU machine, which has CUDA but not the Debian libraries.
#   scripts/gpu-bundle.sh pack [BUILD_DIR]  (here) binaries + their non-system shared libraries
#                                           -> .carry/gpu-bundle.tar.xz (git-ignored; carry ".carry")
#   (BUNDLE=path: another bundle file, for both pack and run and scripts/device/common.sh)
#   scripts/gpu-bundle.sh run               (on the device) unpack to /tmp, run the GPU tests and
#                                           op timings, logs to $OUT (or ./out); exit status of the tests
# Environment for run: GTEST_FILTER, SANITIZE=1 (compute-sanitizer memcheck on a subset),
# SD_TIMINGS=0 (skip timings), SD_TORCH=0 (skip the PyTorch reference timings),
# SD_EXTRA="cmd ..." (run after the tests, e.g. "sdserve bench ...").
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"

# Libraries left to the device: glibc, the compiler runtime, the CUDA toolkit and the driver.
skip_lib() {
  case "$1" in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libresolv.so*) return 0 ;;
    libstdc++.so*|libgcc_s.so*) return 0 ;;
    libcuda.so*|libcudart.so*|libcublas*|libcudnn*|libnvrtc*|libnvJitLink*|libcufft*|libcurand*) return 0 ;;
  esac
  return 1
}

pack() {
  local build="${1:-build}" bundle="${BUNDLE:-.carry/gpu-bundle.tar.xz}"
  [ -d "$build" ] || { echo "gpu-bundle: no build directory '$build'" >&2; exit 1; }
  local stage
  stage="$(mktemp -d)"
  mkdir -p "$stage/bin" "$stage/lib" .carry
  local bins=()
  for f in "$build"/tests/gpu/test_gpu "$build"/tests/gpu/gpu_op_timings "$build"/bench/gpu_ops_bench "$build"/sdserve; do
    [ -x "$f" ] && bins+=("$f")
  done
  # Any other GPU test executables (tests/*/test_gpu*), e.g. end-to-end GPU tests.
  while IFS= read -r f; do bins+=("$f"); done < <(find "$build/tests" -maxdepth 2 -type f -name 'test_gpu_*' -perm -u+x 2>/dev/null)
  [ ${#bins[@]} -gt 0 ] || { echo "gpu-bundle: no GPU binaries under $build (build test_gpu first)" >&2; exit 1; }
  for b in "${bins[@]}"; do
    cp "$b" "$stage/bin/"
    ldd "$b" | awk '/=> \// {print $1, $3}' | while read -r name path; do
      skip_lib "$name" || cp -L "$path" "$stage/lib/$name"
    done
  done
  # Where the binaries look for test data (compiled in), so run can recreate that path.
  echo "$(pwd)" > "$stage/source_dir"
  git rev-parse --short HEAD > "$stage/commit" 2>/dev/null || true
  # Symbols are not needed there; the binaries share most of their code, which xz's large
  # dictionary (-9e) finds: ~19 MB -> ~10 MB, and the tree that travels must stay under 64 MiB.
  strip --strip-unneeded "$stage"/bin/* "$stage"/lib/* 2>/dev/null || true
  XZ_OPT=-9e tar -C "$stage" -cJf "$bundle" .
  rm -rf "$stage"
  echo "gpu-bundle: packed ${bins[*]##*/} from $build"
  tar -tJvf "$bundle" | awk '{print "  " $3, $6}'
  du -h "$bundle"
}

# First directory holding library $1 among the usual CUDA locations (toolkit, pip wheels).
find_lib_dir() {
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
           /usr/lib/x86_64-linux-gnu /usr/local/nvidia/lib64; do
    [ -e "$d/$1" ] && { echo "$d"; return; }
  done
  find / -xdev -name "$1" -not -path '/proc/*' 2>/dev/null | head -1 | xargs -r dirname
}

run() {
  local out="${OUT:-$PWD/out}"
  mkdir -p "$out"
  local root=/tmp/sdbundle
  rm -rf "$root" && mkdir -p "$root" && tar -C "$root" -xJf "${BUNDLE:-.carry/gpu-bundle.tar.xz}" || { echo "gpu-bundle: unpack failed"; exit 1; }
  {
    echo "== date: $(date -u +%FT%TZ)  commit: $(cat $root/commit 2>/dev/null)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    nvcc --version 2>&1 | tail -2
    ldd --version 2>&1 | head -1
  } | tee "$out/env.txt"
  local libpath="$root/lib"
  for l in libcudart.so.13 libcublasLt.so.13 libcudnn.so.9; do
    local d
    d="$(find_lib_dir "$l")"
    echo "$l: ${d:-NOT FOUND}" | tee -a "$out/env.txt"
    [ -n "$d" ] && libpath="$libpath:$d"
  done
  export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  ldd "$root/bin/test_gpu" | grep "not found" | tee -a "$out/env.txt"
  # Recreate the source path compiled into the tests (SD_TEST_DATA_DIR) if it is absent here.
  local src
  src="$(cat "$root/source_dir")"
  if [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi

  local rc=0
  for t in "$root"/bin/test_gpu*; do
    local n
    n="$(basename "$t")"
    echo "== $n"
    timeout 420 "$t" --gtest_output="xml:$out/$n.xml" > "$out/$n.log" 2>&1  # honours GTEST_FILTER
    local r=$?
    [ $r -ne 0 ] && rc=$r
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]|Failure|error|rel_l2 .*tol" "$out/$n.log" | grep -vE "^\[  SKIPPED \] .*/" | tail -40
    grep -E "^\[  FAILED  \]" "$out/$n.log" | head -40
    echo "== $n exit $r"
  done
  echo "== test_gpu conv cases again on the legacy cuDNN API (SDSERVE_CUDNN_GRAPH=0)"
  SDSERVE_CUDNN_GRAPH=0 timeout 200 "$root/bin/test_gpu" --gtest_filter='*conv*:*Conv*' > "$out/test_gpu_legacy_conv.log" 2>&1
  r=$?
  [ $r -ne 0 ] && rc=$r
  grep -E "^\[  (FAILED|PASSED) |Failure" "$out/test_gpu_legacy_conv.log" | head -20
  if [ "${SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer memcheck (subset)"
    timeout 240 compute-sanitizer --tool memcheck --print-limit 20 "$root/bin/test_gpu" \
      --gtest_filter='AllCases/GpuOpParity.F16*:GpuBackend.*' > "$out/memcheck.log" 2>&1
    tail -3 "$out/memcheck.log"
    echo "== compute-sanitizer racecheck (attention and norms)"
    timeout 240 compute-sanitizer --tool racecheck --print-limit 20 "$root/bin/test_gpu" \
      --gtest_filter='AllCases/GpuOpParity.F16*attention*:AllCases/GpuOpParity.F16*norm*' > "$out/racecheck.log" 2>&1
    tail -3 "$out/racecheck.log"
  fi
  if [ "${SD_TIMINGS:-1}" = 1 ] && [ -x "$root/bin/gpu_op_timings" ]; then
    echo "== op timings"
    {
      timeout 120 "$root/bin/gpu_op_timings" f16
      timeout 120 "$root/bin/gpu_op_timings" bf16
      echo "-- WMMA attention kernel (SDSERVE_CUDA_ATTENTION=wmma)"
      SDSERVE_CUDA_ATTENTION=wmma timeout 120 "$root/bin/gpu_op_timings" f16 attention
      echo "-- legacy cuDNN API, heuristic algorithms (SDSERVE_CUDNN_GRAPH=0)"
      SDSERVE_CUDNN_GRAPH=0 timeout 120 "$root/bin/gpu_op_timings" f16 conv2d
      echo "-- legacy cuDNN API, benchmarked algorithms (SDSERVE_CUDNN_GRAPH=0 SDSERVE_CUDNN_FIND=1)"
      SDSERVE_CUDNN_GRAPH=0 SDSERVE_CUDNN_FIND=1 timeout 120 "$root/bin/gpu_op_timings" f16 conv2d
      echo "-- cuDNN graph API without autotuning (SDSERVE_CUDNN_AUTOTUNE=0)"
      SDSERVE_CUDNN_AUTOTUNE=0 timeout 120 "$root/bin/gpu_op_timings" f16 conv2d
      if [ "${SD_TORCH:-1}" = 1 ] && python3 -c 'import torch' 2>/dev/null; then
        echo "-- PyTorch reference"
        timeout 180 python3 tests/gpu/timings/torch_op_timings.py
      fi
    } 2>&1 | tee "$out/timings.txt"
  fi
  if [ -n "${SD_EXTRA:-}" ]; then
    echo "== extra: $SD_EXTRA"
    PATH="$root/bin:$PATH" timeout 300 bash -c "$SD_EXTRA" 2>&1 | tee "$out/extra.log" | tail -30
  fi
  return $rc
}

case "$mode" in
  pack) shift; pack "$@" ;;
  run) run ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
