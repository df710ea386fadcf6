#!/usr/bin/env python3
# Summary of an Nsight Compute SASS source-page CSV (scripts/device/ncu-sass.sh): executed
# instruction mix and stall-sample share per opcode, and the most-stalled instructions.
# Usage: scripts/ncu-sass-summary.py FILE-sass.csv [top N]
import collections
import csv
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: ncu-sass-summary.py FILE-sass.csv [top N]")
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    rows = list(csv.reader(open(sys.argv[1], newline="")))
    header = next((i for i, r in enumerate(rows) if "Source" in r), None)
    if header is None:
        sys.exit(f"{sys.argv[1]}: no 'Source' column (not an ncu --page source --csv export?)")
    names, data = rows[header], rows[header + 1:]
    src = names.index("Source")
    stalls = names.index("Warp Stall Sampling (All Samples)")
    executed = names.index("Instructions Executed")
    num = lambda r, i: int(r[i]) if i < len(r) and r[i].strip().isdigit() else 0
    total_stalls = max(1, sum(num(r, stalls) for r in data))
    total_exec = max(1, sum(num(r, executed) for r in data))
    mix, stall_mix = collections.Counter(), collections.Counter()
    for r in data:
        words = r[src].split()
        if not words:
            continue
        op = (words[1] if words[0].startswith("@") and len(words) > 1 else words[0]).split(".")[0]
        mix[op] += num(r, executed)
        stall_mix[op] += num(r, stalls)
    print(f"{total_exec} warp instructions, {total_stalls} stall samples")
    print("opcode      executed   stall samples")
    for op, n in mix.most_common(top):
        print(f"  {op:10s} {100 * n / total_exec:6.1f}%  {100 * stall_mix[op] / total_stalls:6.1f}%")
    print("most-stalled instructions")
    for r in sorted(data, key=lambda r: -num(r, stalls))[:top]:
        print(f"  {num(r, stalls):7d} {100 * num(r, stalls) / total_stalls:5.1f}%  {r[src].strip()[:80]}")


if __name__ == "__main__":
    main()
