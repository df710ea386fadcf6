#!/usr/bin/env bash
# One GPU round: all GPU tests of the new build, then the bench of the new build and of a
# baseline sdserve (carried as .carry/base-sdserve.xz) back to back on the same card.
# Run: bash scripts/device/round.sh   Env: BENCH_BATCHES (default 1,2,16), ROUND_TESTS=0 skips tests,
# VARIANTS (below).
source scripts/device/common.sh
B=$root/bin
make_model &
if [ "${ROUND_TESTS:-1}" = 1 ]; then
  timeout 240 $B/test_gpu > $W/test_gpu.log 2>&1; echo "== test_gpu rc=$?"
  grep -E "^\[  (FAILED|PASSED)|Failure" $W/test_gpu.log | head -20
  if [ -n "${EXTRA_TEST_ENV:-}" ]; then  # e.g. "SDSERVE_CUDA_GN_CLUSTER=0:*group_norm*"
    env ${EXTRA_TEST_ENV%%:*} timeout 120 $B/test_gpu --gtest_filter="${EXTRA_TEST_ENV#*:}" > $W/test_gpu_extra.log 2>&1
    echo "== test_gpu ($EXTRA_TEST_ENV) rc=$?"; grep -E "^\[  (FAILED|PASSED)|Failure" $W/test_gpu_extra.log | head
  fi
fi
wait
if [ "${ROUND_TESTS:-1}" = 1 ]; then
  timeout 240 $B/test_gpu_pipeline > $W/test_gpu_pipeline.log 2>&1; echo "== test_gpu_pipeline rc=$?"
  grep -E "^\[  (FAILED|PASSED)|Failure|\[gpu\]" $W/test_gpu_pipeline.log | head -30
fi
if [ -e .carry/base-sdserve.xz ]; then xz -dc .carry/base-sdserve.xz > /tmp/base-sdserve; chmod +x /tmp/base-sdserve; fi
# VARIANTS: space-separated runs, "new", "base" or "new:VAR=value[,VAR=value]" (default: new base new base)
for who in ${VARIANTS:-new base new base}; do
  bin=$S; [ $who = base ] && bin=/tmp/base-sdserve; [ -x "$bin" ] || continue
  envs=(); name=$who
  if [[ $who == new:* ]]; then IFS=, read -ra envs <<< "${who#new:}"; name=$(echo "$who" | tr ':=,' '___'); fi
  env "${envs[@]}" timeout 150 $bin bench --model $M --device cuda:0 --batch-sizes ${BENCH_BATCHES:-1,2,16} --steps 50 > $W/bench-$name.txt 2>&1
  echo "== bench $who rc=$?"; grep -A6 "^batch" $W/bench-$name.txt; grep "model load" $W/bench-$name.txt
  grep -E "cuDNN SDPA|im2col" $W/bench-$name.txt | head -40
done
if [ "${ROUND_PROFILE:-0}" = 1 ]; then
  timeout 200 $S bench --model $M --device cuda:0 --batch-sizes 1,16 --profile-only --json $W/profile.json > $W/profile.txt 2>&1
  echo "== profile rc=$?"; grep -B2 -A16 "per op kind" $W/profile.txt | head -60
fi
finish
