#!/usr/bin/env bash
# A closing round: all GPU tests, then the bench of the new build twice alternating with the
# session's switches off (OFF_ENVS), batch 32 once, and the per-op-kind profile.
# Run: bash scripts/device/final-round.sh   (OFF_ENVS overrides the switches-off environment; ON_ENVS
# sets switches for the tests and the "new" runs, e.g. ON_ENVS=SDSERVE_STEP_TIME_TABLE=1 for one still off by default)
source scripts/device/common.sh
B=$root/bin
OFF_ENVS="${OFF_ENVS:-SDSERVE_CUDA_WGMMA_GEMM=0 SDSERVE_CUDA_WGMMA_CONV=0}"
ON_ENVS="${ON_ENVS:-X=1}"
make_model &
env $ON_ENVS timeout 240 $B/test_gpu > $W/test_gpu.log 2>&1; echo "== test_gpu rc=$?"; grep -E "^\[  (FAILED|PASSED)|Failure" $W/test_gpu.log | head -20
wait
env $ON_ENVS timeout 150 $B/test_gpu_pipeline > $W/test_gpu_pipeline.log 2>&1; echo "== test_gpu_pipeline rc=$?"; grep -E "^\[  (FAILED|PASSED)|Failure|\[gpu\]" $W/test_gpu_pipeline.log | head -20
for v in new off new2 off2; do
  envs="$ON_ENVS"; [ ${v%2} = off ] && envs="$OFF_ENVS"
  env $envs timeout 100 $S bench --model $M --device cuda:0 --batch-sizes 1,16 --steps 50 > $W/bench-$v.txt 2>&1
  echo "== bench $v rc=$?"; grep -A3 "^batch" $W/bench-$v.txt; grep -E "first image|loaded in" $W/bench-$v.txt | head -2
done
env $ON_ENVS timeout 60 $S bench --model $M --device cuda:0 --batch-sizes 32 --steps 50 --timed-steps 10 --no-e2e > $W/bench-b32.txt 2>&1
echo "== bench b32 rc=$?"; grep -A2 "^batch" $W/bench-b32.txt
env $ON_ENVS timeout 100 $S bench --model $M --device cuda:0 --batch-sizes 1,16 --profile-only --json $W/profile.json > $W/profile.txt 2>&1
echo "== profile rc=$?"; grep -B2 -A16 "per op kind" $W/profile.txt | head -60
finish
