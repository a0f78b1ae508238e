"""Summaries for dev/gpu-serve-check: GPU utilization over the bench, and decode batches.

Usage: python3 dev/gpu_util_summary.py UTIL_CSV SERVE_LOG
UTIL_CSV holds `nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used -lms 250` lines;
SERVE_LOG the service's log, whose decode lines ("vocoded N chunks ... in X ms") appear at
`logging.level = "debug"`, as do the LM's step times.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict
from datetime import datetime

VOCODED = re.compile(r"vocoded (\d+) chunks \(longest (\d+) tokens, (\d+) waiting\) in ([\d.]+) ms")
LM_STEPS = re.compile(r"LM: \d+ steps in [\d.]+ s, ([\d.]+) ms each, ([\d.]+) rows each")


def utilization(path: str, window_s: float = 10.0) -> None:
    samples = []
    for line in open(path, encoding="utf-8", errors="replace"):
        parts = [p.strip() for p in line.split(",")]
        try:
            when = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((when, float(parts[1])))
        except (ValueError, IndexError):
            continue
    if not samples:
        print("GPU utilization: no samples")
        return
    start = samples[0][0]
    windows: dict[int, list[float]] = defaultdict(list)
    for when, util in samples:
        windows[int((when - start) // window_s)].append(util)
    means = " ".join(f"{statistics.mean(windows[w]):.0f}" for w in sorted(windows))
    print(f"GPU utilization over the bench, % per {window_s:.0f} s: {means}")


def decode_batches(path: str) -> None:
    by_size: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for line in open(path, encoding="utf-8", errors="replace"):
        match = VOCODED.search(line)
        if match:
            size, longest, _, ms = match.groups()
            by_size[int(size)].append((float(ms), int(longest)))
    lm = [match.groups() for match in map(LM_STEPS.search, open(path, encoding="utf-8", errors="replace")) if match]
    if lm:
        print("LM steps per 5 s of traffic, ms each (rows):", " ".join(f"{ms}({float(rows):.0f})" for ms, rows in lm))
    if not by_size:
        return
    print("decode batches: size, count, mean ms, p90 ms, mean longest tokens")
    for size in sorted(by_size):
        times = sorted(ms for ms, _ in by_size[size])
        p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
        longest = statistics.mean(t for _, t in by_size[size])
        print(f"  {size:3d} {len(times):6d} {statistics.mean(times):8.1f} {p90:8.1f} {longest:8.0f}")


if __name__ == "__main__":
    utilization(sys.argv[1])
    decode_batches(sys.argv[2])
