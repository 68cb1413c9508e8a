#!/usr/bin/env python3
"""Where a llama.cpp graph spends its GPU time, kernel by kernel, from Nsight Compute's CSV.

    ncu --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function \
        llama-bench ... > run.csv
    python3 tools/gpu/kernel-times.py run.csv --last 60

Prints each kernel's count, total and mean duration, then the last --last kernels in launch order
(with a decode run, the last token's graph: one layer's kernels read as a sequence). Durations
are the kernels' own; what a CUDA graph adds between them (launch, drain) is not in here.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import defaultdict


def read(path: str) -> list[tuple[str, float]]:
    """(kernel name, duration in µs) in launch order."""
    text = open(path, encoding="utf-8", errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        sys.exit(f"kernel-times.py: no ncu CSV in {path}")
    rows = []
    for r in csv.DictReader(io.StringIO(text[start:])):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "nsecond")
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(unit, 1e-3)
        rows.append((r["Kernel Name"], value * scale))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--last", type=int, default=0, help="also list the last N kernels in order")
    ap.add_argument("--window", type=int, default=0,
                    help="count only the last N kernels (decode tokens after a prefill to some depth)")
    a = ap.parse_args()
    rows = read(a.csv)
    if a.window:
        rows = rows[-a.window:]
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for name, us in rows:
        total[name] += us
        count[name] += 1
    print(f"{len(rows)} kernels, {sum(total.values()):.1f} µs")
    print(f"{'kernel':<48} {'n':>6} {'total µs':>10} {'mean µs':>9}")
    for name in sorted(total, key=total.get, reverse=True):
        print(f"{name[:48]:<48} {count[name]:>6} {total[name]:>10.1f} {total[name] / count[name]:>9.2f}")
    if a.last:
        print(f"\nlast {a.last} kernels in launch order:")
        tail = rows[-a.last:]
        for name, us in tail:
            print(f"  {us:8.2f}  {name[:70]}")
        print(f"  {sum(us for _, us in tail):8.2f}  (sum)")


if __name__ == "__main__":
    main()
