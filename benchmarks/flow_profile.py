"""Where one Euler step of the flow spends the GPU's time at a loaded batch.

Prints the step's kernel time by kind (GEMMs, attention, convolutions, the rest: norms,
activations, copies) from the torch profiler, the replayed CUDA graph's time for the same step
(the gap to the kernel sum is launch and idle time inside the graph), the costliest kernels,
and one attention layer on SDPA with a bool mask, with an additive bias, and with no mask (the
step itself runs ``kernels/chunk_attention.py``: ``chunk_attention.py`` here times it).
With ``--prefix P`` every row continues a voice's flow prefix of P frames, as the decode stage's
streamed chunks do. Run on the GPU machine: `python benchmarks/flow_profile.py --batch 16 --frames 450`.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from a10tts.engine.cuda_graphs import FlowGraphs
from a10tts.engine.demo import demo_yaml
from a10tts.engine.flow import FlowModel
from a10tts.engine.hparams import parse_hparams
from timing import kernel_report, median_ms  # benchmarks/timing.py, beside this script


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=450)
    parser.add_argument("--prefix", type=int, default=0, help="frames of a voice prefix every row continues")
    parser.add_argument("--compile", action="store_true", help="compile the estimator first (dynamic shapes, as served)")
    args = parser.parse_args()
    with torch.device("cuda"):
        flow = FlowModel.from_hparams(parse_hparams(demo_yaml("full"))["flow"].args).half().eval()
        b, t, c = args.batch, args.frames, flow.output_size
        mu, cond = torch.randn(b, c, t, dtype=torch.half), torch.randn(b, c, t, dtype=torch.half)
        mask, spks = torch.ones(b, 1, t, dtype=torch.half), torch.randn(b, c, dtype=torch.half)
        x, step_t, dt = torch.randn(b, c, t), torch.tensor(0.3), torch.tensor(0.1)
    cfm = flow.decoder
    if args.compile:
        cfm.estimator.forward = torch.compile(cfm.estimator.forward, dynamic=True)
    inputs = cfm.guidance_inputs(mu, mask, spks, cond, True)
    prefix = None
    if args.prefix:
        with torch.device("cuda"):
            p = args.prefix
            prefix = cfm.record_prefix(torch.randn(1, c, p, dtype=torch.half), torch.ones(1, 1, p, dtype=torch.half),
                                       spks[:1], torch.randn(1, c, p, dtype=torch.half))

    def step() -> torch.Tensor:
        return cfm.euler_step(x, step_t, dt, inputs, None if prefix is None else prefix.reader(0))

    print(f"# {torch.cuda.get_device_name()}, flow fp16{' compiled' if args.compile else ''}, one Euler step, "
          f"batch {b} (CFG rows {2 * b}) x {t} frames" + (f" after a {args.prefix}-frame prefix" if prefix else ""))
    started = time.perf_counter()
    graphs = FlowGraphs(cfm, b)  # before the profiler, whose hooks upset a graph pool's first capture

    def solve() -> torch.Tensor:
        if prefix is None:
            return graphs(mu, mask, spks, cond, True)
        return graphs.continue_prefix(prefix, mu, mask, spks, cond)

    solve()
    print(f"first call (capture{', compilation' if args.compile else ''}): {time.perf_counter() - started:.1f} s")
    replay = median_ms(solve, repeats=5) / 10
    eager = median_ms(step)
    total = kernel_report(step)
    print(f"kernel sum {total:.2f} ms; eager step {eager:.2f} ms; graph replay {replay:.2f} ms per step")

    heads, head_dim = 8, 64
    with torch.device("cuda"):
        q = torch.randn(2 * b, heads, t, head_dim, dtype=torch.half)
        chunk = ((torch.arange(t) // 50).unsqueeze(1) >= (torch.arange(t) // 50).unsqueeze(0)).expand(2 * b, 1, t, t)
        bias = torch.zeros(chunk.shape, dtype=torch.half).masked_fill_(~chunk, float("-inf"))
    attention = {"bool mask": median_ms(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=chunk)),
                 "additive bias": median_ms(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=bias)),
                 "no mask": median_ms(lambda: F.scaled_dot_product_attention(q, q, q))}
    print(f"one chunk-causal attention [{2 * b}, {heads}, {t}, {head_dim}], ms: "
          + ", ".join(f"{name} {ms:.3f}" for name, ms in attention.items()))

if __name__ == "__main__":
    main()
