#!/usr/bin/env bash
# On a two-GPU machine: GPU tests (two-worker serving on two GPUs), bench on GPU 1, then the one-GPU
# loadtest sweeps: 50 steps on a server on cuda:0 and 25 steps on a server on cuda:1, at the same time.
source scripts/device/common.sh
make_model &
( CUDA_VISIBLE_DEVICES=1 timeout 300 $root/bin/test_gpu > $W/test_gpu.log 2>&1; echo "test_gpu rc=$?" >> $W/test_gpu.log ) &
timeout 200 $root/bin/test_gpu_serving > $W/test_gpu_serving.log 2>&1; echo "== test_gpu_serving rc=$?"
grep -E "workers:|worst|FAILED|PASSED|Failure" $W/test_gpu_serving.log | head
wait
grep -E "^\[  (FAILED|PASSED)|Failure|rc=" $W/test_gpu.log | head -20
( CUDA_VISIBLE_DEVICES=1 timeout 240 $S bench --model $M --device cuda:0 --batch-sizes 1,2,4,8,16,32 --steps 50 --json $W/bench.json > $W/bench.txt 2>&1; echo "bench rc=$?" >> $W/bench.txt ) &
CUDA_VISIBLE_DEVICES=0 timeout 240 $root/bin/test_gpu_pipeline > $W/test_gpu_pipeline.log 2>&1; echo "== test_gpu_pipeline rc=$?"
grep -E "^\[  (FAILED|PASSED)|Failure|\[gpu\]|PSNR|psnr" $W/test_gpu_pipeline.log | head -30
wait; cat $W/bench.txt
serve_on cuda:0 7001 $W/serve-1gpu-a.log && serve_on cuda:1 7002 $W/serve-1gpu-b.log || { finish; exit 1; }
sweep 7001 50 1,2,4,8,16,32,64 gpu1-steps50 &
sweep 7002 25 1,4,16,64 gpu1-steps25 &
wait
kill %1 %2 2>/dev/null; pkill -f "sdserve serve"; sleep 1
finish
