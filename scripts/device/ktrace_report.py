#!/usr/bin/env python3
# Reads a ktrace timeline (scripts/device/ktrace.cc: "start end stream graph node grid name" per
# kernel / memset / memcpy) and reports, for one launch of a CUDA graph, its span, busy and idle
# time, the largest gaps between nodes and the time per kernel name.
import argparse
import collections
import gzip
import statistics


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    recs = []
    with opener(path, "rt") as f:
        for line in f:
            p = line.rstrip("\n").split(" ", 6)
            if len(p) == 7:
                recs.append((int(p[0]), int(p[1]), int(p[2]), int(p[3]), int(p[4]), int(p[5]), p[6]))
    recs.sort()
    return recs


def launches_of(recs, graph):
    nodes = [r for r in recs if r[3] == graph]
    first = nodes[0][4]
    out, cur = [], []
    for r in nodes:
        if r[4] == first and cur:
            out.append(cur)
            cur = []
        cur.append(r)
    out.append(cur)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("trace")
    ap.add_argument("--graph", type=int, help="graph id (default: the one with the most nodes over all launches)")
    ap.add_argument("--launch", type=int, default=-2, help="which launch of the graph (default: the second last)")
    ap.add_argument("--top", type=int, default=20)
    a = ap.parse_args()
    recs = read(a.trace)
    graphs = collections.Counter(r[3] for r in recs if r[3])
    print("graphs (id: nodes over all launches):", dict(graphs.most_common(8)))
    graph = a.graph if a.graph is not None else graphs.most_common(1)[0][0]
    launches = launches_of(recs, graph)
    L = launches[a.launch if len(launches) > 1 else -1]
    busy, last, gaps = 0, L[0][0], []
    for i, r in enumerate(L):
        if r[0] > last:
            gaps.append(((r[0] - last) / 1e3, i, L[i - 1][6][:80] if i else "", r[6][:80]))
        busy += max(0, r[1] - max(r[0], last))  # overlapping nodes count once
        last = max(last, r[1])
    span = (L[-1][1] - L[0][0]) / 1e3
    print(f"graph {graph}: {len(launches)} launches of {len(L)} nodes; span {span:.1f} us, busy {busy / 1e3:.1f}, "
          f"idle {span - busy / 1e3:.1f} ({100 * (1 - busy / 1e3 / span):.2f}%)")
    if gaps:
        g = [x[0] for x in gaps]
        print(f"gaps: {len(g)}, median {statistics.median(g):.2f} us, sum {sum(g):.1f} us")
    for x in sorted(gaps, reverse=True)[: a.top]:
        print("  %.2f us before node %d: %s -> %s" % x)
    memsets = [i for i, r in enumerate(L) if r[6].startswith("memset")]
    cost = sum(L[i][1] - L[i][0] + max(0, L[i][0] - L[i - 1][1]) + (max(0, L[i + 1][0] - L[i][1]) if i + 1 < len(L) else 0)
               for i in memsets if i > 0)
    print(f"memset nodes: {len(memsets)}, their time plus the gaps around them {cost / 1e3:.1f} us")
    tot, cnt = collections.defaultdict(float), collections.Counter()
    for r in L:
        n = r[6].split("(")[0][:90]
        tot[n] += (r[1] - r[0]) / 1e3
        cnt[n] += 1
    print("time per name (us, count):")
    for n, t in sorted(tot.items(), key=lambda x: -x[1])[: a.top]:
        print(f"  {t:9.1f} {cnt[n]:4d} {n}")


if __name__ == "__main__":
    main()
