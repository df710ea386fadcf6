#!/usr/bin/env bash
# SASS-level stall samples of one kernel (Nsight Compute source page): runs gpu_ops_bench under
# `ncu --set full` for the first launch matching KERNEL, exports the per-instruction CSV and the
# details page to $OUT; summarise here with scripts/ncu-sass-summary.py.
# Env: KERNEL (ncu -k regex, e.g. pingpong or '^gemm_kernel'), FILTER (gpu_ops_bench
# --benchmark_filter), BATCHES (SDSERVE_BENCH_BATCHES, default 2), NAME (file stem, default sass).
source scripts/device/common.sh
: "${KERNEL:?set KERNEL}" "${FILTER:?set FILTER}"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
n=${NAME:-sass}
SDSERVE_BENCH_BATCHES=${BATCHES:-2} SDSERVE_BENCH_ITERS=2 timeout 200 $NCU --set full --import-source yes \
  -k regex:"$KERNEL" -c 1 -f -o $W/$n $root/bin/gpu_ops_bench --benchmark_filter="$FILTER" > $W/$n-ncu.log 2>&1
echo "== ncu rc=$?"; tail -2 $W/$n-ncu.log
$NCU -i $W/$n.ncu-rep --page source --csv --print-source sass > $W/$n-sass.csv 2>&1
$NCU -i $W/$n.ncu-rep --page details --print-details all > $W/$n-details.txt 2>&1
grep -E "Duration|Issue Slots Busy|No Eligible|Warp Cycles Per Issued" $W/$n-details.txt | head -6
tar -C $W -cJf $OUT/$n.tar.xz $n-sass.csv $n-details.txt $n-ncu.log
