"""The estimator's feed-forward Linear and GELU: cuBLAS and torch's GELU against ``kernels/linear_gelu.py``.

Times 256 -> 1,024 features then GELU at the row counts of decode batches (CFG rows x frames:
one request's first chunk is 2 x 56, a loaded batch 64 x 650), per launch configuration. Each
call is replayed from a CUDA graph (``triton.testing.do_bench_cudagraph``), as in the served
Euler step; the error is the largest difference from torch. Run on the GPU machine:
`python benchmarks/linear_gelu.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from triton.testing import do_bench_cudagraph

from a10tts.engine.kernels import LaunchConfig
from a10tts.engine.kernels.linear_gelu import linear_gelu
from timing import print_table_header  # benchmarks/timing.py, beside this script

CONFIGS = [LaunchConfig(16), LaunchConfig(16, 32), LaunchConfig(16, 128), LaunchConfig(32), LaunchConfig(64),
           LaunchConfig(32, 32, num_warps=2), LaunchConfig(128, 128, num_warps=8)]
ROWS = [112, 212, 412, 1300, 2048, 4096, 6400, 41600]


@torch.inference_mode()
def main() -> None:
    print(f"# {torch.cuda.get_device_name()}, fp16, 256 -> 1024 then GELU, us per call (largest difference from torch)")
    print_table_header(["rows", "cuBLAS + GELU", "default",
                        *(f"{c.block_m}x{c.block_n} w{c.num_warps}" for c in CONFIGS)])
    g = torch.Generator(device="cuda").manual_seed(0)
    layer = torch.nn.Linear(256, 1024).cuda().half()
    for rows in ROWS:
        x = torch.randn(rows, 256, device="cuda", generator=g).half()
        expected = F.gelu(layer(x))
        cells = [f"{1000 * do_bench_cudagraph(lambda: F.gelu(layer(x))):.1f}"]
        for config in (None, *CONFIGS):
            error = (linear_gelu(x, layer, config).float() - expected.float()).abs().max().item()
            cells.append(f"{1000 * do_bench_cudagraph(lambda config=config: linear_gelu(x, layer, config)):.1f} "
                         f"({error:.0e})")
        print(f"| {rows} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
