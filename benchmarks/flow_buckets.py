"""How the flow's Euler loop scales with batch and frames, and what capturing a bucket costs.

Streaming recomputes the whole prefix on every chunk, so the decode stage meets every
(batch, frames) bucket up to the longest request. For each bucket this prints the time to
capture its CUDA graph (the stall a request sees when traffic first needs it), the replay time,
and the replay time per 1000 frames (flat once the GPU, not the launches, is the limit).
Run on the GPU machine: `python benchmarks/flow_buckets.py --batch 1 8 16 --frames 200 600 1000`.
"""

from __future__ import annotations

import argparse
import time

import torch

from a10tts.engine.cuda_graphs import FlowGraphs
from a10tts.engine.demo import demo_yaml
from a10tts.engine.flow import FlowModel
from a10tts.engine.hparams import parse_hparams
from timing import median_ms  # benchmarks/timing.py, beside this script


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--frames", type=int, nargs="+", default=[200, 400, 600, 800, 1000])
    parser.add_argument("--compile", action="store_true", help="compile the estimator before capture")
    args = parser.parse_args()
    hparams = parse_hparams(demo_yaml("full"))
    with torch.device("cuda"):
        flow = FlowModel.from_hparams(hparams["flow"].args).half().eval()
    graphs = FlowGraphs(flow.decoder, max(args.batch), compile=args.compile)
    channels = flow.output_size
    print(f"# {torch.cuda.get_device_name()}, flow estimator fp16, 10 Euler steps, CFG batch x2")
    print("| batch | frames | capture (s) | replay (ms) | ms per 1000 frames |")
    print("|---|---|---|---|---|")
    for batch in args.batch:
        for frames in args.frames:
            with torch.device("cuda"):
                mu = torch.randn(batch, channels, frames, dtype=torch.float16)
                mask = torch.ones(batch, 1, frames, dtype=torch.float16)
                spks = torch.randn(batch, channels, dtype=torch.float16)
                cond = torch.randn(batch, channels, frames, dtype=torch.float16)
                streaming = torch.ones(batch, dtype=torch.bool)
            started = time.perf_counter()
            graphs(mu, mask, spks, cond, streaming)
            torch.cuda.synchronize()
            capture = time.perf_counter() - started
            ms = median_ms(lambda: graphs(mu, mask, spks, cond, streaming), repeats=5, warmup=1)
            print(f"| {batch} | {frames} | {capture:.2f} | {ms:.1f} | {1000 * ms / (batch * frames):.1f} |")
    print(f"# peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
