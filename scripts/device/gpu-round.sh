#!/usr/bin/env bash
# On a two-GPU machine: every GPU test, bench (defaults; graphs off, previous group norm, no epilogues),
# the per-layer profile and the kernel benchmarks. Run: bash scripts/device/gpu-round.sh
source scripts/device/common.sh
B=$root/bin
make_model &
( CUDA_VISIBLE_DEVICES=1 timeout 200 $B/test_gpu > $W/test_gpu.log 2>&1; echo "test_gpu rc=$?" >> $W/test_gpu.log ) &
timeout 200 $B/test_gpu_serving > $W/test_gpu_serving.log 2>&1; echo "== test_gpu_serving rc=$?"
grep -E "workers:|worst|FAILED|PASSED|Failure" $W/test_gpu_serving.log | head
wait
echo "== test_gpu"; grep -E "^\[  (FAILED|PASSED)|Failure|rc=|fraction|bitwise" $W/test_gpu.log | head -30
( CUDA_VISIBLE_DEVICES=1 timeout 200 $S bench --model $M --device cuda:0 --batch-sizes 1,2,4,8,16,32 --steps 50 --json $W/bench.json > $W/bench.txt 2>&1; echo "bench rc=$?" >> $W/bench.txt ) &
CUDA_VISIBLE_DEVICES=0 timeout 200 $B/test_gpu_pipeline > $W/test_gpu_pipeline.log 2>&1; echo "== test_gpu_pipeline rc=$?"
grep -E "^\[  (FAILED|PASSED)|Failure|\[gpu\]" $W/test_gpu_pipeline.log | head -40
wait; echo "== bench defaults"; tail -12 $W/bench.txt
( CUDA_VISIBLE_DEVICES=1 timeout 150 $S bench --model $M --device cuda:0 --batch-sizes 1,16 --profile-only --json $W/profile.json > $W/profile.txt 2>&1; echo "profile rc=$?" >> $W/profile.txt ) &
( for v in "SDSERVE_CUDA_GRAPHS=0" "SDSERVE_CUDA_NORM=v1" "SDSERVE_CUDA_FUSED=0"; do echo "-- bench $v"; CUDA_VISIBLE_DEVICES=0 env $v timeout 100 $S bench --model $M --device cuda:0 --batch-sizes 1,16 --steps 20 --timed-steps 20 --no-e2e 2>&1 | tail -4; done ) > $W/variants.txt 2>&1
wait; cat $W/variants.txt; echo "== profile"; cat $W/profile.txt | head -150
CUDA_VISIBLE_DEVICES=0 timeout 120 $B/gpu_ops_bench --benchmark_out=$W/ops.json --benchmark_out_format=json > $W/ops.txt 2>&1; echo "== ops rc=$?"
finish
