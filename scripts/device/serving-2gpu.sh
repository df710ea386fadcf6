#!/usr/bin/env bash
# On a two-GPU machine: one server with a worker per GPU (cuda:0,cuda:1), loadtest sweeps at 50 and 25 steps.
source scripts/device/common.sh
make_model
serve_on cuda:0,cuda:1 7003 $W/serve-2gpu.log || { finish; exit 1; }
sweep 7003 50 2,4,8,16,32,64,128 gpu2-steps50
sweep 7003 25 2,8,32,128 gpu2-steps25
grep -E "sd_worker_images_total\{" <(exec 3<>/dev/tcp/127.0.0.1/7003; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3)
pkill -f "sdserve serve"; sleep 1
finish
