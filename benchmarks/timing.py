"""Timing GPU work: median milliseconds of CUDA-event timings after a warm-up, and where the
kernels' time goes (torch profiler)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

KINDS = (("gemm", ("gemm", "cutlass", "xmma", "cublas", "matmul", "nvjet", "gemv")),
         ("attention", ("fmha", "attention", "flash", "efficient", "_decode_kernel")),
         ("conv", ("conv", "cudnn", "implicit")))


def median_ms(fn: Callable[[], object], repeats: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def print_table_header(columns: list[str]) -> None:
    """A Markdown table's header row and its separator."""
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    return next((kind for kind, marks in KINDS if any(m in name for m in marks)), "other")


def kernel_report(fn: Callable[[], object], calls: int = 1, top: int = 10) -> float:
    """Profile ``calls`` calls of ``fn`` (eager or a CUDA graph replay: CUPTI records the graph's
    kernels too); print the costliest kernels and the time by kind, per call. Returns the kernel
    time per call in ms."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = [(event.name, event.device_time_total / 1000 / calls) for event in prof.events()
               if event.device_type == torch.autograd.DeviceType.CUDA]
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    by_name: dict[str, float] = defaultdict(float)
    for name, ms in kernels:
        by_kind[kind_of(name)][0] += ms
        by_kind[kind_of(name)][1] += 1 / calls
        by_name[name[:90]] += ms
    total = sum(ms for _, ms in kernels)
    print("the costliest kernels, ms per call:")
    for name, ms in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {ms:7.3f}  {name}")
    print("| kind | kernels | ms | share |")
    print("|---|---|---|---|")
    for kind, (ms, count) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
        print(f"| {kind} | {count:.0f} | {ms:.3f} | {100 * ms / max(total, 1e-9):.0f} % |")
    return total
