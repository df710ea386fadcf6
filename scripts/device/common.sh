#!/usr/bin/env bash
# Shared set-up for the device scripts (sourced): unpacks the GPU bundle (scripts/gpu-bundle.sh
# pack; carry .carry/gpu-bundle.tar.xz), sets the library path, makes the SD 1.5-shape model,
# and defines serve_on / sweep / finish. Logs go to $W, results to $OUT (the device tool).
OUT="${OUT:-$PWD/out}"; mkdir -p "$OUT"; W=/tmp/w; mkdir -p $W
root=/tmp/sdb
if [ ! -x $root/bin/sdserve ] || [ "$(cat $root/commit 2>/dev/null)" != "$(tar -xJOf ${BUNDLE:-.carry/gpu-bundle.tar.xz} ./commit 2>/dev/null)" ] || [ "${FRESH:-0}" = 1 ]; then
  rm -rf $root; mkdir -p $root; tar -C $root -xJf ${BUNDLE:-.carry/gpu-bundle.tar.xz} || exit 1
fi
lp=$root/lib
for l in libcudart.so.13 libcublasLt.so.13 libcudnn.so.9; do
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/local/nvidia/lib64; do
    [ -e "$d/$l" ] && { lp=$lp:$d; break; }; done; done
export LD_LIBRARY_PATH=$lp
src="$(cat $root/source_dir)"; [ -e "$src" ] || { mkdir -p "$(dirname "$src")"; ln -s "$PWD" "$src"; }
S=$root/bin/sdserve
M=/tmp/sd15
export SDSERVE_SD15_MODEL=$M SDSERVE_SD15_REFERENCE=$PWD/tests/data/sd15-seed0-lighthouse-cpu.png
make_model() { [ -e $M/model_index.json ] || { echo "== make-model $(date -u +%T)"; ( time timeout 200 $S make-model --preset sd15 --seed 0 --out $M ) > $W/make-model.log 2>&1; tail -4 $W/make-model.log; }; }
# serve_on DEVICES PORT LOG: starts a server in the background, waits until ready (<= 120 s)
serve_on() {
  $S serve --model $M --device "$1" --port "$2" --max-batch ${MAXB:-16} --max-queue 4096 --queue-timeout 3600 > "$3" 2>&1 &
  for i in $(seq 1 240); do grep -q ": ready" "$3" && return 0; sleep 0.5; done
  echo "server on $1 not ready"; tail -5 "$3"; return 1
}
# sweep PORT STEPS USERS NAME
sweep() {
  timeout 400 $S loadtest --url http://127.0.0.1:$1 --steps $2 --sweep users=$3 --duration ${DUR:-12} --no-progress \
    --json $W/$4.json --report $W/$4.html > $W/$4.txt 2>&1
  echo "== sweep $4 rc=$? (steps $2, users $3)"; tail -25 $W/$4.txt
}
finish() { cp $W/*.txt $OUT/ 2>/dev/null; tar -C $W -czf $OUT/results.tar.gz . ; ls $OUT; }
echo "== $(date -u +%FT%TZ) commit $(cat $root/commit) on $(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | xargs)"
