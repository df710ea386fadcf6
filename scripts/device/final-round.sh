#!/usr/bin/env bash
# A closing round: all GPU tests, the bench of the new build twice, of the base build
# (.carry/base-sdserve.xz) and of the new build with the session-5 switches off, batches 8 and 32,
# and the per-op-kind profile. Run: bash scripts/device/final-round.sh
source scripts/device/common.sh
B=$root/bin
make_model &
timeout 240 $B/test_gpu > $W/test_gpu.log 2>&1; echo "== test_gpu rc=$?"; grep -E "^\[  (FAILED|PASSED)|Failure" $W/test_gpu.log | head -20
wait
timeout 200 $B/test_gpu_pipeline > $W/test_gpu_pipeline.log 2>&1; echo "== test_gpu_pipeline rc=$?"; grep -E "^\[  (FAILED|PASSED)|Failure|\[gpu\]" $W/test_gpu_pipeline.log | head -20
xz -dc .carry/base-sdserve.xz > /tmp/base-sdserve; chmod +x /tmp/base-sdserve
for v in new base new off; do
  bin=$S; envs="X=1"; [ $v = base ] && bin=/tmp/base-sdserve
  [ $v = off ] && envs="SDSERVE_CUDA_GN_FAST=0 SDSERVE_CUDA_LN=warp SDSERVE_CUDA_WGMMA_RESCALE=0 SDSERVE_CUDA_WGMMA_ROWSUM=0"
  env $envs timeout 150 $bin bench --model $M --device cuda:0 --batch-sizes 1,2,16 --steps 50 > $W/bench-$v.txt 2>&1
  echo "== bench $v rc=$?"; grep -A4 "^batch" $W/bench-$v.txt; grep -E "first image|loaded in" $W/bench-$v.txt | head -2
done
timeout 150 $S bench --model $M --device cuda:0 --batch-sizes 8,32 --steps 50 > $W/bench-b32.txt 2>&1
echo "== bench b8,32 rc=$?"; grep -A3 "^batch" $W/bench-b32.txt
timeout 200 $S bench --model $M --device cuda:0 --batch-sizes 1,16 --profile-only --json $W/profile.json > $W/profile.txt 2>&1
echo "== profile rc=$?"; grep -B2 -A16 "per op kind" $W/profile.txt | head -60
finish
