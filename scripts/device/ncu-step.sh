#!/usr/bin/env bash
# Per-kernel durations of the captured guided step (Nsight Compute, each graph node timed alone,
# warm L2, clocks untouched), plus the bench baseline. Run: bash scripts/device/ncu-step.sh
# Env: NCU_BATCHES (default "1 16"), NCU_ENV (extra env for the profiled run, e.g. a variant).
source scripts/device/common.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
make_model
timeout 150 $S bench --model $M --device cuda:0 --batch-sizes ${BENCH_BATCHES:-1,2,16} --steps 50 --json $W/bench.json > $W/bench.txt 2>&1
echo "== bench rc=$?"; tail -8 $W/bench.txt
for b in ${NCU_BATCHES:-1 16}; do
  ( time env ${NCU_ENV:-X=1} timeout 240 $NCU --graph-profiling node --metrics gpu__time_duration.sum --cache-control none \
      --clock-control none -f --export $W/ncu-b$b \
      $S bench --model $M --device cuda:0 --batch-sizes $b --timed-steps 1 --no-e2e > $W/ncu-b$b.log 2>&1 ) 2> $W/ncu-b$b.time
  echo "== ncu b$b rc=$?"; tail -3 $W/ncu-b$b.time; tail -3 $W/ncu-b$b.log
  $NCU --import $W/ncu-b$b.ncu-rep --csv --print-units base --page raw --metrics gpu__time_duration.sum > $W/ncu-b$b.csv 2>&1
  echo "   $(wc -l < $W/ncu-b$b.csv) csv lines"; rm -f $W/ncu-b$b.ncu-rep
done
finish
