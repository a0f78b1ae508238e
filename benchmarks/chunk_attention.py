"""The flow estimator's attention kernel against SDPA with the dense mask, per launch configuration.

Times one attention layer (8 heads of 64) at the shapes the decode stage serves: CFG rows x
frames, streaming (chunk-causal, 50-frame chunks) or not, with or without a voice prefix in front.
Each call is replayed from a CUDA graph (``triton.testing.do_bench_cudagraph``), so launch overhead
is left out, as in the served Euler step; the error is the largest difference from SDPA.
Run on the GPU machine: `python benchmarks/chunk_attention.py`.
"""

from __future__ import annotations

import torch
from triton.testing import do_bench_cudagraph

from a10tts.engine.flow.attention import ChunkMask, DenseMask
from a10tts.engine.kernels import LaunchConfig
from a10tts.engine.kernels.chunk_attention import chunk_attention
from timing import print_table_header  # benchmarks/timing.py, beside this script

CONFIGS = [LaunchConfig(64, 64, 4, 3), LaunchConfig(64, 64, 4, 2), LaunchConfig(128, 64, 8, 2),
           LaunchConfig(128, 64, 4, 2), LaunchConfig(64, 32, 4, 2), LaunchConfig(32, 64, 4, 2),
           LaunchConfig(128, 32, 8, 2), LaunchConfig(64, 128, 4, 2), LaunchConfig(16, 64, 4, 2),
           LaunchConfig(32, 32, 2, 2)]
SHAPES = [(64, 650, 0, True), (32, 450, 0, True), (2, 300, 0, True), (2, 106, 200, True),
          (64, 650, 0, False), (32, 450, 200, True), (2, 56, 200, True)]  # rows, frames, prefix, streaming


@torch.inference_mode()
def main() -> None:
    print(f"# {torch.cuda.get_device_name()}, fp16, one attention layer [rows, 8 heads, frames, 64], us per call")
    print_table_header(["rows", "frames", "prefix", "streaming", "SDPA, dense bias",
                        *(f"{c.block_m}x{c.block_n} w{c.num_warps} s{c.num_stages}" for c in CONFIGS)])
    g = torch.Generator(device="cuda").manual_seed(0)
    for rows, frames, prefix, streaming in SHAPES:
        # [B, T, H, d] underneath, as the estimator's q/k/v views are; a prefix per half of the rows
        q, k, v = (torch.randn(rows, frames, 8, 64, device="cuda", generator=g).half().transpose(1, 2) for _ in range(3))
        past = tuple(torch.randn(2, 2, 8, prefix, 64, device="cuda", generator=g).half().unbind(0)) if prefix else None
        valid = torch.ones(rows, frames, dtype=torch.bool, device="cuda")
        dense, mask = DenseMask(valid, 50, streaming, prefix, torch.half), ChunkMask(valid, 50, streaming)
        expected = dense.attend(q, k, v, past)
        cells = [f"{1000 * do_bench_cudagraph(lambda: dense.attend(q, k, v, past)):.0f}"]
        for config in CONFIGS:
            def run(config: LaunchConfig = config) -> torch.Tensor:
                return chunk_attention(q, k, v, mask.valid, mask.key_end, mask.streaming, mask.chunk_size, past, config)
            error = (run().float() - expected.float()).abs().max().item()
            cells.append(f"{1000 * do_bench_cudagraph(run):.0f} ({error:.0e})")
        print(f"| {rows} | {frames} | {prefix} | {streaming} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
