#!/usr/bin/env bash
# Per-kernel durations of one VAE decode at batch 1 (the kernels after the last sampler update
# of a 1-step end-to-end bench run), Nsight Compute as in ncu-step.sh. Run: bash scripts/device/ncu-vae.sh
source scripts/device/common.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
make_model
( time timeout 300 $NCU --graph-profiling node --metrics gpu__time_duration.sum --cache-control none \
    --clock-control none -f --export $W/ncu-vae $S bench --model $M --device cuda:0 --batch-sizes 1 --steps 1 \
    --timed-steps 1 > $W/ncu-vae.log 2>&1 ) 2> $W/ncu-vae.time
echo "== ncu rc=$?"; tail -3 $W/ncu-vae.time
$NCU --import $W/ncu-vae.ncu-rep --csv --print-units base --page raw --metrics gpu__time_duration.sum > $W/ncu-vae.csv 2>&1
rm -f $W/ncu-vae.ncu-rep; wc -l $W/ncu-vae.csv
finish
