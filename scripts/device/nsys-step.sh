#!/usr/bin/env bash
# Timeline of replayed guided steps (Nsight Systems, graph nodes traced, kernels run concurrently
# as in production): per-kernel durations and the idle gaps between consecutive kernels of one
# replay. Run: bash scripts/device/nsys-step.sh   Env: NSYS_BATCH (default 1), NSYS_ENV (variant env).
source scripts/device/common.sh
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys 2>/dev/null | head -1)
echo "nsys: ${NSYS:-none}"
[ -n "$NSYS" ] || { finish; exit 0; }
make_model
b=${NSYS_BATCH:-1}
( time env ${NSYS_ENV:-X=1} timeout 240 $NSYS profile --trace=cuda --cuda-graph-trace=node -f true -o $W/nsys-b$b \
    $S bench --model $M --device cuda:0 --batch-sizes $b --timed-steps 5 --no-e2e > $W/nsys-b$b.log 2>&1 ) 2> $W/nsys-b$b.time
echo "== nsys b$b rc=$?"; tail -3 $W/nsys-b$b.time; tail -4 $W/nsys-b$b.log
$NSYS stats --report cuda_gpu_trace --format csv --output $W/nsys-b$b $W/nsys-b$b.nsys-rep > $W/nsys-stats.log 2>&1
echo "== stats rc=$?"; ls $W | grep nsys
# Gaps inside the last replay: kernels between the last two slot_update launches.
python3 - "$W/nsys-b${b}_cuda_gpu_trace.csv" <<'PY' | tee $W/nsys-gaps.txt
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
k = [r for r in rows if r.get('Name') and 'memcpy' not in r['Name'].lower() and 'memset' not in r['Name'].lower()]
idx = [i for i, r in enumerate(k) if 'slot_update' in r['Name']]
if len(idx) < 3: print('too few slot_update launches', len(idx)); sys.exit(0)
a, z = idx[-3], idx[-2]
seq = k[a:z + 1]
st = [float(r['Start (ns)']) for r in seq]; du = [float(r['Duration (ns)']) for r in seq]
span = st[-1] - st[0]; busy = sum(du[:-1])
gaps = [st[i + 1] - (st[i] + du[i]) for i in range(len(seq) - 1)]
print(f"kernels {len(seq) - 1}  replay span {span / 1e3:.1f} us  kernel time {busy / 1e3:.1f} us  gaps {sum(g for g in gaps if g > 0) / 1e3:.1f} us")
big = sorted(range(len(gaps)), key=lambda i: -gaps[i])[:15]
for i in big: print(f"  gap {gaps[i] / 1e3:6.2f} us after {seq[i]['Name'][:70]} -> {seq[i + 1]['Name'][:50]}")
import collections
hist = collections.Counter(min(int(g / 500), 10) for g in gaps)
print('gap histogram (0.5 us bins):', sorted(hist.items()))
PY
finish
